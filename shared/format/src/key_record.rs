//! Key records: what the repository keeps of each tenant key, so that the
//! repository and one secret recover everything without the catalog.
//!
//! One record per tenant key and KEK, as JSON at
//! `tenants/<tenant>/keys/<key id>/<KEK id>.json`. It holds the public
//! recipient, the identity and the chunk-id key each wrapped by the KEK, and
//! the chunk-id key sealed once more to the tenant's own recipient, so that
//! the tenant's identity file alone also recovers it (and dedup can go on
//! after a restore of the catalog from nothing but the bucket and that file).

use crate::keys::{Identity, Kek, decrypt_with, encrypt_to, key_id, parse_recipient};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use vaultline_types::Name;
use zeroize::Zeroizing;

/// The record format this build writes and reads.
pub const KEY_RECORD_FORMAT: u16 = 1;

/// A tenant key as the repository stores it (`schemas/repository-format.md`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRecord {
    pub format: u16,
    pub tenant: Name,
    /// First 16 hex digits of the SHA-256 of `recipient`.
    pub key_id: String,
    /// The tenant's public key, `age1…`: what packs and manifests are sealed to.
    pub recipient: String,
    /// Id of the KEK that wrapped the two fields below (same derivation as `key_id`).
    pub kek_id: String,
    /// The tenant identity, age-encrypted to the KEK.
    #[serde(with = "hex::serde")]
    pub wrapped_identity: Vec<u8>,
    /// The 32-byte chunk-id key, age-encrypted to the KEK.
    #[serde(with = "hex::serde")]
    pub wrapped_chunk_key: Vec<u8>,
    /// The same chunk-id key, age-encrypted to `recipient`.
    #[serde(with = "hex::serde")]
    pub sealed_chunk_key: Vec<u8>,
    /// When the tenant key was made, seconds since the epoch.
    pub created: i64,
}

/// A tenant key opened from its record.
pub struct OpenedKey {
    pub identity: Identity,
    pub chunk_key: Zeroizing<[u8; 32]>,
}

impl KeyRecord {
    /// The record of a tenant key (its identity and chunk-id key) under `kek`.
    pub fn new(
        kek: &Kek,
        tenant: &Name,
        identity: &Identity,
        chunk_key: &[u8; 32],
        created: i64,
    ) -> KeyRecord {
        let recipient = identity.to_public();
        KeyRecord {
            format: KEY_RECORD_FORMAT,
            tenant: tenant.clone(),
            key_id: key_id(&recipient.to_string()),
            recipient: recipient.to_string(),
            kek_id: kek.id(),
            wrapped_identity: kek.wrap(identity),
            wrapped_chunk_key: kek.seal(chunk_key),
            sealed_chunk_key: encrypt_to(&recipient, chunk_key),
            created,
        }
    }

    /// Parses a record, refusing formats this build does not know.
    ///
    /// # Errors
    /// When the bytes are not a key record.
    pub fn parse(bytes: &[u8]) -> Result<KeyRecord> {
        let record: KeyRecord = serde_json::from_slice(bytes).map_err(|e| Error::Corrupt {
            what: "key record",
            reason: e.to_string(),
        })?;
        if record.format != KEY_RECORD_FORMAT {
            return Err(Error::Corrupt {
                what: "key record",
                reason: format!("format {} is not one this build reads", record.format),
            });
        }
        if key_id(&record.recipient) != record.key_id {
            return Err(Error::Corrupt {
                what: "key record",
                reason: "its key id is not its recipient's".into(),
            });
        }
        Ok(record)
    }

    /// The record as stored: JSON.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("a key record always serializes")
    }

    /// Opens the identity and chunk-id key with the KEK that wrapped them.
    ///
    /// # Errors
    /// Another KEK, damage, or an identity that is not this record's.
    pub fn open_with_kek(&self, kek: &Kek) -> Result<OpenedKey> {
        if kek.id() != self.kek_id {
            return Err(Error::Key(format!(
                "key record {} was wrapped by KEK {}, not by KEK {}",
                self.key_id,
                self.kek_id,
                kek.id()
            )));
        }
        let identity = kek.unwrap(&self.wrapped_identity)?;
        self.check_identity(&identity)?;
        let chunk_key = chunk_key(&kek.open(&self.wrapped_chunk_key)?)?;
        Ok(OpenedKey {
            identity,
            chunk_key,
        })
    }

    /// Opens the chunk-id key with the tenant's own identity.
    ///
    /// # Errors
    /// Another tenant's identity, or damage.
    pub fn open_with_identity(&self, identity: &Identity) -> Result<OpenedKey> {
        self.check_identity(identity)?;
        let chunk_key = chunk_key(&decrypt_with(identity, &self.sealed_chunk_key)?)?;
        Ok(OpenedKey {
            identity: identity.clone(),
            chunk_key,
        })
    }

    /// True when `identity` is this record's key.
    pub fn is_for(&self, identity: &Identity) -> bool {
        identity.to_public().to_string() == self.recipient
    }

    fn check_identity(&self, identity: &Identity) -> Result<()> {
        parse_recipient(&self.recipient)?;
        if self.is_for(identity) {
            Ok(())
        } else {
            Err(Error::Key(format!(
                "the identity is not tenant {}'s key {}",
                self.tenant, self.key_id
            )))
        }
    }
}

fn chunk_key(plain: &[u8]) -> Result<Zeroizing<[u8; 32]>> {
    let plain = Zeroizing::new(plain.to_vec());
    let key: [u8; 32] = plain.as_slice().try_into().map_err(|_| Error::Corrupt {
        what: "key record",
        reason: format!("a chunk-id key of {} bytes", plain.len()),
    })?;
    Ok(Zeroizing::new(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_opens_with_its_kek_or_its_identity_and_nothing_else() {
        let (kek, _) = Kek::generate();
        let (other_kek, _) = Kek::generate();
        let identity = Identity::generate();
        let tenant = Name::new("acme").unwrap();
        let record = KeyRecord::new(&kek, &tenant, &identity, &[7; 32], 1_764_000_000);
        let parsed = KeyRecord::parse(&record.to_bytes()).unwrap();
        assert_eq!(parsed, record);
        let opened = parsed.open_with_kek(&kek).unwrap();
        assert!(parsed.is_for(&opened.identity));
        assert_eq!(*opened.chunk_key, [7; 32]);
        assert_eq!(
            *parsed.open_with_identity(&identity).unwrap().chunk_key,
            [7; 32]
        );
        assert!(parsed.open_with_kek(&other_kek).is_err());
        assert!(parsed.open_with_identity(&Identity::generate()).is_err());
        // A record whose key id is not its recipient's is refused.
        let mut forged = record.clone();
        forged.key_id = "0000000000000000".into();
        assert!(KeyRecord::parse(&forged.to_bytes()).is_err());
        let text = String::from_utf8(record.to_bytes()).unwrap();
        assert!(
            KeyRecord::parse(text.replace("\"format\": 1", "\"format\": 9").as_bytes()).is_err()
        );
    }
}
