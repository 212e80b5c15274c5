//! Owners, modes, extended attributes and times, applied to what restore
//! made. As root, owners come back by name where this host knows the name,
//! else by number (`numeric_owner` forces numbers). Anyone else keeps what
//! it restores, and setuid and setgid bits are dropped unless the recorded
//! owner is the restoring user: a restore must never hand out a setuid file
//! of someone else.

use crate::checks::shown;
use crate::error::{Error, Result};
use rustix::fd::BorrowedFd;
use rustix::fs::{AtFlags, Gid, Mode, Timespec, Timestamps, UTIME_OMIT, Uid};
use std::collections::HashMap;
use vaultline_format::manifest::{Entry, Owner};

/// What the restoring user could not put back as it was.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Kept {
    /// Entries whose recorded owner is not the restoring user and that it
    /// keeps, not being root (or recorded without an owner).
    pub owners_not_restored: u64,
    /// Files and directories whose setuid or setgid bit was dropped because
    /// their owner was not restored.
    pub setid_dropped: u64,
    /// Extended attributes not set: file capabilities when not root, or
    /// ones the target filesystem refused (see `xattr_error`).
    pub xattrs_skipped: u64,
    /// The first refusal of the filesystem, for the summary.
    pub xattr_error: Option<String>,
}

/// What metadata is applied to.
pub(crate) enum Node<'a> {
    /// An open file or directory.
    Fd(BorrowedFd<'a>),
    /// A FIFO or device held by an `O_PATH` handle, reached through its
    /// `/proc/self/fd` link (opening it for real could block or touch hardware).
    Proc(&'a str),
    /// A symlink by name in its directory: owner and times only (Linux has
    /// no mode and no user attributes for symlinks).
    Symlink(BorrowedFd<'a>, &'a [u8]),
}

/// Applies metadata as the restoring user may.
pub(crate) struct Metadata {
    root: bool,
    numeric_owner: bool,
    uid: u32,
    gid: u32,
    users: HashMap<String, Option<u32>>,
    groups: HashMap<String, Option<u32>>,
    pub(crate) kept: Kept,
}

impl Metadata {
    pub(crate) fn new(numeric_owner: bool) -> Metadata {
        let (uid, gid) = (
            rustix::process::geteuid().as_raw(),
            rustix::process::getegid().as_raw(),
        );
        Metadata {
            root: uid == 0,
            numeric_owner,
            uid,
            gid,
            users: HashMap::new(),
            groups: HashMap::new(),
            kept: Kept::default(),
        }
    }

    /// True when restoring as root: owners and devices come back.
    pub(crate) fn is_root(&self) -> bool {
        self.root
    }

    /// Owner, mode, extended attributes, then times: chown clears setuid
    /// bits and file capabilities, and anything after the times would move
    /// them.
    pub(crate) fn apply(&mut self, node: Node<'_>, entry: &Entry) -> Result<()> {
        let (uid_kept, gid_kept) = self.owner(&node, entry)?;
        if !matches!(node, Node::Symlink(..)) {
            let mut mode = entry.mode & 0o7777;
            let dropped = (if uid_kept { 0 } else { mode & 0o4000 })
                | (if gid_kept { 0 } else { mode & 0o2000 });
            if dropped != 0 {
                mode &= !dropped;
                self.kept.setid_dropped += 1;
            }
            let mode = Mode::from_raw_mode(mode);
            match &node {
                Node::Fd(fd) => rustix::fs::fchmod(fd, mode),
                Node::Proc(path) => rustix::fs::chmod(*path, mode),
                Node::Symlink(..) => unreachable!("excluded above"),
            }
            .map_err(|e| {
                Error::write(format!("cannot set the mode of {}", shown(&entry.path)), e)
            })?;
            self.xattrs(&node, entry);
        }
        let times = Timestamps {
            last_access: Timespec {
                tv_sec: 0,
                tv_nsec: UTIME_OMIT,
            },
            last_modification: Timespec {
                tv_sec: entry.mtime,
                tv_nsec: entry.mtime_nanos.into(),
            },
        };
        match node {
            Node::Fd(fd) => rustix::fs::futimens(fd, &times),
            Node::Proc(path) => {
                rustix::fs::utimensat(rustix::fs::CWD, path, &times, AtFlags::empty())
            }
            Node::Symlink(dir, name) => {
                rustix::fs::utimensat(dir, name, &times, AtFlags::SYMLINK_NOFOLLOW)
            }
        }
        .map_err(|e| Error::write(format!("cannot set the times of {}", shown(&entry.path)), e))
    }

    /// Gives the node its recorded owner when root; says whether the owner
    /// and the group are now the recorded ones.
    fn owner(&mut self, node: &Node<'_>, entry: &Entry) -> Result<(bool, bool)> {
        let Some(owner) = entry.owner.as_ref() else {
            self.kept.owners_not_restored += 1;
            return Ok((false, false));
        };
        if !self.root {
            let kept = (owner.uid == self.uid, owner.gid == self.gid);
            if kept != (true, true) {
                self.kept.owners_not_restored += 1;
            }
            return Ok(kept);
        }
        let (uid, gid) = self.resolve(owner);
        let (uid, gid) = (Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)));
        match node {
            Node::Fd(fd) => rustix::fs::fchown(fd, uid, gid),
            Node::Proc(path) => rustix::fs::chown(*path, uid, gid),
            Node::Symlink(dir, name) => {
                rustix::fs::chownat(dir, *name, uid, gid, AtFlags::SYMLINK_NOFOLLOW)
            }
        }
        .map_err(|e| Error::write(format!("cannot set the owner of {}", shown(&entry.path)), e))?;
        Ok((true, true))
    }

    /// The ids to give an entry of `owner` on this host: those of its
    /// names where this host knows them (unless `numeric_owner`), else the
    /// recorded numbers.
    fn resolve(&mut self, owner: &Owner) -> (u32, u32) {
        let numeric = self.numeric_owner;
        let uid = by_name(&mut self.users, owner.user.as_deref(), numeric, |name| {
            uzers::get_user_by_name(name).map(|u| u.uid())
        });
        let gid = by_name(&mut self.groups, owner.group.as_deref(), numeric, |name| {
            uzers::get_group_by_name(name).map(|g| g.gid())
        });
        let (uid, gid) = (uid.unwrap_or(owner.uid), gid.unwrap_or(owner.gid));
        (uid, gid)
    }

    /// Sets what the filesystem and the user allow; a refusal is counted and
    /// reported, not fatal (a restore onto a filesystem without extended
    /// attributes still gets every byte back).
    fn xattrs(&mut self, node: &Node<'_>, entry: &Entry) {
        for xattr in &entry.xattrs {
            if xattr.name == b"security.capability" && !self.root {
                self.kept.xattrs_skipped += 1;
                continue;
            }
            let flags = rustix::fs::XattrFlags::empty();
            let set = match node {
                Node::Fd(fd) => rustix::fs::fsetxattr(fd, &xattr.name[..], &xattr.value, flags),
                Node::Proc(path) => {
                    rustix::fs::setxattr(*path, &xattr.name[..], &xattr.value, flags)
                }
                Node::Symlink(..) => Ok(()),
            };
            if let Err(e) = set {
                self.kept.xattrs_skipped += 1;
                self.kept.xattr_error.get_or_insert_with(|| {
                    format!(
                        "{} on {}: {e}",
                        String::from_utf8_lossy(&xattr.name),
                        String::from_utf8_lossy(&entry.path)
                    )
                });
            }
        }
    }
}

/// The id this host has for `name`, looked up once per restore.
fn by_name(
    known: &mut HashMap<String, Option<u32>>,
    name: Option<&str>,
    numeric: bool,
    lookup: impl FnOnce(&str) -> Option<u32>,
) -> Option<u32> {
    let name = name.filter(|_| !numeric)?;
    *known.entry(name.to_owned()).or_insert_with(|| lookup(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_resolve_by_name_then_by_number() {
        let owner = |user: &str, group: &str| Owner {
            uid: 4242,
            gid: 4343,
            user: Some(user.to_owned()),
            group: Some(group.to_owned()),
        };
        let mut by_name = Metadata::new(false);
        // Every system has root; the recorded numbers were another host's.
        assert_eq!(by_name.resolve(&owner("root", "root")), (0, 0));
        assert_eq!(
            by_name.resolve(&owner("no-such-user-vl", "no-such-group-vl")),
            (4242, 4343)
        );
        let mut numeric = Metadata::new(true);
        assert_eq!(numeric.resolve(&owner("root", "root")), (4242, 4343));
    }
}
