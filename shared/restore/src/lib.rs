//! vaultline-restore: read a snapshot back with the tenant's keys. Works
//! from the repository alone (no catalog, no NATS).
//!
//! One reader ([`fetch`]) walks the manifest as a stream, checks every entry
//! ([`checks`]) and fetches and decrypts chunks ahead; one writer takes them
//! in manifest order and hands them to a [`Sink`]: a directory ([`tree`]), a
//! byte stream (stdout, pg_restore, mariadb, a command), a tar stream
//! ([`tar_out`], the download of a file tree), or nothing at all
//! (level-2 verification, which recomputes digests and makes the same
//! checks a restore makes).
//!
//! Never writes outside the target: hostile paths are refused before
//! anything is written for them, and every write goes through directory
//! handles opened without following symlinks.

mod checks;
mod error;
mod fetch;
mod listing;
mod meta;
mod pack_index;
mod partial;
pub mod programs;
mod tar_out;
mod tree;

pub use error::{Error, Result};
pub use listing::each_entry;
pub use meta::Kept;
pub use pack_index::read_pack_index;

use error::fail;
use fetch::{Item, QUEUED_ITEMS, Request};
use std::io::Write;
use std::path::Path;
use vaultline_format::keys::Keyring;
use vaultline_format::manifest::{
    ContentDigest, ContentHash, Entry, EntryKind, Footer, Header, SourceDigest, TableRows,
};
use vaultline_storage::Repository;
use vaultline_types::{Name, SnapshotId};

/// Where restored bytes go.
pub enum Sink<'a> {
    /// A directory tree (created if missing).
    Dir(&'a Path),
    /// The content of the one selected file, e.g. stdout or a program's stdin.
    Stream(&'a mut (dyn Write + Send)),
    /// Every selected entry as a POSIX (pax) tar stream.
    Tar(&'a mut (dyn Write + Send)),
    /// Nowhere: every chunk is fetched, decrypted and hashed (level 2).
    Discard,
}

/// How a restore runs.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// As root, give entries their recorded user and group ids even where
    /// this host knows the recorded names under other ids (`--numeric-owner`).
    pub numeric_owner: bool,
    /// Bytes of file content written so far, for a progress display.
    pub progress: Option<std::sync::Arc<std::sync::atomic::AtomicU64>>,
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
    /// Sockets in the snapshot: recorded, never recreated.
    pub sockets_skipped: u64,
    /// Device nodes left out because the restore did not run as root.
    pub devices_skipped: u64,
    /// What the restoring user could not put back as it was.
    pub kept: Kept,
}

/// Header and footer of a snapshot's manifest (entries are skipped), read
/// as a stream.
///
/// # Errors
/// Keys that do not open it, a missing or damaged manifest.
pub async fn manifest_summary(
    repo: &Repository,
    tenant: &Name,
    snapshot: &SnapshotId,
    keyring: &Keyring,
) -> Result<(Header, Footer)> {
    listing::each_entry(repo, tenant, snapshot, keyring, |_| Ok(())).await
}

/// Restores a whole directory tree, then checks it against the source
/// digest recorded at backup time.
///
/// # Errors
/// Keys that do not open it, a damaged or missing object, a hostile path, or a disk error.
pub async fn restore_tree(
    repo: &Repository,
    tenant: &Name,
    snapshot: &SnapshotId,
    keyring: &Keyring,
    target: &Path,
) -> Result<Restored> {
    restore(repo, tenant, snapshot, keyring, None, Sink::Dir(target)).await
}

/// [`restore_with`] and the default [`Options`].
///
/// # Errors
/// See [`restore_with`].
pub async fn restore(
    repo: &Repository,
    tenant: &Name,
    snapshot: &SnapshotId,
    keyring: &Keyring,
    select: Option<&str>,
    sink: Sink<'_>,
) -> Result<Restored> {
    restore_with(
        repo,
        tenant,
        snapshot,
        keyring,
        select,
        sink,
        Options::default(),
    )
    .await
}

/// A file being restored.
struct OpenFile {
    entry: Entry,
    /// Where it is written, for a directory sink.
    out: Option<tree::FileOut>,
    hasher: ContentDigest,
    shown: String,
}

/// Restores `snapshot` of `tenant` into `sink`. `select` limits it to one
/// path and what is under it. A [`Sink::Stream`] takes exactly one file: the
/// selected one, or the only file of a database or command snapshot.
///
/// # Errors
/// Keys that do not open it, a damaged or missing object, a hostile path, a
/// selection that matches nothing (or several files for a stream), a digest
/// mismatch, or a write error.
pub async fn restore_with(
    repo: &Repository,
    tenant: &Name,
    snapshot: &SnapshotId,
    keyring: &Keyring,
    select: Option<&str>,
    sink: Sink<'_>,
    options: Options,
) -> Result<Restored> {
    let (target, mut stream, mut tar) = match sink {
        Sink::Dir(target) => (Some(target), None, None),
        Sink::Stream(out) => (None, Some(out), None),
        Sink::Tar(out) => (None, None, Some(tar_out::TarOut::new(out))),
        Sink::Discard => (None, None, None),
    };
    let select: Option<Vec<u8>> = select
        .map(|path| path.trim_matches('/'))
        .filter(|path| !path.is_empty())
        .map(|path| path.as_bytes().to_vec());

    // The reader walks the manifest and starts fetching and decrypting each
    // chunk as a task; the writer below takes them in manifest order. The
    // channel bounds how far the reader runs ahead (memory: IN_FLIGHT chunks).
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Item>(QUEUED_ITEMS);
    let reader = {
        let request = Request {
            repo: repo.clone(),
            tenant: tenant.clone(),
            snapshot: snapshot.clone(),
            keyring: keyring.clone(),
            select: select.clone(),
        };
        let runtime = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || fetch::read_manifest(request, runtime, tx))
    };

    let mut digest = SourceDigest::default();
    // Set from the header, which comes first.
    let mut content_hash = ContentHash::default();
    let mut header_seen = false;
    // A directory sink's writer, opened once the header proved the key.
    let mut tree: Option<tree::TreeWriter> = None;
    let mut done = Restored::default();
    let mut footer = None;
    let mut open: Option<OpenFile> = None;
    // The opened chunks of the current run, taken in order.
    let mut opened = Vec::new().into_iter();
    while let Some(item) = rx.recv().await {
        match item {
            Item::Failed(error) => return Err(error),
            Item::Header(header) => {
                if &header.tenant != tenant || &header.snapshot != snapshot {
                    fail!(
                        Damaged,
                        "manifest of snapshot {snapshot} names another snapshot ({}/{})",
                        header.tenant,
                        header.snapshot
                    );
                }
                if stream.is_some() && header.source_kind == "files" && select.is_none() {
                    fail!(
                        Request,
                        "snapshot {snapshot} is a file tree: restore it to a directory, or stream one file with --path"
                    );
                }
                if let Some(target) = target {
                    tree = Some(tree::TreeWriter::open(target, options.numeric_owner)?);
                }
                header_seen = true;
                done.source_kind = header.source_kind;
                content_hash = header.content_hash;
            }
            Item::Footer(f) => footer = Some(f),
            Item::Chunk {
                run,
                raw_length,
                budget,
            } => {
                let Some(file) = open.as_mut() else {
                    fail!(Internal, "a chunk outside a file");
                };
                if let Some(run) = run {
                    let Ok(chunks) = run.await else {
                        fail!(Internal, "a chunk task died");
                    };
                    opened = chunks.into_iter();
                }
                let Some(plain) = opened.next() else {
                    fail!(Internal, "a run returned too few chunks");
                };
                let plain = plain?;
                if plain.len() != raw_length as usize {
                    fail!(
                        Damaged,
                        "a pack returned a chunk of the wrong size for {}",
                        file.shown
                    );
                }
                file.hasher.update(&plain);
                let written = match (&mut file.out, &mut stream, &mut tar) {
                    (Some(out), _, _) => out.write(&plain),
                    (None, Some(out), _) => out.write_all(&plain),
                    (None, None, Some(tar)) => tar.content(&plain),
                    (None, None, None) => Ok(()),
                };
                written.map_err(|e| Error::write(format!("cannot write {}", file.shown), e))?;
                if let Some(progress) = &options.progress {
                    progress.fetch_add(plain.len() as u64, std::sync::atomic::Ordering::Relaxed);
                }
                // Written: its share of the read-ahead budget goes back.
                drop(budget);
            }
            Item::EndFile => {
                let Some(OpenFile {
                    entry, out, hasher, ..
                }) = open.take()
                else {
                    fail!(Internal, "a file end without a file");
                };
                if let (Some(out), Some(tree)) = (out, tree.as_mut()) {
                    // Complete and correct: only now does it get its name.
                    tree.finish_file(out, &entry)?;
                }
                if let Some(tar) = tar.as_mut() {
                    tar.end_file()
                        .map_err(|e| Error::write("cannot write the tar stream", e))?;
                }
                digest.entry(&entry, hasher.finish());
                done.files += 1;
                done.bytes += entry.size;
                done.entries += 1;
            }
            Item::Entry(entry) => {
                if !header_seen {
                    fail!(Damaged, "manifest of snapshot {snapshot} has no header");
                }
                if entry.kind == EntryKind::File {
                    if stream.is_some() && done.files > 0 {
                        fail!(
                            Request,
                            "more than one file matches in snapshot {snapshot}: pick one with --path"
                        );
                    }
                    let out = match tree.as_mut() {
                        Some(tree) => Some(tree.file(&entry)?),
                        None => None,
                    };
                    if let Some(tar) = tar.as_mut() {
                        tar.entry(&entry)
                            .map_err(|e| Error::write("cannot write the tar stream", e))?;
                    }
                    open = Some(OpenFile {
                        shown: String::from_utf8_lossy(&entry.path).into_owned(),
                        entry,
                        out,
                        hasher: ContentDigest::new(content_hash),
                    });
                    continue;
                }
                digest.entry(&entry, [0u8; 32]);
                done.entries += 1;
                if let Some(tar) = tar.as_mut() {
                    tar.entry(&entry)
                        .map_err(|e| Error::write("cannot write the tar stream", e))?;
                }
                let Some(tree) = tree.as_mut() else { continue };
                match entry.kind {
                    EntryKind::Dir => tree.dir(entry)?,
                    EntryKind::Symlink => tree.symlink(&entry)?,
                    EntryKind::Hardlink => tree.hardlink(&entry)?,
                    _ => tree.special(&entry)?,
                }
            }
        }
    }
    reader
        .await
        .map_err(|e| Error::task("the manifest reader died", e))?;
    if let Some(out) = &mut stream {
        out.flush()
            .map_err(|e| Error::write("cannot write the restored stream", e))?;
    }
    if let Some(tree) = tree {
        done.sockets_skipped = tree.sockets_skipped;
        done.devices_skipped = tree.devices_skipped;
        done.kept = tree.finish()?;
    }
    let Some(footer) = footer else {
        fail!(
            Damaged,
            "manifest of snapshot {snapshot} is truncated (no footer)"
        );
    };
    done.tables = footer.tables;
    if let Some(select) = &select {
        if done.entries == 0 {
            fail!(
                Request,
                "snapshot {snapshot} has no entry {:?}",
                String::from_utf8_lossy(select)
            );
        }
    } else if footer.source_digest != digest.finish() {
        fail!(
            Damaged,
            "restored data does not match the digest recorded at backup time (snapshot {snapshot})"
        );
    } else {
        done.digest_checked = true;
    }
    if let Some(tar) = tar {
        // Only a checked stream ends like a whole archive; a failure above
        // drops it unfinished, and tar readers report it truncated.
        done.sockets_skipped = tar.sockets_skipped;
        tar.finish()
            .map_err(|e| Error::write("cannot write the tar stream", e))?;
    }
    Ok(done)
}

fn wrong_key(e: vaultline_format::Error, tenant: &Name, snapshot: &SnapshotId) -> Error {
    match e {
        vaultline_format::Error::WrongKey => Error::WrongKey(format!(
            "the identity given does not match the key snapshot {snapshot} of tenant {tenant} was encrypted to"
        )),
        other => Error::manifest(format!("manifest of snapshot {snapshot}"), other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vaultline_format::manifest::Record;
    use vaultline_format::manifest::{Footer, SealedWriter};
    use vaultline_storage::ObjectKey;

    /// Stores a manifest of `entries` (no file content) for snapshot `id`.
    async fn plant(
        repo: &Repository,
        identity: &vaultline_format::keys::Identity,
        id: &SnapshotId,
        entries: Vec<Entry>,
    ) {
        let tenant = Name::new("acme").unwrap();
        let mut writer = SealedWriter::new(Vec::new(), &identity.to_public()).unwrap();
        writer
            .write(&Record::Header(Header {
                format: vaultline_format::FORMAT_VERSION,
                tenant: tenant.clone(),
                source: Name::new("docs").unwrap(),
                snapshot: id.clone(),
                source_kind: "files".into(),
                created: 1_700_000_000,
                key_id: "k".into(),
                content_hash: ContentHash::Blake3,
                source_config: None,
            }))
            .unwrap();
        let mut digest = SourceDigest::default();
        for entry in &entries {
            digest.entry(entry, [0; 32]);
            writer.write(&Record::Entry(entry.clone())).unwrap();
        }
        writer
            .write(&Record::Footer(Footer {
                entries: entries.len() as u64,
                bytes: 0,
                source_digest: digest.finish(),
                packs: vec![],
                tables: vec![],
            }))
            .unwrap();
        repo.put_bytes(&ObjectKey::manifest(&tenant, id), &writer.finish().unwrap())
            .await
            .unwrap();
    }

    fn dir(path: &[u8]) -> Entry {
        Entry {
            path: path.to_vec(),
            kind: EntryKind::Dir,
            mode: 0o755,
            ..Entry::default()
        }
    }

    /// Level 2 is a restore into [`Sink::Discard`]: it refuses exactly what
    /// a restore into a directory refuses, so nothing it accepts fails later.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn level_2_refuses_what_a_restore_would() {
        let dir_ = tempfile::tempdir().unwrap();
        let repo = Repository::open_dir(dir_.path().join("repo"))
            .await
            .unwrap();
        let identity = vaultline_format::keys::Identity::generate();
        let tenant = Name::new("acme").unwrap();
        let cases: Vec<(&str, Vec<Entry>, &str)> = vec![
            ("a sound tree", vec![dir(b"a"), dir(b"a/b"), dir(b"c")], ""),
            (
                "a 256-byte name",
                vec![dir(&[b'n'; 256])],
                "longer than any filesystem takes",
            ),
            ("out of order", vec![dir(b"b"), dir(b"a")], "out of order"),
            (
                "re-entered",
                vec![dir(b"a"), dir(b"b"), dir(b"a/x")],
                "not listed before it",
            ),
        ];
        for (i, (what, entries, refusal)) in cases.into_iter().enumerate() {
            let id = SnapshotId::parse(&format!("20250101T00000{i}Z-0000000{i}")).unwrap();
            plant(&repo, &identity, &id, entries).await;
            let keyring = Keyring::from(&identity);
            let target = dir_.path().join(format!("target-{i}"));
            let verified = restore(&repo, &tenant, &id, &keyring, None, Sink::Discard).await;
            let restored = restore_tree(&repo, &tenant, &id, &keyring, &target).await;
            if refusal.is_empty() {
                assert!(verified.unwrap().digest_checked, "{what}");
                assert!(restored.unwrap().digest_checked, "{what}");
                assert!(target.join("a/b").is_dir());
            } else {
                let (verified, restored) = (
                    format!("{:#}", verified.unwrap_err()),
                    format!("{:#}", restored.unwrap_err()),
                );
                assert!(
                    verified.contains(refusal),
                    "{what}: level 2 said {verified}"
                );
                assert_eq!(verified, restored, "{what}: level 2 and restore differ");
            }
        }
    }
}
