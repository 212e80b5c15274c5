//! What every source shares: the staged manifest draft and the batches of
//! new chunks, looked up in the catalog in groups and staged as they fill.

use crate::batch_event;
use std::collections::HashSet;
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;
use vaultline_format::chunker;
use vaultline_format::keys::Recipient;
use vaultline_format::manifest::{
    ChunkRef, ContentDigest, ContentHash, Entry, Header, Record, write_record,
};
use vaultline_format::staged::{self, StagedWriter};
use vaultline_runtime::{Deps, ErrorType, Outgoing, StageError};
use vaultline_types::staging_key::{self, StagedBatch};
use vaultline_types::{ChunkId, Name, SnapshotId};

/// Everything one extraction needs, movable to a blocking thread.
pub(crate) struct Job {
    pub(crate) deps: Arc<Deps>,
    pub(crate) tenant: Name,
    pub(crate) source: Name,
    pub(crate) snapshot: SnapshotId,
    pub(crate) attempt: u32,
    pub(crate) key_id: String,
    pub(crate) chunk_key: zeroize::Zeroizing<[u8; 32]>,
    /// Staged batches are sealed to it; only the packager can open them.
    pub(crate) staging_recipient: Recipient,
    pub(crate) batch_bytes: u64,
    pub(crate) created: i64,
    /// Recorded in the manifest's header.
    pub(crate) source_config: vaultline_types::SourceConfig,
    /// Bytes of the source covered so far, published as progress.
    pub(crate) read: Arc<std::sync::atomic::AtomicU64>,
}

pub(crate) struct Summary {
    pub(crate) batches: u32,
    pub(crate) files: u64,
    pub(crate) bytes_read: u64,
    pub(crate) bytes_new: u64,
    pub(crate) source_digest: String,
    /// Database sources: rows per table at dump time.
    pub(crate) tables: Vec<vaultline_format::manifest::TableRows>,
    /// Physical postgres sources: where the base sits in the WAL.
    pub(crate) base: Option<crate::basebackup::BaseBackup>,
}

pub(crate) fn batch_key(job: &Job, batch: u32) -> String {
    StagedBatch {
        tenant: &job.tenant,
        snapshot: &job.snapshot,
        attempt: job.attempt,
        batch,
    }
    .raw()
}

/// Pending chunks are looked up in the catalog in groups this large.
const LOOKUP_BYTES: usize = 8 << 20;
const LOOKUP_CHUNKS: usize = 1024;
/// Lookup buffers kept for reuse: one filling while one is looked up, and
/// one more for a second reader thread.
const SPARE_BUFFERS: usize = 2;

/// Chunks waiting for one dedup lookup, copied one after the other into one
/// buffer that is reused across lookups. A buffer per chunk cost a backup
/// of 1 GiB about a second of CPU: glibc maps each allocation over 256 KiB
/// afresh (see the runtime's allocator bounds), so every page of every new
/// chunk was faulted in, zeroed and unmapped again. Each chunk is kept as a
/// staged record's plaintext, `id | chunk`, so a new one is sealed where it
/// lies instead of being copied once more.
#[derive(Default)]
struct Pending {
    ids: Vec<(ChunkId, std::ops::Range<usize>)>,
    data: Vec<u8>,
}

impl Pending {
    fn in_buffer(data: Vec<u8>) -> Pending {
        Pending {
            ids: Vec::new(),
            data,
        }
    }

    fn push(&mut self, id: ChunkId, chunk: &[u8]) {
        if self.data.capacity() == 0 {
            // Never grown (and copied) on the way: a lookup starts once
            // LOOKUP_BYTES are reached, at most one chunk beyond.
            self.data
                .reserve_exact(LOOKUP_BYTES + vaultline_format::chunker::MAX_SIZE + staged::ID);
        }
        let start = self.data.len();
        self.data.extend_from_slice(&id.0);
        self.data.extend_from_slice(chunk);
        self.ids.push((id, start..self.data.len()));
    }
}

pub(crate) fn source_err(what: impl std::fmt::Display) -> StageError {
    StageError::permanent(ErrorType::Source, what)
}

fn sealing_err(path: &Path, e: vaultline_format::Error) -> StageError {
    StageError::transient(
        ErrorType::Staging,
        format!("writing {}: {e}", path.display()),
    )
}

pub(crate) fn staging_io(path: &Path) -> impl FnOnce(std::io::Error) -> StageError + '_ {
    move |e| {
        StageError::transient(
            ErrorType::Staging,
            format!("writing {}: {e}", path.display()),
        )
    }
}

/// The draft manifest being written to staging.
pub(crate) struct Draft {
    out: BufWriter<File>,
    temp: PathBuf,
    key: String,
}

impl Draft {
    /// Opens the draft and writes its header.
    pub(crate) fn create(job: &Job, source_kind: &str) -> Result<Draft, StageError> {
        let key = staging_key::manifest_draft(&job.tenant, &job.snapshot, job.attempt);
        let temp = job.deps.staging.temp_path(&key)?;
        let mut out = BufWriter::new(File::create(&temp).map_err(staging_io(&temp))?);
        write_record(
            &mut out,
            &Record::Header(Header {
                format: vaultline_format::FORMAT_VERSION,
                tenant: job.tenant.clone(),
                source: job.source.clone(),
                snapshot: job.snapshot.clone(),
                source_kind: source_kind.into(),
                created: job.created,
                key_id: job.key_id.clone(),
                content_hash: ContentHash::Blake3,
                source_config: Some(job.source_config.clone()),
            }),
        )?;
        Ok(Draft { out, temp, key })
    }

    pub(crate) fn write(&mut self, record: &Record) -> Result<(), StageError> {
        Ok(write_record(&mut self.out, record)?)
    }

    /// Flushes and moves the finished draft into place.
    pub(crate) fn commit(self, job: &Job) -> Result<(), StageError> {
        let Draft { mut out, temp, key } = self;
        out.flush().map_err(staging_io(&temp))?;
        drop(out);
        job.deps.staging.commit_blocking(&temp, &key)?;
        Ok(())
    }
}

/// Inputs at least this large (or of unknown size: dumps) are read and cut
/// on a second thread while this one hashes and stages, so CDC and hashing
/// use both cores; the files source also reads such files on reader threads
/// of their own. Smaller files are not worth a thread each.
pub(crate) const PARALLEL_FROM: u64 = 8 << 20;

/// Chunks `input` into `entry` (its chunk list and size), handing new chunks
/// to `batches`; returns the digest of the content. `chunker` is the
/// caller's reusable buffer; `size` is the input's expected size when
/// known; `what` names the input in errors.
pub(crate) fn chunk_into(
    input: impl Read + Send,
    entry: &mut Entry,
    batches: &Batches<'_>,
    chunker: &mut chunker::Chunker,
    chunk_key: &[u8; 32],
    size: Option<u64>,
    what: &dyn Fn() -> String,
) -> Result<[u8; 32], StageError> {
    let mut hasher = ContentDigest::new(ContentHash::Blake3);
    let mut take = |chunk: &[u8]| {
        hasher.update(chunk);
        let id = chunker::chunk_id(chunk_key, chunk);
        entry.size += chunk.len() as u64;
        entry.chunks.push(ChunkRef {
            id,
            raw_length: chunk.len() as u32,
            location: None,
        });
        batches.add(id, chunk)
    };
    let (read, handled) = if size.is_some_and(|size| size < PARALLEL_FROM) {
        let mut handled = Ok(());
        let read = chunker.chunk(input, |chunk| {
            handled = take(chunk);
            if handled.is_ok() {
                Ok(())
            } else {
                Err(std::io::Error::other("stopped"))
            }
        });
        (read, handled)
    } else {
        std::thread::scope(|scope| {
            let (tx, rx) = std::sync::mpsc::sync_channel::<chunker::SharedChunk>(4);
            let reader = scope.spawn(move || {
                chunker.chunk_shared(input, |chunk| {
                    // Fails only when the receiver stopped on an error of its own.
                    tx.send(chunk).map_err(|_| std::io::Error::other("stopped"))
                })
            });
            let mut handled = Ok(());
            for chunk in rx.iter() {
                handled = take(&chunk);
                if handled.is_err() {
                    break;
                }
            }
            drop(rx);
            let read = reader.join().expect("the chunking thread does not panic");
            (read, handled)
        })
    };
    // The stage's own error first: a read stopped by it is not the input's fault.
    handled?;
    read.map_err(|e| source_err(format!("reading {}: {e}", what())))?;
    Ok(hasher.finish())
}

/// Collects new chunks into staged batch files of about `batch_bytes`.
/// Batch file format: `chunk id (32) | u32 LE length | bytes`, repeated.
/// Shared by the threads that read files at once: chunks from several files
/// go into the same batches, in whatever order they come.
pub(crate) struct Batches<'a> {
    job: &'a Job,
    runtime: &'a tokio::runtime::Handle,
    state: Mutex<BatchState>,
}

struct BatchState {
    tx: mpsc::Sender<Outgoing>,
    seen: HashSet<ChunkId>,
    pending: Pending,
    /// Buffers of lookups done, for the next ones.
    spare: Vec<Vec<u8>>,
    current: Option<(StagedWriter<BufWriter<File>>, PathBuf)>,
    current_bytes: u64,
    current_chunks: u32,
    index: u32,
    bytes_new: u64,
}

impl<'a> Batches<'a> {
    pub(crate) fn new(
        job: &'a Job,
        runtime: &'a tokio::runtime::Handle,
        tx: mpsc::Sender<Outgoing>,
    ) -> Self {
        Batches {
            job,
            runtime,
            state: Mutex::new(BatchState {
                tx,
                seen: HashSet::new(),
                pending: Pending::default(),
                spare: Vec::new(),
                current: None,
                current_bytes: 0,
                current_chunks: 0,
                index: 0,
                bytes_new: 0,
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, BatchState> {
        // A panicking reader thread takes the whole extraction down anyway.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hands on a chunk: staged unless this extraction saw it already or
    /// the catalog finds it stored. Only such chunks are copied, to wait
    /// for their lookup.
    pub(crate) fn add(&self, id: ChunkId, data: &[u8]) -> Result<(), StageError> {
        self.covered(data.len() as u64);
        let lookup = {
            let mut state = self.state();
            // A chunk repeated within the snapshot is staged once.
            if !state.seen.insert(id) {
                return Ok(());
            }
            state.pending.push(id, data);
            if state.pending.data.len() < LOOKUP_BYTES && state.pending.ids.len() < LOOKUP_CHUNKS {
                return Ok(());
            }
            let buffer = state.spare.pop().unwrap_or_default();
            std::mem::replace(&mut state.pending, Pending::in_buffer(buffer))
        };
        // Looked up without the lock: another reader keeps adding meanwhile.
        self.stage_new(lookup)
    }

    /// The runtime the walk blocks on for catalog queries.
    /// Counts source bytes as done (read, or unchanged in the files cache).
    pub(crate) fn covered(&self, bytes: u64) {
        self.job
            .read
            .fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
    }

    pub(crate) fn runtime(&self) -> &tokio::runtime::Handle {
        self.runtime
    }

    /// The ids this extraction has not handed on yet (staged, or found
    /// stored), under one lock.
    pub(crate) fn unseen(&self, ids: impl IntoIterator<Item = ChunkId>) -> HashSet<ChunkId> {
        let state = self.state();
        ids.into_iter()
            .filter(|id| !state.seen.contains(id))
            .collect()
    }

    /// Which of `ids` the tenant has stored: the dedup lookup, blocking.
    pub(crate) fn stored(&self, ids: &[ChunkId]) -> Result<HashSet<ChunkId>, StageError> {
        if ids.is_empty() {
            return Ok(HashSet::new());
        }
        Ok(self
            .runtime
            .block_on(self.job.deps.catalog.existing_chunks(&self.job.tenant, ids))?)
    }

    /// Looks up `ids` (those not seen yet) in the catalog now, and counts
    /// the stored ones as seen: chunks of them read later are not staged.
    pub(crate) fn confirm_stored(
        &self,
        ids: impl IntoIterator<Item = ChunkId>,
    ) -> Result<(), StageError> {
        let ids: Vec<ChunkId> = self.unseen(ids).into_iter().collect();
        let stored = self.stored(&ids)?;
        self.state().seen.extend(stored);
        Ok(())
    }

    /// Stages the chunks the tenant has not stored.
    fn stage_new(&self, pending: Pending) -> Result<(), StageError> {
        let ids: Vec<ChunkId> = pending.ids.iter().map(|(id, _)| *id).collect();
        let existing = self.stored(&ids)?;
        let mut state = self.state();
        let mut data = pending.data;
        for (id, range) in pending.ids {
            if !existing.contains(&id) {
                state.write(self.job, &mut data[range])?;
            }
        }
        if state.spare.len() < SPARE_BUFFERS {
            let mut buffer = data;
            buffer.clear();
            state.spare.push(buffer);
        }
        Ok(())
    }

    pub(crate) fn finish(self) -> Result<(u32, u64), StageError> {
        let pending = std::mem::take(&mut self.state().pending);
        self.stage_new(pending)?;
        let mut state = self.state();
        state.close(self.job)?;
        Ok((state.index, state.bytes_new))
    }
}

impl BatchState {
    /// Seals one `id | chunk` record in place (its plaintext is not needed
    /// afterwards) and stages it.
    fn write(&mut self, job: &Job, record: &mut [u8]) -> Result<(), StageError> {
        if self.current.is_none() {
            let key = batch_key(job, self.index);
            let tmp = job.deps.staging.temp_path(&key)?;
            let file = File::create(&tmp).map_err(staging_io(&tmp))?;
            let out = BufWriter::with_capacity(1 << 20, file);
            let sealed =
                StagedWriter::new(out, &job.staging_recipient).map_err(|e| sealing_err(&tmp, e))?;
            self.current = Some((sealed, tmp));
        }
        let (out, tmp) = self.current.as_mut().expect("opened above");
        let chunk_bytes = (record.len() - staged::ID) as u64;
        out.add_record(record).map_err(|e| sealing_err(tmp, e))?;
        self.current_bytes += chunk_bytes;
        self.current_chunks += 1;
        self.bytes_new += chunk_bytes;
        if self.current_bytes >= job.batch_bytes {
            self.close(job)?;
        }
        Ok(())
    }

    fn close(&mut self, job: &Job) -> Result<(), StageError> {
        let Some((out, tmp)) = self.current.take() else {
            return Ok(());
        };
        drop(out.finish().map_err(|e| sealing_err(&tmp, e))?);
        let key = batch_key(job, self.index);
        job.deps.staging.commit_blocking(&tmp, &key)?;
        let event = batch_event(
            job,
            self.index,
            key,
            self.current_chunks,
            self.current_bytes,
        );
        self.tx.blocking_send(event).map_err(|_| {
            StageError::transient(
                ErrorType::Bus,
                "publishing batches stopped; extraction abandoned",
            )
        })?;
        self.index += 1;
        self.current_bytes = 0;
        self.current_chunks = 0;
        Ok(())
    }
}
