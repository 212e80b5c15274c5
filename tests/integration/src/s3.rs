//! The repository on a real S3 server (Garage, started by the harness):
//! multipart uploads, objects never replaced, request counts in /metrics, restore through the
//! catalog, one path to stdout, and with no catalog and no NATS at all.

use crate::harness::{Env, assert_verified};
use crate::pipeline::{build_tree, snapshot_of};
use anyhow::Result;
use vaultline_storage::ObjectKey;
use vaultline_types::Name;

/// `vaultline_s3_requests_total` of one operation with outcome ok.
fn s3_requests(metrics: &str, operation: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| {
            l.starts_with("vaultline_s3_requests_total")
                && l.contains(&format!("operation=\"{operation}\""))
                && l.contains("outcome=\"ok\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tree_round_trips_through_garage_and_restores_with_no_catalog() -> Result<()> {
    let env = Env::with_s3().await?;
    let garage = env.garage.as_ref().expect("an S3 env");
    let tree = env.path("tree");
    build_tree(&tree)?;
    env.tenant_with_source(&tree).await?;
    let node = env.node().await?;
    env.cli(&["backup", "acme/docs", "--wait", "--timeout", "300"])
        .await?;
    let row = env.wait_final(1).await?;
    assert_verified(&row);

    // Packs of ~16 MiB batches exceed the 6 MiB multipart threshold of the test config.
    let metrics = vaultline_testkit::http_get(node.admin, "/metrics").await?.1;
    assert!(s3_requests(&metrics, "UploadPart") >= 2, "{metrics}");
    assert!(s3_requests(&metrics, "CompleteMultipartUpload") >= 1);
    assert!(
        s3_requests(&metrics, "PutObject") >= 2,
        "manifest and tenant key"
    );
    assert!(
        s3_requests(&metrics, "GetObject") >= 1,
        "the verifier reads back"
    );

    // Every pack the catalog records is in the bucket, whole.
    let repo = node.deps.repository.clone();
    assert!(repo.describe().starts_with("s3://vaultline/repo"));
    let tenant = Name::new("acme")?;
    let packs = env.catalog.snapshot_packs(&tenant, &row.id).await?;
    assert!(packs.len() >= 3, "{packs:?}");
    for (pack, size) in &packs {
        assert_eq!(
            repo.size(&ObjectKey::pack(&tenant, pack)).await?,
            Some(*size),
            "pack {pack}"
        );
    }

    // A stored object is never replaced: not by a small put, not by a
    // multipart one (Garage ignores If-None-Match, so HEAD decides there).
    let (pack, size) = packs[0];
    let key = ObjectKey::pack(&tenant, &pack);
    let before = repo.digest(&key).await?;
    for forged_size in [1024usize, 7 << 20] {
        let forged = env.path(&format!("forged-{forged_size}"));
        std::fs::write(&forged, vec![0x5a; forged_size])?;
        let refused = repo.put_file(&key, &forged).await.unwrap_err();
        assert!(
            matches!(refused, vaultline_storage::Error::Conflict { .. }),
            "{refused}"
        );
    }
    assert_eq!(
        repo.digest(&key).await?,
        before,
        "pack {pack} of {size} bytes"
    );

    // Through the catalog.
    let restored = env.restore_to(&row.id, "restored").await?;
    assert!(snapshot_of(&tree)? == snapshot_of(&restored)?);

    // With nothing but the bucket, the AWS variables and the identity file:
    // the catalog and NATS addresses point at closed ports.
    let identity = env.export_identity("acme").await?;
    node.shutdown().await;
    let vars = crate::harness::offline_vars(garage);
    // `vaultline restore <snapshot> --repo … --identity … --tenant acme <more>`
    let restore_offline = |more: &[&str], vars: &[(String, String)]| {
        let mut args = vec![
            "restore".to_owned(),
            row.id.to_string(),
            "--repo".into(),
            "s3://vaultline/repo".into(),
            "--identity".into(),
            identity.to_str().unwrap().to_owned(),
            "--tenant".into(),
            "acme".into(),
        ];
        args.extend(more.iter().map(|a| (*a).to_owned()));
        let vars = vars.to_vec();
        let env = &env;
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            env.bare_cli(&args, &vars).await
        }
    };
    let offline = env.path("offline");
    let out = restore_offline(&["--to", offline.to_str().unwrap()], &vars).await?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(snapshot_of(&tree)? == snapshot_of(&offline)?);

    // One file to stdout, byte for byte.
    let out = restore_offline(&["--path", "big.bin", "--to", "-"], &vars).await?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stdout == std::fs::read(tree.join("big.bin"))?,
        "big.bin differs on stdout"
    );

    // One directory out of the tree, and nothing else.
    let part = env.path("part");
    let out = restore_offline(
        &["--path", "deep/er", "--to", part.to_str().unwrap()],
        &vars,
    )
    .await?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let want: Vec<String> = snapshot_of(&tree)?
        .into_keys()
        .filter(|k| k.starts_with("deep/er"))
        .collect();
    let got: Vec<String> = snapshot_of(&part)?
        .into_keys()
        .filter(|k| k != "deep")
        .collect();
    assert_eq!(got, want);
    assert_eq!(
        std::fs::read(part.join("deep/er/file-7.txt"))?,
        std::fs::read(tree.join("deep/er/file-7.txt"))?
    );

    // A wrong secret is a clear refusal, and the secret is not in it.
    let mut wrong = vars.clone();
    wrong[3].1 = "0".repeat(64);
    let never = env.path("never");
    let out = restore_offline(&["--to", never.to_str().unwrap()], &wrong).await?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("S3 HeadObject") && stderr.contains("access denied"),
        "{stderr}"
    );
    assert!(!stderr.contains(&garage.secret_access_key) && !stderr.contains(&"0".repeat(64)));
    Ok(())
}
