//! Publishing a request (a backup trigger, a drill) the way a person with
//! the NATS CLI would.

use anyhow::{Context, Result, bail};
use std::collections::BTreeMap;
use vaultline_runtime::Config;
use vaultline_types::{BackupRequested, KeyRotated, Message, Name, TriggerKind, headers};

/// A request id nobody can guess ahead: a trigger published first with the
/// same Nats-Msg-Id would otherwise make the stream drop ours as a duplicate.
pub(crate) fn new_request_id() -> String {
    let mut nonce = [0u8; 12];
    getrandom::fill(&mut nonce).expect("OS random source");
    format!("cli-{}", hex::encode(nonce))
}

/// Publishes the trigger as JSON, as a person with the NATS CLI would.
pub(crate) async fn publish_trigger(
    config: &Config,
    tenant: &Name,
    source: &Name,
    request_id: &str,
    trigger: TriggerKind,
    labels: BTreeMap<String, String>,
) -> Result<()> {
    let body = BackupRequested {
        request_id: Some(request_id.to_owned()),
        trigger,
        labels,
        ..Default::default()
    };
    body.check_labels().map_err(anyhow::Error::msg)?;
    let ids = [
        (headers::TENANT, tenant.as_str()),
        (headers::SOURCE, source.as_str()),
    ];
    publish_request(
        config,
        BackupRequested::subject_for(tenant, source),
        serde_json::to_vec(&body)?,
        request_id,
        &ids,
    )
    .await
}

/// Publishes a request (a trigger, a drill) as JSON under its request id as
/// Nats-Msg-Id. The ids are random, so a duplicate means the id was taken:
/// an error, not a silent no-op.
pub(crate) async fn publish_request(
    config: &Config,
    subject: String,
    body: Vec<u8>,
    request_id: &str,
    extra: &[(&'static str, &str)],
) -> Result<()> {
    let bus = vaultline_bus::Bus::connect(&config.nats.url, "vaultline-cli", &config.nats.login())
        .await?;
    let mut map = async_nats::HeaderMap::new();
    map.insert(headers::CONTENT_TYPE, vaultline_types::CONTENT_TYPE_JSON);
    map.insert(headers::MSG_ID, request_id);
    for (name, value) in extra {
        map.insert(*name, *value);
    }
    let published = bus
        .publish(subject.clone(), map, body.into())
        .await
        .with_context(|| {
            format!(
                "no stream acknowledged {subject}: is NATS user {} allowed to publish it \
                 (deploy/nats/auth.conf), and has `vaultline migrate` created the stream?",
                config.nats.user.as_deref().unwrap_or("(none)")
            )
        })?;
    if published.duplicate {
        bail!(
            "the stream already held a message with id {request_id}, so it dropped this one; try again"
        );
    }
    Ok(())
}

/// Publishes a key rotation for the audit trail, once the rotation is done.
pub(crate) async fn publish_rotation(config: &Config, event: &KeyRotated) -> Result<()> {
    publish_record(config, event).await.with_context(|| {
        format!(
            "the {} rotation of tenant {} is done, but its audit event was not published",
            event.key, event.tenant
        )
    })
}

/// Publishes what an operator did (a rotation, a snapshot protected or
/// forgotten) as JSON, for the audit trail, with its ids as headers.
pub(crate) async fn publish_record<M: Message + serde::Serialize>(
    config: &Config,
    event: &M,
) -> Result<()> {
    let mut ids = vec![(headers::TENANT, event.tenant().as_str())];
    if let Some(source) = event.source() {
        ids.push((headers::SOURCE, source.as_str()));
    }
    if let Some(snapshot) = event.snapshot() {
        ids.push((headers::SNAPSHOT, snapshot.as_str()));
    }
    publish_request(
        config,
        event.subject(),
        serde_json::to_vec(event)?,
        &new_request_id(),
        &ids,
    )
    .await
}
