//! uploader — consumes *packs staged* (and *snapshot extracted*); writes packs
//! to the repository idempotently, indexes their chunks, and once every batch
//! of a snapshot is stored writes its manifest; emits *packs stored* and
//! *snapshot stored*.

mod manifest;
mod staged_pack;

use std::sync::Arc;
use vaultline_catalog::{BatchKey, SnapshotStatus, StoredChunk};
use vaultline_format::pack::decode_index;
use vaultline_runtime::metrics::{MetricName, count};
use vaultline_runtime::{Cx, Deps, ErrorType, Inbound, Outcome, Outgoing, Stage, StageError};
use vaultline_storage::ObjectKey;
use vaultline_types::staging_key;
use vaultline_types::{
    DecodeError, Message, Name, ObjectConflict, PackStaged, PackStored, SnapshotExtracted,
    SnapshotId, SnapshotStored, StageName,
};

/// The uploader's two inputs, told apart by subject.
pub enum UploaderInput {
    Pack(PackStaged),
    Extracted(SnapshotExtracted),
}

impl Inbound for UploaderInput {
    fn decode(
        subject: &str,
        headers: Option<&vaultline_runtime::HeaderMap>,
        payload: &[u8],
    ) -> Result<Self, DecodeError> {
        let pack_prefix = format!("{}.{}.", vaultline_types::SUBJECT_PREFIX, PackStaged::KIND);
        if subject.starts_with(&pack_prefix) {
            PackStaged::decode(subject, headers, payload).map(UploaderInput::Pack)
        } else {
            SnapshotExtracted::decode(subject, headers, payload).map(UploaderInput::Extracted)
        }
    }
    fn ids(&self) -> (Option<&Name>, Option<&Name>, Option<&SnapshotId>) {
        match self {
            UploaderInput::Pack(p) => p.ids(),
            UploaderInput::Extracted(e) => e.ids(),
        }
    }
}

/// The uploader stage.
pub struct Uploader {
    deps: Arc<Deps>,
}

impl Stage for Uploader {
    const NAME: StageName = StageName::Uploader;
    type Input = UploaderInput;

    async fn new(deps: Arc<Deps>) -> Result<Self, StageError> {
        Ok(Uploader { deps })
    }

    async fn handle(&self, cx: &Cx, input: UploaderInput) -> Outcome {
        let mut out = Vec::new();
        let (tenant, source, snapshot) = match input {
            UploaderInput::Pack(pack) => {
                out.extend(self.store_pack(cx, &pack).await?);
                (pack.tenant, pack.source, pack.snapshot)
            }
            UploaderInput::Extracted(e) => (e.tenant, e.source, e.snapshot),
        };
        out.extend(self.finalize(cx, &tenant, &source, &snapshot).await?);
        Ok(out)
    }
}

fn batch_key(pack: &PackStaged) -> BatchKey<'_> {
    BatchKey {
        snapshot: &pack.snapshot,
        attempt: pack.attempt,
        batch: pack.batch,
    }
}

impl Uploader {
    /// Stores one pack, then indexes it: a chunk enters the index only once
    /// its pack is durably in the repository. Nothing in the message is
    /// taken on trust: the staging keys must be the batch's own, the staged
    /// bytes must hash to the pack id, and the index must fit the pack.
    async fn store_pack(&self, cx: &Cx, pack: &PackStaged) -> Result<Option<Outgoing>, StageError> {
        let staging = &self.deps.staging;
        let staged = pack.staged_batch();
        staging_key::check("staged", &pack.staged, &staged.pack(&pack.pack))
            .and_then(|()| staging_key::check("raw_staged", &pack.raw_staged, &staged.raw()))
            .map_err(|e| StageError::rejected(ErrorType::Forged, e))?;
        let key = ObjectKey::pack(&pack.tenant, &pack.pack);
        let Some(local) = staging.fetch(&pack.staged).await? else {
            // Redelivered after we stored and cleaned up, or left over from a
            // superseded extraction attempt: both done.
            let catalog = &self.deps.catalog;
            let superseded = catalog
                .snapshot(&pack.tenant, &pack.snapshot)
                .await?
                .attempt
                .is_some_and(|attempt| attempt as u32 != pack.attempt);
            if superseded || catalog.batch_stored(&pack.tenant, batch_key(pack)).await? {
                return Ok(None);
            }
            return Err(StageError::permanent(
                ErrorType::Staging,
                format!("staged pack {} is gone before it was stored", pack.staged),
            ));
        };
        let index_key = staged.pack_index(&pack.pack);
        let index_file = staging.fetch(&index_key).await?.ok_or_else(|| {
            StageError::transient(
                ErrorType::Staging,
                format!("pack index {index_key} is not staged (yet)"),
            )
        })?;
        let index = tokio::fs::read(index_file.path())
            .await
            .map_err(|e| StageError::transient(ErrorType::Staging, format!("{index_key}: {e}")))?;
        let entries = decode_index(&index).map_err(|e| {
            StageError::rejected(ErrorType::Staging, format!("pack index {index_key}: {e}"))
        })?;
        let (path, id, claimed) = (local.path().to_owned(), pack.pack, pack.size);
        let entries = tokio::task::spawn_blocking(move || {
            staged_pack::check(&path, &id, claimed, &entries).map(|()| entries)
        })
        .await?
        .map_err(|e| StageError::rejected(ErrorType::Forged, format!("staged pack {id}: {e}")))?;
        // Recorded a little after the put, so never earlier than the date
        // the server holds (set when the request was made).
        let size = match self.deps.repository.put_file(&key, local.path()).await {
            Ok(size) => size,
            Err(vaultline_storage::Error::Conflict { key, found }) => {
                return Err(self.conflict(cx, pack, key, found).await);
            }
            Err(other) => return Err(other.into()),
        };
        let locked_until = self
            .deps
            .repository
            .lock()
            .map(|lock| time::OffsetDateTime::from(lock.until(std::time::SystemTime::now())));
        let chunks: Vec<StoredChunk> = entries
            .iter()
            .map(|e| StoredChunk {
                id: e.id,
                offset: e.offset,
                length: e.length,
                raw_length: e.raw_length,
            })
            .collect();
        self.deps
            .catalog
            .record_pack(
                &pack.tenant,
                batch_key(pack),
                &pack.pack,
                size,
                &chunks,
                locked_until,
            )
            .await?;
        for done in [
            &pack.staged,
            &format!("{}.idx", pack.staged),
            &pack.raw_staged,
        ] {
            staging.remove(done).await?;
        }
        count(
            MetricName::BytesStored,
            &[
                ("tenant", pack.tenant.to_string()),
                ("source", pack.source.to_string()),
            ],
            size,
        );
        Ok(Some(Outgoing::event(&PackStored {
            tenant: pack.tenant.clone(),
            source: pack.source.clone(),
            snapshot: pack.snapshot.clone(),
            pack: pack.pack,
            size,
        })))
    }

    /// The repository already holds other bytes under the pack's key. The
    /// staged pack checked out, so the stored object is what is wrong:
    /// raise the alarm (a metric and an event in the audit trail), leave the
    /// object for a person to look at, and fail the snapshot that needed it.
    async fn conflict(&self, cx: &Cx, pack: &PackStaged, key: String, found: String) -> StageError {
        tracing::error!(tenant = %pack.tenant, %key, %found, "The repository holds other bytes under a pack's key; not overwritten.");
        count(
            MetricName::ObjectConflicts,
            &[("tenant", pack.tenant.to_string())],
            1,
        );
        let alarm = Outgoing::event(&ObjectConflict {
            tenant: pack.tenant.clone(),
            source: pack.source.clone(),
            snapshot: pack.snapshot.clone(),
            key: key.clone(),
            found: found.clone(),
        });
        if let Err(error) = cx.emit(alarm).await {
            tracing::error!(%error, "Cannot publish the conflict alarm.");
        }
        StageError::permanent(
            ErrorType::Conflict,
            format!("{key} already holds other bytes ({found}); it was left as it is"),
        )
    }

    /// Writes the manifest once extraction has ended and every batch of its
    /// attempt is stored. Called after each pack and on *snapshot extracted*;
    /// whichever sees the snapshot complete first does the work, and the
    /// catalog's status guard makes a second one harmless.
    async fn finalize(
        &self,
        cx: &Cx,
        tenant: &Name,
        source: &Name,
        snapshot: &SnapshotId,
    ) -> Result<Option<Outgoing>, StageError> {
        let catalog = &self.deps.catalog;
        let row = catalog.snapshot(tenant, snapshot).await?;
        let stored_event = |packs: u32, bytes: u64| {
            Outgoing::event(&SnapshotStored {
                tenant: tenant.clone(),
                source: source.clone(),
                snapshot: snapshot.clone(),
                packs,
                bytes_stored: bytes,
            })
        };
        match row.status {
            SnapshotStatus::Extracted => {}
            // Our earlier attempt stored it but its event may be lost.
            SnapshotStatus::Stored if cx.delivered > 1 => {
                let packs = catalog.snapshot_packs(tenant, snapshot).await?;
                return Ok(Some(stored_event(
                    packs.len() as u32,
                    row.bytes_stored as u64,
                )));
            }
            _ => return Ok(None),
        }
        let total = i64::from(row.batches_total.unwrap_or(0));
        if catalog.batches_stored(tenant, snapshot).await? < total {
            return Ok(None);
        }
        // Two handlers can see the snapshot complete at once (the last pack and
        // *snapshot extracted*). Manifests are encrypted with fresh randomness,
        // so only one may write it: the other leaves the work to the holder.
        let Some(lock) = catalog.try_lock_snapshot(tenant, snapshot).await? else {
            return Ok(None);
        };
        let row = catalog.snapshot(tenant, snapshot).await?;
        if row.status != SnapshotStatus::Extracted {
            lock.release().await?;
            return Ok(None);
        }
        let attempt = row.attempt.unwrap_or(1) as u32;
        let written = manifest::write(&self.deps, tenant, snapshot, attempt, &row.key_id).await?;
        let key = ObjectKey::manifest(tenant, snapshot);
        // Replace: a holder that died before recording its digest may have left other bytes.
        self.deps
            .repository
            .replace_file(&key, &written.path)
            .await?;
        let bytes_stored = written.size + written.new_pack_bytes;
        let first = catalog
            .mark_stored(
                tenant,
                snapshot,
                &written.digest,
                written.size,
                &written.packs,
                bytes_stored,
            )
            .await?;
        lock.release().await?;
        self.deps
            .staging
            .remove_prefix(&staging_key::snapshot_prefix(tenant, snapshot))
            .await?;
        if !first && cx.delivered == 1 {
            return Ok(None);
        }
        tracing::info!(
            packs = written.packs.len(),
            manifest_bytes = written.size,
            "Snapshot stored."
        );
        Ok(Some(stored_event(written.packs.len() as u32, bytes_stored)))
    }
}
