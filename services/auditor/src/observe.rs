//! The auditor's watch over the pipeline. Every `[observer] interval` it
//! exports what no single stage can see: each stage's backlog (as KEDA reads
//! it), per-source and per-tenant figures from the catalog (so replicas agree
//! and a restart loses nothing), and it fails snapshots stuck in flight past
//! their deadline, which would otherwise block their source's schedule and
//! their tenant's GC forever.

use std::sync::Arc;
use time::OffsetDateTime;
use tokio::sync::watch;
use vaultline_catalog::{SnapshotStatus, StuckSnapshot};
use vaultline_policy::Cadence;
use vaultline_runtime::metrics::{MetricName, count, gauge};
use vaultline_runtime::runner::{publish, traceparent_for};
use vaultline_runtime::{Deps, Outgoing, StageError};
use vaultline_types::{SnapshotFailed, StageName};

/// Observes until `stop` flips; a failed round is logged and retried.
pub async fn run(deps: Arc<Deps>, mut stop: watch::Receiver<bool>) {
    loop {
        if let Err(error) = observe_once(&deps).await {
            tracing::warn!(stage = "auditor", %error, "Observing the pipeline failed; retrying.");
        }
        tokio::select! {
            _ = tokio::time::sleep(deps.config.observer.interval) => {}
            _ = stop.wait_for(|stop| *stop) => break,
        }
    }
}

/// One round: backlogs, catalog figures, the reaper. Each part runs even
/// when another failed, so a broken figure never stops the reaper.
///
/// # Errors
/// The first failure of the catalog or NATS.
pub async fn observe_once(deps: &Deps) -> Result<(), StageError> {
    export_backlogs(deps).await;
    let sources = export_sources(deps).await;
    let wal = export_wal(deps).await;
    let tenants = export_tenants(deps).await;
    let reaped = reap(deps).await;
    sources.and(wal).and(tenants).and(reaped)
}

async fn export_backlogs(deps: &Deps) {
    for stage in StageName::ALL {
        if vaultline_bus::consumer_json(stage).is_none() {
            continue; // The scheduler consumes nothing.
        }
        match deps.bus.backlog(stage).await {
            Ok(backlog) => {
                let labels = [("stage", stage.to_string())];
                gauge(MetricName::StageConsumerLag, &labels, backlog.lag as f64);
                gauge(
                    MetricName::StageOldestPendingAge,
                    &labels,
                    backlog.oldest.as_secs_f64(),
                );
            }
            Err(error) => {
                tracing::warn!(stage = %stage, %error, "Could not read a stage's backlog.");
            }
        }
    }
}

fn unix(at: Option<OffsetDateTime>) -> f64 {
    at.map_or(0.0, |at| at.unix_timestamp() as f64)
}

async fn export_sources(deps: &Deps) -> Result<(), StageError> {
    let now = OffsetDateTime::now_utc().unix_timestamp();
    for schedule in deps.catalog.schedules().await? {
        let interval = Cadence::parse(&schedule.spec)
            .ok()
            .filter(|_| schedule.enabled)
            .and_then(|cadence| cadence.interval_at(now))
            .unwrap_or(0);
        let labels = [
            ("tenant", schedule.tenant.to_string()),
            ("source", schedule.source.to_string()),
        ];
        gauge(MetricName::SourceScheduleInterval, &labels, interval as f64);
    }
    for source in deps.catalog.source_stats().await? {
        let labels = [("tenant", source.tenant), ("source", source.source)];
        gauge(
            MetricName::SourceLastSuccess,
            &labels,
            unix(source.last_success),
        );
        if let Some(outcome) = &source.last_outcome {
            let succeeded = f64::from(u8::from(outcome == "succeeded"));
            gauge(MetricName::SourceLastBackupSucceeded, &labels, succeeded);
        }
        gauge(
            MetricName::SourceFailureStreak,
            &labels,
            source.failure_streak as f64,
        );
        gauge(
            MetricName::LastVerified,
            &labels,
            unix(source.last_verified),
        );
        if let Some(ms) = source.last_success_ms {
            gauge(
                MetricName::SourceLastBackupDuration,
                &labels,
                ms as f64 / 1000.0,
            );
        }
        let drill_every = source.drill_every_seconds.unwrap_or(0);
        gauge(MetricName::SourceDrillInterval, &labels, drill_every as f64);
        if let Some(passed) = source.last_drill_passed {
            gauge(
                MetricName::DrillLastSuccess,
                &labels,
                f64::from(u8::from(passed)),
            );
            gauge(
                MetricName::DrillLastTimestamp,
                &labels,
                unix(source.last_drill_at),
            );
            let seconds = source.last_drill_ms.unwrap_or(0) as f64 / 1000.0;
            gauge(MetricName::DrillDuration, &labels, seconds);
        }
    }
    Ok(())
}

/// Archived WAL of physical postgres sources: the RPO, the lag, the gaps.
async fn export_wal(deps: &Deps) -> Result<(), StageError> {
    for wal in deps.catalog.wal_stats().await? {
        let labels = [("tenant", wal.tenant), ("source", wal.source)];
        gauge(
            MetricName::WalLastArchived,
            &labels,
            unix(Some(wal.last_closed_at)),
        );
        gauge(
            MetricName::WalArchiveLag,
            &labels,
            wal.last_lag_seconds.max(0.0),
        );
        gauge(MetricName::WalGaps, &labels, wal.gaps as f64);
        gauge(MetricName::WalStoredBytes, &labels, wal.stored_bytes as f64);
    }
    Ok(())
}

async fn export_tenants(deps: &Deps) -> Result<(), StageError> {
    for repository in deps.catalog.repository_stats().await? {
        let labels = [("tenant", repository.tenant)];
        gauge(
            MetricName::RepositoryBytes,
            &labels,
            repository.stored_bytes as f64,
        );
        gauge(
            MetricName::RepositoryDedupRatio,
            &labels,
            repository.dedup_ratio.unwrap_or(0.0),
        );
    }
    let now = OffsetDateTime::now_utc();
    for tenant in deps.catalog.in_flight().await? {
        let labels = [("tenant", tenant.tenant)];
        gauge(
            MetricName::SnapshotsInFlight,
            &labels,
            tenant.snapshots as f64,
        );
        let age = tenant
            .oldest_started_at
            .map_or(0.0, |at| (now - at).as_seconds_f64().max(0.0));
        gauge(MetricName::OldestInFlightAge, &labels, age);
    }
    Ok(())
}

/// Fails every snapshot in flight past its deadline. The failure goes out
/// as `snapshot.failed` first (its id is fixed per snapshot, so replicas
/// and retries publish it once), then the catalog row is failed here, so
/// the schedule and GC move on even while the auditor's consumer is behind.
async fn reap(deps: &Deps) -> Result<(), StageError> {
    let default = deps.config.observer.snapshot_deadline.as_secs() as i64;
    for stuck in deps.catalog.stuck_snapshots(default).await? {
        let error = deadline_error(&stuck);
        let id = format!("reaped-{}-{}", stuck.tenant, stuck.snapshot);
        let failed = SnapshotFailed {
            tenant: stuck.tenant.clone(),
            source: Some(stuck.source.clone()),
            snapshot: stuck.snapshot.clone(),
            stage: StageName::Auditor,
            error_type: "deadline".into(),
            error: error.clone(),
        };
        // A duplicate: a replica or an earlier round published it already.
        let _ = publish(
            deps,
            StageName::Auditor,
            Outgoing::event(&failed),
            &id,
            &traceparent_for(&id),
        )
        .await?;
        let error = format!("auditor failed: {error}");
        if deps
            .catalog
            .finish_snapshot(
                &stuck.tenant,
                &stuck.snapshot,
                SnapshotStatus::Failed,
                Some(&error),
            )
            .await?
        {
            tracing::error!(tenant = %stuck.tenant, source = %stuck.source, snapshot = %stuck.snapshot, status = %stuck.status, %error, "Reaped a snapshot stuck in flight.");
            count(
                MetricName::SnapshotsReaped,
                &[("tenant", stuck.tenant.to_string())],
                1,
            );
        }
    }
    Ok(())
}

fn deadline_error(stuck: &StuckSnapshot) -> String {
    format!(
        "still {} after {}, past its deadline of {}: reaped so its source's schedule and its tenant's GC go on",
        stuck.status,
        humantime::format_duration(std::time::Duration::from_secs(
            stuck.age_seconds.max(0) as u64
        )),
        humantime::format_duration(std::time::Duration::from_secs(
            stuck.deadline_seconds.max(0) as u64
        )),
    )
}
