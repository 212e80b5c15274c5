//! Claim-check staging: bulk bytes between stages live here, events carry keys.
//!
//! Items are always written to a local scratch directory first. On one node
//! that directory *is* staging: a finished item is renamed into place, so a
//! reader never sees half of one. Across hosts, a finished item is uploaded
//! to a JetStream object store bucket ([`vaultline_bus::StagingStore`]) and
//! fetched by whichever host handles the next stage. Either way items older
//! than the TTL go away on their own (swept here, expired by the bucket
//! there), so abandoned snapshots do not fill the disk.

use crate::{Result, check_key, io_err, temp_suffix};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use vaultline_bus::StagingStore;

/// Where [`Staging::cache_dir`] is, under the staging root.
const CACHE_DIR: &str = ".cache";
/// How long a cache untouched by any run is kept.
pub(crate) const CACHE_TTL: Duration = Duration::from_secs(31 * 24 * 3600);

/// Staging: a local directory, and the shared bucket when stages run apart.
#[derive(Debug, Clone)]
pub struct Staging {
    root: PathBuf,
    ttl: Duration,
    shared: Option<StagingStore>,
}

/// A staged item ready to read: in place (local staging) or a downloaded
/// copy, deleted when this is dropped (shared staging).
#[derive(Debug)]
pub enum Fetched {
    InPlace(PathBuf),
    Copy(tempfile::TempPath),
}

impl Fetched {
    /// Where the item's bytes are.
    pub fn path(&self) -> &Path {
        match self {
            Fetched::InPlace(path) => path,
            Fetched::Copy(temp) => temp,
        }
    }
}

fn shared_err(e: vaultline_bus::Error) -> crate::Error {
    crate::Error::Shared(e.to_string())
}

impl Staging {
    /// Opens (and creates) a staging directory.
    ///
    /// # Errors
    /// When the directory cannot be created.
    pub fn open_dir(root: impl Into<PathBuf>, ttl: Duration) -> Result<Self> {
        let root = root.into();
        std::fs::create_dir_all(&root).map_err(io_err("create staging", &root))?;
        Ok(Staging {
            root,
            ttl,
            shared: None,
        })
    }

    /// Hands finished items to `store` instead of keeping them in the local
    /// directory, which then only holds items being written or read.
    pub fn with_shared(mut self, store: StagingStore) -> Self {
        self.shared = Some(store);
        self
    }

    /// True when stages hand items over through the shared bucket.
    pub fn is_shared(&self) -> bool {
        self.shared.is_some()
    }

    /// A directory for state a stage keeps on this host between runs (the
    /// extractor's files cache). Sweeps leave it alone unless untouched for
    /// [`CACHE_TTL`]; a name starting with a dot cannot be a tenant's.
    pub fn cache_dir(&self) -> PathBuf {
        self.root.join(CACHE_DIR)
    }

    fn path(&self, key: &str) -> Result<PathBuf> {
        check_key(key)?;
        Ok(self.root.join(key))
    }

    /// A committed item, ready to read, or `None` when there is none (never
    /// staged, already cleaned up, or expired).
    ///
    /// # Errors
    /// On a bad key, or when the shared bucket or the local disk fails.
    pub async fn fetch(&self, key: &str) -> Result<Option<Fetched>> {
        let path = self.path(key)?;
        let Some(store) = &self.shared else {
            return Ok(tokio::fs::try_exists(&path)
                .await
                .unwrap_or(false)
                .then_some(Fetched::InPlace(path)));
        };
        let fetching = self.root.join(".fetching");
        tokio::fs::create_dir_all(&fetching)
            .await
            .map_err(io_err("create directory", &fetching))?;
        let copy = tempfile::NamedTempFile::new_in(&fetching)
            .map_err(io_err("create", &fetching))?
            .into_temp_path();
        if store.get_file(key, &copy).await.map_err(shared_err)? {
            Ok(Some(Fetched::Copy(copy)))
        } else {
            Ok(None)
        }
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

    /// Publishes a finished temporary file as the item `key`: renamed into
    /// place, or uploaded to the shared bucket (and the local file removed).
    ///
    /// # Errors
    /// When the rename or the upload fails.
    pub async fn commit(&self, temp: &Path, key: &str) -> Result<()> {
        let path = self.path(key)?;
        match &self.shared {
            None => tokio::fs::rename(temp, &path)
                .await
                .map_err(io_err("rename", &path)),
            Some(store) => {
                let uploaded = store.put_file(key, temp).await.map_err(shared_err);
                let _ = tokio::fs::remove_file(temp).await;
                uploaded
            }
        }
    }

    /// [`Staging::commit`] from a blocking thread (the extractor's walker).
    ///
    /// # Errors
    /// As [`Staging::commit`].
    pub fn commit_blocking(&self, temp: &Path, key: &str) -> Result<()> {
        tokio::runtime::Handle::current().block_on(self.commit(temp, key))
    }

    /// Removes an item; removing an absent item succeeds (handlers are idempotent).
    ///
    /// # Errors
    /// On I/O errors other than absence.
    pub async fn remove(&self, key: &str) -> Result<()> {
        if let Some(store) = &self.shared {
            return store.delete(key).await.map_err(shared_err);
        }
        let path = self.path(key)?;
        match tokio::fs::remove_file(&path).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_err("remove", &path)(e)),
            _ => Ok(()),
        }
    }

    /// Removes a snapshot's whole staging prefix once it is stored.
    ///
    /// # Errors
    /// On I/O errors other than absence.
    pub async fn remove_prefix(&self, prefix: &str) -> Result<()> {
        if let Some(store) = &self.shared {
            store
                .delete_prefix(&format!("{}/", prefix.trim_end_matches('/')))
                .await
                .map_err(shared_err)?;
        }
        let path = self.path(prefix)?;
        match tokio::fs::remove_dir_all(&path).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_err("remove", &path)(e)),
            _ => Ok(()),
        }
    }

    /// Deletes items older than the TTL and the directories they leave empty.
    /// Returns how many files were removed.
    pub fn sweep(&self) -> usize {
        let now = SystemTime::now();
        sweep_dir(&self.root, now - self.ttl, false, Some(CACHE_DIR))
            + sweep_dir(
                &self.cache_dir(),
                now - CACHE_TTL.max(self.ttl),
                false,
                None,
            )
    }

    /// Checks staging is usable (for `/health/ready`).
    ///
    /// # Errors
    /// When the directory cannot be listed or the shared bucket does not answer.
    pub async fn ping(&self) -> Result<()> {
        std::fs::read_dir(&self.root)
            .map(|_| ())
            .map_err(io_err("list", &self.root))?;
        if let Some(store) = &self.shared {
            store.ping().await.map_err(shared_err)?;
        }
        Ok(())
    }
}

/// Removes files older than `cutoff` under `dir`, and the directories they
/// leave empty; `skip` names an entry of `dir` itself to leave alone.
fn sweep_dir(dir: &Path, cutoff: SystemTime, remove_if_empty: bool, skip: Option<&str>) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        if skip.is_some_and(|skip| entry.file_name() == skip) {
            continue;
        }
        let path = entry.path();
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_dir() {
            removed += sweep_dir(&path, cutoff, true, None);
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

    #[tokio::test]
    async fn items_appear_whole_and_expire_after_the_ttl() {
        let dir = tempfile::tempdir().unwrap();
        let staging = Staging::open_dir(dir.path(), Duration::from_millis(50)).unwrap();
        let temp = staging.temp_path("t/s/batch-0").unwrap();
        std::fs::write(&temp, b"data").unwrap();
        assert!(staging.fetch("t/s/batch-0").await.unwrap().is_none());
        staging.commit(&temp, "t/s/batch-0").await.unwrap();
        let fetched = staging.fetch("t/s/batch-0").await.unwrap().unwrap();
        assert_eq!(std::fs::read(fetched.path()).unwrap(), b"data");
        let cached = staging.cache_dir().join("files/t/s");
        std::fs::create_dir_all(cached.parent().unwrap()).unwrap();
        std::fs::write(&cached, b"cache").unwrap();
        assert_eq!(staging.sweep(), 0);
        std::thread::sleep(Duration::from_millis(80));
        assert_eq!(staging.sweep(), 1);
        assert!(cached.exists(), "caches outlive the staging TTL");
        assert!(!dir.path().join("t").exists());
        assert!(staging.fetch("../escape").await.is_err());
    }
}
