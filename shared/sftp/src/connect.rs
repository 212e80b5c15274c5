//! The connection: the host key checked against its pin before anything is
//! sent, the login, the SFTP subsystem, and the few read-only requests a
//! backup makes.

use crate::{Credential, Error};
use russh::keys::{HashAlg, PublicKey};
use russh_sftp::client::SftpSession;
use russh_sftp::protocol::{FileAttributes, StatusCode};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use vaultline_types::SftpSource;

/// A host that does not finish the handshake in this long is down.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Read requests in flight per open file, each of up to the server's read
/// size (OpenSSH: 255 KiB): about 4 MiB outstanding per file, which fills
/// 320 Mbit/s at 100 ms of round trip.
const READS_IN_FLIGHT: usize = 16;

/// A file being read: an `AsyncRead` whose reads are pipelined.
pub type RemoteFile = russh_sftp::client::fs::File;

/// The host key check: records what the host offered and accepts only the pin.
struct Pinning {
    pinned: Option<String>,
    offered: Arc<Mutex<Option<String>>>,
}

impl russh::client::Handler for Pinning {
    type Error = russh::Error;

    async fn check_server_key(&mut self, key: &PublicKey) -> Result<bool, Self::Error> {
        let fingerprint = fingerprint(key);
        let matches = self.pinned.as_deref() == Some(fingerprint.as_str());
        *self.offered.lock().unwrap_or_else(|e| e.into_inner()) = Some(fingerprint);
        Ok(matches)
    }
}

/// OpenSSH's form: `SHA256:` and the unpadded base64 of the key's digest.
fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

fn client_config() -> Arc<russh::client::Config> {
    Arc::new(russh::client::Config {
        // A dead peer is noticed even while no request is outstanding.
        keepalive_interval: Some(Duration::from_secs(15)),
        keepalive_max: 3,
        nodelay: true,
        // AES-GCM first: with AES-NI it costs both ends less CPU than
        // ChaCha20-Poly1305 (russh's and OpenSSH's first choice).
        preferred: russh::Preferred {
            cipher: std::borrow::Cow::Borrowed(&[
                russh::cipher::AES_256_GCM,
                russh::cipher::CHACHA20_POLY1305,
                russh::cipher::AES_256_CTR,
                russh::cipher::AES_128_CTR,
            ]),
            ..Default::default()
        },
        ..Default::default()
    })
}

/// Opens the connection with `pinned` as the only acceptable host key
/// (`None`: none is, and the offered one is only recorded).
async fn handshake(
    source: &SftpSource,
    pinned: Option<String>,
) -> Result<russh::client::Handle<Pinning>, (Error, Option<String>)> {
    let address = address(source);
    let offered = Arc::new(Mutex::new(None));
    let handler = Pinning {
        pinned: pinned.clone(),
        offered: offered.clone(),
    };
    let connecting = russh::client::connect(
        client_config(),
        (source.host.as_str(), source.port),
        handler,
    );
    let result = tokio::time::timeout(CONNECT_TIMEOUT, connecting).await;
    let offered = offered.lock().unwrap_or_else(|e| e.into_inner()).clone();
    match result {
        Ok(Ok(handle)) => Ok(handle),
        Ok(Err(russh::Error::UnknownKey)) => {
            let error = match pinned {
                Some(pinned) => Error::HostKeyChanged {
                    address,
                    pinned,
                    offered: offered.clone().unwrap_or_else(|| "no key".into()),
                },
                None => Error::NotPinned { address },
            };
            Err((error, offered))
        }
        Ok(Err(e)) => Err((
            Error::Connect {
                address,
                reason: e.to_string(),
            },
            offered,
        )),
        Err(_) => Err((
            Error::Connect {
                address,
                reason: format!("no SSH handshake within {} s", CONNECT_TIMEOUT.as_secs()),
            },
            offered,
        )),
    }
}

/// The fingerprint of the key `source`'s host offers, without logging in:
/// what `trust-host-key` shows and pins.
///
/// # Errors
/// The host cannot be reached or offers no key.
pub async fn host_key_of(source: &SftpSource) -> Result<String, Error> {
    match handshake(source, None).await {
        Err((_, Some(offered))) => Ok(offered),
        Err((error, None)) => Err(error),
        Ok(_) => unreachable!("no key is accepted without a pin"),
    }
}

fn address(source: &SftpSource) -> String {
    format!("{}:{}", source.host, source.port)
}

/// A logged-in SFTP session on one SSH connection. Requests from several
/// tasks or threads share it; each waits only for its own answer.
pub struct Remote {
    address: String,
    handle: russh::client::Handle<Pinning>,
    sftp: SftpSession,
}

impl Remote {
    /// Connects to `source`'s host, which must offer its pinned key, and
    /// logs in with `credential`.
    ///
    /// # Errors
    /// No pin, a changed key, a refused login, or a host that cannot be reached.
    pub async fn connect(source: &SftpSource, credential: &Credential) -> Result<Remote, Error> {
        let address = address(source);
        let Some(pinned) = source.host_key.clone() else {
            return Err(Error::NotPinned { address });
        };
        let key = credential.private_key()?;
        let mut handle = handshake(source, Some(pinned)).await.map_err(|(e, _)| e)?;
        let lost = |e: russh::Error| Error::Lost {
            address: address.clone(),
            path: "login".into(),
            reason: e.to_string(),
        };
        let (auth, result) = match (credential, key) {
            (Credential::Password(password), _) => (
                "password",
                handle
                    .authenticate_password(&source.user, password)
                    .await
                    .map_err(lost)?,
            ),
            (Credential::Key { .. }, Some(key)) => {
                let hash = handle.best_supported_rsa_hash().await.map_err(lost)?;
                let key = russh::keys::PrivateKeyWithHashAlg::new(Arc::new(key), hash.flatten());
                (
                    "key",
                    handle
                        .authenticate_publickey(&source.user, key)
                        .await
                        .map_err(lost)?,
                )
            }
            (Credential::Key { .. }, None) => unreachable!("a key credential has a key"),
        };
        if !result.success() {
            return Err(Error::Refused {
                user: source.user.clone(),
                address,
                auth,
            });
        }
        let channel = handle.channel_open_session().await.map_err(lost)?;
        channel
            .request_subsystem(true, "sftp")
            .await
            .map_err(lost)?;
        let config = russh_sftp::client::Config {
            max_concurrent_reads: READS_IN_FLIGHT,
            request_timeout_secs: 60,
            ..Default::default()
        };
        let sftp = SftpSession::new_with_config(channel.into_stream(), config)
            .await
            .map_err(|e| Error::Lost {
                address: address.clone(),
                path: "the sftp subsystem".into(),
                reason: e.to_string(),
            })?;
        Ok(Remote {
            address,
            handle,
            sftp,
        })
    }

    /// `host:port`, for messages.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Whether the connection has gone (then every error was its doing).
    pub fn is_closed(&self) -> bool {
        self.handle.is_closed()
    }

    /// A directory's entries (not `.` and `..`) with their attributes as
    /// `lstat` gives them, in byte order of their names.
    ///
    /// # Errors
    /// A refusal or a lost connection.
    pub async fn read_dir(&self, path: &str) -> Result<Vec<(String, FileAttributes)>, Error> {
        let listed = self
            .sftp
            .read_dir(path)
            .await
            .map_err(|e| self.err(path, e))?;
        let mut entries: Vec<_> = listed.map(|e| (e.file_name(), e.metadata())).collect();
        entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        Ok(entries)
    }

    /// `lstat`; `None` when nothing is there.
    ///
    /// # Errors
    /// A refusal or a lost connection.
    pub async fn lstat(&self, path: &str) -> Result<Option<FileAttributes>, Error> {
        self.missing_is_none(path, self.sftp.symlink_metadata(path).await)
    }

    /// A symlink's target; `None` when it is gone.
    ///
    /// # Errors
    /// A refusal or a lost connection.
    pub async fn read_link(&self, path: &str) -> Result<Option<String>, Error> {
        self.missing_is_none(path, self.sftp.read_link(path).await)
    }

    /// Opens a file to read; `None` when it is gone.
    ///
    /// # Errors
    /// A refusal or a lost connection.
    pub async fn open(&self, path: &str) -> Result<Option<RemoteFile>, Error> {
        self.missing_is_none(path, self.sftp.open(path).await)
    }

    /// Ends the session politely.
    pub async fn close(self) {
        let _ = self.sftp.close().await;
        let _ = self
            .handle
            .disconnect(russh::Disconnect::ByApplication, "", "en")
            .await;
    }

    fn missing_is_none<T>(
        &self,
        path: &str,
        result: Result<T, russh_sftp::client::error::Error>,
    ) -> Result<Option<T>, Error> {
        match result {
            Ok(found) => Ok(Some(found)),
            Err(russh_sftp::client::error::Error::Status(status))
                if status.status_code == StatusCode::NoSuchFile =>
            {
                Ok(None)
            }
            Err(e) => Err(self.err(path, e)),
        }
    }

    fn err(&self, path: &str, error: russh_sftp::client::error::Error) -> Error {
        let (address, path) = (self.address.clone(), path.to_owned());
        match error {
            russh_sftp::client::error::Error::Status(status) if !self.is_closed() => {
                Error::Refusal {
                    address,
                    path,
                    reason: status.status_code.to_string(),
                }
            }
            other => Error::Lost {
                address,
                path,
                reason: other.to_string(),
            },
        }
    }
}
