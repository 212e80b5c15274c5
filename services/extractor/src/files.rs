//! The `files` source: a local directory tree, walked in name order so the
//! same tree always yields the same manifest.

use crate::draft::{Batches, Draft, Job, Summary, chunk_into, source_err};
use serde::Deserialize;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use tokio::sync::mpsc;
use vaultline_format::manifest::{Entry, EntryKind, Footer, Record, SourceDigest};
use vaultline_runtime::{Cx, Outgoing, StageError};

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
    let mut draft = Draft::create(job, "files")?;
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
            content = chunk_into(file, &mut entry, &mut batches, &job.chunk_key, &|| {
                item.path().display().to_string()
            })?;
            files += 1;
            bytes_read += entry.size;
        } else if !kind.is_dir() {
            tracing::warn!(path = %item.path().display(), "Skipping a special file (socket, fifo or device).");
            continue;
        }
        digest.entry(&entry, content);
        draft.write(&Record::Entry(entry))?;
        entries += 1;
    }
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
    Ok(Summary {
        batches: batch_count,
        files,
        bytes_read,
        bytes_new,
        source_digest,
        tables: vec![],
    })
}
