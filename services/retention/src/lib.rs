//! retention — consumes *snapshot verified*; evaluates the source's policy and
//! forgets snapshots it no longer keeps (their manifests are deleted; packs
//! are left for garbage collection); emits *snapshot expired*.

use serde::Deserialize;
use std::sync::Arc;
use vaultline_catalog::SnapshotStatus;
use vaultline_runtime::{Cx, Deps, Outcome, Outgoing, Stage, StageError};
use vaultline_storage::ObjectKey;
use vaultline_types::{SnapshotExpired, SnapshotVerified, StageName};

/// A source's retention policy (the `retention` JSON of the source).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Keep the newest N verified snapshots. Absent: keep everything.
    pub keep_last: Option<u32>,
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
        let catalog = &self.deps.catalog;
        let source = catalog.source(&verified.tenant, &verified.source).await?;
        let policy: Policy = serde_json::from_value(source.retention).map_err(|e| {
            StageError::permanent(
                "policy",
                format!(
                    "retention policy of {}/{}: {e}",
                    verified.tenant, verified.source
                ),
            )
        })?;
        let Some(keep_last) = policy.keep_last else {
            return Ok(vec![]);
        };
        // The newest verified snapshot is never forgotten, whatever the policy says.
        let keep = keep_last.max(1) as usize;
        let snapshots = catalog
            .snapshots(Some(&verified.tenant), Some(&verified.source))
            .await?;
        let mut out = Vec::new();
        let rule = format!("keep_last={keep_last}");
        for row in snapshots
            .iter()
            .filter(|s| s.status == SnapshotStatus::Verified)
            .skip(keep)
        {
            self.deps
                .repository
                .delete(&ObjectKey::manifest(&row.tenant, &row.id))
                .await?;
            if catalog
                .finish_snapshot(&row.tenant, &row.id, SnapshotStatus::Expired, None)
                .await?
            {
                tracing::info!(expired = %row.id, %rule, "Snapshot forgotten.");
            }
            out.push(Outgoing::event(&SnapshotExpired {
                tenant: row.tenant.clone(),
                source: row.source.clone(),
                snapshot: row.id.clone(),
                rule: rule.clone(),
            }));
        }
        Ok(out)
    }
}
