//! Verifications asked for by name: one row per tenant and request id, as
//! the verifier found it. Read back by the HTTP API.

use crate::{Catalog, Error, Result};
use time::OffsetDateTime;
use vaultline_types::{Name, SnapshotId, VerificationCompleted};

const COLUMNS: &str = "tenant, request_id, source, snapshot, level, outcome, objects, files, \
                       bytes, problems, error, started_at, duration_ms";

fn completed(r: &tokio_postgres::Row) -> Result<VerificationCompleted> {
    let bad = |e: vaultline_types::IdError| Error::Conflict(format!("bad id in catalog: {e}"));
    let started: OffsetDateTime = r.get(11);
    Ok(VerificationCompleted {
        tenant: Name::new(r.get::<_, String>(0)).map_err(bad)?,
        request_id: r.get(1),
        source: Name::new(r.get::<_, String>(2)).map_err(bad)?,
        snapshot: SnapshotId::parse(r.get(3)).map_err(bad)?,
        level: r.get::<_, i16>(4) as u8,
        outcome: r.get(5),
        objects: r.get::<_, i32>(6) as u32,
        files: r.get::<_, Option<i64>>(7).map(|n| n as u64),
        bytes: r.get::<_, Option<i64>>(8).map(|n| n as u64),
        problems: serde_json::from_value(r.get(9)).unwrap_or_default(),
        error: r.get(10),
        started_at: started.unix_timestamp(),
        duration_ms: r.get::<_, i64>(12) as u64,
    })
}

impl Catalog {
    /// Records what a requested verification found, once: a redelivered
    /// request that ran again leaves the first result.
    ///
    /// # Errors
    /// A start time out of range, or a failing query.
    pub async fn record_verification(&self, done: &VerificationCompleted) -> Result<()> {
        let started = OffsetDateTime::from_unix_timestamp(done.started_at)
            .map_err(|e| Error::Conflict(format!("verification start time: {e}")))?;
        let problems = serde_json::to_value(&done.problems).unwrap_or_default();
        self.client()
            .await?
            .execute(
                &format!(
                    "INSERT INTO verifications ({COLUMNS})
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
                     ON CONFLICT (tenant, request_id) DO NOTHING"
                ),
                &[
                    &done.tenant.as_str(),
                    &done.request_id,
                    &done.source.as_str(),
                    &done.snapshot.as_str(),
                    &i16::from(done.level),
                    &done.outcome,
                    &(done.objects as i32),
                    &done.files.map(|n| n as i64),
                    &done.bytes.map(|n| n as i64),
                    &problems,
                    &done.error,
                    &started,
                    &(done.duration_ms as i64),
                ],
            )
            .await?;
        Ok(())
    }

    /// The result of `tenant`'s verification `request_id`, once it ran.
    ///
    /// # Errors
    /// When the query fails.
    pub async fn verification(
        &self,
        tenant: &Name,
        request_id: &str,
    ) -> Result<Option<VerificationCompleted>> {
        self.client()
            .await?
            .query_opt(
                &format!(
                    "SELECT {COLUMNS} FROM verifications WHERE tenant = $1 AND request_id = $2"
                ),
                &[&tenant.as_str(), &request_id],
            )
            .await?
            .as_ref()
            .map(completed)
            .transpose()
    }

    /// The newest `limit` requested verifications of one snapshot.
    ///
    /// # Errors
    /// When the query fails.
    pub async fn verifications_of(
        &self,
        tenant: &Name,
        snapshot: &SnapshotId,
        limit: i64,
    ) -> Result<Vec<VerificationCompleted>> {
        self.client()
            .await?
            .query(
                &format!(
                    "SELECT {COLUMNS} FROM verifications WHERE tenant = $1 AND snapshot = $2
                      ORDER BY recorded_at DESC LIMIT $3"
                ),
                &[&tenant.as_str(), &snapshot.as_str(), &limit],
            )
            .await?
            .iter()
            .map(completed)
            .collect()
    }
}
