//! The `sftp` source: a tree on another host, read over one SSH connection
//! with the same walk, chunking, dedup and files cache as a local tree.
//! SFTP gives a file's size, whole-second mtime, mode and owner ids, but no
//! inode, ctime, names of owners, attributes or link counts: the cache
//! compares path, size and mtime, and hard links come back as copies.

use super::{Found, Tree, extract_tree};
use crate::draft::{Job, Summary, source_err};
use crate::files_cache::Stat;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::io::AsyncReadExt;
use vaultline_format::manifest::{Entry, EntryKind, Owner};
use vaultline_runtime::{Cx, ErrorClass, ErrorType, StageError};
use vaultline_sftp::{Credential, FileAttributes, Remote, RemoteFile};
use vaultline_types::SftpSource;

/// Connects with the opened credential and reads the tree under
/// `config.path`. A connection that breaks makes the error transient, so
/// the delivery is tried again on a new one.
pub(crate) async fn extract(
    job: Job,
    config: SftpSource,
    credential: Option<Vec<u8>>,
    cx: &Cx,
) -> Result<Summary, StageError> {
    let name = format!("{}/{}", job.tenant, job.source);
    let credential = credential
        .ok_or_else(|| source_err(format!("sftp source {name} has no stored credential")))?;
    let credential = Credential::from_bytes(&credential, config.auth).map_err(sftp_err)?;
    let remote = Remote::connect(&config, &credential)
        .await
        .map_err(sftp_err)?;
    drop(credential);
    let remote = Arc::new(remote);
    let lost = Arc::new(AtomicBool::new(false));
    let tree = RemoteTree {
        remote: remote.clone(),
        runtime: tokio::runtime::Handle::current(),
        id: format!(
            "sftp://{}@{}:{}{}",
            config.user, config.host, config.port, config.path
        )
        .into_bytes(),
        root: config.path,
        lost: lost.clone(),
    };
    let result = match extract_tree(job, tree, cx).await {
        Err(e)
            if e.class == ErrorClass::Permanent
                && (lost.load(Ordering::Relaxed) || remote.is_closed()) =>
        {
            Err(StageError::transient(
                ErrorType::Source,
                format!("{} (connection to {} lost)", e.message, remote.address()),
            ))
        }
        other => other,
    };
    if let Ok(remote) = Arc::try_unwrap(remote) {
        remote.close().await;
    }
    result
}

fn sftp_err(e: vaultline_sftp::Error) -> StageError {
    if e.is_transient() {
        StageError::transient(ErrorType::Source, e)
    } else {
        StageError::permanent(ErrorType::Source, e)
    }
}

struct RemoteTree {
    remote: Arc<Remote>,
    runtime: tokio::runtime::Handle,
    /// The remote path of the root.
    root: String,
    /// What the files cache knows the tree by: user, host, port and path.
    id: Vec<u8>,
    /// Set when a read failed mid-file: the connection's doing.
    lost: Arc<AtomicBool>,
}

/// The file type bits of an SFTP mode.
const S_IFMT: u32 = 0o170_000;
const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFIFO: u32 = 0o010_000;

impl Tree for RemoteTree {
    type File = RemoteRead;
    /// Every file goes to a reader, four at a time: each file costs round
    /// trips to open and close, which the others' transfers overlap.
    const READERS: usize = 4;
    const PARALLEL_FROM: u64 = 0;

    fn root(&self) -> Vec<u8> {
        self.id.clone()
    }

    fn check(&self) -> Result<(), StageError> {
        let gone = || {
            source_err(format!(
                "source path {} on {} does not exist",
                self.root,
                self.remote.address()
            ))
        };
        let attrs = self
            .block(self.remote.lstat(&self.root))?
            .ok_or_else(gone)?;
        // A root that is a symlink is followed by the listing.
        match attrs.permissions.unwrap_or(0) & S_IFMT {
            S_IFDIR | S_IFLNK => Ok(()),
            _ => Err(source_err(format!(
                "source path {} on {} is not a directory",
                self.root,
                self.remote.address()
            ))),
        }
    }

    fn walk(
        &self,
        visit: &mut dyn FnMut(Found) -> Result<(), StageError>,
    ) -> Result<(), StageError> {
        let Some(listing) = self.list(&self.root)? else {
            return Err(source_err(format!(
                "source path {} on {} vanished",
                self.root,
                self.remote.address()
            )));
        };
        // Depth first, each directory's entries in name order: the order
        // walkdir gives a local tree.
        let mut open = vec![(self.root.clone(), Vec::new(), listing.into_iter())];
        let mut skipped = 0u64;
        while let Some((dir, relative, entries)) = open.last_mut() {
            let Some((name, attrs)) = entries.next() else {
                open.pop();
                continue;
            };
            if name.contains(char::REPLACEMENT_CHARACTER) {
                // Read lossily by the SFTP library: opening it would fail,
                // and skipping it would lose it.
                return Err(source_err(format!(
                    "{dir} on {} holds a name that is not UTF-8 ({name:?}); the sftp source reads only UTF-8 names",
                    self.remote.address()
                )));
            }
            let full = format!("{}/{name}", dir.trim_end_matches('/'));
            let mut path = relative.clone();
            if !path.is_empty() {
                path.push(b'/');
            }
            path.extend_from_slice(name.as_bytes());
            let mode = attrs.permissions.unwrap_or(0);
            let mut entry = Entry {
                path,
                kind: EntryKind::Dir,
                mode: mode & 0o7777,
                mtime: i64::from(attrs.mtime.unwrap_or(0)),
                owner: attrs.uid.zip(attrs.gid).map(|(uid, gid)| Owner {
                    uid,
                    gid,
                    user: None,
                    group: None,
                }),
                ..Entry::default()
            };
            let mut stat = None;
            match mode & S_IFMT {
                S_IFDIR => {
                    let Some(listing) = self.list(&full)? else {
                        continue;
                    };
                    let relative = entry.path.clone();
                    visit(Found {
                        entry,
                        full: PathBuf::new(),
                        stat: None,
                    })?;
                    open.push((full, relative, listing.into_iter()));
                    continue;
                }
                S_IFLNK => {
                    let Some(target) = self.block(self.remote.read_link(&full))? else {
                        continue;
                    };
                    entry.kind = EntryKind::Symlink;
                    entry.target = Some(target.into_bytes());
                }
                S_IFREG => {
                    entry.kind = EntryKind::File;
                    stat = Some(Stat::remote(attrs.size.unwrap_or(0), entry.mtime));
                }
                S_IFIFO => entry.kind = EntryKind::Fifo,
                // Sockets and devices: SFTP gives no device numbers.
                _ => {
                    skipped += 1;
                    continue;
                }
            }
            visit(Found {
                entry,
                full: PathBuf::from(full),
                stat,
            })?;
        }
        if skipped > 0 {
            tracing::info!(
                skipped,
                "Sockets and devices on the host were skipped (SFTP shows no device numbers)."
            );
        }
        Ok(())
    }

    fn open(&self, path: &Path) -> Result<Option<RemoteRead>, StageError> {
        let path = path
            .to_str()
            .expect("remote paths are the host's UTF-8 names");
        Ok(self.block(self.remote.open(path))?.map(|file| RemoteRead {
            file,
            runtime: self.runtime.clone(),
            lost: self.lost.clone(),
        }))
    }
}

impl RemoteTree {
    /// Runs a request from the walk's thread, which is not the runtime's.
    fn block<T>(
        &self,
        request: impl Future<Output = Result<T, vaultline_sftp::Error>>,
    ) -> Result<T, StageError> {
        self.runtime.block_on(request).map_err(sftp_err)
    }

    /// A directory's entries in name order; `None` when it is gone.
    fn list(&self, dir: &str) -> Result<Option<Vec<(String, FileAttributes)>>, StageError> {
        match self.block(self.remote.read_dir(dir)) {
            Ok(entries) => Ok(Some(entries)),
            // Deleted since its parent was listed: skipped like a local one.
            Err(_) if self.block(self.remote.lstat(dir))?.is_none() => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// A remote file as `Read`, for the chunker; its reads are pipelined by
/// the SFTP session (many requests in flight).
pub(crate) struct RemoteRead {
    file: RemoteFile,
    runtime: tokio::runtime::Handle,
    lost: Arc<AtomicBool>,
}

impl std::io::Read for RemoteRead {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let read = self.runtime.block_on(self.file.read(buf));
        if read.is_err() {
            self.lost.store(true, Ordering::Relaxed);
        }
        read
    }
}
