//! Listing what a repository holds under a prefix: what `catalog rebuild`,
//! `snapshots --repo` and the tenant lookup by key record walk.

use crate::repository::FsRepository;
use crate::{Repository, Result, io_err, join_err};
use std::path::Path;

impl Repository {
    /// Every key under `prefix`, in key order (`tenants/acme/snapshots/`).
    /// Objects being written (hidden temporary names) are not listed.
    ///
    /// # Errors
    /// When the listing fails.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        Ok(self
            .list_sized(prefix)
            .await?
            .into_iter()
            .map(|(key, _)| key)
            .collect())
    }

    /// [`Repository::list`] with each object's size, which the listing
    /// itself returns (no request per object).
    ///
    /// # Errors
    /// When the listing fails.
    pub async fn list_sized(&self, prefix: &str) -> Result<Vec<(String, u64)>> {
        match self {
            Repository::S3(s3) => s3.list(prefix, false).await,
            Repository::Fs(fs) => fs.list(prefix, false).await,
        }
    }

    /// The names one level below `prefix` that hold objects (`tenants/`
    /// lists the tenants), each without its trailing `/`.
    ///
    /// # Errors
    /// When the listing fails.
    pub async fn list_dirs(&self, prefix: &str) -> Result<Vec<String>> {
        let dirs = match self {
            Repository::S3(s3) => s3.list(prefix, true).await?,
            Repository::Fs(fs) => fs.list(prefix, true).await?,
        };
        Ok(dirs
            .into_iter()
            .map(|(d, _)| d[prefix.len()..].trim_end_matches('/').to_owned())
            .collect())
    }
}

impl FsRepository {
    /// Keys under `prefix` (or with `dirs`, the directories one level
    /// below it, as `name/`), with sizes (0 for directories), walked on a
    /// blocking thread, in key order.
    pub(crate) async fn list(&self, prefix: &str, dirs: bool) -> Result<Vec<(String, u64)>> {
        let (root, prefix) = (self.root.clone(), prefix.to_owned());
        tokio::task::spawn_blocking(move || list_dir(&root, &prefix, dirs))
            .await
            .map_err(join_err("list", &self.root))?
    }
}

/// Walks the directory `prefix` is in; objects being written (their
/// temporary names hold `.tmp-`) are left out.
fn list_dir(root: &Path, prefix: &str, dirs: bool) -> Result<Vec<(String, u64)>> {
    let dir = prefix.rfind('/').map_or("", |at| &prefix[..=at]);
    let mut keys = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        let path = root.join(&dir);
        let read = match std::fs::read_dir(&path) {
            Ok(read) => read,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_err("list", &path)(e)),
        };
        for item in read {
            let item = item.map_err(io_err("list", &path))?;
            let Ok(name) = item.file_name().into_string() else {
                continue;
            };
            let key = format!("{dir}{name}");
            if !key.starts_with(prefix) {
                continue;
            }
            let is_dir = item.file_type().map_err(io_err("list", &path))?.is_dir();
            match (is_dir, dirs) {
                (true, true) => keys.push((format!("{key}/"), 0)),
                (true, false) => pending.push(format!("{key}/")),
                (false, false) if !name.contains(".tmp-") => {
                    let size = item.metadata().map_err(io_err("list", &path))?.len();
                    keys.push((key, size));
                }
                _ => {}
            }
        }
    }
    keys.sort();
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_directory_repository_lists_keys_and_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::open_dir(dir.path()).await.unwrap();
        for key in [
            "tenants/acme/snapshots/b",
            "tenants/acme/snapshots/a",
            "tenants/acme/packs/ab/abcd",
            "tenants/zeta/keys/k/kek.json",
        ] {
            repo.put_new_bytes(key, key.as_bytes()).await.unwrap();
        }
        std::fs::write(dir.path().join("tenants/acme/snapshots/c.tmp-0011"), b"").unwrap();
        assert_eq!(
            repo.list("tenants/acme/snapshots/").await.unwrap(),
            ["tenants/acme/snapshots/a", "tenants/acme/snapshots/b"]
        );
        assert_eq!(
            repo.list("tenants/acme/").await.unwrap(),
            [
                "tenants/acme/packs/ab/abcd",
                "tenants/acme/snapshots/a",
                "tenants/acme/snapshots/b"
            ]
        );
        assert_eq!(repo.list_dirs("tenants/").await.unwrap(), ["acme", "zeta"]);
        assert!(repo.list("tenants/nobody/").await.unwrap().is_empty());
        let key = "tenants/acme/packs/ab/abcd";
        assert_eq!(
            repo.list_sized("tenants/acme/packs/").await.unwrap(),
            [(key.to_owned(), key.len() as u64)]
        );
        // Never replaced: the same bytes are a no-op, others a conflict.
        repo.put_new_bytes("tenants/acme/snapshots/a", b"tenants/acme/snapshots/a")
            .await
            .unwrap();
        assert!(matches!(
            repo.put_new_bytes("tenants/acme/snapshots/a", b"other")
                .await,
            Err(crate::Error::Conflict { .. })
        ));
    }
}
