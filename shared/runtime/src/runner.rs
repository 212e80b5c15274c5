//! The runner: the only code that speaks the JetStream protocol. It pulls,
//! decodes, calls the stage, publishes outputs (awaiting each PubAck) before
//! acking the input, naks transient failures with backoff, dead-letters
//! poison and exhausted messages, and records every stage metric.

use crate::Deps;
use crate::metrics::{MetricName, count, observe};
use crate::stage::{Cx, ErrorType, Inbound, SnapshotRef, Stage, StageError};
use async_nats::jetstream::AckKind;
use futures::StreamExt;
use std::sync::atomic::AtomicU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tracing::Instrument;
use vaultline_bus::{JsMessage, RetryPolicy};
use vaultline_types::{StageName, headers};

mod give_up;
mod publish;
use give_up::{give_up, retry_or_give_up};
pub(crate) use publish::Emitter;
use publish::{digest_hex, new_traceparent};
pub use publish::{publish, publish_first, traceparent_for};

/// Runs `S` until `shutdown` flips, then finishes the work in flight.
pub async fn run<S: Stage>(stage: Arc<S>, deps: Arc<Deps>, mut shutdown: watch::Receiver<bool>) {
    let settings = deps.config.stage(S::NAME);
    let overrides = deps.config.consumer_overrides(S::NAME);
    let concurrency = settings.concurrency.unwrap_or(match S::NAME {
        StageName::Packager => 2,
        StageName::Auditor => 8,
        _ => 4,
    });
    let permits = Arc::new(Semaphore::new(concurrency));
    let mut tasks = JoinSet::new();
    tracing::info!(stage = %S::NAME, concurrency, "Stage started.");

    'connect: while !*shutdown.borrow() {
        let (consumer, policy) = match deps.bus.consumer(S::NAME, &overrides).await {
            Ok(found) => {
                crate::readiness::set(S::NAME, None);
                found
            }
            Err(error) => {
                crate::readiness::set(S::NAME, Some(error.to_string()));
                tracing::warn!(stage = %S::NAME, %error, "Consumer unavailable; retrying.");
                wait_or_shutdown(&mut shutdown, Duration::from_secs(1)).await;
                continue;
            }
        };
        let pulled = consumer
            .stream()
            .max_messages_per_batch(concurrency)
            .heartbeat(Duration::from_secs(5))
            .expires(Duration::from_secs(30))
            .messages()
            .await;
        let mut messages = match pulled {
            Ok(messages) => messages,
            Err(error) => {
                tracing::warn!(stage = %S::NAME, %error, "Pull subscription failed; retrying.");
                wait_or_shutdown(&mut shutdown, Duration::from_secs(1)).await;
                continue;
            }
        };
        loop {
            while tasks.try_join_next().is_some() {}
            // Take a permit before pulling, so no more messages wait in our
            // buffer than we can handle (their ack timers are running).
            let permit = tokio::select! {
                permit = permits.clone().acquire_owned() => permit.expect("semaphore is never closed"),
                _ = shutdown.changed() => break 'connect,
            };
            let next = tokio::select! {
                next = messages.next() => next,
                _ = shutdown.changed() => break 'connect,
            };
            match next {
                Some(Ok(message)) => {
                    let (stage, deps, policy) = (stage.clone(), deps.clone(), policy.clone());
                    tasks.spawn(async move {
                        handle_one(&*stage, deps, &policy, message).await;
                        drop(permit);
                    });
                }
                Some(Err(error)) => {
                    tracing::warn!(stage = %S::NAME, %error, "Pull failed; resubscribing.");
                    wait_or_shutdown(&mut shutdown, Duration::from_millis(500)).await;
                    continue 'connect;
                }
                None => continue 'connect,
            }
        }
    }
    // Finish what we hold; anything cut off is redelivered after ack_wait.
    while tasks.join_next().await.is_some() {}
    tracing::info!(stage = %S::NAME, "Stage stopped.");
}

async fn wait_or_shutdown(shutdown: &mut watch::Receiver<bool>, delay: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(delay) => {}
        _ = shutdown.changed() => {}
    }
}

fn header<'a>(message: &'a JsMessage, name: &str) -> Option<&'a str> {
    message.headers.as_ref()?.get(name).map(|v| v.as_str())
}

/// Ids are read from the payload (checked against the subject when it was
/// decoded); the `Vaultline-*` headers only repeat them for people reading
/// the stream. A message whose headers say otherwise was made by hand to
/// mislead whoever trusts headers, and is refused. Dead letters keep their
/// original headers, so their subjects are not checked.
fn headers_agree(
    message: &JsMessage,
    tenant: Option<&vaultline_types::Name>,
    source: Option<&vaultline_types::Name>,
    snapshot: Option<&vaultline_types::SnapshotId>,
) -> Result<(), HeaderMismatch> {
    let dead_letters = format!("{}.dlq.", vaultline_types::SUBJECT_PREFIX);
    if message.subject.starts_with(&dead_letters) {
        return Ok(());
    }
    for (name, from_payload) in [
        (headers::TENANT, tenant.map(|t| t.as_str())),
        (headers::SOURCE, source.map(|s| s.as_str())),
        (headers::SNAPSHOT, snapshot.map(|s| s.as_str())),
    ] {
        if let Some(from_header) = header(message, name)
            && Some(from_header) != from_payload
        {
            return Err(HeaderMismatch {
                header: name,
                says: from_header.to_owned(),
                subject: message.subject.to_string(),
                payload: from_payload.map(str::to_owned),
            });
        }
    }
    Ok(())
}

/// A `Vaultline-*` header that names another tenant, source or snapshot
/// than the payload does.
#[derive(Debug, thiserror::Error)]
#[error(
    "header {header} says {says:?} but the payload on {subject} says {}",
    payload.as_ref().map_or("nothing".into(), |v| format!("{v:?}"))
)]
struct HeaderMismatch {
    header: &'static str,
    says: String,
    subject: String,
    payload: Option<String>,
}

fn stage_labels(stage: StageName) -> [(&'static str, String); 1] {
    [("stage", stage.as_str().to_owned())]
}

/// Counts a message `stage` finished, in the metrics and in the tally its
/// micro service reports.
fn finished(stage: StageName, outcome: &'static str) {
    let labels = [
        ("stage", stage.as_str().to_owned()),
        ("outcome", outcome.to_owned()),
    ];
    count(MetricName::StageMessages, &labels, 1);
    crate::micro::tally(stage, outcome);
}

async fn handle_one<S: Stage>(
    stage: &S,
    deps: Arc<Deps>,
    policy: &RetryPolicy,
    message: JsMessage,
) {
    let started = Instant::now();
    let (delivered, published, position) = match message.info() {
        Ok(info) => (
            info.delivered,
            info.published,
            format!("{}:{}", info.stream, info.stream_sequence),
        ),
        Err(_) => (
            1,
            time::OffsetDateTime::now_utc(),
            format!("core:{}", message.subject),
        ),
    };
    // A publisher's own Nats-Msg-Id is the best identity; the stream sequence is the fallback.
    let input_key = header(&message, headers::MSG_ID)
        .map(str::to_owned)
        .unwrap_or_else(|| position.clone());
    if delivered > 1 {
        count(MetricName::StageRedeliveries, &stage_labels(S::NAME), 1);
    }
    let traceparent = header(&message, headers::TRACEPARENT)
        .map(str::to_owned)
        .unwrap_or_else(|| new_traceparent(&input_key));
    let mut cx = Cx {
        delivered,
        published,
        emitter: Emitter {
            deps: deps.clone(),
            stage: S::NAME,
            input_key: input_key.clone(),
            traceparent,
            next: AtomicU32::new(0),
            next_streamed: AtomicU32::new(0),
            first_delivery: delivered == 1,
            position,
        },
        snapshot: Mutex::new(None),
    };

    let input = match S::Input::decode(&message.subject, message.headers.as_ref(), &message.payload)
    {
        Ok(input) => input,
        Err(error) => {
            let error = StageError::permanent(ErrorType::Decode, error);
            give_up(S::NAME, &cx, &message, policy, error, None).await;
            return;
        }
    };
    let (tenant, source, snapshot) = input.ids();
    if let Err(reason) = headers_agree(&message, tenant, source, snapshot) {
        let error = StageError::rejected(ErrorType::Forged, reason);
        give_up(S::NAME, &cx, &message, policy, error, None).await;
        return;
    }
    let failure_ref = tenant.zip(snapshot).map(|(tenant, snapshot)| SnapshotRef {
        tenant: tenant.clone(),
        source: source.cloned(),
        snapshot: snapshot.clone(),
    });
    let span = tracing::info_span!(
        "stage",
        stage = S::NAME.as_str(),
        tenant = tenant.map(|t| t.as_str()).unwrap_or("-"),
        snapshot = snapshot.map(|s| s.as_str()).unwrap_or("-"),
        msg_id = %input_key,
        delivered,
        trace_id = %crate::telemetry::trace_id(&cx.emitter.traceparent),
    );
    // This handling is a span of the snapshot's trace, and what it publishes
    // names this span as its parent.
    cx.emitter.traceparent = crate::telemetry::adopt(&span, &cx.emitter.traceparent);
    let limit = deps
        .config
        .stage(S::NAME)
        .handle_timeout
        .unwrap_or(DEFAULT_HANDLE_TIMEOUT);
    let outcome = with_progress(&message, policy.ack_wait, limit, stage.handle(&cx, input))
        .instrument(span.clone())
        .await;
    observe(
        MetricName::StageHandleDuration,
        &stage_labels(S::NAME),
        started.elapsed().as_secs_f64(),
    );

    // Not `span.enter()`: a guard held across the awaits below would leave
    // the span entered on whichever thread the task left, and another task
    // there would then start its spans under one already closed (a panic
    // in tracing-subscriber).
    async {
        match outcome {
            Ok(outputs) => {
                for out in outputs {
                    if let Err(error) = cx.emitter.publish_next(out).await {
                        retry_or_give_up(S::NAME, &cx, &message, policy, error, failure_ref).await;
                        return;
                    }
                }
                // double_ack: the server confirms, so an ack lost in a failover
                // cannot make us believe the input is done when it is not.
                if let Err(error) = message.double_ack().await {
                    tracing::warn!(%error, "Ack not confirmed; the message may be redelivered.");
                }
                finished(S::NAME, "done");
            }
            Err(error) => {
                retry_or_give_up(S::NAME, &cx, &message, policy, error, failure_ref).await
            }
        }
    }
    .instrument(span)
    .await;
}

/// How long one message may be handled unless `[stages.<stage>]
/// handle-timeout` says otherwise: as long as a snapshot may be in flight.
pub const DEFAULT_HANDLE_TIMEOUT: Duration = Duration::from_secs(6 * 3600);

/// Extends the ack deadline while the handler works, so a long extraction is
/// not redelivered to a second worker halfway through; but only up to
/// `limit`, so a hung source program cannot hold its message (and its
/// snapshot) forever through progress acks. Past it the handler is dropped
/// (the extractor kills its source program then) and the message given up.
async fn with_progress<F>(
    message: &JsMessage,
    ack_wait: Duration,
    limit: Duration,
    work: F,
) -> F::Output
where
    F: std::future::Future<Output = crate::stage::Outcome>,
{
    let mut work = std::pin::pin!(work);
    let period = (ack_wait / 2).max(Duration::from_millis(100));
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    let timeout = tokio::time::sleep(limit);
    let mut timeout = std::pin::pin!(timeout);
    loop {
        tokio::select! {
            out = &mut work => return out,
            _ = ticker.tick() => {
                reply(message, AckKind::Progress).await;
            }
            _ = &mut timeout => {
                return Err(StageError::permanent(
                    ErrorType::Timeout,
                    format!(
                        "the handler ran past its time limit of {} (stages.<stage>.handle-timeout)",
                        humantime::format_duration(limit)
                    ),
                ));
            }
        }
    }
}

/// Sends a nak, term or progress reply. One that is lost is not fatal (the
/// server redelivers after ack-wait, which is what the reply would have
/// asked for or put off), but it changes timing and retry counts, so it is
/// logged rather than dropped.
async fn reply(message: &async_nats::jetstream::Message, kind: AckKind) {
    if let Err(error) = message.ack_with(kind).await {
        tracing::warn!(%error, reply = ?kind, "A reply to JetStream was lost; the server redelivers after ack-wait.");
    }
}
