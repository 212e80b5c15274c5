//! What an SFTP source's sealed credential holds: a password, or a private
//! key and its passphrase. Sealed as one JSON object so a key and its
//! passphrase are rotated together.

use crate::Error;
use serde::{Deserialize, Serialize};
use vaultline_types::SftpAuth;

/// A login secret. Its `Debug` never shows the secret.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum Credential {
    Password(String),
    Key {
        /// The private key file's text (OpenSSH, PEM or PuTTY).
        key: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        passphrase: Option<String>,
    },
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Credential::Password(_) => "Credential::Password(…)",
            Credential::Key { .. } => "Credential::Key(…)",
        })
    }
}

impl Credential {
    /// How this credential logs in, as the source's config records it.
    pub fn auth(&self) -> SftpAuth {
        match self {
            Credential::Password(_) => SftpAuth::Password,
            Credential::Key { .. } => SftpAuth::Key,
        }
    }

    /// The bytes to seal.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a credential serialises")
    }

    /// The credential from its opened bytes, checked against the source's
    /// `auth`; errors never quote the bytes.
    ///
    /// # Errors
    /// Bytes that are not a credential of that kind.
    pub fn from_bytes(bytes: &[u8], auth: SftpAuth) -> Result<Credential, Error> {
        let credential: Credential = serde_json::from_slice(bytes).map_err(|_| {
            Error::Credential("an sftp credential (set it again with source set-credential)".into())
        })?;
        match auth {
            _ if credential.auth() == auth => Ok(credential),
            SftpAuth::Password => Err(Error::Credential("a password".into())),
            SftpAuth::Key => Err(Error::Credential("a private key".into())),
        }
    }

    /// The private key, checked now so a wrong passphrase or a file that
    /// is no key is refused when it is stored, not at the first backup.
    ///
    /// # Errors
    /// Not a key, or its passphrase is missing or wrong.
    pub fn private_key(&self) -> Result<Option<russh::keys::PrivateKey>, Error> {
        let Credential::Key { key, passphrase } = self else {
            return Ok(None);
        };
        russh::keys::decode_secret_key(key, passphrase.as_deref())
            .map(Some)
            .map_err(|e| match e {
                russh::keys::Error::KeyIsEncrypted => Error::Credential(
                    "a usable private key: it is encrypted and needs its passphrase".into(),
                ),
                e => Error::Credential(format!("a usable private key ({e})")),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_is_checked_against_the_auth() {
        let password = Credential::Password("pw-123".into());
        let bytes = password.to_bytes();
        assert_eq!(
            Credential::from_bytes(&bytes, SftpAuth::Password).unwrap(),
            password
        );
        let wrong = Credential::from_bytes(&bytes, SftpAuth::Key).unwrap_err();
        assert!(wrong.to_string().contains("private key"), "{wrong}");
        let garbage = Credential::from_bytes(b"pw-123", SftpAuth::Password).unwrap_err();
        assert!(!garbage.to_string().contains("pw-123"), "{garbage}");
        assert!(!format!("{password:?}").contains("pw-123"));
    }

    #[test]
    fn a_key_that_is_not_one_is_refused_in_words() {
        let key = Credential::Key {
            key: "not a key".into(),
            passphrase: None,
        };
        let refused = key.private_key().unwrap_err().to_string();
        assert!(refused.contains("usable private key"), "{refused}");
    }
}
