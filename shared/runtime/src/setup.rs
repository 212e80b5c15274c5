//! `vaultline migrate`'s NATS half: the stream, every stage's durable
//! consumer (with the config's `[stages.*]` overrides) and, with the
//! JetStream staging backend, the staging object store. Runs with the admin
//! login; no stage holds the rights this needs.

use crate::Config;
use crate::deps::StartError;
use vaultline_bus::{Bus, StagingStore};
use vaultline_types::StageName;

/// Applies the shipped stream and consumers; returns what it set up.
///
/// # Errors
/// When NATS refuses the admin login or a JetStream call.
pub async fn apply_bus(config: &Config) -> Result<Vec<String>, StartError> {
    let bus = Bus::connect(
        &config.nats.url,
        "vaultline-migrate",
        &config.nats.admin_login(),
    )
    .await?;
    let replicas = config.nats.replicas;
    if !(1..=5).contains(&replicas) {
        return Err(StartError::Other(format!(
            "nats.replicas is {replicas}; JetStream keeps 1 to 5 copies (3 in a 3-server cluster)"
        )));
    }
    bus.apply_stream(replicas).await?;
    let mut applied = vec![format!("stream VAULTLINE ({replicas} replicas)")];
    for stage in StageName::ALL {
        if vaultline_bus::consumer_json(stage).is_none() {
            continue;
        }
        bus.apply_consumer(stage, &config.consumer_overrides(stage))
            .await?;
        applied.push(format!("consumer {stage}"));
    }
    if config.staging.backend == crate::config::StagingBackend::Jetstream {
        StagingStore::create(&bus.js, config.staging.ttl, replicas).await?;
        applied.push(format!("object store {}", vaultline_bus::STAGING_BUCKET));
    }
    Ok(applied)
}
