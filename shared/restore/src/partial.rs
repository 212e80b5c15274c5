//! Entries are made under short hidden names and renamed into place once
//! whole: a restore that stops leaves no half-written file under a real
//! name (and a name of 255 bytes has no room for a suffix).

use crate::checks::shown;
use crate::error::{Error, Result, fail};
use rustix::fd::OwnedFd;
use rustix::fs::AtFlags;
use rustix::io::Errno;
use std::sync::Arc;

/// Short hidden names, unique to this restore: `.vl-<random>-<n>`.
pub(crate) struct PartialNames {
    prefix: String,
    next: u64,
}

impl PartialNames {
    pub(crate) fn new() -> PartialNames {
        let mut random = [0u8; 4];
        getrandom::fill(&mut random).expect("OS random source");
        PartialNames {
            prefix: format!(".vl-{}-", hex::encode(random)),
            next: 0,
        }
    }

    /// Runs `make` under a fresh hidden name in `dir`, trying the next name
    /// when one exists: never anything not this restore's own.
    pub(crate) fn create<T>(
        &mut self,
        dir: &Arc<OwnedFd>,
        mut make: impl FnMut(&OwnedFd, &[u8]) -> std::result::Result<T, Errno>,
    ) -> std::result::Result<(T, Partial), Errno> {
        loop {
            let name = format!("{}{}", self.prefix, self.next).into_bytes();
            self.next += 1;
            match make(dir, &name) {
                Err(Errno::EXIST) => continue,
                Err(e) => return Err(e),
                Ok(made) => {
                    return Ok((
                        made,
                        Partial {
                            dir: dir.clone(),
                            name,
                            done: false,
                        },
                    ));
                }
            }
        }
    }
}

/// Something made under a hidden name: removed if the restore stops before
/// [`Partial::commit`].
pub(crate) struct Partial {
    pub(crate) dir: Arc<OwnedFd>,
    pub(crate) name: Vec<u8>,
    done: bool,
}

impl Partial {
    /// Renames it to `name` in its directory, replacing a file there.
    pub(crate) fn commit(mut self, name: &[u8], path: &[u8]) -> Result<()> {
        match rustix::fs::renameat(&self.dir, &self.name[..], &self.dir, name) {
            Ok(()) => {
                self.done = true;
                Ok(())
            }
            Err(Errno::ISDIR | Errno::NOTEMPTY | Errno::EXIST) => {
                fail!(
                    Refused,
                    "cannot restore {}: a directory is in the way",
                    shown(path)
                )
            }
            Err(e) => Err(Error::write(format!("cannot restore {}", shown(path)), e)),
        }
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        if !self.done {
            let _ = rustix::fs::unlinkat(&self.dir, &self.name[..], AtFlags::empty());
        }
    }
}
