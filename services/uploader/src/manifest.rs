//! Turns the extractor's manifest draft into the stored manifest: every chunk
//! gets its pack and offset from the catalog, then the records are written
//! zstd-compressed and age-encrypted to the tenant.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::PathBuf;
use std::sync::Arc;
use vaultline_format::keys::parse_recipient;
use vaultline_format::manifest::{Entry, Location, PackRecord, Record, RecordReader, SealedWriter};
use vaultline_runtime::{Deps, ErrorType, StageError};
use vaultline_types::{ChunkId, Name, PackId, SnapshotId};

/// A manifest ready to upload.
pub(crate) struct Written {
    pub(crate) path: PathBuf,
    pub(crate) size: u64,
    pub(crate) digest: String,
    pub(crate) packs: Vec<PackId>,
    pub(crate) new_pack_bytes: u64,
}

/// Entries are resolved in groups of about this many chunks.
const RESOLVE_CHUNKS: usize = 4096;

pub(crate) async fn write(
    deps: &Arc<Deps>,
    tenant: &Name,
    snapshot: &SnapshotId,
    attempt: u32,
    key_id: &str,
) -> Result<Written, StageError> {
    let recipient = parse_recipient(&deps.catalog.recipient(tenant, key_id).await?)?;
    let Some(draft) = deps
        .staging
        .fetch(&vaultline_types::staging_key::manifest_draft(
            tenant, snapshot, attempt,
        ))
        .await?
    else {
        return Err(StageError::permanent(
            ErrorType::Staging,
            format!("the manifest draft of snapshot {snapshot} is gone (staging expired?)"),
        ));
    };
    let final_key = format!(
        "{}/manifest.final",
        vaultline_types::staging_key::snapshot_prefix(tenant, snapshot)
    );
    let temp = deps.staging.temp_path(&final_key)?;
    let new_pack_bytes = deps
        .catalog
        .attempt_pack_bytes(tenant, snapshot, attempt)
        .await?;
    let (deps, tenant, runtime) = (
        deps.clone(),
        tenant.clone(),
        tokio::runtime::Handle::current(),
    );
    let (path, packs) = tokio::task::spawn_blocking(move || {
        let io =
            |e: std::io::Error| StageError::transient(ErrorType::Staging, format!("manifest: {e}"));
        let input = BufReader::with_capacity(1 << 20, File::open(draft.path()).map_err(io)?);
        let out = BufWriter::with_capacity(1 << 20, File::create(&temp).map_err(io)?);
        let mut writer = SealedWriter::new(out, &recipient)?;
        let mut packs = BTreeSet::new();
        let mut group: Vec<Entry> = Vec::new();
        let mut group_chunks = 0;
        let resolve =
            |group: &mut Vec<Entry>, writer: &mut SealedWriter<_>, packs: &mut BTreeSet<PackId>| {
                let ids: Vec<ChunkId> = group
                    .iter()
                    .flat_map(|e| e.chunks.iter().map(|c| c.id))
                    .collect();
                let found = runtime.block_on(deps.catalog.chunk_locations(&tenant, &ids))?;
                for mut entry in group.drain(..) {
                    for chunk in &mut entry.chunks {
                        let loc = found.get(&chunk.id).ok_or_else(|| {
                            StageError::permanent(
                                ErrorType::Manifest,
                                format!(
                                    "chunk {} of {} was never stored",
                                    chunk.id,
                                    String::from_utf8_lossy(&entry.path)
                                ),
                            )
                        })?;
                        packs.insert(loc.pack);
                        chunk.location = Some(Location {
                            pack: loc.pack,
                            offset: loc.offset,
                            length: loc.length,
                        });
                    }
                    writer.write(&Record::Entry(entry))?;
                }
                Ok::<_, StageError>(())
            };
        for record in RecordReader::new(input) {
            match record? {
                Record::Entry(entry) => {
                    group_chunks += entry.chunks.len();
                    group.push(entry);
                    if group_chunks >= RESOLVE_CHUNKS {
                        resolve(&mut group, &mut writer, &mut packs)?;
                        group_chunks = 0;
                    }
                }
                Record::Footer(mut footer) => {
                    resolve(&mut group, &mut writer, &mut packs)?;
                    let ids: Vec<PackId> = packs.iter().copied().collect();
                    let sizes: HashMap<PackId, u64> =
                        runtime.block_on(deps.catalog.pack_sizes(&tenant, &ids))?;
                    footer.packs = ids
                        .iter()
                        .map(|id| PackRecord {
                            id: *id,
                            size: sizes.get(id).copied().unwrap_or(0),
                        })
                        .collect();
                    writer.write(&Record::Footer(footer))?;
                }
                header @ Record::Header(_) => writer.write(&header)?,
            }
        }
        let out = writer.finish()?;
        out.into_inner()
            .map_err(|e| io(e.into_error()))?
            .sync_all()
            .map_err(io)?;
        Ok::<_, StageError>((temp, packs.into_iter().collect::<Vec<_>>()))
    })
    .await??;
    let (size, digest) = file_digest(path.clone()).await?;
    Ok(Written {
        path,
        size,
        digest,
        packs,
        new_pack_bytes,
    })
}

async fn file_digest(path: PathBuf) -> Result<(u64, String), StageError> {
    tokio::task::spawn_blocking(move || {
        let (digest, size) = vaultline_storage::sha256_file(&path)
            .map_err(|e| StageError::transient(ErrorType::Staging, e))?;
        Ok((size, hex::encode(digest)))
    })
    .await?
}
