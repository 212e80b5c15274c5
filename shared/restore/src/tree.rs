//! Writing a tree into the target directory.
//!
//! Every call is made relative to a handle of a directory this restore
//! opened without following symlinks, so a symlink that another local user
//! swaps in while the restore runs can never redirect a write outside the
//! target. Files are written under short hidden names (a name of 255 bytes
//! has no room for a suffix) and renamed into place once whole. A
//! directory's mode, owner and times are applied when the restore leaves
//! it, deepest first: a read-only directory gets its files first.

use crate::checks::{is_under, shown, split_parent};
use crate::error::{Error, Result, fail};
use crate::meta::{Metadata, Node};
use crate::partial::{Partial, PartialNames};
use rustix::fd::{AsFd, OwnedFd};
use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use vaultline_format::manifest::{Entry, EntryKind};

/// Zero runs of this many bytes, aligned in the file, are left as holes.
const BLOCK: u64 = 4096;

/// A directory the restore is in.
struct OpenDir {
    path: Vec<u8>,
    fd: Arc<OwnedFd>,
    /// Its entry, applied when the restore leaves it (`None` for parents
    /// made for a selection, which keep what they were made with).
    entry: Option<Entry>,
}

/// Writes entries into one target, in manifest order.
pub(crate) struct TreeWriter {
    root: Arc<OwnedFd>,
    open: Vec<OpenDir>,
    partial: PartialNames,
    pub(crate) meta: Metadata,
    /// Sockets and (when not root) devices left out.
    pub(crate) sockets_skipped: u64,
    pub(crate) devices_skipped: u64,
}

/// A file being written: its content goes to `file` under a hidden name.
pub(crate) struct FileOut {
    file: std::fs::File,
    partial: Partial,
    name: Vec<u8>,
    written: u64,
    /// Where the last bytes actually written end.
    end: u64,
}

fn dir_flags() -> OFlags {
    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

impl TreeWriter {
    /// Creates the target (and its parents) when missing and opens it.
    pub(crate) fn open(target: &Path, numeric_owner: bool) -> Result<TreeWriter> {
        std::fs::create_dir_all(target)
            .map_err(|e| Error::write(format!("cannot create {}", target.display()), e))?;
        let root = rustix::fs::open(
            target,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::write(format!("cannot open {}", target.display()), e))?;
        Ok(TreeWriter {
            root: Arc::new(root),
            open: Vec::new(),
            partial: PartialNames::new(),
            meta: Metadata::new(numeric_owner),
            sockets_skipped: 0,
            devices_skipped: 0,
        })
    }

    /// Makes a directory entry (or takes the one there) and enters it.
    pub(crate) fn dir(&mut self, entry: Entry) -> Result<()> {
        let parent = self.parent_of(&entry.path)?;
        let (_, name) = split_parent(&entry.path);
        let fd = enter(&parent, name, Mode::from_raw_mode(0o700))
            .map_err(|e| in_the_way(e, &entry.path))?;
        if !self.meta.is_root() {
            // A directory left read-only by an earlier restore must take
            // this one's files; its own mode comes back when it is left.
            let stat = rustix::fs::fstat(&fd)
                .map_err(|e| Error::write(format!("cannot stat {}", shown(&entry.path)), e))?;
            if stat.st_mode & 0o700 != 0o700 {
                let _ =
                    rustix::fs::fchmod(&fd, Mode::from_raw_mode((stat.st_mode | 0o700) & 0o7777));
            }
        }
        self.open.push(OpenDir {
            path: entry.path.clone(),
            fd: Arc::new(fd),
            entry: Some(entry),
        });
        Ok(())
    }

    /// Starts a file under a hidden name in its directory.
    pub(crate) fn file(&mut self, entry: &Entry) -> Result<FileOut> {
        let dir = self.parent_of(&entry.path)?;
        let (fd, partial) = self
            .partial
            .create(&dir, |dir, name| {
                rustix::fs::openat(
                    dir,
                    name,
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
            })
            .map_err(|e| {
                Error::write(
                    format!("cannot create a file for {}", shown(&entry.path)),
                    e,
                )
            })?;
        Ok(FileOut {
            file: std::fs::File::from(fd),
            partial,
            name: split_parent(&entry.path).1.to_vec(),
            written: 0,
            end: 0,
        })
    }

    /// Completes a file: its size (a trailing hole), metadata, then its name.
    pub(crate) fn finish_file(&mut self, out: FileOut, entry: &Entry) -> Result<()> {
        if out.end < entry.size {
            // It ends in zeros left unwritten.
            out.file
                .set_len(entry.size)
                .map_err(|e| Error::write(format!("cannot write {}", shown(&entry.path)), e))?;
        }
        self.meta.apply(Node::Fd(out.file.as_fd()), entry)?;
        drop(out.file);
        out.partial.commit(&out.name, &entry.path)
    }

    /// A symlink, made under a hidden name and renamed over what was there.
    pub(crate) fn symlink(&mut self, entry: &Entry) -> Result<()> {
        let dir = self.parent_of(&entry.path)?;
        let target = entry.target.as_deref().unwrap_or_default();
        let ((), partial) = self
            .partial
            .create(&dir, |dir, name| rustix::fs::symlinkat(target, dir, name))
            .map_err(|e| {
                Error::write(format!("cannot create symlink {}", shown(&entry.path)), e)
            })?;
        self.meta
            .apply(Node::Symlink(dir.as_fd(), &partial.name), entry)?;
        partial.commit(split_parent(&entry.path).1, &entry.path)
    }

    /// Another name of a file restored earlier in this run.
    pub(crate) fn hardlink(&mut self, entry: &Entry) -> Result<()> {
        let first = entry.target.as_deref().unwrap_or_default();
        let (first_parent, first_name) = split_parent(first);
        let from = self.reopen(first_parent)?;
        let dir = self.parent_of(&entry.path)?;
        let ((), partial) = self
            .partial
            .create(&dir, |dir, name| {
                rustix::fs::linkat(&from, first_name, dir, name, AtFlags::empty())
            })
            .map_err(|e| {
                Error::write(
                    format!("cannot link {} to {}", shown(&entry.path), shown(first)),
                    e,
                )
            })?;
        let dir = partial.dir.clone();
        let hidden = partial.name.clone();
        partial.commit(split_parent(&entry.path).1, &entry.path)?;
        // Renaming onto another name of the same file (a restore over an
        // earlier one) does nothing and leaves both: the hidden one goes.
        let _ = rustix::fs::unlinkat(&dir, &hidden[..], AtFlags::empty());
        Ok(())
    }

    /// A FIFO, or a device when root (counted and left out otherwise).
    pub(crate) fn special(&mut self, entry: &Entry) -> Result<()> {
        let file_type = match entry.kind {
            EntryKind::Fifo => FileType::Fifo,
            EntryKind::CharDevice | EntryKind::BlockDevice if !self.meta.is_root() => {
                self.devices_skipped += 1;
                return Ok(());
            }
            EntryKind::CharDevice => FileType::CharacterDevice,
            EntryKind::BlockDevice => FileType::BlockDevice,
            _ => {
                self.sockets_skipped += 1;
                return Ok(());
            }
        };
        let dir = self.parent_of(&entry.path)?;
        let rdev = entry.rdev.unwrap_or(0);
        let ((), partial) = self
            .partial
            .create(&dir, |dir, name| {
                rustix::fs::mknodat(dir, name, file_type, Mode::from_raw_mode(0o600), rdev)
            })
            .map_err(|e| Error::write(format!("cannot create {}", shown(&entry.path)), e))?;
        let held = rustix::fs::openat(
            &dir,
            &partial.name[..],
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .and_then(|held| rustix::fs::fstat(&held).map(|stat| (held, stat)))
        .map_err(|e| Error::write(format!("cannot open {}", shown(&entry.path)), e));
        let (held, stat) = held?;
        if FileType::from_raw_mode(stat.st_mode) != file_type {
            fail!(
                Refused,
                "refusing to restore {}: it was replaced while being made",
                shown(&entry.path)
            );
        }
        let proc = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&held));
        self.meta.apply(Node::Proc(&proc), entry)?;
        drop(held);
        partial.commit(split_parent(&entry.path).1, &entry.path)
    }

    /// Leaves every directory, applying their metadata deepest first, and
    /// says what could not be restored as it was.
    pub(crate) fn finish(mut self) -> Result<crate::Kept> {
        while let Some(dir) = self.open.pop() {
            self.leave(dir)?;
        }
        Ok(self.meta.kept)
    }

    fn leave(&mut self, dir: OpenDir) -> Result<()> {
        match dir.entry {
            Some(entry) => self.meta.apply(Node::Fd(dir.fd.as_fd()), &entry),
            None => Ok(()),
        }
    }

    /// The handle of the directory `path` goes in: directories the restore
    /// is done with are left (their metadata applied), and parents missing
    /// for a selection are made.
    fn parent_of(&mut self, path: &[u8]) -> Result<Arc<OwnedFd>> {
        while let Some(dir) = self.open.pop_if(|dir| !is_under(path, &dir.path)) {
            self.leave(dir)?;
        }
        let (parent, _) = split_parent(path);
        let mut at = self.open.last().map_or(0, |dir| dir.path.len() + 1);
        while !parent.is_empty() && at < parent.len() {
            let end = parent[at..]
                .iter()
                .position(|&b| b == b'/')
                .map_or(parent.len(), |i| at + i);
            let base = self.open.last().map_or(&self.root, |dir| &dir.fd).clone();
            let fd = enter(&base, &parent[at..end], Mode::from_raw_mode(0o777))
                .map_err(|e| parent_refused(e, path))?;
            self.open.push(OpenDir {
                path: parent[..end].to_vec(),
                fd: Arc::new(fd),
                entry: None,
            });
            at = end + 1;
        }
        Ok(self.open.last().map_or(&self.root, |dir| &dir.fd).clone())
    }

    /// A handle of `dir` (relative to the target) for reading, opened
    /// component by component without following symlinks.
    fn reopen(&self, dir: &[u8]) -> Result<Arc<OwnedFd>> {
        if let Some(open) = self.open.iter().find(|d| d.path == dir) {
            return Ok(open.fd.clone());
        }
        let mut fd = self.root.clone();
        for name in dir.split(|&b| b == b'/').filter(|n| !n.is_empty()) {
            let next = rustix::fs::openat(
                &fd,
                name,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| parent_refused(e, dir))?;
            fd = Arc::new(next);
        }
        Ok(fd)
    }
}

/// Makes `name` in `dir` unless it is there, and opens it, refusing
/// anything but a real directory.
fn enter(dir: &OwnedFd, name: &[u8], mode: Mode) -> std::result::Result<OwnedFd, Errno> {
    match rustix::fs::mkdirat(dir, name, mode) {
        Ok(()) | Err(Errno::EXIST) => {}
        Err(e) => return Err(e),
    }
    rustix::fs::openat(dir, name, dir_flags(), Mode::empty())
}

/// Why opening a directory for `path` failed: `blocked` when a symlink or
/// a file stands where the directory should be, else the error itself.
fn refused(e: Errno, path: &[u8], blocked: &str, doing: &str) -> Error {
    match e {
        Errno::LOOP | Errno::NOTDIR => {
            Error::Refused(format!("refusing to restore {:?}: {blocked}", shown(path)))
        }
        e => Error::write(format!("{doing} {}", shown(path)), e),
    }
}

fn in_the_way(e: Errno, path: &[u8]) -> Error {
    refused(
        e,
        path,
        "a symlink or a file is in the way",
        "cannot create",
    )
}

fn parent_refused(e: Errno, path: &[u8]) -> Error {
    refused(
        e,
        path,
        "a parent is a symlink or a file",
        "cannot open the directory of",
    )
}

impl FileOut {
    /// Appends content. Aligned zero blocks are skipped rather than
    /// written: the file is new, so they read back as zeros, and take no
    /// space (a sparse disk image stays sparse).
    pub(crate) fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let start = self.written;
        let mut data_from = 0usize;
        let mut at = ((BLOCK - start % BLOCK) % BLOCK) as usize;
        while at + BLOCK as usize <= bytes.len() {
            if is_zero(&bytes[at..at + BLOCK as usize]) {
                self.write_at(&bytes[data_from..at], start + data_from as u64)?;
                data_from = at + BLOCK as usize;
            }
            at += BLOCK as usize;
        }
        self.write_at(&bytes[data_from..], start + data_from as u64)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// Writes `bytes` at `offset` unless they are all zeros, as they read
    /// already: chunks cut anywhere in a run of zeros begin and end in part
    /// of a block, and writing those parts would fill the block.
    fn write_at(&mut self, bytes: &[u8], offset: u64) -> std::io::Result<()> {
        if is_zero(bytes) {
            return Ok(());
        }
        self.end = offset + bytes.len() as u64;
        self.file.write_all_at(bytes, offset)
    }
}

fn is_zero(bytes: &[u8]) -> bool {
    // Or-ing 64 bytes at a time vectorizes; data is told from zeros at the first word.
    bytes
        .chunks(64)
        .all(|word| word.iter().fold(0u8, |acc, &b| acc | b) == 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn a_255_byte_name_is_written_whole_and_zero_blocks_become_holes() {
        let dir = tempfile::tempdir().unwrap();
        let mut tree = TreeWriter::open(dir.path(), false).unwrap();
        let mut content = vec![0u8; 6 << 20];
        content[(4 << 20) + 3] = 7;
        content[100] = 1;
        let entry = Entry {
            path: vec![b'n'; 255],
            kind: EntryKind::File,
            mode: 0o640,
            mtime: 1_700_000_000,
            size: content.len() as u64 + 5000,
            ..Entry::default()
        };
        let mut out = tree.file(&entry).unwrap();
        // Split at an odd place: blocks are aligned in the file, not the chunk.
        out.write(&content[..12_345]).unwrap();
        out.write(&content[12_345..]).unwrap();
        out.write(&[0u8; 5000]).unwrap();
        tree.finish_file(out, &entry).unwrap();
        tree.finish().unwrap();

        let path = dir.path().join("n".repeat(255));
        let mut want = content.clone();
        want.extend([0u8; 5000]);
        assert!(std::fs::read(&path).unwrap() == want);
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.mode() & 0o7777, 0o640);
        assert_eq!(meta.mtime(), 1_700_000_000);
        assert!(
            meta.blocks() * 512 <= 64 << 10,
            "{} bytes on disk",
            meta.blocks() * 512
        );
        // Nothing hidden is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_file_given_up_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut tree = TreeWriter::open(dir.path(), false).unwrap();
        let entry = Entry {
            path: b"half".to_vec(),
            size: 10,
            ..Entry::default()
        };
        let mut out = tree.file(&entry).unwrap();
        out.write(b"hello").unwrap();
        drop(out);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
