//! Garbage collection of packs, driven by the catalog alone (no bucket
//! listing) and in bounded batches (memory does not grow with the repository).
//!
//! A pack's life: live → condemned (no live snapshot references it; it can
//! still be revived) → deleting (its chunk rows are gone, so no backup can
//! dedup against it any more; the object is being deleted) → gone.
//!
//! Why a backup that reuses a chunk during GC never loses it:
//! - The dedup lookup ([`Catalog::existing_chunks`]) share-locks the packs it
//!   finds and revives condemned ones, so a lookup after condemnation keeps
//!   its pack; a lookup racing the sweep either waits for it and then does not
//!   find the chunk (so stages it anew) or revives the pack first.
//! - A lookup before condemnation is a reference the catalog cannot see until
//!   the snapshot is finalized, so the sweep leaves a tenant's condemned packs
//!   alone while any of its snapshots that started before the condemnation
//!   (plus [`CONDEMN_SLACK_SECONDS`]) is still in flight.
//! - At the sweep, a pack that a live snapshot references again is revived.

use crate::in_flight::IN_FLIGHT;
use crate::{Catalog, Result};
use std::time::Duration;
use vaultline_types::PackId;

/// Longest a condemnation transaction may run; a lookup that saw a pack
/// before it was condemned belongs to a snapshot that started before the
/// condemnation time plus this.
pub const CONDEMN_SLACK_SECONDS: i64 = 60;

/// Packs handled per sweep transaction.
pub const SWEEP_BATCH: i64 = 500;

/// Snapshot statuses whose packs are live.
const LIVE: &str = "s.status NOT IN ('expired', 'failed')";

/// Counts of what a GC pass would do or did.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GcPlan {
    /// Live packs no live snapshot references (condemned now).
    pub to_condemn: u64,
    pub to_condemn_bytes: u64,
    /// Condemned packs past the grace period (deleted now).
    pub to_delete: u64,
    pub to_delete_bytes: u64,
    /// Condemned packs held back by a snapshot in flight.
    pub held: u64,
    /// Packs still waiting for their grace period.
    pub waiting: u64,
    /// Up to 100 ids of the packs to delete, for people.
    pub sample: Vec<String>,
    /// Condemned packs past the grace period whose object lock has not
    /// expired: deferred until their date, never deleted before.
    pub locked: u64,
    pub locked_bytes: u64,
    /// Up to 100 of them, soonest free first, with the date each is locked until.
    pub locked_sample: Vec<LockedPack>,
}

/// A pack GC defers because its object lock still holds.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LockedPack {
    pub id: String,
    #[serde(with = "time::serde::rfc3339")]
    pub locked_until: time::OffsetDateTime,
}

/// A pack whose object lock still holds.
const LOCKED: &str = "(p.locked_until IS NOT NULL AND p.locked_until > now())";

/// A pack taken for deletion.
#[derive(Debug, Clone, Copy)]
pub struct DoomedPack {
    pub id: PackId,
    pub size: u64,
}

fn grace_secs(grace: Duration) -> f64 {
    grace.as_secs_f64()
}

fn unreferenced() -> String {
    format!(
        "NOT EXISTS (SELECT 1 FROM snapshot_packs sp JOIN snapshots s ON s.tenant = sp.tenant AND s.id = sp.snapshot
                     WHERE sp.tenant = p.tenant AND sp.pack = p.id AND {LIVE})
         AND NOT EXISTS (SELECT 1 FROM snapshot_batches b JOIN snapshots s ON s.tenant = b.tenant AND s.id = b.snapshot
                     WHERE b.tenant = p.tenant AND b.pack = p.id AND {IN_FLIGHT})"
    )
}

fn held_back() -> String {
    format!(
        "EXISTS (SELECT 1 FROM snapshots s WHERE s.tenant = p.tenant AND {IN_FLIGHT}
                   AND s.started_at < p.condemned_at + make_interval(secs => {CONDEMN_SLACK_SECONDS}))"
    )
}

impl Catalog {
    /// Tenants that have packs.
    ///
    /// # Errors
    /// When the query fails.
    pub async fn tenants_with_packs(&self) -> Result<Vec<String>> {
        let rows = self
            .client()
            .await?
            .query("SELECT DISTINCT tenant FROM packs ORDER BY tenant", &[])
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// What a GC pass of `tenant` would do now, changing nothing.
    ///
    /// # Errors
    /// When the query fails.
    pub async fn gc_plan(&self, tenant: &str, grace: Duration) -> Result<GcPlan> {
        let client = self.client().await?;
        let sql = format!(
            "SELECT
               count(*) FILTER (WHERE p.condemned_at IS NULL AND {unref}),
               coalesce(sum(p.size) FILTER (WHERE p.condemned_at IS NULL AND {unref}), 0)::bigint,
               count(*) FILTER (WHERE p.condemned_at < now() - make_interval(secs => $2) AND {unref} AND NOT {held} AND NOT {LOCKED}),
               coalesce(sum(p.size) FILTER (WHERE p.condemned_at < now() - make_interval(secs => $2) AND {unref} AND NOT {held} AND NOT {LOCKED}), 0)::bigint,
               count(*) FILTER (WHERE p.condemned_at < now() - make_interval(secs => $2) AND {unref} AND {held}),
               count(*) FILTER (WHERE p.condemned_at >= now() - make_interval(secs => $2)),
               count(*) FILTER (WHERE p.condemned_at < now() - make_interval(secs => $2) AND {unref} AND NOT {held} AND {LOCKED}),
               coalesce(sum(p.size) FILTER (WHERE p.condemned_at < now() - make_interval(secs => $2) AND {unref} AND NOT {held} AND {LOCKED}), 0)::bigint
             FROM packs p WHERE p.tenant = $1 AND NOT p.deleting",
            unref = unreferenced(),
            held = held_back()
        );
        let r = client
            .query_one(&sql, &[&tenant, &grace_secs(grace)])
            .await?;
        let sample_sql = format!(
            "SELECT p.id FROM packs p WHERE p.tenant = $1 AND NOT p.deleting
               AND p.condemned_at < now() - make_interval(secs => $2) AND {unref} AND NOT {held} AND NOT {LOCKED}
             ORDER BY p.condemned_at LIMIT 100",
            unref = unreferenced(),
            held = held_back()
        );
        let sample = client
            .query(&sample_sql, &[&tenant, &grace_secs(grace)])
            .await?
            .iter()
            .map(|r| hex::encode(r.get::<_, Vec<u8>>(0)))
            .collect();
        let locked_sql = format!(
            "SELECT p.id, p.locked_until FROM packs p WHERE p.tenant = $1 AND NOT p.deleting
               AND p.condemned_at < now() - make_interval(secs => $2) AND {unref} AND {LOCKED}
             ORDER BY p.locked_until LIMIT 100",
            unref = unreferenced(),
        );
        let locked_sample = client
            .query(&locked_sql, &[&tenant, &grace_secs(grace)])
            .await?
            .iter()
            .map(|r| LockedPack {
                id: hex::encode(r.get::<_, Vec<u8>>(0)),
                locked_until: r.get(1),
            })
            .collect();
        let n = |i: usize| r.get::<_, i64>(i) as u64;
        Ok(GcPlan {
            to_condemn: n(0),
            to_condemn_bytes: n(1),
            to_delete: n(2),
            to_delete_bytes: n(3),
            held: n(4),
            waiting: n(5),
            sample,
            locked: n(6),
            locked_bytes: n(7),
            locked_sample,
        })
    }

    /// Condemned packs past the grace period that their object lock keeps:
    /// what a pass deferred (the `locked` of [`GcPlan`], without the rest).
    ///
    /// # Errors
    /// When the query fails.
    pub async fn locked_condemned(&self, tenant: &str, grace: Duration) -> Result<u64> {
        let sql = format!(
            "SELECT count(*) FROM packs p WHERE p.tenant = $1 AND NOT p.deleting
               AND p.condemned_at < now() - make_interval(secs => $2) AND {LOCKED}
               AND {unref} AND NOT {held}",
            unref = unreferenced(),
            held = held_back()
        );
        let r = self
            .client()
            .await?
            .query_one(&sql, &[&tenant, &grace_secs(grace)])
            .await?;
        Ok(r.get::<_, i64>(0) as u64)
    }

    /// Phase 1: condemns the tenant's packs that no live snapshot references.
    /// Returns how many. One statement, bounded by a statement timeout.
    ///
    /// # Errors
    /// When the query fails.
    pub async fn condemn_unreferenced(&self, tenant: &str) -> Result<u64> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.batch_execute(&format!(
            "SET LOCAL statement_timeout = '{}s'",
            CONDEMN_SLACK_SECONDS / 2
        ))
        .await?;
        let sql = format!(
            "UPDATE packs p SET condemned_at = now()
             WHERE p.tenant = $1 AND p.condemned_at IS NULL AND NOT p.deleting AND {}",
            unreferenced()
        );
        let n = tx.execute(&sql, &[&tenant]).await?;
        tx.commit().await?;
        Ok(n)
    }

    /// Phase 2, first half: takes up to [`SWEEP_BATCH`] condemned packs past
    /// the grace period. Those a live snapshot references again are revived;
    /// the rest lose their chunk rows and are marked deleting, in one
    /// transaction. Returns (revived, marked deleting).
    ///
    /// # Errors
    /// When the transaction fails.
    pub async fn doom_condemned(&self, tenant: &str, grace: Duration) -> Result<(u64, u64)> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let sql = format!(
            "SELECT p.id FROM packs p
             WHERE p.tenant = $1 AND NOT p.deleting
               AND p.condemned_at < now() - make_interval(secs => $2) AND NOT {} AND NOT {LOCKED}
             ORDER BY p.condemned_at LIMIT $3 FOR UPDATE OF p SKIP LOCKED",
            held_back()
        );
        let taken: Vec<Vec<u8>> = tx
            .query(&sql, &[&tenant, &grace_secs(grace), &SWEEP_BATCH])
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        if taken.is_empty() {
            return Ok((0, 0));
        }
        let revive = format!(
            "UPDATE packs p SET condemned_at = NULL WHERE p.tenant = $1 AND p.id = ANY($2) AND NOT ({})",
            unreferenced()
        );
        let revived = tx.execute(&revive, &[&tenant, &taken]).await?;
        tx.execute(
            "DELETE FROM chunks WHERE tenant = $1 AND pack IN
               (SELECT id FROM packs WHERE tenant = $1 AND id = ANY($2) AND condemned_at IS NOT NULL)",
            &[&tenant, &taken],
        )
        .await?;
        let doomed = tx
            .execute(
                "UPDATE packs SET deleting = true WHERE tenant = $1 AND id = ANY($2) AND condemned_at IS NOT NULL",
                &[&tenant, &taken],
            )
            .await?;
        tx.commit().await?;
        Ok((revived, doomed))
    }

    /// Phase 2, second half: packs marked deleting (by this pass or one that
    /// crashed), up to [`SWEEP_BATCH`]. Delete their objects, then call
    /// [`Catalog::forget_packs`].
    ///
    /// # Errors
    /// When the query fails.
    pub async fn deleting_packs(&self, tenant: &str) -> Result<Vec<DoomedPack>> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT id, size FROM packs WHERE tenant = $1 AND deleting ORDER BY id LIMIT $2",
                &[&tenant, &SWEEP_BATCH],
            )
            .await?;
        rows.iter()
            .map(|r| {
                let id: Vec<u8> = r.get(0);
                Ok(DoomedPack {
                    id: PackId(
                        id.try_into().map_err(|_| {
                            crate::Error::Conflict("pack id is not 32 bytes".into())
                        })?,
                    ),
                    size: r.get::<_, i64>(1) as u64,
                })
            })
            .collect()
    }

    /// Removes the rows of packs whose objects are deleted.
    ///
    /// # Errors
    /// When the transaction fails.
    pub async fn forget_packs(&self, tenant: &str, packs: &[PackId]) -> Result<()> {
        let ids: Vec<&[u8]> = packs.iter().map(|p| p.0.as_slice()).collect();
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.execute(
            "DELETE FROM snapshot_packs WHERE tenant = $1 AND pack = ANY($2)",
            &[&tenant, &ids],
        )
        .await?;
        tx.execute(
            "DELETE FROM snapshot_batches WHERE tenant = $1 AND pack = ANY($2)",
            &[&tenant, &ids],
        )
        .await?;
        tx.execute(
            "DELETE FROM packs WHERE tenant = $1 AND id = ANY($2) AND deleting",
            &[&tenant, &ids],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }
}
