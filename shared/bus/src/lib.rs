//! vaultline-bus: the only crate that speaks NATS. Connects, creates the
//! streams and durable consumers described in `deploy/nats/` when they are
//! missing, publishes idempotently and awaits every publish ack.

use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer::PullConsumer, stream};
use std::time::Duration;
use vaultline_types::StageName;

mod staging_store;

pub use async_nats::jetstream::Message as JsMessage;
pub use staging_store::{STAGING_BUCKET, StagingStore};

/// Errors of the bus.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server could not be reached.
    #[error("cannot connect to NATS at {url}: {reason}")]
    Connect {
        /// The URL tried.
        url: String,
        /// Why.
        reason: String,
    },
    /// A JetStream request failed.
    #[error("{op}: {reason}")]
    JetStream {
        /// What was being done.
        op: &'static str,
        /// The server's or client's words.
        reason: String,
    },
    /// A shipped file under deploy/nats is invalid (a build defect).
    #[error("deploy/nats/{file} is invalid: {reason}")]
    Definition {
        /// Which file.
        file: String,
        /// Why.
        reason: String,
    },
}

/// Result of the bus.
pub type Result<T> = std::result::Result<T, Error>;

fn js_err(op: &'static str) -> impl FnOnce(String) -> Error {
    move |reason| Error::JetStream { op, reason }
}

/// The stream definition, as shipped in `deploy/nats/streams/vaultline.json`.
pub const STREAM_JSON: &str = include_str!("../../../deploy/nats/streams/vaultline.json");

/// The durable consumer definition of a stage (`deploy/nats/consumers/<stage>.json`).
pub fn consumer_json(stage: StageName) -> Option<&'static str> {
    Some(match stage {
        StageName::Extractor => include_str!("../../../deploy/nats/consumers/extractor.json"),
        StageName::Packager => include_str!("../../../deploy/nats/consumers/packager.json"),
        StageName::Uploader => include_str!("../../../deploy/nats/consumers/uploader.json"),
        StageName::Verifier => include_str!("../../../deploy/nats/consumers/verifier.json"),
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
    .map_err(|reason| Error::Definition { file, reason })?;
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

/// Parses `1s,5s,250ms` (the backoff metadata format).
///
/// # Errors
/// On an unparsable item.
pub fn parse_backoff(text: &str) -> std::result::Result<Vec<Duration>, String> {
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
                .map_err(|_| format!("bad backoff item {item:?}"))?;
            match unit {
                "ms" => Ok(Duration::from_millis(n)),
                "s" | "" => Ok(Duration::from_secs(n)),
                "m" => Ok(Duration::from_secs(n * 60)),
                _ => Err(format!("bad backoff unit in {item:?} (use ms, s or m)")),
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

/// The URL without any `user:password@` part, for messages and logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}<redacted>@{}", &url[..scheme + 3], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

/// What the stream said of a publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a duplicate means the stream kept an earlier message with this id, not this one"]
pub struct Published {
    /// The stream already held a message with this Nats-Msg-Id (within its
    /// duplicate window) and dropped this one. Expected when a redelivered
    /// input is handled again; anything else means someone used the id first.
    pub duplicate: bool,
}

/// A connection to NATS with JetStream.
#[derive(Clone, Debug)]
pub struct Bus {
    /// Core NATS client.
    pub client: async_nats::Client,
    /// JetStream context.
    pub js: jetstream::Context,
}

impl Bus {
    /// Connects, retrying in the background after the first success.
    ///
    /// # Errors
    /// When the server cannot be reached at all.
    pub async fn connect(url: &str, name: &str) -> Result<Bus> {
        let client = async_nats::ConnectOptions::new()
            .name(name)
            .connection_timeout(Duration::from_secs(5))
            .connect(url)
            .await
            .map_err(|e| Error::Connect {
                url: url.to_owned(),
                reason: e.to_string(),
            })?;
        let js = jetstream::new(client.clone());
        Ok(Bus { client, js })
    }

    /// True while the client holds a live connection.
    pub fn is_connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// Creates the stream when missing. Never deletes; on drift, adds missing
    /// subjects and otherwise leaves the operator's changes alone with a warning.
    ///
    /// # Errors
    /// When JetStream is unavailable.
    pub async fn ensure_stream(&self) -> Result<()> {
        let wanted = stream_config()?;
        match self.js.get_stream(&wanted.name).await {
            Ok(mut existing) => {
                let info = existing
                    .info()
                    .await
                    .map_err(|e| js_err("stream info")(e.to_string()))?;
                let current = info.config.clone();
                let missing: Vec<String> = wanted
                    .subjects
                    .iter()
                    .filter(|s| !current.subjects.contains(s))
                    .cloned()
                    .collect();
                if !missing.is_empty() {
                    let mut updated = current.clone();
                    updated.subjects.extend(missing.iter().cloned());
                    self.js
                        .update_stream(updated)
                        .await
                        .map_err(|e| js_err("update stream")(e.to_string()))?;
                    tracing::info!(stream = %wanted.name, ?missing, "Added missing subjects to the stream.");
                } else if current.max_age != wanted.max_age || current.storage != wanted.storage {
                    tracing::warn!(stream = %wanted.name, "Stream differs from deploy/nats; leaving it as the operator set it.");
                }
                Ok(())
            }
            Err(_) => {
                self.js
                    .get_or_create_stream(wanted)
                    .await
                    .map_err(|e| js_err("create stream")(e.to_string()))?;
                Ok(())
            }
        }
    }

    /// Creates a stage's durable consumer when missing and returns it.
    ///
    /// # Errors
    /// When JetStream is unavailable or the consumer cannot be created.
    pub async fn ensure_consumer(
        &self,
        stage: StageName,
        overrides: &ConsumerOverrides,
    ) -> Result<(PullConsumer, RetryPolicy)> {
        let (config, policy) = consumer_config(stage, overrides)?;
        let stream_name = stream_config()?.name;
        let stream = self
            .js
            .get_stream(&stream_name)
            .await
            .map_err(|e| js_err("get stream")(e.to_string()))?;
        let name = config
            .durable_name
            .clone()
            .unwrap_or_else(|| stage.to_string());
        // A consumer made by an older release may lack a subject this one
        // reads (the verifier's drill requests): update it to this release's
        // definition in place, which keeps its position.
        if let Ok(mut existing) = stream
            .get_consumer::<jetstream::consumer::pull::Config>(&name)
            .await
            && let Ok(info) = existing.info().await
        {
            let mut have = info.config.filter_subjects.clone();
            if !info.config.filter_subject.is_empty() {
                have.push(info.config.filter_subject.clone());
            }
            let mut want = config.filter_subjects.clone();
            if !config.filter_subject.is_empty() {
                want.push(config.filter_subject.clone());
            }
            if want.iter().any(|s| !have.contains(s)) {
                stream
                    .update_consumer(config.clone())
                    .await
                    .map_err(|e| js_err("update consumer")(e.to_string()))?;
                tracing::info!(consumer = %name, "Widened the consumer's subjects.");
            }
        }
        let consumer = stream
            .get_or_create_consumer(&name, config)
            .await
            .map_err(|e| js_err("create consumer")(e.to_string()))?;
        Ok((consumer, policy))
    }

    /// Publishes to JetStream and waits for the stream's ack.
    ///
    /// # Errors
    /// When no stream acknowledges the message.
    pub async fn publish(
        &self,
        subject: String,
        headers: HeaderMap,
        payload: bytes::Bytes,
    ) -> Result<Published> {
        let ack = self
            .js
            .publish_with_headers(subject, headers, payload)
            .await
            .map_err(|e| js_err("publish")(e.to_string()))?;
        let ack = ack
            .await
            .map_err(|e| js_err("publish ack")(e.to_string()))?;
        Ok(Published {
            duplicate: ack.duplicate,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_definitions_parse() {
        let stream = stream_config().unwrap();
        assert_eq!(stream.name, "VAULTLINE");
        for stage in StageName::ALL {
            if stage == StageName::Scheduler {
                continue;
            }
            let (config, policy) = consumer_config(stage, &ConsumerOverrides::default()).unwrap();
            assert_eq!(config.durable_name.as_deref(), Some(stage.as_str()));
            assert!(policy.max_deliver > 1);
            assert_eq!(policy.delay(1), Duration::from_secs(1));
            assert_eq!(policy.delay(99), Duration::from_secs(60));
        }
    }

    #[test]
    fn urls_lose_their_credentials() {
        assert_eq!(
            redact_url("nats://svc:s3cret@10.0.0.1:4222"),
            "nats://<redacted>@10.0.0.1:4222"
        );
        assert_eq!(redact_url("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
    }

    #[test]
    fn backoff_parses_units() {
        assert_eq!(
            parse_backoff("250ms, 2s,1m").unwrap(),
            vec![
                Duration::from_millis(250),
                Duration::from_secs(2),
                Duration::from_secs(60)
            ]
        );
        assert!(parse_backoff("2h").is_err());
    }
}
