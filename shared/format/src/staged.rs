//! Staged batches: the new chunks an extractor hands to the packager, sealed
//! to the staging key pair so whoever reads the staging directory or bucket
//! learns nothing. The extractor holds the recipient, the packager the
//! identity; no other stage can open a batch.
//!
//! ```text
//! "VLSTGB01" | u32 LE n | age file of the batch key (n bytes) | record* | end
//! record = u32 LE length | AES-256-GCM(batch key, nonce = u64 LE index | 0u32,
//!                                      aad = 0)(chunk id | chunk) | tag
//! end    = u32 LE 16     | AES-256-GCM(..., nonce of the next index, aad = 1)() | tag
//! ```
//! One X25519 agreement per batch (the age header), then AES-GCM, which
//! this hardware runs at several GB/s: the seal had to cost little next to
//! the chunking and zstd the batch goes through anyway. Counter nonces are
//! safe because every batch has a fresh random key. The end record makes a
//! truncated batch an error rather than a shorter batch.

use crate::keys::{Identity, Recipient, decrypt_with, encrypt_to};
use crate::{Error, Result};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, Tag, UnboundKey};
use std::io::{Read, Write};
use vaultline_types::ChunkId;
use zeroize::Zeroize;

/// First bytes of a staged batch.
pub const MAGIC: &[u8; 8] = b"VLSTGB01";
const TAG: usize = 16;
/// Bytes of the chunk id that starts every record.
pub const ID: usize = 32;
/// No record is larger than this: a chunk's maximum and its id.
const MAX_RECORD: usize = crate::chunker::MAX_SIZE + ID + TAG;

fn corrupt(reason: impl Into<String>) -> Error {
    Error::Corrupt {
        what: "staged batch",
        reason: reason.into(),
    }
}

fn nonce(index: u64) -> Nonce {
    let mut bytes = [0u8; 12];
    bytes[..8].copy_from_slice(&index.to_le_bytes());
    Nonce::assume_unique_for_key(bytes)
}

fn aead(key: &[u8]) -> Result<LessSafeKey> {
    UnboundKey::new(&AES_256_GCM, key)
        .map(LessSafeKey::new)
        .map_err(|_| corrupt("the batch key is not 32 bytes"))
}

/// Writes a staged batch to `out`.
pub struct StagedWriter<W: Write> {
    out: W,
    key: LessSafeKey,
    index: u64,
    buffer: Vec<u8>,
}

impl<W: Write> StagedWriter<W> {
    /// Starts a batch with a fresh key sealed to `recipient`.
    ///
    /// # Errors
    /// When writing fails or the OS random source does.
    pub fn new(mut out: W, recipient: &Recipient) -> Result<Self> {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).map_err(|e| Error::Key(format!("random source failed: {e}")))?;
        let wrapped = encrypt_to(recipient, &key);
        out.write_all(MAGIC)?;
        out.write_all(&(wrapped.len() as u32).to_le_bytes())?;
        out.write_all(&wrapped)?;
        let sealing = aead(&key)?;
        key.zeroize();
        Ok(StagedWriter {
            out,
            key: sealing,
            index: 0,
            buffer: Vec::new(),
        })
    }

    /// Seals and writes one chunk (through a copy; see [`Self::add_record`]).
    ///
    /// # Errors
    /// When writing fails.
    pub fn add(&mut self, id: &ChunkId, chunk: &[u8]) -> Result<()> {
        let mut record = std::mem::take(&mut self.buffer);
        record.clear();
        record.extend_from_slice(&id.0);
        record.extend_from_slice(chunk);
        let written = self.add_record(&mut record);
        self.buffer = record;
        written
    }

    /// Seals `record`, which is `chunk id | chunk`, in place and writes it:
    /// the extractor keeps new chunks in that shape, so no byte is copied
    /// on the way. `record` holds ciphertext afterwards.
    ///
    /// # Errors
    /// When `record` is shorter than a chunk id, or writing fails.
    pub fn add_record(&mut self, record: &mut [u8]) -> Result<()> {
        if record.len() < ID {
            return Err(corrupt("a record shorter than a chunk id"));
        }
        self.seal(record, 0)
    }

    fn seal(&mut self, record: &mut [u8], last: u8) -> Result<()> {
        let tag = self
            .key
            .seal_in_place_separate_tag(nonce(self.index), Aad::from([last]), record)
            .map_err(|_| corrupt("sealing failed"))?;
        self.index += 1;
        let length = (record.len() + TAG) as u32;
        self.out.write_all(&length.to_le_bytes())?;
        self.out.write_all(record)?;
        self.out.write_all(tag.as_ref())?;
        Ok(())
    }

    /// Writes the end record, flushes, and returns the output.
    ///
    /// # Errors
    /// When writing fails.
    pub fn finish(mut self) -> Result<W> {
        self.seal(&mut [], 1)?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// Reads a staged batch back, chunk by chunk.
pub struct StagedReader<R: Read> {
    input: R,
    key: LessSafeKey,
    index: u64,
    ended: bool,
}

impl<R: Read> StagedReader<R> {
    /// Opens the batch's key with the staging identity.
    ///
    /// # Errors
    /// [`Error::WrongKey`] for another staging identity, [`Error::Corrupt`]
    /// for anything that is not a staged batch.
    pub fn open(mut input: R, identity: &Identity) -> Result<Self> {
        let mut head = [0u8; 12];
        input
            .read_exact(&mut head)
            .map_err(|_| corrupt("shorter than its header"))?;
        if &head[..8] != MAGIC {
            return Err(corrupt("missing magic bytes (a batch staged in clear?)"));
        }
        let n = u32::from_le_bytes(head[8..].try_into().expect("4 bytes")) as usize;
        if n > 4096 {
            return Err(corrupt("its key header is implausibly long"));
        }
        let mut wrapped = vec![0u8; n];
        input
            .read_exact(&mut wrapped)
            .map_err(|_| corrupt("truncated in its key header"))?;
        let mut key = decrypt_with(identity, &wrapped)?;
        let opening = aead(&key)?;
        key.zeroize();
        Ok(StagedReader {
            input,
            key: opening,
            index: 0,
            ended: false,
        })
    }

    /// The next chunk, opened in `record` (a buffer the caller reuses) and
    /// returned as its id and a slice of it, or `None` after the end record.
    /// The chunk is not moved to the buffer's start: that memmove touched
    /// every staged byte a second time.
    ///
    /// # Errors
    /// [`Error::Corrupt`] when a record fails authentication, the batch is
    /// truncated, or bytes follow its end.
    pub fn next_chunk<'r>(
        &mut self,
        record: &'r mut Vec<u8>,
    ) -> Result<Option<(ChunkId, &'r [u8])>> {
        if self.ended {
            return Ok(None);
        }
        let mut length = [0u8; 4];
        self.input
            .read_exact(&mut length)
            .map_err(|_| corrupt("truncated: it has no end record"))?;
        let length = u32::from_le_bytes(length) as usize;
        if !(TAG..=MAX_RECORD).contains(&length) {
            return Err(corrupt(format!("a record of {length} bytes")));
        }
        record.resize(length, 0);
        self.input
            .read_exact(record)
            .map_err(|_| corrupt("truncated in a record"))?;
        let (sealed, tag) = record.split_at_mut(length - TAG);
        let tag = Tag::try_from(&*tag).map_err(|_| corrupt("a record's tag"))?;
        let last = u8::from(length == TAG);
        self.key
            .open_in_place_separate_tag(nonce(self.index), Aad::from([last]), tag, sealed, 0..)
            .map_err(|_| corrupt(format!("record {} fails authentication", self.index)))?;
        self.index += 1;
        let opened = &record[..length - TAG];
        if last == 1 {
            self.ended = true;
            let mut after = [0u8; 1];
            return match self.input.read(&mut after)? {
                0 => Ok(None),
                _ => Err(corrupt("bytes follow its end record")),
            };
        }
        if opened.len() < ID {
            return Err(corrupt("a record shorter than a chunk id"));
        }
        let (id, chunk) = opened.split_at(ID);
        Ok(Some((ChunkId(id.try_into().expect("32 bytes")), chunk)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(chunks: &[&[u8]], recipient: &Recipient) -> Vec<u8> {
        let mut writer = StagedWriter::new(Vec::new(), recipient).unwrap();
        for (i, chunk) in chunks.iter().enumerate() {
            writer.add(&ChunkId([i as u8; 32]), chunk).unwrap();
        }
        writer.finish().unwrap()
    }

    fn read_all(bytes: &[u8], identity: &Identity) -> Result<Vec<(ChunkId, Vec<u8>)>> {
        let mut reader = StagedReader::open(bytes, identity)?;
        let mut out = Vec::new();
        let mut record = Vec::new();
        while let Some((id, chunk)) = reader.next_chunk(&mut record)? {
            out.push((id, chunk.to_vec()));
        }
        Ok(out)
    }

    #[test]
    fn batches_round_trip_and_hide_their_chunks() {
        let identity = Identity::generate();
        let pattern = b"a pattern nobody may read in staging".repeat(100);
        let bytes = batch(&[&pattern, b"", b"tail"], &identity.to_public());
        assert!(!bytes.windows(36).any(|w| w == &pattern[..36]));
        let chunks = read_all(&bytes, &identity).unwrap();
        assert_eq!(chunks.len(), 3);
        assert_eq!(chunks[0], (ChunkId([0; 32]), pattern));
        assert_eq!(chunks[1].1, b"");
        assert_eq!(chunks[2], (ChunkId([2; 32]), b"tail".to_vec()));
        let empty = batch(&[], &identity.to_public());
        assert!(read_all(&empty, &identity).unwrap().is_empty());
    }

    #[test]
    fn tampering_truncation_and_other_keys_are_refused() {
        let identity = Identity::generate();
        let bytes = batch(&[b"one", b"two"], &identity.to_public());
        let other = Identity::generate();
        assert!(matches!(read_all(&bytes, &other), Err(Error::WrongKey)));
        let mut flipped = bytes.clone();
        let at = flipped.len() - 40;
        flipped[at] ^= 1;
        assert!(read_all(&flipped, &identity).is_err());
        // Cut after the first record: no end record, so not a shorter batch.
        let header = 12 + u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize;
        let first = 4 + u32::from_le_bytes(bytes[header..header + 4].try_into().unwrap()) as usize;
        let err = read_all(&bytes[..header + first], &identity).unwrap_err();
        assert!(err.to_string().contains("end record"), "{err}");
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(read_all(&longer, &identity).is_err());
        assert!(read_all(b"\0\0\0\x05plain", &identity).is_err());
    }
}
