//! The reader half of a restore: walks the manifest on a blocking thread,
//! checks each entry ([`crate::checks`]) and starts fetching and decrypting
//! the chunks of the selected ones ahead of the writer, within a memory
//! budget.

use crate::checks::{Checks, FORMATS, is_under};
use crate::error::{Error, Result};
use std::collections::HashMap;
use vaultline_format::keys::Keyring;
use vaultline_format::manifest::{Entry, EntryKind, Footer, Header, Record};
use vaultline_format::pack::PackKey;
use vaultline_storage::{ObjectKey, RangeReader, Repository};
use vaultline_types::{Name, SnapshotId};

/// Bytes fetched or decrypted ahead of the writer (each chunk counts as the
/// larger of its sealed and its plain size): the bound on restore's memory,
/// whatever the snapshot's size.
const AHEAD_BYTES: u32 = 32 << 20;
/// Consecutive blobs of a pack are fetched with one ranged GET up to this
/// size (S3 and Garage serve one 8 MiB range far faster than 8 small ones).
const RUN_BYTES: u64 = 8 << 20;
/// When over [`AHEAD_BYTES`], the reader waits until this much is free.
const BUDGET_WAKE: u32 = 4 << 20;
/// The first read of a pack's header: a format 3 header up to its age
/// file's length is 29 bytes (a 16-digit key id), and every pack is longer
/// than this, so the header then takes one more read, as format 2's did.
const FIRST_HEADER_READ: u32 = 32;
/// Items queued between reader and writer (they are small: no chunk data).
pub(crate) const QUEUED_ITEMS: usize = 1024;

/// Every chunk of a run, opened, in order: the writer waits once per run,
/// not once per chunk (for a tree of small files, a thread wake-up per file
/// was a fifth of a restore's time).
pub(crate) type RunResult = tokio::sync::oneshot::Receiver<Vec<Result<Vec<u8>>>>;

/// What the manifest reader hands the writer, in manifest order.
pub(crate) enum Item {
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
    Failed(Error),
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
    keyring: std::sync::Arc<Keyring>,
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
    keyring: &std::sync::Arc<Keyring>,
    keys: &PackKeys,
) -> Result<std::sync::Arc<PackKey>> {
    let cell = keys
        .lock()
        .expect("pack key map poisoned")
        .entry(pack)
        .or_default()
        .clone();
    let read = || async {
        let (key, _) =
            crate::pack_index::pack_key(repo, key, pack, keyring, FIRST_HEADER_READ).await?;
        Ok(std::sync::Arc::new(key))
    };
    cell.get_or_try_init(read).await.cloned()
}

impl Fetcher {
    /// Starts the pending run's fetch, if there is one.
    fn dispatch(&mut self) {
        let Some(run) = self.run.take() else { return };
        let (repo, tenant, keyring, keys, decrypting) = (
            self.repo.clone(),
            self.tenant.clone(),
            self.keyring.clone(),
            self.keys.clone(),
            self.decrypting.clone(),
        );
        self.runtime.spawn(async move {
            let key = ObjectKey::pack(&tenant, &run.pack);
            let length = (run.end - run.start) as u32;
            let fetched = async {
                let pack_key = pack_key(&repo, &key, run.pack, &keyring, &keys).await?;
                let bytes = repo
                    .get_range(&key, run.start, length)
                    .await
                    .map_err(|e| Error::storage(format!("cannot read pack {}", run.pack), e))?;
                Ok::<_, Error>((pack_key, bytes))
            };
            let (pack_key, bytes) = match fetched.await {
                Ok(fetched) => fetched,
                Err(e) => {
                    // The writer stops at the run's first chunk.
                    let _ = run.reply.send(vec![Err(e.restoring(&run.shown))]);
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
                        .map_err(|e| {
                            Error::Damaged(format!(
                                "pack {pack} is damaged (restoring {shown}): {e}"
                            ))
                        })
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

/// What the reader is asked to read.
pub(crate) struct Request {
    pub(crate) repo: Repository,
    pub(crate) tenant: Name,
    pub(crate) snapshot: SnapshotId,
    pub(crate) keyring: Keyring,
    pub(crate) select: Option<Vec<u8>>,
}

/// Walks the manifest (on a blocking thread: it reads, decrypts and
/// decompresses it as a stream, so memory does not grow with the number of
/// entries), queueing each selected entry and its chunks. Stops early when
/// the writer is gone.
pub(crate) fn read_manifest(
    request: Request,
    runtime: tokio::runtime::Handle,
    tx: tokio::sync::mpsc::Sender<Item>,
) {
    let Request {
        repo,
        tenant,
        snapshot,
        keyring,
        select,
    } = request;
    let cores = std::thread::available_parallelism().map_or(2, usize::from);
    let ranges = std::sync::Arc::new(RangeReader::new(repo));
    let mut fetcher = Fetcher {
        repo: ranges.clone(),
        tenant: tenant.clone(),
        keyring: std::sync::Arc::new(keyring.clone()),
        keys: PackKeys::default(),
        runtime: runtime.clone(),
        decrypting: std::sync::Arc::new(tokio::sync::Semaphore::new(cores)),
        budget: std::sync::Arc::new(tokio::sync::Semaphore::new(AHEAD_BYTES as usize)),
        tx,
        run: None,
    };
    let records = crate::listing::open_manifest(ranges, &tenant, &snapshot, &keyring, runtime);
    let records = match records {
        Ok(records) => records,
        Err(e) => {
            fetcher.send(Item::Failed(e));
            return;
        }
    };
    let mut checks = Checks::default();
    let mut links = Links::default();
    for record in records {
        let ok = match record {
            Err(e) => fetcher.fail(e),
            Ok(Record::Header(header)) if !FORMATS.contains(&header.format) => {
                fetcher.fail(Error::Request(format!(
                    "snapshot {snapshot} has manifest format {}, newer than this vaultline reads ({}): upgrade vaultline to restore it",
                    header.format,
                    FORMATS.end()
                )))
            }
            Ok(Record::Header(header)) => fetcher.send(Item::Header(header)),
            Ok(Record::Footer(footer)) => fetcher.send(Item::Footer(footer)),
            Ok(Record::Entry(entry)) => match checks.entry(&entry) {
                Err(e) => fetcher.fail(e),
                Ok(()) => match links.selected(entry, select.as_deref()) {
                    None => true,
                    Some(entry) if entry.kind == EntryKind::File => fetcher.file(entry, &snapshot),
                    Some(entry) => fetcher.send(Item::Entry(entry)),
                },
            },
        };
        if !ok {
            break;
        }
    }
    fetcher.dispatch();
}

impl Fetcher {
    /// Hands the writer the error that ends the restore; the walk stops.
    fn fail(&mut self, error: Error) -> bool {
        self.send(Item::Failed(error));
        false
    }

    /// Queues a file and its chunks.
    fn file(&mut self, entry: Entry, snapshot: &SnapshotId) -> bool {
        let chunks = entry.chunks.clone();
        let shown = String::from_utf8_lossy(&entry.path).into_owned();
        let mut ok = self.send(Item::Entry(entry));
        for chunk in chunks {
            if !ok {
                break;
            }
            let Some(location) = chunk.location else {
                return self.fail(Error::Damaged(format!(
                    "manifest of snapshot {snapshot} lacks a chunk location for {shown}"
                )));
            };
            if location.length.max(chunk.raw_length) > AHEAD_BYTES / 2 {
                return self.fail(Error::Damaged(format!(
                    "manifest of snapshot {snapshot} names a chunk of {} bytes for {shown}, larger than any vaultline writes",
                    location.length.max(chunk.raw_length)
                )));
            }
            ok = self.chunk(chunk.id, location, chunk.raw_length, &shown);
        }
        ok && self.send(Item::EndFile)
    }
}

/// Hard links in a selection: a link whose first name is outside the
/// selection becomes a file with that name's content (its later links then
/// name it), so `--path` of a hard link still restores its bytes.
#[derive(Default)]
struct Links {
    /// Files with several names left out of the selection, by path.
    outside: HashMap<Vec<u8>, Entry>,
    /// First names left out, and the selected name that took their place.
    moved: HashMap<Vec<u8>, Vec<u8>>,
}

impl Links {
    /// The entry as the selection restores it, or `None` when left out.
    fn selected(&mut self, mut entry: Entry, select: Option<&[u8]>) -> Option<Entry> {
        let Some(select) = select else {
            return Some(entry);
        };
        if !(entry.path == select || is_under(&entry.path, select)) {
            if entry.kind == EntryKind::File && entry.nlink > 1 {
                self.outside.insert(entry.path.clone(), entry);
            }
            return None;
        }
        if entry.kind == EntryKind::Hardlink {
            let first = entry.target.clone().unwrap_or_default();
            if let Some(moved) = self.moved.get(&first) {
                entry.target = Some(moved.clone());
            } else if let Some(file) = self.outside.remove(&first) {
                self.moved.insert(first, entry.path.clone());
                return Some(Entry {
                    path: entry.path,
                    ..file
                });
            }
        }
        Some(entry)
    }
}
