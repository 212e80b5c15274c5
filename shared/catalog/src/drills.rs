//! Restore drills: which sources want one and when, and what each run found.

use crate::{Catalog, Result};
use time::OffsetDateTime;
use vaultline_types::Name;

/// One drill run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DrillRow {
    pub tenant: String,
    pub source: String,
    pub snapshot: Option<String>,
    pub request_id: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    pub duration_ms: i64,
    /// `passed` or `failed`.
    pub outcome: String,
    /// `[{table, expected, restored}]`
    pub tables: serde_json::Value,
    pub error: Option<String>,
}

const COLUMNS: &str =
    "tenant, source, snapshot, request_id, started_at, duration_ms, outcome, tables, error";

fn drill_row(r: &tokio_postgres::Row) -> DrillRow {
    DrillRow {
        tenant: r.get(0),
        source: r.get(1),
        snapshot: r.get(2),
        request_id: r.get(3),
        started_at: r.get(4),
        duration_ms: r.get(5),
        outcome: r.get(6),
        tables: r.get(7),
        error: r.get(8),
    }
}

impl Catalog {
    /// Records a finished drill.
    ///
    /// # Errors
    /// When the insert fails.
    pub async fn record_drill(&self, drill: &DrillRow) -> Result<()> {
        self.client()
            .await?
            .execute(
                &format!(
                    "INSERT INTO drills ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
                ),
                &[
                    &drill.tenant,
                    &drill.source,
                    &drill.snapshot,
                    &drill.request_id,
                    &drill.started_at,
                    &drill.duration_ms,
                    &drill.outcome,
                    &drill.tables,
                    &drill.error,
                ],
            )
            .await?;
        Ok(())
    }

    /// The drill run for a request about `tenant`'s `source`, once it finished.
    ///
    /// # Errors
    /// When the query fails.
    pub async fn drill_by_request(
        &self,
        tenant: &Name,
        source: &Name,
        request_id: &str,
    ) -> Result<Option<DrillRow>> {
        let row = self
            .client()
            .await?
            .query_opt(
                &format!(
                    "SELECT {COLUMNS} FROM drills WHERE tenant = $1 AND source = $2
                       AND request_id = $3 ORDER BY id DESC LIMIT 1"
                ),
                &[&tenant.as_str(), &source.as_str(), &request_id],
            )
            .await?;
        Ok(row.as_ref().map(drill_row))
    }

    /// The request ids the drill timer may have published for a source
    /// just now: this period's and the one before (a request may be read
    /// just after the period turned). None when it is not drilled on a timer.
    ///
    /// # Errors
    /// When the query fails.
    pub async fn timer_drill_ids(&self, tenant: &Name, source: &Name) -> Result<Vec<String>> {
        let row = self
            .client()
            .await?
            .query_opt(
                "SELECT floor(extract(epoch FROM now()) / drill_every_seconds)::bigint
                   FROM sources WHERE tenant = $1 AND name = $2 AND drill_every_seconds IS NOT NULL",
                &[&tenant.as_str(), &source.as_str()],
            )
            .await?;
        Ok(row
            .map(|r| r.get::<_, i64>(0))
            .into_iter()
            .flat_map(|slot| [slot, slot - 1])
            .map(|slot| timer_drill_id(tenant, source, slot))
            .collect())
    }

    /// Sets (or clears, with `None`) how often a source is drilled.
    ///
    /// # Errors
    /// [`crate::Error::NotFound`] for an unknown source.
    pub async fn set_drill_every(
        &self,
        tenant: &Name,
        source: &Name,
        every_seconds: Option<i64>,
    ) -> Result<()> {
        let updated = self
            .client()
            .await?
            .execute(
                "UPDATE sources SET drill_every_seconds = $3 WHERE tenant = $1 AND name = $2",
                &[&tenant.as_str(), &source.as_str(), &every_seconds],
            )
            .await?;
        if updated == 0 {
            return Err(crate::Error::NotFound(format!(
                "unknown source {tenant}/{source}"
            )));
        }
        Ok(())
    }

    /// Sources whose drill is due: a cadence is set and the last drill (if
    /// any) started longer ago than it. Returns `(tenant, source, slot)`,
    /// where the slot numbers the period, so replicas asking at once publish
    /// the same request id.
    ///
    /// # Errors
    /// When the query fails.
    pub async fn drills_due(&self) -> Result<Vec<(Name, Name, i64)>> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT s.tenant, s.name, floor(extract(epoch FROM now()) / s.drill_every_seconds)::bigint
                   FROM sources s
                  WHERE s.drill_every_seconds IS NOT NULL
                    AND NOT EXISTS (
                        SELECT 1 FROM drills d
                         WHERE d.tenant = s.tenant AND d.source = s.name
                           AND d.started_at > now() - make_interval(secs => s.drill_every_seconds))
                  ORDER BY 1, 2",
                &[],
            )
            .await?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                Some((
                    Name::new(r.get::<_, String>(0)).ok()?,
                    Name::new(r.get::<_, String>(1)).ok()?,
                    r.get(2),
                ))
            })
            .collect())
    }
}

/// The request id (and Nats-Msg-Id) of the drill timer's request for a
/// period: the same on every verifier replica, so the stream keeps one.
pub fn timer_drill_id(tenant: &Name, source: &Name, slot: i64) -> String {
    format!(
        "{}{tenant}-{source}-{slot}",
        vaultline_types::DRILL_REQUEST_PREFIX
    )
}
