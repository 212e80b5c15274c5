//! How far behind a stage is: what its durable consumer still has to finish,
//! read the way KEDA's nats-jetstream scaler reads it (pending plus
//! delivered-but-unacknowledged), and how long the oldest of it has waited.

use crate::{Bus, Result, definitions::stream_config, js_err};
use std::time::Duration;
use time::OffsetDateTime;
use vaultline_types::StageName;

/// A consumer's unfinished work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backlog {
    /// Messages not yet delivered plus those delivered and not yet acknowledged.
    pub lag: u64,
    /// How long the oldest unfinished message has been in the stream
    /// (zero when nothing is unfinished).
    pub oldest: Duration,
}

impl Bus {
    /// The backlog of `stage`'s durable consumer. Needs consumer info on it
    /// and message get on the stream (the auditor's rights).
    ///
    /// # Errors
    /// When the consumer does not exist or NATS refuses.
    pub async fn backlog(&self, stage: StageName) -> Result<Backlog> {
        let stream = self
            .js
            .get_stream_no_info(stream_config()?.name)
            .await
            .map_err(|e| js_err("stream")(e.to_string()))?;
        let info = stream
            .consumer_info(stage.as_str())
            .await
            .map_err(|e| js_err("consumer info")(format!("{stage}: {e}")))?;
        let lag = info.num_pending + info.num_ack_pending as u64;
        if lag == 0 {
            return Ok(Backlog {
                lag,
                oldest: Duration::ZERO,
            });
        }
        // Everything up to the ack floor is finished, so the first message
        // after it that the consumer's filter takes is the oldest unfinished.
        let filters = match &info.config.filter_subject {
            f if !f.is_empty() => vec![f.clone()],
            _ => info.config.filter_subjects.clone(),
        };
        let after = info.ack_floor.stream_sequence + 1;
        let mut oldest: Option<OffsetDateTime> = None;
        for filter in filters {
            let found = stream
                .raw_message_builder()
                .sequence(after)
                .next_by_subject(filter)
                .send()
                .await;
            // None found: expired or not yet visible; the lag still says it.
            if let Ok(message) = found {
                oldest = Some(oldest.map_or(message.time, |o| o.min(message.time)));
            }
        }
        let oldest = oldest
            .map(|at| {
                (OffsetDateTime::now_utc() - at)
                    .try_into()
                    .unwrap_or_default()
            })
            .unwrap_or_default();
        Ok(Backlog { lag, oldest })
    }
}
