//! Dependencies going away mid-snapshot: the S3 server stopped for 30
//! seconds while packs are being uploaded, nats-server restarted while a
//! snapshot is in flight. After recovery the snapshot completes and restores
//! byte-identical; an outage longer than the retries fails it with a clear
//! error. Staged items also expire after the staging TTL on their own.

use crate::harness::{Env, assert_verified, mixed_bytes, snapshot_progress};
use anyhow::Result;
use std::time::{Duration, Instant};
use vaultline_catalog::SnapshotStatus;

/// Waits until snapshot number `nth` exists, has at least one pack stored and is not final.
pub(crate) async fn wait_mid_upload(env: &Env, nth: i64) -> Result<()> {
    let sql = env.sql().await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (count, newest) = snapshot_progress(&sql).await?;
        if let Some((status, _, packs)) = newest.filter(|_| count == nth) {
            anyhow::ensure!(
                !matches!(status.as_str(), "verified" | "failed" | "corrupt"),
                "the snapshot ended ({status}) before the outage began"
            );
            if packs >= 1 {
                return Ok(());
            }
        }
        anyhow::ensure!(Instant::now() < deadline, "no pack was ever stored");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_s3_outage_of_30_seconds_mid_upload_is_ridden_out_and_a_longer_one_fails_clearly()
-> Result<()> {
    let mut env = Env::with_s3().await?;
    let tree = env.path("tree");
    std::fs::create_dir_all(&tree)?;
    std::fs::write(tree.join("big.bin"), mixed_bytes(120 << 20, 5))?;
    env.tenant_with_source(&tree).await?;
    // Production-like retries for the uploader and verifier: spread over a minute.
    let mut config = env.config();
    for stage in ["uploader", "verifier"] {
        let settings = config.stages.entry(stage.into()).or_default();
        settings.max_deliver = Some(8);
        settings.backoff = Some(vec![
            "1s".into(),
            "2s".into(),
            "5s".into(),
            "10s".into(),
            "15s".into(),
        ]);
    }
    // Max deliveries live in the server's consumers: applied as `vaultline migrate` does.
    vaultline_runtime::setup::apply_bus(&config).await?;
    let node = vaultline::start_node(config, &vaultline::SERVED).await?;

    env.cli(&["backup", "acme/docs"]).await?;
    wait_mid_upload(&env, 1).await?;
    let garage = env.garage.as_mut().expect("an S3 env");
    garage.stop();
    let stopped = Instant::now();
    tokio::time::sleep(Duration::from_secs(30)).await;
    let row = env.catalog.snapshots(None, None).await?.remove(0);
    assert!(
        !row.status.is_terminal(),
        "ended during the outage: {row:?}"
    );
    env.garage.as_mut().expect("an S3 env").restart()?;
    let row = env.wait_final(1).await?;
    assert_verified(&row);
    eprintln!(
        "verified {:.1}s after the S3 server stopped",
        stopped.elapsed().as_secs_f64()
    );
    let restored = env.restore_to(&row.id, "restored").await?;
    assert!(std::fs::read(restored.join("big.bin"))? == std::fs::read(tree.join("big.bin"))?);
    node.shutdown().await;

    // The same outage with the test config's three quick attempts: the
    // snapshot fails, and says S3 is why.
    let node = env.node().await?;
    std::fs::write(tree.join("big.bin"), mixed_bytes(40 << 20, 6))?;
    env.cli(&["backup", "acme/docs"]).await?;
    wait_mid_upload(&env, 2).await?;
    env.garage.as_mut().expect("an S3 env").stop();
    let row = env.wait_final(2).await?;
    assert_eq!(row.status, SnapshotStatus::Failed);
    let error = row.error.unwrap_or_default();
    assert!(error.contains("S3 "), "{error}");
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_nats_restart_mid_snapshot_is_ridden_out() -> Result<()> {
    let mut env = Env::new().await?;
    let tree = env.path("tree");
    std::fs::create_dir_all(&tree)?;
    std::fs::write(tree.join("big.bin"), mixed_bytes(120 << 20, 8))?;
    env.tenant_with_source(&tree).await?;
    let mut config = env.config();
    for stage in ["extractor", "packager", "uploader", "verifier"] {
        let settings = config.stages.entry(stage.into()).or_default();
        settings.max_deliver = Some(8);
        settings.backoff = Some(vec!["1s".into(), "2s".into(), "5s".into()]);
    }
    // The server holds max_deliver: `vaultline migrate` gives it the budget.
    vaultline_runtime::setup::apply_bus(&config).await?;
    let node = vaultline::start_node(config, &vaultline::SERVED).await?;
    env.cli(&["backup", "acme/docs"]).await?;
    wait_mid_upload(&env, 1).await?;
    env.nats.stop();
    tokio::time::sleep(Duration::from_secs(3)).await;
    env.nats.restart()?;
    let row = env.wait_final(1).await?;
    assert_verified(&row);
    let restored = env.restore_to(&row.id, "restored").await?;
    assert!(std::fs::read(restored.join("big.bin"))? == std::fs::read(tree.join("big.bin"))?);
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shared_staging_items_expire_after_the_ttl() -> Result<()> {
    let env = Env::new().await?;
    // The admin creates the bucket (`vaultline migrate`); a stage only opens it.
    let admin = async_nats::jetstream::new(env.nats_as("admin").await?);
    vaultline_bus::StagingStore::create(&admin, Duration::from_secs(2), 1).await?;
    let js = async_nats::jetstream::new(env.nats_as("extractor").await?);
    let store = vaultline_bus::StagingStore::open(&js).await?;
    let item = env.path("item");
    std::fs::write(&item, mixed_bytes(3 << 20, 1))?;
    store.put_file("acme/s/a1/batch-000000", &item).await?;
    let back = env.path("back");
    assert!(store.get_file("acme/s/a1/batch-000000", &back).await?);
    assert!(std::fs::read(&back)? == std::fs::read(&item)?);
    let deadline = Instant::now() + Duration::from_secs(20);
    while store.get_file("acme/s/a1/batch-000000", &back).await? {
        anyhow::ensure!(Instant::now() < deadline, "the item outlived its TTL");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(())
}
