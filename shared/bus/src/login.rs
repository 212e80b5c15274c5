//! Who a connection is: a user with a password, an nkey seed or a `.creds`
//! file, optionally over TLS with a client certificate, and the inbox prefix
//! its replies come back on (the shipped server config lets each user
//! subscribe only to `_INBOX.<user>.>`, so no one reads another's replies).

use crate::{Error, Result};
use std::path::PathBuf;

/// The credentials and TLS settings of one connection. Secrets are read from
/// files when connecting and never kept in this struct.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Login {
    /// The user name (with a password file).
    pub user: Option<String>,
    /// File holding the user's password (its first line).
    pub password_file: Option<PathBuf>,
    /// File holding an nkey seed (`SU…`).
    pub nkey_seed_file: Option<PathBuf>,
    /// A `.creds` file (JWT and seed), for servers in operator mode.
    pub creds_file: Option<PathBuf>,
    /// Reply subjects start with this; `_INBOX.<user>` when a user is
    /// named, else the client default `_INBOX`.
    pub inbox_prefix: Option<String>,
    /// TLS settings; plain TCP when absent (unless the URL says `tls://`).
    pub tls: Tls,
}

/// TLS settings of a connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tls {
    /// CA certificate(s) that signed the server's certificate (PEM).
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM), for servers that verify clients.
    pub cert_file: Option<PathBuf>,
    /// Its private key (PEM).
    pub key_file: Option<PathBuf>,
}

/// The NATS user of a stage (or `operator`, `admin`) in `deploy/nats/auth.conf`.
pub fn user_of(role: &str) -> String {
    format!("vaultline-{role}")
}

impl Login {
    /// A user with a password file.
    pub fn password(user: impl Into<String>, password_file: impl Into<PathBuf>) -> Login {
        Login {
            user: Some(user.into()),
            password_file: Some(password_file.into()),
            ..Login::default()
        }
    }

    /// The inbox prefix this login replies on.
    pub fn inbox(&self) -> String {
        match (&self.inbox_prefix, &self.user) {
            (Some(prefix), _) => prefix.clone(),
            (None, Some(user)) => format!("_INBOX.{user}"),
            (None, None) => "_INBOX".to_owned(),
        }
    }

    /// Connect options carrying these credentials.
    ///
    /// # Errors
    /// When a named file cannot be read, or settings contradict each other.
    /// Messages name files, never their contents.
    pub(crate) async fn options(&self) -> Result<async_nats::ConnectOptions> {
        let mut options = async_nats::ConnectOptions::new();
        let methods = [
            self.password_file.is_some(),
            self.nkey_seed_file.is_some(),
            self.creds_file.is_some(),
        ];
        if methods.iter().filter(|m| **m).count() > 1 {
            return Err(Error::Credentials(
                "NATS login: give one of password-file, nkey-seed-file and creds-file".into(),
            ));
        }
        if let Some(file) = &self.password_file {
            let user = self.user.clone().ok_or_else(|| {
                Error::Credentials("NATS login: a password file needs a user".into())
            })?;
            options = options.user_and_password(user, first_line(file, "password")?);
        } else if let Some(file) = &self.nkey_seed_file {
            options = options.nkey(first_line(file, "nkey seed")?);
        } else if let Some(file) = &self.creds_file {
            options = options.credentials_file(file).await.map_err(|e| {
                Error::Credentials(format!(
                    "cannot read the NATS creds file {}: {e}",
                    file.display()
                ))
            })?;
        }
        if let Some(ca) = &self.tls.ca_file {
            options = options.add_root_certificates(ca.clone()).require_tls(true);
        }
        match (&self.tls.cert_file, &self.tls.key_file) {
            (Some(cert), Some(key)) => {
                options = options
                    .add_client_certificate(cert.clone(), key.clone())
                    .require_tls(true);
            }
            (None, None) => {}
            _ => {
                return Err(Error::Credentials(
                    "NATS TLS: a client certificate needs both cert-file and key-file".into(),
                ));
            }
        }
        Ok(options.custom_inbox_prefix(self.inbox()))
    }
}

fn first_line(file: &std::path::Path, what: &str) -> Result<String> {
    let text = std::fs::read_to_string(file).map_err(|e| {
        Error::Credentials(format!(
            "cannot read the NATS {what} file {}: {e}",
            file.display()
        ))
    })?;
    let line = text.lines().next().unwrap_or("").trim().to_owned();
    if line.is_empty() {
        return Err(Error::Credentials(format!(
            "the NATS {what} file {} is empty",
            file.display()
        )));
    }
    Ok(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inbox_follows_the_user() {
        assert_eq!(Login::default().inbox(), "_INBOX");
        assert_eq!(
            Login::password(user_of("packager"), "/x").inbox(),
            "_INBOX.vaultline-packager"
        );
    }

    #[tokio::test]
    async fn two_secrets_or_a_missing_file_are_refused_by_name() {
        let mut login = Login::password("u", "/nonexistent/pw");
        let error = login.options().await.unwrap_err().to_string();
        assert!(error.contains("/nonexistent/pw"), "{error}");
        login.nkey_seed_file = Some("/nonexistent/seed".into());
        let error = login.options().await.unwrap_err().to_string();
        assert!(error.contains("one of"), "{error}");
    }
}
