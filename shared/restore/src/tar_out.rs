//! A snapshot as a POSIX (pax) tar stream: `restore --format tar`, the
//! download of a file tree.
//!
//! Each entry gets a ustar header and, where ustar cannot say it exactly,
//! pax records before it: the full path and link target (names of any
//! length), the mtime with its nanoseconds, owners too large or too long for
//! the header, sizes of 8 GiB and more, and extended attributes as
//! `SCHILY.xattr.*` (what GNU tar and bsdtar read with `--xattrs`).
//! File content is streamed chunk by chunk, so memory stays bounded.

use std::io::{self, Write};
use tar::{Builder, EntryType, Header};
use vaultline_format::manifest::{Entry, EntryKind};

/// What ustar's numeric fields hold: 7 octal digits (ids), 11 (sizes).
const USTAR_MAX_ID: u64 = 0o7_777_777;
const USTAR_MAX_SIZE: u64 = 0o77_777_777_777;
const BLOCK: u64 = 512;

/// Passes writes through until closed. The tar crate's `Builder` writes the
/// end-of-archive blocks when dropped; a restore that fails halfway closes
/// the gate first, so a broken stream never ends like a complete archive.
struct Gate<'a> {
    inner: &'a mut (dyn Write + Send),
    closed: bool,
}

impl Write for Gate<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.closed {
            return Err(io::Error::other("the tar stream was abandoned"));
        }
        self.inner.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        if self.closed {
            return Ok(());
        }
        self.inner.flush()
    }
}

/// The archive being written.
pub(crate) struct TarOut<'a> {
    builder: Builder<Gate<'a>>,
    /// Bytes of the open file still to come, then its padding.
    file_left: u64,
    file_padding: u64,
    /// Sockets have no tar type; they are left out and counted.
    pub(crate) sockets_skipped: u64,
}

impl<'a> TarOut<'a> {
    pub(crate) fn new(out: &'a mut (dyn Write + Send)) -> TarOut<'a> {
        let mut builder = Builder::new(Gate {
            inner: out,
            closed: false,
        });
        builder.mode(tar::HeaderMode::Complete);
        TarOut {
            builder,
            file_left: 0,
            file_padding: 0,
            sockets_skipped: 0,
        }
    }

    /// Writes the header of `entry`; a file's content follows with
    /// [`TarOut::content`] and ends with [`TarOut::end_file`].
    pub(crate) fn entry(&mut self, entry: &Entry) -> io::Result<()> {
        let kind = match entry.kind {
            EntryKind::File => EntryType::Regular,
            EntryKind::Dir => EntryType::Directory,
            EntryKind::Symlink => EntryType::Symlink,
            EntryKind::Hardlink => EntryType::Link,
            EntryKind::Fifo => EntryType::Fifo,
            EntryKind::CharDevice => EntryType::Char,
            EntryKind::BlockDevice => EntryType::Block,
            EntryKind::Socket => {
                self.sockets_skipped += 1;
                return Ok(());
            }
        };
        let size = if entry.kind == EntryKind::File {
            entry.size
        } else {
            0
        };
        let mut pax: Vec<(&str, Vec<u8>)> = Vec::new();
        let mut header = Header::new_ustar();
        header.set_entry_type(kind);
        header.set_mode(entry.mode & 0o7777);
        header.set_mtime(entry.mtime.max(0) as u64);
        pax.push((
            "mtime",
            pax_time(entry.mtime, entry.mtime_nanos).into_bytes(),
        ));
        header.set_size(size.min(USTAR_MAX_SIZE));
        if size > USTAR_MAX_SIZE {
            pax.push(("size", size.to_string().into_bytes()));
        }
        if let Some(owner) = &entry.owner {
            for (key, id, set) in [
                ("uid", owner.uid, Header::set_uid as fn(&mut Header, u64)),
                ("gid", owner.gid, Header::set_gid),
            ] {
                if u64::from(id) <= USTAR_MAX_ID {
                    set(&mut header, id.into());
                } else {
                    pax.push((key, id.to_string().into_bytes()));
                }
            }
            if let Some(user) = &owner.user
                && header.set_username(user).is_err()
            {
                pax.push(("uname", user.clone().into_bytes()));
            }
            if let Some(group) = &owner.group
                && header.set_groupname(group).is_err()
            {
                pax.push(("gname", group.clone().into_bytes()));
            }
        }
        if let Some(rdev) = entry
            .rdev
            .filter(|_| matches!(entry.kind, EntryKind::CharDevice | EntryKind::BlockDevice))
        {
            header.set_device_major(rustix::fs::major(rdev))?;
            header.set_device_minor(rustix::fs::minor(rdev))?;
        }
        if set_name(&mut header, &entry.path).is_err() {
            pax.push(("path", entry.path.clone()));
        }
        if let Some(target) = entry
            .target
            .as_ref()
            .filter(|_| matches!(entry.kind, EntryKind::Symlink | EntryKind::Hardlink))
            && (target.len() > 100 || header.set_link_name_literal(target).is_err())
        {
            pax.push(("linkpath", target.clone()));
        }
        let xattr_keys: Vec<String> = entry
            .xattrs
            .iter()
            .map(|x| format!("SCHILY.xattr.{}", String::from_utf8_lossy(&x.name)))
            .collect();
        let mut records: Vec<(&str, &[u8])> = pax.iter().map(|(k, v)| (*k, v.as_slice())).collect();
        records.extend(
            xattr_keys
                .iter()
                .zip(&entry.xattrs)
                .map(|(k, x)| (k.as_str(), x.value.as_slice())),
        );
        self.builder.append_pax_extensions(records)?;
        header.set_cksum();
        // The header alone: a file's content is streamed after it.
        self.builder.get_mut().write_all(header.as_bytes())?;
        self.file_left = size;
        self.file_padding = (BLOCK - size % BLOCK) % BLOCK;
        Ok(())
    }

    /// Part of the open file's content.
    pub(crate) fn content(&mut self, bytes: &[u8]) -> io::Result<()> {
        if bytes.len() as u64 > self.file_left {
            return Err(io::Error::other("a file is longer than its recorded size"));
        }
        self.file_left -= bytes.len() as u64;
        self.builder.get_mut().write_all(bytes)
    }

    /// Pads the open file to a whole block.
    pub(crate) fn end_file(&mut self) -> io::Result<()> {
        if self.file_left != 0 {
            return Err(io::Error::other("a file is shorter than its recorded size"));
        }
        let padding = [0u8; BLOCK as usize];
        self.builder
            .get_mut()
            .write_all(&padding[..self.file_padding as usize])?;
        self.file_padding = 0;
        Ok(())
    }

    /// Ends the archive (two zero blocks) and flushes it.
    pub(crate) fn finish(mut self) -> io::Result<()> {
        self.builder.finish()?;
        self.builder.get_mut().flush()
    }
}

impl Drop for TarOut<'_> {
    fn drop(&mut self) {
        // After finish() this changes nothing; before it, the Builder's own
        // drop must not end a broken stream like a whole archive.
        self.builder.get_mut().closed = true;
    }
}

/// A pax time: seconds, and the nanoseconds when there are any.
fn pax_time(seconds: i64, nanos: u32) -> String {
    if nanos == 0 {
        seconds.to_string()
    } else if seconds < 0 {
        // -1.25 s is -2 s + 750 ms in the manifest.
        let total = i128::from(seconds) * 1_000_000_000 + i128::from(nanos);
        let (whole, part) = (
            total / 1_000_000_000,
            (total % 1_000_000_000).unsigned_abs(),
        );
        let sign = if whole == 0 { "-" } else { "" };
        format!("{sign}{whole}.{part:09}")
    } else {
        format!("{seconds}.{nanos:09}")
    }
}

/// Puts `path` in the header's ustar name (and prefix) fields when it fits
/// exactly; otherwise a truncated name stays there for readers without pax,
/// and the caller adds a pax `path` record.
fn set_name(header: &mut Header, path: &[u8]) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let fitted = header.set_path(std::ffi::OsStr::from_bytes(path));
    if fitted.is_err() {
        let name = &mut header.as_old_mut().name;
        let n = path.len().min(name.len());
        name[..n].copy_from_slice(&path[..n]);
        name[n..].fill(0);
    }
    fitted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_times_keep_their_nanoseconds() {
        assert_eq!(pax_time(1_700_000_000, 0), "1700000000");
        assert_eq!(pax_time(1_700_000_000, 5), "1700000000.000000005");
        assert_eq!(pax_time(-2, 750_000_000), "-1.250000000");
        assert_eq!(pax_time(-1, 500_000_000), "-0.500000000");
    }

    /// What the tar crate reads back from our stream, for names ustar
    /// cannot hold and a broken stream that must not look complete.
    #[test]
    fn long_names_and_abandoned_streams() {
        let long = format!("{}/{}", "d".repeat(150), "f".repeat(120)).into_bytes();
        let mut bytes: Vec<u8> = Vec::new();
        {
            let mut out = TarOut::new(&mut bytes);
            let entry = Entry {
                path: long.clone(),
                kind: EntryKind::File,
                mode: 0o640,
                mtime: 1_700_000_000,
                mtime_nanos: 42,
                size: 3,
                ..Entry::default()
            };
            out.entry(&entry).unwrap();
            out.content(b"abc").unwrap();
            out.end_file().unwrap();
            out.finish().unwrap();
        }
        let mut archive = tar::Archive::new(bytes.as_slice());
        let mut entries = archive.entries().unwrap();
        let mut first = entries.next().unwrap().unwrap();
        assert_eq!(first.path_bytes().as_ref(), long.as_slice());
        assert_eq!(first.header().mode().unwrap(), 0o640);
        let mut content = String::new();
        std::io::Read::read_to_string(&mut first, &mut content).unwrap();
        assert_eq!(content, "abc");
        drop(first);
        assert!(entries.next().is_none());

        let mut broken: Vec<u8> = Vec::new();
        {
            let mut out = TarOut::new(&mut broken);
            let entry = Entry {
                path: b"half".to_vec(),
                size: 1024,
                ..Entry::default()
            };
            out.entry(&entry).unwrap();
            out.content(&[7; 100]).unwrap();
            // Dropped here, as a failed restore drops it.
        }
        // The pax mtime (a header and a block), the header, 100 bytes: no
        // padding, no end-of-archive blocks.
        assert_eq!(broken.len(), 512 + 512 + 512 + 100);
    }
}
