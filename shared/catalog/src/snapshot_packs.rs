//! The packs a snapshot references, as the verifier and the uploader ask
//! about them: their sizes, and when their digests were last read back.

use crate::{Catalog, Error, Result};
use vaultline_types::{Name, PackId, SnapshotId};

/// A pack a snapshot references, as the verifier sees it.
#[derive(Debug, Clone, Copy)]
pub struct SnapshotPack {
    pub id: PackId,
    pub size: u64,
    /// Read back and found matching within the window asked for.
    pub hashed_recently: bool,
}

impl Catalog {
    /// Bytes of the packs an attempt of a snapshot stored (its new data).
    ///
    /// # Errors
    /// When the query fails.
    pub async fn attempt_pack_bytes(
        &self,
        tenant: &Name,
        id: &SnapshotId,
        attempt: u32,
    ) -> Result<u64> {
        let r = self
            .client()
            .await?
            .query_one(
                "SELECT coalesce(sum(p.size), 0)::bigint FROM snapshot_batches b
                 JOIN packs p ON p.tenant = b.tenant AND p.id = b.pack
                 WHERE b.tenant = $1 AND b.snapshot = $2 AND b.attempt = $3",
                &[&tenant.as_str(), &id.as_str(), &(attempt as i32)],
            )
            .await?;
        Ok(r.get::<_, i64>(0) as u64)
    }

    /// Packs a snapshot references, with their sizes.
    ///
    /// # Errors
    /// When the query fails.
    pub async fn snapshot_packs(
        &self,
        tenant: &Name,
        id: &SnapshotId,
    ) -> Result<Vec<(PackId, u64)>> {
        Ok(self
            .packs_to_verify(tenant, id, std::time::Duration::ZERO)
            .await?
            .into_iter()
            .map(|p| (p.id, p.size))
            .collect())
    }

    /// Packs a snapshot references, with their sizes and whether the
    /// verifier found their digest matching less than `hashed_within` ago.
    ///
    /// # Errors
    /// When the query fails.
    pub async fn packs_to_verify(
        &self,
        tenant: &Name,
        id: &SnapshotId,
        hashed_within: std::time::Duration,
    ) -> Result<Vec<SnapshotPack>> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT p.id, p.size, coalesce(p.hashed_at > now() - make_interval(secs => $3), false)
                 FROM snapshot_packs sp JOIN packs p ON p.tenant = sp.tenant AND p.id = sp.pack
                 WHERE sp.tenant = $1 AND sp.snapshot = $2 ORDER BY p.id",
                &[
                    &tenant.as_str(),
                    &id.as_str(),
                    &hashed_within.as_secs_f64(),
                ],
            )
            .await?;
        rows.iter()
            .map(|r| {
                let id: Vec<u8> = r.get(0);
                let id = PackId(
                    id.try_into()
                        .map_err(|_| Error::Conflict("pack id is not 32 bytes".into()))?,
                );
                Ok(SnapshotPack {
                    id,
                    size: r.get::<_, i64>(1) as u64,
                    hashed_recently: r.get(2),
                })
            })
            .collect()
    }

    /// Records that the verifier read these packs back and found their
    /// digests matching, now.
    ///
    /// # Errors
    /// When the update fails.
    pub async fn mark_packs_hashed(&self, tenant: &Name, packs: &[PackId]) -> Result<()> {
        if packs.is_empty() {
            return Ok(());
        }
        let ids: Vec<&[u8]> = packs.iter().map(|p| p.0.as_slice()).collect();
        self.client()
            .await?
            .execute(
                "UPDATE packs SET hashed_at = now() WHERE tenant = $1 AND id = ANY($2)",
                &[&tenant.as_str(), &ids],
            )
            .await?;
        Ok(())
    }
}
