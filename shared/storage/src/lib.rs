//! vaultline-storage: where bytes live. The repository (packs and manifests,
//! long-lived) and staging (claim-check data between stages, with a TTL).

mod listing;
mod lock;
mod reader;
mod repository;
mod s3;
mod staging;

pub use lock::{LockMode, ObjectLock};
pub use reader::{ObjectReader, RangeReader};
pub use repository::{ObjectKey, Repository};
pub use s3::{S3Options, S3Repository};
pub use staging::{Fetched, Staging};

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An object or staged item that should exist does not.
    #[error("{what} {key} not found")]
    NotFound {
        /// Kind of thing looked up.
        what: &'static str,
        /// Its key.
        key: String,
    },
    /// A disk or filesystem error, with the path it happened on.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On which path.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A key that would leave its root.
    #[error("invalid key {0:?}")]
    InvalidKey(String),
    /// An S3 request failed after the SDK's own retries.
    #[error("S3 {op} {key}: {message}")]
    S3 {
        /// The S3 operation, e.g. `PutObject`.
        op: &'static str,
        /// The object key (without the repository prefix).
        key: String,
        /// The server's error code and message, or the transport error.
        message: String,
        /// Whether a later retry may succeed (throttling, timeouts, a server down).
        transient: bool,
    },
    /// The shared staging bucket failed.
    #[error("shared staging: {0}")]
    Shared(String),
    /// A repository URL or option that cannot be used.
    #[error("repository {0}")]
    Config(String),
    /// An object already stored under the key holds other bytes. Objects
    /// are never replaced, so this is left for a person to look at: it means
    /// damage in the store or somebody writing where they should not.
    #[error("{key} already holds other bytes ({found}); the stored object was left as it is")]
    Conflict {
        /// The object key.
        key: String,
        /// What differs, e.g. `9 bytes where 12 were to be stored`.
        found: String,
    },
}

impl Error {
    /// True when retrying may help (a full disk or a flaky mount), false for
    /// a missing object or a bad key.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Io { .. } => true,
            Error::S3 { transient, .. } => *transient,
            Error::Shared(_) => true,
            _ => false,
        }
    }
}

/// Result of the storage layer.
pub type Result<T> = std::result::Result<T, Error>;

/// SHA-256 and size of a local file, read on the calling (blocking) thread:
/// the digest recorded for, and checked against, every stored object.
///
/// # Errors
/// When the file cannot be opened or read.
pub fn sha256_file(path: &std::path::Path) -> std::io::Result<([u8; 32], u64)> {
    sha256_copy(&mut std::fs::File::open(path)?, std::io::sink())
}

/// Copies `from` into `to` through one 1 MiB buffer, returning the SHA-256
/// and size of what passed.
///
/// # Errors
/// When reading or writing fails.
pub(crate) fn sha256_copy(
    from: &mut impl std::io::Read,
    to: impl std::io::Write,
) -> std::io::Result<([u8; 32], u64)> {
    use sha2::Digest;
    /// Hashes what is written through it.
    struct Hashing<W> {
        to: W,
        hasher: sha2::Sha256,
    }
    impl<W: std::io::Write> std::io::Write for Hashing<W> {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            let n = self.to.write(bytes)?;
            self.hasher.update(&bytes[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            self.to.flush()
        }
    }
    let mut hashing = Hashing {
        to,
        hasher: sha2::Sha256::new(),
    };
    let size = std::io::copy(
        &mut std::io::BufReader::with_capacity(1 << 20, from),
        &mut hashing,
    )?;
    Ok((hashing.hasher.finalize().into(), size))
}

/// `Ok(size)` when the stored digest and size equal the ones about to be
/// stored, else the conflict that describes how they differ.
pub(crate) fn same_or_conflict(
    key: &str,
    stored: ([u8; 32], u64),
    wanted: ([u8; 32], u64),
) -> Result<u64> {
    if stored == wanted {
        return Ok(wanted.1);
    }
    let found = if stored.1 == wanted.1 {
        format!(
            "SHA-256 {} where {} was to be stored",
            hex::encode(&stored.0[..8]),
            hex::encode(&wanted.0[..8])
        )
    } else {
        format!("{} bytes where {} were to be stored", stored.1, wanted.1)
    };
    Err(Error::Conflict {
        key: key.to_owned(),
        found,
    })
}

pub(crate) fn io_err(
    op: &'static str,
    path: &std::path::Path,
) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.display().to_string();
    move |source| Error::Io { op, path, source }
}

/// A blocking task doing `op` under `path` that died (panicked) before it
/// answered.
pub(crate) fn join_err(
    op: &'static str,
    path: &std::path::Path,
) -> impl FnOnce(tokio::task::JoinError) -> Error {
    let io = io_err(op, path);
    move |e| io(std::io::Error::other(e))
}

/// Rejects keys that are empty, absolute or climb out with `..`.
pub(crate) fn check_key(key: &str) -> Result<()> {
    let ok = !key.is_empty()
        && !key.starts_with('/')
        && key
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..");
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidKey(key.to_owned()))
    }
}

/// A unique suffix for temporary files, so concurrent writers never share one.
pub(crate) fn temp_suffix() -> String {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).expect("OS random source");
    format!(".tmp-{}", hex::encode(bytes))
}
