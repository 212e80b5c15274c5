//! Publishing: outputs with deterministic message ids and trace context, the
//! duplicate check on a first publish, and the emitter a handler streams
//! its outputs through.

use super::{count, stage_labels};
use crate::Deps;
use crate::metrics::MetricName;
use crate::stage::{Outgoing, StageError};
use async_nats::HeaderMap;
use bytes::Bytes;
use sha2::Digest;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use vaultline_types::{StageName, headers};

pub(super) fn digest_hex(input_key: &str, salt: &str) -> String {
    let digest = sha2::Sha256::digest(format!("{input_key}/{salt}").as_bytes());
    hex_lower(&digest[..16])
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(super) fn new_traceparent(input_key: &str) -> String {
    let digest = sha2::Sha256::digest(input_key.as_bytes());
    format!(
        "00-{}-{}-01",
        hex_lower(&digest[..16]),
        hex_lower(&digest[16..24])
    )
}

/// Publishes one event with the standard headers and awaits the stream's ack.
/// Consuming stages never call this (their runner does); the scheduler, which
/// has no input message, does. Says whether the stream dropped it as a
/// duplicate of a message it already held under `msg_id`.
///
/// # Errors
/// Transient when no stream acknowledged the event.
pub async fn publish(
    deps: &Deps,
    stage: StageName,
    out: Outgoing,
    msg_id: &str,
    traceparent: &str,
) -> Result<vaultline_bus::Published, StageError> {
    let mut headers = HeaderMap::new();
    headers.insert(headers::MSG_ID, msg_id);
    headers.insert(headers::CONTENT_TYPE, vaultline_types::CONTENT_TYPE_MSGPACK);
    headers.insert(headers::KIND, out.kind.as_str());
    headers.insert(headers::STAGE, stage.as_str());
    headers.insert(headers::TENANT, out.tenant.as_str());
    if let Some(source) = &out.source {
        headers.insert(headers::SOURCE, source.as_str());
    }
    if let Some(snapshot) = &out.snapshot {
        headers.insert(headers::SNAPSHOT, snapshot.as_str());
    }
    headers.insert(headers::TRACEPARENT, traceparent);
    let payload: Bytes = out.payload;
    deps.bus
        .publish(out.subject, headers, payload)
        .await
        .map_err(StageError::from)
}

/// Publishes an event nobody should have published before under `msg_id`.
/// A duplicate then means someone did, to have the stream drop ours as a
/// repeat: it is counted (`vaultline_unexpected_duplicates_total`) and the
/// event goes out again under `fresh_id()`.
///
/// # Errors
/// Transient when no stream acknowledged the event.
pub async fn publish_first(
    deps: &Deps,
    stage: StageName,
    out: Outgoing,
    msg_id: &str,
    fresh_id: impl FnOnce() -> String,
    traceparent: &str,
) -> Result<(), StageError> {
    if !publish(deps, stage, out.clone(), msg_id, traceparent)
        .await?
        .duplicate
    {
        return Ok(());
    }
    count(MetricName::UnexpectedDuplicates, &stage_labels(stage), 1);
    tracing::warn!(%msg_id, subject = %out.subject, "The stream already held this id; publishing again under a fresh one.");
    publish(deps, stage, out, &fresh_id(), traceparent)
        .await
        .map(drop)
}

/// A W3C traceparent derived from a key (deterministic, so a retried publish
/// carries the same trace).
pub fn traceparent_for(key: &str) -> String {
    new_traceparent(key)
}

/// Publishes a delivery's outputs with deterministic ids: the n-th output of
/// input X always has the same Nats-Msg-Id, so a redelivered input produces
/// duplicates the stream drops.
pub(crate) struct Emitter {
    pub(super) deps: Arc<Deps>,
    pub(super) stage: StageName,
    pub(super) input_key: String,
    pub(super) traceparent: String,
    pub(super) next: AtomicU32,
    pub(super) next_streamed: AtomicU32,
    /// Whether this is the input's first delivery (see `publish_with_id`).
    pub(super) first_delivery: bool,
    /// The input's stream position, known only to those who read the stream.
    pub(super) position: String,
}

impl Emitter {
    pub(crate) fn input_key(&self) -> &str {
        &self.input_key
    }

    /// A handler's returned outputs: the n-th of input X always has the same
    /// id. The stage is part of it: two stages consume *snapshot stored*
    /// (the verifier and the copier), and their outputs must not share ids.
    pub(crate) async fn publish_next(&self, out: Outgoing) -> Result<(), StageError> {
        let index = self.next.fetch_add(1, Ordering::SeqCst);
        let id = digest_hex(&self.input_key, &format!("{}/out/{index}", self.stage));
        self.publish_with_id(out, id).await
    }

    /// Publishes under `id`. A duplicate is what a redelivered input should
    /// meet; on a first delivery it means someone published the (derivable)
    /// id first, to have the stream drop our event as a repeat. That is
    /// counted and the event goes out again under an id salted with the
    /// input's stream position, which nobody can claim ahead of us.
    pub(super) async fn publish_with_id(
        &self,
        out: Outgoing,
        id: String,
    ) -> Result<(), StageError> {
        if !self.first_delivery {
            return publish(&self.deps, self.stage, out, &id, &self.traceparent)
                .await
                .map(drop);
        }
        let salted = || digest_hex(&format!("{}/{}", self.input_key, self.position), &id);
        publish_first(&self.deps, self.stage, out, &id, salted, &self.traceparent).await
    }

    /// Outputs streamed while handling: ids are per delivery attempt, because a
    /// retried attempt stages new data under new keys and must not be mistaken
    /// for the attempt before it.
    pub(crate) async fn publish_streamed(
        &self,
        out: Outgoing,
        delivered: i64,
    ) -> Result<(), StageError> {
        let index = self.next_streamed.fetch_add(1, Ordering::SeqCst);
        let id = digest_hex(
            &self.input_key,
            &format!("{}/emit/{delivered}/{index}", self.stage),
        );
        self.publish_with_id(out, id).await
    }
}
