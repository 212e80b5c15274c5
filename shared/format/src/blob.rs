//! Blob framing: zstd, then age to the tenant's recipient. A blob is one chunk.
//!
//! Plaintext inside the age envelope: one codec byte (0 = stored raw, 1 = zstd)
//! then the payload. Incompressible chunks are stored raw so random data does
//! not grow.

use crate::keys::{Identity, Recipient, decrypt_with, encrypt_to};
use crate::{Error, Result};

const RAW: u8 = 0;
const ZSTD: u8 = 1;

/// Compresses and encrypts one chunk.
///
/// # Errors
/// When zstd fails (it does not on in-memory input short of allocation failure).
pub fn seal(chunk: &[u8], zstd_level: i32, recipient: &Recipient) -> Result<Vec<u8>> {
    let mut framed = Vec::with_capacity(chunk.len() / 2 + 16);
    framed.push(ZSTD);
    zstd::stream::copy_encode(chunk, &mut framed, zstd_level)?;
    if framed.len() > chunk.len() {
        framed.clear();
        framed.push(RAW);
        framed.extend_from_slice(chunk);
    }
    Ok(encrypt_to(recipient, &framed))
}

/// Decrypts and decompresses one blob.
///
/// # Errors
/// [`Error::WrongKey`] for another tenant's identity, [`Error::Corrupt`] for
/// damaged bytes.
pub fn open(sealed: &[u8], identity: &Identity) -> Result<Vec<u8>> {
    let framed = decrypt_with(identity, sealed)?;
    match framed.split_first() {
        Some((&RAW, payload)) => Ok(payload.to_vec()),
        Some((&ZSTD, payload)) => {
            let mut out = Vec::with_capacity(payload.len() * 3);
            zstd::stream::copy_decode(payload, &mut out).map_err(|e| Error::Corrupt {
                what: "blob",
                reason: e.to_string(),
            })?;
            Ok(out)
        }
        _ => Err(Error::Corrupt {
            what: "blob",
            reason: "unknown codec byte".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_compressible_and_random_data() {
        let id = Identity::generate();
        let text = b"hello hello hello hello hello hello".repeat(1000);
        let sealed = seal(&text, 3, &id.to_public()).unwrap();
        assert!(sealed.len() < text.len() / 4);
        assert_eq!(open(&sealed, &id).unwrap(), text);
        let random: Vec<u8> = (0..65536u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let sealed = seal(&random, 3, &id.to_public()).unwrap();
        assert_eq!(open(&sealed, &id).unwrap(), random);
    }

    #[test]
    fn a_flipped_byte_is_corrupt_not_wrong_data() {
        let id = Identity::generate();
        let mut sealed = seal(b"payload", 3, &id.to_public()).unwrap();
        let last = sealed.len() - 3;
        sealed[last] ^= 1;
        assert!(matches!(open(&sealed, &id), Err(Error::Corrupt { .. })));
    }
}
