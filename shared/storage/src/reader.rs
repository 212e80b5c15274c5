//! Ranged reads for one long reader (a restore), which reads each pack in
//! hundreds of runs: on a directory repository the packs read last stay open,
//! and each read is one positioned read on a blocking thread. Opening the pack
//! for every run cost a restore of 20,000 small files 20,000 `openat` calls,
//! and tokio's file API three thread hand-offs per run (open, seek, read).

use crate::{Repository, Result, check_key, io_err, join_err};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// Packs kept open at once. A restore reads packs mostly in the order they
/// were written, so a few are enough; the bound keeps file descriptors few
/// whatever the snapshot's size.
const OPEN_FILES: usize = 16;

/// Open files of a directory repository by key, most recently used last.
type OpenFiles = Mutex<Vec<(String, Arc<std::fs::File>)>>;

/// Reads ranges of a repository's objects; see the module comment.
pub struct RangeReader {
    repo: Repository,
    open: Arc<OpenFiles>,
}

impl RangeReader {
    /// A reader of `repo`.
    pub fn new(repo: Repository) -> Self {
        RangeReader {
            repo,
            open: Arc::default(),
        }
    }

    /// Reads `length` bytes at `offset` of an object, like
    /// [`Repository::get_range`].
    ///
    /// # Errors
    /// [`crate::Error::NotFound`] when absent; an I/O error when the range is
    /// past its end.
    pub async fn get_range(&self, key: &str, offset: u64, length: u32) -> Result<Vec<u8>> {
        let Repository::Fs(fs) = &self.repo else {
            return self.repo.get_range(key, offset, length).await;
        };
        check_key(key)?;
        let (path, key, open) = (fs.root.join(key), key.to_owned(), self.open.clone());
        tokio::task::spawn_blocking(move || {
            let file = opened(&open, &key, &path)?;
            let mut buf = vec![0u8; length as usize];
            file.read_exact_at(&mut buf, offset)
                .map_err(io_err("read", &path))?;
            Ok(buf)
        })
        .await
        .map_err(join_err("read", &fs.root))?
    }
}

/// Bytes a streamed object is read ahead by, per ranged read.
const STREAM_WINDOW: u32 = 1 << 20;

/// One object read front to back as a [`std::io::Read`], in ranged reads
/// of [`STREAM_WINDOW`], for a blocking thread: a manifest of millions of
/// entries is never held whole.
pub struct ObjectReader {
    ranges: Arc<RangeReader>,
    key: String,
    size: u64,
    offset: u64,
    window: std::io::Cursor<Vec<u8>>,
    runtime: tokio::runtime::Handle,
}

impl ObjectReader {
    /// Opens `key` (its size is looked up now) on a blocking thread of `runtime`.
    ///
    /// # Errors
    /// [`crate::Error::NotFound`] when absent.
    pub fn open(
        ranges: Arc<RangeReader>,
        key: &str,
        runtime: tokio::runtime::Handle,
    ) -> Result<ObjectReader> {
        let size =
            runtime
                .block_on(ranges.repo.size(key))?
                .ok_or_else(|| crate::Error::NotFound {
                    what: "object",
                    key: key.to_owned(),
                })?;
        Ok(ObjectReader {
            ranges,
            key: key.to_owned(),
            size,
            offset: 0,
            window: std::io::Cursor::new(Vec::new()),
            runtime,
        })
    }
}

impl std::io::Read for ObjectReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.window.read(buf)?;
        if n > 0 || buf.is_empty() || self.offset == self.size {
            return Ok(n);
        }
        let length = (self.size - self.offset).min(u64::from(STREAM_WINDOW)) as u32;
        let bytes = self
            .runtime
            .block_on(self.ranges.get_range(&self.key, self.offset, length))
            .map_err(std::io::Error::other)?;
        self.offset += u64::from(length);
        self.window = std::io::Cursor::new(bytes);
        self.window.read(buf)
    }
}

/// The open file of `key`, opened now if it is not among the recent ones.
fn opened(open: &OpenFiles, key: &str, path: &Path) -> Result<Arc<std::fs::File>> {
    let mut recent = open.lock().expect("open files poisoned");
    if let Some(at) = recent.iter().position(|(k, _)| k == key) {
        let entry = recent.remove(at);
        let file = entry.1.clone();
        recent.push(entry);
        return Ok(file);
    }
    // Opened under the lock: two runs of a new pack would otherwise both open it.
    let file = Arc::new(
        std::fs::File::open(path)
            .map_err(|e| crate::repository::not_found_or(e, "object", key, path))?,
    );
    if recent.len() == OPEN_FILES {
        recent.remove(0);
    }
    recent.push((key.to_owned(), file.clone()));
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn objects_stream_in_windows() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::open_dir(dir.path()).await.unwrap();
        let local = dir.path().join("local");
        let bytes: Vec<u8> = (0..(STREAM_WINDOW as usize * 2 + 77))
            .map(|i| (i % 251) as u8)
            .collect();
        std::fs::write(&local, &bytes).unwrap();
        repo.put_file("o/big", &local).await.unwrap();
        let ranges = Arc::new(RangeReader::new(repo));
        let runtime = tokio::runtime::Handle::current();
        let read = tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            std::io::Read::read_to_end(
                &mut ObjectReader::open(ranges.clone(), "o/big", runtime.clone()).unwrap(),
                &mut out,
            )
            .unwrap();
            let missing = ObjectReader::open(ranges, "o/missing", runtime);
            (out, missing.is_err())
        })
        .await
        .unwrap();
        assert_eq!(read.0, bytes);
        assert!(read.1, "a missing object is an error at open");
    }

    #[tokio::test]
    async fn ranges_are_read_from_files_kept_open_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::open_dir(dir.path()).await.unwrap();
        let reader = RangeReader::new(repo.clone());
        for i in 0..OPEN_FILES + 2 {
            let local = dir.path().join(format!("local{i}"));
            std::fs::write(&local, format!("object {i:02} bytes")).unwrap();
            repo.put_file(&format!("o/{i}"), &local).await.unwrap();
        }
        for i in 0..OPEN_FILES + 2 {
            let read = reader.get_range(&format!("o/{i}"), 7, 2).await.unwrap();
            assert_eq!(read, format!("{i:02}").as_bytes());
        }
        assert_eq!(reader.open.lock().unwrap().len(), OPEN_FILES);
        // The oldest were closed, the latest is still open and still reads.
        let keys: Vec<String> = reader
            .open
            .lock()
            .unwrap()
            .iter()
            .map(|(k, _)| k.clone())
            .collect();
        assert!(
            !keys.contains(&"o/0".to_owned()) && keys.contains(&format!("o/{}", OPEN_FILES + 1))
        );
        assert_eq!(reader.get_range("o/0", 0, 6).await.unwrap(), b"object");
        assert!(matches!(
            reader.get_range("o/missing", 0, 1).await,
            Err(crate::Error::NotFound { .. })
        ));
        assert!(reader.get_range("o/1", 10, 100).await.is_err());
        assert!(matches!(
            reader.get_range("../x", 0, 1).await,
            Err(crate::Error::InvalidKey(_))
        ));
    }
}
