//! The entries the walk holds back, in walk order: files found unchanged,
//! waiting for one catalog query to confirm their chunks are still stored,
//! and large files being read on reader threads. Each goes into the draft,
//! the digest and the next cache once everything before it has.

use super::{HELD_BYTES, HELD_CHUNKS, ReadJob, ReadResult, Recorded, Tree, Walker, read_file};
use crate::files_cache::{CachedFile, Stat};
use std::path::{Path, PathBuf};
use vaultline_format::manifest::{ChunkRef, Entry, EntryKind, Record};
use vaultline_runtime::{ErrorType, StageError};

/// An entry waiting for its place in the draft.
pub(super) enum Slot {
    /// Ready to record (`stat` for files).
    Done {
        entry: Entry,
        content: [u8; 32],
        stat: Option<Stat>,
    },
    /// Taken from the cache; kept once its chunks are confirmed stored,
    /// read again from `path` otherwise.
    Cached {
        entry: Entry,
        content: [u8; 32],
        path: PathBuf,
        stat: Stat,
    },
    /// Being read by a reader thread.
    Reading {
        result: std::sync::mpsc::Receiver<ReadResult>,
        stat: Stat,
    },
}

impl Slot {
    /// About the memory the slot takes while it waits.
    fn weight(&self) -> usize {
        let (entry, path) = match self {
            Slot::Done { entry, .. } => (Some(entry), None),
            Slot::Cached { entry, path, .. } => (Some(entry), Some(path)),
            Slot::Reading { .. } => (None, None),
        };
        size_of::<Slot>()
            + entry.map_or(0, |e| {
                e.path.len()
                    + e.target.as_ref().map_or(0, Vec::len)
                    + e.chunks.len() * size_of::<ChunkRef>()
                    + e.owner.as_ref().map_or(0, |o| {
                        o.user.as_ref().map_or(0, String::len)
                            + o.group.as_ref().map_or(0, String::len)
                    })
                    + e.xattrs
                        .iter()
                        .map(|x| x.name.len() + x.value.len())
                        .sum::<usize>()
            })
            + path.map_or(0, |p| p.as_os_str().len())
    }
}

impl<T: Tree> Walker<'_, '_, T> {
    /// Queues an entry behind the others and records what is ready.
    pub(super) fn wait(&mut self, slot: Slot) -> Result<(), StageError> {
        self.held_bytes += slot.weight();
        self.waiting.push_back(slot);
        if self.cached_chunks >= HELD_CHUNKS {
            self.confirm()?;
        }
        if self.held_bytes >= HELD_BYTES {
            self.confirm()?;
            // Bounded: wait for the reads at the front rather than queue more.
            self.record_ready(true)?;
        }
        self.record_ready(false)
    }

    /// Reads a small file now, or hands a large one to a reader thread
    /// (waiting while both are busy); `None` when the file was deleted.
    pub(super) fn read(
        &mut self,
        mut entry: Entry,
        path: &Path,
        stat: Stat,
    ) -> Result<Option<Slot>, StageError> {
        if stat.size < T::PARALLEL_FROM {
            let read = read_file(
                self.tree,
                path,
                &mut entry,
                stat.size,
                self.batches,
                &mut self.chunker,
                &self.job.chunk_key,
            )?;
            return Ok(read.map(|content| Slot::Done {
                entry,
                content,
                stat: Some(stat),
            }));
        }
        let (reply, result) = std::sync::mpsc::sync_channel(1);
        self.reads
            .send(ReadJob {
                path: path.to_owned(),
                entry,
                size: stat.size,
                reply,
            })
            .map_err(|_| StageError::transient(ErrorType::Internal, "the file readers stopped"))?;
        Ok(Some(Slot::Reading { result, stat }))
    }

    /// Unchanged files keep their cached chunks only when the catalog still
    /// has every one of them (retention may have collected them since);
    /// otherwise they are read again.
    pub(super) fn confirm(&mut self) -> Result<(), StageError> {
        self.cached_chunks = 0;
        // Chunks this extraction already handed on need no lookup.
        let unseen = self.batches.unseen(
            self.waiting
                .iter()
                .flat_map(|slot| match slot {
                    Slot::Cached { entry, .. } => entry.chunks.as_slice(),
                    _ => &[],
                })
                .map(|c| c.id),
        );
        let stored = self
            .batches
            .stored(&unseen.iter().copied().collect::<Vec<_>>())?;
        for slot in std::mem::take(&mut self.waiting) {
            let Slot::Cached {
                mut entry,
                content,
                path,
                stat,
            } = slot
            else {
                self.waiting.push_back(slot);
                continue;
            };
            let kept = entry
                .chunks
                .iter()
                .all(|c| !unseen.contains(&c.id) || stored.contains(&c.id));
            if kept {
                self.recorded.reused += 1;
                self.waiting.push_back(Slot::Done {
                    entry,
                    content,
                    stat: Some(stat),
                });
            } else {
                entry.chunks.clear();
                entry.size = 0;
                if let Some(slot) = self.read(entry, &path, stat)? {
                    self.waiting.push_back(slot);
                }
            }
        }
        self.held_bytes = self.waiting.iter().map(Slot::weight).sum();
        Ok(())
    }

    /// Records the entries at the front that are ready, in walk order; with
    /// `block`, waits for reads in progress too (not for confirmation).
    pub(super) fn record_ready(&mut self, block: bool) -> Result<(), StageError> {
        loop {
            // A read's result; `None` when its reader died without one.
            let read = match self.waiting.front() {
                None | Some(Slot::Cached { .. }) => return Ok(()),
                Some(Slot::Done { .. }) => None,
                Some(Slot::Reading { result, .. }) if block => Some(result.recv().ok()),
                Some(Slot::Reading { result, .. }) => match result.try_recv() {
                    Err(std::sync::mpsc::TryRecvError::Empty) => return Ok(()),
                    read => Some(read.ok()),
                },
            };
            let front = self.waiting.pop_front().expect("the front entry");
            self.held_bytes -= front.weight();
            match front {
                Slot::Done {
                    entry,
                    content,
                    stat,
                } => self.recorded.record(entry, content, stat)?,
                Slot::Reading { stat, .. } => {
                    let read = read.flatten().ok_or_else(|| {
                        StageError::transient(
                            ErrorType::Internal,
                            "a file reader stopped without an answer",
                        )
                    })??;
                    if let Some((entry, content)) = read {
                        self.recorded.record(entry, content, Some(stat))?;
                    }
                }
                Slot::Cached { .. } => unreachable!("returned above"),
            }
        }
    }
}

impl Recorded {
    /// Puts an entry in the draft, the digest and (files) the next cache.
    fn record(
        &mut self,
        entry: Entry,
        content: [u8; 32],
        stat: Option<Stat>,
    ) -> Result<(), StageError> {
        if entry.kind == EntryKind::Hardlink
            && !entry
                .target
                .as_ref()
                .is_some_and(|first| self.linked.contains(first))
        {
            // Its first name vanished before it could be read.
            return Ok(());
        }
        if entry.nlink > 1 {
            self.linked.insert(entry.path.clone());
        }
        self.digest.entry(&entry, content);
        if let Some(stat) = stat {
            self.files += 1;
            self.bytes_read += entry.size;
            self.next.add(&CachedFile {
                path: entry.path.clone(),
                // The size read, which a file growing meanwhile makes differ
                // from the stat: then it will not match next time.
                stat: stat.with_size(entry.size),
                content,
                chunks: entry.chunks.iter().map(|c| (c.id, c.raw_length)).collect(),
            });
        }
        self.draft.write(&Record::Entry(entry))?;
        self.entries += 1;
        Ok(())
    }
}
