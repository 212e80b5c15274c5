//! What `vaultline catalog rebuild` writes: rows recovered from the
//! repository into an empty catalog. Every write is idempotent (a key, a
//! pack or a snapshot already there is left alone), so a rebuild that
//! stopped half way is simply run again.

use crate::chunks::StoredChunk;
use crate::{Catalog, Result};
use time::OffsetDateTime;
use vaultline_types::{Name, PackId, SnapshotId, SourceConfig};

/// A tenant key as its key record holds it, opened with the KEK.
pub struct RecoveredKey<'a> {
    pub tenant: &'a Name,
    pub key_id: &'a str,
    pub recipient: &'a str,
    /// Still wrapped by the KEK, exactly as the record holds it.
    pub wrapped_identity: &'a [u8],
    pub chunk_key: &'a [u8; 32],
    /// The key new snapshots use: the newest record's.
    pub active: bool,
    pub created: OffsetDateTime,
}

/// A snapshot as its manifest records it.
pub struct RecoveredSnapshot<'a> {
    pub tenant: &'a Name,
    pub id: &'a SnapshotId,
    pub source: &'a Name,
    pub key_id: &'a str,
    pub created: OffsetDateTime,
    /// File entries (what the extractor counts as files).
    pub files: u64,
    pub bytes_read: u64,
    pub source_digest: &'a str,
    /// SHA-256 of the manifest object, hex, and its size.
    pub manifest_digest: &'a str,
    pub manifest_size: u64,
    pub tables: Option<&'a serde_json::Value>,
    /// Every pack the footer names.
    pub packs: &'a [PackId],
    /// Why the snapshot cannot be restored (a pack missing or damaged):
    /// recorded `corrupt` with this error. `None`: `verified`.
    pub problem: Option<&'a str>,
}

impl Catalog {
    /// How many tenants the catalog holds: a rebuild fills only an empty one.
    ///
    /// # Errors
    /// When the query fails.
    pub async fn tenant_count(&self) -> Result<i64> {
        Ok(self
            .client()
            .await?
            .query_one("SELECT count(*) FROM tenants", &[])
            .await?
            .get(0))
    }

    /// Records a tenant (when new) and one of its keys.
    ///
    /// # Errors
    /// When the transaction fails (two active keys for one tenant among them).
    pub async fn recover_key(&self, key: &RecoveredKey<'_>) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let tenant = key.tenant.as_str();
        tx.execute(
            "INSERT INTO tenants (name, created_at) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[&tenant, &key.created],
        )
        .await?;
        tx.execute(
            "UPDATE tenants SET created_at = least(created_at, $2) WHERE name = $1",
            &[&tenant, &key.created],
        )
        .await?;
        tx.execute(
            "INSERT INTO tenant_keys (tenant, key_id, recipient, wrapped_identity, chunk_key, active, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
            &[
                &tenant,
                &key.key_id,
                &key.recipient,
                &key.wrapped_identity,
                &key.chunk_key.as_slice(),
                &key.active,
                &key.created,
            ],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records a source a manifest names. With its config (manifests since
    /// stop 27 record it) the newest manifest's config wins; without, the
    /// source gets an empty config, which any backup of it reports as
    /// unreadable until `source add` is run again, rather than guessing.
    ///
    /// # Errors
    /// When the query fails.
    pub async fn recover_source(
        &self,
        tenant: &Name,
        name: &Name,
        kind: &str,
        config: Option<&SourceConfig>,
    ) -> Result<()> {
        let client = self.client().await?;
        let (t, n) = (tenant.as_str(), name.as_str());
        match config {
            Some(config) => {
                let (kind, config) = config.to_parts();
                client
                    .execute(
                        "INSERT INTO sources (tenant, name, kind, config) VALUES ($1, $2, $3, $4)
                         ON CONFLICT (tenant, name) DO UPDATE SET kind = EXCLUDED.kind, config = EXCLUDED.config",
                        &[&t, &n, &kind, &config],
                    )
                    .await?;
            }
            None => {
                client
                    .execute(
                        "INSERT INTO sources (tenant, name, kind, config) VALUES ($1, $2, $3, '{}')
                         ON CONFLICT DO NOTHING",
                        &[&t, &n, &kind],
                    )
                    .await?;
            }
        }
        Ok(())
    }

    /// Records a pack and the chunks its sealed index lists, in one
    /// transaction. `hashed` says its SHA-256 was just read and matched.
    ///
    /// # Errors
    /// When the transaction fails.
    pub async fn recover_pack(
        &self,
        tenant: &Name,
        pack: &PackId,
        size: u64,
        chunks: &[StoredChunk],
        hashed: bool,
    ) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let (t, p) = (tenant.as_str(), pack.0.as_slice());
        tx.execute(
            "INSERT INTO packs (tenant, id, size, blobs, hashed_at)
             VALUES ($1, $2, $3, $4, CASE WHEN $5 THEN now() END) ON CONFLICT DO NOTHING",
            &[&t, &p, &(size as i64), &(chunks.len() as i32), &hashed],
        )
        .await?;
        crate::chunks::insert_chunks(&tx, tenant, pack, chunks).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records a snapshot, final, with the packs it references.
    ///
    /// # Errors
    /// When the transaction fails (its source must be recorded first).
    pub async fn recover_snapshot(&self, s: &RecoveredSnapshot<'_>) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let t = s.tenant.as_str();
        let status = if s.problem.is_some() {
            "corrupt"
        } else {
            "verified"
        };
        let inserted = tx
            .execute(
                "INSERT INTO snapshots (tenant, id, source, status, trigger, key_id, started_at,
                     extracted_at, stored_at, verified_at, finished_at, files, bytes_read,
                     source_digest, manifest_digest, manifest_size, tables, error)
                 VALUES ($1, $2, $3, $4, 'rebuilt', $5, $6, $6, $6,
                     CASE WHEN $4 = 'verified' THEN now() END, now(), $7, $8, $9, $10, $11, $12, $13)
                 ON CONFLICT DO NOTHING",
                &[
                    &t,
                    &s.id.as_str(),
                    &s.source.as_str(),
                    &status,
                    &s.key_id,
                    &s.created,
                    &(s.files as i64),
                    &(s.bytes_read as i64),
                    &s.source_digest,
                    &s.manifest_digest,
                    &(s.manifest_size as i64),
                    &s.tables,
                    &s.problem,
                ],
            )
            .await?;
        if inserted == 1 {
            let packs: Vec<&[u8]> = s.packs.iter().map(|p| p.0.as_slice()).collect();
            tx.execute(
                "INSERT INTO snapshot_packs (tenant, snapshot, pack) SELECT $1, $2, unnest($3::bytea[])
                 ON CONFLICT DO NOTHING",
                &[&t, &s.id.as_str(), &packs],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Credits each pack to the oldest recovered snapshot that references
    /// it: its size to that snapshot's `bytes_stored`, its chunks' length
    /// to `bytes_new`. What a backup reported at the time (a pack shared
    /// by two concurrent backups counted once each) is not in the
    /// repository; this is the closest the repository can say.
    ///
    /// # Errors
    /// When the query fails.
    pub async fn credit_recovered_packs(&self) -> Result<()> {
        self.client()
            .await?
            .execute(
                "WITH first AS (
                     SELECT DISTINCT ON (sp.tenant, sp.pack) sp.tenant, sp.snapshot, sp.pack
                     FROM snapshot_packs sp JOIN snapshots s ON s.tenant = sp.tenant AND s.id = sp.snapshot
                     WHERE s.trigger = 'rebuilt'
                     ORDER BY sp.tenant, sp.pack, s.started_at, s.id),
                 credit AS (
                     SELECT f.tenant, f.snapshot, sum(p.size) AS stored,
                            sum((SELECT coalesce(sum(c.raw_length), 0) FROM chunks c
                                 WHERE c.tenant = p.tenant AND c.pack = p.id)) AS new
                     FROM first f JOIN packs p ON p.tenant = f.tenant AND p.id = f.pack
                     GROUP BY f.tenant, f.snapshot)
                 UPDATE snapshots s SET bytes_stored = credit.stored, bytes_new = credit.new
                 FROM credit WHERE s.tenant = credit.tenant AND s.id = credit.snapshot",
                &[],
            )
            .await?;
        Ok(())
    }
}
