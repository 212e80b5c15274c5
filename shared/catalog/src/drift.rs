//! What `vaultline catalog check` compares with the repository, and the
//! one repair it makes: a pack the repository no longer has (or holds
//! damaged) loses its chunk rows and its row, so that no backup dedups
//! against it again and the next one stores that data anew.

use crate::{Catalog, Error, Result};
use vaultline_types::{Name, PackId};

impl Catalog {
    /// The packs of `tenant` whose id starts with the byte `first`, with
    /// their sizes, in id order: the same 1/256 share of packs that one
    /// directory `packs/<hh>/` of the repository holds.
    ///
    /// # Errors
    /// When the query fails.
    pub async fn packs_starting_with(
        &self,
        tenant: &Name,
        first: u8,
    ) -> Result<Vec<(PackId, u64)>> {
        let low = vec![first];
        let high = first.checked_add(1).map(|next| vec![next]);
        let rows = self
            .client()
            .await?
            .query(
                "SELECT id, size FROM packs WHERE tenant = $1 AND id >= $2
                   AND ($3::bytea IS NULL OR id < $3) ORDER BY id",
                &[&tenant.as_str(), &low, &high],
            )
            .await?;
        rows.into_iter()
            .map(|r| {
                let id: Vec<u8> = r.get(0);
                let id: [u8; 32] = id
                    .try_into()
                    .map_err(|_| Error::Conflict("catalog pack id is not 32 bytes".into()))?;
                Ok((PackId(id), r.get::<_, i64>(1) as u64))
            })
            .collect()
    }

    /// How many chunk rows point into `pack`.
    ///
    /// # Errors
    /// When the query fails.
    pub async fn chunk_rows_in(&self, tenant: &Name, pack: &PackId) -> Result<i64> {
        Ok(self
            .client()
            .await?
            .query_one(
                "SELECT count(*) FROM chunks WHERE tenant = $1 AND pack = $2",
                &[&tenant.as_str(), &pack.0.as_slice()],
            )
            .await?
            .get(0))
    }

    /// Forgets a pack the repository lost: its chunk rows, then its row, in
    /// one transaction. The snapshots that reference it keep their
    /// `snapshot_packs` rows: they name what they lost. Returns the chunk
    /// rows removed.
    ///
    /// # Errors
    /// When the transaction fails.
    pub async fn forget_lost_pack(&self, tenant: &Name, pack: &PackId) -> Result<u64> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let (t, p) = (tenant.as_str(), pack.0.as_slice());
        let chunks = tx
            .execute(
                "DELETE FROM chunks WHERE tenant = $1 AND pack = $2",
                &[&t, &p],
            )
            .await?;
        tx.execute("DELETE FROM packs WHERE tenant = $1 AND id = $2", &[&t, &p])
            .await?;
        tx.commit().await?;
        Ok(chunks)
    }
}
