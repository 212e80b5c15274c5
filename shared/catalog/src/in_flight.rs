//! Snapshots in flight: how many each tenant has, how old the oldest is, and
//! which have outlived their deadline (the auditor's reaper fails those, so
//! a hung snapshot no longer blocks its source's schedule or its tenant's GC).

use crate::{Catalog, Result};
use time::OffsetDateTime;
use vaultline_types::{Name, SnapshotId};

/// A snapshot (aliased `s`) in flight, as SQL: what GC, the scheduler and
/// the reaper all mean by it (a test holds it to `SnapshotStatus::is_in_flight`).
pub(crate) const IN_FLIGHT: &str = "s.status IN ('extracting', 'extracted', 'stored')";

/// A tenant's snapshots in flight (started, not yet verified or failed).
#[derive(Debug, Clone, serde::Serialize)]
pub struct InFlight {
    pub tenant: String,
    pub snapshots: i64,
    #[serde(with = "time::serde::rfc3339::option")]
    pub oldest_started_at: Option<OffsetDateTime>,
}

/// A snapshot in flight past its deadline.
#[derive(Debug, Clone)]
pub struct StuckSnapshot {
    pub tenant: Name,
    pub source: Name,
    pub snapshot: SnapshotId,
    pub status: String,
    /// How long it has been in flight, and how long it was allowed.
    pub age_seconds: i64,
    pub deadline_seconds: i64,
}

impl Catalog {
    /// Sets how long a snapshot of the source may stay in flight before the
    /// reaper fails it; `None` returns it to the configured default.
    ///
    /// # Errors
    /// [`crate::Error::NotFound`] for an unknown source.
    pub async fn set_source_deadline(
        &self,
        tenant: &Name,
        source: &Name,
        seconds: Option<i64>,
    ) -> Result<()> {
        let updated = self
            .client()
            .await?
            .execute(
                "UPDATE sources SET deadline_seconds = $3 WHERE tenant = $1 AND name = $2",
                &[&tenant.as_str(), &source.as_str(), &seconds],
            )
            .await?;
        if updated == 0 {
            return Err(crate::Error::NotFound(format!(
                "unknown source {tenant}/{source}"
            )));
        }
        Ok(())
    }

    /// Snapshots in flight per tenant, every tenant listed.
    ///
    /// # Errors
    /// When the query fails.
    pub async fn in_flight(&self) -> Result<Vec<InFlight>> {
        let rows = self
            .client()
            .await?
            .query(
                &format!(
                    "SELECT t.name, count(s.id), min(s.started_at)
                     FROM tenants t LEFT JOIN snapshots s ON s.tenant = t.name
                         AND {IN_FLIGHT}
                     GROUP BY t.name ORDER BY t.name"
                ),
                &[],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| InFlight {
                tenant: r.get(0),
                snapshots: r.get(1),
                oldest_started_at: r.get(2),
            })
            .collect())
    }

    /// Snapshots in flight longer than their source's deadline, or
    /// `default_deadline` seconds for a source without one; oldest first.
    ///
    /// # Errors
    /// When the query fails.
    pub async fn stuck_snapshots(&self, default_deadline: i64) -> Result<Vec<StuckSnapshot>> {
        let rows = self
            .client()
            .await?
            .query(
                &format!(
                    "SELECT s.tenant, s.source, s.id, s.status,
                            extract(epoch FROM now() - s.started_at)::bigint,
                            coalesce(so.deadline_seconds, $1)
                     FROM snapshots s JOIN sources so ON so.tenant = s.tenant AND so.name = s.source
                     WHERE {IN_FLIGHT}
                       AND s.started_at < now() - make_interval(secs => coalesce(so.deadline_seconds, $1))
                     ORDER BY s.started_at"
                ),
                &[&default_deadline],
            )
            .await?;
        let mut stuck = Vec::with_capacity(rows.len());
        for r in &rows {
            // Names in the catalog were checked on the way in; a row that
            // no longer parses is left for an operator, not reaped blind.
            let (Ok(tenant), Ok(source), Ok(snapshot)) = (
                Name::new(r.get::<_, String>(0)),
                Name::new(r.get::<_, String>(1)),
                SnapshotId::parse(r.get::<_, &str>(2)),
            ) else {
                continue;
            };
            stuck.push(StuckSnapshot {
                tenant,
                source,
                snapshot,
                status: r.get(3),
                age_seconds: r.get(4),
                deadline_seconds: r.get(5),
            });
        }
        Ok(stuck)
    }
}

#[cfg(test)]
mod tests {
    use super::IN_FLIGHT;
    use vaultline_types::SnapshotStatus;

    #[test]
    fn the_sql_list_is_the_in_flight_statuses() {
        let listed: Vec<String> = SnapshotStatus::ALL
            .iter()
            .filter(|s| s.is_in_flight())
            .map(|s| format!("'{s}'"))
            .collect();
        assert_eq!(IN_FLIGHT, format!("s.status IN ({})", listed.join(", ")));
    }
}
