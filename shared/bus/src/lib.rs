//! vaultline-bus: the only crate that speaks NATS. Connects as a named user,
//! applies the streams and durable consumers described in `deploy/nats/`
//! (with admin rights, from `vaultline migrate`), checks they exist (every
//! stage, without such rights), publishes idempotently and awaits every
//! publish ack.

use async_nats::HeaderMap;
use async_nats::jetstream;
use std::time::Duration;

mod backlog;
mod definitions;
mod login;
mod manage;
mod staging_store;

pub use async_nats::jetstream::Message as JsMessage;
pub use backlog::Backlog;
pub use definitions::{
    BackoffError, ConsumerOverrides, RetryPolicy, STREAM_JSON, consumer_config, consumer_json,
    parse_backoff, stream_config,
};
pub use login::{Login, Tls, user_of};
pub use staging_store::{STAGING_BUCKET, StagingStore};

/// Errors of the bus.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server could not be reached, or refused the login.
    #[error("cannot connect to NATS at {url}: {reason}")]
    Connect {
        /// The URL tried (without credentials).
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
    /// A stream, consumer or bucket this process needs does not exist, and
    /// creating it is not its job.
    #[error("{0}; run `vaultline migrate` (with the NATS admin credentials) to create it")]
    NotReady(String),
    /// A shipped file under deploy/nats is invalid (a build defect).
    #[error("deploy/nats/{file} is invalid: {reason}")]
    Definition {
        /// Which file.
        file: String,
        /// Why.
        reason: String,
    },
    /// A credentials file could not be read.
    #[error("{0}")]
    Credentials(String),
}

/// Result of the bus.
pub type Result<T> = std::result::Result<T, Error>;

fn js_err(op: &'static str) -> impl FnOnce(String) -> Error {
    move |reason| Error::JetStream { op, reason }
}

/// The URL without any `user:password@` part, for messages and logs.
/// A comma-separated list of servers (a cluster's seeds) is redacted one by one.
pub fn redact_url(url: &str) -> String {
    url.split(',')
        .map(|one| match (one.find("://"), one.rfind('@')) {
            (Some(scheme), Some(at)) if at > scheme => {
                format!("{}<redacted>@{}", &one[..scheme + 3], &one[at + 1..])
            }
            _ => one.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The servers of `url`: one, or a cluster's seeds separated by commas (the
/// client learns the other members from the server it reaches, and moves to
/// another one when that server goes).
fn server_addrs(url: &str) -> Result<Vec<async_nats::ServerAddr>> {
    url.split(',')
        .map(str::trim)
        .filter(|one| !one.is_empty())
        .map(|one| {
            one.parse::<async_nats::ServerAddr>()
                .map_err(|e| Error::Connect {
                    url: redact_url(one),
                    reason: format!("not a NATS server address: {e}"),
                })
        })
        .collect()
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
    /// Connects as `login`, retrying in the background after the first success.
    ///
    /// # Errors
    /// When the server cannot be reached at all, refuses the login, or a
    /// credentials file cannot be read. No secret is in the message.
    pub async fn connect(url: &str, name: &str, login: &Login) -> Result<Bus> {
        let options = login
            .options()
            .await?
            .name(name)
            .connection_timeout(Duration::from_secs(5));
        let client = options
            .connect(server_addrs(url)?)
            .await
            .map_err(|e| Error::Connect {
                url: redact_url(url),
                reason: e.to_string(),
            })?;
        let js = jetstream::new(client.clone());
        Ok(Bus { client, js })
    }

    /// True while the client holds a live connection.
    pub fn is_connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// Publishes to JetStream and waits for the stream's ack.
    ///
    /// # Errors
    /// When no stream acknowledges the message (or the user may not publish
    /// on `subject`: the server then answers nothing and the ack times out).
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
    use vaultline_types::StageName;

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
        assert_eq!(
            redact_url("nats://a:b@n1:4222,nats://n2:4222,tls://c:d@n3:4222"),
            "nats://<redacted>@n1:4222,nats://n2:4222,tls://<redacted>@n3:4222"
        );
    }

    #[test]
    fn a_cluster_is_given_as_seeds_separated_by_commas() {
        let seeds = server_addrs("nats://n1:4222, nats://n2:4222,nats://n3:4223").unwrap();
        let ports: Vec<u16> = seeds.iter().map(async_nats::ServerAddr::port).collect();
        assert_eq!(ports, [4222, 4222, 4223]);
        assert_eq!(server_addrs("nats://n1:4222").unwrap().len(), 1);
        let bad = server_addrs("nats://n1:4222,http://x:y@n2")
            .unwrap_err()
            .to_string();
        assert!(bad.contains("http://<redacted>@n2"), "{bad}");
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
