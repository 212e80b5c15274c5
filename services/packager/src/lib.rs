//! packager — consumes *data extracted*; compresses (zstd) and encrypts (age,
//! tenant public key) each new chunk into a pack; emits *packs staged*.
//! Holds only public keys: a compromised packager cannot read old backups.

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::sync::Arc;
use vaultline_catalog::BatchKey;
use vaultline_format::blob::Compressor;
use vaultline_format::keys::{Identity, Recipient, key_id, parse_recipient};
use vaultline_format::pack::PackWriter;
use vaultline_format::staged::StagedReader;
use vaultline_runtime::{Cx, Deps, ErrorType, Outcome, Outgoing, Stage, StageError};
use vaultline_types::staging_key;
use vaultline_types::{DataExtracted, PackStaged, StageName};

/// zstd level when the config names none.
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;

/// The packager stage.
pub struct Packager {
    deps: Arc<Deps>,
    zstd_level: i32,
    /// Opens staged batches: the only stage that sees plain chunks.
    staging: Arc<Identity>,
}

impl Stage for Packager {
    const NAME: StageName = StageName::Packager;
    type Input = DataExtracted;

    async fn new(deps: Arc<Deps>) -> Result<Self, StageError> {
        let zstd_level = deps
            .config
            .stage(Self::NAME)
            .zstd_level
            .unwrap_or(DEFAULT_ZSTD_LEVEL);
        let staging = vaultline_runtime::deps::load_staging_identity(&deps.config)
            .map_err(|e| StageError::permanent(ErrorType::Config, e))?;
        Ok(Packager {
            deps,
            zstd_level,
            staging: Arc::new(staging),
        })
    }

    async fn handle(&self, _cx: &Cx, batch: DataExtracted) -> Outcome {
        let staging = &self.deps.staging;
        let staged = batch.staged_batch();
        staging_key::check("staged", &batch.staged, &staged.raw())
            .map_err(|e| StageError::rejected(ErrorType::Forged, e))?;
        let Some(raw) = staging.fetch(&batch.staged).await? else {
            let catalog = &self.deps.catalog;
            let key = BatchKey {
                snapshot: &batch.snapshot,
                attempt: batch.attempt,
                batch: batch.batch,
            };
            // Redelivered after the uploader stored it and cleaned up, or left
            // over from an extraction attempt that was superseded: both done.
            let superseded = catalog
                .snapshot(&batch.tenant, &batch.snapshot)
                .await?
                .attempt
                .is_some_and(|attempt| attempt as u32 != batch.attempt);
            return if superseded || catalog.batch_stored(&batch.tenant, key).await? {
                Ok(vec![])
            } else {
                Err(StageError::permanent(
                    ErrorType::Staging,
                    format!(
                        "staged batch {} is gone (expired or removed) before it was packed",
                        batch.staged
                    ),
                ))
            };
        };
        let recipient = self
            .deps
            .catalog
            .recipient(&batch.tenant, &batch.key_id)
            .await?;
        // The key id is the hash of the recipient: a catalog row rewritten to
        // another recipient (by whoever could write it) does not match it,
        // and nothing is encrypted to a key the tenant does not hold.
        if key_id(&recipient) != batch.key_id {
            return Err(StageError::permanent(
                ErrorType::Key,
                format!(
                    "the recipient recorded for key {} of tenant {} is not the one that id names; refusing to encrypt to it",
                    batch.key_id, batch.tenant
                ),
            ));
        }
        let recipient = parse_recipient(&recipient)?;
        let temp = staging.temp_path(&format!("{}.pack", staged.raw()))?;
        let level = self.zstd_level;
        let staging_identity = self.staging.clone();
        let (temp, finished) = tokio::task::spawn_blocking(move || {
            pack_batch(raw.path(), &staging_identity, temp, &recipient, level)
        })
        .await??;
        // Packing is not deterministic (fresh keys and nonces), and a
        // redelivered batch may be packed twice at once: naming the staged
        // pack by its id means the uploader always stores the bytes the id
        // it was sent names.
        let pack_key = staged.pack(&finished.id);
        staging.commit(&temp, &pack_key).await?;
        let index = vaultline_format::pack::encode_index(&finished.entries);
        let index_key = staged.pack_index(&finished.id);
        let index_temp = staging.temp_path(&index_key)?;
        std::fs::write(&index_temp, index).map_err(|e| {
            StageError::transient(ErrorType::Staging, format!("writing pack index: {e}"))
        })?;
        staging.commit(&index_temp, &index_key).await?;
        tracing::debug!(pack = %finished.id, size = finished.size, blobs = finished.entries.len(), "Packed batch.");
        Ok(vec![Outgoing::event(&PackStaged {
            tenant: batch.tenant,
            source: batch.source,
            snapshot: batch.snapshot,
            attempt: batch.attempt,
            batch: batch.batch,
            pack: finished.id,
            staged: pack_key,
            raw_staged: batch.staged,
            size: finished.size,
        })])
    }
}

type Finished = vaultline_format::pack::FinishedPack<BufWriter<File>>;

/// Opens a staged batch (see [`vaultline_format::staged`]) and writes a pack.
fn pack_batch(
    raw: &std::path::Path,
    staging: &Identity,
    temp: std::path::PathBuf,
    recipient: &Recipient,
    level: i32,
) -> Result<(std::path::PathBuf, Finished), StageError> {
    let staging_err = |e: std::io::Error| {
        StageError::transient(ErrorType::Staging, format!("{}: {e}", raw.display()))
    };
    let input = BufReader::with_capacity(1 << 20, File::open(raw).map_err(staging_err)?);
    // A batch that does not open was not sealed by an extractor with our
    // recipient (or was damaged in staging): nothing to retry.
    let unreadable = |e: vaultline_format::Error| {
        StageError::permanent(
            ErrorType::Staging,
            format!("staged batch {}: {e}", raw.display()),
        )
    };
    let mut batch = StagedReader::open(input, staging).map_err(unreadable)?;
    let out = BufWriter::with_capacity(1 << 20, File::create(&temp).map_err(staging_err)?);
    let mut pack = PackWriter::new(out, recipient)?;
    let mut compressor = Compressor::new(level)?;
    let mut record = Vec::new();
    while let Some((id, chunk)) = batch.next_chunk(&mut record).map_err(unreadable)? {
        pack.add(id, chunk, &mut compressor)?;
    }
    Ok((temp, pack.finish(&mut compressor)?))
}
