//! Streams and consumers: applied by the admin (`vaultline migrate`), only
//! looked up by the stages, whose NATS users may not create, update or
//! delete either.

use crate::definitions::{ConsumerOverrides, RetryPolicy, consumer_config, stream_config};
use crate::{Bus, Error, Result, js_err};
use async_nats::jetstream::{self, consumer::PullConsumer};
use vaultline_types::StageName;

impl Bus {
    /// Creates the stream with `replicas` copies when missing. Never deletes;
    /// on drift, adds missing subjects, brings the replicas to `replicas` (a
    /// cluster scales the stream and the consumers that follow it in place),
    /// and otherwise leaves the operator's changes alone with a warning.
    /// Needs the admin's rights.
    ///
    /// # Errors
    /// When JetStream is unavailable or refuses (a cluster with fewer
    /// servers than `replicas` refuses).
    pub async fn apply_stream(&self, replicas: usize) -> Result<()> {
        let mut wanted = stream_config()?;
        wanted.num_replicas = replicas;
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
                if !missing.is_empty() || current.num_replicas != replicas {
                    let mut updated = current.clone();
                    updated.subjects.extend(missing.iter().cloned());
                    updated.num_replicas = replicas;
                    self.js
                        .update_stream(updated)
                        .await
                        .map_err(|e| js_err("update stream")(e.to_string()))?;
                    tracing::info!(stream = %wanted.name, ?missing, replicas, was = current.num_replicas, "Brought the stream's subjects and replicas to this release's.");
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

    /// Creates a stage's durable consumer, or brings an existing one to this
    /// release's definition with `overrides` applied (in place, which keeps
    /// its position). Needs the admin's rights.
    ///
    /// # Errors
    /// When JetStream is unavailable or refuses.
    pub async fn apply_consumer(
        &self,
        stage: StageName,
        overrides: &ConsumerOverrides,
    ) -> Result<()> {
        let (config, _) = consumer_config(stage, overrides)?;
        let stream = self
            .js
            .get_stream(&stream_config()?.name)
            .await
            .map_err(|e| js_err("get stream")(e.to_string()))?;
        let name = config
            .durable_name
            .clone()
            .unwrap_or_else(|| stage.to_string());
        if stream
            .get_consumer::<jetstream::consumer::pull::Config>(&name)
            .await
            .is_ok()
        {
            stream
                .update_consumer(config)
                .await
                .map_err(|e| js_err("update consumer")(e.to_string()))?;
        } else {
            stream
                .create_consumer(config)
                .await
                .map_err(|e| js_err("create consumer")(e.to_string()))?;
        }
        Ok(())
    }

    /// Checks the stream exists (what every stage does at start).
    ///
    /// # Errors
    /// [`Error::NotReady`] when it does not; others when NATS fails.
    pub async fn check_stream(&self) -> Result<()> {
        let name = stream_config()?.name;
        match self.js.get_stream(&name).await {
            Ok(_) => Ok(()),
            Err(e) if e.to_string().contains("not found") => Err(Error::NotReady(format!(
                "the JetStream stream {name} does not exist"
            ))),
            Err(e) => Err(js_err("stream info")(e.to_string())),
        }
    }

    /// A stage's durable consumer, which must exist, and the retry policy it
    /// runs with: max deliveries and ack wait as the server holds them, the
    /// backoff from the definition or the stage's own `overrides`.
    ///
    /// # Errors
    /// [`Error::NotReady`] when the consumer does not exist; others when NATS fails.
    pub async fn consumer(
        &self,
        stage: StageName,
        overrides: &ConsumerOverrides,
    ) -> Result<(PullConsumer, RetryPolicy)> {
        let (config, mut policy) = consumer_config(stage, overrides)?;
        let stream = stream_config()?.name;
        let name = config
            .durable_name
            .clone()
            .unwrap_or_else(|| stage.to_string());
        let mut consumer: PullConsumer = self
            .js
            .get_consumer_from_stream(&name, &stream)
            .await
            .map_err(|e| {
                if e.to_string().contains("not found") {
                    Error::NotReady(format!(
                        "the durable consumer {name} on stream {stream} does not exist"
                    ))
                } else {
                    js_err("consumer info")(e.to_string())
                }
            })?;
        let info = consumer
            .info()
            .await
            .map_err(|e| js_err("consumer info")(e.to_string()))?;
        policy.max_deliver = info.config.max_deliver;
        policy.ack_wait = info.config.ack_wait;
        Ok((consumer, policy))
    }
}
