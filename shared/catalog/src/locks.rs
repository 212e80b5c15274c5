//! The finalize lock of a snapshot: only one handler writes its manifest.

use crate::{Catalog, Result};
use vaultline_types::{Name, SnapshotId};

/// The exclusive right to finalize one snapshot (write its manifest). Held as
/// a PostgreSQL session lock: if the holder dies, its connection closes and
/// the lock goes with it, so a redelivered message can take over.
pub struct SnapshotLock {
    client: Option<deadpool_postgres::Object>,
    key: String,
}

impl SnapshotLock {
    /// Releases the lock and returns the connection to the pool.
    ///
    /// # Errors
    /// When the unlock fails (the connection is then closed, which also releases it).
    pub async fn release(mut self) -> Result<()> {
        let client = self.client.take().expect("a lock is released once");
        client
            .execute(
                "SELECT pg_advisory_unlock(hashtextextended($1, 0))",
                &[&self.key],
            )
            .await?;
        Ok(())
    }
}

impl Drop for SnapshotLock {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            // Not released (an error path): close the connection rather than
            // return a pooled connection that still holds the lock.
            drop(deadpool_postgres::Object::take(client));
        }
    }
}

impl Catalog {
    /// Tries to take the finalize lock of a snapshot; `None` when another
    /// handler holds it (that handler will finish the work).
    ///
    /// # Errors
    /// When the query fails.
    pub async fn try_lock_snapshot(
        &self,
        tenant: &Name,
        id: &SnapshotId,
    ) -> Result<Option<SnapshotLock>> {
        self.try_session_lock(format!("finalize:{tenant}/{id}"))
            .await
    }

    /// Tries to take a named session lock (the verifier's rolling integrity
    /// round: one replica at a time); `None` when another session holds it.
    ///
    /// # Errors
    /// When the query fails.
    pub async fn try_session_lock(&self, key: String) -> Result<Option<SnapshotLock>> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "SELECT pg_try_advisory_lock(hashtextextended($1, 0))",
                &[&key],
            )
            .await?;
        Ok(row.get::<_, bool>(0).then_some(SnapshotLock {
            client: Some(client),
            key,
        }))
    }
}
