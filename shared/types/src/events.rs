//! The events of the pipeline, one struct per subject, in pipeline order.
//! The table in `schemas/subjects.md` lists the same subjects for people.

use crate::ids::{Name, PackId, SnapshotId};
use crate::staging_key::StagedBatch;
use crate::{DecodeError, StageName};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use std::collections::BTreeMap;

/// Every subject vaultline uses starts with this.
pub const SUBJECT_PREFIX: &str = "vaultline";

/// An event bound to its subject and schema version.
pub trait Message: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// Event kind, also the subject's middle part (e.g. `pack.staged`).
    const KIND: &'static str;
    /// Schema version, bumped on incompatible change.
    const VERSION: u16 = 1;
    /// The subject this event is published on.
    fn subject(&self) -> String {
        format!("{SUBJECT_PREFIX}.{}.{}", Self::KIND, self.tenant())
    }
    /// Tenant of the event.
    fn tenant(&self) -> &Name;
    /// Source of the event, when it has one.
    fn source(&self) -> Option<&Name>;
    /// Snapshot of the event, when it has one.
    fn snapshot(&self) -> Option<&SnapshotId>;
    /// Checks the decoded event against the subject it arrived on. The default
    /// requires the subject to be the event's own.
    ///
    /// # Errors
    /// When the subject and payload disagree (e.g. a tenant spoofed in the body).
    fn bind_subject(&mut self, subject: &str) -> Result<(), DecodeError> {
        let expected = self.subject();
        if subject == expected {
            Ok(())
        } else {
            Err(DecodeError::Subject(format!(
                "payload belongs on {expected} but arrived on {subject}"
            )))
        }
    }
}

/// Subject filter matching every instance of `M`.
pub fn subject_filter<M: Message>() -> String {
    format!("{SUBJECT_PREFIX}.{}.>", M::KIND)
}

/// Dead-letter subject of a stage.
pub fn dead_letter_subject(stage: StageName) -> String {
    format!("{SUBJECT_PREFIX}.dlq.{stage}")
}

/// Request ids of the scheduler's triggers start with this, and nobody
/// else's may: the extractor accepts one only when the catalog recorded it
/// for that source's last fired slot.
pub const SCHEDULED_REQUEST_PREFIX: &str = "schedule-";

/// Request ids of the verifier's own drill timer start with this, and
/// nobody else's may.
pub const DRILL_REQUEST_PREFIX: &str = "drill-";

/// How a backup was started; recorded in the execution history.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TriggerKind {
    /// By the scheduler.
    Scheduled,
    /// By `vaultline backup`.
    Manual,
    /// By the HTTP API.
    Api,
    /// The safety snapshot `vaultline restore --app` takes of a live
    /// application's database before it overwrites it.
    Safety,
    /// By anyone else publishing the trigger (e.g. `nats pub`).
    #[default]
    External,
}

impl TriggerKind {
    /// Lower-case name as stored in the catalog.
    pub fn as_str(self) -> &'static str {
        match self {
            TriggerKind::Scheduled => "scheduled",
            TriggerKind::Manual => "manual",
            TriggerKind::Api => "api",
            TriggerKind::Safety => "safety",
            TriggerKind::External => "external",
        }
    }
}

macro_rules! ids {
    ($ty:ty) => {
        fn tenant(&self) -> &Name {
            &self.tenant
        }
        fn source(&self) -> Option<&Name> {
            Some(&self.source)
        }
        fn snapshot(&self) -> Option<&SnapshotId> {
            Some(&self.snapshot)
        }
    };
}

/// `vaultline.backup.request.<tenant>.<source>`: start a backup. A person may
/// publish `{}`; tenant and source then come from the subject.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackupRequested {
    /// Filled from the subject when absent; must match it when present.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<Name>,
    /// Filled from the subject when absent; must match it when present.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<Name>,
    /// Caller's id for this request; names the snapshot deterministically so
    /// `vaultline backup --wait` can follow it. Defaults to the stream sequence.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Who triggered it; `external` when absent.
    pub trigger: TriggerKind,
    /// Recorded with the snapshot, e.g. `app_version` (a restore into the
    /// live application compares it with the version running). See
    /// [`BackupRequested::check_labels`].
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// Labels a snapshot may carry: this many, keys of `[a-z0-9_.-]` up to 63
/// bytes, values up to 256 bytes without control characters.
pub const MAX_LABELS: usize = 16;

impl BackupRequested {
    /// Refuses labels outside [`MAX_LABELS`]'s rules, in words.
    ///
    /// # Errors
    /// The first label that breaks a rule.
    pub fn check_labels(&self) -> Result<(), String> {
        if self.labels.len() > MAX_LABELS {
            return Err(format!(
                "{} labels; at most {MAX_LABELS}",
                self.labels.len()
            ));
        }
        for (key, value) in &self.labels {
            let key_ok = !key.is_empty()
                && key.len() <= 63
                && key
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b));
            if !key_ok {
                return Err(format!("label key {key:?}: use 1-63 of a-z, 0-9, _ . -"));
            }
            if value.len() > 256 || value.chars().any(char::is_control) {
                return Err(format!(
                    "label {key}: a value of at most 256 bytes without control characters"
                ));
            }
        }
        Ok(())
    }

    /// Tenant, present once the subject was bound.
    pub fn tenant_name(&self) -> &Name {
        self.tenant.as_ref().expect("bind_subject sets the tenant")
    }
    /// Source, present once the subject was bound.
    pub fn source_name(&self) -> &Name {
        self.source.as_ref().expect("bind_subject sets the source")
    }
    /// Subject of a trigger for `tenant`'s `source`.
    pub fn subject_for(tenant: &Name, source: &Name) -> String {
        format!("{SUBJECT_PREFIX}.{}.{tenant}.{source}", Self::KIND)
    }
}

impl Message for BackupRequested {
    const KIND: &'static str = "backup.request";
    fn subject(&self) -> String {
        Self::subject_for(self.tenant_name(), self.source_name())
    }
    fn tenant(&self) -> &Name {
        self.tenant_name()
    }
    fn source(&self) -> Option<&Name> {
        self.source.as_ref()
    }
    fn snapshot(&self) -> Option<&SnapshotId> {
        None
    }
    fn bind_subject(&mut self, subject: &str) -> Result<(), DecodeError> {
        let prefix = format!("{SUBJECT_PREFIX}.{}.", Self::KIND);
        let rest = subject.strip_prefix(&prefix).ok_or_else(|| {
            DecodeError::Subject(format!("{subject} is not a backup request subject"))
        })?;
        let (tenant, source) = rest.split_once('.').ok_or_else(|| {
            DecodeError::Subject(format!(
                "{subject} lacks a source: publish on vaultline.backup.request.<tenant>.<source>"
            ))
        })?;
        let tenant = Name::new(tenant).map_err(|e| DecodeError::Subject(format!("tenant: {e}")))?;
        let source = Name::new(source).map_err(|e| DecodeError::Subject(format!("source: {e}")))?;
        for (field, given, actual) in [
            ("tenant", &self.tenant, &tenant),
            ("source", &self.source, &source),
        ] {
            if given.as_ref().is_some_and(|g| g != actual) {
                return Err(DecodeError::Subject(format!(
                    "the body's {field} does not match the subject {subject}"
                )));
            }
        }
        self.tenant = Some(tenant);
        self.source = Some(source);
        Ok(())
    }
}

/// `vaultline.snapshot.started.<tenant>`: the extractor began a snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotStarted {
    pub tenant: Name,
    pub source: Name,
    pub snapshot: SnapshotId,
    pub trigger: TriggerKind,
}
impl Message for SnapshotStarted {
    const KIND: &'static str = "snapshot.started";
    ids!(SnapshotStarted);
}

/// `vaultline.data.extracted.<tenant>`: a batch of new chunks is staged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataExtracted {
    pub tenant: Name,
    pub source: Name,
    pub snapshot: SnapshotId,
    /// Extraction attempt (the trigger's delivery count); a retried
    /// extraction's batches never mix with the attempt before.
    pub attempt: u32,
    /// Batch number within the attempt, from 0.
    pub batch: u32,
    /// Tenant key to encrypt to (public id, not a secret).
    pub key_id: String,
    /// Staging key of the batch (claim check).
    pub staged: String,
    /// Number of chunks in the batch.
    pub chunks: u32,
    /// Raw bytes in the batch.
    pub bytes: u64,
}
impl DataExtracted {
    /// The staged batch this message is about, from its ids: the only
    /// staging keys it may name follow from this.
    pub fn staged_batch(&self) -> StagedBatch<'_> {
        StagedBatch {
            tenant: &self.tenant,
            snapshot: &self.snapshot,
            attempt: self.attempt,
            batch: self.batch,
        }
    }
}
impl Message for DataExtracted {
    const KIND: &'static str = "data.extracted";
    ids!(DataExtracted);
}

/// `vaultline.snapshot.extracted.<tenant>`: the source was read to its end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotExtracted {
    pub tenant: Name,
    pub source: Name,
    pub snapshot: SnapshotId,
    /// The attempt that completed.
    pub attempt: u32,
    /// How many `data.extracted` batches that attempt has.
    pub batches: u32,
    /// Staging key of the manifest draft.
    pub manifest: String,
    pub files: u64,
    pub bytes_read: u64,
    pub bytes_new: u64,
}
impl Message for SnapshotExtracted {
    const KIND: &'static str = "snapshot.extracted";
    ids!(SnapshotExtracted);
}

/// `vaultline.pack.staged.<tenant>`: a batch became an encrypted pack.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PackStaged {
    pub tenant: Name,
    pub source: Name,
    pub snapshot: SnapshotId,
    pub attempt: u32,
    pub batch: u32,
    pub pack: PackId,
    /// Staging key of the pack; its index sits beside it with `.idx`.
    pub staged: String,
    /// Staging key of the raw batch it was made from (removed once stored).
    pub raw_staged: String,
    pub size: u64,
}
impl PackStaged {
    /// The staged batch this pack was made of, from its ids.
    pub fn staged_batch(&self) -> StagedBatch<'_> {
        StagedBatch {
            tenant: &self.tenant,
            snapshot: &self.snapshot,
            attempt: self.attempt,
            batch: self.batch,
        }
    }
}
impl Message for PackStaged {
    const KIND: &'static str = "pack.staged";
    ids!(PackStaged);
}

/// `vaultline.pack.stored.<tenant>`: a pack is in the repository and the catalog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PackStored {
    pub tenant: Name,
    pub source: Name,
    pub snapshot: SnapshotId,
    pub pack: PackId,
    pub size: u64,
}
impl Message for PackStored {
    const KIND: &'static str = "pack.stored";
    ids!(PackStored);
}

/// `vaultline.object.conflict.<tenant>`: an alarm. The repository already
/// held other bytes under a key the uploader was to write; nothing was
/// overwritten, and the snapshot that needed the object failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObjectConflict {
    pub tenant: Name,
    pub source: Name,
    pub snapshot: SnapshotId,
    /// The object key.
    pub key: String,
    /// How the stored object differs, e.g. `9 bytes where 12 were to be stored`.
    pub found: String,
}
impl Message for ObjectConflict {
    const KIND: &'static str = "object.conflict";
    ids!(ObjectConflict);
}

/// `vaultline.snapshot.stored.<tenant>`: every pack and the manifest are stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotStored {
    pub tenant: Name,
    pub source: Name,
    pub snapshot: SnapshotId,
    pub packs: u32,
    pub bytes_stored: u64,
}
impl Message for SnapshotStored {
    const KIND: &'static str = "snapshot.stored";
    ids!(SnapshotStored);
}

/// `vaultline.snapshot.verified.<tenant>`: stored bytes match their digests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotVerified {
    pub tenant: Name,
    pub source: Name,
    pub snapshot: SnapshotId,
    /// 1: stored digests; 2: decrypted and reassembled.
    pub level: u8,
    pub objects: u32,
}
impl Message for SnapshotVerified {
    const KIND: &'static str = "snapshot.verified";
    ids!(SnapshotVerified);
}

/// `vaultline.snapshot.copied.<tenant>`: a copy target holds every object of
/// the snapshot (key records, packs, manifest), each read back and matching
/// its digest (level 1 on that target).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotCopied {
    pub tenant: Name,
    pub source: Name,
    pub snapshot: SnapshotId,
    /// The copy's name (`[[repository.copies]] name`).
    pub target: String,
    /// Objects the snapshot needs, and how many of them this copy moved.
    pub objects: u32,
    pub objects_moved: u32,
    pub bytes_moved: u64,
}
impl Message for SnapshotCopied {
    const KIND: &'static str = "snapshot.copied";
    ids!(SnapshotCopied);
}

/// `vaultline.snapshot.corrupt.<tenant>`: verification found damage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotCorrupt {
    pub tenant: Name,
    pub source: Name,
    pub snapshot: SnapshotId,
    pub level: u8,
    /// What is damaged, e.g. `pack 3f2a… digest mismatch`.
    pub reason: String,
}
impl Message for SnapshotCorrupt {
    const KIND: &'static str = "snapshot.corrupt";
    ids!(SnapshotCorrupt);
}

/// `vaultline.snapshot.expired.<tenant>`: retention forgot a snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotExpired {
    pub tenant: Name,
    pub source: Name,
    pub snapshot: SnapshotId,
    /// The policy rule that decided.
    pub rule: String,
}
impl Message for SnapshotExpired {
    const KIND: &'static str = "snapshot.expired";
    ids!(SnapshotExpired);
}

/// `vaultline.snapshot.failed.<tenant>`: a stage gave up on a snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotFailed {
    pub tenant: Name,
    pub source: Option<Name>,
    pub snapshot: SnapshotId,
    pub stage: StageName,
    pub error_type: String,
    pub error: String,
}
impl Message for SnapshotFailed {
    const KIND: &'static str = "snapshot.failed";
    fn tenant(&self) -> &Name {
        &self.tenant
    }
    fn source(&self) -> Option<&Name> {
        self.source.as_ref()
    }
    fn snapshot(&self) -> Option<&SnapshotId> {
        Some(&self.snapshot)
    }
}

/// `vaultline.packs.deleted.<tenant>`: a garbage-collection pass deleted
/// packs no live snapshot referenced any more.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PacksDeleted {
    pub tenant: Name,
    /// Packs newly condemned (deleted after the grace period).
    pub condemned: u64,
    /// Condemned packs a snapshot used again, so kept.
    pub revived: u64,
    /// Packs deleted, and their bytes.
    pub deleted: u64,
    pub deleted_bytes: u64,
    /// Condemned packs past the grace period kept because their object
    /// lock has not expired (deleted by a later pass).
    #[serde(default)]
    pub locked: u64,
}
impl Message for PacksDeleted {
    const KIND: &'static str = "packs.deleted";
    fn tenant(&self) -> &Name {
        &self.tenant
    }
    fn source(&self) -> Option<&Name> {
        None
    }
    fn snapshot(&self) -> Option<&SnapshotId> {
        None
    }
}

/// `vaultline.schedule.skipped.<tenant>`: a due slot was not fired because
/// the source still had a snapshot in flight (no overlap).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduleSkipped {
    pub tenant: Name,
    pub source: Name,
    /// The slot: the unix time (seconds) it began.
    pub slot: i64,
    pub reason: String,
}
impl Message for ScheduleSkipped {
    const KIND: &'static str = "schedule.skipped";
    fn tenant(&self) -> &Name {
        &self.tenant
    }
    fn source(&self) -> Option<&Name> {
        Some(&self.source)
    }
    fn snapshot(&self) -> Option<&SnapshotId> {
        None
    }
}

/// `vaultline.key.rotated.<tenant>`: a key protecting the tenant's data
/// was replaced (`vaultline tenant rotate-key`, `kek rotate`,
/// `credentials-key rotate`). Ids only, never key material.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyRotated {
    pub tenant: Name,
    /// `tenant-key`, `kek` or `credentials-key`.
    pub key: String,
    /// Id of the key replaced, and of its successor.
    pub from: String,
    pub to: String,
    /// What moved to the new key: e.g. key records rewritten, secrets re-sealed.
    pub detail: String,
}
impl Message for KeyRotated {
    const KIND: &'static str = "key.rotated";
    fn tenant(&self) -> &Name {
        &self.tenant
    }
    fn source(&self) -> Option<&Name> {
        None
    }
    fn snapshot(&self) -> Option<&SnapshotId> {
        None
    }
}

/// `vaultline.snapshot.changed.<tenant>`: an operator protected,
/// unprotected or forgot a snapshot by hand (`vaultline snapshot …`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotChanged {
    pub tenant: Name,
    pub source: Name,
    pub snapshot: SnapshotId,
    /// `protected`, `unprotected` or `forgotten`.
    pub change: String,
    /// Why it was allowed, e.g. `--force: the source's last verified snapshot`.
    pub detail: String,
}
impl Message for SnapshotChanged {
    const KIND: &'static str = "snapshot.changed";
    ids!(SnapshotChanged);
}

/// `vaultline.api.called.<tenant>`: one use of an API token, for the audit
/// trail: which token, what it asked and what it got. Never the token's secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiCalled {
    pub tenant: Name,
    /// The token's id (the part before its secret).
    pub token: String,
    pub scope: String,
    pub method: String,
    pub path: String,
    pub status: u16,
}
impl Message for ApiCalled {
    const KIND: &'static str = "api.called";
    fn tenant(&self) -> &Name {
        &self.tenant
    }
    fn source(&self) -> Option<&Name> {
        None
    }
    fn snapshot(&self) -> Option<&SnapshotId> {
        None
    }
}

mod drills;
pub use drills::*;
mod restores;
pub use restores::*;
mod verifications;
pub use verifications::*;
