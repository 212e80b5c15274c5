//! verifier — consumes *snapshot stored*; level 1: every stored object the
//! snapshot needs (its packs and its manifest) is read back and its SHA-256
//! compared with the recorded digest, without the private key; level 2 for
//! sources that ask for it (`source add --verify full`): the snapshot is
//! decrypted, decompressed and reassembled, and its source digest compared;
//! emits *snapshot verified* or *snapshot corrupt*. Also runs restore drills
//! (`drill`).

pub mod drill;

use futures::StreamExt;
use std::sync::Arc;
use tokio::sync::watch;
use vaultline_catalog::SnapshotStatus;
use vaultline_runtime::metrics::{MetricName, gauge};
use vaultline_runtime::{Cx, Deps, Inbound, Node, Outcome, Outgoing, Stage, StageError};
use vaultline_storage::ObjectKey;
use vaultline_types::{
    DecodeError, DrillRequested, Message, Name, PackId, SnapshotCorrupt, SnapshotId,
    SnapshotStored, SnapshotVerified, StageName,
};

/// The verifier's two inputs, told apart by subject.
pub enum VerifierInput {
    Stored(SnapshotStored),
    Drill(DrillRequested),
}

impl Inbound for VerifierInput {
    fn decode(
        subject: &str,
        headers: Option<&vaultline_runtime::HeaderMap>,
        payload: &[u8],
    ) -> Result<Self, DecodeError> {
        let drill_prefix = format!(
            "{}.{}.",
            vaultline_types::SUBJECT_PREFIX,
            DrillRequested::KIND
        );
        if subject.starts_with(&drill_prefix) {
            DrillRequested::decode(subject, headers, payload).map(VerifierInput::Drill)
        } else {
            SnapshotStored::decode(subject, headers, payload).map(VerifierInput::Stored)
        }
    }
    fn ids(&self) -> (Option<&Name>, Option<&Name>, Option<&SnapshotId>) {
        match self {
            VerifierInput::Stored(s) => s.ids(),
            VerifierInput::Drill(d) => d.ids(),
        }
    }
}

/// Packs read back at once.
const PARALLEL_READS: usize = 4;

/// The verifier stage.
pub struct Verifier {
    deps: Arc<Deps>,
    kek: Option<vaultline_format::keys::Kek>,
}

/// What level 1 found wrong with one object.
async fn check_pack(
    repository: &vaultline_storage::Repository,
    tenant: &vaultline_types::Name,
    pack: PackId,
    size: u64,
) -> Result<Option<String>, StageError> {
    let key = ObjectKey::pack(tenant, &pack);
    let (digest, stored_size) = match repository.digest(&key).await {
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

/// What a check of one snapshot found.
pub struct Finding {
    /// Objects (packs and the manifest) read back at level 1.
    pub objects: u32,
    /// What is wrong; empty when the snapshot is sound.
    pub problems: Vec<String>,
}

/// Level 1: every pack and the manifest re-hashed against the catalog's
/// record, with no key at all.
///
/// # Errors
/// When the catalog or storage cannot be read (not when an object is damaged
/// or missing: that is a problem in the finding).
pub async fn level1(
    catalog: &vaultline_catalog::Catalog,
    repository: &vaultline_storage::Repository,
    tenant: &vaultline_types::Name,
    snapshot: &vaultline_types::SnapshotId,
    manifest_digest: Option<&str>,
) -> Result<Finding, StageError> {
    let packs = catalog.snapshot_packs(tenant, snapshot).await?;
    let mut problems: Vec<String> = futures::stream::iter(packs.iter().copied())
        .map(|(pack, size)| check_pack(repository, tenant, pack, size))
        .buffer_unordered(PARALLEL_READS)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .flatten()
        .collect();
    let manifest_key = ObjectKey::manifest(tenant, snapshot);
    match repository.digest(&manifest_key).await {
        Ok((digest, _)) => {
            if Some(hex::encode(digest).as_str()) != manifest_digest {
                problems.push("manifest does not match its recorded digest".into());
            }
        }
        Err(vaultline_storage::Error::NotFound { .. }) => {
            problems.push("manifest is missing".into())
        }
        Err(e) => return Err(e.into()),
    }
    problems.sort();
    Ok(Finding {
        objects: packs.len() as u32 + 1,
        problems,
    })
}

/// Level 2: the snapshot read back in full (every chunk fetched, decrypted
/// and decompressed, files reassembled) and its source digest compared.
/// Nothing is written anywhere.
///
/// # Errors
/// A storage error that may pass (the S3 server down): a retry may succeed,
/// so that is not called corruption. Anything else found wrong is
/// `Ok(Err(reason))`.
pub async fn level2(
    repository: &vaultline_storage::Repository,
    tenant: &vaultline_types::Name,
    snapshot: &vaultline_types::SnapshotId,
    identity: &vaultline_format::keys::Identity,
) -> Result<Result<vaultline_restore::Restored, String>, StageError> {
    match vaultline_restore::restore(
        repository,
        tenant,
        snapshot,
        identity,
        None,
        vaultline_restore::Sink::Discard,
    )
    .await
    {
        Ok(done) => Ok(Ok(done)),
        Err(e) => {
            let transient = e.chain().any(|cause| {
                cause
                    .downcast_ref::<vaultline_storage::Error>()
                    .is_some_and(vaultline_storage::Error::is_transient)
            });
            if transient {
                Err(StageError::transient("storage", format!("{e:#}")))
            } else {
                Ok(Err(format!("level 2: {e:#}")))
            }
        }
    }
}

impl Stage for Verifier {
    const NAME: StageName = StageName::Verifier;
    type Input = VerifierInput;

    async fn new(deps: Arc<Deps>) -> Result<Self, StageError> {
        // Only needed for level 2; a verifier without it does level 1 and
        // says so when a source asks for more.
        let kek = vaultline_runtime::deps::load_kek(&deps.config).ok();
        Ok(Verifier { deps, kek })
    }

    async fn handle(&self, _cx: &Cx, input: VerifierInput) -> Outcome {
        match input {
            VerifierInput::Stored(stored) => self.verify(stored).await,
            VerifierInput::Drill(request) => {
                let result = drill::run(&self.deps, self.kek.as_ref(), &request).await?;
                Ok(vec![Outgoing::event(&result)])
            }
        }
    }
}

impl Verifier {
    async fn verify(&self, stored: SnapshotStored) -> Outcome {
        let catalog = &self.deps.catalog;
        let row = catalog.snapshot(&stored.tenant, &stored.snapshot).await?;
        if row.status != SnapshotStatus::Stored {
            return Ok(vec![]); // Already judged (redelivery).
        }
        let finding = level1(
            catalog,
            &self.deps.repository,
            &stored.tenant,
            &stored.snapshot,
            row.manifest_digest.as_deref(),
        )
        .await?;
        let objects = finding.objects;
        let mut reason = (!finding.problems.is_empty()).then(|| {
            format!(
                "{} of {objects} objects damaged: {}",
                finding.problems.len(),
                finding.problems.join("; ")
            )
        });
        let mut level = 1;
        let source = catalog.source(&stored.tenant, &stored.source).await?;
        if reason.is_none() && source.verify_level >= 2 {
            level = 2;
            let kek = self.kek.as_ref().ok_or_else(|| {
                StageError::permanent(
                    "config",
                    "source asks for level-2 verification but this verifier has no key-encryption key (keys.kek-file)",
                )
            })?;
            let key = catalog.key(&stored.tenant, &row.key_id).await?;
            let identity = kek
                .unwrap(&key.wrapped_identity)
                .map_err(|e| StageError::permanent("key", e.to_string()))?;
            reason = level2(
                &self.deps.repository,
                &stored.tenant,
                &stored.snapshot,
                &identity,
            )
            .await?
            .err();
        }
        let Some(reason) = reason else {
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
                &[
                    ("tenant", stored.tenant.to_string()),
                    ("source", stored.source.to_string()),
                ],
                time::OffsetDateTime::now_utc().unix_timestamp() as f64,
            );
            tracing::info!(objects, level, "Snapshot verified.");
            return Ok(vec![Outgoing::event(&SnapshotVerified {
                tenant: stored.tenant,
                source: stored.source,
                snapshot: stored.snapshot,
                level,
                objects,
            })]);
        };
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
            level,
            reason,
        })])
    }
}

/// Adds the verifier to a node: the stage, and a service that requests the
/// drills sources are due for (`vaultline drill <source> --every 1d`).
///
/// # Errors
/// When the stage cannot be built.
pub async fn install(node: &mut Node) -> Result<(), StageError> {
    node.spawn::<Verifier>().await?;
    node.spawn_service(drills_due);
    Ok(())
}

async fn drills_due(deps: Arc<Deps>, mut stop: watch::Receiver<bool>) {
    let every = deps.config.drills.check_interval;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.wait_for(|stop| *stop) => break,
        }
        let due = match deps.catalog.drills_due().await {
            Ok(due) => due,
            Err(error) => {
                tracing::warn!(stage = "verifier", %error, "Cannot look for due drills; retrying later.");
                continue;
            }
        };
        for (tenant, source, slot) in due {
            // The same id on every replica: the stream keeps one request per slot.
            let id = format!("drill-{tenant}-{source}-{slot}");
            let request = DrillRequested {
                tenant,
                source,
                request_id: Some(id.clone()),
            };
            let published = vaultline_runtime::runner::publish(
                &deps,
                StageName::Verifier,
                Outgoing::event(&request),
                &id,
                &vaultline_runtime::runner::traceparent_for(&id),
            )
            .await;
            if let Err(error) = published {
                tracing::warn!(stage = "verifier", %error, "Cannot request a due drill; retrying later.");
            }
        }
    }
}
