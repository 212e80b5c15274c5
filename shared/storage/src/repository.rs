//! The repository backend. On one node: a local directory. Objects are
//! immutable once written and become visible only complete (write to a
//! temporary name, fsync, rename).

use crate::{Result, S3Repository, check_key, io_err, join_err, temp_suffix};
use std::path::{Path, PathBuf};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use vaultline_types::{Name, PackId, SnapshotId};

/// Object keys of the repository layout (`schemas/repository-format.md`).
pub struct ObjectKey;

impl ObjectKey {
    /// `tenants/<tenant>/packs/<first two hex>/<pack id>`
    pub fn pack(tenant: &Name, pack: &PackId) -> String {
        let hex = pack.to_hex();
        format!("tenants/{tenant}/packs/{}/{hex}", &hex[..2])
    }
    /// `tenants/<tenant>/packs/`: every pack of a tenant, one directory
    /// below it for each first two hex digits.
    pub fn packs(tenant: &Name) -> String {
        format!("tenants/{tenant}/packs/")
    }
    /// `tenants/<tenant>/snapshots/<snapshot id>`
    pub fn manifest(tenant: &Name, snapshot: &SnapshotId) -> String {
        format!("tenants/{tenant}/snapshots/{snapshot}")
    }
    /// `tenants/<tenant>/snapshots/`: every manifest of a tenant.
    pub fn manifests(tenant: &Name) -> String {
        format!("tenants/{tenant}/snapshots/")
    }
    /// `tenants/<tenant>/keys/<key id>/<KEK id>.json`: a tenant key wrapped
    /// by one KEK. A new KEK adds a record beside the old; none is replaced.
    pub fn key_record(tenant: &Name, key_id: &str, kek_id: &str) -> String {
        format!("tenants/{tenant}/keys/{key_id}/{kek_id}.json")
    }
    /// `tenants/<tenant>/keys/`: every key record of a tenant.
    pub fn key_records(tenant: &Name) -> String {
        format!("tenants/{tenant}/keys/")
    }
    /// `tenants/<tenant>/wal/<source>/<file name>.<sealed sha256, 16 hex>`:
    /// an archived WAL file. The digest in the name makes every sealing of
    /// a file its own object, so a push retried after a crash never meets
    /// its own earlier, differently encrypted, object.
    pub fn wal(tenant: &Name, source: &Name, file: &str, sealed_sha256: &[u8; 32]) -> String {
        format!(
            "tenants/{tenant}/wal/{source}/{file}.{}",
            hex::encode(&sealed_sha256[..8])
        )
    }
    /// `tenants/<tenant>/wal/<source>/`: every archived WAL file of a source.
    pub fn wal_files(tenant: &Name, source: &Name) -> String {
        format!("tenants/{tenant}/wal/{source}/")
    }
    /// `tenants/`: one directory per tenant below it.
    pub const TENANTS: &'static str = "tenants/";
}

/// A repository backend. An enum rather than a trait object: the set of
/// backends is closed and known.
#[derive(Debug, Clone)]
pub enum Repository {
    /// A directory on a local filesystem.
    Fs(FsRepository),
    /// A bucket (and key prefix) on an S3-compatible server.
    S3(S3Repository),
}

/// Local-directory backend.
#[derive(Debug, Clone)]
pub struct FsRepository {
    pub(crate) root: PathBuf,
}

impl Repository {
    /// Opens (and creates) a directory repository.
    ///
    /// # Errors
    /// When the directory cannot be created.
    pub async fn open_dir(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        tokio::fs::create_dir_all(&root)
            .await
            .map_err(io_err("create repository", &root))?;
        Ok(Repository::Fs(FsRepository { root }))
    }

    /// A short description for logs and health output.
    pub fn describe(&self) -> String {
        match self {
            Repository::Fs(fs) => format!("file://{}", fs.root.display()),
            Repository::S3(s3) => s3.describe(),
        }
    }

    /// Stores the file at `local` under `key`, never replacing an object:
    /// one already there with the same bytes makes this a no-op (a repeated
    /// put), one with other bytes is [`crate::Error::Conflict`] and stays.
    ///
    /// # Errors
    /// When reading `local` or writing the object fails, or on a conflict.
    pub async fn put_file(&self, key: &str, local: &Path) -> Result<u64> {
        check_key(key)?;
        match self {
            Repository::Fs(fs) => fs.put_file(key, local, false).await,
            Repository::S3(s3) => s3.put_file(key, local, false).await,
        }
    }

    /// Stores the file at `local` under `key`, replacing whatever is there
    /// (manifests: a crashed earlier attempt may have left different bytes).
    ///
    /// # Errors
    /// When reading `local` or writing the object fails.
    pub async fn replace_file(&self, key: &str, local: &Path) -> Result<u64> {
        check_key(key)?;
        match self {
            Repository::Fs(fs) => fs.put_file(key, local, true).await,
            Repository::S3(s3) => s3.put_file(key, local, true).await,
        }
    }

    /// Stores `bytes` under `key`, replacing nothing that is already complete.
    ///
    /// # Errors
    /// When writing fails.
    pub async fn put_bytes(&self, key: &str, bytes: &[u8]) -> Result<()> {
        check_key(key)?;
        match self {
            Repository::Fs(fs) => fs.put_bytes(key, bytes).await,
            Repository::S3(s3) => s3.put_bytes(key, bytes).await,
        }
    }

    /// Stores `bytes` under `key` unless an object is there already:
    /// the same bytes are a no-op, other bytes [`crate::Error::Conflict`]
    /// (and stay). For records that must never be replaced.
    ///
    /// # Errors
    /// When writing fails, or on a conflict.
    pub async fn put_new_bytes(&self, key: &str, bytes: &[u8]) -> Result<()> {
        check_key(key)?;
        let local =
            tempfile::NamedTempFile::new().map_err(io_err("create", Path::new("(temp)")))?;
        tokio::fs::write(local.path(), bytes)
            .await
            .map_err(io_err("write", local.path()))?;
        self.put_file(key, local.path()).await.map(|_| ())
    }

    /// Reads a whole object.
    ///
    /// # Errors
    /// [`crate::Error::NotFound`] when absent.
    pub async fn get(&self, key: &str) -> Result<Vec<u8>> {
        check_key(key)?;
        match self {
            Repository::S3(s3) => s3.get(key).await,
            Repository::Fs(fs) => {
                let path = fs.root.join(key);
                tokio::fs::read(&path)
                    .await
                    .map_err(|e| not_found_or(e, "object", key, &path))
            }
        }
    }

    /// SHA-256 and size of a stored object, read in 1 MiB blocks so memory does
    /// not grow with the object (level-1 verification).
    ///
    /// # Errors
    /// [`crate::Error::NotFound`] when absent.
    pub async fn digest(&self, key: &str) -> Result<([u8; 32], u64)> {
        check_key(key)?;
        match self {
            Repository::S3(s3) => s3.digest(key).await,
            Repository::Fs(fs) => {
                // One blocking task per object: tokio's file reads would hop
                // to the blocking pool and copy through its buffer per read.
                let (path, key) = (fs.root.join(key), key.to_owned());
                tokio::task::spawn_blocking(move || {
                    crate::sha256_file(&path).map_err(|e| not_found_or(e, "object", &key, &path))
                })
                .await
                .map_err(join_err("hash", &fs.root))?
            }
        }
    }

    /// Reads `length` bytes at `offset` of an object.
    ///
    /// # Errors
    /// [`crate::Error::NotFound`] when absent; an I/O error when the range is past its end.
    pub async fn get_range(&self, key: &str, offset: u64, length: u32) -> Result<Vec<u8>> {
        check_key(key)?;
        match self {
            Repository::S3(s3) => s3.get_range(key, offset, length).await,
            Repository::Fs(fs) => {
                let path = fs.root.join(key);
                let mut file = tokio::fs::File::open(&path)
                    .await
                    .map_err(|e| not_found_or(e, "object", key, &path))?;
                file.seek(std::io::SeekFrom::Start(offset))
                    .await
                    .map_err(io_err("seek", &path))?;
                let mut buf = vec![0u8; length as usize];
                file.read_exact(&mut buf)
                    .await
                    .map_err(io_err("read", &path))?;
                Ok(buf)
            }
        }
    }

    /// Copies an object into the local file `dest` (created or truncated),
    /// returning the SHA-256 and size of what was read. Streams: memory does
    /// not grow with the object.
    ///
    /// # Errors
    /// [`crate::Error::NotFound`] when absent; I/O errors writing `dest`.
    pub async fn download(&self, key: &str, dest: &Path) -> Result<([u8; 32], u64)> {
        check_key(key)?;
        match self {
            Repository::S3(s3) => s3.download(key, dest).await,
            Repository::Fs(fs) => {
                let (path, key, dest) = (fs.root.join(key), key.to_owned(), dest.to_owned());
                tokio::task::spawn_blocking(move || copy_hashing(&path, &dest, &key))
                    .await
                    .map_err(join_err("copy", &fs.root))?
            }
        }
    }

    /// Size of an object, or `None` when absent.
    ///
    /// # Errors
    /// On I/O errors other than absence.
    pub async fn size(&self, key: &str) -> Result<Option<u64>> {
        check_key(key)?;
        match self {
            Repository::S3(s3) => s3.size(key).await,
            Repository::Fs(fs) => {
                let path = fs.root.join(key);
                match tokio::fs::metadata(&path).await {
                    Ok(meta) => Ok(Some(meta.len())),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(io_err("stat", &path)(e)),
                }
            }
        }
    }

    /// Deletes an object; deleting an absent object succeeds.
    ///
    /// # Errors
    /// On I/O errors other than absence.
    pub async fn delete(&self, key: &str) -> Result<()> {
        check_key(key)?;
        match self {
            Repository::S3(s3) => s3.delete(key).await,
            Repository::Fs(fs) => {
                let path = fs.root.join(key);
                match tokio::fs::remove_file(&path).await {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        Err(io_err("delete", &path)(e))
                    }
                    _ => Ok(()),
                }
            }
        }
    }

    /// Checks the backend answers (used by `/health/ready`).
    ///
    /// # Errors
    /// When the root is not a readable directory.
    pub async fn ping(&self) -> Result<()> {
        match self {
            Repository::S3(s3) => s3.ping().await,
            Repository::Fs(fs) => {
                let _entries = tokio::fs::read_dir(&fs.root)
                    .await
                    .map_err(io_err("list", &fs.root))?;
                Ok(())
            }
        }
    }
}

/// The stored object at `target` when it holds exactly the bytes of
/// `local` (a repeated put), else [`crate::Error::Conflict`].
async fn same_file_or_conflict(key: &str, target: &Path, local: &Path) -> Result<u64> {
    let (stored, theirs) = (target.to_owned(), local.to_owned());
    let digests = tokio::task::spawn_blocking(move || {
        Ok::<_, crate::Error>((
            crate::sha256_file(&stored).map_err(io_err("read", &stored))?,
            crate::sha256_file(&theirs).map_err(io_err("read", &theirs))?,
        ))
    })
    .await
    .map_err(join_err("compare", target))??;
    crate::same_or_conflict(key, digests.0, digests.1)
}

/// Copies `path` to `dest`, hashing what passes.
fn copy_hashing(path: &Path, dest: &Path, key: &str) -> Result<([u8; 32], u64)> {
    let mut from = std::fs::File::open(path).map_err(|e| not_found_or(e, "object", key, path))?;
    let to = std::fs::File::create(dest).map_err(io_err("create", dest))?;
    crate::sha256_copy(&mut from, to).map_err(io_err("copy to", dest))
}

pub(crate) fn not_found_or(
    e: std::io::Error,
    what: &'static str,
    key: &str,
    path: &Path,
) -> crate::Error {
    if e.kind() == std::io::ErrorKind::NotFound {
        crate::Error::NotFound {
            what,
            key: key.to_owned(),
        }
    } else {
        io_err("read", path)(e)
    }
}

impl FsRepository {
    async fn put_file(&self, key: &str, local: &Path, replace: bool) -> Result<u64> {
        let target = self.root.join(key);
        let size = tokio::fs::metadata(local)
            .await
            .map_err(io_err("stat", local))?
            .len();
        if !replace && tokio::fs::symlink_metadata(&target).await.is_ok() {
            return same_file_or_conflict(key, &target, local).await;
        }
        let temp = self.temp_for(&target).await?;
        // Staged files are never written again once committed, so on the same
        // filesystem a second link stores the object without copying its
        // bytes again (the copy read and wrote every pack a second time).
        if tokio::fs::hard_link(local, &temp).await.is_err() {
            tokio::fs::copy(local, &temp)
                .await
                .map_err(io_err("copy to", &temp))?;
        }
        if replace {
            self.commit(&temp, &target).await?;
        } else {
            self.commit_exclusive(key, &temp, &target, local).await?;
        }
        Ok(size)
    }

    /// Like [`Self::commit`], but never over an existing object: a link
    /// fails when the name is taken, where a rename would replace it. A
    /// writer that lost the race finds the winner's object and compares.
    async fn commit_exclusive(
        &self,
        key: &str,
        temp: &Path,
        target: &Path,
        local: &Path,
    ) -> Result<()> {
        let file = tokio::fs::File::open(temp)
            .await
            .map_err(io_err("open", temp))?;
        file.sync_all().await.map_err(io_err("fsync", temp))?;
        let linked = tokio::fs::hard_link(temp, target).await;
        let _ = tokio::fs::remove_file(temp).await;
        match linked {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                same_file_or_conflict(key, target, local).await.map(|_| ())
            }
            Err(e) => Err(io_err("link", target)(e)),
        }
    }

    async fn put_bytes(&self, key: &str, bytes: &[u8]) -> Result<()> {
        let target = self.root.join(key);
        let temp = self.temp_for(&target).await?;
        tokio::fs::write(&temp, bytes)
            .await
            .map_err(io_err("write", &temp))?;
        self.commit(&temp, &target).await
    }

    async fn temp_for(&self, target: &Path) -> Result<PathBuf> {
        let parent = target.parent().expect("object keys have a parent");
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(io_err("create directory", parent))?;
        let mut name = target
            .file_name()
            .expect("object keys have a name")
            .to_os_string();
        name.push(temp_suffix());
        Ok(parent.join(name))
    }

    /// fsync, then rename: a reader sees the whole object or none of it, even
    /// after a power cut.
    async fn commit(&self, temp: &Path, target: &Path) -> Result<()> {
        let file = tokio::fs::File::open(temp)
            .await
            .map_err(io_err("open", temp))?;
        file.sync_all().await.map_err(io_err("fsync", temp))?;
        if let Err(e) = tokio::fs::rename(temp, target).await {
            let _ = tokio::fs::remove_file(temp).await;
            return Err(io_err("rename", target)(e));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest;

    #[tokio::test]
    async fn objects_round_trip_and_puts_are_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::open_dir(dir.path().join("repo")).await.unwrap();
        let local = dir.path().join("pack");
        std::fs::write(&local, b"0123456789").unwrap();
        assert_eq!(repo.put_file("a/b/c", &local).await.unwrap(), 10);
        assert_eq!(repo.put_file("a/b/c", &local).await.unwrap(), 10);
        assert_eq!(repo.get_range("a/b/c", 3, 4).await.unwrap(), b"3456");
        assert_eq!(repo.size("a/b/c").await.unwrap(), Some(10));
        let (digest, size) = repo.digest("a/b/c").await.unwrap();
        assert_eq!(
            (hex::encode(digest), size),
            (hex::encode(sha2::Sha256::digest(b"0123456789")), 10)
        );
        let copied = dir.path().join("copied");
        assert_eq!(repo.download("a/b/c", &copied).await.unwrap(), (digest, 10));
        assert_eq!(std::fs::read(&copied).unwrap(), b"0123456789");
        assert!(matches!(
            repo.download("a/b/none", &copied).await,
            Err(crate::Error::NotFound { .. })
        ));
        assert!(repo.get_range("a/b/c", 8, 4).await.is_err());
        repo.delete("a/b/c").await.unwrap();
        assert!(matches!(
            repo.get("a/b/c").await,
            Err(crate::Error::NotFound { .. })
        ));
        assert!(matches!(
            repo.get("../x").await,
            Err(crate::Error::InvalidKey(_))
        ));
    }

    #[tokio::test]
    async fn an_object_is_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::open_dir(dir.path().join("repo")).await.unwrap();
        let (first, same_size, longer) = (
            dir.path().join("first"),
            dir.path().join("same-size"),
            dir.path().join("longer"),
        );
        std::fs::write(&first, b"original").unwrap();
        std::fs::write(&same_size, b"ORIGINAL").unwrap();
        std::fs::write(&longer, b"original, longer").unwrap();
        repo.put_file("p/k", &first).await.unwrap();
        for other in [&same_size, &longer] {
            let refused = repo.put_file("p/k", other).await.unwrap_err();
            assert!(
                matches!(&refused, crate::Error::Conflict { key, .. } if key == "p/k"),
                "{refused}"
            );
        }
        assert_eq!(repo.get("p/k").await.unwrap(), b"original");
        assert_eq!(repo.put_file("p/k", &first).await.unwrap(), 8);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("repo/p"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, ["k"], "no temporary file stays behind");
    }
}
