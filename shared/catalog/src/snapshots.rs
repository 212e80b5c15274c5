//! Snapshot lifecycle: extracting → extracted → stored → verified (or corrupt,
//! failed), and expired once retention forgets it.

use crate::{Catalog, Error, Result};
use std::collections::BTreeMap;
use time::OffsetDateTime;
use vaultline_types::{BackupRequested, Name, PackId, SnapshotId, SnapshotStatus};

/// A snapshot as stored.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SnapshotRow {
    pub tenant: Name,
    pub id: SnapshotId,
    pub source: Name,
    pub status: SnapshotStatus,
    pub trigger: String,
    pub key_id: String,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
    pub attempt: Option<i32>,
    pub batches_total: Option<i32>,
    pub files: i64,
    pub bytes_read: i64,
    pub bytes_new: i64,
    pub bytes_stored: i64,
    pub source_digest: Option<String>,
    pub manifest_digest: Option<String>,
    pub error: Option<String>,
    /// Retention never forgets it, and nothing expires it, until unprotected.
    pub protected: bool,
    /// What its trigger labelled it with (e.g. `app_version`).
    pub labels: BTreeMap<String, String>,
}

const COLUMNS: &str = "tenant, id, source, status, trigger, key_id, started_at, finished_at, batches_total, \
                       files, bytes_read, bytes_new, bytes_stored, source_digest, manifest_digest, error, attempt, \
                       protected, labels";

fn row(r: &tokio_postgres::Row) -> Result<SnapshotRow> {
    let bad =
        |e: vaultline_types::IdError| Error::Conflict(format!("catalog holds an invalid id: {e}"));
    Ok(SnapshotRow {
        tenant: Name::new(r.get::<_, String>(0)).map_err(bad)?,
        id: SnapshotId::parse(r.get(1)).map_err(bad)?,
        source: Name::new(r.get::<_, String>(2)).map_err(bad)?,
        status: r
            .get::<_, &str>(3)
            .parse()
            .map_err(|e| Error::Conflict(format!("catalog holds {e}")))?,
        trigger: r.get(4),
        key_id: r.get(5),
        started_at: r.get(6),
        finished_at: r.get(7),
        batches_total: r.get(8),
        files: r.get(9),
        bytes_read: r.get(10),
        bytes_new: r.get(11),
        bytes_stored: r.get(12),
        source_digest: r.get(13),
        manifest_digest: r.get(14),
        error: r.get(15),
        attempt: r.get(16),
        protected: r.get(17),
        labels: serde_json::from_value(r.get(18)).map_err(|e| {
            Error::Conflict(format!("catalog holds labels that are not strings: {e}"))
        })?,
    })
}

impl Catalog {
    /// Records that the snapshot `request` asked for began, with its
    /// trigger, request id and labels. Idempotent: a redelivered trigger gets
    /// the row that exists.
    ///
    /// # Errors
    /// When the query fails.
    pub async fn begin_snapshot(
        &self,
        id: &SnapshotId,
        request: &BackupRequested,
        key_id: &str,
    ) -> Result<SnapshotRow> {
        let (tenant, source) = (request.tenant_name(), request.source_name());
        let client = self.client().await?;
        let labels = serde_json::to_value(&request.labels)
            .map_err(|e| Error::Conflict(format!("labels: {e}")))?;
        client
            .execute(
                "INSERT INTO snapshots (tenant, id, source, status, trigger, request_id, key_id, labels)
                 VALUES ($1, $2, $3, 'extracting', $4, $5, $6, $7) ON CONFLICT DO NOTHING",
                &[
                    &tenant.as_str(),
                    &id.as_str(),
                    &source.as_str(),
                    &request.trigger.as_str(),
                    &request.request_id,
                    &key_id,
                    &labels,
                ],
            )
            .await?;
        self.snapshot(tenant, id).await
    }

    /// One snapshot of a tenant.
    ///
    /// # Errors
    /// [`Error::NotFound`] when absent.
    pub async fn snapshot(&self, tenant: &Name, id: &SnapshotId) -> Result<SnapshotRow> {
        let sql = format!("SELECT {COLUMNS} FROM snapshots WHERE tenant = $1 AND id = $2");
        let r = self
            .client()
            .await?
            .query_opt(&sql, &[&tenant.as_str(), &id.as_str()])
            .await?
            .ok_or_else(|| Error::NotFound(format!("unknown snapshot {id} of tenant {tenant}")))?;
        row(&r)
    }

    /// A snapshot by id alone (ids are unique in practice; the newest wins).
    ///
    /// # Errors
    /// [`Error::NotFound`] when absent.
    pub async fn find_snapshot(&self, id: &SnapshotId) -> Result<SnapshotRow> {
        let sql = format!(
            "SELECT {COLUMNS} FROM snapshots WHERE id = $1 ORDER BY started_at DESC LIMIT 1"
        );
        let r = self
            .client()
            .await?
            .query_opt(&sql, &[&id.as_str()])
            .await?
            .ok_or_else(|| Error::NotFound(format!("unknown snapshot {id}")))?;
        row(&r)
    }

    /// A verified snapshot chosen at random (the verifier's sampled level-2
    /// check), or `None` when there is none.
    ///
    /// # Errors
    /// When the query fails.
    pub async fn random_verified_snapshot(&self) -> Result<Option<SnapshotRow>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM snapshots WHERE status = 'verified' ORDER BY random() LIMIT 1"
        );
        let r = self.client().await?.query_opt(&sql, &[]).await?;
        r.as_ref().map(row).transpose()
    }

    /// The snapshot a request for `tenant`'s `source` created, if it exists yet.
    ///
    /// # Errors
    /// When the query fails.
    pub async fn snapshot_by_request(
        &self,
        tenant: &Name,
        source: &Name,
        request_id: &str,
    ) -> Result<Option<SnapshotRow>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM snapshots WHERE tenant = $1 AND source = $2 AND request_id = $3"
        );
        let r = self
            .client()
            .await?
            .query_opt(&sql, &[&tenant.as_str(), &source.as_str(), &request_id])
            .await?;
        r.as_ref().map(row).transpose()
    }

    /// Snapshots, newest first, optionally of one tenant and source.
    ///
    /// # Errors
    /// When the query fails.
    pub async fn snapshots(
        &self,
        tenant: Option<&Name>,
        source: Option<&Name>,
    ) -> Result<Vec<SnapshotRow>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM snapshots
             WHERE ($1::text IS NULL OR tenant = $1) AND ($2::text IS NULL OR source = $2)
             ORDER BY started_at DESC, id DESC"
        );
        let rows = self
            .client()
            .await?
            .query(
                &sql,
                &[&tenant.map(Name::as_str), &source.map(Name::as_str)],
            )
            .await?;
        rows.iter().map(row).collect()
    }

    /// Records the end of extraction. Idempotent.
    ///
    /// # Errors
    /// When the query fails.
    #[allow(clippy::too_many_arguments)]
    pub async fn set_extracted(
        &self,
        tenant: &Name,
        id: &SnapshotId,
        attempt: u32,
        batches: u32,
        files: u64,
        bytes_read: u64,
        bytes_new: u64,
        source_digest: &str,
        tables: Option<&serde_json::Value>,
    ) -> Result<()> {
        self.client()
            .await?
            .execute(
                "UPDATE snapshots SET status = 'extracted', extracted_at = coalesce(extracted_at, now()),
                     batches_total = $3, files = $4, bytes_read = $5, bytes_new = $6, source_digest = $7, attempt = $8,
                     tables = $9
                 WHERE tenant = $1 AND id = $2 AND status = 'extracting'",
                &[
                    &tenant.as_str(),
                    &id.as_str(),
                    &(batches as i32),
                    &(files as i64),
                    &(bytes_read as i64),
                    &(bytes_new as i64),
                    &source_digest,
                    &(attempt as i32),
                    &tables,
                ],
            )
            .await?;
        Ok(())
    }

    /// How many batches of the snapshot's completed attempt have a stored pack.
    ///
    /// # Errors
    /// When the query fails.
    pub async fn batches_stored(&self, tenant: &Name, id: &SnapshotId) -> Result<i64> {
        let r = self
            .client()
            .await?
            .query_one(
                "SELECT count(*) FROM snapshot_batches b JOIN snapshots s ON s.tenant = b.tenant AND s.id = b.snapshot
                 WHERE b.tenant = $1 AND b.snapshot = $2 AND b.attempt = s.attempt",
                &[&tenant.as_str(), &id.as_str()],
            )
            .await?;
        Ok(r.get(0))
    }

    /// Records the stored manifest and the packs it references. Returns false
    /// when another handler already did (at-least-once delivery).
    ///
    /// # Errors
    /// When the query fails.
    pub async fn mark_stored(
        &self,
        tenant: &Name,
        id: &SnapshotId,
        manifest_digest: &str,
        manifest_size: u64,
        packs: &[PackId],
        bytes_stored: u64,
    ) -> Result<bool> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let pack_ids: Vec<&[u8]> = packs.iter().map(|p| p.0.as_slice()).collect();
        tx.execute(
            "INSERT INTO snapshot_packs (tenant, snapshot, pack) SELECT $1, $2, unnest($3::bytea[])
             ON CONFLICT DO NOTHING",
            &[&tenant.as_str(), &id.as_str(), &pack_ids],
        )
        .await?;
        let updated = tx
            .execute(
                "UPDATE snapshots SET status = 'stored', stored_at = now(), manifest_digest = $3,
                     manifest_size = $4, bytes_stored = $5
                 WHERE tenant = $1 AND id = $2 AND status = 'extracted'",
                &[
                    &tenant.as_str(),
                    &id.as_str(),
                    &manifest_digest,
                    &(manifest_size as i64),
                    &(bytes_stored as i64),
                ],
            )
            .await?;
        tx.commit().await?;
        Ok(updated == 1)
    }

    /// Moves a snapshot to a final status, from one of the statuses
    /// [`SnapshotStatus::allowed_from`] names (`verified` only from `stored`;
    /// `failed` never overwrites a verified or expired snapshot). Returns
    /// whether the row changed.
    ///
    /// # Errors
    /// When the query fails.
    pub async fn finish_snapshot(
        &self,
        tenant: &Name,
        id: &SnapshotId,
        status: SnapshotStatus,
        error: Option<&str>,
    ) -> Result<bool> {
        if !status.is_terminal() {
            return Err(Error::Conflict(format!("{status} is not a final status")));
        }
        let from: Vec<&str> = status.allowed_from().iter().map(|s| s.as_str()).collect();
        let updated = self
            .client()
            .await?
            .execute(
                "UPDATE snapshots SET status = $3, error = coalesce($4, error),
                     finished_at = coalesce(finished_at, now()),
                     verified_at = CASE WHEN $3 = 'verified' THEN now() ELSE verified_at END
                 WHERE tenant = $1 AND id = $2 AND status = ANY($5)",
                &[
                    &tenant.as_str(),
                    &id.as_str(),
                    &status.as_str(),
                    &error,
                    &from,
                ],
            )
            .await?;
        Ok(updated == 1)
    }

    /// Protects a snapshot from being forgotten, or lifts that. Returns
    /// whether the row changed (false: it already was so).
    ///
    /// # Errors
    /// An unknown snapshot, one that is expired or failed (nothing left to
    /// keep), or a failing query.
    pub async fn set_protected(
        &self,
        tenant: &Name,
        id: &SnapshotId,
        protected: bool,
    ) -> Result<bool> {
        let row = self.snapshot(tenant, id).await?;
        if protected && matches!(row.status, SnapshotStatus::Expired | SnapshotStatus::Failed) {
            return Err(Error::Conflict(format!(
                "snapshot {tenant}/{id} is {}: there is nothing to protect",
                row.status
            )));
        }
        let updated = self
            .client()
            .await?
            .execute(
                "UPDATE snapshots SET protected = $3
                 WHERE tenant = $1 AND id = $2 AND protected <> $3",
                &[&tenant.as_str(), &id.as_str(), &protected],
            )
            .await?;
        Ok(updated == 1)
    }
}
