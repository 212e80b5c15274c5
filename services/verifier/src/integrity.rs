//! The rolling integrity check: every stored pack is read back and
//! re-hashed at least once per `rehash-after`, whether or not any snapshot
//! using it is new, spread evenly over the window under a byte budget
//! (`[integrity]`). A pack found missing or damaged marks every snapshot
//! that needs it corrupt, and says so on the bus.

use crate::{DEFAULT_REHASH_AFTER, check_pack};
use futures::StreamExt;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;
use tokio::sync::watch;
use vaultline_catalog::{DuePack, SnapshotStatus};
use vaultline_runtime::metrics::{MetricName, count, gauge};
use vaultline_runtime::{Deps, Outgoing, StageError};
use vaultline_types::{Name, PackId, SnapshotCorrupt, StageName};

/// Packs read back at once by a round.
const PARALLEL: usize = 4;
/// Rounds read a little faster than the window strictly needs, so that a
/// pack is back well inside it.
const AHEAD: f64 = 1.25;

/// The service: a round every `integrity.check-interval`.
pub(crate) async fn rolling(deps: Arc<Deps>, mut stop: watch::Receiver<bool>) {
    let every = deps.config.integrity.check_interval;
    if every.is_zero() {
        return;
    }
    let window = deps
        .config
        .stage(StageName::Verifier)
        .rehash_after
        .unwrap_or(DEFAULT_REHASH_AFTER);
    // A cycle is complete once every live pack was read back since it began.
    let mut cycle_began = OffsetDateTime::now_utc();
    // Damaged packs found by this process: not read again every round
    // (they stay oldest), which would starve the others.
    let mut damaged_seen = HashSet::new();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.wait_for(|stop| *stop) => break,
        }
        let progress = Progress {
            cycle_began: &mut cycle_began,
            damaged: &mut damaged_seen,
        };
        if let Err(error) = round(&deps, window, every, progress).await {
            tracing::warn!(stage = "verifier", %error, "Integrity round failed; retrying later.");
        }
    }
}

/// What rounds carry over.
struct Progress<'a> {
    cycle_began: &'a mut OffsetDateTime,
    damaged: &'a mut HashSet<(Name, PackId)>,
}

/// One round: the packs read back longest ago, up to this round's share
/// of the budget.
async fn round(
    deps: &Deps,
    window: Duration,
    every: Duration,
    progress: Progress<'_>,
) -> Result<(), StageError> {
    let catalog = &deps.catalog;
    // One replica at a time; the others skip the round.
    let Some(lock) = catalog.try_session_lock("integrity:rolling".into()).await? else {
        return Ok(());
    };
    let state = catalog.integrity_state(window).await?;
    let share = every.as_secs_f64();
    let needed = state.bytes as f64 * share / window.as_secs_f64().max(1.0) * AHEAD;
    let allowed = deps.config.integrity.bytes_per_hour as f64 * share / 3600.0;
    let budget = needed.min(allowed).ceil() as u64;
    let mut picked = Vec::new();
    let mut bytes = 0u64;
    for pack in catalog.packs_due(10_000).await? {
        if progress.damaged.contains(&(pack.tenant.clone(), pack.id)) {
            continue;
        }
        // At least one pack a round, whatever its size.
        if !picked.is_empty() && bytes + pack.size > budget {
            break;
        }
        bytes += pack.size;
        picked.push(pack);
    }
    let checked: Vec<(DuePack, Option<String>)> = futures::stream::iter(picked)
        .map(|pack| async move {
            let problem =
                check_pack(&deps.repository, &pack.tenant, pack.id, pack.size, true).await?;
            Ok::<_, StageError>((pack, problem))
        })
        .buffer_unordered(PARALLEL)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    for (pack, problem) in checked {
        count(MetricName::IntegrityRehashedBytes, &[], pack.size);
        match problem {
            None => catalog.mark_packs_hashed(&pack.tenant, &[pack.id]).await?,
            Some(problem) => {
                damaged(deps, &pack.tenant, pack.id, &problem).await?;
                progress.damaged.insert((pack.tenant, pack.id));
            }
        }
    }
    let after = catalog.integrity_state(window).await?;
    gauge(MetricName::IntegrityPacksOverdue, &[], after.overdue as f64);
    // A damaged pack is never found matching, so no cycle completes while
    // one is live: the metric goes stale, which is the alarm.
    if after.never == 0
        && after
            .oldest
            .is_none_or(|oldest| oldest >= *progress.cycle_began)
    {
        let now = OffsetDateTime::now_utc();
        gauge(
            MetricName::IntegrityLastCycle,
            &[],
            now.unix_timestamp() as f64,
        );
        *progress.cycle_began = now;
    }
    lock.release().await?;
    Ok(())
}

/// Marks every snapshot that needs `pack` corrupt and publishes it. The
/// pack is left as it is: evidence, and GC frees it once retention
/// forgets those snapshots.
async fn damaged(
    deps: &Deps,
    tenant: &Name,
    pack: PackId,
    problem: &str,
) -> Result<(), StageError> {
    count(MetricName::IntegrityDamagedPacks, &[], 1);
    let needing = deps.catalog.snapshots_needing(tenant, &pack).await?;
    tracing::error!(%tenant, %pack, %problem, snapshots = needing.len(), "Integrity check: a stored pack is damaged.");
    for (snapshot, source) in needing {
        let event = SnapshotCorrupt {
            tenant: tenant.clone(),
            source,
            snapshot,
            level: 1,
            reason: format!("rolling check: {problem}"),
        };
        mark_corrupt(deps, event, &pack.to_hex()).await?;
    }
    Ok(())
}

/// Marks the snapshot corrupt, and when that changed it, publishes the
/// event. `cause` makes the message id: one event per snapshot and cause,
/// the stream dropping a repeat.
pub(crate) async fn mark_corrupt(
    deps: &Deps,
    event: SnapshotCorrupt,
    cause: &str,
) -> Result<(), StageError> {
    let marked = deps
        .catalog
        .finish_snapshot(
            &event.tenant,
            &event.snapshot,
            SnapshotStatus::Corrupt,
            Some(&event.reason),
        )
        .await?;
    if !marked {
        return Ok(());
    }
    let id = format!("integrity-{}-{cause}", event.snapshot);
    let _published = vaultline_runtime::runner::publish(
        deps,
        StageName::Verifier,
        Outgoing::event(&event),
        &id,
        &vaultline_runtime::runner::traceparent_for(&id),
    )
    .await?;
    Ok(())
}
