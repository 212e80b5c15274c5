//! auditor — consumes every event; appends it to the tenant's hash-chained
//! audit trail, keeps the execution history, marks snapshots failed when a
//! stage gave up on them, and queues signed webhooks (failures always,
//! successes for webhooks that ask) that its sender delivers.

pub mod observe;
pub mod webhooks;

use std::sync::Arc;
use vaultline_catalog::{AuditEvent, FinishedRun, SnapshotStatus};
use vaultline_runtime::metrics::{MetricName, count, observe};
use vaultline_runtime::{Cx, Deps, HeaderMap, Inbound, Node, Outcome, Stage, StageError};
use vaultline_types::{
    DecodeError, Message, Name, RestoreCompleted, SnapshotCorrupt, SnapshotFailed, SnapshotId,
    SnapshotStarted, SnapshotVerified, StageName, headers,
};

/// Any vaultline message, as the auditor sees it.
pub struct AnyEvent {
    subject: String,
    kind: String,
    tenant: Option<Name>,
    source: Option<Name>,
    snapshot: Option<SnapshotId>,
    msg_id: Option<String>,
    payload: serde_json::Value,
    failed: Option<SnapshotFailed>,
}

impl Inbound for AnyEvent {
    /// Fails only when the payload and the subject name different tenants
    /// or sources; the runner then dead-letters the message and its dead
    /// letter reaches the trail. Garbage is recorded as garbage (the dead
    /// letters of other stages are exactly that), so nothing escapes the
    /// trail. Ids never come from headers: the runner refuses a message
    /// whose headers disagree with the ids found here.
    fn decode(
        subject: &str,
        headers: Option<&HeaderMap>,
        payload: &[u8],
    ) -> Result<Self, DecodeError> {
        let header = |name: &str| {
            headers
                .and_then(|h| h.get(name))
                .map(|v| v.as_str().to_owned())
        };
        let content_type = header(headers::CONTENT_TYPE);
        let value = readable(content_type.as_deref(), payload).unwrap_or_else(|| {
            serde_json::json!({ "undecodable": true, "bytes": payload.len(),
                                "head_hex": hex::encode(&payload[..payload.len().min(64)]) })
        });
        let rest = subject.strip_prefix("vaultline.").unwrap_or(subject);
        let segments: Vec<&str> = rest.split('.').collect();
        let kind = segments
            .iter()
            .take(2)
            .copied()
            .collect::<Vec<_>>()
            .join(".");
        let field = |name: &str| value.get(name).and_then(|v| v.as_str());
        let dead_letter = segments.first() == Some(&"dlq");
        let (tenant, source) = if dead_letter {
            // The original message's payload: its ids, for the trail only.
            (
                field("tenant").and_then(|t| Name::new(t).ok()),
                field("source").and_then(|s| Name::new(s).ok()),
            )
        } else {
            (
                bound_id(subject, "tenant", segments.get(2), field("tenant"))?,
                bound_id(subject, "source", segments.get(3), field("source"))?,
            )
        };
        let failed = (kind == SnapshotFailed::KIND)
            .then(|| SnapshotFailed::decode(subject, headers, payload).ok())
            .flatten();
        Ok(AnyEvent {
            subject: subject.to_owned(),
            kind,
            tenant,
            source,
            snapshot: field("snapshot").and_then(|s| SnapshotId::parse(s).ok()),
            msg_id: header(headers::MSG_ID),
            payload: merge_error(value, header(headers::ERROR), header(headers::ERROR_TYPE)),
            failed,
        })
    }
    fn ids(&self) -> (Option<&Name>, Option<&Name>, Option<&SnapshotId>) {
        (
            self.tenant.as_ref(),
            self.source.as_ref(),
            self.snapshot.as_ref(),
        )
    }
}

/// The payload as JSON for the trail. MessagePack goes through its own
/// value type, because ids are raw bytes there (JSON has no bytes): they
/// are written as hex, as they read everywhere else.
fn readable(content_type: Option<&str>, payload: &[u8]) -> Option<serde_json::Value> {
    if content_type != Some(vaultline_types::CONTENT_TYPE_MSGPACK) {
        return vaultline_types::decode(content_type, payload).ok();
    }
    let mut input = payload;
    let value = rmpv::decode::read_value(&mut input).ok()?;
    input.is_empty().then(|| msgpack_to_json(value))
}

fn msgpack_to_json(value: rmpv::Value) -> serde_json::Value {
    use rmpv::Value as M;
    use serde_json::Value as J;
    match value {
        M::Nil => J::Null,
        M::Boolean(b) => J::Bool(b),
        M::Integer(i) => i
            .as_u64()
            .map(J::from)
            .or_else(|| i.as_i64().map(J::from))
            .unwrap_or(J::Null),
        M::F32(f) => J::from(f64::from(f)),
        M::F64(f) => J::from(f),
        M::String(s) => J::String(s.into_str().unwrap_or_default()),
        M::Binary(bytes) | M::Ext(_, bytes) => J::String(hex::encode(bytes)),
        M::Array(items) => J::Array(items.into_iter().map(msgpack_to_json).collect()),
        M::Map(entries) => J::Object(
            entries
                .into_iter()
                .map(|(k, v)| {
                    let key = match k {
                        M::String(s) => s.into_str().unwrap_or_default(),
                        other => other.to_string(),
                    };
                    (key, msgpack_to_json(v))
                })
                .collect(),
        ),
    }
}

/// An id named by the subject (`vaultline.<kind>.<tenant>[.<source>]`)
/// and perhaps by the payload: the two must agree. A subject without it
/// leaves the payload's word.
fn bound_id(
    subject: &str,
    what: &str,
    in_subject: Option<&&str>,
    in_payload: Option<&str>,
) -> Result<Option<Name>, DecodeError> {
    match (in_subject, in_payload) {
        (Some(s), Some(p)) if *s != p => Err(DecodeError::Subject(format!(
            "the payload's {what} {p:?} does not match the subject {subject}"
        ))),
        (Some(s), _) => Ok(Name::new(*s).ok()),
        (None, p) => Ok(p.and_then(|p| Name::new(p).ok())),
    }
}

/// Dead letters carry their error in headers; keep it in the trail.
fn merge_error(
    value: serde_json::Value,
    error: Option<String>,
    error_type: Option<String>,
) -> serde_json::Value {
    match error {
        Some(error) => {
            serde_json::json!({ "error": error, "error_type": error_type, "payload": value })
        }
        None => value,
    }
}

/// The auditor stage.
pub struct Auditor {
    deps: Arc<Deps>,
}

impl Stage for Auditor {
    const NAME: StageName = StageName::Auditor;
    type Input = AnyEvent;

    async fn new(deps: Arc<Deps>) -> Result<Self, StageError> {
        Ok(Auditor { deps })
    }

    async fn handle(&self, cx: &Cx, event: AnyEvent) -> Outcome {
        let catalog = &self.deps.catalog;
        let tenant = event
            .tenant
            .as_ref()
            .map(|t| t.to_string())
            .unwrap_or_else(|| "-".into());
        catalog
            .append_audit(&AuditEvent {
                tenant,
                msg_id: event
                    .msg_id
                    .clone()
                    .unwrap_or_else(|| cx.input_key().to_owned()),
                subject: event.subject.clone(),
                kind: event.kind.clone(),
                snapshot: event.snapshot.as_ref().map(|s| s.to_string()),
                payload: event.payload.to_string(),
            })
            .await?;
        let (Some(tenant), Some(snapshot)) = (&event.tenant, &event.snapshot) else {
            return Ok(vec![]);
        };
        match event.kind.as_str() {
            SnapshotStarted::KIND => {
                let trigger = event
                    .payload
                    .get("trigger")
                    .and_then(|t| t.as_str())
                    .unwrap_or("external");
                let source = event.source.clone().unwrap_or_else(|| tenant.clone());
                catalog
                    .start_execution(tenant, snapshot, &source, trigger)
                    .await?;
            }
            SnapshotVerified::KIND => {
                let run = catalog
                    .finish_execution(tenant, snapshot, "succeeded", None)
                    .await?;
                finished(tenant, run, "succeeded");
            }
            SnapshotCorrupt::KIND => {
                let reason = event
                    .payload
                    .get("reason")
                    .and_then(|r| r.as_str())
                    .unwrap_or("corrupt");
                let run = catalog
                    .finish_execution(tenant, snapshot, "corrupt", Some(reason))
                    .await?;
                finished(tenant, run, "corrupt");
            }
            SnapshotFailed::KIND => {
                if let Some(failed) = &event.failed {
                    let error = format!("{} failed: {}", failed.stage, failed.error);
                    catalog
                        .finish_snapshot(tenant, snapshot, SnapshotStatus::Failed, Some(&error))
                        .await?;
                    let run = catalog
                        .finish_execution(tenant, snapshot, "failed", Some(&error))
                        .await?;
                    finished(tenant, run, "failed");
                }
            }
            RestoreCompleted::KIND => {
                // Recorded only when it parses whole and names the subject's tenant;
                // anything else is in the trail above as it came.
                match serde_json::from_value::<RestoreCompleted>(event.payload.clone()) {
                    Ok(done) if &done.tenant == tenant => catalog.record_restore(&done).await?,
                    Ok(_) | Err(_) => {
                        tracing::warn!(%tenant, "A restore.completed event that does not parse was only put in the trail.");
                    }
                }
            }
            _ => {}
        }
        self.queue_webhooks(&event, tenant, snapshot).await?;
        Ok(vec![])
    }
}

/// Counts a run the auditor just closed (a redelivered event closes
/// nothing, so each run counts once), and times it when it succeeded.
fn finished(tenant: &Name, run: Option<FinishedRun>, outcome: &str) {
    let Some(run) = run else { return };
    let mut labels = vec![("tenant", tenant.to_string()), ("source", run.source)];
    if outcome == "succeeded" {
        observe(MetricName::BackupDuration, &labels, run.seconds);
    }
    labels.push(("outcome", outcome.to_owned()));
    count(MetricName::BackupsFinished, &labels, 1);
}

impl Auditor {
    /// Queues the event for the tenant's webhooks: failures (failed, corrupt)
    /// for all, successes (verified) for those that asked.
    async fn queue_webhooks(
        &self,
        event: &AnyEvent,
        tenant: &Name,
        snapshot: &SnapshotId,
    ) -> Result<(), StageError> {
        let (status, success, error) = match event.kind.as_str() {
            SnapshotVerified::KIND => ("verified", true, None),
            SnapshotCorrupt::KIND => (
                "corrupt",
                false,
                event
                    .payload
                    .get("reason")
                    .and_then(|r| r.as_str())
                    .map(str::to_owned),
            ),
            SnapshotFailed::KIND => (
                "failed",
                false,
                event
                    .failed
                    .as_ref()
                    .map(|f| format!("{} failed: {}", f.stage, f.error)),
            ),
            RestoreCompleted::KIND => {
                let outcome = event.payload.get("outcome").and_then(|o| o.as_str());
                (
                    outcome.unwrap_or("unknown"),
                    outcome == Some("succeeded"),
                    event
                        .payload
                        .get("error")
                        .and_then(|e| e.as_str())
                        .map(str::to_owned),
                )
            }
            _ => return Ok(()),
        };
        let Some(msg_id) = &event.msg_id else {
            return Ok(());
        };
        let mut body = serde_json::json!({
            "id": msg_id,
            "event": event.kind,
            "status": status,
            "tenant": tenant,
            "source": event.source,
            "snapshot": snapshot,
            "error": error,
            "occurred_at": time::OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
        });
        if event.kind == RestoreCompleted::KIND {
            // Steps, table counts and smoke status, as the restore reported them.
            body["results"] = event.payload.clone();
        }
        let queued = self
            .deps
            .catalog
            .enqueue_webhooks(
                tenant.as_str(),
                msg_id,
                &event.kind,
                &body.to_string(),
                success,
            )
            .await?;
        if queued > 0 {
            tracing::info!(%tenant, %snapshot, kind = %event.kind, queued, "Webhook deliveries queued.");
        }
        Ok(())
    }
}

/// Adds the auditor to a node: the stage and the webhook sender.
///
/// # Errors
/// When the stage cannot be built.
pub async fn install(node: &mut Node) -> Result<(), StageError> {
    node.spawn::<Auditor>().await?;
    node.spawn_service(StageName::Auditor, webhooks::run)
        .await?;
    node.spawn_service(StageName::Auditor, observe::run).await?;
    Ok(())
}
