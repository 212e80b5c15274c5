//! Claim-check staging: bulk bytes between stages live here, events carry keys.
//! On one node, a local directory. Every item is written under a temporary
//! name and renamed into place, so a reader never sees half an item; items
//! older than the TTL are swept, so abandoned snapshots do not fill the disk.

use crate::{Result, check_key, io_err, temp_suffix};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// A local staging directory.
#[derive(Debug, Clone)]
pub struct Staging {
    root: PathBuf,
    ttl: Duration,
}

impl Staging {
    /// Opens (and creates) a staging directory.
    ///
    /// # Errors
    /// When the directory cannot be created.
    pub fn open_dir(root: impl Into<PathBuf>, ttl: Duration) -> Result<Self> {
        let root = root.into();
        std::fs::create_dir_all(&root).map_err(io_err("create staging", &root))?;
        Ok(Staging { root, ttl })
    }

    /// Path of a committed item (it may not exist).
    ///
    /// # Errors
    /// For keys that would leave the staging root.
    pub fn path(&self, key: &str) -> Result<PathBuf> {
        check_key(key)?;
        Ok(self.root.join(key))
    }

    /// A temporary path to write an item to before [`Staging::commit`].
    ///
    /// # Errors
    /// When the key is invalid or its directory cannot be created.
    pub fn temp_path(&self, key: &str) -> Result<PathBuf> {
        let path = self.path(key)?;
        let parent = path.parent().expect("staging keys have a parent");
        std::fs::create_dir_all(parent).map_err(io_err("create directory", parent))?;
        let mut name = path
            .file_name()
            .expect("staging keys have a name")
            .to_os_string();
        name.push(temp_suffix());
        Ok(parent.join(name))
    }

    /// Moves a finished temporary file into place under `key`.
    ///
    /// # Errors
    /// When the rename fails.
    pub fn commit(&self, temp: &Path, key: &str) -> Result<()> {
        let path = self.path(key)?;
        std::fs::rename(temp, &path).map_err(io_err("rename", &path))
    }

    /// Removes an item; removing an absent item succeeds (handlers are idempotent).
    ///
    /// # Errors
    /// On I/O errors other than absence.
    pub fn remove(&self, key: &str) -> Result<()> {
        let path = self.path(key)?;
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_err("remove", &path)(e)),
            _ => Ok(()),
        }
    }

    /// Removes a snapshot's whole staging prefix once it is stored.
    ///
    /// # Errors
    /// On I/O errors other than absence.
    pub fn remove_prefix(&self, prefix: &str) -> Result<()> {
        let path = self.path(prefix)?;
        match std::fs::remove_dir_all(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_err("remove", &path)(e)),
            _ => Ok(()),
        }
    }

    /// Deletes items older than the TTL and the directories they leave empty.
    /// Returns how many files were removed.
    pub fn sweep(&self) -> usize {
        let cutoff = SystemTime::now() - self.ttl;
        sweep_dir(&self.root, cutoff, false)
    }

    /// Checks the staging directory is usable (for `/health/ready`).
    ///
    /// # Errors
    /// When it cannot be listed.
    pub fn ping(&self) -> Result<()> {
        std::fs::read_dir(&self.root)
            .map(|_| ())
            .map_err(io_err("list", &self.root))
    }
}

fn sweep_dir(dir: &Path, cutoff: SystemTime, remove_if_empty: bool) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_dir() {
            removed += sweep_dir(&path, cutoff, true);
        } else if meta.modified().is_ok_and(|m| m < cutoff) && std::fs::remove_file(&path).is_ok() {
            tracing::info!(path = %path.display(), "Swept expired staging item.");
            removed += 1;
        }
    }
    if remove_if_empty {
        // Fails harmlessly when the directory still has items.
        let _ = std::fs::remove_dir(dir);
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_appear_whole_and_expire_after_the_ttl() {
        let dir = tempfile::tempdir().unwrap();
        let staging = Staging::open_dir(dir.path(), Duration::from_millis(50)).unwrap();
        let temp = staging.temp_path("t/s/batch-0").unwrap();
        std::fs::write(&temp, b"data").unwrap();
        assert!(!staging.path("t/s/batch-0").unwrap().exists());
        staging.commit(&temp, "t/s/batch-0").unwrap();
        assert_eq!(
            std::fs::read(staging.path("t/s/batch-0").unwrap()).unwrap(),
            b"data"
        );
        assert_eq!(staging.sweep(), 0);
        std::thread::sleep(Duration::from_millis(80));
        assert_eq!(staging.sweep(), 1);
        assert!(!dir.path().join("t").exists());
        assert!(staging.path("../escape").is_err());
    }
}
