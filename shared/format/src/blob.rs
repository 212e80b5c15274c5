//! Blob framing: zstd, then encryption. A blob is one chunk.
//!
//! Plaintext: one codec byte (0 = stored raw, 1 = zstd) then the payload.
//! Incompressible chunks are stored raw so random data does not grow.
//!
//! Packs written since format 2 seal blobs with their pack's key
//! ([`crate::pack`]): `24-byte nonce | XChaCha20-Poly1305(plaintext) | tag`,
//! with the chunk id as associated data. Format 1 packs sealed every blob as
//! its own age file to the tenant; restore still reads them ([`open`]).

#[cfg(test)]
use crate::keys::{Recipient, encrypt_to};
use crate::{Error, Result};
use std::io::Read;

const RAW: u8 = 0;
const ZSTD: u8 = 1;

/// Chunks smaller than this are compressed without sampling first.
const SAMPLED_FROM: usize = 64 << 10;
/// Bytes per sample.
const SAMPLE: usize = 8 << 10;

/// Compresses chunks for sealing, reusing one zstd context.
pub struct Compressor {
    zstd: zstd::bulk::Compressor<'static>,
    probe: zstd::bulk::Compressor<'static>,
    scratch: Vec<u8>,
}

impl Compressor {
    /// A compressor at `level`.
    ///
    /// # Errors
    /// When zstd refuses the level.
    pub fn new(level: i32) -> Result<Self> {
        Ok(Compressor {
            zstd: zstd::bulk::Compressor::new(level)?,
            probe: zstd::bulk::Compressor::new(1)?,
            scratch: Vec::new(),
        })
    }

    /// True when three samples of the chunk (start, middle, end) do not
    /// shrink at zstd's fastest level: random or already compressed data,
    /// which then skips the full compression that would not shrink it either.
    fn incompressible(&mut self, chunk: &[u8]) -> bool {
        if chunk.len() < SAMPLED_FROM {
            return false;
        }
        let mid = chunk.len() / 2 - SAMPLE / 2;
        [0, mid, chunk.len() - SAMPLE].iter().all(|&at| {
            self.probe
                .compress(&chunk[at..at + SAMPLE])
                .is_ok_and(|c| c.len() * 100 >= SAMPLE * 97)
        })
    }

    /// Appends `codec byte | payload` for `chunk` to `out`.
    ///
    /// # Errors
    /// When zstd fails (it does not on in-memory input short of allocation failure).
    pub fn frame(&mut self, chunk: &[u8], out: &mut Vec<u8>) -> Result<()> {
        if !self.incompressible(chunk) {
            self.scratch.clear();
            self.scratch
                .reserve(zstd::zstd_safe::compress_bound(chunk.len()));
            self.zstd.compress_to_buffer(chunk, &mut self.scratch)?;
            if self.scratch.len() < chunk.len() {
                out.push(ZSTD);
                out.extend_from_slice(&self.scratch);
                return Ok(());
            }
        }
        out.push(RAW);
        out.extend_from_slice(chunk);
        Ok(())
    }
}

/// No chunk's plaintext is larger: a frame header claiming more is damage,
/// and is refused before anything is allocated for it.
const MAX_PLAIN: u64 = 64 << 20;

thread_local! {
    /// One zstd decompression context per thread: creating one per blob
    /// was a visible share of a restore of many small files.
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// The plaintext of a framed chunk: decompressed, or the raw payload. A raw
/// payload is moved down by one byte in place rather than copied, and zstd
/// decodes straight into a buffer of the frame's recorded size.
///
/// # Errors
/// [`Error::Corrupt`] for an unknown codec or a damaged zstd frame.
pub fn unframe(mut framed: Vec<u8>) -> Result<Vec<u8>> {
    let corrupt = |reason: String| Error::Corrupt {
        what: "blob",
        reason,
    };
    match framed.first() {
        Some(&RAW) => {
            framed.remove(0);
            Ok(framed)
        }
        Some(&ZSTD) => {
            let payload = &framed[1..];
            let size = match zstd::zstd_safe::get_frame_content_size(payload) {
                Ok(Some(size)) if size <= MAX_PLAIN => size as usize,
                Ok(Some(size)) => return Err(corrupt(format!("a frame of {size} bytes"))),
                // Format 1 blobs were streamed, without a recorded size:
                // decode at most MAX_PLAIN bytes of it, so a frame of zeros
                // that expands without end cannot take the process's memory.
                Ok(None) => {
                    let mut out = Vec::with_capacity((payload.len() * 3).min(MAX_PLAIN as usize));
                    zstd::stream::read::Decoder::new(payload)
                        .and_then(|d| d.take(MAX_PLAIN + 1).read_to_end(&mut out))
                        .map_err(|e| corrupt(e.to_string()))?;
                    if out.len() as u64 > MAX_PLAIN {
                        return Err(corrupt(format!("a frame of more than {MAX_PLAIN} bytes")));
                    }
                    return Ok(out);
                }
                Err(_) => return Err(corrupt("not a zstd frame".into())),
            };
            DECOMPRESSOR.with(|cell| {
                let mut cell = cell.borrow_mut();
                let decompressor = match &mut *cell {
                    Some(decompressor) => decompressor,
                    empty => empty.insert(zstd::bulk::Decompressor::new()?),
                };
                let out = decompressor
                    .decompress(payload, size)
                    .map_err(|e| corrupt(e.to_string()))?;
                if out.len() != size {
                    return Err(corrupt(format!(
                        "{} bytes decoded, the frame says {size}",
                        out.len()
                    )));
                }
                Ok(out)
            })
        }
        _ => Err(corrupt("unknown codec byte".into())),
    }
}

/// Compresses and encrypts one chunk as its own age file, as format 1 packs
/// did (nothing writes them any more; tests build old packs with it).
#[cfg(test)]
pub(crate) fn seal(chunk: &[u8], zstd_level: i32, recipient: &Recipient) -> Result<Vec<u8>> {
    let mut framed = Vec::with_capacity(chunk.len() / 2 + 16);
    Compressor::new(zstd_level)?.frame(chunk, &mut framed)?;
    Ok(encrypt_to(recipient, &framed))
}

/// Decrypts and decompresses one format 1 blob.
///
/// # Errors
/// [`Error::WrongKey`] for another tenant's identity, [`Error::Corrupt`] for
/// damaged bytes.
pub fn open(sealed: &[u8], keys: &crate::keys::Keyring) -> Result<Vec<u8>> {
    unframe(keys.decrypt(sealed)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{Identity, Keyring};

    #[test]
    fn round_trips_compressible_and_random_data() {
        let id = Identity::generate();
        let text = b"hello hello hello hello hello hello".repeat(1000);
        let sealed = seal(&text, 3, &id.to_public()).unwrap();
        assert!(sealed.len() < text.len() / 4);
        assert_eq!(open(&sealed, &Keyring::from(&id)).unwrap(), text);
        let random: Vec<u8> = (0..65536u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let sealed = seal(&random, 3, &id.to_public()).unwrap();
        assert_eq!(open(&sealed, &Keyring::from(&id)).unwrap(), random);
    }

    #[test]
    fn a_frame_without_its_size_is_decoded_only_up_to_the_cap() {
        let streamed = |plain: &[u8]| {
            let mut framed = vec![ZSTD];
            // As format 1 wrote them: streamed, with no content size.
            let mut encoder = zstd::stream::Encoder::new(Vec::new(), 1).unwrap();
            encoder.include_contentsize(false).unwrap();
            std::io::Write::write_all(&mut encoder, plain).unwrap();
            framed.extend(encoder.finish().unwrap());
            assert!(
                matches!(
                    zstd::zstd_safe::get_frame_content_size(&framed[1..]),
                    Ok(None)
                ),
                "a streamed frame records no size"
            );
            framed
        };
        assert_eq!(unframe(streamed(b"format 1")).unwrap(), b"format 1");
        let bomb = streamed(&vec![0u8; MAX_PLAIN as usize + 1]);
        assert!(bomb.len() < 64 << 10, "{} bytes", bomb.len());
        let err = unframe(bomb).unwrap_err();
        assert!(err.to_string().contains("more than"), "{err}");
    }

    #[test]
    fn a_flipped_byte_is_corrupt_not_wrong_data() {
        let id = Identity::generate();
        let mut sealed = seal(b"payload", 3, &id.to_public()).unwrap();
        let last = sealed.len() - 3;
        sealed[last] ^= 1;
        assert!(matches!(
            open(&sealed, &Keyring::from(&id)),
            Err(Error::Corrupt { .. })
        ));
    }
}
