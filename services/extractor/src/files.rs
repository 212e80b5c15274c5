//! The `files` source: a local directory tree, walked in name order so the
//! same tree always yields the same manifest.

use crate::draft::{Batches, Draft, Job, PARALLEL_FROM, Summary, chunk_into, source_err};
use crate::files_cache::{self, CachedFile, Next, Previous, Stat};
use crate::metadata::Recorder;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use tokio::sync::mpsc;
use vaultline_format::chunker::Chunker;
use vaultline_format::manifest::{ChunkRef, Entry, EntryKind, Footer, Record, SourceDigest};
use vaultline_runtime::{Cx, ErrorType, Outgoing, StageError};
use vaultline_types::FilesSource;

/// Reads the tree on a blocking thread; batches flow back to be emitted here.
pub(crate) async fn extract(job: Job, config: FilesSource, cx: &Cx) -> Result<Summary, StageError> {
    let (tx, mut rx) = mpsc::channel::<Outgoing>(2);
    let runtime = tokio::runtime::Handle::current();
    let worker = tokio::task::spawn_blocking(move || walk(&job, &config.path, &runtime, tx));
    while let Some(out) = rx.recv().await {
        // On failure we return, dropping `rx`: the walker's next send fails and it stops.
        cx.emit(out).await?;
    }
    worker.await?
}

/// The chunks of unchanged files are confirmed in one catalog query once
/// this many are waiting.
const HELD_CHUNKS: usize = 4096;

/// Entries wait in walk order, for confirmation or for a large file ahead
/// of them being read, taking at most about this much memory; the walk goes
/// on meanwhile, so the small files behind a large one are read (or found
/// unchanged) while it is. 16 MiB holds some 60,000 small files.
const HELD_BYTES: usize = 16 << 20;

/// Large files read at once, each on its own thread (and a second one
/// cutting its chunks), so that two large files changed since the last
/// backup use both cores. Smaller files are read by the walk itself: handing
/// each to another thread cost more than it saved.
const READERS: usize = 2;

/// What reading one file yields: its entry (chunk list, size) and content
/// digest, or `None` when it was deleted before it could be opened.
type ReadResult = Result<Option<(Entry, [u8; 32])>, StageError>;

/// A file for a reader thread.
struct ReadJob {
    path: PathBuf,
    entry: Entry,
    size: u64,
    reply: std::sync::mpsc::SyncSender<ReadResult>,
}

/// An entry waiting for its place in the draft.
enum Slot {
    /// Ready to record (`stat` for files).
    Done {
        entry: Entry,
        content: [u8; 32],
        stat: Option<Stat>,
    },
    /// Taken from the cache; kept once its chunks are confirmed stored,
    /// read again from `path` otherwise.
    Cached {
        entry: Entry,
        content: [u8; 32],
        path: PathBuf,
        stat: Stat,
    },
    /// Being read by a reader thread.
    Reading {
        result: std::sync::mpsc::Receiver<ReadResult>,
        stat: Stat,
    },
}

impl Slot {
    /// About the memory the slot takes while it waits.
    fn weight(&self) -> usize {
        let (entry, path) = match self {
            Slot::Done { entry, .. } => (Some(entry), None),
            Slot::Cached { entry, path, .. } => (Some(entry), Some(path)),
            Slot::Reading { .. } => (None, None),
        };
        size_of::<Slot>()
            + entry.map_or(0, |e| {
                e.path.len()
                    + e.target.as_ref().map_or(0, Vec::len)
                    + e.chunks.len() * size_of::<ChunkRef>()
                    + e.owner.as_ref().map_or(0, |o| {
                        o.user.as_ref().map_or(0, String::len)
                            + o.group.as_ref().map_or(0, String::len)
                    })
                    + e.xattrs
                        .iter()
                        .map(|x| x.name.len() + x.value.len())
                        .sum::<usize>()
            })
            + path.map_or(0, |p| p.as_os_str().len())
    }
}

/// The walk's output side: the entries waiting in order for confirmation or
/// a reader, and what they are recorded into.
struct Walker<'a, 'b> {
    job: &'a Job,
    batches: &'b Batches<'a>,
    reads: std::sync::mpsc::SyncSender<ReadJob>,
    /// The walk's own chunker, for the files it reads itself.
    chunker: Chunker,
    previous: Previous,
    waiting: std::collections::VecDeque<Slot>,
    /// What the waiting entries take, about ([`Slot::weight`]).
    held_bytes: usize,
    cached_chunks: usize,
    /// Owners, attributes and hard links of the entries walked.
    metadata: Recorder,
    recorded: Recorded,
}

/// Where entries go in walk order: the draft, the digest and the next cache,
/// with the counts for the footer.
struct Recorded {
    draft: Draft,
    digest: SourceDigest,
    next: Next,
    entries: u64,
    files: u64,
    bytes_read: u64,
    reused: u64,
    /// Files with several names recorded: what a hard link may name (a
    /// first name deleted before it was read takes its links with it).
    linked: std::collections::HashSet<Vec<u8>>,
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
        .unwrap_or_default();
    let batches = Batches::new(job, runtime, tx);
    let (reads, jobs) = std::sync::mpsc::sync_channel::<ReadJob>(READERS);
    let jobs = std::sync::Mutex::new(jobs);
    let recorded = std::thread::scope(|scope| {
        for _ in 0..READERS {
            scope.spawn(|| reader(&jobs, &batches, &job.chunk_key));
        }
        let w = Walker {
            job,
            batches: &batches,
            reads,
            chunker: Chunker::default(),
            previous: Previous::open(&cache, &job.key_id, root_bytes),
            waiting: std::collections::VecDeque::new(),
            held_bytes: 0,
            cached_chunks: 0,
            metadata: Recorder::default(),
            recorded: Recorded {
                draft: Draft::create(job, "files")?,
                digest: SourceDigest::default(),
                next: Next::create(cache, &job.key_id, root_bytes, started),
                entries: 0,
                files: 0,
                bytes_read: 0,
                reused: 0,
                linked: std::collections::HashSet::new(),
            },
        };
        walk_tree(w, root)
    })?;
    let Recorded {
        mut draft,
        digest,
        next,
        entries,
        files,
        bytes_read,
        reused,
        ..
    } = recorded;
    let (batch_count, bytes_new) = batches.finish()?;
    let source_digest = digest.finish();
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

/// A reader thread: reads and chunks the files it is given, new chunks into
/// the shared batches, until the walk closes its queue.
fn reader(
    jobs: &std::sync::Mutex<std::sync::mpsc::Receiver<ReadJob>>,
    batches: &Batches<'_>,
    chunk_key: &[u8; 32],
) {
    // Staging commits find the runtime through the thread's context.
    let _runtime = batches.runtime().enter();
    let mut chunker = None;
    loop {
        let next = jobs.lock().unwrap_or_else(|e| e.into_inner()).recv();
        let Ok(ReadJob {
            path,
            mut entry,
            size,
            reply,
        }) = next
        else {
            return;
        };
        let chunker = chunker.get_or_insert_with(Chunker::default);
        let read = read_file(&path, &mut entry, size, batches, chunker, chunk_key)
            .map(|content| content.map(|content| (entry, content)));
        // The walk may have stopped on an error of its own: nobody to tell.
        let _ = reply.send(read);
    }
}

/// Reads and chunks a file into `entry`; `None` when it was deleted before
/// it could be opened (like every backup tool, the walk then skips it).
fn read_file(
    path: &Path,
    entry: &mut Entry,
    size: u64,
    batches: &Batches<'_>,
    chunker: &mut Chunker,
    chunk_key: &[u8; 32],
) -> Result<Option<[u8; 32]>, StageError> {
    match File::open(path) {
        Ok(file) => chunk_into(
            file,
            entry,
            batches,
            chunker,
            chunk_key,
            Some(size),
            &|| path.display().to_string(),
        )
        .map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(source_err(format!("opening {}: {e}", path.display()))),
    }
}

/// Walks the tree and records every entry; dropping the walker on return
/// (even on an error) closes the readers' queue, so they stop.
fn walk_tree(mut w: Walker<'_, '_>, root: &Path) -> Result<Recorded, StageError> {
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
            ..Entry::default()
        };
        w.metadata.record(&mut entry, item.path(), &meta);
        if kind.is_symlink() {
            let target = std::fs::read_link(item.path())
                .map_err(|e| source_err(format!("reading link {}: {e}", item.path().display())))?;
            entry.kind = EntryKind::Symlink;
            entry.target = Some(target.as_os_str().as_bytes().to_vec());
        } else if kind.is_file() && entry.kind != EntryKind::Hardlink {
            entry.kind = EntryKind::File;
            let stat = Stat::of(&meta);
            match w.previous.find(&entry.path) {
                Some(cached) if cached.stat == stat => {
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
                    w.cached_chunks += entry.chunks.len();
                    let content = cached.content;
                    w.wait(Slot::Cached {
                        entry,
                        content,
                        path: item.path().to_owned(),
                        stat,
                    })?;
                }
                changed => {
                    if let Some(changed) = changed.filter(|_| stat.size >= PARALLEL_FROM) {
                        // A large file changed in place (a log, a dump, a
                        // disk image) mostly keeps its old chunks: those
                        // still stored are confirmed in one query now, not
                        // looked up batch by batch while it is read.
                        w.batches
                            .confirm_stored(changed.chunks.iter().map(|&(id, _)| id))?;
                    }
                    if let Some(slot) = w.read(entry, item.path(), stat)? {
                        w.wait(slot)?;
                    }
                }
            }
            continue;
        }
        w.wait(Slot::Done {
            entry,
            content: [0; 32],
            stat: None,
        })?;
    }
    w.confirm()?;
    w.record_ready(true)?;
    debug_assert!(w.waiting.is_empty());
    if w.metadata.sockets > 0 {
        tracing::info!(
            sockets = w.metadata.sockets,
            "Sockets are recorded but never restored."
        );
    }
    if w.metadata.xattrs_cut > 0 {
        tracing::warn!(
            entries = w.metadata.xattrs_cut,
            "Some entries kept only part of their extended attributes (over the size limit)."
        );
    }
    Ok(w.recorded)
}

impl Walker<'_, '_> {
    /// Queues an entry behind the others and records what is ready.
    fn wait(&mut self, slot: Slot) -> Result<(), StageError> {
        self.held_bytes += slot.weight();
        self.waiting.push_back(slot);
        if self.cached_chunks >= HELD_CHUNKS {
            self.confirm()?;
        }
        if self.held_bytes >= HELD_BYTES {
            self.confirm()?;
            // Bounded: wait for the reads at the front rather than queue more.
            self.record_ready(true)?;
        }
        self.record_ready(false)
    }

    /// Reads a small file now, or hands a large one to a reader thread
    /// (waiting while both are busy); `None` when the file was deleted.
    fn read(
        &mut self,
        mut entry: Entry,
        path: &Path,
        stat: Stat,
    ) -> Result<Option<Slot>, StageError> {
        if stat.size < PARALLEL_FROM {
            let read = read_file(
                path,
                &mut entry,
                stat.size,
                self.batches,
                &mut self.chunker,
                &self.job.chunk_key,
            )?;
            return Ok(read.map(|content| Slot::Done {
                entry,
                content,
                stat: Some(stat),
            }));
        }
        let (reply, result) = std::sync::mpsc::sync_channel(1);
        self.reads
            .send(ReadJob {
                path: path.to_owned(),
                entry,
                size: stat.size,
                reply,
            })
            .map_err(|_| StageError::transient(ErrorType::Internal, "the file readers stopped"))?;
        Ok(Some(Slot::Reading { result, stat }))
    }

    /// Unchanged files keep their cached chunks only when the catalog still
    /// has every one of them (retention may have collected them since);
    /// otherwise they are read again.
    fn confirm(&mut self) -> Result<(), StageError> {
        self.cached_chunks = 0;
        // Chunks this extraction already handed on need no lookup.
        let unseen = self.batches.unseen(
            self.waiting
                .iter()
                .flat_map(|slot| match slot {
                    Slot::Cached { entry, .. } => entry.chunks.as_slice(),
                    _ => &[],
                })
                .map(|c| c.id),
        );
        let stored = self
            .batches
            .stored(&unseen.iter().copied().collect::<Vec<_>>())?;
        for slot in std::mem::take(&mut self.waiting) {
            let Slot::Cached {
                mut entry,
                content,
                path,
                stat,
            } = slot
            else {
                self.waiting.push_back(slot);
                continue;
            };
            let kept = entry
                .chunks
                .iter()
                .all(|c| !unseen.contains(&c.id) || stored.contains(&c.id));
            if kept {
                self.recorded.reused += 1;
                self.waiting.push_back(Slot::Done {
                    entry,
                    content,
                    stat: Some(stat),
                });
            } else {
                entry.chunks.clear();
                entry.size = 0;
                if let Some(slot) = self.read(entry, &path, stat)? {
                    self.waiting.push_back(slot);
                }
            }
        }
        self.held_bytes = self.waiting.iter().map(Slot::weight).sum();
        Ok(())
    }

    /// Records the entries at the front that are ready, in walk order; with
    /// `block`, waits for reads in progress too (not for confirmation).
    fn record_ready(&mut self, block: bool) -> Result<(), StageError> {
        loop {
            // A read's result; `None` when its reader died without one.
            let read = match self.waiting.front() {
                None | Some(Slot::Cached { .. }) => return Ok(()),
                Some(Slot::Done { .. }) => None,
                Some(Slot::Reading { result, .. }) if block => Some(result.recv().ok()),
                Some(Slot::Reading { result, .. }) => match result.try_recv() {
                    Err(std::sync::mpsc::TryRecvError::Empty) => return Ok(()),
                    read => Some(read.ok()),
                },
            };
            let front = self.waiting.pop_front().expect("the front entry");
            self.held_bytes -= front.weight();
            match front {
                Slot::Done {
                    entry,
                    content,
                    stat,
                } => self.recorded.record(entry, content, stat)?,
                Slot::Reading { stat, .. } => {
                    let read = read.flatten().ok_or_else(|| {
                        StageError::transient(
                            ErrorType::Internal,
                            "a file reader stopped without an answer",
                        )
                    })??;
                    if let Some((entry, content)) = read {
                        self.recorded.record(entry, content, Some(stat))?;
                    }
                }
                Slot::Cached { .. } => unreachable!("returned above"),
            }
        }
    }
}

impl Recorded {
    /// Puts an entry in the draft, the digest and (files) the next cache.
    fn record(
        &mut self,
        entry: Entry,
        content: [u8; 32],
        stat: Option<Stat>,
    ) -> Result<(), StageError> {
        if entry.kind == EntryKind::Hardlink
            && !entry
                .target
                .as_ref()
                .is_some_and(|first| self.linked.contains(first))
        {
            // Its first name vanished before it could be read.
            return Ok(());
        }
        if entry.nlink > 1 {
            self.linked.insert(entry.path.clone());
        }
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
