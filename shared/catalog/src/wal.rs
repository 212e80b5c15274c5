//! Point-in-time recovery's records: where each base backup sits in the
//! WAL, and every WAL file `vaultline wal-push` stored.

use crate::{Catalog, Error, Result};
use time::OffsetDateTime;
use vaultline_types::{Name, SnapshotId};

/// A base backup of a physical source. Only stored or verified snapshots
/// are listed (a base still in the pipeline, failed or expired is none).
#[derive(Debug, Clone, serde::Serialize)]
pub struct BaseBackupRow {
    pub snapshot: String,
    pub status: String,
    pub timeline: i32,
    pub start_lsn: i64,
    pub end_lsn: i64,
    pub segment_size: i64,
    pub next_xid: i64,
    pub server_version: i32,
    #[serde(with = "time::serde::rfc3339")]
    pub finished_at: OffsetDateTime,
}

/// An archived WAL file.
#[derive(Debug, Clone, serde::Serialize)]
pub struct WalFileRow {
    pub name: String,
    pub timeline: i32,
    pub segment: Option<i64>,
    pub plain_size: i64,
    #[serde(skip)]
    pub plain_sha256: Vec<u8>,
    pub object: String,
    pub stored_size: i64,
    #[serde(skip)]
    pub stored_sha256: Vec<u8>,
    pub key_id: String,
    #[serde(with = "time::serde::rfc3339")]
    pub closed_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub stored_at: OffsetDateTime,
}

/// What `wal-push` records for a file it stored.
#[derive(Debug, Clone)]
pub struct WalPush {
    pub name: String,
    pub timeline: i32,
    pub segment: Option<i64>,
    pub plain_size: i64,
    pub plain_sha256: [u8; 32],
    pub object: String,
    pub stored_size: i64,
    pub stored_sha256: [u8; 32],
    pub key_id: String,
    pub closed_at: OffsetDateTime,
}

/// A source's archived WAL, for the observer's metrics.
#[derive(Debug, Clone)]
pub struct WalStats {
    pub tenant: String,
    pub source: String,
    /// When PostgreSQL closed the newest archived segment.
    pub last_closed_at: OffsetDateTime,
    /// Seconds from that segment's close to its storage.
    pub last_lag_seconds: f64,
    /// Runs of missing segments between archived ones.
    pub gaps: i64,
    pub stored_bytes: i64,
}

const WAL_COLUMNS: &str = "name, timeline, segment, plain_size, plain_sha256, object, stored_size, stored_sha256, key_id, closed_at, stored_at";

fn wal_row(r: &tokio_postgres::Row) -> WalFileRow {
    WalFileRow {
        name: r.get(0),
        timeline: r.get(1),
        segment: r.get(2),
        plain_size: r.get(3),
        plain_sha256: r.get(4),
        object: r.get(5),
        stored_size: r.get(6),
        stored_sha256: r.get(7),
        key_id: r.get(8),
        closed_at: r.get(9),
        stored_at: r.get(10),
    }
}

fn base_row(r: &tokio_postgres::Row) -> BaseBackupRow {
    BaseBackupRow {
        snapshot: r.get(0),
        status: r.get(1),
        timeline: r.get(2),
        start_lsn: r.get(3),
        end_lsn: r.get(4),
        segment_size: r.get(5),
        next_xid: r.get(6),
        server_version: r.get(7),
        finished_at: r.get(8),
    }
}

impl Catalog {
    /// Records where `snapshot`'s base backup sits in the WAL (once: a
    /// retried extraction of the same snapshot records its own, newer run).
    ///
    /// # Errors
    /// When the insert fails.
    #[allow(clippy::too_many_arguments)]
    pub async fn record_base_backup(
        &self,
        tenant: &Name,
        source: &Name,
        snapshot: &SnapshotId,
        timeline: i32,
        start_lsn: i64,
        end_lsn: i64,
        segment_size: i64,
        next_xid: i64,
        server_version: i32,
    ) -> Result<()> {
        self.client()
            .await?
            .execute(
                "INSERT INTO base_backups (tenant, snapshot, source, timeline, start_lsn, end_lsn,
                     segment_size, next_xid, server_version, finished_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, now())
                 ON CONFLICT (tenant, snapshot) DO UPDATE SET
                     timeline = EXCLUDED.timeline, start_lsn = EXCLUDED.start_lsn,
                     end_lsn = EXCLUDED.end_lsn, segment_size = EXCLUDED.segment_size,
                     next_xid = EXCLUDED.next_xid, server_version = EXCLUDED.server_version,
                     finished_at = EXCLUDED.finished_at",
                &[
                    &tenant.as_str(),
                    &snapshot.as_str(),
                    &source.as_str(),
                    &timeline,
                    &start_lsn,
                    &end_lsn,
                    &segment_size,
                    &next_xid,
                    &server_version,
                ],
            )
            .await?;
        Ok(())
    }

    /// The base backups of `tenant`'s `source` that are stored or verified,
    /// oldest first.
    ///
    /// # Errors
    /// When the query fails.
    pub async fn base_backups(&self, tenant: &Name, source: &Name) -> Result<Vec<BaseBackupRow>> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT b.snapshot, s.status, b.timeline, b.start_lsn, b.end_lsn, b.segment_size,
                        b.next_xid, b.server_version, b.finished_at
                 FROM base_backups b JOIN snapshots s ON s.tenant = b.tenant AND s.id = b.snapshot
                 WHERE b.tenant = $1 AND b.source = $2 AND s.status IN ('stored', 'verified')
                 ORDER BY b.finished_at, b.snapshot",
                &[&tenant.as_str(), &source.as_str()],
            )
            .await?;
        Ok(rows.iter().map(base_row).collect())
    }

    /// The archived file `name` of `tenant`'s `source`, if there is one.
    ///
    /// # Errors
    /// When the query fails.
    pub async fn wal_file(
        &self,
        tenant: &Name,
        source: &Name,
        name: &str,
    ) -> Result<Option<WalFileRow>> {
        let row = self
            .client()
            .await?
            .query_opt(
                &format!(
                    "SELECT {WAL_COLUMNS} FROM wal_files WHERE tenant = $1 AND source = $2 AND name = $3"
                ),
                &[&tenant.as_str(), &source.as_str(), &name],
            )
            .await?;
        Ok(row.as_ref().map(wal_row))
    }

    /// Every archived file of `tenant`'s `source`, in name order (which is
    /// timeline and WAL order).
    ///
    /// # Errors
    /// When the query fails.
    pub async fn wal_files(&self, tenant: &Name, source: &Name) -> Result<Vec<WalFileRow>> {
        let rows = self
            .client()
            .await?
            .query(
                &format!(
                    "SELECT {WAL_COLUMNS} FROM wal_files WHERE tenant = $1 AND source = $2 ORDER BY name"
                ),
                &[&tenant.as_str(), &source.as_str()],
            )
            .await?;
        Ok(rows.iter().map(wal_row).collect())
    }

    /// Records a stored WAL file. The first record of a name stands: if
    /// another push recorded it first, that row is returned instead, and
    /// the caller compares its digest.
    ///
    /// # Errors
    /// When the insert fails.
    pub async fn record_wal_file(
        &self,
        tenant: &Name,
        source: &Name,
        push: &WalPush,
    ) -> Result<WalFileRow> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO wal_files (tenant, source, name, timeline, segment, plain_size,
                     plain_sha256, object, stored_size, stored_sha256, key_id, closed_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
                 ON CONFLICT (tenant, source, name) DO NOTHING",
                &[
                    &tenant.as_str(),
                    &source.as_str(),
                    &push.name,
                    &push.timeline,
                    &push.segment,
                    &push.plain_size,
                    &push.plain_sha256.as_slice(),
                    &push.object,
                    &push.stored_size,
                    &push.stored_sha256.as_slice(),
                    &push.key_id,
                    &push.closed_at,
                ],
            )
            .await?;
        self.wal_file(tenant, source, &push.name)
            .await?
            .ok_or_else(|| Error::NotFound(format!("WAL file {} just recorded", push.name)))
    }

    /// The archived files of `tenant`'s `source` that come before the
    /// segment `cut` (a 24-digit segment name: timeline, then position),
    /// history files aside: what no base backup from `cut` on needs.
    ///
    /// # Errors
    /// When the query fails.
    pub async fn wal_files_before(
        &self,
        tenant: &Name,
        source: &Name,
        cut: &str,
    ) -> Result<Vec<WalFileRow>> {
        let rows = self
            .client()
            .await?
            .query(
                &format!(
                    "SELECT {WAL_COLUMNS} FROM wal_files
                     WHERE tenant = $1 AND source = $2 AND left(name, 24) < $3
                       AND name NOT LIKE '%.history'
                     ORDER BY name"
                ),
                &[&tenant.as_str(), &source.as_str(), &cut],
            )
            .await?;
        Ok(rows.iter().map(wal_row).collect())
    }

    /// Forgets an archived file whose object is deleted.
    ///
    /// # Errors
    /// When the delete fails.
    pub async fn forget_wal_file(&self, tenant: &Name, source: &Name, name: &str) -> Result<()> {
        self.client()
            .await?
            .execute(
                "DELETE FROM wal_files WHERE tenant = $1 AND source = $2 AND name = $3",
                &[&tenant.as_str(), &source.as_str(), &name],
            )
            .await?;
        Ok(())
    }

    /// Per source with archived WAL: the newest segment, its lag, the gaps
    /// and the bytes stored. Full segments only count toward the newest
    /// and the gaps (a `.partial` or `.backup` file is no segment).
    ///
    /// # Errors
    /// When the query fails.
    pub async fn wal_stats(&self) -> Result<Vec<WalStats>> {
        let rows = self
            .client()
            .await?
            .query(
                "WITH segments AS (
                     SELECT tenant, source, closed_at, stored_at,
                            segment - lag(segment) OVER (PARTITION BY tenant, source, timeline ORDER BY segment) AS step,
                            row_number() OVER (PARTITION BY tenant, source ORDER BY timeline DESC, segment DESC) AS newest
                     FROM wal_files
                     WHERE segment IS NOT NULL AND name NOT LIKE '%.partial'
                 )
                 SELECT s.tenant, s.source, s.closed_at,
                        extract(epoch FROM s.stored_at - s.closed_at)::float8,
                        (SELECT count(*) FROM segments g
                          WHERE g.tenant = s.tenant AND g.source = s.source AND g.step > 1),
                        (SELECT coalesce(sum(stored_size), 0)::bigint FROM wal_files w
                          WHERE w.tenant = s.tenant AND w.source = s.source)
                 FROM segments s WHERE s.newest = 1
                 ORDER BY s.tenant, s.source",
                &[],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| WalStats {
                tenant: r.get(0),
                source: r.get(1),
                last_closed_at: r.get(2),
                last_lag_seconds: r.get(3),
                gaps: r.get(4),
                stored_bytes: r.get(5),
            })
            .collect())
    }

    /// The config of `tenant`'s `source`, read with only the columns the
    /// archiver may see.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown source, [`Error::Conflict`] for a
    /// config that does not parse.
    pub async fn archived_source(
        &self,
        tenant: &Name,
        source: &Name,
    ) -> Result<vaultline_types::SourceConfig> {
        let row = self
            .client()
            .await?
            .query_opt(
                "SELECT kind, config FROM sources WHERE tenant = $1 AND name = $2",
                &[&tenant.as_str(), &source.as_str()],
            )
            .await?
            .ok_or_else(|| Error::NotFound(format!("unknown source {tenant}/{source}")))?;
        let kind: String = row.get(0);
        vaultline_types::SourceConfig::from_parts(&kind, row.get(1))
            .map_err(|e| Error::Conflict(format!("source {tenant}/{source}: {e}")))
    }

    /// The active key's id and recipient of `tenant`: what the archiver
    /// may read of `tenant_keys`.
    ///
    /// # Errors
    /// [`Error::NotFound`] when the tenant has no active key.
    pub async fn active_recipient(&self, tenant: &Name) -> Result<(String, String)> {
        let row = self
            .client()
            .await?
            .query_opt(
                "SELECT key_id, recipient FROM tenant_keys WHERE tenant = $1 AND active",
                &[&tenant.as_str()],
            )
            .await?
            .ok_or_else(|| Error::NotFound(format!("an active key of tenant {tenant}")))?;
        Ok((row.get(0), row.get(1)))
    }
}
