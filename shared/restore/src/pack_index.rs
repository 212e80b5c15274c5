//! A pack's key and sealed index, read by range: the header (its wrapped
//! key) from the front, the index from the back, never the blobs. Restore
//! opens each pack's key this way, and a catalog rebuild reads every pack's
//! index, so the chunk index it recovers comes from the sealed bytes and
//! from nowhere else.

use crate::error::{Error, Result};
use std::sync::Arc;
use vaultline_format::keys::Keyring;
use vaultline_format::pack::{self, Header as PackHeader, IndexEntry, PackKey};
use vaultline_storage::RangeReader;
use vaultline_types::PackId;

/// Reads `pack`'s header from the object `key` and opens its key with
/// the tenant key it names (or whichever of `keyring` opens it); also returns where the first blob starts. The first read
/// is `first_read` bytes (which must not pass the pack's end): a reader
/// that knows the pack's size reads the whole header at once.
///
/// # Errors
/// [`Error::WrongKey`] when none of the keys is the pack's, [`Error::Damaged`] for a
/// damaged header, [`Error::Storage`] when the read fails.
pub(crate) async fn pack_key(
    repo: &RangeReader,
    key: &str,
    pack: PackId,
    keyring: &Arc<Keyring>,
    first_read: u32,
) -> Result<(PackKey, u64)> {
    let mut want = first_read.max(12);
    loop {
        let prefix = repo
            .get_range(key, 0, want)
            .await
            .map_err(|e| Error::storage(format!("cannot read pack {pack}"), e))?;
        match PackKey::read(&prefix, keyring) {
            Ok(PackHeader::Key(key, first_blob)) => return Ok((key, first_blob)),
            Ok(PackHeader::NeedBytes(n)) if (n as u32) > want && n <= 1 << 20 => want = n as u32,
            Ok(PackHeader::NeedBytes(n)) => {
                return Err(Error::Damaged(format!(
                    "pack {pack} is damaged: a header of {n} bytes"
                )));
            }
            Err(vaultline_format::Error::WrongKey) => {
                return Err(Error::WrongKey(format!(
                    "none of the keys given opens pack {pack}{}",
                    PackKey::key_id(&prefix)
                        .map(|id| format!(" (it is sealed to key {id})"))
                        .unwrap_or_default()
                )));
            }
            Err(e) => return Err(Error::Damaged(format!("pack {pack} is damaged: {e}"))),
        }
    }
}

/// Bytes read from each end of a pack by [`read_pack_index`] at once: the
/// whole header (its wrapped key is some 200 bytes), and from the back the
/// tail and, for a pack of up to some 1,300 chunks, the whole index.
const HEAD_READ: u64 = 1024;
const TAIL_READ: u64 = 64 << 10;

/// The entries of `pack`'s sealed index (the object `key`, `size` bytes),
/// opened with the tenant key its header names (or, for older packs, with
/// whichever of `keyring` opens it): two ranged
/// reads (three when the index is larger than 64 KiB), whatever the size
/// of the pack. Object stores answer a small read in tens of milliseconds,
/// so the count of reads, not their size, is what a rebuild waits for.
///
/// # Errors
/// [`Error::WrongKey`] when no key of `keyring` opens it, [`Error::Damaged`] when
/// its framing or index is damaged, [`Error::Storage`] when a read fails.
pub async fn read_pack_index(
    repo: &RangeReader,
    key: &str,
    pack: PackId,
    size: u64,
    keyring: &Arc<Keyring>,
) -> Result<Vec<IndexEntry>> {
    let damaged =
        |e: vaultline_format::Error| Error::Damaged(format!("pack {pack} is damaged: {e}"));
    let read = |offset: u64, length: u64| async move {
        repo.get_range(key, offset, length as u32)
            .await
            .map_err(|e| Error::storage(format!("cannot read pack {pack}"), e))
    };
    if size < pack::TAIL_BYTES as u64 {
        return Err(Error::Damaged(format!(
            "pack {pack} is damaged: {size} bytes"
        )));
    }
    let back_from = size - size.min(TAIL_READ);
    let back = read(back_from, size - back_from).await?;
    let range = pack::index_range(&back[back.len() - pack::TAIL_BYTES..], size).map_err(damaged)?;
    let sealed = if range.start >= back_from {
        back[(range.start - back_from) as usize..(range.end - back_from) as usize].to_vec()
    } else {
        read(range.start, range.end - range.start).await?
    };
    let (pack_key, first_blob) =
        pack_key(repo, key, pack, keyring, size.min(HEAD_READ) as u32).await?;
    pack::open_index(&pack_key, first_blob, &range, &sealed).map_err(damaged)
}
