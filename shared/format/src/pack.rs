//! Packs: many sealed blobs in one object, so object counts and requests stay low.
//!
//! ```text
//! "VLPACK01" | blob 0 | blob 1 | … | sealed index | index length (u32 LE) | "VLPKEND1"
//! ```
//! The index (MessagePack list of [`IndexEntry`]) is sealed like a blob, so the
//! store learns neither chunk ids nor boundaries. The pack id is the SHA-256 of
//! all its bytes, which makes it its own recorded digest.

use crate::keys::{Identity, Recipient};
use crate::{Error, Result, blob};
use serde::{Deserialize, Serialize};
use sha2::Digest;
use std::io::Write;
use vaultline_types::{ChunkId, PackId};

/// First bytes of every pack.
pub const MAGIC: &[u8; 8] = b"VLPACK01";
/// Last bytes of every pack.
pub const END: &[u8; 8] = b"VLPKEND1";

/// Where a blob sits in its pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexEntry {
    /// The chunk.
    pub id: ChunkId,
    /// Byte offset of the sealed blob from the start of the pack.
    pub offset: u64,
    /// Length of the sealed blob.
    pub length: u32,
    /// Length of the chunk once opened.
    pub raw_length: u32,
}

/// Streams a pack to `out` while hashing it; memory holds only the index.
pub struct PackWriter<W: Write> {
    out: W,
    hasher: sha2::Sha256,
    offset: u64,
    entries: Vec<IndexEntry>,
}

/// A finished pack.
#[derive(Debug)]
pub struct FinishedPack<W> {
    /// SHA-256 of the pack's bytes.
    pub id: PackId,
    /// Total size in bytes.
    pub size: u64,
    /// The blobs it holds.
    pub entries: Vec<IndexEntry>,
    /// The writer, handed back.
    pub out: W,
}

impl<W: Write> PackWriter<W> {
    /// Starts a pack.
    ///
    /// # Errors
    /// When writing to `out` fails.
    pub fn new(out: W) -> Result<Self> {
        let mut writer = PackWriter {
            out,
            hasher: sha2::Sha256::new(),
            offset: 0,
            entries: Vec::new(),
        };
        writer.write(MAGIC)?;
        Ok(writer)
    }

    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.out.write_all(bytes)?;
        self.hasher.update(bytes);
        self.offset += bytes.len() as u64;
        Ok(())
    }

    /// Appends a sealed blob.
    ///
    /// # Errors
    /// When writing to `out` fails.
    pub fn add(&mut self, id: ChunkId, sealed: &[u8], raw_length: u32) -> Result<()> {
        let entry = IndexEntry {
            id,
            offset: self.offset,
            length: sealed.len() as u32,
            raw_length,
        };
        self.write(sealed)?;
        self.entries.push(entry);
        Ok(())
    }

    /// Number of blobs so far.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True before the first blob.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Appends the sealed index and trailer.
    ///
    /// # Errors
    /// When writing to `out` fails.
    pub fn finish(mut self, recipient: &Recipient) -> Result<FinishedPack<W>> {
        let index = rmp_serde::to_vec(&self.entries).expect("index entries serialise");
        let sealed = blob::seal(&index, 3, recipient)?;
        self.write(&sealed)?;
        self.write(&(sealed.len() as u32).to_le_bytes())?;
        self.write(END)?;
        self.out.flush()?;
        Ok(FinishedPack {
            id: PackId(self.hasher.finalize().into()),
            size: self.offset,
            entries: self.entries,
            out: self.out,
        })
    }
}

/// Reads the index of a whole pack with the tenant identity (catalog rebuild, checks).
///
/// # Errors
/// [`Error::Corrupt`] when the pack's framing is damaged, [`Error::WrongKey`]
/// for another tenant's identity.
pub fn read_index(pack: &[u8], identity: &Identity) -> Result<Vec<IndexEntry>> {
    let corrupt = |reason: &str| Error::Corrupt {
        what: "pack",
        reason: reason.into(),
    };
    if pack.len() < 20 || &pack[..8] != MAGIC || &pack[pack.len() - 8..] != END {
        return Err(corrupt("missing magic bytes"));
    }
    let len_at = pack.len() - 12;
    let index_len =
        u32::from_le_bytes(pack[len_at..len_at + 4].try_into().expect("4 bytes")) as usize;
    let start = len_at
        .checked_sub(index_len)
        .filter(|s| *s >= 8)
        .ok_or_else(|| corrupt("index length out of range"))?;
    let index = blob::open(&pack[start..len_at], identity)?;
    rmp_serde::from_slice(&index).map_err(|e| corrupt(&format!("index: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_are_found_where_the_index_says() {
        let id = Identity::generate();
        let mut writer = PackWriter::new(Vec::new()).unwrap();
        let chunks: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 1000 * (i as usize + 1)]).collect();
        for (i, chunk) in chunks.iter().enumerate() {
            let sealed = blob::seal(chunk, 3, &id.to_public()).unwrap();
            writer
                .add(ChunkId([i as u8; 32]), &sealed, chunk.len() as u32)
                .unwrap();
        }
        let pack = writer.finish(&id.to_public()).unwrap();
        assert_eq!(pack.id.0, crate::sha256(&pack.out));
        assert_eq!(pack.size, pack.out.len() as u64);
        assert_eq!(read_index(&pack.out, &id).unwrap(), pack.entries);
        for (entry, chunk) in pack.entries.iter().zip(&chunks) {
            let range = entry.offset as usize..entry.offset as usize + entry.length as usize;
            assert_eq!(&blob::open(&pack.out[range], &id).unwrap(), chunk);
        }
    }
}
