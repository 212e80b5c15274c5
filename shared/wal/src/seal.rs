//! A WAL file in the repository: zstd, then age to the tenant's public key,
//! as one stream, so memory stays a few buffers whatever the segment size
//! (PostgreSQL allows up to 1 GiB). The plain bytes' SHA-256 is what tells
//! a repeated push of the same file from a different file of that name;
//! the sealed bytes' SHA-256 is what a check without the key compares.

use crate::{Error, Result};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use vaultline_format::keys::{Identity, Recipient};

/// The largest file opened: PostgreSQL's largest segment size. A stored
/// object that decodes to more is damaged or hostile, not WAL.
const MAX_PLAIN: u64 = 1 << 30;

/// zstd level: WAL is written once per segment on the database host, so
/// speed matters more than the last percent.
const LEVEL: i32 = 3;

/// What sealing a file produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub plain_sha256: [u8; 32],
    pub plain_size: u64,
    pub sealed_sha256: [u8; 32],
    pub sealed_size: u64,
}

/// What opening a stored file produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    pub sha256: [u8; 32],
    pub size: u64,
}

/// Counts and hashes what passes through.
struct Hashing<W> {
    inner: W,
    hash: Sha256,
    size: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn io(what: &str) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        what: what.to_owned(),
        source,
    }
}

/// Seals everything `plain` yields into `out`.
///
/// # Errors
/// When reading or writing fails.
pub fn seal(mut plain: impl Read, recipient: &Recipient, out: impl Write) -> Result<Sealed> {
    let sealed = Hashing {
        inner: out,
        hash: Sha256::new(),
        size: 0,
    };
    let encryptor =
        age::Encryptor::with_recipients(std::iter::once(recipient as &dyn age::Recipient))
            .expect("one X25519 recipient is always a valid set");
    let encrypted = encryptor
        .wrap_output(sealed)
        .map_err(io("starting the encryption"))?;
    let mut compressed =
        zstd::stream::write::Encoder::new(encrypted, LEVEL).map_err(io("starting zstd"))?;
    let (mut hash, mut size) = (Sha256::new(), 0u64);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match plain.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io("reading the WAL file")(e)),
        };
        hash.update(&buf[..n]);
        size += n as u64;
        compressed
            .write_all(&buf[..n])
            .map_err(io("writing the sealed file"))?;
    }
    let encrypted = compressed.finish().map_err(io("ending zstd"))?;
    let mut sealed = encrypted.finish().map_err(io("ending the encryption"))?;
    sealed.flush().map_err(io("writing the sealed file"))?;
    Ok(Sealed {
        plain_sha256: hash.finalize().into(),
        plain_size: size,
        sealed_sha256: sealed.hash.finalize().into(),
        sealed_size: sealed.size,
    })
}

/// Opens the stored file `name` from `sealed` into `out` with any of
/// `identities`.
///
/// # Errors
/// [`Error::Open`] when no identity opens it or it is damaged (including
/// one that decodes past the largest segment), [`Error::Io`] when writing fails.
pub fn open<'a>(
    sealed: impl Read,
    identities: impl Iterator<Item = &'a Identity>,
    name: &str,
    out: impl Write,
) -> Result<Opened> {
    let damaged = |reason: String| Error::Open {
        name: name.to_owned(),
        reason,
    };
    let decryptor = age::Decryptor::new(sealed).map_err(|e| damaged(e.to_string()))?;
    let decrypted = decryptor
        .decrypt(identities.map(|i| i as &dyn age::Identity))
        .map_err(|e| match e {
            age::DecryptError::NoMatchingKeys => {
                damaged("none of the tenant's keys opens it".into())
            }
            other => damaged(other.to_string()),
        })?;
    let decoder =
        zstd::stream::read::Decoder::new(decrypted).map_err(|e| damaged(e.to_string()))?;
    let mut out = Hashing {
        inner: out,
        hash: Sha256::new(),
        size: 0,
    };
    let copied = std::io::copy(&mut decoder.take(MAX_PLAIN + 1), &mut out);
    // A read error is the stored bytes' fault (authentication or zstd); a
    // write error is the destination's.
    copied.map_err(|e| match e.kind() {
        std::io::ErrorKind::WriteZero | std::io::ErrorKind::StorageFull => {
            io("writing the WAL file")(e)
        }
        _ => damaged(e.to_string()),
    })?;
    if out.size > MAX_PLAIN {
        return Err(damaged(format!(
            "it decodes to more than {MAX_PLAIN} bytes"
        )));
    }
    out.flush().map_err(io("writing the WAL file"))?;
    Ok(Opened {
        sha256: out.hash.finalize().into(),
        size: out.size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_segment_round_trips_and_only_its_tenant_opens_it() {
        let tenant = Identity::generate();
        let other = Identity::generate();
        let segment: Vec<u8> = (0..(3u32 << 20)).map(|i| (i % 251) as u8).collect();
        let mut stored = Vec::new();
        let sealed = seal(&segment[..], &tenant.to_public(), &mut stored).unwrap();
        assert_eq!(sealed.plain_size, segment.len() as u64);
        assert_eq!(sealed.sealed_size, stored.len() as u64);
        assert!(stored.len() < segment.len() / 10, "{} bytes", stored.len());
        assert_eq!(
            sealed.plain_sha256,
            <[u8; 32]>::from(Sha256::digest(&segment))
        );
        assert_eq!(
            sealed.sealed_sha256,
            <[u8; 32]>::from(Sha256::digest(&stored))
        );

        let mut back = Vec::new();
        let opened = open(&stored[..], [&other, &tenant].into_iter(), "x", &mut back).unwrap();
        assert_eq!(back, segment);
        assert_eq!(opened.sha256, sealed.plain_sha256);

        let wrong = open(&stored[..], std::iter::once(&other), "seg", Vec::new()).unwrap_err();
        assert!(
            wrong.to_string().contains("none of the tenant's keys"),
            "{wrong}"
        );
        let mut flipped = stored.clone();
        let at = flipped.len() - 40;
        flipped[at] ^= 1;
        let damaged = open(&flipped[..], std::iter::once(&tenant), "seg", Vec::new()).unwrap_err();
        assert!(matches!(damaged, Error::Open { .. }), "{damaged}");
    }
}
