//! Signed webhooks: the auditor queues a delivery per (webhook, event) in the
//! catalog; this sender claims due deliveries, posts them, and records every
//! attempt, retrying with exponential backoff. The outbox lives in the
//! catalog, so deliveries survive restarts and several auditors share them.
//!
//! Signature: `Vaultline-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`
//! with the timestamp (unix seconds) in `Vaultline-Timestamp`, so a receiver
//! can reject replays of old bodies.

use hmac::{KeyInit, Mac};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use vaultline_catalog::{AttemptOutcome, DueDelivery};
use vaultline_format::keys::Kek;
use vaultline_runtime::Deps;
use vaultline_runtime::metrics::{MetricName, count};

/// Header names of a delivery.
pub const SIGNATURE: &str = "Vaultline-Signature";
pub const TIMESTAMP: &str = "Vaultline-Timestamp";
pub const DELIVERY: &str = "Vaultline-Delivery";
pub const EVENT: &str = "Vaultline-Event";

/// `v1=<hex>`: HMAC-SHA256 over `<timestamp>.<body>`.
pub fn signature(secret: &[u8], timestamp: i64, body: &str) -> String {
    let mut mac =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// Delay before attempt `n + 1` after `n` failed ones: base·2^(n-1), at most an hour.
pub fn backoff(base: Duration, failed: u32) -> Duration {
    let factor = 1u32 << failed.saturating_sub(1).min(20);
    (base * factor).min(Duration::from_secs(3600))
}

/// The HTTP client vaultline calls out with: no redirects (a redirect could
/// carry a token elsewhere), rustls with ring, `timeout` per request.
///
/// # Errors
/// When TLS cannot be set up.
pub fn http_client(timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    // async-nats brings rustls with ring; make it the process's provider so
    // reqwest's rustls finds one (a no-op when it is already installed).
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    reqwest::Client::builder()
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("vaultline/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// Why an attempt got no HTTP status. Never holds the URL (it may hold a
/// token) or the secret: the message is stored with the attempt.
#[derive(Debug, thiserror::Error)]
enum AttemptError {
    #[error("no key-encryption key is configured to unseal the webhook secret")]
    NoKek,
    #[error("cannot unseal the webhook secret: {0}")]
    Unseal(vaultline_format::Error),
    #[error("request failed: {0}")]
    Request(reqwest::Error),
}

/// Claims and posts due deliveries until `stop` flips.
pub async fn run(deps: Arc<Deps>, mut stop: watch::Receiver<bool>) {
    let settings = deps.config.webhooks.clone();
    let client = match http_client(settings.timeout) {
        Ok(client) => client,
        Err(error) => {
            tracing::error!(%error, "Cannot build the HTTP client: webhooks disabled.");
            return;
        }
    };
    // Without a KEK no secret can be unsealed; attempts record that.
    let kek = vaultline_runtime::deps::load_kek(&deps.config).ok();
    loop {
        let busy = match deliver_due(&deps, &client, kek.as_ref()).await {
            Ok(n) => n > 0,
            Err(error) => {
                tracing::warn!(%error, "Webhook delivery round failed; retrying.");
                false
            }
        };
        if busy {
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
    }
}

/// One round: claims up to 16 due deliveries and attempts each once.
///
/// # Errors
/// When the catalog fails.
pub async fn deliver_due(
    deps: &Deps,
    client: &reqwest::Client,
    kek: Option<&Kek>,
) -> Result<usize, vaultline_catalog::Error> {
    let settings = &deps.config.webhooks;
    let due = deps
        .catalog
        .claim_deliveries(16, settings.timeout + Duration::from_secs(30))
        .await?;
    let n = due.len();
    let attempts = due.into_iter().map(|d| attempt(deps, client, kek, d));
    for result in futures::future::join_all(attempts).await {
        result?;
    }
    Ok(n)
}

async fn attempt(
    deps: &Deps,
    client: &reqwest::Client,
    kek: Option<&Kek>,
    delivery: DueDelivery,
) -> Result<(), vaultline_catalog::Error> {
    let settings = &deps.config.webhooks;
    let number = delivery.attempts + 1;
    let (status, error) = match post(client, kek, &delivery).await {
        Ok(status) if (200..300).contains(&status) => (Some(status), None),
        Ok(status) => (
            Some(status),
            Some(format!("the receiver answered HTTP {status}")),
        ),
        Err(error) => (None, Some(error.to_string())),
    };
    let outcome = if error.is_none() {
        AttemptOutcome::Delivered
    } else if number as u32 >= settings.max_attempts {
        AttemptOutcome::GaveUp
    } else {
        AttemptOutcome::RetryAfter(backoff(settings.backoff, number as u32))
    };
    let label = match outcome {
        AttemptOutcome::Delivered => "delivered",
        AttemptOutcome::RetryAfter(_) => "retry",
        AttemptOutcome::GaveUp => "gave_up",
    };
    count(MetricName::WebhookAttempts, &[("outcome", label.into())], 1);
    match &error {
        None => {
            tracing::info!(tenant = %delivery.tenant, webhook = %delivery.webhook, delivery = delivery.id, attempt = number, "Webhook delivered.")
        }
        Some(e) => {
            tracing::warn!(tenant = %delivery.tenant, webhook = %delivery.webhook, delivery = delivery.id, attempt = number, error = %e, outcome = label, "Webhook attempt failed.")
        }
    }
    deps.catalog
        .record_attempt(delivery.id, number, status, error.as_deref(), outcome)
        .await
}

/// Posts one delivery; the HTTP status, or why there was none. Errors never
/// carry the URL (it may hold a token) or the secret.
async fn post(
    client: &reqwest::Client,
    kek: Option<&Kek>,
    delivery: &DueDelivery,
) -> Result<i32, AttemptError> {
    let kek = kek.ok_or(AttemptError::NoKek)?;
    let secret = kek
        .open(&delivery.sealed_secret)
        .map_err(AttemptError::Unseal)?;
    let timestamp = time::OffsetDateTime::now_utc().unix_timestamp();
    let response = client
        .post(&delivery.url)
        .header("Content-Type", "application/json")
        .header(TIMESTAMP, timestamp.to_string())
        .header(SIGNATURE, signature(&secret, timestamp, &delivery.body))
        .header(DELIVERY, delivery.id.to_string())
        .header(EVENT, delivery.event_kind.as_str())
        .body(delivery.body.clone())
        .send()
        .await
        .map_err(|e| AttemptError::Request(e.without_url()))?;
    Ok(i32::from(response.status().as_u16()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_over_timestamp_dot_body() {
        // Expected value computed independently with Python's hmac module.
        let sig = signature(b"key", 1_700_000_000, "{\"a\":1}");
        assert_eq!(
            sig,
            "v1=a438e398bfafc57e4396bb7fc2304422f0f768e965d073ca313cb52e22e6ad03"
        );
        assert_ne!(sig, signature(b"key", 1_700_000_001, "{\"a\":1}"));
        assert_ne!(sig, signature(b"other", 1_700_000_000, "{\"a\":1}"));
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let base = Duration::from_secs(5);
        assert_eq!(backoff(base, 1), Duration::from_secs(5));
        assert_eq!(backoff(base, 2), Duration::from_secs(10));
        assert_eq!(backoff(base, 4), Duration::from_secs(40));
        assert_eq!(backoff(base, 30), Duration::from_secs(3600));
    }
}
