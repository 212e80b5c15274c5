//! What the uploader checks of a staged pack before it stores a byte: the
//! packager's message is only its word, and a compromised packager (or
//! anyone who can publish and write to staging) must not be able to store
//! bytes under a pack id they do not hash to, nor index chunks at offsets
//! that are not theirs.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use vaultline_format::pack::{FRAME_BYTES, HEAD_BYTES, IndexEntry, check_layout};
use vaultline_types::PackId;

/// How a staged pack differs from what its message says.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Mismatch {
    #[error("reading it: {0}")]
    Read(#[from] std::io::Error),
    #[error("its bytes hash to {0}, not to its id")]
    Hash(PackId),
    #[error("it has {size} bytes, the message says {claimed}")]
    Size { size: u64, claimed: u64 },
    #[error("its index: {0}")]
    Index(vaultline_format::Error),
}

/// Hashes the staged pack (one read, through the page cache the packager
/// just filled) and checks its id, its size and its index's layout.
///
/// # Errors
/// The first thing that does not match.
pub(crate) fn check(
    path: &Path,
    id: &PackId,
    claimed_size: u64,
    entries: &[IndexEntry],
) -> Result<(), Mismatch> {
    let (digest, size) = vaultline_storage::sha256_file(path)?;
    if digest != id.0 {
        return Err(Mismatch::Hash(PackId(digest)));
    }
    if size != claimed_size {
        return Err(Mismatch::Size {
            size,
            claimed: claimed_size,
        });
    }
    let mut file = std::fs::File::open(path)?;
    let mut head = vec![0u8; HEAD_BYTES.min(usize::try_from(size).unwrap_or(HEAD_BYTES))];
    let mut tail = [0u8; FRAME_BYTES];
    file.read_exact(&mut head)?;
    file.seek(SeekFrom::End(-(FRAME_BYTES as i64)))?;
    file.read_exact(&mut tail)?;
    check_layout(&head, &tail, size, entries).map_err(Mismatch::Index)
}
