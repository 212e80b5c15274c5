//! verifier — consumes *pack stored*: the pack is read back and re-hashed
//! at once; and *snapshot stored*: level 1, every object the snapshot needs
//! checked against the catalog without the private key (its manifest and
//! the packs not re-hashed within `rehash-after` read back and their SHA-256
//! compared, the other packs checked present with their size); level 2 for
//! sources that ask for it (`source add --verify full`): the snapshot is
//! decrypted, decompressed and reassembled, and its source digest compared;
//! emits *snapshot verified* or *snapshot corrupt*. Also runs restore drills
//! (`drill`) and verifications asked for by name (`requested`).

pub mod drill;
mod integrity;
mod requested;
mod sampling;

use futures::StreamExt;
use std::sync::Arc;
use tokio::sync::watch;
use vaultline_catalog::SnapshotStatus;
use vaultline_runtime::{Cx, Deps, ErrorType, Inbound, Node, Outcome, Outgoing, Stage, StageError};
use vaultline_storage::ObjectKey;
use vaultline_types::{
    DecodeError, DrillRequested, Message, Name, PackId, PackStored, SnapshotCorrupt, SnapshotId,
    SnapshotStored, SnapshotVerified, StageName, VerifyRequested,
};

/// The verifier's inputs, told apart by subject.
pub enum VerifierInput {
    /// Re-hashed as soon as it is stored, while the rest of the snapshot is
    /// still on its way, so that its snapshot's check only sizes it.
    Pack(PackStored),
    Stored(SnapshotStored),
    Drill(DrillRequested),
    /// One snapshot checked again now, by request (the HTTP API).
    Verify(VerifyRequested),
}

impl Inbound for VerifierInput {
    fn decode(
        subject: &str,
        headers: Option<&vaultline_runtime::HeaderMap>,
        payload: &[u8],
    ) -> Result<Self, DecodeError> {
        let prefix = |kind: &str| format!("{}.{kind}.", vaultline_types::SUBJECT_PREFIX);
        if subject.starts_with(&prefix(VerifyRequested::KIND)) {
            VerifyRequested::decode(subject, headers, payload).map(VerifierInput::Verify)
        } else if subject.starts_with(&prefix(DrillRequested::KIND)) {
            DrillRequested::decode(subject, headers, payload).map(VerifierInput::Drill)
        } else if subject.starts_with(&prefix(PackStored::KIND)) {
            PackStored::decode(subject, headers, payload).map(VerifierInput::Pack)
        } else {
            SnapshotStored::decode(subject, headers, payload).map(VerifierInput::Stored)
        }
    }
    fn ids(&self) -> (Option<&Name>, Option<&Name>, Option<&SnapshotId>) {
        match self {
            VerifierInput::Pack(p) => p.ids(),
            VerifierInput::Stored(s) => s.ids(),
            VerifierInput::Drill(d) => d.ids(),
            VerifierInput::Verify(v) => v.ids(),
        }
    }
}

/// Packs read back at once.
const PARALLEL_READS: usize = 4;

/// The verifier stage.
pub struct Verifier {
    deps: Arc<Deps>,
    kek: Option<vaultline_format::keys::Kek>,
    rehash_after: std::time::Duration,
}

/// A pack is read back in full at least this often (`rehash-after`): a
/// week bounds how long bit rot in an old pack goes unnoticed, while a
/// daily backup that adds little re-reads a seventh of the repository a day
/// instead of all of it.
pub const DEFAULT_REHASH_AFTER: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

/// What level 1 found wrong with one pack: re-hashed when `rehash`,
/// otherwise only its presence and size checked.
pub async fn check_pack(
    repository: &vaultline_storage::Repository,
    tenant: &vaultline_types::Name,
    id: PackId,
    size: u64,
    rehash: bool,
) -> Result<Option<String>, StageError> {
    let key = ObjectKey::pack(tenant, &id);
    let (digest, stored_size) = if rehash {
        match repository.digest(&key).await {
            Ok((digest, size)) => (Some(digest), size),
            Err(vaultline_storage::Error::NotFound { .. }) => {
                return Ok(Some(format!("pack {id} is missing")));
            }
            Err(e) => return Err(e.into()),
        }
    } else {
        match repository.size(&key).await? {
            Some(size) => (None, size),
            None => return Ok(Some(format!("pack {id} is missing"))),
        }
    };
    Ok(if stored_size != size {
        Some(format!(
            "pack {id} has {stored_size} bytes, {size} recorded"
        ))
    } else if digest.is_some_and(|digest| digest != id.0) {
        Some(format!("pack {id} does not match its recorded digest"))
    } else {
        None
    })
}

/// Which packs level 1 reads back in full.
#[derive(Debug, Clone, Copy)]
pub enum Rehash {
    /// Every pack (`vaultline verify`).
    All,
    /// Packs not found matching within this long (after each snapshot):
    /// the snapshot's new packs, and older ones on a rolling schedule. The
    /// others are checked present with their recorded size.
    NotWithin(std::time::Duration),
}

/// What a check of one snapshot found.
pub struct Finding {
    /// Objects (packs and the manifest) checked at level 1.
    pub objects: u32,
    /// Of those, the ones read back and re-hashed.
    pub rehashed: u32,
    /// What is wrong; empty when the snapshot is sound.
    pub problems: Vec<String>,
}

/// Level 1: every pack and the manifest checked against the catalog's
/// record, with no key at all: the manifest and the packs `rehash` picks are
/// read back and re-hashed, the other packs checked present with their size.
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
    rehash: Rehash,
) -> Result<Finding, StageError> {
    let within = match rehash {
        Rehash::All => std::time::Duration::ZERO,
        Rehash::NotWithin(within) => within,
    };
    let packs = catalog.packs_to_verify(tenant, snapshot, within).await?;
    let checked: Vec<(PackId, bool, Option<String>)> = futures::stream::iter(packs.iter().copied())
        .map(|pack| async move {
            let rehash = !pack.hashed_recently;
            let problem = check_pack(repository, tenant, pack.id, pack.size, rehash).await?;
            Ok::<_, StageError>((pack.id, rehash, problem))
        })
        .buffer_unordered(PARALLEL_READS)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    let hashed: Vec<PackId> = checked
        .iter()
        .filter(|(_, rehashed, problem)| *rehashed && problem.is_none())
        .map(|(id, ..)| *id)
        .collect();
    catalog.mark_packs_hashed(tenant, &hashed).await?;
    let rehashed = checked.iter().filter(|(_, rehashed, _)| *rehashed).count() as u32;
    let mut problems: Vec<String> = checked.into_iter().filter_map(|(.., p)| p).collect();
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
        rehashed: rehashed + 1,
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
/// `Ok(Err(why))`: the snapshot does not restore.
pub async fn level2(
    repository: &vaultline_storage::Repository,
    tenant: &vaultline_types::Name,
    snapshot: &vaultline_types::SnapshotId,
    keyring: &vaultline_format::keys::Keyring,
) -> Result<Result<vaultline_restore::Restored, vaultline_restore::Error>, StageError> {
    match vaultline_restore::restore(
        repository,
        tenant,
        snapshot,
        keyring,
        None,
        vaultline_restore::Sink::Discard,
    )
    .await
    {
        Ok(done) => Ok(Ok(done)),
        Err(e) if e.is_transient() => Err(StageError::transient(ErrorType::Storage, e.to_string())),
        Err(e) => Ok(Err(e)),
    }
}

impl Stage for Verifier {
    const NAME: StageName = StageName::Verifier;
    type Input = VerifierInput;

    async fn new(deps: Arc<Deps>) -> Result<Self, StageError> {
        // Only needed for level 2; a verifier without it does level 1 and
        // says so when a source asks for more.
        let kek = vaultline_runtime::deps::load_kek(&deps.config).ok();
        let rehash_after = deps
            .config
            .stage(Self::NAME)
            .rehash_after
            .unwrap_or(DEFAULT_REHASH_AFTER);
        Ok(Verifier {
            deps,
            kek,
            rehash_after,
        })
    }

    async fn handle(&self, _cx: &Cx, input: VerifierInput) -> Outcome {
        match input {
            VerifierInput::Pack(stored) => self.verify_pack(stored).await,
            VerifierInput::Stored(stored) => self.verify(stored).await,
            VerifierInput::Drill(request) => {
                self.check_reserved(&request).await?;
                let result = drill::run(&self.deps, self.kek.as_ref(), &request).await?;
                Ok(vec![Outgoing::event(&result)])
            }
            VerifierInput::Verify(request) => {
                requested::run(&self.deps, self.kek.as_ref(), request).await
            }
        }
    }
}

impl Verifier {
    /// `drill-` request ids are the drill timer's: one from anyone else
    /// must not pass for it (nor keep it from being recorded as its own).
    async fn check_reserved(&self, request: &DrillRequested) -> Result<(), StageError> {
        let Some(id) = request.request_id.as_deref() else {
            return Ok(());
        };
        if !id.starts_with(vaultline_types::DRILL_REQUEST_PREFIX) {
            return Ok(());
        }
        let (tenant, source) = (&request.tenant, &request.source);
        if self
            .deps
            .catalog
            .timer_drill_ids(tenant, source)
            .await?
            .iter()
            .any(|t| t == id)
        {
            return Ok(());
        }
        Err(StageError::rejected(
            ErrorType::Forged,
            format!("drill request id {id:?} is reserved to the verifier's drill timer"),
        ))
    }

    /// A pack just stored is read back and re-hashed; a match is recorded
    /// and the snapshot's own check then only sizes it. Nothing is judged
    /// here, and nothing fails: a pack not recorded as matching (damaged,
    /// or unreadable just now) is re-hashed by the snapshot's check, which
    /// marks the snapshot corrupt with all it finds.
    async fn verify_pack(&self, stored: PackStored) -> Outcome {
        let repository = &self.deps.repository;
        let checked =
            match check_pack(repository, &stored.tenant, stored.pack, stored.size, true).await {
                Ok(None) => self
                    .deps
                    .catalog
                    .mark_packs_hashed(&stored.tenant, &[stored.pack])
                    .await
                    .map_err(|e| e.to_string()),
                Ok(Some(problem)) => Err(problem),
                Err(e) => Err(e.to_string()),
            };
        if let Err(problem) = checked {
            tracing::warn!(
                pack = %stored.pack,
                %problem,
                "A pack just stored was not confirmed; its snapshot's check will re-hash it."
            );
        }
        Ok(vec![])
    }

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
            Rehash::NotWithin(self.rehash_after),
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
                    ErrorType::Config,
                    "source asks for level-2 verification but this verifier has no key-encryption key (keys.kek-file)",
                )
            })?;
            let keys = catalog.tenant_keys(&stored.tenant).await?;
            let keyring = kek
                .unwrap_keyring(keys.iter().map(|k| k.wrapped_identity.as_slice()))
                .map_err(|e| StageError::permanent(ErrorType::Key, e.to_string()))?;
            reason = level2(
                &self.deps.repository,
                &stored.tenant,
                &stored.snapshot,
                &keyring,
            )
            .await?
            .err()
            .map(|e| format!("level 2: {e}"));
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
            tracing::info!(
                objects,
                rehashed = finding.rehashed,
                level,
                "Snapshot verified."
            );
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

/// Adds the verifier to a node: the stage, a service that requests the
/// drills sources are due for (`vaultline drill <source> --every 1d`), the
/// rolling integrity check and the sampled level-2 check.
///
/// # Errors
/// When the stage cannot be built.
pub async fn install(node: &mut Node) -> Result<(), StageError> {
    node.spawn::<Verifier>().await?;
    node.spawn_service(StageName::Verifier, drills_due).await?;
    node.spawn_service(StageName::Verifier, integrity::rolling)
        .await?;
    node.spawn_service(StageName::Verifier, sampling::sampled_level2)
        .await?;
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
            let id = vaultline_catalog::timer_drill_id(&tenant, &source, slot);
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
