//! The audit trail (append-only, hash-chained per tenant) and execution history.

use crate::{Catalog, Result};
use sha2::Digest;
use time::OffsetDateTime;
use vaultline_types::{Name, SnapshotId};

/// One event as the auditor records it.
#[derive(Debug, Clone)]
pub struct AuditEvent {
    /// Tenant, or `-` for events that name none (dead letters of garbage).
    pub tenant: String,
    pub msg_id: String,
    pub subject: String,
    pub kind: String,
    pub snapshot: Option<String>,
    /// The payload as JSON text, hashed exactly as stored.
    pub payload: String,
}

/// The chained hash of a row: SHA-256 over the previous hash and each field,
/// length-prefixed so no two field splits hash alike.
pub fn audit_hash(prev: &[u8], seq: i64, event: &AuditEvent) -> Vec<u8> {
    let mut h = sha2::Sha256::new();
    h.update(prev);
    h.update(seq.to_le_bytes());
    for field in [
        event.tenant.as_str(),
        &event.msg_id,
        &event.subject,
        &event.kind,
        event.snapshot.as_deref().unwrap_or(""),
        &event.payload,
    ] {
        h.update((field.len() as u64).to_le_bytes());
        h.update(field.as_bytes());
    }
    h.finalize().to_vec()
}

/// The result of recomputing the audit chains.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct AuditCheck {
    /// Rows checked (up to and including the first broken one).
    pub rows: u64,
    /// Tenants whose chains were checked.
    pub tenants: u64,
    /// The first row that does not chain, if any.
    pub broken: Option<BrokenRow>,
}

/// A row whose stored hash, link or sequence number does not hold.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BrokenRow {
    pub id: i64,
    pub tenant: String,
    pub seq: i64,
    pub reason: String,
}

/// A run the call to [`Catalog::finish_execution`] closed.
#[derive(Debug, Clone)]
pub struct FinishedRun {
    pub source: String,
    /// From the run's start to its end.
    pub seconds: f64,
}

impl Catalog {
    /// Recomputes every tenant's chain (or one tenant's), streaming rows in
    /// order, and stops at the first row that does not hold: a changed field
    /// (its hash differs), a removed or reordered row (its link or sequence
    /// number breaks).
    ///
    /// # Errors
    /// When the query fails.
    pub async fn verify_audit(&self, tenant: Option<&str>) -> Result<AuditCheck> {
        use futures::StreamExt;
        let client = self.client().await?;
        let rows = client
            .query_raw(
                "SELECT id, tenant, seq, msg_id, subject, kind, snapshot, payload, prev_hash, hash
                 FROM audit_events WHERE $1::text IS NULL OR tenant = $1 ORDER BY tenant, seq",
                [&tenant as &(dyn tokio_postgres::types::ToSql + Sync)],
            )
            .await?;
        let mut rows = std::pin::pin!(rows);
        let mut check = AuditCheck::default();
        let mut current: Option<(String, i64, Vec<u8>)> = None;
        while let Some(row) = rows.next().await {
            let row = row?;
            let (id, seq): (i64, i64) = (row.get(0), row.get(2));
            let event = AuditEvent {
                tenant: row.get(1),
                msg_id: row.get(3),
                subject: row.get(4),
                kind: row.get(5),
                snapshot: row.get(6),
                payload: row.get(7),
            };
            let (prev, hash): (Vec<u8>, Vec<u8>) = (row.get(8), row.get(9));
            let (expected_seq, expected_prev) = match &current {
                Some((t, last_seq, last_hash)) if *t == event.tenant => {
                    (last_seq + 1, last_hash.clone())
                }
                _ => {
                    check.tenants += 1;
                    (1, vec![0u8; 32])
                }
            };
            check.rows += 1;
            let reason = if seq != expected_seq {
                Some(format!(
                    "sequence {seq} follows {} (a row is missing or was reordered)",
                    expected_seq - 1
                ))
            } else if prev != expected_prev {
                Some("its link does not match the previous row's hash".to_owned())
            } else if audit_hash(&prev, seq, &event) != hash {
                Some("its content does not match its hash (the row was changed)".to_owned())
            } else {
                None
            };
            if let Some(reason) = reason {
                check.broken = Some(BrokenRow {
                    id,
                    tenant: event.tenant,
                    seq,
                    reason,
                });
                return Ok(check);
            }
            current = Some((event.tenant, seq, hash));
        }
        Ok(check)
    }

    /// Appends an event to its tenant's chain. Idempotent by `msg_id`: a
    /// redelivered event is not recorded twice. Returns whether it was new.
    ///
    /// # Errors
    /// When the transaction fails.
    pub async fn append_audit(&self, event: &AuditEvent) -> Result<bool> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // Serialise appends per tenant so the chain has no forks.
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtext('audit:' || $1))",
            &[&event.tenant],
        )
        .await?;
        if tx
            .query_opt(
                "SELECT 1 FROM audit_events WHERE msg_id = $1",
                &[&event.msg_id],
            )
            .await?
            .is_some()
        {
            return Ok(false);
        }
        let last = tx
            .query_opt(
                "SELECT seq, hash FROM audit_events WHERE tenant = $1 ORDER BY seq DESC LIMIT 1",
                &[&event.tenant],
            )
            .await?;
        let (seq, prev): (i64, Vec<u8>) = match last {
            Some(r) => (r.get::<_, i64>(0) + 1, r.get(1)),
            None => (1, vec![0u8; 32]),
        };
        let hash = audit_hash(&prev, seq, event);
        tx.execute(
            "INSERT INTO audit_events (tenant, seq, msg_id, subject, kind, snapshot, payload, prev_hash, hash)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            &[
                &event.tenant,
                &seq,
                &event.msg_id,
                &event.subject,
                &event.kind,
                &event.snapshot,
                &event.payload,
                &prev,
                &hash,
            ],
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Number of audit rows, optionally of one snapshot.
    ///
    /// # Errors
    /// When the query fails.
    pub async fn audit_count(&self, snapshot: Option<&SnapshotId>) -> Result<i64> {
        let r = self
            .client()
            .await?
            .query_one(
                "SELECT count(*) FROM audit_events WHERE $1::text IS NULL OR snapshot = $1",
                &[&snapshot.map(SnapshotId::as_str)],
            )
            .await?;
        Ok(r.get(0))
    }

    /// Opens an execution when a snapshot starts. Idempotent.
    ///
    /// # Errors
    /// When the query fails.
    pub async fn start_execution(
        &self,
        tenant: &Name,
        snapshot: &SnapshotId,
        source: &Name,
        trigger: &str,
    ) -> Result<()> {
        self.client()
            .await?
            .execute(
                "INSERT INTO executions (tenant, snapshot, source, trigger, status, started_at)
                 VALUES ($1, $2, $3, $4, 'running', now()) ON CONFLICT DO NOTHING",
                &[
                    &tenant.as_str(),
                    &snapshot.as_str(),
                    &source.as_str(),
                    &trigger,
                ],
            )
            .await?;
        Ok(())
    }

    /// Closes an execution with its outcome and the snapshot's sizes.
    /// Returns the run when this call closed it, `None` when it was closed
    /// already (a redelivered event), so a run is counted once.
    ///
    /// # Errors
    /// When the query fails.
    pub async fn finish_execution(
        &self,
        tenant: &Name,
        snapshot: &SnapshotId,
        status: &str,
        error: Option<&str>,
    ) -> Result<Option<FinishedRun>> {
        let now = OffsetDateTime::now_utc();
        self.client()
            .await?
            .execute(
                "INSERT INTO executions (tenant, snapshot, source, trigger, status, started_at)
                 SELECT tenant, id, source, trigger, 'running', started_at FROM snapshots WHERE tenant = $1 AND id = $2
                 ON CONFLICT DO NOTHING",
                &[&tenant.as_str(), &snapshot.as_str()],
            )
            .await?;
        let finished = self
            .client()
            .await?
            .query_opt(
                "UPDATE executions e SET status = $3, error = $4, finished_at = $5,
                     duration_ms = (extract(epoch FROM ($5 - e.started_at)) * 1000)::bigint,
                     bytes_read = s.bytes_read, bytes_stored = s.bytes_stored
                 FROM snapshots s
                 WHERE e.tenant = $1 AND e.snapshot = $2 AND s.tenant = e.tenant AND s.id = e.snapshot
                   AND e.status = 'running'
                 RETURNING e.source, e.duration_ms",
                &[&tenant.as_str(), &snapshot.as_str(), &status, &error, &now],
            )
            .await?;
        Ok(finished.map(|r| FinishedRun {
            source: r.get(0),
            seconds: r.get::<_, Option<i64>>(1).unwrap_or(0) as f64 / 1000.0,
        }))
    }
}
