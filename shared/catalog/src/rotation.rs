//! Rotation: a tenant's key replaced (the chunk-id key carried over), and
//! every secret sealed to the KEK or to the credentials key sealed again to
//! a new one, each in one transaction.

use crate::{Catalog, Error, Result};
use vaultline_types::Name;

/// A tenant's next key: its public half and its identity wrapped by the KEK.
pub struct NewKey<'a> {
    pub key_id: &'a str,
    pub recipient: &'a str,
    pub wrapped_identity: &'a [u8],
    /// In a later second than the key it replaces: key records carry
    /// seconds, and the newest record is the active key when a catalog is
    /// rebuilt.
    pub created: time::OffsetDateTime,
}

/// Which sealed secrets a rotation re-seals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sealed {
    /// Tenant identities and webhook secrets: sealed to the KEK.
    ByKek,
    /// Source credentials: sealed to the credentials key.
    ByCredentialsKey,
}

impl Catalog {
    /// Makes `new` the active key of `tenant`, carrying the chunk-id key
    /// over, and marks the old one rotated. Returns the old key's id.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown tenant, [`Error::Conflict`] when
    /// `new` is already one of its keys.
    pub async fn rotate_tenant_key(&self, tenant: &Name, new: &NewKey<'_>) -> Result<String> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let t = tenant.as_str();
        let old = tx
            .query_opt(
                "SELECT key_id, chunk_key FROM tenant_keys WHERE tenant = $1 AND active FOR UPDATE",
                &[&t],
            )
            .await?
            .ok_or_else(|| Error::NotFound(format!("unknown tenant {tenant}")))?;
        let (old_id, chunk_key): (String, Vec<u8>) = (old.get(0), old.get(1));
        let chunk_key = zeroize::Zeroizing::new(chunk_key);
        tx.execute(
            "UPDATE tenant_keys SET active = false, rotated_at = now() WHERE tenant = $1 AND active",
            &[&t],
        )
        .await?;
        let inserted = tx
            .execute(
                "INSERT INTO tenant_keys (tenant, key_id, recipient, wrapped_identity, chunk_key, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
                &[
                    &t,
                    &new.key_id,
                    &new.recipient,
                    &new.wrapped_identity,
                    &chunk_key.as_slice(),
                    &new.created,
                ],
            )
            .await?;
        if inserted == 0 {
            return Err(Error::Conflict(format!(
                "tenant {tenant} already has key {}",
                new.key_id
            )));
        }
        tx.commit().await?;
        Ok(old_id)
    }

    /// Seals every secret of kind `which` again with `reseal` (which opens
    /// one with the old key and seals it to the new), in one transaction
    /// that locks out writers of those tables meanwhile: either every
    /// secret moves to the new key or none does. Returns how many moved.
    ///
    /// # Errors
    /// The first secret `reseal` fails on (nothing is changed), or a failed
    /// query.
    pub async fn reseal_all(
        &self,
        which: Sealed,
        reseal: impl Fn(&[u8]) -> std::result::Result<Vec<u8>, String>,
    ) -> Result<usize> {
        // (table, key columns, sealed column)
        let tables: &[(&str, &str, &str)] = match which {
            Sealed::ByKek => &[
                ("tenant_keys", "tenant, key_id", "wrapped_identity"),
                ("webhooks", "tenant, id", "sealed_secret"),
            ],
            Sealed::ByCredentialsKey => &[("credentials", "tenant, source", "sealed")],
        };
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let names: Vec<&str> = tables.iter().map(|(table, _, _)| *table).collect();
        // EXCLUSIVE lets readers (the verifier, the extractor) go on.
        tx.batch_execute(&format!(
            "LOCK TABLE {} IN EXCLUSIVE MODE",
            names.join(", ")
        ))
        .await?;
        let mut moved = 0;
        for (table, keys, sealed) in tables {
            let (first, second) = keys.split_once(", ").expect("two key columns");
            let rows = tx
                .query(&format!("SELECT {keys}, {sealed} FROM {table}"), &[])
                .await?;
            let update =
                format!("UPDATE {table} SET {sealed} = $3 WHERE {first} = $1 AND {second} = $2");
            for row in rows {
                let (a, b, old): (String, String, Vec<u8>) = (row.get(0), row.get(1), row.get(2));
                let new = reseal(&old).map_err(|why| {
                    Error::Conflict(format!("cannot re-seal {table} {a}/{b}: {why}"))
                })?;
                tx.execute(&update, &[&a, &b, &new]).await?;
                moved += 1;
            }
        }
        tx.commit().await?;
        Ok(moved)
    }
}
