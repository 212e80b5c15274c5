//! The chunk index: which chunks a tenant already stored, and where.

use crate::{Catalog, Error, Result};
use std::collections::{HashMap, HashSet};
use vaultline_types::{ChunkId, Name, PackId, SnapshotId};

/// A chunk's location, as recorded when its pack was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkLocation {
    pub pack: PackId,
    pub offset: u64,
    pub length: u32,
    pub raw_length: u32,
}

/// A chunk of a pack being recorded.
#[derive(Debug, Clone, Copy)]
pub struct StoredChunk {
    pub id: ChunkId,
    pub offset: u64,
    pub length: u32,
    pub raw_length: u32,
}

/// One extraction batch of a snapshot: the unit that becomes one pack.
#[derive(Debug, Clone, Copy)]
pub struct BatchKey<'a> {
    pub snapshot: &'a SnapshotId,
    /// Extraction attempt the batch belongs to.
    pub attempt: u32,
    pub batch: u32,
}

fn bytes32(v: Vec<u8>) -> Result<[u8; 32]> {
    v.try_into()
        .map_err(|_| Error::Conflict("catalog id is not 32 bytes".into()))
}

impl Catalog {
    /// Whether a batch of an attempt already has a stored pack.
    ///
    /// # Errors
    /// When the query fails.
    pub async fn batch_stored(&self, tenant: &Name, key: BatchKey<'_>) -> Result<bool> {
        let BatchKey {
            snapshot,
            attempt,
            batch,
        } = key;
        Ok(self
            .client()
            .await?
            .query_opt(
                "SELECT 1 FROM snapshot_batches WHERE tenant = $1 AND snapshot = $2 AND attempt = $3 AND batch = $4",
                &[&tenant.as_str(), &snapshot.as_str(), &(attempt as i32), &(batch as i32)],
            )
            .await?
            .is_some())
    }

    /// Sizes of stored packs.
    ///
    /// # Errors
    /// When the query fails.
    pub async fn pack_sizes(
        &self,
        tenant: &Name,
        packs: &[PackId],
    ) -> Result<HashMap<PackId, u64>> {
        let ids: Vec<&[u8]> = packs.iter().map(|p| p.0.as_slice()).collect();
        let rows = self
            .client()
            .await?
            .query(
                "SELECT id, size FROM packs WHERE tenant = $1 AND id = ANY($2)",
                &[&tenant.as_str(), &ids],
            )
            .await?;
        rows.into_iter()
            .map(|r| Ok((PackId(bytes32(r.get(0))?), r.get::<_, i64>(1) as u64)))
            .collect()
    }

    /// Which of `ids` the tenant already has stored (the dedup lookup).
    ///
    /// The packs found are share-locked and condemned ones revived, in one
    /// transaction: a chunk reported here cannot be swept by garbage
    /// collection before its snapshot is finalized (see `gc`).
    ///
    /// # Errors
    /// When the query fails.
    pub async fn existing_chunks(
        &self,
        tenant: &Name,
        ids: &[ChunkId],
    ) -> Result<HashSet<ChunkId>> {
        let ids: Vec<&[u8]> = ids.iter().map(|id| id.0.as_slice()).collect();
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // FOR SHARE waits for a sweep holding the pack and then skips it if
        // the sweep doomed it (READ COMMITTED rechecks `NOT deleting`).
        let rows = tx
            .query(
                "SELECT c.id, p.id, p.condemned_at IS NOT NULL FROM chunks c
                 JOIN packs p ON p.tenant = c.tenant AND p.id = c.pack
                 WHERE c.tenant = $1 AND c.id = ANY($2) AND NOT p.deleting
                 FOR SHARE OF p",
                &[&tenant.as_str(), &ids],
            )
            .await?;
        let condemned: HashSet<Vec<u8>> = rows
            .iter()
            .filter(|r| r.get::<_, bool>(2))
            .map(|r| r.get(1))
            .collect();
        if !condemned.is_empty() {
            let condemned: Vec<Vec<u8>> = condemned.into_iter().collect();
            tx.execute(
                "UPDATE packs SET condemned_at = NULL WHERE tenant = $1 AND id = ANY($2)",
                &[&tenant.as_str(), &condemned],
            )
            .await?;
        }
        tx.commit().await?;
        rows.into_iter()
            .map(|r| Ok(ChunkId(bytes32(r.get(0))?)))
            .collect()
    }

    /// Locations of `ids`; chunks not stored are absent from the map.
    ///
    /// # Errors
    /// When the query fails.
    pub async fn chunk_locations(
        &self,
        tenant: &Name,
        ids: &[ChunkId],
    ) -> Result<HashMap<ChunkId, ChunkLocation>> {
        let ids: Vec<&[u8]> = ids.iter().map(|id| id.0.as_slice()).collect();
        let rows = self
            .client()
            .await?
            .query(
                "SELECT id, pack, pack_offset, length, raw_length FROM chunks WHERE tenant = $1 AND id = ANY($2)",
                &[&tenant.as_str(), &ids],
            )
            .await?;
        rows.into_iter()
            .map(|r| {
                Ok((
                    ChunkId(bytes32(r.get(0))?),
                    ChunkLocation {
                        pack: PackId(bytes32(r.get(1))?),
                        offset: r.get::<_, i64>(2) as u64,
                        length: r.get::<_, i32>(3) as u32,
                        raw_length: r.get::<_, i32>(4) as u32,
                    },
                ))
            })
            .collect()
    }

    /// Records a stored pack, its chunks and the batch it came from, in one
    /// transaction. Idempotent: a chunk already indexed keeps its first
    /// location; a batch already recorded keeps its first pack.
    ///
    /// # Errors
    /// When the transaction fails.
    pub async fn record_pack(
        &self,
        tenant: &Name,
        key: BatchKey<'_>,
        pack: &PackId,
        size: u64,
        chunks: &[StoredChunk],
        locked_until: Option<time::OffsetDateTime>,
    ) -> Result<()> {
        let BatchKey {
            snapshot,
            attempt,
            batch,
        } = key;
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let t = tenant.as_str();
        let p = pack.0.as_slice();
        tx.execute(
            "INSERT INTO packs (tenant, id, size, blobs, locked_until) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT DO NOTHING",
            &[
                &t,
                &p,
                &(size as i64),
                &(chunks.len() as i32),
                &locked_until,
            ],
        )
        .await?;
        insert_chunks(&tx, tenant, pack, chunks).await?;
        tx.execute(
            "INSERT INTO snapshot_batches (tenant, snapshot, attempt, batch, pack) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT DO NOTHING",
            &[&t, &snapshot.as_str(), &(attempt as i32), &(batch as i32), &p],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }
}

/// Indexes `chunks` as stored in `pack`; a chunk already indexed keeps its
/// first location.
pub(crate) async fn insert_chunks(
    tx: &deadpool_postgres::Transaction<'_>,
    tenant: &Name,
    pack: &PackId,
    chunks: &[StoredChunk],
) -> Result<()> {
    let ids: Vec<&[u8]> = chunks.iter().map(|c| c.id.0.as_slice()).collect();
    let offsets: Vec<i64> = chunks.iter().map(|c| c.offset as i64).collect();
    let lengths: Vec<i32> = chunks.iter().map(|c| c.length as i32).collect();
    let raw: Vec<i32> = chunks.iter().map(|c| c.raw_length as i32).collect();
    tx.execute(
        "INSERT INTO chunks (tenant, id, pack, pack_offset, length, raw_length)
         SELECT $1, u.id, $2, u.o, u.l, u.r FROM unnest($3::bytea[], $4::int8[], $5::int4[], $6::int4[]) AS u(id, o, l, r)
         ON CONFLICT DO NOTHING",
        &[&tenant.as_str(), &pack.0.as_slice(), &ids, &offsets, &lengths, &raw],
    )
    .await?;
    Ok(())
}
