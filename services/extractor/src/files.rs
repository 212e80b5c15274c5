//! The `files` source: a local directory tree, walked in name order so the
//! same tree always yields the same manifest.

use crate::batch_event;
use serde::Deserialize;
use std::collections::HashSet;
use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::mpsc;
use vaultline_format::chunker;
use vaultline_format::manifest::{
    ChunkRef, ContentDigest, Entry, EntryKind, Footer, Header, Record, SourceDigest, write_record,
};
use vaultline_runtime::{Cx, Deps, Outgoing, StageError};
use vaultline_types::{ChunkId, Name, SnapshotId};

/// Configuration of a `files` source.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FilesConfig {
    /// Root of the tree.
    path: PathBuf,
}

/// Everything one extraction needs, movable to a blocking thread.
pub(crate) struct Job {
    pub(crate) deps: Arc<Deps>,
    pub(crate) tenant: Name,
    pub(crate) source: Name,
    pub(crate) snapshot: SnapshotId,
    pub(crate) attempt: u32,
    pub(crate) key_id: String,
    pub(crate) chunk_key: [u8; 32],
    pub(crate) batch_bytes: u64,
    pub(crate) created: i64,
}

pub(crate) struct Summary {
    pub(crate) batches: u32,
    pub(crate) files: u64,
    pub(crate) bytes_read: u64,
    pub(crate) bytes_new: u64,
    pub(crate) source_digest: String,
}

/// Staging key of an attempt's manifest draft.
pub(crate) fn draft_key(tenant: &Name, snapshot: &SnapshotId, attempt: u32) -> String {
    format!("{tenant}/{snapshot}/a{attempt}/manifest.draft")
}

fn batch_key(job: &Job, batch: u32) -> String {
    format!(
        "{}/{}/a{}/batch-{batch:06}",
        job.tenant, job.snapshot, job.attempt
    )
}

/// Pending chunks are looked up in the catalog in groups this large.
const LOOKUP_BYTES: usize = 8 << 20;
const LOOKUP_CHUNKS: usize = 1024;

/// Reads the tree on a blocking thread; batches flow back to be emitted here.
pub(crate) async fn extract(job: Job, config: FilesConfig, cx: &Cx) -> Result<Summary, StageError> {
    let (tx, mut rx) = mpsc::channel::<Outgoing>(2);
    let runtime = tokio::runtime::Handle::current();
    let worker = tokio::task::spawn_blocking(move || walk(&job, &config.path, &runtime, tx));
    while let Some(out) = rx.recv().await {
        // On failure we return, dropping `rx`: the walker's next send fails and it stops.
        cx.emit(out).await?;
    }
    worker.await?
}

fn source_err(what: impl std::fmt::Display) -> StageError {
    StageError::permanent("source", what)
}

fn staging_io(path: &Path) -> impl FnOnce(std::io::Error) -> StageError + '_ {
    move |e| StageError::transient("staging", format!("writing {}: {e}", path.display()))
}

fn walk(
    job: &Job,
    root: &Path,
    runtime: &tokio::runtime::Handle,
    tx: mpsc::Sender<Outgoing>,
) -> Result<Summary, StageError> {
    match std::fs::metadata(root) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => {
            return Err(source_err(format!(
                "source path {} is not a directory",
                root.display()
            )));
        }
        Err(e) => return Err(source_err(format!("source path {}: {e}", root.display()))),
    }
    let staging = &job.deps.staging;
    let draft_key = draft_key(&job.tenant, &job.snapshot, job.attempt);
    let draft_tmp = staging.temp_path(&draft_key)?;
    let mut draft = BufWriter::new(File::create(&draft_tmp).map_err(staging_io(&draft_tmp))?);
    write_record(
        &mut draft,
        &Record::Header(Header {
            format: vaultline_format::FORMAT_VERSION,
            tenant: job.tenant.clone(),
            source: job.source.clone(),
            snapshot: job.snapshot.clone(),
            source_kind: "files".into(),
            created: job.created,
            key_id: job.key_id.clone(),
        }),
    )?;
    let mut batches = Batches::new(job, runtime, tx);
    let mut digest = SourceDigest::default();
    let (mut entries, mut files, mut bytes_read) = (0u64, 0u64, 0u64);

    for item in walkdir::WalkDir::new(root)
        .follow_links(false)
        .sort_by_file_name()
        .min_depth(1)
    {
        let item = match item {
            Ok(item) => item,
            Err(e)
                if e.io_error()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::NotFound) =>
            {
                continue;
            }
            Err(e) => return Err(source_err(format!("walking {}: {e}", root.display()))),
        };
        let path = item
            .path()
            .strip_prefix(root)
            .expect("walkdir yields paths under the root");
        let meta = match item.metadata() {
            Ok(meta) => meta,
            Err(e)
                if e.io_error()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::NotFound) =>
            {
                continue;
            }
            Err(e) => return Err(source_err(format!("{}: {e}", item.path().display()))),
        };
        let kind = meta.file_type();
        let mut entry = Entry {
            path: path.as_os_str().as_bytes().to_vec(),
            kind: EntryKind::Dir,
            mode: meta.mode() & 0o7777,
            mtime: meta.mtime(),
            mtime_nanos: meta.mtime_nsec() as u32,
            size: 0,
            target: None,
            chunks: Vec::new(),
        };
        let mut content = [0u8; 32];
        if kind.is_symlink() {
            let target = std::fs::read_link(item.path())
                .map_err(|e| source_err(format!("reading link {}: {e}", item.path().display())))?;
            entry.kind = EntryKind::Symlink;
            entry.target = Some(target.as_os_str().as_bytes().to_vec());
        } else if kind.is_file() {
            let file = match File::open(item.path()) {
                Ok(file) => file,
                // Deleted between listing and reading: like every backup tool, skip it.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    return Err(source_err(format!(
                        "opening {}: {e}",
                        item.path().display()
                    )));
                }
            };
            entry.kind = EntryKind::File;
            let mut hasher = ContentDigest::default();
            for chunk in chunker::chunks(BufReader::with_capacity(1 << 20, file)) {
                let chunk = chunk
                    .map_err(|e| source_err(format!("reading {}: {e}", item.path().display())))?;
                hasher.update(&chunk);
                let id = chunker::chunk_id(&job.chunk_key, &chunk);
                entry.size += chunk.len() as u64;
                entry.chunks.push(ChunkRef {
                    id,
                    raw_length: chunk.len() as u32,
                    location: None,
                });
                batches.add(id, chunk)?;
            }
            content = hasher.finish();
            files += 1;
            bytes_read += entry.size;
        } else if !kind.is_dir() {
            tracing::warn!(path = %item.path().display(), "Skipping a special file (socket, fifo or device).");
            continue;
        }
        digest.entry(&entry, content);
        write_record(&mut draft, &Record::Entry(entry))?;
        entries += 1;
    }
    let (batch_count, bytes_new) = batches.finish()?;
    let source_digest = digest.finish();
    write_record(
        &mut draft,
        &Record::Footer(Footer {
            entries,
            bytes: bytes_read,
            source_digest: source_digest.clone(),
            packs: vec![],
        }),
    )?;
    draft.flush().map_err(staging_io(&draft_tmp))?;
    drop(draft);
    staging.commit(&draft_tmp, &draft_key)?;
    Ok(Summary {
        batches: batch_count,
        files,
        bytes_read,
        bytes_new,
        source_digest,
    })
}

/// Collects new chunks into staged batch files of about `batch_bytes`.
/// Batch file format: `chunk id (32) | u32 LE length | bytes`, repeated.
struct Batches<'a> {
    job: &'a Job,
    runtime: &'a tokio::runtime::Handle,
    tx: mpsc::Sender<Outgoing>,
    seen: HashSet<ChunkId>,
    pending: Vec<(ChunkId, Vec<u8>)>,
    pending_bytes: usize,
    current: Option<(BufWriter<File>, PathBuf)>,
    current_bytes: u64,
    current_chunks: u32,
    index: u32,
    bytes_new: u64,
}

impl<'a> Batches<'a> {
    fn new(job: &'a Job, runtime: &'a tokio::runtime::Handle, tx: mpsc::Sender<Outgoing>) -> Self {
        Batches {
            job,
            runtime,
            tx,
            seen: HashSet::new(),
            pending: Vec::new(),
            pending_bytes: 0,
            current: None,
            current_bytes: 0,
            current_chunks: 0,
            index: 0,
            bytes_new: 0,
        }
    }

    fn add(&mut self, id: ChunkId, data: Vec<u8>) -> Result<(), StageError> {
        // A chunk repeated within the snapshot is staged once.
        if !self.seen.insert(id) {
            return Ok(());
        }
        self.pending_bytes += data.len();
        self.pending.push((id, data));
        if self.pending_bytes >= LOOKUP_BYTES || self.pending.len() >= LOOKUP_CHUNKS {
            self.flush_pending()?;
        }
        Ok(())
    }

    /// The dedup lookup: only chunks the tenant has not stored go on.
    fn flush_pending(&mut self) -> Result<(), StageError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let ids: Vec<ChunkId> = self.pending.iter().map(|(id, _)| *id).collect();
        let existing = self.runtime.block_on(
            self.job
                .deps
                .catalog
                .existing_chunks(&self.job.tenant, &ids),
        )?;
        for (id, data) in std::mem::take(&mut self.pending) {
            if !existing.contains(&id) {
                self.write(id, &data)?;
            }
        }
        self.pending_bytes = 0;
        Ok(())
    }

    fn write(&mut self, id: ChunkId, data: &[u8]) -> Result<(), StageError> {
        if self.current.is_none() {
            let key = batch_key(self.job, self.index);
            let tmp = self.job.deps.staging.temp_path(&key)?;
            let file = File::create(&tmp).map_err(staging_io(&tmp))?;
            self.current = Some((BufWriter::with_capacity(1 << 20, file), tmp));
        }
        let (out, tmp) = self.current.as_mut().expect("opened above");
        out.write_all(&id.0)
            .and_then(|()| out.write_all(&(data.len() as u32).to_le_bytes()))
            .and_then(|()| out.write_all(data))
            .map_err(staging_io(tmp))?;
        self.current_bytes += data.len() as u64;
        self.current_chunks += 1;
        self.bytes_new += data.len() as u64;
        if self.current_bytes >= self.job.batch_bytes {
            self.close()?;
        }
        Ok(())
    }

    fn close(&mut self) -> Result<(), StageError> {
        let Some((mut out, tmp)) = self.current.take() else {
            return Ok(());
        };
        out.flush().map_err(staging_io(&tmp))?;
        drop(out);
        let key = batch_key(self.job, self.index);
        self.job.deps.staging.commit(&tmp, &key)?;
        let event = batch_event(
            self.job,
            self.index,
            key,
            self.current_chunks,
            self.current_bytes,
        );
        self.tx.blocking_send(event).map_err(|_| {
            StageError::transient("bus", "publishing batches stopped; extraction abandoned")
        })?;
        self.index += 1;
        self.current_bytes = 0;
        self.current_chunks = 0;
        Ok(())
    }

    fn finish(mut self) -> Result<(u32, u64), StageError> {
        self.flush_pending()?;
        self.close()?;
        Ok((self.index, self.bytes_new))
    }
}
