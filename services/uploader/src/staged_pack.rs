//! What the uploader checks of a staged pack before it stores a byte: the
//! packager's message is only its word, and a compromised packager (or
//! anyone who can publish and write to staging) must not be able to store
//! bytes under a pack id they do not hash to, nor index chunks at offsets
//! that are not theirs.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use vaultline_format::pack::{FRAME_BYTES, IndexEntry, check_layout};
use vaultline_types::PackId;

/// Hashes the staged pack (one read, through the page cache the packager
/// just filled) and checks its id, its size and its index's layout.
///
/// # Errors
/// One sentence on what does not match.
pub(crate) fn check(
    path: &Path,
    id: &PackId,
    claimed_size: u64,
    entries: &[IndexEntry],
) -> Result<(), String> {
    let io = |e: std::io::Error| format!("reading it: {e}");
    let (digest, size) = vaultline_storage::sha256_file(path).map_err(io)?;
    if digest != id.0 {
        return Err(format!(
            "its bytes hash to {}, not to its id",
            PackId(digest)
        ));
    }
    if size != claimed_size {
        return Err(format!(
            "it has {size} bytes, the message says {claimed_size}"
        ));
    }
    let mut file = std::fs::File::open(path).map_err(io)?;
    let (mut head, mut tail) = ([0u8; FRAME_BYTES], [0u8; FRAME_BYTES]);
    file.read_exact(&mut head).map_err(io)?;
    file.seek(SeekFrom::End(-(FRAME_BYTES as i64)))
        .and_then(|_| file.read_exact(&mut tail))
        .map_err(io)?;
    check_layout(&head, &tail, size, entries).map_err(|e| format!("its index: {e}"))
}
