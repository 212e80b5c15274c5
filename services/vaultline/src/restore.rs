//! Restore: read a manifest with the tenant identity and rebuild the tree.
//! Works from the repository alone (no catalog, no NATS). Never writes outside
//! the target: paths with `..`, absolute paths, and paths through symlinks are
//! refused before anything is written for them.

use anyhow::{Context, Result, bail};
use std::ffi::OsStr;
use std::fs::File;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use vaultline_format::keys::Identity;
use vaultline_format::manifest::{
    ContentDigest, Entry, EntryKind, Header, Record, SourceDigest, open_sealed,
};
use vaultline_storage::{ObjectKey, Repository};
use vaultline_types::{Name, SnapshotId};

/// What a restore did.
#[derive(Debug, Default)]
pub struct Restored {
    pub entries: u64,
    pub files: u64,
    pub bytes: u64,
}

/// Restores `snapshot` of `tenant` into `target`, then checks the rebuilt tree
/// against the source digest recorded at backup time.
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
    let manifest = repo
        .get(&ObjectKey::manifest(tenant, snapshot))
        .await
        .with_context(|| format!("cannot read the manifest of snapshot {snapshot}"))?;
    // Opening checks the key, before anything is written.
    let records = open_sealed(std::io::Cursor::new(manifest), identity)
        .map_err(|e| wrong_key(e, tenant, snapshot))?;
    std::fs::create_dir_all(target)
        .with_context(|| format!("cannot create {}", target.display()))?;
    let target = target.canonicalize()?;

    // The reader walks the manifest and starts fetching and decrypting each
    // chunk as a task; the writer below takes them in manifest order. The
    // channel bounds how far the reader runs ahead (memory: IN_FLIGHT chunks).
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Item>(IN_FLIGHT);
    let reader = {
        let (repo, tenant, snapshot, identity) = (
            repo.clone(),
            tenant.clone(),
            snapshot.clone(),
            identity.clone(),
        );
        let runtime = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            read_manifest(records, repo, tenant, snapshot, identity, runtime, tx)
        })
    };

    let mut digest = SourceDigest::default();
    let mut done = Restored::default();
    let mut dir_times = Vec::new();
    let mut expected_digest = None;
    let mut open: Option<OpenFile> = None;
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
            }
            Item::Footer(source_digest) => expected_digest = Some(source_digest),
            Item::Chunk { plain, raw_length } => {
                let file = open.as_mut().context("a chunk outside a file")?;
                let plain = plain.await.context("a chunk task died")??;
                if plain.len() != raw_length as usize {
                    bail!(
                        "a pack returned a chunk of the wrong size for {}",
                        file.path.display()
                    );
                }
                file.hasher.update(&plain);
                file.out
                    .write_all(&plain)
                    .with_context(|| format!("cannot write {}", file.path.display()))?;
            }
            Item::EndFile => {
                let OpenFile {
                    entry,
                    path,
                    out,
                    hasher,
                } = open.take().context("a file end without a file")?;
                out.into_inner()
                    .map_err(|e| e.into_error())
                    .with_context(|| format!("cannot write {}", path.display()))?;
                set_mode(&path, entry.mode)?;
                let mtime = filetime::FileTime::from_unix_time(entry.mtime, entry.mtime_nanos);
                filetime::set_file_mtime(&path, mtime)?;
                digest.entry(&entry, hasher.finish());
                done.files += 1;
                done.bytes += entry.size;
                done.entries += 1;
            }
            Item::Entry(entry) => {
                let path = safe_join(&target, &entry.path)?;
                match entry.kind {
                    EntryKind::Dir => {
                        std::fs::create_dir_all(&path)
                            .with_context(|| format!("cannot create {}", path.display()))?;
                        set_mode(&path, entry.mode)?;
                        dir_times.push((path.clone(), entry.mtime, entry.mtime_nanos));
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
                        remove_existing(&path)?;
                        let out = std::io::BufWriter::with_capacity(
                            1 << 20,
                            File::create(&path)
                                .with_context(|| format!("cannot create {}", path.display()))?,
                        );
                        open = Some(OpenFile {
                            entry,
                            path,
                            out,
                            hasher: ContentDigest::default(),
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
    for (path, secs, nanos) in dir_times.into_iter().rev() {
        filetime::set_file_mtime(&path, filetime::FileTime::from_unix_time(secs, nanos))?;
    }
    match expected_digest {
        Some(expected) if expected == digest.finish() => Ok(done),
        Some(_) => bail!(
            "restored tree does not match the digest recorded at backup time (snapshot {snapshot})"
        ),
        None => bail!("manifest of snapshot {snapshot} is truncated (no footer)"),
    }
}

/// Chunks fetched and decrypted ahead of the writer.
const IN_FLIGHT: usize = 8;

type ChunkTask = tokio::task::JoinHandle<Result<Vec<u8>>>;

/// What the manifest reader hands the writer, in manifest order.
enum Item {
    Header(Header),
    /// A directory, a symlink, or the start of a file (its chunks follow, then `EndFile`).
    Entry(Entry),
    Chunk {
        plain: ChunkTask,
        raw_length: u32,
    },
    EndFile,
    Footer(String),
    Failed(anyhow::Error),
}

struct OpenFile {
    entry: Entry,
    path: PathBuf,
    out: std::io::BufWriter<File>,
    hasher: ContentDigest,
}

fn wrong_key(e: vaultline_format::Error, tenant: &Name, snapshot: &SnapshotId) -> anyhow::Error {
    match e {
        vaultline_format::Error::WrongKey => anyhow::anyhow!(
            "the identity given does not match the key snapshot {snapshot} of tenant {tenant} was encrypted to"
        ),
        other => anyhow::anyhow!("manifest of snapshot {snapshot}: {other}"),
    }
}

/// Walks the manifest (on a blocking thread: it decrypts and decompresses),
/// starting a fetch-and-open task per chunk. Stops early when the writer is gone.
fn read_manifest(
    records: impl Iterator<Item = vaultline_format::Result<Record>>,
    repo: Repository,
    tenant: Name,
    snapshot: SnapshotId,
    identity: Identity,
    runtime: tokio::runtime::Handle,
    tx: tokio::sync::mpsc::Sender<Item>,
) {
    let send = |item: Item| tx.blocking_send(item).is_ok();
    let identity = std::sync::Arc::new(identity);
    // Decryption runs on as many blocking threads as there are cores: more
    // threads only add allocator arenas (memory), not speed.
    let cores = std::thread::available_parallelism().map_or(2, usize::from);
    let decrypting = std::sync::Arc::new(tokio::sync::Semaphore::new(cores));
    for record in records {
        let ok = match record {
            Err(e) => send(Item::Failed(
                anyhow::Error::new(e).context(format!("manifest of snapshot {snapshot}")),
            )),
            Ok(Record::Header(header)) => send(Item::Header(header)),
            Ok(Record::Footer(footer)) => send(Item::Footer(footer.source_digest)),
            Ok(Record::Entry(entry)) if entry.kind == EntryKind::File => {
                let chunks = entry.chunks.clone();
                let shown = String::from_utf8_lossy(&entry.path).into_owned();
                let mut ok = send(Item::Entry(entry));
                for chunk in chunks {
                    if !ok {
                        break;
                    }
                    let Some(location) = chunk.location else {
                        ok = send(Item::Failed(anyhow::anyhow!(
                            "manifest of snapshot {snapshot} lacks a chunk location for {shown}"
                        )));
                        break;
                    };
                    let (repo, identity, tenant, shown, decrypting) = (
                        repo.clone(),
                        identity.clone(),
                        tenant.clone(),
                        shown.clone(),
                        decrypting.clone(),
                    );
                    let plain = runtime.spawn(async move {
                        let key = ObjectKey::pack(&tenant, &location.pack);
                        let sealed = repo
                            .get_range(&key, location.offset, location.length)
                            .await
                            .with_context(|| {
                                format!("cannot read pack {} for {shown}", location.pack)
                            })?;
                        let _permit = decrypting.acquire_owned().await?;
                        tokio::task::spawn_blocking(move || {
                            vaultline_format::blob::open(&sealed, &identity).with_context(|| {
                                format!("pack {} is damaged (restoring {shown})", location.pack)
                            })
                        })
                        .await?
                    });
                    ok = send(Item::Chunk {
                        plain,
                        raw_length: chunk.raw_length,
                    });
                }
                ok && send(Item::EndFile)
            }
            Ok(Record::Entry(entry)) => send(Item::Entry(entry)),
        };
        if !ok {
            return;
        }
    }
}

fn safe_join(target: &Path, raw: &[u8]) -> Result<PathBuf> {
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
                safe_join(target, bad.as_bytes()).is_err(),
                "{bad:?} must be refused"
            );
        }
        std::os::unix::fs::symlink("/tmp", target.join("link")).unwrap();
        assert!(safe_join(target, b"link/file").is_err());
        assert_eq!(
            safe_join(target, b"a/b c/\xc3\xbc").unwrap(),
            target.join("a/b c/ü")
        );
    }
}
