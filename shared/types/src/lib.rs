//! vaultline-types: the ids, subjects, headers and events every stage shares. No I/O.
//!
//! Each event type implements [`Message`], which binds it to its subject, so a
//! stage cannot publish a `SnapshotStored` on the packager's input by mistake.

mod codec;
mod events;
mod ids;
mod source;
pub mod staging_key;
mod status;

pub use codec::{CONTENT_TYPE_JSON, CONTENT_TYPE_MSGPACK, DecodeError, decode, encode};
pub use events::*;
pub use ids::{ChunkId, IdError, Name, PackId, SnapshotId};
pub use source::{
    CommandSource, FilesSource, MariadbSource, PostgresMode, PostgresSource, SftpAuth, SftpSource,
    SourceConfig, SourceConfigError,
};
pub use status::{SnapshotStatus, UnknownStatus};

/// Header names carried by every vaultline message, so `nats stream view` reads
/// well without decoding the payload.
pub mod headers {
    /// JetStream's de-duplication id; deterministic per (input, output index).
    pub const MSG_ID: &str = "Nats-Msg-Id";
    /// `application/msgpack` for internal events, `application/json` when a person publishes.
    pub const CONTENT_TYPE: &str = "Content-Type";
    /// Tenant the message belongs to.
    pub const TENANT: &str = "Vaultline-Tenant";
    /// Source the message belongs to.
    pub const SOURCE: &str = "Vaultline-Source";
    /// Snapshot the message belongs to.
    pub const SNAPSHOT: &str = "Vaultline-Snapshot";
    /// Stage that published the message.
    pub const STAGE: &str = "Vaultline-Stage";
    /// Event kind and schema version, e.g. `pack.staged/1`.
    pub const KIND: &str = "Vaultline-Kind";
    /// W3C trace context, propagated from the trigger to every later event.
    pub const TRACEPARENT: &str = "traceparent";
    /// On dead letters: the error, one sentence.
    pub const ERROR: &str = "Vaultline-Error";
    /// On dead letters: the error class label (bounded set).
    pub const ERROR_TYPE: &str = "Vaultline-Error-Type";
    /// On dead letters: the subject the message was first published on.
    pub const ORIGINAL_SUBJECT: &str = "Vaultline-Original-Subject";
}

/// The stages of the pipeline, in design-table order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StageName {
    /// Fires due schedules.
    Scheduler,
    /// Reads sources, chunks, deduplicates, stages new data.
    Extractor,
    /// Compresses and encrypts staged data into packs.
    Packager,
    /// Stores packs and writes the snapshot manifest.
    Uploader,
    /// Checks stored bytes against recorded digests.
    Verifier,
    /// Copies stored snapshots to the repository's copies.
    Copier,
    /// Applies retention policies.
    Retention,
    /// Records every event.
    Auditor,
}

impl StageName {
    /// Every stage, in pipeline order.
    pub const ALL: [StageName; 8] = [
        StageName::Scheduler,
        StageName::Extractor,
        StageName::Packager,
        StageName::Uploader,
        StageName::Verifier,
        StageName::Copier,
        StageName::Retention,
        StageName::Auditor,
    ];

    /// Lower-case name: metric label, durable consumer suffix, config section.
    /// Whether this stage's failures fail the snapshot it works on. The
    /// copier's do not: a copy that cannot be made says nothing about the
    /// snapshot, which stays verified in the primary; the copy stays pending.
    pub fn fails_snapshots(self) -> bool {
        self != StageName::Copier
    }

    pub fn as_str(self) -> &'static str {
        match self {
            StageName::Scheduler => "scheduler",
            StageName::Extractor => "extractor",
            StageName::Packager => "packager",
            StageName::Uploader => "uploader",
            StageName::Verifier => "verifier",
            StageName::Copier => "copier",
            StageName::Retention => "retention",
            StageName::Auditor => "auditor",
        }
    }
}

impl std::fmt::Display for StageName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for StageName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        StageName::ALL
            .into_iter()
            .find(|stage| stage.as_str() == s)
            .ok_or_else(|| format!("unknown stage {s:?} (expected one of scheduler, extractor, packager, uploader, verifier, copier, retention, auditor)"))
    }
}
