//! Content-defined chunking (FastCDC 2020) and keyed chunk ids.

use std::io::Read;
use std::sync::Arc;
use vaultline_types::ChunkId;

/// Smallest chunk; files smaller than this are one chunk.
pub const MIN_SIZE: usize = 64 * 1024;
/// Target average chunk size. A change rewrites the chunks it touches, so
/// the repository grows by the change plus about one chunk: at 1 MiB a 3 MiB
/// rewrite inside a large file stored 4.9 MiB on average, at 256 KiB
/// 3.5 MiB (measured over 24 positions in the benchmark's random file).
pub const AVG_SIZE: usize = 256 * 1024;
/// Largest chunk; bounds the memory one chunk can take.
pub const MAX_SIZE: usize = 1024 * 1024;

/// fastcdc's own streaming chunker, which [`Chunker`] replaced; kept as the
/// reference its cut points are tested against.
#[cfg(test)]
fn chunks<R: Read>(reader: R) -> impl Iterator<Item = std::io::Result<Vec<u8>>> {
    fastcdc::v2020::StreamCDC::new(reader, MIN_SIZE, AVG_SIZE, MAX_SIZE).map(|chunk| match chunk {
        Ok(chunk) => Ok(chunk.data),
        Err(fastcdc::v2020::Error::IoError(e)) => Err(e),
        Err(other) => Err(std::io::Error::other(other.to_string())),
    })
}

/// The chunker's read buffer: several chunks, so refilling it (which moves
/// the unconsumed tail, at most [`MAX_SIZE`], to the front) is rare.
const BUFFER: usize = 8 * MAX_SIZE;

/// A reusable chunker: its buffer is allocated once and kept across inputs,
/// and chunks are lent as slices of it. fastcdc's `StreamCDC` allocates a
/// [`MAX_SIZE`] buffer per input and copies every chunk out and every tail
/// down; on a tree of small files or a 1 GiB dump those copies and
/// allocations cost more than finding the cut points. Cut points are the
/// same as `StreamCDC`'s (tested). Each way of chunking allocates its
/// buffers on first use, so a chunker used one way holds only its own.
#[derive(Default)]
pub struct Chunker {
    /// [`Chunker::chunk`]'s buffer.
    buf: Vec<u8>,
    /// [`Chunker::chunk_shared`]'s buffers; those no chunk holds any more
    /// are refilled.
    shared: Vec<Arc<Vec<u8>>>,
}

impl Chunker {
    /// Calls `each` with every chunk of `input`, in order, and stops at the
    /// first error (a read error is converted with `From`).
    ///
    /// # Errors
    /// The first error of `input` or of `each`.
    pub fn chunk<E: From<std::io::Error>>(
        &mut self,
        mut input: impl Read,
        mut each: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        if self.buf.is_empty() {
            self.buf = vec![0; BUFFER];
        }
        let (mut start, mut end, mut eof) = (0, 0, false);
        loop {
            // A cut point needs MAX_SIZE bytes ahead, or the end of the input.
            if end - start < MAX_SIZE && !eof {
                self.buf.copy_within(start..end, 0);
                end -= start;
                start = 0;
                (end, eof) = fill(&mut input, &mut self.buf, end)?;
            }
            if start == end {
                return Ok(());
            }
            let cut = cut_point(&self.buf[..end], start);
            each(&self.buf[start..cut])?;
            start = cut;
        }
    }
}

/// A chunk lent out of a read buffer that the cutting thread shares with
/// the thread that consumes the chunk: handing it over copies nothing.
pub struct SharedChunk {
    buf: Arc<Vec<u8>>,
    start: usize,
    end: usize,
}

impl std::ops::Deref for SharedChunk {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }
}

/// [`Chunker::chunk_shared`]'s buffers: smaller than the one-thread buffer,
/// because chunks in flight keep theirs alive (two at most behind the one
/// being filled, while the consumer holds a few consecutive chunks).
const SHARED_BUFFER: usize = 4 * MAX_SIZE;

impl Chunker {
    /// Like [`Chunker::chunk`], but every chunk is lent out of a shared
    /// buffer, for another thread. Buffers are recycled once no chunk of
    /// theirs is alive, across inputs too; only the tail that a refill moves
    /// to the front of another buffer (under one chunk) is copied.
    ///
    /// # Errors
    /// The first error of `input` or of `each`.
    pub fn chunk_shared<E: From<std::io::Error>>(
        &mut self,
        mut input: impl Read,
        mut each: impl FnMut(SharedChunk) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut buf = self.free_shared();
        let (mut start, mut end, mut eof) = (0, 0, false);
        let result = loop {
            if end - start < MAX_SIZE && !eof {
                match Arc::get_mut(&mut buf) {
                    Some(own) => own.copy_within(start..end, 0),
                    None => {
                        // Chunks of this buffer are still out: go on in another.
                        let mut next = self.free_shared();
                        Arc::get_mut(&mut next).expect("free")[..end - start]
                            .copy_from_slice(&buf[start..end]);
                        self.shared.push(std::mem::replace(&mut buf, next));
                    }
                }
                end -= start;
                start = 0;
                match fill(&mut input, Arc::get_mut(&mut buf).expect("free"), end) {
                    Ok(filled) => (end, eof) = filled,
                    Err(e) => break Err(e.into()),
                }
            }
            if start == end {
                break Ok(());
            }
            let cut = cut_point(&buf[..end], start);
            let chunk = SharedChunk {
                buf: Arc::clone(&buf),
                start,
                end: cut,
            };
            if let Err(e) = each(chunk) {
                break Err(e);
            }
            start = cut;
        };
        self.shared.push(buf);
        result
    }

    /// A shared buffer no chunk holds, or a new one.
    fn free_shared(&mut self) -> Arc<Vec<u8>> {
        match self.shared.iter().position(|b| Arc::strong_count(b) == 1) {
            Some(free) => self.shared.swap_remove(free),
            None => Arc::new(vec![0; SHARED_BUFFER]),
        }
    }
}

/// Reads into `buf` after its first `end` bytes until it is full or the
/// input ends; returns the new end and whether the input ended.
fn fill(input: &mut impl Read, buf: &mut [u8], mut end: usize) -> std::io::Result<(usize, bool)> {
    while end < buf.len() {
        match input.read(&mut buf[end..]) {
            Ok(0) => return Ok((end, true)),
            Ok(n) => end += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok((end, false))
}

/// Where the chunk that starts at `start` of `data` ends: `data` holds
/// [`MAX_SIZE`] bytes from `start` on, or the rest of the input.
fn cut_point(data: &[u8], start: usize) -> usize {
    let cdc = fastcdc::v2020::FastCDC::new(data, MIN_SIZE, AVG_SIZE, MAX_SIZE);
    cdc.cut(start, data.len() - start).1
}

/// Chunk id: BLAKE3 keyed with the tenant's 32-byte chunk key. Storage sees
/// ids, never plain content hashes, and two tenants' ids never collide.
pub fn chunk_id(chunk_key: &[u8; 32], data: &[u8]) -> ChunkId {
    ChunkId(*blake3::keyed_hash(chunk_key, data).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pseudo_random(len: usize, mut seed: u64) -> Vec<u8> {
        (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect()
    }

    #[test]
    fn an_insertion_only_changes_nearby_chunks() {
        let data = pseudo_random(16 << 20, 7);
        let mut edited = data.clone();
        edited.splice(8 << 20..8 << 20, b"inserted".iter().copied());
        let key = [1u8; 32];
        let ids =
            |d: &[u8]| -> Vec<ChunkId> { chunks(d).map(|c| chunk_id(&key, &c.unwrap())).collect() };
        let (a, b) = (ids(&data), ids(&edited));
        let shared = a.iter().filter(|id| b.contains(id)).count();
        assert!(
            a.len() >= 8,
            "16 MiB should give several chunks, got {}",
            a.len()
        );
        assert!(
            shared + 2 >= a.len(),
            "only the chunk around the edit may change: {shared}/{}",
            a.len()
        );
    }

    #[test]
    fn chunk_ids_depend_on_the_tenant_key() {
        assert_ne!(chunk_id(&[1; 32], b"same"), chunk_id(&[2; 32], b"same"));
        assert_eq!(chunk_id(&[1; 32], b"same"), chunk_id(&[1; 32], b"same"));
    }

    #[test]
    fn the_reusable_chunker_cuts_where_the_stream_chunker_does() {
        let mut chunker = Chunker::default();
        // Longer than the buffer, so refills happen mid-stream; then a tiny
        // input after it, so nothing of the first leaks into the second.
        for len in [50 << 20, 3 << 20, 1000, 0] {
            let data = pseudo_random(len, len as u64 + 1);
            let expected: Vec<Vec<u8>> = chunks(&data[..]).collect::<Result<_, _>>().unwrap();
            let mut got = Vec::new();
            chunker
                .chunk(&data[..], |c| -> std::io::Result<()> {
                    got.push(c.to_vec());
                    Ok(())
                })
                .unwrap();
            assert_eq!(got.len(), expected.len(), "{len} bytes");
            assert!(got == expected, "{len} bytes: different cut points");
        }
    }

    #[test]
    fn shared_chunks_are_the_same_chunks() {
        let mut chunker = Chunker::default();
        for len in [30 << 20, 3 << 20, 1000, 0] {
            let data = pseudo_random(len, len as u64 + 7);
            let mut expected = Vec::new();
            chunker
                .chunk(&data[..], |c| -> std::io::Result<()> {
                    expected.push(c.to_vec());
                    Ok(())
                })
                .unwrap();
            // Some chunks are held on to, as a slow consumer would, so the
            // buffers they live in must not be refilled under them.
            let mut held: Vec<(SharedChunk, Vec<u8>)> = Vec::new();
            let mut got = Vec::new();
            chunker
                .chunk_shared(&data[..], |c| -> std::io::Result<()> {
                    got.push(c.to_vec());
                    held.push((c, got.last().unwrap().clone()));
                    if held.len() > 5 {
                        let (chunk, when_received) = held.remove(0);
                        assert!(*chunk == when_received[..], "a held chunk changed");
                    }
                    Ok(())
                })
                .unwrap();
            assert!(got == expected, "{len} bytes: different chunks");
        }
    }

    #[test]
    fn small_and_empty_inputs() {
        assert_eq!(chunks(&b""[..]).count(), 0);
        let one: Vec<_> = chunks(&b"tiny"[..]).collect::<Result<_, _>>().unwrap();
        assert_eq!(one, vec![b"tiny".to_vec()]);
    }
}
