//! The stream and durable consumers as shipped in `deploy/nats/`, and the
//! retry policy a stage reads from its consumer's definition.

use crate::{Error, Result};
use async_nats::jetstream::{self, stream};
use std::time::Duration;
use vaultline_types::StageName;

/// The stream definition, as shipped in `deploy/nats/streams/vaultline.json`.
pub const STREAM_JSON: &str = include_str!("../../../deploy/nats/streams/vaultline.json");

/// The durable consumer definition of a stage (`deploy/nats/consumers/<stage>.json`).
pub fn consumer_json(stage: StageName) -> Option<&'static str> {
    Some(match stage {
        StageName::Extractor => include_str!("../../../deploy/nats/consumers/extractor.json"),
        StageName::Packager => include_str!("../../../deploy/nats/consumers/packager.json"),
        StageName::Uploader => include_str!("../../../deploy/nats/consumers/uploader.json"),
        StageName::Verifier => include_str!("../../../deploy/nats/consumers/verifier.json"),
        StageName::Copier => include_str!("../../../deploy/nats/consumers/copier.json"),
        StageName::Retention => include_str!("../../../deploy/nats/consumers/retention.json"),
        StageName::Auditor => include_str!("../../../deploy/nats/consumers/auditor.json"),
        StageName::Scheduler => return None,
    })
}

/// The stream's config.
///
/// # Errors
/// When the shipped JSON does not parse (caught by the crate's tests).
pub fn stream_config() -> Result<stream::Config> {
    serde_json::from_str(STREAM_JSON).map_err(|e| Error::Definition {
        file: "streams/vaultline.json".into(),
        reason: e.to_string(),
    })
}

/// Retry settings of a stage, read from its consumer definition.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Deliveries before a failing message is dead-lettered.
    pub max_deliver: i64,
    /// Delay before the n-th redelivery (the last repeats).
    pub backoff: Vec<Duration>,
    /// How long the server waits for an ack before redelivering.
    pub ack_wait: Duration,
}

impl RetryPolicy {
    /// Nak delay after delivery number `delivered` (1-based).
    pub fn delay(&self, delivered: i64) -> Duration {
        let i = usize::try_from(delivered.max(1) - 1).unwrap_or(0);
        self.backoff
            .get(i)
            .or(self.backoff.last())
            .copied()
            .unwrap_or(Duration::from_secs(1))
    }
}

/// Operator or test overrides of a consumer definition.
#[derive(Debug, Clone, Default)]
pub struct ConsumerOverrides {
    pub max_deliver: Option<i64>,
    pub backoff: Option<Vec<Duration>>,
    pub ack_wait: Option<Duration>,
}

/// A stage's consumer config with overrides applied.
///
/// # Errors
/// When the shipped JSON is invalid or the stage has no consumer.
pub fn consumer_config(
    stage: StageName,
    overrides: &ConsumerOverrides,
) -> Result<(jetstream::consumer::pull::Config, RetryPolicy)> {
    let file = format!("consumers/{stage}.json");
    let json = consumer_json(stage).ok_or_else(|| Error::Definition {
        file: file.clone(),
        reason: "absent".into(),
    })?;
    let mut config: jetstream::consumer::pull::Config =
        serde_json::from_str(json).map_err(|e| Error::Definition {
            file: file.clone(),
            reason: e.to_string(),
        })?;
    let mut backoff = parse_backoff(
        config
            .metadata
            .get("vaultline.retry_backoff")
            .map(String::as_str)
            .unwrap_or("1s"),
    )
    .map_err(|e| Error::Definition {
        file,
        reason: e.to_string(),
    })?;
    if let Some(max) = overrides.max_deliver {
        config.max_deliver = max;
    }
    if let Some(wait) = overrides.ack_wait {
        config.ack_wait = wait;
    }
    if let Some(b) = &overrides.backoff {
        backoff = b.clone();
        config
            .metadata
            .insert("vaultline.retry_backoff".into(), format_backoff(&backoff));
    }
    let policy = RetryPolicy {
        max_deliver: config.max_deliver,
        backoff,
        ack_wait: config.ack_wait,
    };
    Ok((config, policy))
}

/// A backoff list item that is not a whole number of ms, s or m.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BackoffError(String);

/// Parses `1s,5s,250ms` (the backoff metadata format).
///
/// # Errors
/// On an unparsable item.
pub fn parse_backoff(text: &str) -> std::result::Result<Vec<Duration>, BackoffError> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|item| {
            let (num, unit) = item.split_at(
                item.find(|c: char| !c.is_ascii_digit())
                    .unwrap_or(item.len()),
            );
            let n: u64 = num
                .parse()
                .map_err(|_| BackoffError(format!("bad backoff item {item:?}")))?;
            match unit {
                "ms" => Ok(Duration::from_millis(n)),
                "s" | "" => Ok(Duration::from_secs(n)),
                "m" => Ok(Duration::from_secs(n * 60)),
                _ => Err(BackoffError(format!(
                    "bad backoff unit in {item:?} (use ms, s or m)"
                ))),
            }
        })
        .collect()
}

fn format_backoff(backoff: &[Duration]) -> String {
    backoff
        .iter()
        .map(|d| format!("{}ms", d.as_millis()))
        .collect::<Vec<_>>()
        .join(",")
}
