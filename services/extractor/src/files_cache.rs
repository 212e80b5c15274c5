//! The files cache: for every file the last extraction of a source read, its
//! stat fields, content digest and chunk list. An incremental backup reads
//! only files whose size, mtime, ctime or inode changed, as restic and borg
//! do; the others reuse their chunk list once the catalog confirms those
//! chunks are still stored (see `files::Walker::confirm`).
//!
//! Like restic's and borg's caches it is kept on the extractor's own disk
//! (`<staging.path>/.cache`), so it never leaves the host that read the files.
//! A replica without it, a cache written under another chunk key or for
//! another root, or a damaged one only costs a full read. It is read in step
//! with the walk (both are in walk order), so memory does not depend on the
//! number of files.

use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use vaultline_types::ChunkId;

/// Bumped when the record layout changes; older caches are ignored.
const FORMAT: u32 = 2;

#[derive(Serialize, Deserialize)]
struct CacheHeader {
    format: u32,
    /// The tenant key whose chunk key made the chunk ids.
    key_id: String,
    #[serde(with = "serde_bytes")]
    root: Vec<u8>,
}

/// The stat fields that must all be equal for a file to count as unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Stat {
    pub(crate) size: u64,
    mtime: i64,
    mtime_nanos: i64,
    ctime: i64,
    ctime_nanos: i64,
    ino: u64,
}

impl Stat {
    pub(crate) fn of(meta: &std::fs::Metadata) -> Stat {
        Stat {
            size: meta.len(),
            mtime: meta.mtime(),
            mtime_nanos: meta.mtime_nsec(),
            ctime: meta.ctime(),
            ctime_nanos: meta.ctime_nsec(),
            ino: meta.ino(),
        }
    }

    /// The same stat with the size actually read (a file growing while it
    /// is read then never matches its cached record).
    pub(crate) fn with_size(self, size: u64) -> Stat {
        Stat { size, ..self }
    }
}

/// One file as the last extraction read it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct CachedFile {
    #[serde(with = "serde_bytes")]
    pub(crate) path: Vec<u8>,
    pub(crate) stat: Stat,
    /// Content digest, for the source digest.
    pub(crate) content: [u8; 32],
    /// Chunk ids and plain lengths, in order.
    pub(crate) chunks: Vec<(ChunkId, u32)>,
}

/// Where a source's cache lives.
pub(crate) fn cache_path(cache_dir: &Path, tenant: &str, source: &str) -> PathBuf {
    cache_dir.join("files").join(tenant).join(source)
}

/// Orders paths as the walk yields them: component by component.
fn walk_order(a: &[u8], b: &[u8]) -> Ordering {
    a.split(|&c| c == b'/').cmp(b.split(|&c| c == b'/'))
}

/// The previous extraction's cache, read in step with the walk.
pub(crate) struct Previous {
    input: Option<BufReader<File>>,
    next: Option<CachedFile>,
}

impl Previous {
    /// Opens the cache at `path` when it was written for this chunk key and
    /// root; otherwise an empty one.
    pub(crate) fn open(path: &Path, key_id: &str, root: &[u8]) -> Previous {
        let empty = Previous {
            input: None,
            next: None,
        };
        let Ok(file) = File::open(path) else {
            return empty;
        };
        let mut input = BufReader::with_capacity(256 << 10, file);
        match rmp_serde::from_read::<_, CacheHeader>(&mut input) {
            Ok(h) if h.format == FORMAT && h.key_id == key_id && h.root == root => {}
            Ok(_) => {
                tracing::info!(path = %path.display(), "The files cache is for another key or root; reading every file.");
                return empty;
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "The files cache is unreadable; reading every file.");
                return empty;
            }
        }
        let mut previous = Previous {
            input: Some(input),
            next: None,
        };
        previous.advance();
        previous
    }

    fn advance(&mut self) {
        self.next = None;
        let Some(input) = &mut self.input else { return };
        if matches!(input.fill_buf(), Ok([])) {
            self.input = None;
            return;
        }
        match rmp_serde::from_read::<_, CachedFile>(input) {
            Ok(file) => self.next = Some(file),
            Err(e) => {
                // A damaged tail only means the rest is read again.
                tracing::warn!(error = %e, "The files cache ends early; reading the rest.");
                self.input = None;
            }
        }
    }

    /// The cached record of `path` when its stat fields are all unchanged.
    /// Calls must come in walk order.
    pub(crate) fn unchanged(&mut self, path: &[u8], stat: &Stat) -> Option<CachedFile> {
        loop {
            let order = walk_order(&self.next.as_ref()?.path, path);
            match order {
                Ordering::Less => self.advance(),
                Ordering::Greater => return None,
                Ordering::Equal => {
                    let file = self.next.take().expect("checked above");
                    self.advance();
                    return (file.stat == *stat).then_some(file);
                }
            }
        }
    }
}

/// The cache this extraction writes, put in place only when it succeeds.
/// Failing to write it never fails a backup: the next one reads more.
pub(crate) struct Next {
    out: Option<BufWriter<File>>,
    temp: PathBuf,
    path: PathBuf,
    /// Files changed this recently (seconds since the epoch) are left out:
    /// a write in the same clock tick as our read would look unchanged.
    racy_after: i64,
}

impl Next {
    pub(crate) fn create(path: PathBuf, key_id: &str, root: &[u8], racy_after: i64) -> Next {
        // Unique, so two extractions of one source at once (two manual
        // triggers) never write into the same file; the last rename wins.
        static WRITERS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = WRITERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let temp = path.with_extension(format!("partial-{}-{n}", std::process::id()));
        let out = (|| -> std::io::Result<BufWriter<File>> {
            std::fs::create_dir_all(path.parent().expect("cache paths have a parent"))?;
            let mut out = BufWriter::with_capacity(256 << 10, File::create(&temp)?);
            let header = CacheHeader {
                format: FORMAT,
                key_id: key_id.to_owned(),
                root: root.to_vec(),
            };
            rmp_serde::encode::write(&mut out, &header).map_err(std::io::Error::other)?;
            Ok(out)
        })();
        let out = out
            .inspect_err(|e| tracing::warn!(path = %temp.display(), error = %e, "Cannot write the files cache."))
            .ok();
        Next {
            out,
            temp,
            path,
            racy_after,
        }
    }

    pub(crate) fn add(&mut self, file: &CachedFile) {
        if file.stat.mtime >= self.racy_after || file.stat.ctime >= self.racy_after {
            return;
        }
        let Some(out) = &mut self.out else { return };
        if let Err(e) = rmp_serde::encode::write(out, file) {
            tracing::warn!(error = %e, "Cannot write the files cache.");
            self.out = None;
            let _ = std::fs::remove_file(&self.temp);
        }
    }

    /// Puts the cache in place of the previous one.
    pub(crate) fn commit(mut self) {
        let Some(mut out) = self.out.take() else {
            return;
        };
        let done = out
            .flush()
            .and_then(|()| std::fs::rename(&self.temp, &self.path));
        if let Err(e) = done {
            tracing::warn!(path = %self.path.display(), error = %e, "Cannot write the files cache.");
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

impl Drop for Next {
    fn drop(&mut self) {
        // Not committed: the extraction failed, the old cache stays.
        if self.out.take().is_some() {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, size: u64) -> CachedFile {
        CachedFile {
            path: path.as_bytes().to_vec(),
            stat: Stat {
                size,
                mtime: 10,
                mtime_nanos: 0,
                ctime: 10,
                ctime_nanos: 0,
                ino: 1,
            },
            content: [size as u8; 32],
            chunks: vec![(ChunkId([size as u8; 32]), size as u32)],
        }
    }

    #[test]
    fn paths_compare_in_walk_order() {
        // A directory's contents come before its siblings that sort after its name.
        assert_eq!(walk_order(b"a/b", b"a.txt"), Ordering::Less);
        assert_eq!(walk_order(b"a", b"a/b"), Ordering::Less);
        assert_eq!(walk_order(b"a/b", b"a/b"), Ordering::Equal);
        assert_eq!(walk_order(b"b", b"a/z"), Ordering::Greater);
    }

    #[test]
    fn a_cache_is_found_in_walk_order_and_only_for_its_key_and_root() {
        let dir = tempfile::tempdir().unwrap();
        let path = cache_path(dir.path(), "t", "s");
        let mut next = Next::create(path.clone(), "k1", b"/root", 100);
        for f in [
            file("a/b", 1),
            file("a/c", 2),
            file("a.txt", 3),
            file("z", 4),
        ] {
            next.add(&f);
        }
        let mut racy = file("zz", 5);
        racy.stat.ctime = 100;
        next.add(&racy);
        next.commit();

        let mut previous = Previous::open(&path, "k1", b"/root");
        let stat = |size| file("", size).stat;
        assert!(previous.unchanged(b"a", &stat(0)).is_none());
        assert_eq!(
            previous.unchanged(b"a/b", &stat(1)).unwrap().content,
            [1; 32]
        );
        // a/c skipped by the walk (deleted); a.txt changed size.
        assert!(previous.unchanged(b"a.txt", &stat(9)).is_none());
        assert_eq!(previous.unchanged(b"z", &stat(4)).unwrap().chunks.len(), 1);
        assert!(
            previous.unchanged(b"zz", &stat(5)).is_none(),
            "racy files are not cached"
        );

        assert!(
            Previous::open(&path, "k2", b"/root")
                .unchanged(b"a/b", &stat(1))
                .is_none()
        );
        assert!(
            Previous::open(&path, "k1", b"/other")
                .unchanged(b"a/b", &stat(1))
                .is_none()
        );
    }

    #[test]
    fn an_unfinished_cache_leaves_the_previous_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = cache_path(dir.path(), "t", "s");
        let mut next = Next::create(path.clone(), "k", b"/r", 100);
        next.add(&file("a", 1));
        next.commit();
        let mut failed = Next::create(path.clone(), "k", b"/r", 100);
        failed.add(&file("b", 2));
        drop(failed);
        let stat = file("", 1).stat;
        assert!(
            Previous::open(&path, "k", b"/r")
                .unchanged(b"a", &stat)
                .is_some()
        );
        assert_eq!(
            std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
            1
        );
    }
}
