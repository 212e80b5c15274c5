//! Giving up on a message: retried while deliveries remain and the error is
//! transient, else dead-lettered with its error and its snapshot reported
//! failed. A message given up is usually on its last delivery, which the
//! server never repeats, so what giving up publishes must get through.

use super::{digest_hex, finished, reply, stage_labels};
use crate::metrics::{MetricName, count};
use crate::stage::{Cx, ErrorClass, Outgoing, SnapshotRef, StageError};
use async_nats::HeaderMap;
use async_nats::jetstream::AckKind;
use std::time::{Duration, Instant};
use vaultline_bus::{JsMessage, RetryPolicy};
use vaultline_types::{SnapshotFailed, StageName, headers};

/// How long giving up keeps trying to publish the dead letter and the
/// snapshot's failure. A NATS cluster elects a new stream leader within
/// seconds of losing one (8 s measured here), and a single server restarts
/// in under a minute; meanwhile publishes fail. A nak would not save the
/// message: on its last delivery the server never delivers it again, and
/// its snapshot would stay in flight until the reaper's deadline.
const PERSIST_FOR: Duration = Duration::from_secs(120);

/// Runs `publish` until it succeeds or [`PERSIST_FOR`] has passed, keeping
/// `message` in progress meanwhile so that no other worker is handed it.
async fn persist<T, E, F, Fut>(
    message: &JsMessage,
    policy: &RetryPolicy,
    what: &str,
    mut publish: F,
) -> Result<T, E>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let deadline = Instant::now() + PERSIST_FOR;
    // Progress is acked at least twice per ack wait, as while handling.
    let most = (policy.ack_wait / 2).max(Duration::from_millis(100));
    let mut delay = most.min(Duration::from_millis(250));
    loop {
        match publish().await {
            Ok(done) => return Ok(done),
            Err(error) if Instant::now() + delay < deadline => {
                tracing::warn!(%error, ?delay, "Cannot publish the {what} yet; trying again.");
                reply(message, AckKind::Progress).await;
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(most);
            }
            Err(error) => return Err(error),
        }
    }
}

fn count_error(stage: StageName, error: &StageError) {
    count(
        MetricName::StageErrors,
        &[
            ("stage", stage.as_str().to_owned()),
            ("error_type", error.error_type.as_str().to_owned()),
        ],
        1,
    );
}

pub(super) async fn retry_or_give_up(
    stage: StageName,
    cx: &Cx,
    message: &JsMessage,
    policy: &RetryPolicy,
    error: StageError,
    failure_ref: Option<SnapshotRef>,
) {
    if error.class == ErrorClass::Transient && cx.delivered < policy.max_deliver {
        let delay = policy.delay(cx.delivered);
        count_error(stage, &error);
        tracing::warn!(error_type = error.error_type.as_str(), %error, ?delay, "Transient failure; will retry.");
        reply(message, AckKind::Nak(Some(delay))).await;
        finished(stage, "retried");
    } else {
        give_up(stage, cx, message, policy, error, failure_ref).await;
    }
}

/// Dead-letters the message with its error, reports the snapshot failed, then
/// terminates it. Both publishes are tried until they go through (see
/// [`persist`]); if the dead letter still cannot be published the message is
/// nak'd instead: losing it silently is worse than seeing it again.
pub(super) async fn give_up(
    stage: StageName,
    cx: &Cx,
    message: &JsMessage,
    policy: &RetryPolicy,
    error: StageError,
    failure_ref: Option<SnapshotRef>,
) {
    count_error(stage, &error);
    let error_text = one_line(&error.message);
    let mut dead = HeaderMap::new();
    if let Some(original) = message.headers.as_ref() {
        for (name, values) in original.iter() {
            if AsRef::<str>::as_ref(name) != headers::MSG_ID {
                for value in values {
                    dead.append(name.clone(), value.clone());
                }
            }
        }
    }
    dead.insert(
        headers::MSG_ID,
        format!("dlq-{}", digest_hex(&cx.emitter.input_key, "dlq")).as_str(),
    );
    dead.insert(headers::ERROR, error_text.as_str());
    dead.insert(headers::ERROR_TYPE, error.error_type.as_str());
    dead.insert(headers::ORIGINAL_SUBJECT, message.subject.as_str());
    dead.insert(headers::STAGE, stage.as_str());
    let subject = vaultline_types::dead_letter_subject(stage);
    let bus = &cx.emitter.deps.bus;
    let dead_letter = || bus.publish(subject.clone(), dead.clone(), message.payload.clone());
    if let Err(publish_error) = persist(message, policy, "dead letter", dead_letter).await {
        tracing::error!(%publish_error, %error, "Cannot dead-letter; will retry the message.");
        reply(message, AckKind::Nak(Some(policy.delay(cx.delivered)))).await;
        return;
    }
    count(MetricName::DeadLetters, &stage_labels(stage), 1);
    tracing::error!(error_type = error.error_type.as_str(), %error, "Gave up; message dead-lettered.");

    let failure_ref = cx
        .snapshot
        .lock()
        .expect("snapshot lock")
        .clone()
        .or(failure_ref)
        .filter(|_| error.class.fails_snapshot() && stage.fails_snapshots());
    if let Some(SnapshotRef {
        tenant,
        source,
        snapshot,
    }) = failure_ref
    {
        let failed = SnapshotFailed {
            tenant,
            source,
            snapshot,
            stage,
            error_type: error.error_type.as_str().to_owned(),
            error: error_text,
        };
        let id = format!("failed-{}", digest_hex(&cx.emitter.input_key, "failed"));
        let failure = || {
            cx.emitter
                .publish_with_id(Outgoing::event(&failed), id.clone())
        };
        if let Err(publish_error) = persist(message, policy, "snapshot failure", failure).await {
            tracing::error!(%publish_error, "Cannot publish the snapshot failure; the reaper fails it past its deadline.");
        }
    }
    reply(message, AckKind::Term).await;
    finished(stage, "dead_letter");
}

fn one_line(text: &str) -> String {
    let line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    line.chars().take(1000).collect()
}
