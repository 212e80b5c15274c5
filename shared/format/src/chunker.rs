//! Content-defined chunking (FastCDC 2020) and keyed chunk ids.

use std::io::Read;
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
/// same as `StreamCDC`'s (tested).
pub struct Chunker {
    buf: Vec<u8>,
}

impl Default for Chunker {
    fn default() -> Self {
        Chunker {
            buf: vec![0; BUFFER],
        }
    }
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
        let (mut start, mut end, mut eof) = (0, 0, false);
        loop {
            // A cut point needs MAX_SIZE bytes ahead, or the end of the input.
            if end - start < MAX_SIZE && !eof {
                self.buf.copy_within(start..end, 0);
                end -= start;
                start = 0;
                while end < self.buf.len() {
                    match input.read(&mut self.buf[end..]) {
                        Ok(0) => {
                            eof = true;
                            break;
                        }
                        Ok(n) => end += n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            if start == end {
                return Ok(());
            }
            let cdc = fastcdc::v2020::FastCDC::new(&self.buf[..end], MIN_SIZE, AVG_SIZE, MAX_SIZE);
            let (_, cut) = cdc.cut(start, end - start);
            each(&self.buf[start..cut])?;
            start = cut;
        }
    }
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
    fn small_and_empty_inputs() {
        assert_eq!(chunks(&b""[..]).count(), 0);
        let one: Vec<_> = chunks(&b"tiny"[..]).collect::<Result<_, _>>().unwrap();
        assert_eq!(one, vec![b"tiny".to_vec()]);
    }
}
