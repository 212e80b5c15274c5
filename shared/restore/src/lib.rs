//! vaultline-restore: read a snapshot back with the tenant identity. Works
//! from the repository alone (no catalog, no NATS).
//!
//! One reader walks the manifest and fetches and decrypts chunks ahead; one
//! writer takes them in manifest order and hands them to a [`Sink`]: a
//! directory, a byte stream (stdout, pg_restore, mariadb, a command), or
//! nothing at all (level-2 verification, which only recomputes digests).
//!
//! Never writes outside the target: paths with `..`, absolute paths, and
//! paths through symlinks are refused before anything is written for them.

pub mod programs;

use anyhow::{Context, Result, bail};
use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::File;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use vaultline_format::keys::Identity;
use vaultline_format::manifest::{
    ContentDigest, ContentHash, Entry, EntryKind, Footer, Header, Record, SourceDigest, TableRows,
    open_sealed,
};
use vaultline_format::pack::{Header as PackHeader, PackKey};
use vaultline_storage::{ObjectKey, RangeReader, Repository};
use vaultline_types::{Name, SnapshotId};

/// Where restored bytes go.
pub enum Sink<'a> {
    /// A directory tree (created if missing).
    Dir(&'a Path),
    /// The content of the one selected file, e.g. stdout or a program's stdin.
    Stream(&'a mut (dyn Write + Send)),
    /// Nowhere: every chunk is fetched, decrypted and hashed (level 2).
    Discard,
}

/// What a restore did.
#[derive(Debug, Default)]
pub struct Restored {
    pub entries: u64,
    pub files: u64,
    pub bytes: u64,
    /// The source type recorded in the manifest (`files`, `postgres`, …).
    pub source_kind: String,
    /// Database sources: rows per table at dump time.
    pub tables: Vec<TableRows>,
    /// True when the whole snapshot was read and its source digest matched;
    /// false for a selection (`--path`), where each chunk is still authenticated.
    pub digest_checked: bool,
}

/// Header and footer of a snapshot's manifest (entries are skipped).
///
/// # Errors
/// A wrong identity, a missing or damaged manifest.
pub async fn manifest_summary(
    repo: &Repository,
    tenant: &Name,
    snapshot: &SnapshotId,
    identity: &Identity,
) -> Result<(Header, Footer)> {
    let manifest = fetch_manifest(repo, tenant, snapshot).await?;
    let records = open_sealed(std::io::Cursor::new(manifest), identity)
        .map_err(|e| wrong_key(e, tenant, snapshot))?;
    let (mut header, mut footer) = (None, None);
    for record in records {
        match record.with_context(|| format!("manifest of snapshot {snapshot}"))? {
            Record::Header(h) => header = Some(h),
            Record::Footer(f) => footer = Some(f),
            Record::Entry(_) => {}
        }
    }
    match (header, footer) {
        (Some(h), Some(f)) => Ok((h, f)),
        _ => bail!("manifest of snapshot {snapshot} is truncated"),
    }
}

async fn fetch_manifest(
    repo: &Repository,
    tenant: &Name,
    snapshot: &SnapshotId,
) -> Result<Vec<u8>> {
    repo.get(&ObjectKey::manifest(tenant, snapshot))
        .await
        .with_context(|| format!("cannot read the manifest of snapshot {snapshot}"))
}

/// Restores a directory tree (the whole snapshot, or the entries at and under
/// `select`), then checks a whole tree against the source digest recorded at
/// backup time.
///
/// # Errors
/// A wrong identity, a damaged or missing object, a hostile path, or a disk error.
pub async fn restore_tree(
    repo: &Repository,
    tenant: &Name,
    snapshot: &SnapshotId,
    identity: &Identity,
    target: &Path,
) -> Result<Restored> {
    restore(repo, tenant, snapshot, identity, None, Sink::Dir(target)).await
}

/// Restores `snapshot` of `tenant` into `sink`. `select` limits it to one
/// path and what is under it. A [`Sink::Stream`] takes exactly one file: the
/// selected one, or the only file of a database or command snapshot.
///
/// # Errors
/// A wrong identity, a damaged or missing object, a hostile path, a
/// selection that matches nothing (or several files for a stream), a digest
/// mismatch, or a write error.
pub async fn restore(
    repo: &Repository,
    tenant: &Name,
    snapshot: &SnapshotId,
    identity: &Identity,
    select: Option<&str>,
    mut sink: Sink<'_>,
) -> Result<Restored> {
    let manifest = fetch_manifest(repo, tenant, snapshot).await?;
    // Opening checks the key, before anything is written.
    let records = open_sealed(std::io::Cursor::new(manifest), identity)
        .map_err(|e| wrong_key(e, tenant, snapshot))?;
    let select: Option<Vec<u8>> = match select {
        Some(path) => {
            let trimmed = path.trim_matches('/');
            if trimmed.is_empty() {
                None
            } else {
                Some(trimmed.as_bytes().to_vec())
            }
        }
        None => None,
    };
    let target = match &sink {
        Sink::Dir(target) => {
            std::fs::create_dir_all(target)
                .with_context(|| format!("cannot create {}", target.display()))?;
            Some(target.canonicalize()?)
        }
        _ => None,
    };

    // The reader walks the manifest and starts fetching and decrypting each
    // chunk as a task; the writer below takes them in manifest order. The
    // channel bounds how far the reader runs ahead (memory: IN_FLIGHT chunks).
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Item>(QUEUED_ITEMS);
    let reader = {
        let (repo, tenant, snapshot, identity, select) = (
            repo.clone(),
            tenant.clone(),
            snapshot.clone(),
            identity.clone(),
            select.clone(),
        );
        let runtime = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            read_manifest(
                records, repo, tenant, snapshot, identity, select, runtime, tx,
            )
        })
    };

    let mut digest = SourceDigest::default();
    // Set from the header, which comes first.
    let mut content_hash = ContentHash::default();
    let mut done = Restored::default();
    let mut dir_times = Vec::new();
    // Directories this restore made or found to be real directories: the
    // files in them need no parent checks of their own (a tree of small
    // files spent more time in those lookups than in writing).
    let mut known_dirs: HashSet<PathBuf> = HashSet::new();
    let mut footer = None;
    let mut open: Option<OpenFile> = None;
    // The opened chunks of the current run, taken in order.
    let mut opened = Vec::new().into_iter();
    while let Some(item) = rx.recv().await {
        match item {
            Item::Failed(error) => return Err(error),
            Item::Header(header) => {
                if &header.tenant != tenant || &header.snapshot != snapshot {
                    bail!(
                        "manifest of snapshot {snapshot} names another snapshot ({}/{})",
                        header.tenant,
                        header.snapshot
                    );
                }
                if matches!(sink, Sink::Stream(_))
                    && header.source_kind == "files"
                    && select.is_none()
                {
                    bail!(
                        "snapshot {snapshot} is a file tree: restore it to a directory, or stream one file with --path"
                    );
                }
                done.source_kind = header.source_kind;
                content_hash = header.content_hash;
            }
            Item::Footer(f) => footer = Some(f),
            Item::Chunk {
                run,
                raw_length,
                budget,
            } => {
                let file = open.as_mut().context("a chunk outside a file")?;
                if let Some(run) = run {
                    opened = run.await.context("a chunk task died")?.into_iter();
                }
                let plain = opened.next().context("a run returned too few chunks")??;
                if plain.len() != raw_length as usize {
                    bail!(
                        "a pack returned a chunk of the wrong size for {}",
                        file.shown
                    );
                }
                file.hasher.update(&plain);
                let written = match (&mut file.out, &mut sink) {
                    (Some(out), _) => out.write_all(&plain),
                    (None, Sink::Stream(out)) => out.write_all(&plain),
                    (None, _) => Ok(()),
                };
                written.with_context(|| format!("cannot write {}", file.shown))?;
                // Written: its share of the read-ahead budget goes back.
                drop(budget);
            }
            Item::EndFile => {
                let OpenFile {
                    entry,
                    path,
                    out,
                    partial,
                    hasher,
                    shown,
                } = open.take().context("a file end without a file")?;
                if let (Some(out), Some(path), Some(partial)) = (out, path, partial) {
                    // Through the open handle: no path lookups per file.
                    use std::os::unix::fs::PermissionsExt;
                    out.set_permissions(std::fs::Permissions::from_mode(entry.mode))
                        .with_context(|| format!("cannot set the mode of {shown}"))?;
                    let mtime = filetime::FileTime::from_unix_time(entry.mtime, entry.mtime_nanos);
                    filetime::set_file_handle_times(&out, None, Some(mtime))
                        .with_context(|| format!("cannot set the times of {shown}"))?;
                    drop(out);
                    // Complete and correct: only now does it get its name.
                    partial.commit(&path)?;
                }
                digest.entry(&entry, hasher.finish());
                done.files += 1;
                done.bytes += entry.size;
                done.entries += 1;
            }
            Item::Entry(entry) => {
                let shown = String::from_utf8_lossy(&entry.path).into_owned();
                let Some(target) = &target else {
                    // A stream or nothing: only file content matters.
                    if entry.kind == EntryKind::File {
                        if matches!(sink, Sink::Stream(_)) && done.files > 0 {
                            bail!(
                                "more than one file matches in snapshot {snapshot}: pick one with --path"
                            );
                        }
                        open = Some(OpenFile {
                            entry,
                            path: None,
                            out: None,
                            partial: None,
                            hasher: ContentDigest::new(content_hash),
                            shown,
                        });
                    } else {
                        digest.entry(&entry, [0u8; 32]);
                        done.entries += 1;
                    }
                    continue;
                };
                let path = safe_join(target, &entry.path, &known_dirs)?;
                match entry.kind {
                    EntryKind::Dir => {
                        std::fs::create_dir_all(&path)
                            .with_context(|| format!("cannot create {}", path.display()))?;
                        // A symlink already there would take the mode, and
                        // the files below, outside the target.
                        if !std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
                            bail!(
                                "refusing to restore {shown:?}: a symlink or a file is in the way"
                            );
                        }
                        set_mode(&path, entry.mode)?;
                        dir_times.push((path.clone(), entry.mtime, entry.mtime_nanos));
                        known_dirs.insert(path);
                    }
                    EntryKind::Symlink => {
                        let link_target = entry.target.as_deref().unwrap_or_default();
                        remove_existing(&path)?;
                        std::os::unix::fs::symlink(OsStr::from_bytes(link_target), &path)
                            .with_context(|| format!("cannot create symlink {}", path.display()))?;
                        let mtime =
                            filetime::FileTime::from_unix_time(entry.mtime, entry.mtime_nanos);
                        filetime::set_symlink_file_times(&path, mtime, mtime)?;
                    }
                    EntryKind::File => {
                        if let Some(parent) = path.parent()
                            && !known_dirs.contains(parent)
                        {
                            // A selected file's parents are not in the selection.
                            std::fs::create_dir_all(parent)
                                .with_context(|| format!("cannot create {}", parent.display()))?;
                            known_dirs.insert(parent.to_owned());
                        }
                        // Written under a hidden name first, so a restore that
                        // fails midway leaves no truncated file that looks
                        // whole; the rename then replaces what was there.
                        // Unbuffered: chunks arrive whole, most small files
                        // in one, so a buffer would only add a copy (and a
                        // large allocation per file).
                        let partial = partial_path(&path);
                        let out = create_new(&partial)?;
                        open = Some(OpenFile {
                            entry,
                            path: Some(path),
                            out: Some(out),
                            partial: Some(PartialFile(Some(partial))),
                            hasher: ContentDigest::new(content_hash),
                            shown,
                        });
                        continue;
                    }
                }
                digest.entry(&entry, [0u8; 32]);
                done.entries += 1;
            }
        }
    }
    reader.await.context("the manifest reader died")?;
    if let Sink::Stream(out) = &mut sink {
        out.flush().context("cannot write the restored stream")?;
    }
    for (path, secs, nanos) in dir_times.into_iter().rev() {
        filetime::set_file_mtime(&path, filetime::FileTime::from_unix_time(secs, nanos))?;
    }
    let Some(footer) = footer else {
        bail!("manifest of snapshot {snapshot} is truncated (no footer)");
    };
    done.tables = footer.tables;
    if let Some(select) = &select {
        if done.entries == 0 {
            bail!(
                "snapshot {snapshot} has no entry {:?}",
                String::from_utf8_lossy(select)
            );
        }
        return Ok(done);
    }
    if footer.source_digest != digest.finish() {
        bail!(
            "restored data does not match the digest recorded at backup time (snapshot {snapshot})"
        );
    }
    done.digest_checked = true;
    Ok(done)
}

/// Bytes fetched or decrypted ahead of the writer (each chunk counts as the
/// larger of its sealed and its plain size): the bound on restore's memory,
/// whatever the snapshot's size.
const AHEAD_BYTES: u32 = 32 << 20;
/// Consecutive blobs of a pack are fetched with one ranged GET up to this
/// size (S3 and Garage serve one 8 MiB range far faster than 8 small ones).
const RUN_BYTES: u64 = 8 << 20;
/// When over [`AHEAD_BYTES`], the reader waits until this much is free.
const BUDGET_WAKE: u32 = 4 << 20;
/// Items queued between reader and writer (they are small: no chunk data).
const QUEUED_ITEMS: usize = 1024;

/// Every chunk of a run, opened, in order: the writer waits once per run,
/// not once per chunk (for a tree of small files, a thread wake-up per file
/// was a fifth of a restore's time).
type RunResult = tokio::sync::oneshot::Receiver<Vec<Result<Vec<u8>>>>;

/// What the manifest reader hands the writer, in manifest order.
enum Item {
    Header(Header),
    /// A directory, a symlink, or the start of a file (its chunks follow, then `EndFile`).
    Entry(Entry),
    Chunk {
        /// Set on the first chunk of each run: the run's opened chunks.
        run: Option<RunResult>,
        raw_length: u32,
        /// This chunk's share of [`AHEAD_BYTES`], held until it is written.
        budget: tokio::sync::OwnedSemaphorePermit,
    },
    EndFile,
    Footer(Footer),
    Failed(anyhow::Error),
}

struct OpenFile {
    entry: Entry,
    /// Where it is written, for a directory sink.
    path: Option<PathBuf>,
    out: Option<File>,
    partial: Option<PartialFile>,
    hasher: ContentDigest,
    shown: String,
}

/// A file being written under its hidden name; removed if the restore stops
/// before [`PartialFile::commit`].
struct PartialFile(Option<PathBuf>);

impl PartialFile {
    fn commit(mut self, to: &Path) -> Result<()> {
        let partial = self.0.take().expect("committed once");
        std::fs::rename(&partial, to).map_err(|e| {
            let _ = std::fs::remove_file(&partial);
            if to.is_dir() {
                anyhow::anyhow!("cannot restore {}: a directory is in the way", to.display())
            } else {
                anyhow::Error::new(e).context(format!(
                    "cannot rename {} to {}",
                    partial.display(),
                    to.display()
                ))
            }
        })
    }
}

impl Drop for PartialFile {
    fn drop(&mut self) {
        if let Some(partial) = self.0.take() {
            let _ = std::fs::remove_file(partial);
        }
    }
}

fn wrong_key(e: vaultline_format::Error, tenant: &Name, snapshot: &SnapshotId) -> anyhow::Error {
    match e {
        vaultline_format::Error::WrongKey => anyhow::anyhow!(
            "the identity given does not match the key snapshot {snapshot} of tenant {tenant} was encrypted to"
        ),
        other => anyhow::anyhow!("manifest of snapshot {snapshot}: {other}"),
    }
}

/// Consecutive blobs of one pack, fetched with one ranged read and opened on
/// one blocking thread (runs go in parallel); the opened chunks go to the
/// writer together.
struct Run {
    pack: vaultline_types::PackId,
    start: u64,
    end: u64,
    shown: String,
    /// Each blob's chunk, offset and length in the pack.
    chunks: Vec<(vaultline_types::ChunkId, u64, u32)>,
    reply: tokio::sync::oneshot::Sender<Vec<Result<Vec<u8>>>>,
}

/// Each pack's key, read from its header once per restore.
type PackKeys = std::sync::Arc<
    std::sync::Mutex<
        std::collections::HashMap<
            vaultline_types::PackId,
            std::sync::Arc<tokio::sync::OnceCell<std::sync::Arc<PackKey>>>,
        >,
    >,
>;

/// What the reader shares with the tasks it starts.
struct Fetcher {
    repo: std::sync::Arc<RangeReader>,
    tenant: Name,
    identity: std::sync::Arc<Identity>,
    keys: PackKeys,
    runtime: tokio::runtime::Handle,
    /// Runs are decrypted on as many blocking threads as there are cores:
    /// more threads only add allocator arenas (memory), not speed.
    decrypting: std::sync::Arc<tokio::sync::Semaphore>,
    /// The read-ahead budget.
    budget: std::sync::Arc<tokio::sync::Semaphore>,
    tx: tokio::sync::mpsc::Sender<Item>,
    run: Option<Run>,
}

/// The key of `pack`: its header is read (two small ranged reads) and opened
/// the first time one of its blobs is needed.
async fn pack_key(
    repo: &RangeReader,
    key: &str,
    pack: vaultline_types::PackId,
    identity: &std::sync::Arc<Identity>,
    keys: &PackKeys,
) -> Result<std::sync::Arc<PackKey>> {
    let cell = keys
        .lock()
        .expect("pack key map poisoned")
        .entry(pack)
        .or_default()
        .clone();
    let read = || async {
        let mut want = 12;
        loop {
            let prefix = repo
                .get_range(key, 0, want)
                .await
                .map_err(|e| anyhow::anyhow!("cannot read pack {pack}: {e}"))?;
            match PackKey::read(&prefix, identity) {
                Ok(PackHeader::Key(key, _)) => return Ok(std::sync::Arc::new(key)),
                Ok(PackHeader::NeedBytes(n)) if (n as u32) > want && n <= 1 << 20 => {
                    want = n as u32
                }
                Ok(PackHeader::NeedBytes(n)) => {
                    anyhow::bail!("pack {pack} is damaged: a header of {n} bytes")
                }
                Err(vaultline_format::Error::WrongKey) => anyhow::bail!(
                    "the identity given does not match the key pack {pack} was encrypted to"
                ),
                Err(e) => anyhow::bail!("pack {pack} is damaged: {e}"),
            }
        }
    };
    cell.get_or_try_init(read).await.cloned()
}

impl Fetcher {
    /// Starts the pending run's fetch, if there is one.
    fn dispatch(&mut self) {
        let Some(run) = self.run.take() else { return };
        let (repo, tenant, identity, keys, decrypting) = (
            self.repo.clone(),
            self.tenant.clone(),
            self.identity.clone(),
            self.keys.clone(),
            self.decrypting.clone(),
        );
        self.runtime.spawn(async move {
            let key = ObjectKey::pack(&tenant, &run.pack);
            let length = (run.end - run.start) as u32;
            let fetched = async {
                let pack_key = pack_key(&repo, &key, run.pack, &identity, &keys).await?;
                let bytes = repo
                    .get_range(&key, run.start, length)
                    .await
                    .map_err(|e| anyhow::anyhow!("cannot read pack {}: {e}", run.pack))?;
                anyhow::Ok((pack_key, bytes))
            };
            let (pack_key, bytes) = match fetched.await {
                Ok(fetched) => fetched,
                Err(e) => {
                    // The writer stops at the run's first chunk.
                    let e = anyhow::anyhow!("{e:#} (restoring {})", run.shown);
                    let _ = run.reply.send(vec![Err(e)]);
                    return;
                }
            };
            let Ok(_permit) = decrypting.acquire_owned().await else {
                return;
            };
            // One blocking task per run: a run of many small blobs would
            // otherwise pay a task hand-off per blob.
            let (pack, start, shown) = (run.pack, run.start, run.shown);
            let _ = tokio::task::spawn_blocking(move || {
                let opened = run.chunks.into_iter().map(|(id, offset, length)| {
                    let at = (offset - start) as usize;
                    pack_key
                        .open(&id, &bytes[at..at + length as usize])
                        .with_context(|| format!("pack {pack} is damaged (restoring {shown})"))
                });
                let _ = run.reply.send(opened.collect());
            })
            .await;
        });
    }

    /// Sends an item; if the queue is full, the pending run is started first,
    /// so the writer never waits on a run the blocked reader holds back.
    fn send(&mut self, item: Item) -> bool {
        match self.tx.try_send(item) {
            Ok(()) => true,
            Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => false,
            Err(tokio::sync::mpsc::error::TrySendError::Full(item)) => {
                self.dispatch();
                if self.tx.blocking_send(item).is_err() {
                    return false;
                }
                // The writer is behind. Go on once it has taken half the
                // queue: going on at every free slot started a run (a read
                // and a decryption task) for each small file.
                self.runtime
                    .block_on(self.tx.reserve_many(QUEUED_ITEMS / 2))
                    .is_ok()
            }
        }
    }

    /// Queues one chunk: joins the pending run when it continues it, else
    /// starts that run and begins a new one.
    fn chunk(
        &mut self,
        id: vaultline_types::ChunkId,
        location: vaultline_format::manifest::Location,
        raw_length: u32,
        shown: &str,
    ) -> bool {
        // Compressible chunks grow when opened: count whichever is larger.
        let cost = location.length.max(raw_length);
        let budget = match self.budget.clone().try_acquire_many_owned(cost) {
            Ok(permit) => permit,
            Err(_) => {
                // Over budget: start what is pending, then wait for the writer
                // to free a few MiB at once: waking for every small chunk it
                // writes would cost a thread switch per chunk.
                self.dispatch();
                let budget = self.budget.clone();
                let wanted = cost.max(BUDGET_WAKE);
                match self.runtime.block_on(budget.acquire_many_owned(wanted)) {
                    Ok(mut permit) => {
                        let taken = permit.split(cost as usize).expect("cost <= wanted");
                        // The rest goes back at once, for the chunks that follow.
                        drop(permit);
                        taken
                    }
                    Err(_) => return false,
                }
            }
        };
        let continues = self.run.as_ref().is_some_and(|run| {
            run.pack == location.pack
                && run.end == location.offset
                && run.end - run.start + u64::from(location.length) <= RUN_BYTES
        });
        let mut first = None;
        if !continues {
            self.dispatch();
            let (reply, opened) = tokio::sync::oneshot::channel();
            first = Some(opened);
            self.run = Some(Run {
                pack: location.pack,
                start: location.offset,
                end: location.offset,
                shown: shown.to_owned(),
                chunks: Vec::new(),
                reply,
            });
        }
        let run = self.run.as_mut().expect("set above");
        run.end += u64::from(location.length);
        run.chunks.push((id, location.offset, location.length));
        self.send(Item::Chunk {
            run: first,
            raw_length,
            budget,
        })
    }
}

/// Walks the manifest (on a blocking thread: it decrypts and decompresses),
/// queueing each selected entry and its chunks. Stops early when the writer
/// is gone.
#[allow(clippy::too_many_arguments)]
fn read_manifest(
    records: impl Iterator<Item = vaultline_format::Result<Record>>,
    repo: Repository,
    tenant: Name,
    snapshot: SnapshotId,
    identity: Identity,
    select: Option<Vec<u8>>,
    runtime: tokio::runtime::Handle,
    tx: tokio::sync::mpsc::Sender<Item>,
) {
    let cores = std::thread::available_parallelism().map_or(2, usize::from);
    let mut fetcher = Fetcher {
        repo: std::sync::Arc::new(RangeReader::new(repo)),
        tenant,
        identity: std::sync::Arc::new(identity),
        keys: PackKeys::default(),
        runtime,
        decrypting: std::sync::Arc::new(tokio::sync::Semaphore::new(cores)),
        budget: std::sync::Arc::new(tokio::sync::Semaphore::new(AHEAD_BYTES as usize)),
        tx,
        run: None,
    };
    for record in records {
        let ok = match record {
            Err(e) => fetcher.send(Item::Failed(
                anyhow::Error::new(e).context(format!("manifest of snapshot {snapshot}")),
            )),
            Ok(Record::Header(header)) => fetcher.send(Item::Header(header)),
            Ok(Record::Footer(footer)) => fetcher.send(Item::Footer(footer)),
            Ok(Record::Entry(entry)) if !selected(&entry.path, select.as_deref()) => true,
            Ok(Record::Entry(entry)) if entry.kind == EntryKind::File => {
                let chunks = entry.chunks.clone();
                let shown = String::from_utf8_lossy(&entry.path).into_owned();
                let mut ok = fetcher.send(Item::Entry(entry));
                for chunk in chunks {
                    if !ok {
                        break;
                    }
                    let Some(location) = chunk.location else {
                        ok = fetcher.send(Item::Failed(anyhow::anyhow!(
                            "manifest of snapshot {snapshot} lacks a chunk location for {shown}"
                        )));
                        break;
                    };
                    if location.length.max(chunk.raw_length) > AHEAD_BYTES / 2 {
                        ok = fetcher.send(Item::Failed(anyhow::anyhow!(
                            "manifest of snapshot {snapshot} names a chunk of {} bytes for {shown}, larger than any vaultline writes",
                            location.length.max(chunk.raw_length)
                        )));
                        break;
                    }
                    ok = fetcher.chunk(chunk.id, location, chunk.raw_length, &shown);
                }
                ok && fetcher.send(Item::EndFile)
            }
            Ok(Record::Entry(entry)) => fetcher.send(Item::Entry(entry)),
        };
        if !ok {
            break;
        }
    }
    fetcher.dispatch();
}

/// `dir/.name.vaultline-partial`: where a file is written until it is whole.
fn partial_path(path: &Path) -> PathBuf {
    let mut name = std::ffi::OsString::from(".");
    name.push(path.file_name().unwrap_or_default());
    name.push(".vaultline-partial");
    path.with_file_name(name)
}

/// The entry at `select` and everything under it (all entries without one).
fn selected(path: &[u8], select: Option<&[u8]>) -> bool {
    match select {
        None => true,
        Some(select) => {
            path == select || (path.starts_with(select) && path.get(select.len()) == Some(&b'/'))
        }
    }
}

/// `raw` under `target`, refused when it could land outside: absolute, with
/// `..`, or through a parent that is not a real directory (`known` holds
/// parents already found to be).
fn safe_join(target: &Path, raw: &[u8], known: &HashSet<PathBuf>) -> Result<PathBuf> {
    let relative = Path::new(OsStr::from_bytes(raw));
    let shown = String::from_utf8_lossy(raw);
    if raw.is_empty() || raw.contains(&0) {
        bail!("refusing to restore an entry with an empty or invalid path");
    }
    let mut path = target.to_path_buf();
    let parts: Vec<_> = relative.components().collect();
    for (i, part) in parts.iter().enumerate() {
        match part {
            Component::Normal(name) => {
                path.push(name);
                // Every parent must be a real directory we made, never a symlink.
                if i + 1 < parts.len()
                    && !known.contains(&path)
                    && let Ok(meta) = std::fs::symlink_metadata(&path)
                    && !meta.is_dir()
                {
                    bail!("refusing to restore {shown:?}: a parent is a symlink or a file");
                }
            }
            Component::CurDir => {}
            Component::ParentDir => bail!("refusing to restore {shown:?}: it climbs out with '..'"),
            Component::RootDir | Component::Prefix(_) => {
                bail!("refusing to restore {shown:?}: the path is absolute")
            }
        }
    }
    if path == target {
        bail!("refusing to restore {shown:?}: it names the target itself");
    }
    Ok(path)
}

/// Creates `path` as a new file (never through a symlink), replacing a
/// leftover file there, as from an earlier restore that stopped.
fn create_new(path: &Path) -> Result<File> {
    match File::create_new(path) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            remove_existing(path)?;
            File::create_new(path)
        }
        created => created,
    }
    .with_context(|| format!("cannot create {}", path.display()))
}

fn remove_existing(path: &Path) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => bail!(
            "cannot restore {}: a directory is in the way",
            path.display()
        ),
        Ok(_) => {
            std::fs::remove_file(path).with_context(|| format!("cannot replace {}", path.display()))
        }
        Err(_) => Ok(()),
    }
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot set the mode of {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_paths_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path();
        for bad in ["../x", "a/../../x", "/etc/passwd", "", "."] {
            assert!(
                safe_join(target, bad.as_bytes(), &HashSet::new()).is_err(),
                "{bad:?} must be refused"
            );
        }
        std::os::unix::fs::symlink("/tmp", target.join("link")).unwrap();
        assert!(safe_join(target, b"link/file", &HashSet::new()).is_err());
        assert_eq!(
            safe_join(target, b"a/b c/\xc3\xbc", &HashSet::new()).unwrap(),
            target.join("a/b c/ü")
        );
    }
}
