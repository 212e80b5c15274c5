//! What the verifier's rolling integrity check asks: which stored packs
//! were read back longest ago, how many are overdue, and which snapshots
//! depend on a pack found damaged.

use crate::{Catalog, Error, Result};
use time::OffsetDateTime;
use vaultline_types::{Name, PackId, SnapshotId};

/// A live pack, with when it was last read back and found matching.
#[derive(Debug, Clone)]
pub struct DuePack {
    pub tenant: Name,
    pub id: PackId,
    pub size: u64,
    pub hashed_at: Option<OffsetDateTime>,
}

/// The state of the rolling check over every live pack.
#[derive(Debug, Clone, Copy)]
pub struct IntegrityState {
    pub packs: u64,
    pub bytes: u64,
    /// Never read back, or not within the window.
    pub overdue: u64,
    /// Never read back at all.
    pub never: u64,
    /// The oldest read-back time of the packs that have one.
    pub oldest: Option<OffsetDateTime>,
}

/// Packs GC has not condemned: what snapshots may still need.
const LIVE: &str = "condemned_at IS NULL AND NOT deleting";

impl Catalog {
    /// Up to `limit` live packs, those read back longest ago (or never) first.
    ///
    /// # Errors
    /// When the query fails.
    pub async fn packs_due(&self, limit: i64) -> Result<Vec<DuePack>> {
        let rows = self
            .client()
            .await?
            .query(
                &format!(
                    "SELECT tenant, id, size, hashed_at FROM packs WHERE {LIVE}
                     ORDER BY hashed_at NULLS FIRST, tenant, id LIMIT $1"
                ),
                &[&limit],
            )
            .await?;
        rows.iter()
            .map(|r| {
                let id: Vec<u8> = r.get(1);
                Ok(DuePack {
                    tenant: Name::new(r.get::<_, String>(0))
                        .map_err(|e| Error::Conflict(e.to_string()))?,
                    id: PackId(
                        id.try_into()
                            .map_err(|_| Error::Conflict("pack id is not 32 bytes".into()))?,
                    ),
                    size: r.get::<_, i64>(2) as u64,
                    hashed_at: r.get(3),
                })
            })
            .collect()
    }

    /// Counts over every live pack; `window` is `rehash-after`.
    ///
    /// # Errors
    /// When the query fails.
    pub async fn integrity_state(&self, window: std::time::Duration) -> Result<IntegrityState> {
        let r = self
            .client()
            .await?
            .query_one(
                &format!(
                    "SELECT count(*), coalesce(sum(size), 0)::bigint,
                            count(*) FILTER (WHERE hashed_at IS NULL
                                OR hashed_at < now() - make_interval(secs => $1)),
                            count(*) FILTER (WHERE hashed_at IS NULL),
                            min(hashed_at)
                     FROM packs WHERE {LIVE}"
                ),
                &[&window.as_secs_f64()],
            )
            .await?;
        Ok(IntegrityState {
            packs: r.get::<_, i64>(0) as u64,
            bytes: r.get::<_, i64>(1) as u64,
            overdue: r.get::<_, i64>(2) as u64,
            never: r.get::<_, i64>(3) as u64,
            oldest: r.get(4),
        })
    }

    /// Every snapshot whose manifest references `pack`, with its source
    /// (whatever its status: a damaged pack names them all).
    ///
    /// # Errors
    /// When the query fails.
    pub async fn snapshots_needing(
        &self,
        tenant: &Name,
        pack: &PackId,
    ) -> Result<Vec<(SnapshotId, Name)>> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT s.id, s.source FROM snapshot_packs sp
                 JOIN snapshots s ON s.tenant = sp.tenant AND s.id = sp.snapshot
                 WHERE sp.tenant = $1 AND sp.pack = $2
                 ORDER BY s.id",
                &[&tenant.as_str(), &pack.0.as_slice()],
            )
            .await?;
        rows.iter()
            .map(|r| {
                let bad = |e: vaultline_types::IdError| Error::Conflict(e.to_string());
                Ok((
                    SnapshotId::parse(r.get::<_, &str>(0)).map_err(bad)?,
                    Name::new(r.get::<_, String>(1)).map_err(bad)?,
                ))
            })
            .collect()
    }
}
