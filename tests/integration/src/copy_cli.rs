//! `vaultline copy`: existing snapshots into another repository, each object
//! moved once, nothing on a second run, and key records wrapped to another
//! KEK when asked.

use crate::copies::restore_offline;
use crate::harness::{Env, assert_verified, offline_vars};
use crate::pipeline::snapshot_of;
use anyhow::Result;
use std::collections::BTreeMap;
use std::time::Instant;
use vaultline_testkit::Garage;

/// Every `vaultline_s3_requests_total` with outcome ok, by operation.
fn s3_requests(metrics: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for line in metrics
        .lines()
        .filter(|l| l.starts_with("vaultline_s3_requests_total") && l.contains("outcome=\"ok\""))
    {
        let Some(op) = line
            .split("operation=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
        else {
            continue;
        };
        let value = line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
        *out.entry(op.to_owned()).or_insert(0) += value as u64;
    }
    out
}

fn delta(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(op, n)| (op.clone(), n - before.get(op).copied().unwrap_or(0)))
        .filter(|(_, n)| *n > 0)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn copying_five_snapshots_moves_each_object_once_and_again_nothing() -> Result<()> {
    let env = Env::new().await?;
    let garage = Garage::start()?;
    // The primary is a directory; [repository.s3] is what `--to-repo s3://…` uses.
    let secret = env.path("s3-secret");
    std::fs::write(&secret, &garage.secret_access_key)?;
    let mut config = std::fs::read_to_string(&env.config_file)?;
    config += &format!(
        "[repository.s3]\nendpoint = \"{}\"\nregion = \"{}\"\naccess-key-id = \"{}\"\nsecret-access-key-file = \"{}\"\n",
        garage.endpoint(),
        Garage::REGION,
        garage.access_key_id,
        secret.display()
    );
    std::fs::write(&env.config_file, config)?;
    let tree = env.path("tree");
    crate::pipeline::build_tree(&tree)?;
    env.tenant_with_source(&tree).await?;
    // The node counts the S3 requests of the in-process CLI on its /metrics.
    let node = env.node().await?;
    let mut snapshots = Vec::new();
    for round in 1..=5u64 {
        std::fs::write(
            tree.join(format!("round-{round}.bin")),
            crate::harness::mixed_bytes(2 << 20, round),
        )?;
        env.cli(&["backup", "acme/docs", "--wait", "--timeout", "120"])
            .await?;
        let row = env.wait_final(round as usize).await?;
        assert_verified(&row);
        snapshots.push((row.id.clone(), snapshot_of(&tree)?));
    }
    let sql = env.sql().await?;
    let unique_packs: i64 = sql
        .query_one("SELECT sum(size)::bigint FROM packs", &[])
        .await?
        .get(0);

    let target = format!("s3://{}/archive", Garage::BUCKET);
    let requests = || async {
        Ok::<_, anyhow::Error>(s3_requests(
            &vaultline_testkit::http_get(node.admin, "/metrics").await?.1,
        ))
    };
    let before = requests().await?;
    let started = Instant::now();
    env.cli(&["copy", "--to-repo", &target]).await?;
    let took = started.elapsed();
    let first = delta(&before, &requests().await?);
    let archive =
        vaultline_runtime::deps::open_repository(&env.config().repository, Some(&target)).await?;
    let moved: u64 = archive
        .list_sized("tenants/")
        .await?
        .iter()
        .map(|(_, size)| size)
        .sum();
    assert!(
        moved as f64 <= 1.05 * unique_packs as f64,
        "moved {moved} bytes for {unique_packs} bytes of unique packs"
    );
    assert!(
        moved >= unique_packs as u64,
        "moved {moved} bytes, less than the packs' {unique_packs}"
    );
    let gib = moved as f64 / f64::from(1u32 << 30);
    eprintln!(
        "vaultline copy of 5 snapshots: {moved} bytes moved for {unique_packs} bytes of unique packs in {:.2} s; S3 requests {first:?}; per GiB: {:.0} requests",
        took.as_secs_f64(),
        first.values().sum::<u64>() as f64 / gib
    );

    // Again: everything is there, so nothing is put.
    let before = requests().await?;
    env.cli(&["copy", "--to-repo", &target]).await?;
    let second = delta(&before, &requests().await?);
    for op in [
        "PutObject",
        "UploadPart",
        "CreateMultipartUpload",
        "GetObject",
    ] {
        assert_eq!(second.get(op), None, "a second copy moved data: {second:?}");
    }
    let again: u64 = archive
        .list_sized("tenants/")
        .await?
        .iter()
        .map(|(_, size)| size)
        .sum();
    assert_eq!(again, moved);

    // The copy restores on its own, with the identity file and no catalog.
    let identity = env.export_identity("acme").await?;
    let vars = offline_vars(&garage);
    let (snapshot, want) = &snapshots[2];
    let to = env.path("from-archive");
    restore_offline(&env, &vars, (snapshot, want), &target, &identity, &to).await?;

    // Into a repository of another KEK: the key records there are wrapped
    // to it, so its KEK lists the snapshots and ours opens nothing there.
    let (_, new_kek) = vaultline_format::keys::Kek::generate();
    let new_kek_file = env.path("other-kek.txt");
    std::fs::write(&new_kek_file, &new_kek)?;
    let other = format!("s3://{}/other-kek", Garage::BUCKET);
    env.cli(&[
        "copy",
        "--to-repo",
        &other,
        "--to-kek",
        new_kek_file.to_str().unwrap(),
    ])
    .await?;
    let list_with = |kek: String| {
        let mut vars = vars.clone();
        vars.push(("VAULTLINE_KEK".into(), kek));
        let (env, other) = (&env, other.clone());
        async move {
            env.bare_cli(&["snapshots", "--repo", &other, "--json"], &vars)
                .await
        }
    };
    let out = list_with(new_kek.clone()).await?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(listed.as_array().map(Vec::len), Some(5), "{listed}");
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["error"].is_null()),
        "{listed}"
    );
    let ours = std::fs::read_to_string(env.path("kek.txt"))?;
    let out = list_with(ours).await?;
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success() || !listed.contains("\"source\":\"docs\""),
        "our KEK opened the other repository: {listed}"
    );
    node.shutdown().await;
    Ok(())
}
