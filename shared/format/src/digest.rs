//! The digests restore recomputes to prove a snapshot reassembles to what
//! the source presented.

use crate::manifest::{ContentHash, Entry};
use sha2::Digest;

/// The digest of a tree as the source presented it: SHA-256 over, for each
/// entry in manifest order, `u64 LE path length | path | kind byte | u64 LE
/// target length | target | u64 LE size | content digest` (BLAKE3, or SHA-256
/// in older manifests: see [`ContentHash`]). Restore
/// recomputes it to prove a snapshot reassembles to what was read.
#[derive(Default)]
pub struct SourceDigest(sha2::Sha256);

impl SourceDigest {
    /// Adds an entry once its content was read (`content` is the
    /// [`ContentDigest`] of the file's bytes; zeros for non-files).
    pub fn entry(&mut self, entry: &Entry, content: [u8; 32]) {
        let kind = entry.kind.digest_byte();
        let target = entry.target.as_deref().unwrap_or_default();
        self.0.update((entry.path.len() as u64).to_le_bytes());
        self.0.update(&entry.path);
        self.0.update([kind]);
        self.0.update((target.len() as u64).to_le_bytes());
        self.0.update(target);
        self.0.update(entry.size.to_le_bytes());
        self.0.update(content);
    }

    /// The digest, hex.
    pub fn finish(self) -> String {
        hex::encode(self.0.finalize())
    }
}

/// Digest of a file's content, fed chunk by chunk.
pub enum ContentDigest {
    Sha256(sha2::Sha256),
    Blake3(Box<blake3::Hasher>),
}

impl ContentDigest {
    /// A digest of the given kind.
    pub fn new(kind: ContentHash) -> Self {
        match kind {
            ContentHash::Sha256 => ContentDigest::Sha256(sha2::Sha256::default()),
            ContentHash::Blake3 => ContentDigest::Blake3(Box::default()),
        }
    }
    /// Adds bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            ContentDigest::Sha256(h) => h.update(bytes),
            ContentDigest::Blake3(h) => {
                h.update(bytes);
            }
        }
    }
    /// The digest.
    pub fn finish(self) -> [u8; 32] {
        match self {
            ContentDigest::Sha256(h) => h.finalize().into(),
            ContentDigest::Blake3(h) => *h.finalize().as_bytes(),
        }
    }
}
