//! Interval schedules and the guards that make several schedulers safe.

use crate::{Catalog, Error, Result};
use vaultline_types::Name;

/// A schedule as stored.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ScheduleRow {
    pub tenant: Name,
    pub source: Name,
    pub every_seconds: i64,
    pub enabled: bool,
    pub last_slot: i64,
}

impl Catalog {
    /// Creates or replaces a source's schedule. The first slot to fire is the
    /// next one after `now_unix`, not the current one.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown source.
    pub async fn set_schedule(
        &self,
        tenant: &Name,
        source: &Name,
        every_seconds: i64,
        now_unix: i64,
    ) -> Result<()> {
        self.source(tenant, source).await?;
        let slot = now_unix / every_seconds;
        self.client()
            .await?
            .execute(
                "INSERT INTO schedules (tenant, source, every_seconds, last_slot) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (tenant, source) DO UPDATE SET every_seconds = $3, last_slot = $4, enabled = true",
                &[&tenant.as_str(), &source.as_str(), &every_seconds, &slot],
            )
            .await?;
        Ok(())
    }

    /// Enables or disables a schedule; returns false when there is none.
    ///
    /// # Errors
    /// When the query fails.
    pub async fn enable_schedule(
        &self,
        tenant: &Name,
        source: &Name,
        enabled: bool,
    ) -> Result<bool> {
        let n = self
            .client()
            .await?
            .execute(
                "UPDATE schedules SET enabled = $3 WHERE tenant = $1 AND source = $2",
                &[&tenant.as_str(), &source.as_str(), &enabled],
            )
            .await?;
        Ok(n == 1)
    }

    /// Removes a schedule; returns false when there was none.
    ///
    /// # Errors
    /// When the query fails.
    pub async fn remove_schedule(&self, tenant: &Name, source: &Name) -> Result<bool> {
        let n = self
            .client()
            .await?
            .execute(
                "DELETE FROM schedules WHERE tenant = $1 AND source = $2",
                &[&tenant.as_str(), &source.as_str()],
            )
            .await?;
        Ok(n == 1)
    }

    /// Every schedule.
    ///
    /// # Errors
    /// When the query fails.
    pub async fn schedules(&self) -> Result<Vec<ScheduleRow>> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT tenant, source, every_seconds, enabled, last_slot FROM schedules ORDER BY tenant, source",
                &[],
            )
            .await?;
        rows.iter()
            .map(|r| {
                let bad = |e: vaultline_types::IdError| {
                    Error::Conflict(format!("catalog holds an invalid name: {e}"))
                };
                Ok(ScheduleRow {
                    tenant: Name::new(r.get::<_, String>(0)).map_err(bad)?,
                    source: Name::new(r.get::<_, String>(1)).map_err(bad)?,
                    every_seconds: r.get(2),
                    enabled: r.get(3),
                    last_slot: r.get(4),
                })
            })
            .collect()
    }

    /// Claims `slot` of a schedule. Exactly one caller gets true per slot,
    /// however many schedulers run; a slot older than the last one is never
    /// claimed, so after downtime only the current slot fires (one catch-up).
    ///
    /// # Errors
    /// When the query fails.
    pub async fn claim_slot(&self, tenant: &Name, source: &Name, slot: i64) -> Result<bool> {
        let n = self
            .client()
            .await?
            .execute(
                "UPDATE schedules SET last_slot = $3 WHERE tenant = $1 AND source = $2 AND enabled AND last_slot < $3",
                &[&tenant.as_str(), &source.as_str(), &slot],
            )
            .await?;
        Ok(n == 1)
    }

    /// Whether the source has a snapshot that has not reached a final status.
    ///
    /// # Errors
    /// When the query fails.
    pub async fn snapshot_in_flight(&self, tenant: &Name, source: &Name) -> Result<bool> {
        Ok(self
            .client()
            .await?
            .query_opt(
                "SELECT 1 FROM snapshots WHERE tenant = $1 AND source = $2
                   AND status IN ('extracting', 'extracted', 'stored') LIMIT 1",
                &[&tenant.as_str(), &source.as_str()],
            )
            .await?
            .is_some())
    }
}
