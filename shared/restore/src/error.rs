//! What can stop a restore, sorted by what the caller does about it: retry
//! (a repository read that may pass), call the snapshot damaged, or tell
//! the person restoring what to change.

use vaultline_format::Error as FormatError;
use vaultline_storage::Error as StorageError;

/// Result of a restore.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a restore stopped. The message says what was being done, then what
/// the layer below reported (`cause`). The cause is part of the message, not
/// a `source()`, so that `{}` alone says everything, wherever it is printed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading a pack from the repository failed.
    #[error("{what}: {cause}")]
    Storage { what: String, cause: StorageError },
    /// Reading the manifest failed: a damaged record, or a failed read
    /// under the stream.
    #[error("{what}: {cause}")]
    Manifest { what: String, cause: FormatError },
    /// The identity given does not open this snapshot.
    #[error("{0}")]
    WrongKey(String),
    /// The snapshot is not what it should be: a damaged pack or chunk, a
    /// digest that does not match, a manifest that contradicts itself.
    #[error("{0}")]
    Damaged(String),
    /// An entry refused for what it would do to the target (climb out of
    /// it, write through a symlink), or something already there in its way.
    #[error("{0}")]
    Refused(String),
    /// The request does not fit this snapshot: a path it does not hold, a
    /// file tree to a stream, a manifest format newer than this build reads.
    #[error("{0}")]
    Request(String),
    /// Writing to the target failed (permissions, a full disk).
    #[error("{what}: {cause}")]
    Write { what: String, cause: std::io::Error },
    /// A restore program (pg_restore, mariadb, a command) could not start
    /// or failed; the message holds the tail of its stderr.
    #[error("{what}{}", cause.as_ref().map(|e| format!(": {e}")).unwrap_or_default())]
    Program {
        what: String,
        cause: Option<std::io::Error>,
    },
    /// A task of the restore died (a bug: it panicked).
    #[error("{0}")]
    Internal(String),
}

impl Error {
    /// A repository read that failed in a way a retry may not (the server
    /// down, a timeout): the snapshot is not known to be damaged.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Storage { cause, .. } => cause.is_transient(),
            // The manifest is read through std::io::Read, so a failed read
            // under it arrives as an io::Error that carries the storage error.
            Error::Manifest {
                cause: FormatError::Io(io),
                ..
            } => io
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<StorageError>())
                .is_some_and(StorageError::is_transient),
            _ => false,
        }
    }

    pub(crate) fn write(what: impl Into<String>, cause: impl Into<std::io::Error>) -> Error {
        Error::Write {
            what: what.into(),
            cause: cause.into(),
        }
    }

    pub(crate) fn manifest(what: impl Into<String>, cause: FormatError) -> Error {
        Error::Manifest {
            what: what.into(),
            cause,
        }
    }

    pub(crate) fn storage(what: impl Into<String>, cause: StorageError) -> Error {
        Error::Storage {
            what: what.into(),
            cause,
        }
    }

    /// The same error, naming the file whose restore met it.
    pub(crate) fn restoring(mut self, shown: &str) -> Error {
        let suffix = format!(" (restoring {shown})");
        match &mut self {
            Error::Storage { what, .. }
            | Error::Manifest { what, .. }
            | Error::Write { what, .. }
            | Error::Program { what, .. } => what.push_str(&suffix),
            Error::WrongKey(what)
            | Error::Damaged(what)
            | Error::Refused(what)
            | Error::Request(what)
            | Error::Internal(what) => what.push_str(&suffix),
        }
        self
    }

    pub(crate) fn task(what: &str, error: tokio::task::JoinError) -> Error {
        Error::Internal(format!("{what}: {error}"))
    }
}

/// `bail!` for a restore: returns early with `Error::$variant(format!(…))`.
macro_rules! fail {
    ($variant:ident, $($message:tt)+) => {
        return Err($crate::Error::$variant(format!($($message)+)))
    };
}
pub(crate) use fail;
