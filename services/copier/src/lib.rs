//! copier — consumes *snapshot stored* and runs periodically; puts every
//! object of the snapshot that a copy lacks (key records, packs, then the
//! manifest) into each `[[repository.copies]]` target, reads each back
//! against its digest (level 1 on that target) and records the copy pending,
//! stored or verified; emits *snapshot copied*.
//!
//! A copy that is slow or down never holds up the primary: the copier runs
//! beside the pipeline, after the snapshot is stored, and its failures stay
//! with the copy (pending, with the error) instead of failing the snapshot.
//! The periodic pass retries what is pending and sets the lag metrics.

mod copy;

use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use vaultline_runtime::metrics::{MetricName, gauge};
use vaultline_runtime::runner::{publish, traceparent_for};
use vaultline_runtime::{Cx, Deps, ErrorType, Node, Outcome, Outgoing, Stage, StageError};
use vaultline_storage::Repository;
use vaultline_types::{SnapshotCopied, SnapshotStored, StageName};

pub use copy::{copy_snapshot, digest_from_hex, scratch_dir, transfer};

/// One copy of the repository, opened.
pub struct Target {
    pub name: String,
    pub repository: Repository,
}

/// Opens every configured copy with its own credentials.
///
/// # Errors
/// When a copy's URL or S3 settings cannot be used.
pub async fn open_targets(deps: &Deps) -> Result<Vec<Target>, StageError> {
    let mut targets = Vec::new();
    for copy in &deps.config.repository.copies {
        let repository = vaultline_runtime::deps::open_repository(&copy.repository(), None)
            .await
            .map_err(|e| {
                StageError::permanent(ErrorType::Config, format!("copy {:?}: {e}", copy.name))
            })?;
        // A copy that cannot lock is a configuration to fix: refuse to start.
        // One that does not answer now must not stop the stage (nor, in
        // `vaultline serve`, the primary's pipeline): its puts carry the lock
        // anyway, and a server that cannot lock refuses them.
        match repository.check_lock().await {
            Ok(()) => {}
            Err(e @ vaultline_storage::Error::Config(_)) => {
                return Err(StageError::permanent(
                    ErrorType::Config,
                    format!("copy {:?}: {e}", copy.name),
                ));
            }
            Err(e) => {
                tracing::warn!(target = %copy.name, error = %e, "Cannot ask the copy whether it locks; going on.");
            }
        }
        targets.push(Target {
            name: copy.name.clone(),
            repository,
        });
    }
    Ok(targets)
}

/// How long a handler waits for another copy of the same tenant to the same
/// target (its snapshots share packs, so they go one after the other).
const HANDLER_WAIT: Duration = Duration::from_secs(120);

/// The copier stage.
pub struct Copier {
    deps: Arc<Deps>,
    targets: Arc<Vec<Target>>,
}

impl Stage for Copier {
    const NAME: StageName = StageName::Copier;
    type Input = SnapshotStored;

    async fn new(deps: Arc<Deps>) -> Result<Self, StageError> {
        let targets = Arc::new(open_targets(&deps).await?);
        Ok(Copier { deps, targets })
    }

    /// Copies the snapshot to every target now. What fails stays pending
    /// for the periodic pass; only a catalog that cannot be read is an
    /// error here (retried through the bus, never failing the snapshot).
    async fn handle(&self, _cx: &Cx, stored: SnapshotStored) -> Outcome {
        if self.targets.is_empty() {
            return Ok(Vec::new());
        }
        let Some(due) = self
            .deps
            .catalog
            .copy_due(&stored.tenant, &stored.snapshot)
            .await?
        else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for target in self.targets.iter() {
            let outcome = copy::copy_to(&self.deps, target, &due, HANDLER_WAIT).await?;
            if let copy::Outcome::Copied(copied) = outcome {
                out.push(Outgoing::event(&copied));
            }
        }
        Ok(out)
    }
}

/// One pass over every target: the lag metrics, then the oldest snapshots
/// each lacks. A target whose storage fails is left for the next pass (it
/// is likely down: the snapshots after the failed one would fail alike).
///
/// # Errors
/// When the catalog fails.
pub async fn pass(deps: &Deps, targets: &[Target]) -> Result<(), StageError> {
    for target in targets {
        set_lag(deps, &target.name).await?;
        let due = deps
            .catalog
            .copies_due(&target.name, i64::from(deps.config.copier.batch.max(1)))
            .await?;
        for snapshot in due {
            match copy::copy_to(deps, target, &snapshot, Duration::ZERO).await? {
                copy::Outcome::Copied(copied) => say_copied(deps, &copied).await?,
                copy::Outcome::Busy | copy::Outcome::Failed { target_down: false } => {}
                copy::Outcome::Failed { target_down: true } => break,
            }
        }
        set_lag(deps, &target.name).await?;
    }
    Ok(())
}

async fn set_lag(deps: &Deps, target: &str) -> Result<(), StageError> {
    let lag = deps.catalog.copy_lag(target).await?;
    let labels = [("target", target.to_owned())];
    gauge(MetricName::CopyLagSnapshots, &labels, lag.snapshots as f64);
    gauge(MetricName::CopyLagSeconds, &labels, lag.seconds);
    Ok(())
}

/// Publishes *snapshot copied* for a copy the pass completed. Replicas that
/// both complete it publish one id, so the stream keeps one.
async fn say_copied(deps: &Deps, copied: &SnapshotCopied) -> Result<(), StageError> {
    let id = format!(
        "copied-{}-{}-{}",
        copied.target, copied.tenant, copied.snapshot
    );
    let _said_before = publish(
        deps,
        StageName::Copier,
        Outgoing::event(copied),
        &id,
        &traceparent_for(&id),
    )
    .await?;
    Ok(())
}

/// Adds the copier to a node: the stage, and the periodic pass. With no
/// copy configured both have nothing to do.
///
/// # Errors
/// When a copy cannot be opened.
pub async fn install(node: &mut Node) -> Result<(), StageError> {
    let deps = node
        .deps_for(StageName::Copier)
        .await
        .map_err(|e| StageError::permanent(ErrorType::Config, e.to_string()))?;
    // The copies are opened (and asked whether they lock) once, for the
    // stage and its pass alike.
    let targets = Arc::new(open_targets(&deps).await?);
    node.spawn_stage(Copier {
        deps,
        targets: targets.clone(),
    })
    .await?;
    node.spawn_service(StageName::Copier, move |deps, stop| {
        periodic(deps, targets, stop)
    })
    .await?;
    Ok(())
}

async fn periodic(deps: Arc<Deps>, targets: Arc<Vec<Target>>, mut stop: watch::Receiver<bool>) {
    if targets.is_empty() {
        return;
    }
    let every = deps.config.copier.interval.max(Duration::from_millis(100));
    loop {
        if let Err(error) = pass(&deps, &targets).await {
            tracing::warn!(stage = "copier", %error, "Copy pass failed; retrying next time.");
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.wait_for(|stop| *stop) => break,
        }
    }
}
