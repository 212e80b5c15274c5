//! The record of restores into databases and commands: one row per run with
//! its steps and checks, and a history row (trigger `restore`) beside the
//! backups. Written by the auditor from `restore.completed`.

use crate::{Catalog, Error, Result};
use time::OffsetDateTime;
use vaultline_types::{Name, RestoreCompleted};

/// A restore as recorded.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RestoreRow {
    pub tenant: String,
    pub id: String,
    pub source: String,
    pub snapshot: String,
    pub target: String,
    pub outcome: String,
    pub safety_snapshot: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub finished_at: OffsetDateTime,
    /// The event as published: steps, table checks, smoke status, error.
    pub results: serde_json::Value,
}

const COLUMNS: &str = "tenant, id, source, snapshot, target, outcome, safety_snapshot, started_at, finished_at, results";

fn row(r: &tokio_postgres::Row) -> RestoreRow {
    RestoreRow {
        tenant: r.get(0),
        id: r.get(1),
        source: r.get(2),
        snapshot: r.get(3),
        target: r.get(4),
        outcome: r.get(5),
        safety_snapshot: r.get(6),
        started_at: r.get(7),
        finished_at: r.get(8),
        results: r.get(9),
    }
}

impl Catalog {
    /// Records a finished restore and its history row, once: a redelivered
    /// event changes nothing.
    ///
    /// # Errors
    /// An id that is not a restore's, or a failing query.
    pub async fn record_restore(&self, done: &RestoreCompleted) -> Result<()> {
        if !done.restore.starts_with("restore-") {
            return Err(Error::Conflict(format!(
                "{:?} is not a restore id (restore-…)",
                done.restore
            )));
        }
        let started = OffsetDateTime::from_unix_timestamp(done.started_at)
            .map_err(|e| Error::Conflict(format!("restore start time: {e}")))?;
        let finished = started + std::time::Duration::from_millis(done.duration_ms);
        let results = serde_json::to_value(done)
            .map_err(|e| Error::Conflict(format!("restore results: {e}")))?;
        let status = if done.outcome == "succeeded" {
            "succeeded"
        } else {
            "failed"
        };
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.execute(
            &format!(
                "INSERT INTO restores ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
                 ON CONFLICT DO NOTHING"
            ),
            &[
                &done.tenant.as_str(),
                &done.restore,
                &done.source.as_str(),
                &done.snapshot.as_str(),
                &done.target,
                &done.outcome,
                &done.safety_snapshot.as_ref().map(|s| s.as_str()),
                &started,
                &finished,
                &results,
            ],
        )
        .await?;
        tx.execute(
            "INSERT INTO executions (tenant, snapshot, source, trigger, status, started_at,
                                     finished_at, duration_ms, bytes_read, error)
             VALUES ($1, $2, $3, 'restore', $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING",
            &[
                &done.tenant.as_str(),
                &done.restore,
                &done.source.as_str(),
                &status,
                &started,
                &finished,
                &i64::try_from(done.duration_ms).unwrap_or(i64::MAX),
                &i64::try_from(done.bytes).unwrap_or(i64::MAX),
                &done.error,
            ],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// One restore of `tenant`.
    ///
    /// # Errors
    /// [`Error::NotFound`] when absent.
    pub async fn restore_record(&self, tenant: &Name, id: &str) -> Result<RestoreRow> {
        let r = self
            .client()
            .await?
            .query_opt(
                &format!("SELECT {COLUMNS} FROM restores WHERE tenant = $1 AND id = $2"),
                &[&tenant.as_str(), &id],
            )
            .await?
            .ok_or_else(|| Error::NotFound(format!("no restore {id} of tenant {tenant}")))?;
        Ok(row(&r))
    }

    /// The newest `limit` restores of `tenant`, newest first.
    ///
    /// # Errors
    /// When the query fails.
    pub async fn restore_records(&self, tenant: &Name, limit: i64) -> Result<Vec<RestoreRow>> {
        let rows = self
            .client()
            .await?
            .query(
                &format!(
                    "SELECT {COLUMNS} FROM restores WHERE tenant = $1 ORDER BY started_at DESC LIMIT $2"
                ),
                &[&tenant.as_str(), &limit],
            )
            .await?;
        Ok(rows.iter().map(row).collect())
    }
}
