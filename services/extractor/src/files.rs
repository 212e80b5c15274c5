//! The `files` source: a local directory tree, walked in name order so the
//! same tree always yields the same manifest.

use crate::draft::{Batches, Draft, Job, PARALLEL_FROM, Summary, chunk_into, source_err};
use crate::extraction::{Totals, finish, on_blocking_thread};
use crate::files_cache::{self, Next, Previous, Stat};
use crate::metadata::Recorder;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use tokio::sync::mpsc;
use vaultline_format::chunker::Chunker;
use vaultline_format::manifest::{ChunkRef, Entry, EntryKind, SourceDigest};
use vaultline_runtime::{Cx, Outgoing, StageError};
use vaultline_types::FilesSource;
use waiting::Slot;

mod waiting;

/// Reads the tree on a blocking thread; batches flow back to be emitted here.
pub(crate) async fn extract(job: Job, config: FilesSource, cx: &Cx) -> Result<Summary, StageError> {
    on_blocking_thread(cx, move |runtime, tx| walk(&job, &config.path, runtime, tx)).await
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
