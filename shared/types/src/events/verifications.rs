//! A verification asked for by name (the HTTP API's
//! `POST /v1/snapshots/{id}/verifications`) and what it found.

use super::{Message, SUBJECT_PREFIX};
use crate::ids::{Name, SnapshotId};
use serde::{Deserialize, Serialize};

/// `vaultline.verify.request.<tenant>.<source>`: check one stored snapshot
/// again now, every object read back (level 1), and at level 2 the whole
/// snapshot decrypted and reassembled. The verifier runs it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyRequested {
    pub tenant: Name,
    pub source: Name,
    pub snapshot: SnapshotId,
    /// 1 or 2.
    pub level: u8,
    /// Names the result: one result per tenant and request id.
    pub request_id: String,
}
impl Message for VerifyRequested {
    const KIND: &'static str = "verify.request";
    fn subject(&self) -> String {
        format!(
            "{SUBJECT_PREFIX}.{}.{}.{}",
            Self::KIND,
            self.tenant,
            self.source
        )
    }
    fn tenant(&self) -> &Name {
        &self.tenant
    }
    fn source(&self) -> Option<&Name> {
        Some(&self.source)
    }
    /// None: a request is not the snapshot's own event, so nothing that
    /// goes wrong with one (a forged one included) can mark it failed.
    fn snapshot(&self) -> Option<&SnapshotId> {
        None
    }
}

impl VerifyRequested {
    /// Refuses a level other than 1 or 2 and a request id that could not
    /// be a key (1–100 of `A-Z a-z 0-9 . _ : -`), in words.
    ///
    /// # Errors
    /// The first rule broken.
    pub fn check(&self) -> Result<(), String> {
        if !(1..=2).contains(&self.level) {
            return Err(format!("level {} is not 1 or 2", self.level));
        }
        let id = &self.request_id;
        if !(1..=100).contains(&id.len())
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
        {
            return Err(format!(
                "request id {id:?} is not 1-100 of A-Z a-z 0-9 . _ : -"
            ));
        }
        Ok(())
    }
}

/// `vaultline.verify.completed.<tenant>`: how a requested verification ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerificationCompleted {
    pub tenant: Name,
    pub source: Name,
    pub snapshot: SnapshotId,
    pub request_id: String,
    pub level: u8,
    /// `passed`; `failed` (something is damaged or missing: the snapshot is
    /// marked corrupt); or `error` (it could not be checked, e.g. it is not
    /// stored yet, or level 2 was asked of a verifier without the key).
    pub outcome: String,
    /// Objects (packs and the manifest) checked at level 1, all read back.
    pub objects: u32,
    /// Files and bytes reassembled at level 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// What is damaged or missing; empty unless `failed`.
    #[serde(default)]
    pub problems: Vec<String>,
    /// Why it could not be checked (`error`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Unix time (seconds) it started.
    pub started_at: i64,
    pub duration_ms: u64,
}
impl Message for VerificationCompleted {
    const KIND: &'static str = "verify.completed";
    ids!(VerificationCompleted);
}
