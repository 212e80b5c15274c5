//! scheduler — reads the schedules in the catalog and the clock; fires each
//! due slot once (safe with several replicas), never while the source has a
//! snapshot in flight; emits *backup requested*.
//!
//! A schedule is a cron expression in an IANA time zone or an interval; a slot
//! is identified by the unix time it begins. A replica claims a slot in the
//! catalog before publishing, so replicas never fire a slot twice; the
//! trigger's request id and Nats-Msg-Id are recorded with the claim and end
//! in a nonce, so nobody can publish them first. After downtime only the latest slot is due: missed
//! slots fire once, not once each. A slot that finds the source's previous
//! snapshot (or trigger) still in flight is skipped, and the skip is published
//! for the auditor.

use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use vaultline_catalog::ScheduleRow;
use vaultline_policy::Cadence;
use vaultline_runtime::metrics::{MetricName, count};
use vaultline_runtime::runner::{publish_first, traceparent_for};
use vaultline_runtime::{Deps, Node, Outgoing, StageError};
use vaultline_types::{
    BackupRequested, SCHEDULED_REQUEST_PREFIX, ScheduleSkipped, StageName, TriggerKind,
};

/// How often the clock is checked.
pub const TICK: Duration = Duration::from_millis(500);

/// Adds the scheduler to a node (used by `vaultline-scheduler` and `vaultline serve`).
///
/// # Errors
/// When the scheduler's dependencies (its catalog login, NATS) cannot be set up.
pub async fn install(node: &mut Node) -> Result<(), StageError> {
    node.spawn_service(StageName::Scheduler, run).await
}

/// Ticks until `stop` flips. Errors are logged and retried on the next tick.
pub async fn run(deps: Arc<Deps>, mut stop: watch::Receiver<bool>) {
    tracing::info!(stage = "scheduler", "Stage started.");
    loop {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        if let Err(error) = tick(&deps, now).await {
            tracing::warn!(stage = "scheduler", %error, "Scheduler tick failed; retrying.");
        }
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = stop.wait_for(|stop| *stop) => break,
        }
    }
    tracing::info!(stage = "scheduler", "Stage stopped.");
}

/// Fires every schedule whose latest slot is due at `now` (unix seconds).
/// Returns how many backups were requested.
///
/// # Errors
/// When the catalog or NATS fails; the next tick retries.
pub async fn tick(deps: &Deps, now: i64) -> Result<u32, StageError> {
    let mut fired = 0;
    for schedule in deps.catalog.schedules().await? {
        if !schedule.enabled {
            continue;
        }
        let cadence = match Cadence::parse(&schedule.spec) {
            Ok(cadence) => cadence,
            Err(error) => {
                tracing::warn!(tenant = %schedule.tenant, source = %schedule.source, %error, "Ignoring an invalid schedule.");
                continue;
            }
        };
        let Some(slot) = cadence.latest_at_or_before(now) else {
            continue;
        };
        if slot <= schedule.last_slot {
            continue; // Not due yet.
        }
        let key = slot_key(&schedule, slot);
        let in_flight = deps
            .catalog
            .snapshot_in_flight(&schedule.tenant, &schedule.source)
            .await?;
        // A skipped slot is claimed too (without a request), so no replica fires it later.
        let request = (!in_flight).then_some(key.as_str());
        if !deps
            .catalog
            .claim_slot(&schedule.tenant, &schedule.source, slot, request)
            .await?
        {
            continue; // Another replica took it.
        }
        let (id, event, outcome) = if in_flight {
            tracing::warn!(tenant = %schedule.tenant, source = %schedule.source, slot, "Skipping a due slot: the previous snapshot is still in flight.");
            let skipped = ScheduleSkipped {
                tenant: schedule.tenant.clone(),
                source: schedule.source.clone(),
                slot,
                reason: "previous snapshot still in flight".into(),
            };
            (format!("skip-{key}"), Outgoing::event(&skipped), "skipped")
        } else {
            tracing::info!(tenant = %schedule.tenant, source = %schedule.source, slot, "Firing a scheduled backup.");
            let request = BackupRequested {
                tenant: Some(schedule.tenant.clone()),
                source: Some(schedule.source.clone()),
                request_id: Some(key.clone()),
                trigger: TriggerKind::Scheduled,
                ..Default::default()
            };
            (key, Outgoing::event(&request), "done")
        };
        // Nobody can have guessed the nonce, so a duplicate means the id
        // leaked: the trigger goes out again under another, and the slot fires.
        publish_first(
            deps,
            StageName::Scheduler,
            event,
            &id,
            || format!("{id}-again"),
            &traceparent_for(&id),
        )
        .await?;
        count(
            MetricName::StageMessages,
            &[("stage", "scheduler".into()), ("outcome", outcome.into())],
            1,
        );
        fired += u32::from(!in_flight);
    }
    Ok(fired)
}

/// The request id and Nats-Msg-Id of a slot. Only the replica that claims
/// the slot publishes it, so the id need not be the same on every replica;
/// it ends in a nonce so nobody can publish it first and have the stream
/// drop the real trigger as a duplicate (the extractor accepts a `schedule-`
/// id only when the catalog recorded it for that source's last slot).
pub fn slot_key(schedule: &ScheduleRow, slot: i64) -> String {
    let mut nonce = [0u8; 8];
    getrandom::fill(&mut nonce).expect("OS random source");
    format!(
        "{SCHEDULED_REQUEST_PREFIX}{}-{}-{slot}-{}",
        schedule.tenant,
        schedule.source,
        hex::encode(nonce)
    )
}
