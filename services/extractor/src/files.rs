//! The tree sources (`files`, and `sftp` for a tree on another host): walked
//! in name order so the same tree always yields the same manifest, files
//! unchanged since the last extraction found in the files cache, the others
//! read and chunked, large ones on reader threads of their own.

use crate::draft::{Batches, Draft, Job, PARALLEL_FROM, Summary, chunk_into};
use crate::extraction::{Totals, finish, on_blocking_thread};
use crate::files_cache::{self, Next, Previous, Stat};
use std::io::Read;
use std::path::{Path, PathBuf};
use tokio::sync::mpsc;
use vaultline_format::chunker::Chunker;
use vaultline_format::manifest::{ChunkRef, Entry, EntryKind, SourceDigest};
use vaultline_runtime::{Cx, Outgoing, StageError};
use waiting::Slot;

mod local;
pub(crate) mod remote;
mod waiting;

pub(crate) use local::extract;

/// Where a tree is read from: this machine's filesystem or an SFTP host.
pub(crate) trait Tree: Sync {
    type File: Read + Send;
    /// Files read at once, each on its own thread (and a second one
    /// cutting its chunks); smaller files are read by the walk itself.
    const READERS: usize;
    /// Files from this size go to the reader threads.
    const PARALLEL_FROM: u64;
    /// What the files cache knows the tree by: another root starts afresh.
    fn root(&self) -> Vec<u8>;
    /// Fails when the root is not a directory, before anything is staged.
    fn check(&self) -> Result<(), StageError>;
    /// Calls `visit` for every entry below the root, in name order, each
    /// directory before what it holds; files carry their stat.
    fn walk(
        &self,
        visit: &mut dyn FnMut(Found) -> Result<(), StageError>,
    ) -> Result<(), StageError>;
    /// Opens a file to read; `None` when it was deleted since it was listed
    /// (like every backup tool, the walk then skips it).
    fn open(&self, path: &Path) -> Result<Option<Self::File>, StageError>;
}

/// One entry of the tree as the walk found it.
pub(crate) struct Found {
    /// Its manifest entry so far: relative path, kind, mode, mtime, owner,
    /// link target, attributes.
    pub(crate) entry: Entry,
    /// Where to open it, for files.
    pub(crate) full: PathBuf,
    /// For files: what the files cache compares.
    pub(crate) stat: Option<Stat>,
}

/// Reads `tree` on a blocking thread; batches flow back to be emitted here.
pub(crate) async fn extract_tree<T: Tree + Send + 'static>(
    job: Job,
    tree: T,
    cx: &Cx,
) -> Result<Summary, StageError> {
    on_blocking_thread(cx, move |runtime, tx| walk(&job, &tree, runtime, tx)).await
}

/// The chunks of unchanged files are confirmed in one catalog query once
/// this many are waiting.
const HELD_CHUNKS: usize = 4096;

/// Entries wait in walk order, for confirmation or for a large file ahead
/// of them being read, taking at most about this much memory; the walk goes
/// on meanwhile, so the small files behind a large one are read (or found
/// unchanged) while it is. 16 MiB holds some 60,000 small files.
const HELD_BYTES: usize = 16 << 20;

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

/// The walk's output side: the entries waiting in order for confirmation or
/// a reader, and what they are recorded into.
struct Walker<'a, 'b, T: Tree> {
    job: &'a Job,
    tree: &'a T,
    batches: &'b Batches<'a>,
    reads: std::sync::mpsc::SyncSender<ReadJob>,
    /// The walk's own chunker, for the files it reads itself.
    chunker: Chunker,
    previous: Previous,
    waiting: std::collections::VecDeque<Slot>,
    /// What the waiting entries take, about ([`Slot::weight`]).
    held_bytes: usize,
    cached_chunks: usize,
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

fn walk<T: Tree>(
    job: &Job,
    tree: &T,
    runtime: &tokio::runtime::Handle,
    tx: mpsc::Sender<Outgoing>,
) -> Result<Summary, StageError> {
    let cache = files_cache::cache_path(
        &job.deps.staging.cache_dir(),
        job.tenant.as_str(),
        job.source.as_str(),
    );
    tree.check()?;
    let root = tree.root();
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let batches = Batches::new(job, runtime, tx);
    let (reads, jobs) = std::sync::mpsc::sync_channel::<ReadJob>(T::READERS);
    let jobs = std::sync::Mutex::new(jobs);
    let recorded = std::thread::scope(|scope| {
        for _ in 0..T::READERS {
            scope.spawn(|| reader(tree, &jobs, &batches, &job.chunk_key));
        }
        let mut w = Walker {
            job,
            tree,
            batches: &batches,
            reads,
            chunker: Chunker::default(),
            previous: Previous::open(&cache, &job.key_id, &root),
            waiting: std::collections::VecDeque::new(),
            held_bytes: 0,
            cached_chunks: 0,
            recorded: Recorded {
                draft: Draft::create(job, "files")?,
                digest: SourceDigest::default(),
                next: Next::create(cache, &job.key_id, &root, started),
                entries: 0,
                files: 0,
                bytes_read: 0,
                reused: 0,
                linked: std::collections::HashSet::new(),
            },
        };
        // Dropping the walker on return (even on an error) closes the
        // readers' queue, so they stop.
        tree.walk(&mut |found| w.visit(found))?;
        w.confirm()?;
        w.record_ready(true)?;
        debug_assert!(w.waiting.is_empty());
        Ok::<_, StageError>(w.recorded)
    })?;
    let Recorded {
        draft,
        digest,
        next,
        entries,
        files,
        bytes_read,
        reused,
        ..
    } = recorded;
    let totals = Totals {
        entries,
        files,
        bytes_read,
        digest,
        tables: vec![],
    };
    let summary = finish(job, draft, batches, totals)?;
    next.commit();
    tracing::debug!(
        files,
        reused,
        "Files unchanged since the last extraction were not read."
    );
    Ok(summary)
}

/// A reader thread: reads and chunks the files it is given, new chunks into
/// the shared batches, until the walk closes its queue.
fn reader<T: Tree>(
    tree: &T,
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
        let read = read_file(tree, &path, &mut entry, size, batches, chunker, chunk_key)
            .map(|content| content.map(|content| (entry, content)));
        // The walk may have stopped on an error of its own: nobody to tell.
        let _ = reply.send(read);
    }
}

/// Reads and chunks a file into `entry`; `None` when it was deleted before
/// it could be opened.
fn read_file<T: Tree>(
    tree: &T,
    path: &Path,
    entry: &mut Entry,
    size: u64,
    batches: &Batches<'_>,
    chunker: &mut Chunker,
    chunk_key: &[u8; 32],
) -> Result<Option<[u8; 32]>, StageError> {
    let Some(file) = tree.open(path)? else {
        return Ok(None);
    };
    chunk_into(
        file,
        entry,
        batches,
        chunker,
        chunk_key,
        Some(size),
        &|| path.display().to_string(),
    )
    .map(Some)
}

impl<T: Tree> Walker<'_, '_, T> {
    /// Records a directory, symlink or special file, or finds a file in the
    /// cache or reads it.
    fn visit(&mut self, found: Found) -> Result<(), StageError> {
        let Found {
            mut entry,
            full,
            stat,
        } = found;
        let Some(stat) = stat.filter(|_| entry.kind == EntryKind::File) else {
            return self.wait(Slot::Done {
                entry,
                content: [0; 32],
                stat: None,
            });
        };
        match self.previous.find(&entry.path) {
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
                self.cached_chunks += entry.chunks.len();
                self.batches.covered(stat.size);
                let content = cached.content;
                self.wait(Slot::Cached {
                    entry,
                    content,
                    path: full,
                    stat,
                })
            }
            changed => {
                if let Some(changed) = changed.filter(|_| stat.size >= PARALLEL_FROM) {
                    // A large file changed in place (a log, a dump, a disk
                    // image) mostly keeps its old chunks: those still stored
                    // are confirmed in one query now, not looked up batch
                    // by batch while it is read.
                    self.batches
                        .confirm_stored(changed.chunks.iter().map(|&(id, _)| id))?;
                }
                match self.read(entry, &full, stat)? {
                    Some(slot) => self.wait(slot),
                    None => Ok(()),
                }
            }
        }
    }
}
