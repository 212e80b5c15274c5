//! Tenants, their keys, and sources.

use crate::{Catalog, Error, Result};
use vaultline_types::{Name, SourceConfig, SourceConfigError};

/// A tenant key as stored. `wrapped_identity` is opaque without the KEK.
#[derive(Clone)]
pub struct TenantKeyRow {
    pub key_id: String,
    pub recipient: String,
    pub wrapped_identity: Vec<u8>,
    /// Secret: wiped from memory when the row is dropped.
    pub chunk_key: zeroize::Zeroizing<[u8; 32]>,
    /// New snapshots use it (one key of a tenant at a time).
    pub active: bool,
    pub created_at: time::OffsetDateTime,
}

/// What the extractor reads of a tenant's key: the id it records and the
/// chunk-id key it hashes with.
pub struct ChunkKeyRow {
    pub key_id: String,
    /// Secret: wiped from memory when the row is dropped.
    pub chunk_key: zeroize::Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for ChunkKeyRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkKeyRow")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for TenantKeyRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantKeyRow")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// A source as stored.
#[derive(Debug, Clone)]
pub struct SourceRow {
    pub tenant: Name,
    pub name: Name,
    kind: String,
    config: serde_json::Value,
    pub retention: serde_json::Value,
    /// 1: stored digests after every snapshot; 2: a full read-back too.
    pub verify_level: i16,
}

impl SourceRow {
    /// What the source is and how to read it. Read on use rather than with
    /// the row, so a config this build cannot read fails the work that needs
    /// it (with the source named), not every listing of sources.
    ///
    /// # Errors
    /// An unknown kind, a missing field or an unknown one.
    pub fn config(&self) -> std::result::Result<SourceConfig, SourceConfigError> {
        SourceConfig::from_parts(&self.kind, self.config.clone())
    }

    /// The kind as stored, for display.
    pub fn kind(&self) -> &str {
        &self.kind
    }
}

/// A source to add, with its sealed credential if it has one.
#[derive(Debug, Clone, Copy)]
pub struct NewSource<'a> {
    pub tenant: &'a Name,
    pub name: &'a Name,
    pub config: &'a SourceConfig,
    pub retention: &'a serde_json::Value,
    /// Sealed with the credentials key; never the plaintext.
    pub sealed_credential: Option<&'a [u8]>,
    /// 1 (stored digests) or 2 (full read-back) after every snapshot.
    pub verify_level: i16,
    /// Drills may restore into the source's own server when the verifier
    /// has no scratch server for its kind.
    pub drill_on_source: bool,
}

impl Catalog {
    /// Creates a tenant with its first key, made at `created` (the time its
    /// key record carries too).
    ///
    /// # Errors
    /// [`Error::Conflict`] when the tenant exists.
    pub async fn create_tenant(
        &self,
        tenant: &Name,
        key_id: &str,
        recipient: &str,
        wrapped_identity: &[u8],
        chunk_key: &[u8; 32],
        created: time::OffsetDateTime,
    ) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let inserted = tx
            .execute(
                "INSERT INTO tenants (name) VALUES ($1) ON CONFLICT DO NOTHING",
                &[&tenant.as_str()],
            )
            .await?;
        if inserted == 0 {
            return Err(Error::Conflict(format!("tenant {tenant} already exists")));
        }
        tx.execute(
            "INSERT INTO tenant_keys (tenant, key_id, recipient, wrapped_identity, chunk_key, created_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                &tenant.as_str(),
                &key_id,
                &recipient,
                &wrapped_identity,
                &chunk_key.as_slice(),
                &created,
            ],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Tenant names.
    ///
    /// # Errors
    /// When the query fails.
    pub async fn tenants(&self) -> Result<Vec<Name>> {
        let rows = self
            .client()
            .await?
            .query("SELECT name FROM tenants ORDER BY name", &[])
            .await?;
        Ok(rows
            .iter()
            .filter_map(|r| Name::new(r.get::<_, String>(0)).ok())
            .collect())
    }

    /// The key new snapshots of `tenant` use.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown tenant.
    pub async fn active_key(&self, tenant: &Name) -> Result<TenantKeyRow> {
        let row = self
            .client()
            .await?
            .query_opt(
                "SELECT key_id, recipient, wrapped_identity, chunk_key, active, created_at FROM tenant_keys
                 WHERE tenant = $1 AND active",
                &[&tenant.as_str()],
            )
            .await?
            .ok_or_else(|| Error::NotFound(format!("unknown tenant {tenant}")))?;
        key_row(&row)
    }

    /// A specific key of `tenant` (old snapshots keep their key after rotation).
    ///
    /// # Errors
    /// [`Error::NotFound`] when absent.
    pub async fn key(&self, tenant: &Name, key_id: &str) -> Result<TenantKeyRow> {
        let row = self
            .client()
            .await?
            .query_opt(
                "SELECT key_id, recipient, wrapped_identity, chunk_key, active, created_at FROM tenant_keys
                 WHERE tenant = $1 AND key_id = $2",
                &[&tenant.as_str(), &key_id],
            )
            .await?
            .ok_or_else(|| Error::NotFound(format!("tenant {tenant} has no key {key_id}")))?;
        key_row(&row)
    }

    /// Every key of `tenant`, the active one first, then newest first:
    /// after a rotation old packs stay sealed to old keys, so whatever reads
    /// a tenant's data needs all of them.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown tenant.
    pub async fn tenant_keys(&self, tenant: &Name) -> Result<Vec<TenantKeyRow>> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT key_id, recipient, wrapped_identity, chunk_key, active, created_at FROM tenant_keys
                 WHERE tenant = $1 ORDER BY active DESC, created_at DESC",
                &[&tenant.as_str()],
            )
            .await?;
        if rows.is_empty() {
            return Err(Error::NotFound(format!("unknown tenant {tenant}")));
        }
        rows.iter().map(key_row).collect()
    }

    /// The active chunk-id key of `tenant` and its key id: all the extractor
    /// may read of `tenant_keys` (not the recipient, not the wrapped identity).
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown tenant.
    pub async fn active_chunk_key(&self, tenant: &Name) -> Result<ChunkKeyRow> {
        let row = self
            .client()
            .await?
            .query_opt(
                "SELECT key_id, chunk_key FROM tenant_keys WHERE tenant = $1 AND active",
                &[&tenant.as_str()],
            )
            .await?
            .ok_or_else(|| Error::NotFound(format!("unknown tenant {tenant}")))?;
        Ok(ChunkKeyRow {
            key_id: row.get(0),
            chunk_key: chunk_key(row.get(1))?,
        })
    }

    /// The recipient of `tenant`'s key `key_id`: all the packager and the
    /// uploader may read of `tenant_keys`.
    ///
    /// # Errors
    /// [`Error::NotFound`] when absent.
    pub async fn recipient(&self, tenant: &Name, key_id: &str) -> Result<String> {
        Ok(self
            .client()
            .await?
            .query_opt(
                "SELECT recipient FROM tenant_keys WHERE tenant = $1 AND key_id = $2",
                &[&tenant.as_str(), &key_id],
            )
            .await?
            .ok_or_else(|| Error::NotFound(format!("tenant {tenant} has no key {key_id}")))?
            .get(0))
    }

    /// Adds a source.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown tenant, [`Error::Conflict`] when the source exists.
    pub async fn add_source(&self, source: &NewSource<'_>) -> Result<()> {
        let NewSource {
            tenant,
            name,
            config,
            retention,
            sealed_credential,
            verify_level,
            drill_on_source,
        } = *source;
        let (kind, config) = config.to_parts();
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        if tx
            .query_opt("SELECT 1 FROM tenants WHERE name = $1", &[&tenant.as_str()])
            .await?
            .is_none()
        {
            return Err(Error::NotFound(format!("unknown tenant {tenant}")));
        }
        let inserted = tx
            .execute(
                "INSERT INTO sources (tenant, name, kind, config, retention, verify_level, drill_on_source)
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
                &[
                    &tenant.as_str(),
                    &name.as_str(),
                    &kind,
                    &config,
                    retention,
                    &verify_level,
                    &drill_on_source,
                ],
            )
            .await?;
        if inserted == 0 {
            return Err(Error::Conflict(format!(
                "source {tenant}/{name} already exists"
            )));
        }
        if let Some(sealed) = sealed_credential {
            tx.execute(
                "INSERT INTO credentials (tenant, source, sealed) VALUES ($1, $2, $3)",
                &[&tenant.as_str(), &name.as_str(), &sealed],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Replaces (or first stores) a source's sealed credential: rotation.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown source.
    pub async fn set_credential(&self, tenant: &Name, name: &Name, sealed: &[u8]) -> Result<()> {
        let client = self.client().await?;
        if client
            .query_opt(
                "SELECT 1 FROM sources WHERE tenant = $1 AND name = $2",
                &[&tenant.as_str(), &name.as_str()],
            )
            .await?
            .is_none()
        {
            return Err(Error::NotFound(format!("unknown source {tenant}/{name}")));
        }
        client
            .execute(
                "INSERT INTO credentials (tenant, source, sealed) VALUES ($1, $2, $3)
                 ON CONFLICT (tenant, source) DO UPDATE SET sealed = EXCLUDED.sealed, updated_at = now()",
                &[&tenant.as_str(), &name.as_str(), &sealed],
            )
            .await?;
        Ok(())
    }

    /// The sealed credential of a source, if it has one. Only the extractor
    /// (just before it runs the source) and drills ask for it.
    ///
    /// # Errors
    /// When the query fails.
    pub async fn source_credential(&self, tenant: &Name, name: &Name) -> Result<Option<Vec<u8>>> {
        let row = self
            .client()
            .await?
            .query_opt(
                "SELECT sealed FROM credentials WHERE tenant = $1 AND source = $2",
                &[&tenant.as_str(), &name.as_str()],
            )
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    /// Replaces a source's retention policy.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown source.
    pub async fn set_retention(
        &self,
        tenant: &Name,
        name: &Name,
        retention: &serde_json::Value,
    ) -> Result<()> {
        let n = self
            .client()
            .await?
            .execute(
                "UPDATE sources SET retention = $3 WHERE tenant = $1 AND name = $2",
                &[&tenant.as_str(), &name.as_str(), retention],
            )
            .await?;
        if n == 0 {
            return Err(Error::NotFound(format!("unknown source {tenant}/{name}")));
        }
        Ok(())
    }

    /// Replaces a source's settings with others of the same kind (an SFTP
    /// source's pinned host key).
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown source or one of another kind.
    pub async fn set_source_config(
        &self,
        tenant: &Name,
        name: &Name,
        config: &SourceConfig,
    ) -> Result<()> {
        let (kind, config) = config.to_parts();
        let n = self
            .client()
            .await?
            .execute(
                "UPDATE sources SET config = $3 WHERE tenant = $1 AND name = $2 AND kind = $4",
                &[&tenant.as_str(), &name.as_str(), &config, &kind],
            )
            .await?;
        if n == 0 {
            return Err(Error::NotFound(format!("no {kind} source {tenant}/{name}")));
        }
        Ok(())
    }

    /// Whether drills of the source may use its own server (see [`NewSource`]).
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown source.
    pub async fn drill_on_source(&self, tenant: &Name, name: &Name) -> Result<bool> {
        self.client()
            .await?
            .query_opt(
                "SELECT drill_on_source FROM sources WHERE tenant = $1 AND name = $2",
                &[&tenant.as_str(), &name.as_str()],
            )
            .await?
            .map(|r| r.get(0))
            .ok_or_else(|| Error::NotFound(format!("unknown source {tenant}/{name}")))
    }

    /// A source of a tenant.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown tenant or source.
    pub async fn source(&self, tenant: &Name, name: &Name) -> Result<SourceRow> {
        let row = self
            .client()
            .await?
            .query_opt(
                "SELECT kind, config, retention, verify_level FROM sources WHERE tenant = $1 AND name = $2",
                &[&tenant.as_str(), &name.as_str()],
            )
            .await?
            .ok_or_else(|| Error::NotFound(format!("unknown source {tenant}/{name}")))?;
        Ok(SourceRow {
            tenant: tenant.clone(),
            name: name.clone(),
            kind: row.get(0),
            config: row.get(1),
            retention: row.get(2),
            verify_level: row.get(3),
        })
    }

    /// Every source, or those of one tenant.
    ///
    /// # Errors
    /// When the query fails.
    pub async fn sources(&self, tenant: Option<&Name>) -> Result<Vec<SourceRow>> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT tenant, name, kind, config, retention, verify_level FROM sources
                 WHERE $1::text IS NULL OR tenant = $1 ORDER BY tenant, name",
                &[&tenant.map(Name::as_str)],
            )
            .await?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                Some(SourceRow {
                    tenant: Name::new(r.get::<_, String>(0)).ok()?,
                    name: Name::new(r.get::<_, String>(1)).ok()?,
                    kind: r.get(2),
                    config: r.get(3),
                    retention: r.get(4),
                    verify_level: r.get(5),
                })
            })
            .collect())
    }
}

fn key_row(row: &tokio_postgres::Row) -> Result<TenantKeyRow> {
    Ok(TenantKeyRow {
        key_id: row.get(0),
        recipient: row.get(1),
        wrapped_identity: row.get(2),
        chunk_key: chunk_key(row.get(3))?,
        active: row.get(4),
        created_at: row.get(5),
    })
}

fn chunk_key(bytes: Vec<u8>) -> Result<zeroize::Zeroizing<[u8; 32]>> {
    let bytes = zeroize::Zeroizing::new(bytes);
    Ok(zeroize::Zeroizing::new(bytes[..].try_into().map_err(
        |_| Error::Conflict("stored chunk key is not 32 bytes".into()),
    )?))
}
