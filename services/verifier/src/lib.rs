//! verifier — consumes *snapshot stored*; level 1: every stored object the
//! snapshot needs (its packs and its manifest) is read back and its SHA-256
//! compared with the recorded digest, without the private key; emits
//! *snapshot verified* or *snapshot corrupt*.

use futures::StreamExt;
use std::sync::Arc;
use vaultline_catalog::SnapshotStatus;
use vaultline_runtime::metrics::{MetricName, gauge};
use vaultline_runtime::{Cx, Deps, Outcome, Outgoing, Stage, StageError};
use vaultline_storage::ObjectKey;
use vaultline_types::{PackId, SnapshotCorrupt, SnapshotStored, SnapshotVerified, StageName};

/// Packs read back at once.
const PARALLEL_READS: usize = 4;

/// The verifier stage.
pub struct Verifier {
    deps: Arc<Deps>,
}

/// What level 1 found wrong with one object.
async fn check_pack(
    deps: &Deps,
    tenant: &vaultline_types::Name,
    pack: PackId,
    size: u64,
) -> Result<Option<String>, StageError> {
    let key = ObjectKey::pack(tenant, &pack);
    let (digest, stored_size) = match deps.repository.digest(&key).await {
        Ok(found) => found,
        Err(vaultline_storage::Error::NotFound { .. }) => {
            return Ok(Some(format!("pack {pack} is missing")));
        }
        Err(e) => return Err(e.into()),
    };
    Ok(if stored_size != size {
        Some(format!(
            "pack {pack} has {stored_size} bytes, {size} recorded"
        ))
    } else if digest != pack.0 {
        Some(format!("pack {pack} does not match its recorded digest"))
    } else {
        None
    })
}

impl Stage for Verifier {
    const NAME: StageName = StageName::Verifier;
    type Input = SnapshotStored;

    async fn new(deps: Arc<Deps>) -> Result<Self, StageError> {
        Ok(Verifier { deps })
    }

    async fn handle(&self, _cx: &Cx, stored: SnapshotStored) -> Outcome {
        let catalog = &self.deps.catalog;
        let row = catalog.snapshot(&stored.tenant, &stored.snapshot).await?;
        if row.status != SnapshotStatus::Stored {
            return Ok(vec![]); // Already judged (redelivery).
        }
        let packs = catalog
            .snapshot_packs(&stored.tenant, &stored.snapshot)
            .await?;
        let mut problems: Vec<String> = futures::stream::iter(packs.iter().copied())
            .map(|(pack, size)| check_pack(&self.deps, &stored.tenant, pack, size))
            .buffer_unordered(PARALLEL_READS)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .flatten()
            .collect();
        let manifest_key = ObjectKey::manifest(&stored.tenant, &stored.snapshot);
        match self.deps.repository.digest(&manifest_key).await {
            Ok((digest, _)) => {
                if Some(hex::encode(digest)) != row.manifest_digest {
                    problems.push("manifest does not match its recorded digest".into());
                }
            }
            Err(vaultline_storage::Error::NotFound { .. }) => {
                problems.push("manifest is missing".into())
            }
            Err(e) => return Err(e.into()),
        }
        let objects = packs.len() as u32 + 1;
        if problems.is_empty() {
            catalog
                .finish_snapshot(
                    &stored.tenant,
                    &stored.snapshot,
                    SnapshotStatus::Verified,
                    None,
                )
                .await?;
            gauge(
                MetricName::LastVerified,
                &[("tenant", stored.tenant.to_string())],
                time::OffsetDateTime::now_utc().unix_timestamp() as f64,
            );
            tracing::info!(objects, "Snapshot verified (level 1).");
            Ok(vec![Outgoing::event(&SnapshotVerified {
                tenant: stored.tenant,
                source: stored.source,
                snapshot: stored.snapshot,
                level: 1,
                objects,
            })])
        } else {
            problems.sort();
            let reason = format!(
                "{} of {objects} objects damaged: {}",
                problems.len(),
                problems.join("; ")
            );
            catalog
                .finish_snapshot(
                    &stored.tenant,
                    &stored.snapshot,
                    SnapshotStatus::Corrupt,
                    Some(&reason),
                )
                .await?;
            tracing::error!(%reason, "Snapshot corrupt.");
            Ok(vec![Outgoing::event(&SnapshotCorrupt {
                tenant: stored.tenant,
                source: stored.source,
                snapshot: stored.snapshot,
                level: 1,
                reason,
            })])
        }
    }
}
