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
/// A stream's record has the default, zero stat (never compared).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
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

    /// A file on a host that gives only its size and whole-second mtime
    /// (SFTP): no ctime or inode to compare.
    pub(crate) fn remote(size: u64, mtime: i64) -> Stat {
        Stat {
            size,
            mtime,
            ..Stat::default()
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

/// Where a stream source (a database dump, a command's output) keeps the
/// chunk list of its last stream, in the same format: one record, under
/// [`STREAM_ROOT`], with a zero stat. A stream is read whole every time;
/// its last chunk list only says which chunks to confirm stored up front.
pub(crate) fn stream_cache_path(cache_dir: &Path, tenant: &str, source: &str) -> PathBuf {
    cache_dir.join("streams").join(tenant).join(source)
}

/// The root a stream cache is written for.
pub(crate) const STREAM_ROOT: &[u8] = b"stream";

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

    /// The cached record of `path`, changed or not (the caller compares
    /// its stat). Calls must come in walk order.
    pub(crate) fn find(&mut self, path: &[u8]) -> Option<CachedFile> {
        loop {
            let order = walk_order(&self.next.as_ref()?.path, path);
            match order {
                Ordering::Less => self.advance(),
                Ordering::Greater => return None,
                Ordering::Equal => {
                    let file = self.next.take().expect("checked above");
                    self.advance();
                    return Some(file);
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
    /// When the walk began (nanoseconds since the epoch). Files changed
    /// just before are left out: a write in the same clock tick as our read
    /// would look unchanged.
    started: i128,
}

/// Linux stamps writes from a clock that ticks once a jiffy (at most 10 ms):
/// a file changed less than this before the walk began is not cached.
const RACY_MARGIN_NANOS: i128 = 100_000_000;

const NANOS: i128 = 1_000_000_000;

fn nanos(seconds: i64, nanos: i64) -> i128 {
    i128::from(seconds) * NANOS + i128::from(nanos)
}

impl Next {
    /// `started`: when the walk began, since the epoch.
    pub(crate) fn create(
        path: PathBuf,
        key_id: &str,
        root: &[u8],
        started: std::time::Duration,
    ) -> Next {
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
            started: started.as_nanos() as i128,
        }
    }

    /// Whether the file was changed too close to the walk's start to trust
    /// its stat next time.
    fn racy(&self, stat: &Stat) -> bool {
        if stat.mtime_nanos == 0 && stat.ctime_nanos == 0 {
            // Whole-second timestamps (a filesystem that keeps no finer):
            // anything from the second before the walk began on.
            let second = (self.started / NANOS - 1) * NANOS;
            return nanos(stat.mtime, 0) >= second || nanos(stat.ctime, 0) >= second;
        }
        let cutoff = self.started - RACY_MARGIN_NANOS;
        nanos(stat.mtime, stat.mtime_nanos) >= cutoff
            || nanos(stat.ctime, stat.ctime_nanos) >= cutoff
    }

    pub(crate) fn add(&mut self, file: &CachedFile) {
        if self.racy(&file.stat) {
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
    use std::time::Duration;

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

    /// The record of `path` when its stat is unchanged, as the walk uses it.
    fn unchanged(previous: &mut Previous, path: &[u8], stat: &Stat) -> Option<CachedFile> {
        previous.find(path).filter(|file| file.stat == *stat)
    }

    #[test]
    fn a_cache_is_found_in_walk_order_and_only_for_its_key_and_root() {
        let dir = tempfile::tempdir().unwrap();
        let path = cache_path(dir.path(), "t", "s");
        let mut next = Next::create(path.clone(), "k1", b"/root", Duration::from_secs(101));
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
        assert!(unchanged(&mut previous, b"a", &stat(0)).is_none());
        assert_eq!(
            unchanged(&mut previous, b"a/b", &stat(1)).unwrap().content,
            [1; 32]
        );
        // a/c skipped by the walk (deleted); a.txt changed size, and its
        // old record is still found (its chunks are likely still stored).
        let mut changed = Previous::open(&path, "k1", b"/root");
        assert_eq!(changed.find(b"a.txt").unwrap().stat.size, 3);
        assert!(unchanged(&mut previous, b"a.txt", &stat(9)).is_none());
        assert_eq!(
            unchanged(&mut previous, b"z", &stat(4))
                .unwrap()
                .chunks
                .len(),
            1
        );
        assert!(
            unchanged(&mut previous, b"zz", &stat(5)).is_none(),
            "racy files are not cached"
        );

        assert!(unchanged(&mut Previous::open(&path, "k2", b"/root"), b"a/b", &stat(1)).is_none());
        assert!(
            unchanged(
                &mut Previous::open(&path, "k1", b"/other"),
                b"a/b",
                &stat(1)
            )
            .is_none()
        );
    }

    #[test]
    fn files_changed_just_before_the_walk_are_not_cached() {
        let dir = tempfile::tempdir().unwrap();
        let path = cache_path(dir.path(), "t", "s");
        // The walk began at 1000.5 s.
        let mut next = Next::create(path.clone(), "k", b"/r", Duration::from_millis(1_000_500));
        let at = |name: &str, ctime: i64, ctime_nanos: i64| {
            let mut f = file(name, 1);
            (f.stat.ctime, f.stat.ctime_nanos) = (ctime, ctime_nanos);
            f
        };
        // Nanosecond timestamps: only the last 100 ms are racy.
        next.add(&at("a", 1000, 350_000_000));
        next.add(&at("b", 1000, 450_000_000));
        next.add(&at("c", 1001, 1));
        // Whole-second timestamps: the second before the walk's too.
        next.add(&at("d", 998, 0));
        next.add(&at("e", 999, 0));
        next.commit();
        let mut previous = Previous::open(&path, "k", b"/r");
        let cached: Vec<&str> = ["a", "b", "c", "d", "e"]
            .into_iter()
            .filter(|name| previous.find(name.as_bytes()).is_some())
            .collect();
        assert_eq!(cached, ["a", "d"]);
    }

    #[test]
    fn an_unfinished_cache_leaves_the_previous_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = cache_path(dir.path(), "t", "s");
        let mut next = Next::create(path.clone(), "k", b"/r", Duration::from_secs(101));
        next.add(&file("a", 1));
        next.commit();
        let mut failed = Next::create(path.clone(), "k", b"/r", Duration::from_secs(101));
        failed.add(&file("b", 2));
        drop(failed);
        let stat = file("", 1).stat;
        assert!(unchanged(&mut Previous::open(&path, "k", b"/r"), b"a", &stat).is_some());
        assert_eq!(
            std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
            1
        );
    }
}
