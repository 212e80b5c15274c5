//! Webhooks per tenant and their delivery outbox. The auditor enqueues one
//! delivery per (webhook, event); its sender claims due deliveries, posts
//! them, and records every attempt.

use crate::{Catalog, Error, Result};
use std::time::Duration;
use time::OffsetDateTime;

/// A webhook as listed (its secret never leaves the catalog sealed or not).
#[derive(Debug, Clone, serde::Serialize)]
pub struct WebhookRow {
    pub tenant: String,
    pub id: String,
    pub url: String,
    pub on_success: bool,
    pub pending: i64,
    pub delivered: i64,
    pub failed: i64,
}

/// A delivery claimed for one attempt.
pub struct DueDelivery {
    pub id: i64,
    pub tenant: String,
    pub webhook: String,
    pub url: String,
    pub sealed_secret: Vec<u8>,
    pub event_kind: String,
    pub body: String,
    /// Attempts made before this one.
    pub attempts: i32,
}

impl std::fmt::Debug for DueDelivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DueDelivery")
            .field("id", &self.id)
            .field("tenant", &self.tenant)
            .field("webhook", &self.webhook)
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

/// What became of an attempt.
#[derive(Debug, Clone, Copy)]
pub enum AttemptOutcome {
    Delivered,
    RetryAfter(Duration),
    GaveUp,
}

impl Catalog {
    /// Adds or replaces a tenant's webhook.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown tenant.
    pub async fn set_webhook(
        &self,
        tenant: &str,
        id: &str,
        url: &str,
        sealed_secret: &[u8],
        on_success: bool,
    ) -> Result<()> {
        let client = self.client().await?;
        if client
            .query_opt("SELECT 1 FROM tenants WHERE name = $1", &[&tenant])
            .await?
            .is_none()
        {
            return Err(Error::NotFound(format!("unknown tenant {tenant}")));
        }
        client
            .execute(
                "INSERT INTO webhooks (tenant, id, url, sealed_secret, on_success) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (tenant, id) DO UPDATE SET url = $3, sealed_secret = $4, on_success = $5",
                &[&tenant, &id, &url, &sealed_secret, &on_success],
            )
            .await?;
        Ok(())
    }

    /// Removes a webhook and its deliveries; false when there was none.
    ///
    /// # Errors
    /// When the query fails.
    pub async fn remove_webhook(&self, tenant: &str, id: &str) -> Result<bool> {
        let n = self
            .client()
            .await?
            .execute(
                "DELETE FROM webhooks WHERE tenant = $1 AND id = $2",
                &[&tenant, &id],
            )
            .await?;
        Ok(n == 1)
    }

    /// Webhooks with their delivery counts.
    ///
    /// # Errors
    /// When the query fails.
    pub async fn webhooks(&self, tenant: Option<&str>) -> Result<Vec<WebhookRow>> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT w.tenant, w.id, w.url, w.on_success,
                        count(d.id) FILTER (WHERE d.status = 'pending'),
                        count(d.id) FILTER (WHERE d.status = 'delivered'),
                        count(d.id) FILTER (WHERE d.status = 'failed')
                 FROM webhooks w LEFT JOIN webhook_deliveries d ON d.tenant = w.tenant AND d.webhook = w.id
                 WHERE $1::text IS NULL OR w.tenant = $1
                 GROUP BY w.tenant, w.id ORDER BY w.tenant, w.id",
                &[&tenant],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| WebhookRow {
                tenant: r.get(0),
                id: r.get(1),
                url: r.get(2),
                on_success: r.get(3),
                pending: r.get(4),
                delivered: r.get(5),
                failed: r.get(6),
            })
            .collect())
    }

    /// Queues `body` for every webhook of the tenant that wants this event
    /// (failures always, successes when asked). Idempotent per event.
    /// Returns how many deliveries were queued.
    ///
    /// # Errors
    /// When the query fails.
    pub async fn enqueue_webhooks(
        &self,
        tenant: &str,
        event_msg_id: &str,
        kind: &str,
        body: &str,
        success: bool,
    ) -> Result<u64> {
        Ok(self
            .client()
            .await?
            .execute(
                "INSERT INTO webhook_deliveries (tenant, webhook, event_msg_id, event_kind, body)
                 SELECT tenant, id, $2, $3, $4 FROM webhooks WHERE tenant = $1 AND (NOT $5 OR on_success)
                 ON CONFLICT DO NOTHING",
                &[&tenant, &event_msg_id, &kind, &body, &success],
            )
            .await?)
    }

    /// Claims up to `limit` due deliveries for one attempt each: they are
    /// not due again for `lease` (so a sender that dies mid-attempt is
    /// retried, and two senders never post the same attempt).
    ///
    /// # Errors
    /// When the query fails.
    pub async fn claim_deliveries(&self, limit: i64, lease: Duration) -> Result<Vec<DueDelivery>> {
        let rows = self
            .client()
            .await?
            .query(
                "UPDATE webhook_deliveries d SET next_attempt_at = now() + make_interval(secs => $2)
                 FROM webhooks w
                 WHERE d.id IN (SELECT id FROM webhook_deliveries
                                WHERE status = 'pending' AND next_attempt_at <= now()
                                ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED)
                   AND w.tenant = d.tenant AND w.id = d.webhook
                 RETURNING d.id, d.tenant, d.webhook, w.url, w.sealed_secret, d.event_kind, d.body, d.attempts",
                &[&limit, &lease.as_secs_f64()],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| DueDelivery {
                id: r.get(0),
                tenant: r.get(1),
                webhook: r.get(2),
                url: r.get(3),
                sealed_secret: r.get(4),
                event_kind: r.get(5),
                body: r.get(6),
                attempts: r.get(7),
            })
            .collect())
    }

    /// Records one attempt and what follows from it.
    ///
    /// # Errors
    /// When the transaction fails.
    pub async fn record_attempt(
        &self,
        delivery: i64,
        attempt: i32,
        http_status: Option<i32>,
        error: Option<&str>,
        outcome: AttemptOutcome,
    ) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.execute(
            "INSERT INTO webhook_attempts (delivery, attempt, http_status, error) VALUES ($1, $2, $3, $4)
             ON CONFLICT DO NOTHING",
            &[&delivery, &attempt, &http_status, &error],
        )
        .await?;
        let (status, delay) = match outcome {
            AttemptOutcome::Delivered => ("delivered", Duration::ZERO),
            AttemptOutcome::RetryAfter(delay) => ("pending", delay),
            AttemptOutcome::GaveUp => ("failed", Duration::ZERO),
        };
        let now = OffsetDateTime::now_utc();
        tx.execute(
            "UPDATE webhook_deliveries SET attempts = $2, last_http_status = $3, last_error = $4, status = $5,
                 next_attempt_at = $6::timestamptz + make_interval(secs => $7),
                 delivered_at = CASE WHEN $5 = 'delivered' THEN $6::timestamptz ELSE delivered_at END
             WHERE id = $1",
            &[&delivery, &attempt, &http_status, &error, &status, &now, &delay.as_secs_f64()],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }
}
