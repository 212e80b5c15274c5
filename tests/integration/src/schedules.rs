//! The scheduler: slots fire once however many replicas run, missed slots
//! fire once, a source never has two snapshots in flight, and scheduled
//! snapshots flow through the whole pipeline.

use crate::harness::{Env, Process, all_but, assert_verified, node_with_slow};
use anyhow::{Context, Result};
use futures::StreamExt;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use vaultline_types::{Name, StageName, headers};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_fire_each_slot_once_and_downtime_catches_up_once() -> Result<()> {
    let (env, _tree) = Env::with_small_source().await?;
    env.cli(&["schedule", "add", "acme/docs", "--every", "10s"])
        .await?;
    // Only the deps: no stage consumes, so we count exactly what the schedulers publish.
    let mut node = vaultline_runtime::Node::start(env.config(), "test").await?;
    let deps = node.deps_for(StageName::Scheduler).await?;
    let client = env.nats_as("operator").await?;
    let mut triggers = client.subscribe("vaultline.backup.request.>").await?;
    client.flush().await?;

    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let next_slot = (now / 10 + 1) * 10;
    // Not due yet: nothing fires.
    assert_eq!(vaultline_scheduler::tick(&deps, now).await?, 0);
    // Two replicas race on the same due slot: exactly one fires it.
    let (a, b) = tokio::join!(
        vaultline_scheduler::tick(&deps, next_slot),
        vaultline_scheduler::tick(&deps, next_slot + 1)
    );
    assert_eq!(a? + b?, 1, "one slot, one trigger");
    // The slot's trigger is still in flight (nothing consumes it): the next slot is skipped.
    let mut skips = client.subscribe("vaultline.schedule.skipped.>").await?;
    client.flush().await?;
    assert_eq!(vaultline_scheduler::tick(&deps, next_slot + 10).await?, 0);
    tokio::time::timeout(Duration::from_secs(5), skips.next())
        .await?
        .context("a skip event")?;
    // Down for five slots, then back (the trigger long since presumed lost): one catch-up, not five.
    env.sql()
        .await?
        .execute(
            "UPDATE schedules SET last_fired_at = now() - interval '1 day'",
            &[],
        )
        .await?;
    let back = next_slot + 65;
    assert_eq!(vaultline_scheduler::tick(&deps, back).await?, 1);
    assert_eq!(vaultline_scheduler::tick(&deps, back).await?, 0);

    let seen = drain_ids(&mut triggers, Duration::from_secs(2)).await;
    let slots: Vec<i64> = seen.keys().map(|id| slot_of(id)).collect::<Result<_>>()?;
    assert_eq!(slots, [next_slot, back / 10 * 10], "{seen:?}");
    assert!(
        seen.keys().all(|id| id.starts_with("schedule-acme-docs-")),
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
async fn a_cron_schedule_fires_each_slot_once_with_two_scheduler_processes() -> Result<()> {
    let (env, _tree) = Env::with_small_source().await?;
    let node = vaultline::start_node(env.config(), &all_but(&[StageName::Scheduler])).await?;
    let client = env.nats_as("operator").await?;
    let mut triggers = client.subscribe("vaultline.backup.request.>").await?;
    client.flush().await?;
    env.cli(&[
        "schedule",
        "add",
        "acme/docs",
        "--cron",
        "*/2 * * * * *",
        "--timezone",
        "Europe/Paris",
    ])
    .await?;
    let replicas = [
        Process::start(&env, "vaultline-scheduler")?,
        Process::start(&env, "vaultline-scheduler")?,
    ];
    let seen = drain_ids(&mut triggers, Duration::from_secs(10)).await;
    drop(replicas);
    env.cli(&["schedule", "disable", "acme/docs"]).await?;

    assert!(seen.len() >= 3, "too few slots fired in 10 s: {seen:?}");
    assert!(
        seen.values().all(|n| *n == 1),
        "a slot was published twice: {seen:?}"
    );
    let slots: Vec<i64> = seen.keys().map(|id| slot_of(id)).collect::<Result<_>>()?;
    assert!(
        slots.iter().all(|s| s % 2 == 0),
        "off-grid slots: {slots:?}"
    );

    // Every trigger became exactly one verified snapshot, started just after its slot.
    let (tenant, source) = (Name::new("acme")?, Name::new("docs")?);
    for id in seen.keys() {
        let row = env.wait_request(&tenant, &source, id).await?;
        assert_verified(&row);
        assert_eq!(row.trigger, "scheduled");
        let lag = row.started_at.unix_timestamp() - slot_of(id)?;
        assert!((0..5).contains(&lag), "{id} started {lag}s after its slot");
    }
    let rows = env
        .catalog
        .snapshots(Some(&Name::new("acme")?), Some(&Name::new("docs")?))
        .await?;
    assert_eq!(rows.len(), seen.len(), "one snapshot per fired slot");
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stopped_scheduler_catches_up_once_when_it_restarts() -> Result<()> {
    let (env, _tree) = Env::with_small_source().await?;
    let client = env.nats_as("operator").await?;
    let mut triggers = client.subscribe("vaultline.backup.request.>").await?;
    client.flush().await?;
    // Every stage but the scheduler consumes, so slots are not skipped as in flight.
    let node = vaultline::start_node(env.config(), &all_but(&[StageName::Scheduler])).await?;
    env.cli(&["schedule", "add", "acme/docs", "--cron", "*/2 * * * * *"])
        .await?;
    let scheduler = Process::start(&env, "vaultline-scheduler")?;
    let first = tokio::time::timeout(Duration::from_secs(15), triggers.next())
        .await?
        .context("a first trigger")?;
    let before = slot_of(&msg_id(&first))?;
    drop(scheduler);
    // Down across at least three slots.
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert!(
        drain_ids(&mut triggers, Duration::from_millis(100))
            .await
            .keys()
            .all(|id| slot_of(id).is_ok_and(|s| s <= before + 2)),
        "a stopped scheduler fired"
    );
    let _scheduler = Process::start(&env, "vaultline-scheduler")?;
    let catch_up = tokio::time::timeout(Duration::from_secs(15), triggers.next())
        .await?
        .context("a catch-up trigger")?;
    let received = time::OffsetDateTime::now_utc().unix_timestamp();
    let catch_up = slot_of(&msg_id(&catch_up))?;
    assert!(
        catch_up >= before + 6,
        "the catch-up is the latest missed slot, not the first ({before} → {catch_up})"
    );
    let after = drain_ids(&mut triggers, Duration::from_secs(3)).await;
    let missed_fired: Vec<i64> = after
        .keys()
        .filter_map(|id| slot_of(id).ok())
        .filter(|s| *s < received && *s != catch_up)
        .collect();
    assert!(
        missed_fired.is_empty(),
        "missed slots fired once each: {missed_fired:?} besides the catch-up {catch_up}"
    );
    env.cli(&["schedule", "disable", "acme/docs"]).await?;
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_source_never_has_two_snapshots_in_flight() -> Result<()> {
    let (env, _tree) = Env::with_small_source().await?;
    let node = node_with_slow::<vaultline_extractor::Extractor>(
        &env,
        Duration::ZERO,
        Duration::from_millis(2500),
        true,
    )
    .await?;
    env.cli(&["schedule", "add", "acme/docs", "--every", "1s"])
        .await?;
    let sql = env.sql().await?;
    let in_flight =
        "SELECT count(*) FROM snapshots WHERE status IN ('extracting', 'extracted', 'stored')";
    let until = Instant::now() + Duration::from_secs(10);
    let mut most = 0;
    while Instant::now() < until {
        most = most.max(sql.query_one(in_flight, &[]).await?.get::<_, i64>(0));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    env.cli(&["schedule", "disable", "acme/docs"]).await?;
    assert_eq!(most, 1, "snapshots in flight at once");

    let rows = env.wait_final(2).await?;
    assert_verified(&rows);
    let done = sql
        .query(
            "SELECT started_at, finished_at FROM snapshots WHERE status = 'verified' ORDER BY started_at",
            &[],
        )
        .await?;
    assert!(done.len() >= 2, "only {} snapshot(s) in 10 s", done.len());
    for pair in done.windows(2) {
        let finished: time::OffsetDateTime = pair[0].get(1);
        let next_started: time::OffsetDateTime = pair[1].get(0);
        assert!(
            finished <= next_started,
            "a snapshot started at {next_started} before the previous one finished at {finished}"
        );
    }
    // Each skipped slot is in the audit trail.
    let skipped: i64 = sql
        .query_one(
            "SELECT count(*) FROM audit_events WHERE kind = 'schedule.skipped'",
            &[],
        )
        .await?
        .get(0);
    assert!(skipped >= 3, "skips audited: {skipped}");
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

fn msg_id(message: &async_nats::Message) -> String {
    message
        .headers
        .as_ref()
        .and_then(|h| h.get(headers::MSG_ID))
        .map(|v| v.as_str().to_owned())
        .unwrap_or_default()
}

/// The slot (unix seconds) a scheduled trigger's id names.
/// The slot of `schedule-<tenant>-<source>-<slot>-<nonce>`.
fn slot_of(id: &str) -> Result<i64> {
    id.rsplit('-')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("{id:?} is not a slot id"))
}

/// Message ids received within `window`, with how often each came.
async fn drain_ids(
    subscriber: &mut async_nats::Subscriber,
    window: Duration,
) -> BTreeMap<String, u32> {
    let mut seen = BTreeMap::new();
    let until = tokio::time::Instant::now() + window;
    while let Ok(Some(message)) = tokio::time::timeout_at(until, subscriber.next()).await {
        *seen.entry(msg_id(&message)).or_insert(0) += 1;
    }
    seen
}
