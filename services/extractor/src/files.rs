//! The `files` source: a local directory tree, walked in name order so the
//! same tree always yields the same manifest.

use crate::draft::{Batches, Draft, Job, Summary, chunk_into, source_err};
use crate::files_cache::{self, CachedFile, Next, Previous, Stat};
use serde::Deserialize;
use std::collections::HashSet;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use tokio::sync::mpsc;
use vaultline_format::manifest::{ChunkRef, Entry, EntryKind, Footer, Record, SourceDigest};
use vaultline_runtime::{Cx, Outgoing, StageError};
use vaultline_types::ChunkId;

/// Configuration of a `files` source.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FilesConfig {
    /// Root of the tree.
    path: PathBuf,
}

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

/// Pending entries are held back at most this many chunks (or entries)
/// while the chunks of unchanged files are confirmed in one catalog query.
const HELD_CHUNKS: usize = 4096;

/// An entry waiting for its place in the draft.
struct Held {
    entry: Entry,
    content: [u8; 32],
    /// Files taken from the cache: where to read them again if their chunks
    /// are no longer stored, and their stat for the next cache.
    reuse: Option<(PathBuf, Stat)>,
}

/// The walk's output side: the draft, the batches, the digest and both caches.
struct Walker<'a> {
    job: &'a Job,
    draft: Draft,
    batches: Batches<'a>,
    digest: SourceDigest,
    previous: Previous,
    next: Next,
    held: Vec<Held>,
    held_chunks: usize,
    entries: u64,
    files: u64,
    bytes_read: u64,
    reused: u64,
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
    let cache = files_cache::cache_path(
        &job.deps.staging.cache_dir(),
        job.tenant.as_str(),
        job.source.as_str(),
    );
    let root_bytes = root.as_os_str().as_bytes();
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let mut w = Walker {
        job,
        draft: Draft::create(job, "files")?,
        batches: Batches::new(job, runtime, tx),
        digest: SourceDigest::default(),
        previous: Previous::open(&cache, &job.key_id, root_bytes),
        next: Next::create(cache, &job.key_id, root_bytes, started - 1),
        held: Vec::new(),
        held_chunks: 0,
        entries: 0,
        files: 0,
        bytes_read: 0,
        reused: 0,
    };

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
        if kind.is_symlink() {
            let target = std::fs::read_link(item.path())
                .map_err(|e| source_err(format!("reading link {}: {e}", item.path().display())))?;
            entry.kind = EntryKind::Symlink;
            entry.target = Some(target.as_os_str().as_bytes().to_vec());
        } else if kind.is_file() {
            entry.kind = EntryKind::File;
            let stat = Stat::of(&meta);
            if let Some(cached) = w.previous.unchanged(&entry.path, &stat) {
                entry.size = stat.size;
                entry.chunks = cached
                    .chunks
                    .iter()
                    .map(|&(id, raw_length)| ChunkRef {
                        id,
                        raw_length,
                        location: None,
                    })
                    .collect();
                w.hold(Held {
                    entry,
                    content: cached.content,
                    reuse: Some((item.path().to_owned(), stat)),
                })?;
                continue;
            }
            // Entries before this one go first, and must not wait for a read.
            w.settle()?;
            // None: deleted between listing and reading; like every backup tool, skip it.
            if let Some(content) = w.read(&mut entry, item.path(), stat.size)? {
                w.record(entry, content, Some(stat))?;
            }
            continue;
        } else if !kind.is_dir() {
            tracing::warn!(path = %item.path().display(), "Skipping a special file (socket, fifo or device).");
            continue;
        }
        w.hold(Held {
            entry,
            content: [0; 32],
            reuse: None,
        })?;
    }
    w.settle()?;
    let Walker {
        draft,
        batches,
        digest,
        next,
        entries,
        files,
        bytes_read,
        reused,
        ..
    } = w;
    let (batch_count, bytes_new) = batches.finish()?;
    let source_digest = digest.finish();
    let mut draft = draft;
    draft.write(&Record::Footer(Footer {
        entries,
        bytes: bytes_read,
        source_digest: source_digest.clone(),
        packs: vec![],
        tables: vec![],
    }))?;
    draft.commit(job)?;
    next.commit();
    tracing::debug!(
        files,
        reused,
        "Files unchanged since the last extraction were not read."
    );
    Ok(Summary {
        batches: batch_count,
        files,
        bytes_read,
        bytes_new,
        source_digest,
        tables: vec![],
    })
}

impl Walker<'_> {
    fn hold(&mut self, held: Held) -> Result<(), StageError> {
        self.held_chunks += held.entry.chunks.len();
        self.held.push(held);
        if self.held_chunks >= HELD_CHUNKS || self.held.len() >= HELD_CHUNKS {
            self.settle()?;
        }
        Ok(())
    }

    /// Writes the held entries in order. Unchanged files keep their cached
    /// chunks only when the catalog still has every one of them (retention
    /// may have collected them since); otherwise they are read again.
    fn settle(&mut self) -> Result<(), StageError> {
        if self.held.is_empty() {
            return Ok(());
        }
        let ids: Vec<ChunkId> = self
            .held
            .iter()
            .filter(|h| h.reuse.is_some())
            .flat_map(|h| h.entry.chunks.iter().map(|c| c.id))
            .filter(|id| !self.batches.has_seen(id))
            .collect();
        let stored = if ids.is_empty() {
            HashSet::new()
        } else {
            self.batches.runtime().block_on(
                self.job
                    .deps
                    .catalog
                    .existing_chunks(&self.job.tenant, &ids),
            )?
        };
        let held = std::mem::take(&mut self.held);
        self.held_chunks = 0;
        for Held {
            mut entry,
            content,
            reuse,
        } in held
        {
            let Some((path, stat)) = reuse else {
                self.record(entry, content, None)?;
                continue;
            };
            let kept = entry
                .chunks
                .iter()
                .all(|c| stored.contains(&c.id) || self.batches.has_seen(&c.id));
            if kept {
                self.reused += 1;
                self.record(entry, content, Some(stat))?;
                continue;
            }
            entry.chunks.clear();
            entry.size = 0;
            if let Some(content) = self.read(&mut entry, &path, stat.size)? {
                self.record(entry, content, Some(stat))?;
            }
        }
        Ok(())
    }

    /// Reads and chunks a file; `None` when it was deleted meanwhile.
    fn read(
        &mut self,
        entry: &mut Entry,
        path: &Path,
        size: u64,
    ) -> Result<Option<[u8; 32]>, StageError> {
        let file = match File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(source_err(format!("opening {}: {e}", path.display()))),
        };
        chunk_into(
            file,
            entry,
            &mut self.batches,
            &self.job.chunk_key,
            Some(size),
            &|| path.display().to_string(),
        )
        .map(Some)
    }

    /// Puts an entry in the draft, the digest and (files) the next cache.
    fn record(
        &mut self,
        entry: Entry,
        content: [u8; 32],
        stat: Option<Stat>,
    ) -> Result<(), StageError> {
        self.digest.entry(&entry, content);
        if let Some(stat) = stat {
            self.files += 1;
            self.bytes_read += entry.size;
            self.next.add(&CachedFile {
                path: entry.path.clone(),
                // The size read, which a file growing meanwhile makes differ
                // from the stat: then it will not match next time.
                stat: stat.with_size(entry.size),
                content,
                chunks: entry.chunks.iter().map(|c| (c.id, c.raw_length)).collect(),
            });
        }
        self.draft.write(&Record::Entry(entry))?;
        self.entries += 1;
        Ok(())
    }
}
