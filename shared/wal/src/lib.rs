//! What vaultline knows about PostgreSQL's write-ahead log: the names of the
//! files `archive_command` hands over, log sequence numbers, how a file is
//! sealed for the repository (zstd, then age to the tenant's key) and
//! opened again, and which points in time a set of base backups and
//! archived segments can recover to.

mod names;
mod seal;
mod window;

pub use names::{Lsn, WalFile};
pub use seal::{Opened, Sealed, open, seal};
pub use window::{Base, Segment, Window, window};

/// What can go wrong with WAL files.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Not a name PostgreSQL gives a WAL, history or backup-label file.
    #[error(
        "{0:?} is not a WAL file name PostgreSQL archives (a segment like 000000010000000000000003, a .history, .backup or .partial file)"
    )]
    Name(String),
    /// Not an LSN as PostgreSQL writes it (`16/B374D848`).
    #[error("{0:?} is not an LSN (two hexadecimal numbers, like 16/B374D848)")]
    Lsn(String),
    /// Reading or writing a file.
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    /// The stored object does not open with these keys or is damaged.
    #[error("the archived WAL file {name} does not open: {reason}")]
    Open { name: String, reason: String },
}

pub type Result<T> = std::result::Result<T, Error>;
