//! retention — consumes *snapshot verified* and runs periodically; evaluates
//! each source's policy and forgets the snapshots it no longer keeps (their
//! manifests are deleted), then garbage-collects packs no live snapshot
//! references, after a grace period; emits *snapshot expired* and *packs
//! deleted*.

pub mod gc;
pub mod wal;

use std::sync::Arc;
use time::OffsetDateTime;
use tokio::sync::watch;
use vaultline_catalog::{Catalog, SnapshotStatus, SourceRow};
pub use vaultline_policy::{Candidate, Decision, Policy, Verdict, evaluate};
use vaultline_runtime::runner::{publish, traceparent_for};
use vaultline_runtime::{Cx, Deps, ErrorType, Node, Outcome, Outgoing, Stage, StageError};
use vaultline_storage::ObjectKey;
use vaultline_types::{
    Name, PostgresMode, SnapshotExpired, SnapshotVerified, SourceConfig, StageName,
};

/// Reads a source's policy.
///
/// # Errors
/// Unknown source, or a policy that does not parse (the error says which).
pub async fn policy_of(
    catalog: &Catalog,
    tenant: &Name,
    source: &Name,
) -> Result<Policy, StageError> {
    policy_in(&catalog.source(tenant, source).await?)
}

fn policy_in(row: &SourceRow) -> Result<Policy, StageError> {
    serde_json::from_value(row.retention.clone()).map_err(|e| {
        StageError::permanent(
            ErrorType::Policy,
            format!("retention policy of {}/{}: {e}", row.tenant, row.name),
        )
    })
}

/// What the policy decides for every verified snapshot of a source, newest first.
///
/// # Errors
/// When the catalog fails or the policy is invalid.
pub async fn preview(
    catalog: &Catalog,
    tenant: &Name,
    source: &Name,
    now: OffsetDateTime,
    lock: Option<std::time::Duration>,
) -> Result<Vec<Decision>, StageError> {
    // Under an object lock a snapshot is kept at least as long as its objects
    // are locked, whatever the policy was set to before the lock.
    let policy = policy_of(catalog, tenant, source).await?.under_lock(lock);
    decide(catalog, tenant, source, &policy, now).await
}

/// What `policy` decides for every verified snapshot of a source.
async fn decide(
    catalog: &Catalog,
    tenant: &Name,
    source: &Name,
    policy: &Policy,
    now: OffsetDateTime,
) -> Result<Vec<Decision>, StageError> {
    let (protected, candidates): (Vec<_>, Vec<_>) = catalog
        .snapshots(Some(tenant), Some(source))
        .await?
        .into_iter()
        .filter(|s| s.status == SnapshotStatus::Verified)
        .partition(|s| s.protected);
    let candidates: Vec<Candidate> = candidates
        .into_iter()
        .map(|s| Candidate {
            id: s.id,
            time: s.started_at,
        })
        .collect();
    // The policy decides among the others as if the protected ones were not
    // there: protecting a snapshot never costs one the policy would keep.
    let mut decisions = evaluate(policy, &candidates, now);
    decisions.extend(protected.into_iter().map(|s| Decision {
        snapshot: s.id,
        time: s.started_at,
        verdict: Verdict::Keep,
        rule: "protected".into(),
    }));
    decisions.sort_by(|a, b| {
        b.time
            .cmp(&a.time)
            .then_with(|| b.snapshot.cmp(&a.snapshot))
    });
    Ok(decisions)
}

/// Forgets what the policy no longer keeps; returns the events to publish.
///
/// # Errors
/// When the catalog or repository fails (a later pass retries).
pub async fn apply(
    deps: &Deps,
    tenant: &Name,
    source: &Name,
    now: OffsetDateTime,
) -> Result<Vec<SnapshotExpired>, StageError> {
    let mut expired = Vec::new();
    let row = deps.catalog.source(tenant, source).await?;
    let policy = policy_in(&row)?.under_lock(deps.config.repository.longest_lock());
    for decision in decide(&deps.catalog, tenant, source, &policy, now).await? {
        if decision.verdict == Verdict::Keep {
            continue;
        }
        // Catalog first: once expired, nothing restores or verifies it, and its
        // packs become garbage; then the manifest goes.
        if deps
            .catalog
            .finish_snapshot(tenant, &decision.snapshot, SnapshotStatus::Expired, None)
            .await?
        {
            tracing::info!(%tenant, %source, expired = %decision.snapshot, rule = %decision.rule, "Snapshot forgotten.");
        }
        deps.repository
            .delete(&ObjectKey::manifest(tenant, &decision.snapshot))
            .await?;
        expired.push(SnapshotExpired {
            tenant: tenant.clone(),
            source: source.clone(),
            snapshot: decision.snapshot,
            rule: decision.rule,
        });
    }
    if row
        .config()
        .is_ok_and(|c| matches!(c, SourceConfig::Postgres(p) if p.mode == PostgresMode::Physical))
    {
        wal::expire(&deps.catalog, &deps.repository, tenant, source).await?;
    }
    Ok(expired)
}

/// The retention stage.
pub struct Retention {
    deps: Arc<Deps>,
}

impl Stage for Retention {
    const NAME: StageName = StageName::Retention;
    type Input = SnapshotVerified;

    async fn new(deps: Arc<Deps>) -> Result<Self, StageError> {
        Ok(Retention { deps })
    }

    async fn handle(&self, _cx: &Cx, verified: SnapshotVerified) -> Outcome {
        let expired = apply(
            &self.deps,
            &verified.tenant,
            &verified.source,
            OffsetDateTime::now_utc(),
        )
        .await?;
        Ok(expired.iter().map(Outgoing::event).collect())
    }
}

/// One periodic pass: every source's policy, then garbage collection of every
/// tenant. Events are published as they happen. A source whose policy cannot
/// be applied is logged and skipped.
///
/// # Errors
/// When publishing or garbage collection fails; the next pass starts over.
pub async fn pass(deps: &Deps, now: OffsetDateTime) -> Result<(), StageError> {
    for source in deps.catalog.sources(None).await? {
        // One source's broken policy must not stop the others or GC.
        let expired = match apply(deps, &source.tenant, &source.name, now).await {
            Ok(expired) => expired,
            Err(error) => {
                tracing::warn!(tenant = %source.tenant, source = %source.name, %error, "Retention skipped this source.");
                continue;
            }
        };
        for event in expired {
            // Every replica's pass reports the same expiry: a duplicate is
            // another replica having said it first, and the record is the
            // catalog's, not this event's.
            let id = format!("expired-{}-{}", event.tenant, event.snapshot);
            let _said_before = publish(
                deps,
                StageName::Retention,
                Outgoing::event(&event),
                &id,
                &traceparent_for(&id),
            )
            .await?;
        }
    }
    let grace = deps.config.retention.gc_grace;
    for report in gc::collect_all(&deps.catalog, &deps.repository, grace).await? {
        if report.deleted > 0 || report.condemned > 0 || report.revived > 0 {
            let id = format!("gc-{}-{}", report.tenant, now.unix_timestamp_nanos());
            let _said_before = publish(
                deps,
                StageName::Retention,
                Outgoing::event(&report),
                &id,
                &traceparent_for(&id),
            )
            .await?;
        }
    }
    Ok(())
}

/// Adds retention to a node: the stage, and the periodic pass.
///
/// # Errors
/// When the stage cannot be built.
pub async fn install(node: &mut Node) -> Result<(), StageError> {
    node.spawn::<Retention>().await?;
    node.spawn_service(StageName::Retention, periodic).await?;
    Ok(())
}

async fn periodic(deps: Arc<Deps>, mut stop: watch::Receiver<bool>) {
    let every = deps.config.retention.interval;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.wait_for(|stop| *stop) => break,
        }
        if let Err(error) = pass(&deps, OffsetDateTime::now_utc()).await {
            tracing::warn!(stage = "retention", %error, "Periodic retention pass failed; retrying next time.");
        }
    }
}
