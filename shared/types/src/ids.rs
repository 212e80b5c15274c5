//! Typed ids. Names that appear in subjects are validated once, here.

use serde::{Deserialize, Serialize};
use std::fmt;

/// An id or name failed validation.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct IdError(String);

/// A tenant or source name: it becomes a NATS subject token and a directory
/// name, so it is restricted to `[a-z0-9_-]`, 1 to 64 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Name(String);

impl Name {
    /// Validates `value` as a tenant or source name.
    ///
    /// # Errors
    /// When the name is empty, longer than 64 characters, or uses a character
    /// outside `a-z 0-9 _ -`.
    pub fn new(value: impl Into<String>) -> Result<Self, IdError> {
        let value = value.into();
        let valid = !value.is_empty()
            && value.len() <= 64
            && value
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if valid {
            Ok(Name(value))
        } else {
            Err(IdError(format!(
                "{value:?} is not a valid name: use 1 to 64 characters from a-z, 0-9, '_' and '-'"
            )))
        }
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Name {
    type Error = IdError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Name::new(value)
    }
}

impl From<Name> for String {
    fn from(name: Name) -> String {
        name.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for Name {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Name::new(s)
    }
}

/// A snapshot id: `YYYYMMDDTHHMMSSZ-` and 8 hex digits. It sorts by time and is
/// derived deterministically from the trigger, so a redelivered trigger names
/// the same snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SnapshotId(String);

impl SnapshotId {
    /// Derives the id from the trigger's time and a unique key of the trigger.
    pub fn derive(at: time::OffsetDateTime, trigger_key: &str) -> Self {
        use sha2::Digest;
        let at = at.to_offset(time::UtcOffset::UTC);
        let digest = sha2::Sha256::digest(trigger_key.as_bytes());
        SnapshotId(format!(
            "{:04}{:02}{:02}T{:02}{:02}{:02}Z-{}",
            at.year(),
            u8::from(at.month()),
            at.day(),
            at.hour(),
            at.minute(),
            at.second(),
            hex::encode(&digest[..4])
        ))
    }

    /// Parses an id typed by a person.
    ///
    /// # Errors
    /// When `value` is not in the snapshot id format.
    pub fn parse(value: &str) -> Result<Self, IdError> {
        let ok = value.len() == 25
            && value.as_bytes()[8] == b'T'
            && value.as_bytes()[15] == b'Z'
            && value.as_bytes()[16] == b'-'
            && value.bytes().enumerate().all(|(i, b)| match i {
                8 | 15 | 16 => true,
                0..=14 => b.is_ascii_digit(),
                _ => b.is_ascii_hexdigit() && !b.is_ascii_uppercase(),
            });
        if ok {
            Ok(SnapshotId(value.to_owned()))
        } else {
            Err(IdError(format!(
                "{value:?} is not a snapshot id (expected e.g. 20261123T190000Z-1a2b3c4d)"
            )))
        }
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for SnapshotId {
    type Error = IdError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        SnapshotId::parse(&value)
    }
}

impl From<SnapshotId> for String {
    fn from(id: SnapshotId) -> String {
        id.0
    }
}

impl fmt::Display for SnapshotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

macro_rules! digest_id {
    ($name:ident, $doc:literal) => {
        #[doc = $doc]
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub [u8; 32]);

        // Hex for people (JSON), 32 raw bytes for MessagePack: an array of
        // small integers would double the size of every index.
        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                if s.is_human_readable() {
                    s.serialize_str(&self.to_hex())
                } else {
                    s.serialize_bytes(&self.0)
                }
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> serde::de::Visitor<'de> for V {
                    type Value = $name;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str("32 bytes or 64 hex digits")
                    }
                    fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<$name, E> {
                        <[u8; 32]>::try_from(v)
                            .map($name)
                            .map_err(|_| E::invalid_length(v.len(), &self))
                    }
                    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<$name, E> {
                        $name::from_hex(v).map_err(E::custom)
                    }
                    fn visit_seq<A: serde::de::SeqAccess<'de>>(
                        self,
                        mut seq: A,
                    ) -> Result<$name, A::Error> {
                        let mut out = [0u8; 32];
                        for (i, b) in out.iter_mut().enumerate() {
                            *b = seq
                                .next_element()?
                                .ok_or_else(|| serde::de::Error::invalid_length(i, &self))?;
                        }
                        Ok($name(out))
                    }
                }
                if d.is_human_readable() {
                    d.deserialize_str(V)
                } else {
                    d.deserialize_bytes(V)
                }
            }
        }

        impl $name {
            /// Lower-case hex, 64 characters.
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }

            /// Parses 64 hex characters.
            ///
            /// # Errors
            /// When `value` is not 64 hex characters.
            pub fn from_hex(value: &str) -> Result<Self, IdError> {
                let mut out = [0u8; 32];
                hex::decode_to_slice(value, &mut out).map_err(|_| {
                    IdError(format!(
                        "{value:?} is not a {} (expected 64 hex digits)",
                        stringify!($name)
                    ))
                })?;
                Ok($name(out))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), &self.to_hex()[..16])
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }
    };
}

digest_id!(
    ChunkId,
    "A chunk id: BLAKE3 keyed with the tenant's chunk key, so storage never sees plain content hashes."
);
digest_id!(
    PackId,
    "A pack id: the SHA-256 of the pack's stored bytes, so the id is also its recorded digest."
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_reject_subject_and_path_characters() {
        for bad in ["", "a.b", "a*", "a>", "A", "../x", "a b", &"x".repeat(65)] {
            assert!(Name::new(bad).is_err(), "{bad:?} should be rejected");
        }
        assert_eq!(Name::new("db-01_x").unwrap().as_str(), "db-01_x");
    }

    #[test]
    fn snapshot_ids_round_trip_and_are_deterministic() {
        let at = time::macros::datetime!(2026-11-23 19:00:05 UTC);
        let a = SnapshotId::derive(at, "VAULTLINE:42");
        assert_eq!(a, SnapshotId::derive(at, "VAULTLINE:42"));
        assert_ne!(a, SnapshotId::derive(at, "VAULTLINE:43"));
        assert!(a.as_str().starts_with("20261123T190005Z-"));
        assert_eq!(SnapshotId::parse(a.as_str()).unwrap(), a);
        assert!(SnapshotId::parse("20261123T190005Z-XYZ").is_err());
    }
}
