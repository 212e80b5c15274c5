//! What the walk records of an entry besides its content: owner (ids and
//! names), extended attributes and ACLs, hard links, special files
//! (manifest format 2).

use std::collections::HashMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use vaultline_format::manifest::{Entry, EntryKind, Owner, XATTR_BYTES, Xattr, xattr_kept};

/// Per-walk memory of names and links.
#[derive(Default)]
pub(crate) struct Recorder {
    users: HashMap<u32, Option<String>>,
    groups: HashMap<u32, Option<String>>,
    /// Files with several names seen so far, by device and inode: the path
    /// of the first name and how many names are still to come. An entry
    /// goes once all its names were seen, so only files whose names are
    /// still ahead are held.
    links: HashMap<(u64, u64), (Vec<u8>, u64)>,
    /// Sockets recorded (never restored).
    pub(crate) sockets: u64,
    /// Entries whose extended attributes went past [`XATTR_BYTES`].
    pub(crate) xattrs_cut: u64,
    /// The attribute names of the entry being recorded, reused: the walk
    /// lists them for every entry.
    names: Vec<u8>,
}

impl Recorder {
    /// Fills in what `meta` says of the entry at `path`: its kind (for
    /// anything but files, directories and symlinks), owner, extended
    /// attributes, and for a file with several names either its link count
    /// (the first name) or the first name it links to.
    pub(crate) fn record(&mut self, entry: &mut Entry, path: &Path, meta: &std::fs::Metadata) {
        entry.owner = Some(Owner {
            uid: meta.uid(),
            gid: meta.gid(),
            user: self.user(meta.uid()),
            group: self.group(meta.gid()),
        });
        let kind = meta.file_type();
        if kind.is_fifo() {
            entry.kind = EntryKind::Fifo;
        } else if kind.is_char_device() || kind.is_block_device() {
            entry.kind = if kind.is_char_device() {
                EntryKind::CharDevice
            } else {
                EntryKind::BlockDevice
            };
            entry.rdev = Some(meta.rdev());
        } else if kind.is_socket() {
            entry.kind = EntryKind::Socket;
            self.sockets += 1;
        }
        if kind.is_file() && meta.nlink() > 1 {
            self.link(entry, meta);
        }
        // Linux keeps no user attributes or ACLs on symlinks.
        if !kind.is_symlink() && entry.kind != EntryKind::Hardlink {
            entry.xattrs = self.xattrs(path);
        }
    }

    fn link(&mut self, entry: &mut Entry, meta: &std::fs::Metadata) {
        let key = (meta.dev(), meta.ino());
        match self.links.get_mut(&key) {
            Some((first, left)) => {
                entry.kind = EntryKind::Hardlink;
                entry.target = Some(first.clone());
                *left = left.saturating_sub(1);
                if *left == 0 {
                    self.links.remove(&key);
                }
            }
            None => {
                entry.nlink = u32::try_from(meta.nlink()).unwrap_or(u32::MAX);
                self.links
                    .insert(key, (entry.path.clone(), meta.nlink() - 1));
            }
        }
    }

    fn user(&mut self, uid: u32) -> Option<String> {
        self.users
            .entry(uid)
            .or_insert_with(|| {
                uzers::get_user_by_uid(uid).and_then(|u| u.name().to_str().map(str::to_owned))
            })
            .clone()
    }

    fn group(&mut self, gid: u32) -> Option<String> {
        self.groups
            .entry(gid)
            .or_insert_with(|| {
                uzers::get_group_by_gid(gid).and_then(|g| g.name().to_str().map(str::to_owned))
            })
            .clone()
    }

    /// The attributes worth restoring (see [`xattr_kept`]), up to
    /// [`XATTR_BYTES`]; a filesystem without them gives none.
    fn xattrs(&mut self, path: &Path) -> Vec<Xattr> {
        let Some(listed) = list_names(path, &mut self.names) else {
            return Vec::new();
        };
        let mut kept = Vec::new();
        let mut bytes = 0;
        for name in self.names[..listed]
            .split(|&b| b == 0)
            .filter(|n| xattr_kept(n))
        {
            let Ok(size) = rustix::fs::lgetxattr_query(path, name) else {
                continue;
            };
            let mut value = vec![0u8; size];
            let Ok(read) = rustix::fs::lgetxattr(path, name, &mut value[..]) else {
                continue;
            };
            value.truncate(read);
            bytes += name.len() + value.len();
            if bytes > XATTR_BYTES {
                self.xattrs_cut += 1;
                tracing::warn!(
                    path = %path.display(),
                    limit = XATTR_BYTES,
                    "Extended attributes past the limit are left out of the snapshot."
                );
                break;
            }
            kept.push(Xattr {
                name: name.to_vec(),
                value,
            });
        }
        kept
    }
}

/// Lists `path`'s attribute names into `names` (grown as needed) and
/// returns their length; `None` when there are none to read (no support, no
/// permission, or gone).
fn list_names(path: &Path, names: &mut Vec<u8>) -> Option<usize> {
    if names.is_empty() {
        names.resize(1024, 0);
    }
    loop {
        match rustix::fs::llistxattr(path, &mut names[..]) {
            Ok(n) => return Some(n),
            Err(rustix::io::Errno::RANGE) if names.len() < 1 << 16 => {
                names.resize(names.len() * 4, 0);
            }
            Err(_) => return None,
        }
    }
}
