//! The scheduler: slots fire once however many replicas run, missed slots
//! fire once, and scheduled snapshots flow through the whole pipeline.

use crate::harness::{Env, assert_verified};
use anyhow::Result;
use futures::StreamExt;
use std::collections::BTreeMap;
use std::time::Duration;
use vaultline_types::{Name, headers};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_fire_each_slot_once_and_downtime_catches_up_once() -> Result<()> {
    let (env, _tree) = Env::with_small_source().await?;
    env.cli(&["schedule", "add", "acme/docs", "--every", "10s"])
        .await?;
    // Only the deps: no stage consumes, so we count exactly what the schedulers publish.
    let node = vaultline_runtime::Node::start(env.config(), "test").await?;
    let deps = node.deps.clone();
    let client = async_nats::connect(env.nats.url()).await?;
    let mut triggers = client.subscribe("vaultline.backup.request.>").await?;
    client.flush().await?;

    let (tenant, source) = (Name::new("acme")?, Name::new("docs")?);
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let next_slot = now / 10 + 1;
    // Not due yet: nothing fires.
    assert_eq!(vaultline_scheduler::tick(&deps, now).await?, 0);
    // Two replicas race on the same due slot: exactly one fires it.
    let due = next_slot * 10;
    let (a, b) = tokio::join!(
        vaultline_scheduler::tick(&deps, due),
        vaultline_scheduler::tick(&deps, due + 1)
    );
    assert_eq!(a? + b?, 1, "one slot, one trigger");
    // Down for five slots, then back: one catch-up, not five.
    let back = due + 55;
    assert_eq!(vaultline_scheduler::tick(&deps, back).await?, 1);
    assert_eq!(vaultline_scheduler::tick(&deps, back).await?, 0);

    let mut seen = BTreeMap::new();
    while let Ok(Some(message)) =
        tokio::time::timeout(Duration::from_secs(2), triggers.next()).await
    {
        let id = message
            .headers
            .as_ref()
            .and_then(|h| h.get(headers::MSG_ID))
            .map(|v| v.as_str().to_owned());
        *seen.entry(id.unwrap_or_default()).or_insert(0) += 1;
    }
    let expected: Vec<String> = [next_slot, (back) / 10]
        .iter()
        .map(|slot| format!("schedule-{tenant}-{source}-10-{slot}"))
        .collect();
    assert_eq!(
        seen.keys().cloned().collect::<Vec<_>>(),
        expected,
        "{seen:?}"
    );
    assert!(
        seen.values().all(|n| *n == 1),
        "a slot was published twice: {seen:?}"
    );
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_scheduled_backup_runs_through_the_pipeline() -> Result<()> {
    let (env, _tree) = Env::with_small_source().await?;
    env.cli(&["schedule", "add", "acme/docs", "--every", "2s"])
        .await?;
    let node = env.node().await?;
    let row = env.wait_final(1).await?;
    assert_verified(&row);
    assert_eq!(row.trigger, "scheduled");
    env.cli(&["schedule", "disable", "acme/docs"]).await?;
    node.shutdown().await;
    Ok(())
}
