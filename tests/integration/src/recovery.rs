//! A repository that outlives its catalog: with nothing but the bucket and
//! one secret (the tenant's identity file, or the KEK), snapshots are
//! listed, their entries listed and restored, with no catalog and no NATS.
//! The key records written at `tenant create` are what make the KEK enough.

use crate::harness::{Env, assert_verified};
use crate::pipeline::{build_tree, snapshot_of};
use anyhow::Result;
use vaultline_format::key_record::KeyRecord;
use vaultline_storage::ObjectKey;
use vaultline_types::Name;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_bucket_and_one_secret_list_ls_and_restore_with_no_catalog() -> Result<()> {
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

    // The tenant's key record is in the bucket, and opens with the KEK.
    let repo = node.deps.repository.clone();
    let acme = Name::new("acme")?;
    let records = repo.list(&ObjectKey::key_records(&acme)).await?;
    assert_eq!(records.len(), 1, "{records:?}");
    let record = KeyRecord::parse(&repo.get(&records[0]).await?)?;
    let kek_file = env.path("kek.txt");
    let kek = vaultline_format::keys::Kek::parse(&std::fs::read_to_string(&kek_file)?)?;
    assert_eq!(
        records[0],
        ObjectKey::key_record(&acme, &record.key_id, &kek.id())
    );
    record.open_with_kek(&kek)?;

    let identity = env.export_identity("acme").await?;
    node.shutdown().await;
    // The catalog and NATS addresses point at closed ports.
    let vars = crate::harness::offline_vars(garage);
    let with_kek: Vec<(String, String)> = vars
        .iter()
        .cloned()
        .chain([(
            "VAULTLINE_KEYS__KEK_FILE".to_owned(),
            kek_file.display().to_string(),
        )])
        .collect();
    let identity = identity.to_str().unwrap();
    let offline = |args: Vec<&str>, vars: &[(String, String)]| {
        let full: Vec<String> = args
            .into_iter()
            .chain(["--repo", "s3://vaultline/repo"])
            .map(str::to_owned)
            .collect();
        let vars = vars.to_vec();
        let env = &env;
        async move {
            let args: Vec<&str> = full.iter().map(String::as_str).collect();
            let out = env.bare_cli(&args, &vars).await?;
            anyhow::ensure!(
                out.status.success(),
                "{full:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            Ok(String::from_utf8(out.stdout)?)
        }
    };

    // `snapshots --repo`, with the identity file and with the KEK: the
    // manifest's own record of the snapshot, equal to the catalog's.
    for (secret, vars) in [(vec!["--identity", identity], &vars), (vec![], &with_kek)] {
        let mut args = vec!["snapshots", "--json"];
        args.extend(secret);
        let listed: serde_json::Value = serde_json::from_str(&offline(args, vars).await?)?;
        let listed = listed.as_array().unwrap();
        assert_eq!(listed.len(), 1, "{listed:?}");
        assert_eq!(listed[0]["snapshot"], row.id.as_str());
        assert_eq!(listed[0]["tenant"], "acme");
        assert_eq!(listed[0]["source"], "docs");
        assert_eq!(listed[0]["kind"], "files");
        assert_eq!(listed[0]["bytes"], row.bytes_read);
        assert!(listed[0]["error"].is_null());
    }

    // The manifest records the source's config: what a catalog rebuilt from
    // the repository needs to back the source up again.
    let opened = vaultline_format::keys::parse_identity(&std::fs::read_to_string(identity)?)?;
    let (header, _) =
        vaultline_restore::manifest_summary(&repo, &acme, &row.id, &opened.into()).await?;
    assert_eq!(
        header.source_config,
        Some(vaultline_types::SourceConfig::Files(
            vaultline_types::FilesSource {
                path: tree.canonicalize()?
            }
        ))
    );

    // `ls`: every path of the tree, in manifest order, with no --tenant.
    let listed = offline(vec!["ls", row.id.as_str(), "--identity", identity], &vars).await?;
    let want: Vec<String> = snapshot_of(&tree)?.into_keys().collect();
    let mut got: Vec<String> = listed.lines().map(str::to_owned).collect();
    got.sort();
    assert_eq!(got, want);
    // One directory, long: each line is a mode, an owner, a size, a time and the path.
    let long = offline(
        vec![
            "ls",
            row.id.as_str(),
            "deep",
            "--long",
            "--identity",
            identity,
        ],
        &with_kek,
    )
    .await?;
    let under: Vec<&String> = want
        .iter()
        .filter(|p| p.as_str() == "deep" || p.starts_with("deep/"))
        .collect();
    assert_eq!(long.lines().count(), under.len(), "{long}");
    for line in long.lines() {
        assert!(
            line.starts_with('d') || line.starts_with('-') || line.starts_with('l'),
            "{line}"
        );
        assert!(line.contains(" deep"), "{line}");
    }
    let json = offline(
        vec![
            "ls",
            row.id.as_str(),
            "big.bin",
            "--json",
            "--identity",
            identity,
        ],
        &vars,
    )
    .await?;
    let entry: serde_json::Value = serde_json::from_str(json.trim())?;
    assert_eq!(entry["type"], "file");
    assert_eq!(
        entry["size"],
        std::fs::metadata(tree.join("big.bin"))?.len()
    );

    // `restore --repo` with the KEK alone, the tenant found in the bucket.
    let restored = env.path("restored");
    offline(
        vec![
            "restore",
            row.id.as_str(),
            "--to",
            restored.to_str().unwrap(),
        ],
        &with_kek,
    )
    .await?;
    assert!(snapshot_of(&tree)? == snapshot_of(&restored)?);

    // A path the snapshot does not hold is a clear error; so is a KEK that
    // opens no key record.
    let missing = env
        .bare_cli(
            &[
                "ls",
                row.id.as_str(),
                "nowhere",
                "--identity",
                identity,
                "--repo",
                "s3://vaultline/repo",
            ],
            &vars,
        )
        .await?;
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no entry \"nowhere\""));
    let other_kek = env.path("other-kek.txt");
    std::fs::write(&other_kek, vaultline_format::keys::Kek::generate().1)?;
    let mut wrong = vars.clone();
    wrong.push((
        "VAULTLINE_KEYS__KEK_FILE".into(),
        other_kek.display().to_string(),
    ));
    let refused = env
        .bare_cli(&["snapshots", "--repo", "s3://vaultline/repo"], &wrong)
        .await?;
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(stderr.contains("no tenant's key record"), "{stderr}");
    Ok(())
}
