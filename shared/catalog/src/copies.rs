//! What each copy of the repository holds: per snapshot pending, stored or
//! verified, and every object put there (so nothing is moved twice).

use crate::{Catalog, Result};
use std::collections::HashMap;
use time::OffsetDateTime;
use vaultline_types::{Name, PackId, SnapshotId};

/// A snapshot a copy still lacks, with what the copier needs to copy it.
#[derive(Debug, Clone)]
pub struct CopyDue {
    pub tenant: Name,
    pub snapshot: SnapshotId,
    pub source: Name,
    pub key_id: String,
    /// SHA-256 (hex) of the manifest in the primary.
    pub manifest_digest: String,
    pub stored_at: OffsetDateTime,
}

/// The state of one snapshot in one copy.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CopyState {
    pub target: String,
    /// `pending`, `stored` or `verified`.
    pub status: String,
    pub attempts: i32,
    pub error: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub verified_at: Option<OffsetDateTime>,
}

/// An object a copy holds, as the copier put it there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopiedObject {
    pub sha256: [u8; 32],
    pub size: u64,
    /// Read back from the copy and found matching.
    pub verified: bool,
}

/// How far a copy is behind the primary.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CopyLag {
    /// Snapshots stored in the primary and not yet verified in the copy.
    pub snapshots: i64,
    /// Seconds since the oldest of them was stored in the primary (0: none).
    pub seconds: f64,
}

/// The primary's snapshots that need a copy: stored there (verified or not
/// yet) and neither failed nor forgotten. Others are never copied.
const COPYABLE: &str = "s.status IN ('stored', 'verified') AND s.manifest_digest IS NOT NULL";

impl Catalog {
    /// Snapshots `target` has not verified yet, oldest first, at most `limit`.
    ///
    /// # Errors
    /// When the query fails.
    pub async fn copies_due(&self, target: &str, limit: i64) -> Result<Vec<CopyDue>> {
        let rows = self
            .client()
            .await?
            .query(
                &format!(
                    "SELECT s.tenant, s.id, s.source, s.key_id, s.manifest_digest, s.stored_at
                     FROM snapshots s
                     LEFT JOIN snapshot_copies c
                       ON c.tenant = s.tenant AND c.snapshot = s.id AND c.target = $1
                     WHERE {COPYABLE} AND (c.status IS NULL OR c.status <> 'verified')
                     ORDER BY s.stored_at, s.id LIMIT $2"
                ),
                &[&target, &limit],
            )
            .await?;
        rows.iter().map(due).collect()
    }

    /// One snapshot as the copier needs it, when it is copyable.
    ///
    /// # Errors
    /// When the query fails.
    pub async fn copy_due(&self, tenant: &Name, snapshot: &SnapshotId) -> Result<Option<CopyDue>> {
        let row = self
            .client()
            .await?
            .query_opt(
                &format!(
                    "SELECT s.tenant, s.id, s.source, s.key_id, s.manifest_digest, s.stored_at
                     FROM snapshots s WHERE s.tenant = $1 AND s.id = $2 AND {COPYABLE}"
                ),
                &[&tenant.as_str(), &snapshot.as_str()],
            )
            .await?;
        row.as_ref().map(due).transpose()
    }

    /// How far `target` is behind.
    ///
    /// # Errors
    /// When the query fails.
    pub async fn copy_lag(&self, target: &str) -> Result<CopyLag> {
        let row = self
            .client()
            .await?
            .query_one(
                &format!(
                    "SELECT count(*), coalesce(extract(epoch FROM now() - min(s.stored_at)), 0)::float8
                     FROM snapshots s
                     LEFT JOIN snapshot_copies c
                       ON c.tenant = s.tenant AND c.snapshot = s.id AND c.target = $1
                     WHERE {COPYABLE} AND (c.status IS NULL OR c.status <> 'verified')"
                ),
                &[&target],
            )
            .await?;
        Ok(CopyLag {
            snapshots: row.get(0),
            seconds: row.get::<_, f64>(1).max(0.0),
        })
    }

    /// The packs of a snapshot with their sizes.
    ///
    /// # Errors
    /// When the query fails.
    pub async fn packs_of(
        &self,
        tenant: &Name,
        snapshot: &SnapshotId,
    ) -> Result<Vec<(PackId, u64)>> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT p.id, p.size FROM snapshot_packs sp
                 JOIN packs p ON p.tenant = sp.tenant AND p.id = sp.pack
                 WHERE sp.tenant = $1 AND sp.snapshot = $2 ORDER BY p.id",
                &[&tenant.as_str(), &snapshot.as_str()],
            )
            .await?;
        rows.iter()
            .map(|r| {
                let id: Vec<u8> = r.get(0);
                let id = id
                    .try_into()
                    .map_err(|_| crate::Error::Conflict("pack id is not 32 bytes".into()))?;
                Ok((PackId(id), r.get::<_, i64>(1) as u64))
            })
            .collect()
    }

    /// Of `keys`, those `target` holds, each with the digest and size it
    /// was copied with and whether it was read back since.
    ///
    /// # Errors
    /// When the query fails.
    pub async fn copied_objects(
        &self,
        target: &str,
        keys: &[String],
    ) -> Result<HashMap<String, CopiedObject>> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT key, sha256, size, verified_at IS NOT NULL FROM copied_objects
                 WHERE target = $1 AND key = ANY($2)",
                &[&target, &keys],
            )
            .await?;
        rows.iter()
            .map(|r| {
                let sha256: Vec<u8> = r.get(1);
                let sha256 = sha256.try_into().map_err(|_| {
                    crate::Error::Conflict("copied object digest is not 32 bytes".into())
                })?;
                Ok((
                    r.get(0),
                    CopiedObject {
                        sha256,
                        size: r.get::<_, i64>(2) as u64,
                        verified: r.get(3),
                    },
                ))
            })
            .collect()
    }

    /// Records an object put into `target` (not yet read back).
    ///
    /// # Errors
    /// When the query fails.
    pub async fn record_copied_object(
        &self,
        target: &str,
        key: &str,
        size: u64,
        sha256: &[u8; 32],
    ) -> Result<()> {
        self.client()
            .await?
            .execute(
                "INSERT INTO copied_objects (target, key, size, sha256) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (target, key) DO NOTHING",
                &[&target, &key, &(size as i64), &sha256.as_slice()],
            )
            .await?;
        Ok(())
    }

    /// Marks `target`'s object read back and matching.
    ///
    /// # Errors
    /// When the query fails.
    pub async fn mark_copied_object_verified(&self, target: &str, key: &str) -> Result<()> {
        self.client()
            .await?
            .execute(
                "UPDATE copied_objects SET verified_at = now() WHERE target = $1 AND key = $2",
                &[&target, &key],
            )
            .await?;
        Ok(())
    }

    /// Forgets that `target` holds `key` (it was found missing or damaged
    /// there, so the next copy puts it again).
    ///
    /// # Errors
    /// When the query fails.
    pub async fn forget_copied_object(&self, target: &str, key: &str) -> Result<()> {
        self.client()
            .await?
            .execute(
                "DELETE FROM copied_objects WHERE target = $1 AND key = $2",
                &[&target, &key],
            )
            .await?;
        Ok(())
    }

    /// Records an attempt at copying a snapshot that did not get through.
    ///
    /// # Errors
    /// When the query fails.
    pub async fn copy_failed(
        &self,
        tenant: &Name,
        snapshot: &SnapshotId,
        target: &str,
        error: &str,
    ) -> Result<()> {
        self.client()
            .await?
            .execute(
                "INSERT INTO snapshot_copies (tenant, snapshot, target, status, attempts, error)
                 VALUES ($1, $2, $3, 'pending', 1, $4)
                 ON CONFLICT (tenant, snapshot, target) DO UPDATE
                 SET attempts = snapshot_copies.attempts + 1, error = $4, last_tried = now()
                 WHERE snapshot_copies.status <> 'verified'",
                &[&tenant.as_str(), &snapshot.as_str(), &target, &error],
            )
            .await?;
        Ok(())
    }

    /// Records a snapshot's copy in `target`: `stored` once every object is
    /// there, `verified` once every one was read back matching.
    ///
    /// # Errors
    /// When the query fails.
    pub async fn copy_reached(
        &self,
        tenant: &Name,
        snapshot: &SnapshotId,
        target: &str,
        verified: bool,
        objects_moved: u32,
        bytes_moved: u64,
    ) -> Result<()> {
        let status = if verified { "verified" } else { "stored" };
        self.client()
            .await?
            .execute(
                "INSERT INTO snapshot_copies
                   (tenant, snapshot, target, status, attempts, stored_at, verified_at, objects_moved, bytes_moved)
                 VALUES ($1, $2, $3, $4, 1, now(), CASE WHEN $5 THEN now() END, $6, $7)
                 ON CONFLICT (tenant, snapshot, target) DO UPDATE
                 SET status = $4, error = NULL, last_tried = now(),
                     attempts = snapshot_copies.attempts + CASE WHEN $5 THEN 0 ELSE 1 END,
                     stored_at = coalesce(snapshot_copies.stored_at, now()),
                     verified_at = CASE WHEN $5 THEN now() END,
                     objects_moved = snapshot_copies.objects_moved + $6,
                     bytes_moved = snapshot_copies.bytes_moved + $7
                 WHERE snapshot_copies.status <> 'verified'",
                &[
                    &tenant.as_str(),
                    &snapshot.as_str(),
                    &target,
                    &status,
                    &verified,
                    &(objects_moved as i32),
                    &(bytes_moved as i64),
                ],
            )
            .await?;
        Ok(())
    }

    /// Every copy's state of each of `snapshots` of a tenant, by snapshot.
    ///
    /// # Errors
    /// When the query fails.
    pub async fn copy_states(
        &self,
        tenant: &Name,
        snapshots: &[SnapshotId],
    ) -> Result<HashMap<SnapshotId, Vec<CopyState>>> {
        let ids: Vec<&str> = snapshots.iter().map(SnapshotId::as_str).collect();
        let rows = self
            .client()
            .await?
            .query(
                "SELECT snapshot, target, status, attempts, error, verified_at FROM snapshot_copies
                 WHERE tenant = $1 AND snapshot = ANY($2) ORDER BY target",
                &[&tenant.as_str(), &ids],
            )
            .await?;
        let mut states: HashMap<SnapshotId, Vec<CopyState>> = HashMap::new();
        for r in rows {
            let Ok(id) = SnapshotId::parse(r.get::<_, &str>(0)) else {
                continue;
            };
            states.entry(id).or_default().push(CopyState {
                target: r.get(1),
                status: r.get(2),
                attempts: r.get(3),
                error: r.get(4),
                verified_at: r.get(5),
            });
        }
        Ok(states)
    }
}

fn due(r: &tokio_postgres::Row) -> Result<CopyDue> {
    let bad = |e: &dyn std::fmt::Display| crate::Error::NotFound(format!("snapshot row: {e}"));
    Ok(CopyDue {
        tenant: Name::new(r.get::<_, String>(0)).map_err(|e| bad(&e))?,
        snapshot: SnapshotId::parse(r.get::<_, &str>(1)).map_err(|e| bad(&e))?,
        source: Name::new(r.get::<_, String>(2)).map_err(|e| bad(&e))?,
        key_id: r.get(3),
        manifest_digest: r.get(4),
        stored_at: r.get(5),
    })
}
