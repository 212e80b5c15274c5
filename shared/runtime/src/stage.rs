//! The Stage contract. A stage is one method that turns an input into outputs
//! or an error; it never acks, naks or publishes by hand (see [`crate::runner`]).

use crate::Deps;
use bytes::Bytes;
use std::future::Future;
use std::sync::{Arc, Mutex};
use vaultline_types::{DecodeError, Message, Name, SnapshotId, StageName};

/// How the runner treats an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Retry later: nak with the consumer's backoff until max_deliver.
    Transient,
    /// Retrying cannot help: dead-letter now and mark the snapshot failed.
    Permanent,
    /// The input does not check out (forged, or misrouted): dead-letter it
    /// now. It proves nothing about the snapshot it names, so that snapshot
    /// is not marked failed; otherwise anyone who can publish could fail
    /// any snapshot.
    Rejected,
}

impl ErrorClass {
    /// Whether the failure says the snapshot cannot complete.
    pub fn fails_snapshot(self) -> bool {
        self != ErrorClass::Rejected
    }
}

/// What failed, as a bounded label: the `error_type` of
/// `vaultline_stage_errors_total`, of dead letters and of *snapshot failed*.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorType {
    /// Publishing or consuming on NATS.
    Bus,
    /// The catalog database.
    Catalog,
    /// The stage's configuration or keys.
    Config,
    /// The repository holds other bytes under a key.
    Conflict,
    /// A message that does not decode.
    Decode,
    /// A message that names what is not its own.
    Forged,
    /// A repository or staged format.
    Format,
    /// The stage's own threads or tasks.
    Internal,
    /// Local files.
    Io,
    /// A tenant key or recipient.
    Key,
    /// Writing a snapshot manifest.
    Manifest,
    /// A handler that panicked.
    Panic,
    /// A retention policy.
    Policy,
    /// Reading a source.
    Source,
    /// The staging area.
    Staging,
    /// The repository.
    Storage,
    /// A handler that ran past its time limit.
    Timeout,
}

impl ErrorType {
    /// The label.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorType::Bus => "bus",
            ErrorType::Catalog => "catalog",
            ErrorType::Config => "config",
            ErrorType::Conflict => "conflict",
            ErrorType::Decode => "decode",
            ErrorType::Forged => "forged",
            ErrorType::Format => "format",
            ErrorType::Internal => "internal",
            ErrorType::Io => "io",
            ErrorType::Key => "key",
            ErrorType::Manifest => "manifest",
            ErrorType::Panic => "panic",
            ErrorType::Policy => "policy",
            ErrorType::Source => "source",
            ErrorType::Staging => "staging",
            ErrorType::Storage => "storage",
            ErrorType::Timeout => "timeout",
        }
    }
}

impl std::fmt::Display for ErrorType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A stage's failure: its class, what failed and one sentence.
#[derive(Debug, Clone)]
pub struct StageError {
    pub class: ErrorClass,
    pub error_type: ErrorType,
    pub message: String,
}

impl StageError {
    /// A failure worth retrying.
    pub fn transient(error_type: ErrorType, message: impl std::fmt::Display) -> Self {
        StageError {
            class: ErrorClass::Transient,
            error_type,
            message: message.to_string(),
        }
    }

    /// A failure retrying cannot fix.
    pub fn permanent(error_type: ErrorType, message: impl std::fmt::Display) -> Self {
        StageError {
            class: ErrorClass::Permanent,
            error_type,
            message: message.to_string(),
        }
    }
}

impl StageError {
    /// An input refused as hostile: see [`ErrorClass::Rejected`].
    pub fn rejected(error_type: ErrorType, message: impl std::fmt::Display) -> Self {
        StageError {
            class: ErrorClass::Rejected,
            error_type,
            message: message.to_string(),
        }
    }
}

impl std::fmt::Display for StageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for StageError {}

impl From<vaultline_catalog::Error> for StageError {
    fn from(e: vaultline_catalog::Error) -> Self {
        let class = if e.is_transient() {
            ErrorClass::Transient
        } else {
            ErrorClass::Permanent
        };
        StageError {
            class,
            error_type: ErrorType::Catalog,
            message: e.to_string(),
        }
    }
}

impl From<vaultline_storage::Error> for StageError {
    fn from(e: vaultline_storage::Error) -> Self {
        let class = if e.is_transient() {
            ErrorClass::Transient
        } else {
            ErrorClass::Permanent
        };
        StageError {
            class,
            error_type: ErrorType::Storage,
            message: e.to_string(),
        }
    }
}

impl From<vaultline_format::Error> for StageError {
    fn from(e: vaultline_format::Error) -> Self {
        match e {
            vaultline_format::Error::Io(io) => StageError::transient(ErrorType::Io, io),
            other => StageError::permanent(ErrorType::Format, other),
        }
    }
}

impl From<vaultline_bus::Error> for StageError {
    fn from(e: vaultline_bus::Error) -> Self {
        StageError::transient(ErrorType::Bus, e)
    }
}

impl From<tokio::task::JoinError> for StageError {
    fn from(e: tokio::task::JoinError) -> Self {
        StageError::permanent(ErrorType::Panic, format!("worker task failed: {e}"))
    }
}

/// What a handler returns.
pub type Outcome = Result<Vec<Outgoing>, StageError>;

/// An event to publish, already encoded.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub subject: String,
    /// `kind/version`, for the Vaultline-Kind header.
    pub kind: String,
    pub payload: Bytes,
    pub tenant: Name,
    pub source: Option<Name>,
    pub snapshot: Option<SnapshotId>,
}

impl Outgoing {
    /// Encodes an event for publishing on its own subject.
    pub fn event<M: Message>(event: &M) -> Self {
        Outgoing {
            subject: event.subject(),
            kind: format!("{}/{}", M::KIND, M::VERSION),
            payload: Bytes::from(vaultline_types::encode(event)),
            tenant: event.tenant().clone(),
            source: event.source().cloned(),
            snapshot: event.snapshot().cloned(),
        }
    }
}

/// A stage's input: decoded by the runner from subject, content type and payload.
pub trait Inbound: Sized + Send + 'static {
    /// Decodes and checks the input against its subject.
    ///
    /// # Errors
    /// When the payload or subject is invalid; the message is then dead-lettered.
    fn decode(
        subject: &str,
        headers: Option<&async_nats::HeaderMap>,
        payload: &[u8],
    ) -> Result<Self, DecodeError>;
    /// Ids for logs, headers and failure events.
    fn ids(&self) -> (Option<&Name>, Option<&Name>, Option<&SnapshotId>);
}

impl<M: Message> Inbound for M {
    fn decode(
        subject: &str,
        headers: Option<&async_nats::HeaderMap>,
        payload: &[u8],
    ) -> Result<Self, DecodeError> {
        let content_type = headers
            .and_then(|h| h.get(vaultline_types::headers::CONTENT_TYPE))
            .map(|v| v.as_str());
        let mut message: M = vaultline_types::decode(content_type, payload)?;
        message.bind_subject(subject)?;
        Ok(message)
    }
    fn ids(&self) -> (Option<&Name>, Option<&Name>, Option<&SnapshotId>) {
        (Some(self.tenant()), self.source(), self.snapshot())
    }
}

/// One stage of the pipeline.
pub trait Stage: Sized + Send + Sync + 'static {
    /// Metric label, durable consumer and config section.
    const NAME: StageName;
    /// What the stage consumes.
    type Input: Inbound;
    /// Builds the stage from the process's shared dependencies.
    fn new(deps: Arc<Deps>) -> impl Future<Output = Result<Self, StageError>> + Send;
    /// Handles one input. Must be idempotent: the same input may arrive again
    /// after a crash, a timeout or a lost ack.
    fn handle(&self, cx: &Cx, input: Self::Input) -> impl Future<Output = Outcome> + Send;
}

/// The snapshot a failure belongs to, when the input alone does not say.
#[derive(Debug, Clone)]
pub struct SnapshotRef {
    pub tenant: Name,
    pub source: Option<Name>,
    pub snapshot: SnapshotId,
}

/// Per-delivery context handed to a handler.
pub struct Cx {
    /// Delivery count of this message (1 on first delivery).
    pub delivered: i64,
    /// When the server received the input.
    pub published: time::OffsetDateTime,
    pub(crate) emitter: crate::runner::Emitter,
    pub(crate) snapshot: Mutex<Option<SnapshotRef>>,
}

impl Cx {
    /// Publishes an output now, before the handler returns (for stages that
    /// stream batches). The runner still owns ids and acks: outputs get
    /// deterministic Nats-Msg-Ids in emission order.
    ///
    /// # Errors
    /// Transient when no stream acknowledged the output.
    pub async fn emit(&self, out: Outgoing) -> Result<(), StageError> {
        self.emitter.publish_streamed(out, self.delivered).await
    }

    /// Stable identity of the input: its Nats-Msg-Id, or `STREAM:sequence`.
    pub fn input_key(&self) -> &str {
        self.emitter.input_key()
    }

    /// Names the snapshot this delivery works on, so a permanent failure marks
    /// it failed even when the input did not carry its id (the trigger).
    pub fn set_snapshot(&self, tenant: Name, source: Option<Name>, snapshot: SnapshotId) {
        *self.snapshot.lock().expect("snapshot lock") = Some(SnapshotRef {
            tenant,
            source,
            snapshot,
        });
    }
}
