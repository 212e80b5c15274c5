//! vaultline-format: the repository format as plain functions over bytes
//! (see `schemas/repository-format.md`). Sans-IO: the stages add the I/O.

pub mod blob;
pub mod chunker;
mod digest;
pub mod key_record;
pub mod keys;
pub mod manifest;
pub mod pack;
pub mod staged;

/// Version of the manifests this build writes: 2 added owners, hard links,
/// extended attributes and special files. Restore reads 1 and 2.
pub const FORMAT_VERSION: u16 = 2;

/// Errors of the format layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing the underlying stream failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The data is not what the format says it must be.
    #[error("corrupt {what}: {reason}")]
    Corrupt {
        /// The object that is damaged.
        what: &'static str,
        /// How it is damaged.
        reason: String,
    },
    /// The identity given cannot open this data.
    #[error("the identity does not match the key this data was encrypted to")]
    WrongKey,
    /// A key or key-encryption key could not be read.
    #[error("{0}")]
    Key(String),
}

/// Result of the format layer.
pub type Result<T> = std::result::Result<T, Error>;

/// SHA-256 of `bytes`, the digest recorded for every stored object.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}
