//! What restore refuses, decided from the manifest alone. The checks run on
//! every entry whatever the sink, so level-2 verification, which writes
//! nothing, refuses exactly the snapshots a restore would: a snapshot the
//! verifier accepts never fails on a name, an order or a link at restore.

use crate::error::{Result, fail};
use std::collections::HashSet;
use vaultline_format::manifest::{Entry, EntryKind, XATTR_BYTES, xattr_kept};

/// The longest name (one path component) Linux filesystems take.
pub(crate) const NAME_MAX: usize = 255;

/// The manifest versions this build reads.
pub(crate) const FORMATS: std::ops::RangeInclusive<u16> = 1..=vaultline_format::FORMAT_VERSION;

/// Checks entries in manifest order.
#[derive(Default)]
pub(crate) struct Checks {
    /// The directories the next entry may be in, outermost first, each with
    /// the name of the last entry seen in it. The walk lists a directory's
    /// entries right after it, in byte order; restore relies on both (it
    /// applies a directory's mode once it has left it).
    open: Vec<(Vec<u8>, Vec<u8>)>,
    /// The last name seen at the top of the tree.
    top_last: Option<Vec<u8>>,
    /// Files with several names, by a digest of their path: what a hard
    /// link may name.
    linkable: HashSet<[u8; 16]>,
}

/// `path` shown in messages (names need not be UTF-8).
pub(crate) fn shown(path: &[u8]) -> String {
    String::from_utf8_lossy(path).into_owned()
}

/// Refuses paths that could land outside the target or that no filesystem
/// takes: empty, absolute, with `..`, `.` or empty components, or a name
/// longer than [`NAME_MAX`].
pub(crate) fn check_path(path: &[u8]) -> Result<()> {
    let shown = shown(path);
    if path.is_empty() || path.contains(&0) {
        fail!(
            Refused,
            "refusing to restore an entry with an empty or invalid path"
        );
    }
    if path[0] == b'/' {
        fail!(
            Refused,
            "refusing to restore {shown:?}: the path is absolute"
        );
    }
    for name in path.split(|&b| b == b'/') {
        match name {
            b".." => fail!(
                Refused,
                "refusing to restore {shown:?}: it climbs out with '..'"
            ),
            b"" | b"." => fail!(
                Refused,
                "refusing to restore {shown:?}: an empty or '.' name in the path"
            ),
            long if long.len() > NAME_MAX => fail!(
                Refused,
                "refusing to restore {shown:?}: a name of {} bytes, longer than any filesystem takes ({NAME_MAX})",
                long.len()
            ),
            _ => {}
        }
    }
    Ok(())
}

/// The directory part and the last name of a checked path.
pub(crate) fn split_parent(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|&b| b == b'/') {
        Some(at) => (&path[..at], &path[at + 1..]),
        None => (&[], path),
    }
}

/// True when `path` is under the directory `dir`.
pub(crate) fn is_under(path: &[u8], dir: &[u8]) -> bool {
    path.len() > dir.len() && path.starts_with(dir) && path[dir.len()] == b'/'
}

fn link_key(path: &[u8]) -> [u8; 16] {
    let hash = blake3::hash(path);
    hash.as_bytes()[..16].try_into().expect("16 of 32 bytes")
}

impl Checks {
    /// Checks the next entry, in manifest order.
    ///
    /// # Errors
    /// What restore would refuse, naming the entry.
    pub(crate) fn entry(&mut self, entry: &Entry) -> Result<()> {
        check_path(&entry.path)?;
        let shown = shown(&entry.path);
        self.place(&entry.path, &shown)?;
        if entry.mode > 0o7777 {
            fail!(
                Refused,
                "refusing to restore {shown:?}: mode {:o} is not a permission mode",
                entry.mode
            );
        }
        let mut xattr_bytes = 0;
        for xattr in &entry.xattrs {
            xattr_bytes += xattr.name.len() + xattr.value.len();
            if !xattr_kept(&xattr.name) || xattr.name.contains(&0) {
                fail!(
                    Refused,
                    "refusing to restore {shown:?}: extended attribute {:?} is not one vaultline restores",
                    String::from_utf8_lossy(&xattr.name)
                );
            }
        }
        if xattr_bytes > XATTR_BYTES {
            fail!(
                Refused,
                "refusing to restore {shown:?}: {xattr_bytes} bytes of extended attributes, more than {XATTR_BYTES}"
            );
        }
        match entry.kind {
            EntryKind::File => {
                let chunked: u64 = entry.chunks.iter().map(|c| u64::from(c.raw_length)).sum();
                if chunked != entry.size {
                    fail!(
                        Refused,
                        "refusing to restore {shown:?}: its chunks hold {chunked} bytes, its size is {}",
                        entry.size
                    );
                }
                if entry.nlink > 1 {
                    self.linkable.insert(link_key(&entry.path));
                }
            }
            EntryKind::Symlink => match entry.target.as_deref() {
                Some(target) if !target.is_empty() && !target.contains(&0) => {}
                _ => fail!(
                    Refused,
                    "refusing to restore {shown:?}: a symlink without a valid target"
                ),
            },
            EntryKind::Hardlink => {
                let target = entry.target.as_deref().unwrap_or_default();
                if check_path(target).is_err() || !self.linkable.contains(&link_key(target)) {
                    fail!(
                        Refused,
                        "refusing to restore {shown:?}: a hard link to {:?}, which is not a file listed before it",
                        self::shown(target)
                    );
                }
            }
            EntryKind::CharDevice | EntryKind::BlockDevice if entry.rdev.is_none() => {
                fail!(
                    Refused,
                    "refusing to restore {shown:?}: a device without a device number"
                )
            }
            EntryKind::Dir
            | EntryKind::Fifo
            | EntryKind::CharDevice
            | EntryKind::BlockDevice
            | EntryKind::Socket => {}
        }
        if entry.kind == EntryKind::Dir {
            self.open.push((entry.path.clone(), Vec::new()));
        }
        Ok(())
    }

    /// The entry must be in the directory listed last that holds it (or at
    /// the top), after its siblings in byte order.
    fn place(&mut self, path: &[u8], shown: &str) -> Result<()> {
        while self
            .open
            .last()
            .is_some_and(|(dir, _)| !is_under(path, dir))
        {
            self.open.pop();
        }
        let (parent, name) = split_parent(path);
        let last = match self.open.last_mut() {
            Some((dir, last)) if dir.as_slice() == parent => last,
            None if parent.is_empty() => self.top_last.get_or_insert_with(Vec::new),
            _ => fail!(
                Refused,
                "refusing to restore {shown:?}: a parent is a symlink, a file, or not listed before it"
            ),
        };
        if !last.is_empty() && last.as_slice() >= name {
            fail!(
                Refused,
                "refusing to restore {shown:?}: listed twice, or out of order (a symlink or a file is in the way)"
            );
        }
        last.clear();
        last.extend_from_slice(name);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, kind: EntryKind) -> Entry {
        Entry {
            path: path.as_bytes().to_vec(),
            kind,
            mode: 0o644,
            ..Entry::default()
        }
    }

    fn run(entries: &[Entry]) -> Result<()> {
        let mut checks = Checks::default();
        entries.iter().try_for_each(|e| checks.entry(e))
    }

    #[test]
    fn names_paths_and_order_are_checked() {
        for bad in ["../x", "a/../../x", "/etc/passwd", "", ".", "a//b", "a/"] {
            assert!(
                check_path(bad.as_bytes()).is_err(),
                "{bad:?} must be refused"
            );
        }
        assert!(check_path("n".repeat(255).as_bytes()).is_ok());
        assert!(check_path("n".repeat(256).as_bytes()).is_err());
        let deep = vec!["d".repeat(200); 20].join("/");
        assert!(
            check_path(deep.as_bytes()).is_ok(),
            "paths past PATH_MAX are fine"
        );

        let tree = [
            entry("a", EntryKind::Dir),
            entry("a/x", EntryKind::File),
            entry("a/y", EntryKind::Dir),
            entry("a/y/z", EntryKind::File),
            entry("b", EntryKind::File),
        ];
        run(&tree).unwrap();
        // A file, then something under it; a directory re-entered; a name twice.
        let under_file = [entry("b", EntryKind::File), entry("b/c", EntryKind::File)];
        assert!(format!("{:#}", run(&under_file).unwrap_err()).contains("a parent is"));
        let reentered = [
            entry("a", EntryKind::Dir),
            entry("b", EntryKind::Dir),
            entry("a/x", EntryKind::File),
        ];
        assert!(run(&reentered).is_err());
        let mut link = entry("d", EntryKind::Symlink);
        link.target = Some(b"/outside".to_vec());
        let twice = [link, entry("d", EntryKind::Dir)];
        assert!(format!("{:#}", run(&twice).unwrap_err()).contains("listed twice"));
    }

    #[test]
    fn hard_links_name_an_earlier_file_with_several_names() {
        let mut first = entry("f", EntryKind::File);
        first.nlink = 2;
        let mut link = entry("g", EntryKind::Hardlink);
        link.target = Some(b"f".to_vec());
        run(&[first.clone(), link.clone()]).unwrap();
        assert!(run(&[link.clone()]).is_err(), "a link before its file");
        first.nlink = 1;
        assert!(run(&[first, link]).is_err(), "a link to a file of one name");
    }
}
