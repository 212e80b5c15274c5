//! Content-defined chunking (FastCDC 2020) and keyed chunk ids.

use std::io::Read;
use vaultline_types::ChunkId;

/// Smallest chunk; files smaller than this are one chunk.
pub const MIN_SIZE: usize = 256 * 1024;
/// Target average chunk size.
pub const AVG_SIZE: usize = 1024 * 1024;
/// Largest chunk; bounds the memory one chunk can take.
pub const MAX_SIZE: usize = 4 * 1024 * 1024;

/// Splits `reader` into content-defined chunks. Memory is bounded by
/// [`MAX_SIZE`] whatever the stream's length.
pub fn chunks<R: Read>(reader: R) -> impl Iterator<Item = std::io::Result<Vec<u8>>> {
    fastcdc::v2020::StreamCDC::new(reader, MIN_SIZE, AVG_SIZE, MAX_SIZE).map(|chunk| match chunk {
        Ok(chunk) => Ok(chunk.data),
        Err(fastcdc::v2020::Error::IoError(e)) => Err(e),
        Err(other) => Err(std::io::Error::other(other.to_string())),
    })
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
    fn small_and_empty_inputs() {
        assert_eq!(chunks(&b""[..]).count(), 0);
        let one: Vec<_> = chunks(&b"tiny"[..]).collect::<Result<_, _>>().unwrap();
        assert_eq!(one, vec![b"tiny".to_vec()]);
    }
}
