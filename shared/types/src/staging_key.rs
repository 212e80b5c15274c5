//! Staging keys: where the claim-check data of one snapshot sits between
//! stages. Every key follows from (tenant, snapshot, attempt, batch), so a
//! stage derives the key it expects and refuses a message that names any
//! other: no message can point a stage at another tenant's staged data.

use crate::ids::{Name, PackId, SnapshotId};

/// The staged data of one batch of one extraction attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StagedBatch<'a> {
    pub tenant: &'a Name,
    pub snapshot: &'a SnapshotId,
    pub attempt: u32,
    pub batch: u32,
}

impl StagedBatch<'_> {
    /// The raw batch the extractor wrote: new chunks, sealed to the staging key.
    pub fn raw(&self) -> String {
        format!("{}/batch-{:06}", self.attempt_prefix(), self.batch)
    }

    /// The pack the packager made of it. Named by the pack id too, because
    /// packing is not deterministic and a redelivered batch may be packed
    /// twice: the uploader must store the bytes the id it was sent names.
    pub fn pack(&self, pack: &PackId) -> String {
        format!(
            "{}/pack-{:06}-{pack}.pack",
            self.attempt_prefix(),
            self.batch
        )
    }

    /// The index of that pack (where each chunk sits in it).
    pub fn pack_index(&self, pack: &PackId) -> String {
        format!("{}.idx", self.pack(pack))
    }

    fn attempt_prefix(&self) -> String {
        attempt_prefix(self.tenant, self.snapshot, self.attempt)
    }
}

/// The manifest draft of one extraction attempt.
pub fn manifest_draft(tenant: &Name, snapshot: &SnapshotId, attempt: u32) -> String {
    format!(
        "{}/manifest.draft",
        attempt_prefix(tenant, snapshot, attempt)
    )
}

/// Everything staged for a snapshot, whatever the attempt (removed once stored).
pub fn snapshot_prefix(tenant: &Name, snapshot: &SnapshotId) -> String {
    format!("{tenant}/{snapshot}")
}

fn attempt_prefix(tenant: &Name, snapshot: &SnapshotId, attempt: u32) -> String {
    format!("{}/a{attempt}", snapshot_prefix(tenant, snapshot))
}

/// A staging key in a message that is not the one its batch derives.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} {given:?} is not this batch's staging key ({expected:?})")]
pub struct ForeignKey {
    /// The message's field.
    pub field: &'static str,
    /// What the message says.
    pub given: String,
    /// What the batch derives.
    pub expected: String,
}

/// Refuses a staging key a message carries unless it is the one derived.
///
/// # Errors
/// When `given` is not `expected`.
pub fn check(field: &'static str, given: &str, expected: &str) -> Result<(), ForeignKey> {
    if given == expected {
        Ok(())
    } else {
        Err(ForeignKey {
            field,
            given: given.to_owned(),
            expected: expected.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_from_the_batch_and_keep_their_layout() {
        let tenant = Name::new("acme").unwrap();
        let snapshot = SnapshotId::parse("20261129T120000Z-0123abcd").unwrap();
        let batch = StagedBatch {
            tenant: &tenant,
            snapshot: &snapshot,
            attempt: 2,
            batch: 7,
        };
        let prefix = "acme/20261129T120000Z-0123abcd/a2";
        assert_eq!(batch.raw(), format!("{prefix}/batch-000007"));
        let pack = PackId([0xab; 32]);
        assert_eq!(
            batch.pack(&pack),
            format!("{prefix}/pack-000007-{}.pack", "ab".repeat(32))
        );
        assert_eq!(
            batch.pack_index(&pack),
            format!("{}.idx", batch.pack(&pack))
        );
        assert_eq!(
            manifest_draft(&tenant, &snapshot, 2),
            format!("{prefix}/manifest.draft")
        );
        let other = Name::new("other").unwrap();
        let foreign = StagedBatch {
            tenant: &other,
            ..batch
        };
        assert!(check("staged", &foreign.raw(), &batch.raw()).is_err());
        assert!(check("staged", &batch.raw(), &batch.raw()).is_ok());
    }
}
