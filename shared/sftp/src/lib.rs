//! Reading a remote tree over SFTP, for the `sftp` source: one SSH
//! connection to a host whose key is pinned, a login with the source's
//! sealed password or private key, and files read with many requests in
//! flight so a distant host still fills the link.
//!
//! Nothing here writes to the host: the session only lists, stats, reads
//! links and reads files.

mod connect;
mod credential;

pub use connect::{Remote, RemoteFile, host_key_of};
pub use credential::Credential;
pub use russh_sftp::protocol::FileAttributes;

/// Why a connection or a request failed, in words an operator can act on.
/// None of them carries the credential.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "{address} has no pinned host key: pin it with `vaultline source trust-host-key` \
         (which shows the key the host offers) or --host-key-fingerprint"
    )]
    NotPinned { address: String },
    #[error(
        "the host key of {address} changed: pinned {pinned}, the host offered {offered}; \
         not connecting. If the host's key really changed, check the new fingerprint with its \
         administrator and pin it again with `vaultline source trust-host-key --replace`"
    )]
    HostKeyChanged {
        address: String,
        pinned: String,
        offered: String,
    },
    #[error("{user}@{address} refused the {auth} login")]
    Refused {
        user: String,
        address: String,
        auth: &'static str,
    },
    #[error("the stored credential is not {0}")]
    Credential(String),
    #[error("connecting to {address}: {reason}")]
    Connect { address: String, reason: String },
    /// The host answered a request with an error status (permission
    /// denied, not a directory…): the same request would fail again.
    #[error("{path} on {address}: {reason}")]
    Refusal {
        address: String,
        path: String,
        reason: String,
    },
    /// The connection broke or a request timed out.
    #[error("{path} on {address}: {reason} (connection lost)")]
    Lost {
        address: String,
        path: String,
        reason: String,
    },
}

impl Error {
    /// Whether trying again later may succeed: a host that could not be
    /// reached or a connection that broke, not a refusal or a changed key.
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Connect { .. } | Error::Lost { .. })
    }
}
