//! The `files` source: a directory tree on the extractor's own disk, with
//! everything the filesystem says of an entry (owners, attributes, hard
//! links, special files).

use super::{Found, Tree, extract_tree};
use crate::draft::{Job, PARALLEL_FROM, Summary, source_err};
use crate::files_cache::Stat;
use crate::metadata::Recorder;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use vaultline_format::manifest::{Entry, EntryKind};
use vaultline_runtime::{Cx, StageError};
use vaultline_types::FilesSource;

/// Reads the tree under `config.path`.
pub(crate) async fn extract(job: Job, config: FilesSource, cx: &Cx) -> Result<Summary, StageError> {
    extract_tree(job, LocalTree { root: config.path }, cx).await
}

struct LocalTree {
    root: PathBuf,
}

impl Tree for LocalTree {
    type File = File;
    /// Two, so that two large files changed since the last backup use both
    /// cores; handing each small file to another thread cost more than it
    /// saved.
    const READERS: usize = 2;
    const PARALLEL_FROM: u64 = PARALLEL_FROM;

    fn root(&self) -> Vec<u8> {
        self.root.as_os_str().as_bytes().to_vec()
    }

    fn check(&self) -> Result<(), StageError> {
        let root = &self.root;
        match std::fs::metadata(root) {
            Ok(meta) if meta.is_dir() => Ok(()),
            Ok(_) => Err(source_err(format!(
                "source path {} is not a directory",
                root.display()
            ))),
            Err(e) => Err(source_err(format!("source path {}: {e}", root.display()))),
        }
    }

    fn walk(
        &self,
        visit: &mut dyn FnMut(Found) -> Result<(), StageError>,
    ) -> Result<(), StageError> {
        let root = &self.root;
        // Owners, attributes and hard links of the entries walked.
        let mut metadata = Recorder::default();
        for item in walkdir::WalkDir::new(root)
            .follow_links(false)
            .sort_by_file_name()
            .min_depth(1)
        {
            let gone = |e: &walkdir::Error| {
                e.io_error()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::NotFound)
            };
            let item = match item {
                Ok(item) => item,
                Err(e) if gone(&e) => continue,
                Err(e) => return Err(source_err(format!("walking {}: {e}", root.display()))),
            };
            let meta = match item.metadata() {
                Ok(meta) => meta,
                Err(e) if gone(&e) => continue,
                Err(e) => return Err(source_err(format!("{}: {e}", item.path().display()))),
            };
            visit(found(item.path(), root, &meta, &mut metadata)?)?;
        }
        if metadata.sockets > 0 {
            tracing::info!(
                sockets = metadata.sockets,
                "Sockets are recorded but never restored."
            );
        }
        if metadata.xattrs_cut > 0 {
            tracing::warn!(
                entries = metadata.xattrs_cut,
                "Some entries kept only part of their extended attributes (over the size limit)."
            );
        }
        Ok(())
    }

    fn open(&self, path: &Path) -> Result<Option<File>, StageError> {
        match File::open(path) {
            Ok(file) => Ok(Some(file)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(source_err(format!("opening {}: {e}", path.display()))),
        }
    }
}

/// The entry at `path` as its metadata and the recorder describe it.
fn found(
    path: &Path,
    root: &Path,
    meta: &std::fs::Metadata,
    metadata: &mut Recorder,
) -> Result<Found, StageError> {
    let relative = path
        .strip_prefix(root)
        .expect("walkdir yields paths under the root");
    let kind = meta.file_type();
    let mut entry = Entry {
        path: relative.as_os_str().as_bytes().to_vec(),
        kind: EntryKind::Dir,
        mode: meta.mode() & 0o7777,
        mtime: meta.mtime(),
        mtime_nanos: meta.mtime_nsec() as u32,
        ..Entry::default()
    };
    metadata.record(&mut entry, path, meta);
    let mut stat = None;
    if kind.is_symlink() {
        let target = std::fs::read_link(path)
            .map_err(|e| source_err(format!("reading link {}: {e}", path.display())))?;
        entry.kind = EntryKind::Symlink;
        entry.target = Some(target.as_os_str().as_bytes().to_vec());
    } else if kind.is_file() && entry.kind != EntryKind::Hardlink {
        entry.kind = EntryKind::File;
        stat = Some(Stat::of(meta));
    }
    Ok(Found {
        entry,
        full: path.to_owned(),
        stat,
    })
}
