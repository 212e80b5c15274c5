//! Packs: many sealed blobs in one object, so object counts and requests stay low.
//!
//! ```text
//! "VLPACK03" | u8 k | key id (k ASCII bytes) | u32 LE n | age file of the pack key (n bytes)
//!            | blob 0 | blob 1 | … | sealed index | u32 LE index length | "VLPKEND1"
//! ```
//! Each pack has its own random 32-byte key, age-encrypted to the tenant's
//! recipient in the pack's header; blobs and the index are sealed with it
//! (XChaCha20-Poly1305, see [`crate::blob`]). One X25519 agreement per pack
//! instead of one per blob: for a tree of small files that was a fifth of
//! the backup's CPU time. The packager still holds only the recipient, and
//! forgets each pack key once the pack is written.
//!
//! The key id names the tenant key the pack key is sealed to: after a
//! rotation, snapshots reference packs of several keys, and a reader picks
//! the right one instead of trying each. Format 2 packs (`"VLPACK02"`, the
//! same without the key id) are opened with whichever key opens them, and
//! format 1 packs (`"VLPACK01"`, no header; every blob its own age file)
//! are still read. The index (MessagePack list of [`IndexEntry`]) is sealed, so
//! the store learns neither chunk ids nor boundaries. The pack id is the
//! SHA-256 of all its bytes, which makes it its own recorded digest.

use crate::blob::{self, Compressor};
use crate::keys::{Keyring, Recipient, decrypt_with, encrypt_to, key_id};
use crate::{Error, Result};
use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};
use sha2::Digest;
use std::io::Write;
use vaultline_types::{ChunkId, PackId};

/// First bytes of format 1 packs.
pub const MAGIC_V1: &[u8; 8] = b"VLPACK01";
/// First bytes of format 2 packs (no key id).
pub const MAGIC_V2: &[u8; 8] = b"VLPACK02";
/// First bytes of packs written now.
pub const MAGIC: &[u8; 8] = b"VLPACK03";
/// Last bytes of every pack.
pub const END: &[u8; 8] = b"VLPKEND1";

const NONCE: usize = 24;
const TAG: usize = 16;
/// Associated data of the sealed index (blobs use their chunk id).
const INDEX_AAD: &[u8] = b"vaultline pack index";

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

/// What opens a pack's blobs: its key (formats 2 and 3), or the tenant's
/// keys themselves (format 1, every blob an age file).
pub enum PackKey {
    V1(std::sync::Arc<Keyring>),
    V2(Box<XChaCha20Poly1305>),
}

impl std::fmt::Debug for PackKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PackKey::V1(_) => "PackKey::V1",
            PackKey::V2(_) => "PackKey::V2(<redacted>)",
        })
    }
}

/// The result of reading a pack's first bytes.
#[derive(Debug)]
pub enum Header {
    /// The header is longer: read at least this many bytes from the start.
    NeedBytes(usize),
    /// The key, and where the first blob starts.
    Key(PackKey, u64),
}

fn corrupt(reason: impl Into<String>) -> Error {
    Error::Corrupt {
        what: "pack",
        reason: reason.into(),
    }
}

impl PackKey {
    /// Reads the key from a pack's first bytes (at least 12, or the whole
    /// pack when shorter), opening it with the tenant key the header names
    /// (format 3) or with whichever of `keys` opens it (format 2).
    ///
    /// # Errors
    /// [`Error::Corrupt`] for an unknown magic or a damaged header,
    /// [`Error::WrongKey`] when none of `keys` is the pack's.
    pub fn read(prefix: &[u8], keys: &std::sync::Arc<Keyring>) -> Result<Header> {
        if prefix.len() < 8 {
            return Err(corrupt("shorter than its magic bytes"));
        }
        let (key_id, at) = match &prefix[..8] {
            m if m == MAGIC_V1 => return Ok(Header::Key(PackKey::V1(keys.clone()), 8)),
            m if m == MAGIC_V2 => (None, 8),
            m if m == MAGIC => {
                let Some(&k) = prefix.get(8) else {
                    return Ok(Header::NeedBytes(9));
                };
                let Some(id) = prefix.get(9..9 + usize::from(k)) else {
                    // The length of the age file follows: ask for it too.
                    return Ok(Header::NeedBytes(9 + usize::from(k) + 4));
                };
                let id = std::str::from_utf8(id).map_err(|_| corrupt("its key id is not text"))?;
                (Some(id), 9 + usize::from(k))
            }
            _ => return Err(corrupt("missing magic bytes")),
        };
        let Some(len) = prefix.get(at..at + 4) else {
            return Ok(Header::NeedBytes(at + 4));
        };
        let len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
        let Some(wrapped) = prefix.get(at + 4..at + 4 + len) else {
            return Ok(Header::NeedBytes(at + 4 + len));
        };
        let key = match key_id {
            Some(id) => decrypt_with(keys.get(id).ok_or(Error::WrongKey)?, wrapped)?,
            None => keys.decrypt(wrapped)?,
        };
        if key.len() != 32 {
            return Err(corrupt("the pack key is not 32 bytes"));
        }
        let cipher = XChaCha20Poly1305::new_from_slice(&key).expect("32-byte key");
        Ok(Header::Key(
            PackKey::V2(Box::new(cipher)),
            (at + 4 + len) as u64,
        ))
    }

    /// The id of the tenant key a format 3 pack is sealed to, from its
    /// first bytes; `None` for older packs or too few bytes.
    pub fn key_id(prefix: &[u8]) -> Option<&str> {
        if prefix.get(..8)? != MAGIC {
            return None;
        }
        let k = usize::from(*prefix.get(8)?);
        std::str::from_utf8(prefix.get(9..9 + k)?).ok()
    }

    /// Decrypts and decompresses the blob of chunk `id`.
    ///
    /// # Errors
    /// [`Error::Corrupt`] for damaged bytes (or a blob that is not `id`'s).
    pub fn open(&self, id: &ChunkId, sealed: &[u8]) -> Result<Vec<u8>> {
        self.open_bound(&id.0, sealed)
    }

    /// Opens a blob or index sealed with associated data `aad` (format 1
    /// had none: each was its own age file).
    fn open_bound(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>> {
        match self {
            PackKey::V1(keys) => blob::open(sealed, keys),
            PackKey::V2(cipher) => blob::unframe(open_with(cipher, aad, sealed)?),
        }
    }
}

/// Seals `framed` in place under a fresh random nonce; the blob on disk
/// is `nonce | framed | tag`, written by the caller straight from these
/// parts (building it in one buffer copied every packed byte once more).
fn seal_in_place(
    cipher: &XChaCha20Poly1305,
    aad: &[u8],
    framed: &mut [u8],
) -> Result<([u8; NONCE], [u8; TAG])> {
    let mut nonce = [0u8; NONCE];
    getrandom::fill(&mut nonce).map_err(|e| Error::Key(format!("random source failed: {e}")))?;
    let tag = cipher
        .encrypt_in_place_detached(XNonce::from_slice(&nonce), aad, framed)
        .map_err(|_| Error::Key("encrypting a blob failed".into()))?;
    Ok((nonce, tag.into()))
}

fn open_with(cipher: &XChaCha20Poly1305, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>> {
    if sealed.len() < NONCE + TAG {
        return Err(Error::Corrupt {
            what: "blob",
            reason: "shorter than its nonce and tag".into(),
        });
    }
    let (nonce, rest) = sealed.split_at(NONCE);
    let (body, tag) = rest.split_at(rest.len() - TAG);
    let mut plain = body.to_vec();
    cipher
        .decrypt_in_place_detached(XNonce::from_slice(nonce), aad, &mut plain, tag.into())
        .map_err(|_| Error::Corrupt {
            what: "blob",
            reason: "it does not authenticate (damaged, or not this chunk's)".into(),
        })?;
    Ok(plain)
}

/// Streams a pack to `out` while hashing it; memory holds only the index
/// and one blob.
pub struct PackWriter<W: Write> {
    out: W,
    cipher: XChaCha20Poly1305,
    hasher: sha2::Sha256,
    offset: u64,
    entries: Vec<IndexEntry>,
    framed: Vec<u8>,
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
    /// Starts a pack with a fresh key, wrapped to `recipient`.
    ///
    /// # Errors
    /// When writing to `out` or the random source fails.
    pub fn new(out: W, recipient: &Recipient) -> Result<Self> {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).map_err(|e| Error::Key(format!("random source failed: {e}")))?;
        let wrapped = encrypt_to(recipient, &key);
        let mut writer = PackWriter {
            out,
            cipher: XChaCha20Poly1305::new_from_slice(&key).expect("32-byte key"),
            hasher: sha2::Sha256::new(),
            offset: 0,
            entries: Vec::new(),
            framed: Vec::new(),
        };
        key.fill(0);
        let id = key_id(&recipient.to_string());
        writer.write(MAGIC)?;
        writer.write(&[u8::try_from(id.len()).expect("a key id is 16 hex digits")])?;
        writer.write(id.as_bytes())?;
        writer.write(&(wrapped.len() as u32).to_le_bytes())?;
        writer.write(&wrapped)?;
        Ok(writer)
    }

    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.out.write_all(bytes)?;
        self.hasher.update(bytes);
        self.offset += bytes.len() as u64;
        Ok(())
    }

    /// Compresses, seals and appends one chunk.
    ///
    /// # Errors
    /// When compressing or writing to `out` fails.
    pub fn add(&mut self, id: ChunkId, chunk: &[u8], compressor: &mut Compressor) -> Result<()> {
        let mut framed = std::mem::take(&mut self.framed);
        framed.clear();
        compressor.frame(chunk, &mut framed)?;
        let offset = self.offset;
        let written = self.write_sealed(&id.0, &mut framed);
        self.framed = framed; // kept for the next blob, also after an error
        self.entries.push(IndexEntry {
            id,
            offset,
            length: written? as u32,
            raw_length: chunk.len() as u32,
        });
        Ok(())
    }

    /// Seals `framed` and appends it as a blob; returns the blob's length.
    fn write_sealed(&mut self, aad: &[u8], framed: &mut [u8]) -> Result<usize> {
        let (nonce, tag) = seal_in_place(&self.cipher, aad, framed)?;
        self.write(&nonce)?;
        self.write(framed)?;
        self.write(&tag)?;
        Ok(NONCE + framed.len() + TAG)
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
    pub fn finish(mut self, compressor: &mut Compressor) -> Result<FinishedPack<W>> {
        let index = encode_index(&self.entries);
        let mut framed = Vec::new();
        compressor.frame(&index, &mut framed)?;
        let length = self.write_sealed(INDEX_AAD, &mut framed)?;
        self.write(&(length as u32).to_le_bytes())?;
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

/// The last bytes of a pack that [`check_layout`] reads.
pub const FRAME_BYTES: usize = 12;
/// The first bytes of a pack that [`check_layout`] reads (or the whole
/// pack when shorter): enough for a format 3 header up to its age file.
pub const HEAD_BYTES: usize = 64;

/// Where the blobs of a format 2 or 3 pack start, from its first bytes.
fn first_blob(head: &[u8]) -> Result<u64> {
    let at = match head.get(..8) {
        Some(m) if m == MAGIC_V2 => 8,
        Some(m) if m == MAGIC => {
            9 + usize::from(*head.get(8).ok_or_else(|| corrupt("header cut short"))?)
        }
        _ => return Err(corrupt("not a format 2 or 3 pack")),
    };
    let wrapped = head
        .get(at..at + 4)
        .ok_or_else(|| corrupt("header cut short"))?;
    Ok((at + 4) as u64 + u64::from(u32::from_le_bytes(wrapped.try_into().expect("4 bytes"))))
}

/// Checks, without any key, that an index's blobs all lie inside the pack's
/// blob region (after the header, before the sealed index), in order and
/// not overlapping. `head` is the pack's first [`HEAD_BYTES`] and `tail`
/// its last [`FRAME_BYTES`]. A staged index is only the packager's word:
/// this is what keeps a forged one from pointing chunks at bytes they are
/// not.
///
/// # Errors
/// [`Error::Corrupt`] naming the first entry out of place.
pub fn check_layout(head: &[u8], tail: &[u8], size: u64, entries: &[IndexEntry]) -> Result<()> {
    let first = first_blob(head)?;
    if tail.len() < FRAME_BYTES || &tail[4..12] != END {
        return Err(corrupt("missing end bytes"));
    }
    let index = u64::from(u32::from_le_bytes(tail[..4].try_into().expect("4 bytes")));
    let end = size
        .checked_sub(FRAME_BYTES as u64 + index)
        .filter(|end| *end >= first)
        .ok_or_else(|| corrupt("header and index overlap"))?;
    let mut next = first;
    for entry in entries {
        let blob_end = entry.offset + u64::from(entry.length);
        if entry.offset < next || blob_end > end || entry.length == 0 {
            return Err(corrupt(format!(
                "chunk {} at {}+{} lies outside the blobs ({next}..{end})",
                entry.id, entry.offset, entry.length
            )));
        }
        next = blob_end;
    }
    Ok(())
}

/// A pack index's bytes: the MessagePack list of its entries, as sealed at
/// the end of the pack and as the packager stages it beside the pack for
/// the uploader.
pub fn encode_index(entries: &[IndexEntry]) -> Vec<u8> {
    rmp_serde::to_vec(entries).expect("index entries serialise")
}

/// Reads a pack index's bytes (see [`encode_index`]).
///
/// # Errors
/// [`Error::Corrupt`] when they are not a list of index entries.
pub fn decode_index(bytes: &[u8]) -> Result<Vec<IndexEntry>> {
    rmp_serde::from_slice(bytes).map_err(|e| corrupt(format!("index: {e}")))
}

/// Bytes at the end of a pack: the sealed index's length (u32 LE), then [`END`].
pub const TAIL_BYTES: usize = 12;

/// Where a pack's sealed index lies, from the pack's last [`TAIL_BYTES`]
/// and its size: what a reader fetches by range to read the index without
/// the blobs (a catalog rebuild reads every pack's index this way).
///
/// # Errors
/// [`Error::Corrupt`] when the tail is damaged or names an index that does
/// not fit in the pack.
pub fn index_range(tail: &[u8], pack_size: u64) -> Result<std::ops::Range<u64>> {
    if tail.len() != TAIL_BYTES || &tail[4..] != END || pack_size < 20 {
        return Err(corrupt("missing magic bytes"));
    }
    let index_len = u64::from(u32::from_le_bytes(tail[..4].try_into().expect("4 bytes")));
    let end = pack_size - TAIL_BYTES as u64;
    let start = end
        .checked_sub(index_len)
        .ok_or_else(|| corrupt("index length out of range"))?;
    Ok(start..end)
}

/// Opens a sealed index fetched from `range` (see [`index_range`]) with the
/// pack's key; `first_blob` (from [`PackKey::read`]) is where the header
/// ends, which the index must not overlap.
///
/// # Errors
/// [`Error::Corrupt`] when the index overlaps the header, fails
/// authentication or does not decode.
pub fn open_index(
    key: &PackKey,
    first_blob: u64,
    range: &std::ops::Range<u64>,
    sealed: &[u8],
) -> Result<Vec<IndexEntry>> {
    if range.start < first_blob || sealed.len() as u64 != range.end - range.start {
        return Err(corrupt("index length out of range"));
    }
    decode_index(&key.open_bound(INDEX_AAD, sealed)?)
}

/// Reads the index of a whole pack with the tenant's keys (checks, tests).
///
/// # Errors
/// [`Error::Corrupt`] when the pack's framing is damaged, [`Error::WrongKey`]
/// for another tenant's identity.
pub fn read_index(pack: &[u8], keys: &Keyring) -> Result<Vec<IndexEntry>> {
    if pack.len() < 20 {
        return Err(corrupt("missing magic bytes"));
    }
    let range = index_range(&pack[pack.len() - TAIL_BYTES..], pack.len() as u64)?;
    let Header::Key(key, first_blob) = PackKey::read(pack, &std::sync::Arc::new(keys.clone()))?
    else {
        return Err(corrupt("header longer than the pack"));
    };
    let sealed = &pack[range.start as usize..range.end as usize];
    open_index(&key, first_blob, &range, sealed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{Identity, Keyring};

    fn pack_of(chunks: &[Vec<u8>], id: &Identity) -> FinishedPack<Vec<u8>> {
        let mut compressor = Compressor::new(3).unwrap();
        let mut writer = PackWriter::new(Vec::new(), &id.to_public()).unwrap();
        for (i, chunk) in chunks.iter().enumerate() {
            writer
                .add(ChunkId([i as u8; 32]), chunk, &mut compressor)
                .unwrap();
        }
        writer.finish(&mut compressor).unwrap()
    }

    #[test]
    fn an_index_reads_from_two_ranges_as_from_the_whole_pack() {
        let id = Identity::generate();
        let finished = pack_of(&[vec![1; 5000], vec![2; 70_000], vec![]], &id);
        let (pack, entries) = (finished.out, finished.entries);
        let size = pack.len() as u64;
        let range = index_range(&pack[pack.len() - TAIL_BYTES..], size).unwrap();
        let Header::Key(key, first_blob) =
            PackKey::read(&pack, &std::sync::Arc::new(Keyring::from(&id))).unwrap()
        else {
            panic!("the whole pack holds its header")
        };
        let sealed = &pack[range.start as usize..range.end as usize];
        assert_eq!(
            open_index(&key, first_blob, &range, sealed).unwrap(),
            entries
        );
        assert_eq!(read_index(&pack, &Keyring::from(&id)).unwrap(), entries);
        // A tail that claims more than the pack holds, or an index over the
        // header, or a short read, is refused.
        let mut tail = pack[pack.len() - TAIL_BYTES..].to_vec();
        tail[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(index_range(&tail, size).is_err());
        assert!(index_range(&pack[..TAIL_BYTES], size).is_err());
        let over_header = (first_blob - 1)..range.end;
        assert!(
            open_index(
                &key,
                first_blob,
                &over_header,
                &pack[over_header.start as usize..range.end as usize]
            )
            .is_err()
        );
        assert!(open_index(&key, first_blob, &range, &sealed[1..]).is_err());
    }

    #[test]
    fn a_format_3_header_is_read_in_two_steps_from_32_bytes() {
        let id = Identity::generate();
        let pack = pack_of(&[vec![7; 100]], &id).out;
        let keys = std::sync::Arc::new(Keyring::from(&id));
        // From 12 bytes: the key id and the age file's length at once.
        assert!(matches!(
            PackKey::read(&pack[..12], &keys),
            Ok(Header::NeedBytes(29))
        ));
        // From 32 bytes (what restore reads first): the whole header next.
        let Ok(Header::NeedBytes(n)) = PackKey::read(&pack[..32], &keys) else {
            panic!("32 bytes hold the age file's length")
        };
        assert!(
            matches!(PackKey::read(&pack[..n], &keys), Ok(Header::Key(_, first)) if first == n as u64)
        );
    }

    #[test]
    fn layouts_are_checked_without_a_key() {
        let id = Identity::generate();
        let finished = pack_of(&[vec![1; 5000], vec![2; 70_000]], &id);
        let (pack, mut entries) = (finished.out, finished.entries);
        let (head, tail, size) = (
            &pack[..HEAD_BYTES],
            &pack[pack.len() - 12..],
            pack.len() as u64,
        );
        check_layout(head, tail, size, &entries).unwrap();
        let genuine = entries.clone();
        entries[1].offset = size - 20; // into the index
        assert!(check_layout(head, tail, size, &entries).is_err());
        entries = genuine.clone();
        entries[1].offset = entries[0].offset; // overlapping the first
        assert!(check_layout(head, tail, size, &entries).is_err());
        entries = genuine;
        entries[0].offset = 3; // into the header
        assert!(check_layout(head, tail, size, &entries).is_err());
        assert!(check_layout(&pack[1..13], tail, size, &[]).is_err());
    }

    fn key_of(pack: &[u8], id: &Identity) -> PackKey {
        match PackKey::read(pack, &std::sync::Arc::new(Keyring::from(id))).unwrap() {
            Header::Key(key, _) => key,
            Header::NeedBytes(n) => panic!("the header needs {n} bytes"),
        }
    }

    #[test]
    fn blobs_are_found_where_the_index_says() {
        let id = Identity::generate();
        let mut chunks: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 1000 * (i as usize + 1)]).collect();
        // Incompressible, large enough to be sampled: stored raw.
        chunks.push(
            (0..200_000u32)
                .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
                .collect(),
        );
        let pack = pack_of(&chunks, &id);
        assert_eq!(pack.id.0, crate::sha256(&pack.out));
        assert_eq!(pack.size, pack.out.len() as u64);
        assert_eq!(
            read_index(&pack.out, &Keyring::from(&id)).unwrap(),
            pack.entries
        );
        let key = key_of(&pack.out, &id);
        for (entry, chunk) in pack.entries.iter().zip(&chunks) {
            let range = entry.offset as usize..entry.offset as usize + entry.length as usize;
            assert_eq!(&key.open(&entry.id, &pack.out[range]).unwrap(), chunk);
        }
        let random = pack.entries.last().unwrap();
        assert!(random.length as usize <= 200_000 + 1 + NONCE + TAG);
    }

    #[test]
    fn a_blob_opens_only_as_its_own_chunk_and_only_undamaged() {
        let id = Identity::generate();
        let mut pack = pack_of(&[b"first".repeat(100), b"second".repeat(100)], &id);
        let key = key_of(&pack.out, &id);
        let (a, b) = (pack.entries[0], pack.entries[1]);
        let blob = |e: &IndexEntry| e.offset as usize..e.offset as usize + e.length as usize;
        assert!(matches!(
            key.open(&b.id, &pack.out[blob(&a)]),
            Err(Error::Corrupt { .. })
        ));
        pack.out[a.offset as usize + 30] ^= 1;
        assert!(matches!(
            key.open(&a.id, &pack.out[blob(&a)]),
            Err(Error::Corrupt { .. })
        ));
        assert!(matches!(
            PackKey::read(
                &pack.out,
                &std::sync::Arc::new(Keyring::from(Identity::generate()))
            ),
            Err(Error::WrongKey)
        ));
    }

    #[test]
    fn format_1_packs_still_open() {
        let id = Identity::generate();
        let mut out = MAGIC_V1.to_vec();
        let sealed = blob::seal(b"old blob", 3, &id.to_public()).unwrap();
        out.extend_from_slice(&sealed);
        let index = vec![IndexEntry {
            id: ChunkId([1; 32]),
            offset: 8,
            length: sealed.len() as u32,
            raw_length: 8,
        }];
        let sealed_index = blob::seal(&encode_index(&index), 3, &id.to_public()).unwrap();
        out.extend_from_slice(&sealed_index);
        out.extend_from_slice(&(sealed_index.len() as u32).to_le_bytes());
        out.extend_from_slice(END);
        assert_eq!(read_index(&out, &Keyring::from(&id)).unwrap(), index);
        let key = key_of(&out, &id);
        assert_eq!(
            key.open(&ChunkId([1; 32]), &out[8..8 + sealed.len()])
                .unwrap(),
            b"old blob"
        );
    }
}
