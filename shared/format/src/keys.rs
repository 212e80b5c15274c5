//! Tenant keys and the key-encryption key (KEK).
//!
//! A tenant has an age X25519 identity and a 32-byte chunk key. The identity's
//! private half is stored only wrapped (age-encrypted to the KEK's recipient);
//! backup workers get the recipient and the chunk key, never the identity.

use crate::{Error, Result};
use age::secrecy::ExposeSecret;
use std::io::{Read, Write};
use std::str::FromStr;

/// The public half: what the packager encrypts to.
pub type Recipient = age::x25519::Recipient;
/// The private half: what restore and the verifier decrypt with.
pub type Identity = age::x25519::Identity;

/// Freshly generated key material of a tenant.
pub struct NewTenantKey {
    /// Short id of this key (the first 16 hex digits of its recipient's SHA-256).
    pub key_id: String,
    /// Public recipient, `age1…`.
    pub recipient: String,
    /// The identity encrypted to the KEK.
    pub wrapped_identity: Vec<u8>,
    /// Key for chunk ids; wiped from memory on drop.
    pub chunk_key: zeroize::Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for NewTenantKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewTenantKey")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// The key-encryption key: an age X25519 identity kept in a secret file or env var.
pub struct Kek(Identity);

impl std::fmt::Debug for Kek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Kek(<redacted>)")
    }
}

impl Kek {
    /// Generates a new KEK and returns it with its identity-file text.
    pub fn generate() -> (Kek, String) {
        let identity = Identity::generate();
        let text = identity_file_text(&identity, "vaultline key-encryption key");
        (Kek(identity), text)
    }

    /// Parses the text of an age identity file (comments allowed).
    ///
    /// # Errors
    /// When the text holds no `AGE-SECRET-KEY-1…` line. The error never repeats the text.
    pub fn parse(text: &str) -> Result<Kek> {
        parse_identity(text).map(Kek)
    }

    /// Id of this KEK: the first 16 hex digits of the SHA-256 of its
    /// recipient, as for tenant keys. Key records name the KEK that wrapped them.
    pub fn id(&self) -> String {
        key_id(&self.0.to_public().to_string())
    }

    /// Wraps a tenant identity for storage in the catalog.
    pub fn wrap(&self, identity: &Identity) -> Vec<u8> {
        let secret = identity.to_string();
        encrypt_to(&self.0.to_public(), secret.expose_secret().as_bytes())
    }

    /// Seals a secret (a webhook secret, a source credential) for the catalog.
    pub fn seal(&self, secret: &[u8]) -> Vec<u8> {
        encrypt_to(&self.0.to_public(), secret)
    }

    /// Opens a secret sealed with [`Kek::seal`].
    ///
    /// # Errors
    /// When it was sealed with another KEK or is damaged.
    pub fn open(&self, sealed: &[u8]) -> Result<Vec<u8>> {
        decrypt_with(&self.0, sealed).map_err(|e| match e {
            Error::WrongKey => Error::Key(
                "the key-encryption key does not match the one the secret was sealed with".into(),
            ),
            other => other,
        })
    }

    /// Unwraps a tenant identity from the catalog.
    ///
    /// # Errors
    /// When the wrapped key was made with another KEK or is damaged.
    pub fn unwrap(&self, wrapped: &[u8]) -> Result<Identity> {
        let plain = decrypt_with(&self.0, wrapped).map_err(|e| match e {
            Error::WrongKey => Error::Key(
                "the key-encryption key does not match the one the tenant key was wrapped with"
                    .into(),
            ),
            other => other,
        })?;
        let text = String::from_utf8(plain)
            .map_err(|_| Error::Key("wrapped tenant key is not text".into()))?;
        parse_identity(&text)
    }

    /// Unwraps every key of a tenant (each as the catalog stores it) into
    /// one keyring, in the order given.
    ///
    /// # Errors
    /// When any was wrapped by another KEK or is damaged.
    pub fn unwrap_keyring<'a>(
        &self,
        wrapped: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<Keyring> {
        Ok(Keyring::new(
            wrapped
                .into_iter()
                .map(|w| self.unwrap(w))
                .collect::<Result<Vec<_>>>()?,
        ))
    }

    /// Creates a tenant's key material, wrapping its identity with this KEK.
    ///
    /// # Errors
    /// When the OS random source fails.
    pub fn new_tenant_key(&self) -> Result<NewTenantKey> {
        let identity = Identity::generate();
        let recipient = identity.to_public().to_string();
        let mut chunk_key = zeroize::Zeroizing::new([0u8; 32]);
        getrandom::fill(&mut chunk_key[..])
            .map_err(|e| Error::Key(format!("random source failed: {e}")))?;
        Ok(NewTenantKey {
            key_id: key_id(&recipient),
            wrapped_identity: self.wrap(&identity),
            recipient,
            chunk_key,
        })
    }
}

/// Every key of a tenant that a reader holds, each with its key id. Rotation
/// leaves old packs and manifests sealed to old keys (and new snapshots
/// still reference old packs, since dedup goes on), so whatever reads a
/// tenant's data reads it with all of them: a pack of format 3 names its
/// key, and anything else is tried with each.
#[derive(Clone)]
pub struct Keyring(Vec<(String, Identity)>);

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(id, _)| id))
            .finish()
    }
}

impl Keyring {
    /// A keyring of `identities`, in the order they are tried.
    pub fn new(identities: impl IntoIterator<Item = Identity>) -> Keyring {
        Keyring(
            identities
                .into_iter()
                .map(|identity| (key_id(&identity.to_public().to_string()), identity))
                .collect(),
        )
    }

    /// The identity of key `key_id`, when held.
    pub fn get(&self, key_id: &str) -> Option<&Identity> {
        self.0
            .iter()
            .find(|(id, _)| id == key_id)
            .map(|(_, identity)| identity)
    }

    /// The ids of the keys held.
    pub fn key_ids(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(id, _)| id.as_str())
    }

    /// The identities held, in order.
    pub fn identities(&self) -> impl Iterator<Item = &Identity> {
        self.0.iter().map(|(_, identity)| identity)
    }

    /// age's view of the keyring: a file opens with any of them.
    pub(crate) fn age_identities(&self) -> impl Iterator<Item = &dyn age::Identity> {
        self.0
            .iter()
            .map(|(_, identity)| identity as &dyn age::Identity)
    }

    /// Decrypts age data sealed to any key held.
    ///
    /// # Errors
    /// [`Error::WrongKey`] when none is a recipient; [`Error::Corrupt`] when
    /// the data fails authentication.
    pub fn decrypt(&self, sealed: &[u8]) -> Result<Vec<u8>> {
        decrypt_any(self.age_identities(), sealed)
    }
}

impl From<Identity> for Keyring {
    fn from(identity: Identity) -> Keyring {
        Keyring::new([identity])
    }
}

impl From<&Identity> for Keyring {
    fn from(identity: &Identity) -> Keyring {
        Keyring::new([identity.clone()])
    }
}

/// Id of a key: the first 16 hex digits of the SHA-256 of its recipient.
pub fn key_id(recipient: &str) -> String {
    hex::encode(&crate::sha256(recipient.as_bytes())[..8])
}

/// Parses a recipient string (`age1…`).
///
/// # Errors
/// When the string is not an X25519 recipient.
pub fn parse_recipient(text: &str) -> Result<Recipient> {
    Recipient::from_str(text.trim()).map_err(|e| Error::Key(format!("invalid recipient: {e}")))
}

/// Parses the first identity in an age identity file's text.
///
/// # Errors
/// When no valid `AGE-SECRET-KEY-1` line is present.
pub fn parse_identity(text: &str) -> Result<Identity> {
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("AGE-SECRET-KEY-1"))
        .ok_or_else(|| Error::Key("no AGE-SECRET-KEY-1 line found in the identity".into()))?;
    Identity::from_str(line)
        .map_err(|_| Error::Key("the AGE-SECRET-KEY-1 line is not a valid identity".into()))
}

/// Parses every identity in an age identity file's text (a tenant's file
/// holds each of its keys, the active one first).
///
/// # Errors
/// When a `AGE-SECRET-KEY-1` line is not a valid identity, or there is none.
pub fn parse_identities(text: &str) -> Result<Vec<Identity>> {
    let identities = text
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("AGE-SECRET-KEY-1"))
        .map(|line| {
            Identity::from_str(line)
                .map_err(|_| Error::Key("an AGE-SECRET-KEY-1 line is not a valid identity".into()))
        })
        .collect::<Result<Vec<_>>>()?;
    if identities.is_empty() {
        return Err(Error::Key(
            "no AGE-SECRET-KEY-1 line found in the identity".into(),
        ));
    }
    Ok(identities)
}

/// The text of an age identity file for `identity`, readable by `age -d -i`.
pub fn identity_file_text(identity: &Identity, comment: &str) -> String {
    format!(
        "# {comment}\n# public key: {}\n{}\n",
        identity.to_public(),
        identity.to_string().expose_secret()
    )
}

/// age-encrypts `plain` to `recipient`.
pub fn encrypt_to(recipient: &Recipient, plain: &[u8]) -> Vec<u8> {
    let encryptor =
        age::Encryptor::with_recipients(std::iter::once(recipient as &dyn age::Recipient))
            .expect("one X25519 recipient is always a valid set");
    let mut out = Vec::with_capacity(plain.len() + 256);
    let mut writer = encryptor
        .wrap_output(&mut out)
        .expect("writing to a Vec cannot fail");
    writer
        .write_all(plain)
        .expect("writing to a Vec cannot fail");
    writer.finish().expect("writing to a Vec cannot fail");
    out
}

/// Decrypts age data with `identity`.
///
/// # Errors
/// [`Error::WrongKey`] when `identity` is not a recipient; [`Error::Corrupt`] when
/// the data fails authentication.
pub fn decrypt_with(identity: &Identity, sealed: &[u8]) -> Result<Vec<u8>> {
    decrypt_any(std::iter::once(identity as &dyn age::Identity), sealed)
}

fn decrypt_any<'a>(
    identities: impl Iterator<Item = &'a dyn age::Identity>,
    sealed: &[u8],
) -> Result<Vec<u8>> {
    let decryptor = age::Decryptor::new_buffered(sealed).map_err(map_decrypt)?;
    let mut reader = decryptor.decrypt(identities).map_err(map_decrypt)?;
    let mut out = Vec::with_capacity(sealed.len());
    reader.read_to_end(&mut out).map_err(|e| Error::Corrupt {
        what: "encrypted data",
        reason: e.to_string(),
    })?;
    Ok(out)
}

pub(crate) fn map_decrypt(e: age::DecryptError) -> Error {
    match e {
        age::DecryptError::NoMatchingKeys => Error::WrongKey,
        other => Error::Corrupt {
            what: "encrypted data",
            reason: other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapped_identities_need_the_same_kek() {
        let (kek, text) = Kek::generate();
        let reparsed = Kek::parse(&text).unwrap();
        let key = kek.new_tenant_key().unwrap();
        let identity = reparsed.unwrap(&key.wrapped_identity).unwrap();
        assert_eq!(identity.to_public().to_string(), key.recipient);
        let (other, _) = Kek::generate();
        let err = other
            .unwrap(&key.wrapped_identity)
            .err()
            .expect("another KEK must fail")
            .to_string();
        assert!(err.contains("does not match"), "{err}");
        assert!(!format!("{kek:?}").contains("AGE-SECRET"));
    }

    #[test]
    fn decrypting_with_another_identity_is_wrong_key() {
        let a = Identity::generate();
        let b = Identity::generate();
        let sealed = encrypt_to(&a.to_public(), b"secret");
        assert_eq!(decrypt_with(&a, &sealed).unwrap(), b"secret");
        assert!(matches!(decrypt_with(&b, &sealed), Err(Error::WrongKey)));
    }
}
