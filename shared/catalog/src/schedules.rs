//! Schedules (cron in a time zone, or an interval) and the guards that make
//! several schedulers safe.

use crate::in_flight::IN_FLIGHT;
use crate::{Catalog, Error, Result};
use vaultline_policy::ScheduleSpec;
use vaultline_types::Name;

/// A schedule as stored.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ScheduleRow {
    pub tenant: Name,
    pub source: Name,
    pub spec: ScheduleSpec,
    pub enabled: bool,
    /// Unix time (seconds) at which the last fired or skipped slot began.
    pub last_slot: i64,
    /// Request id of the last slot fired.
    pub last_request: Option<String>,
}

/// How long a fired trigger that no extractor has picked up yet still counts
/// as in flight. Past it the trigger is presumed lost (its dead letter tells
/// why) and the schedule moves on.
pub const PENDING_TRIGGER_SECONDS: i64 = 600;

impl Catalog {
    /// Creates or replaces a source's schedule. `last_slot` is the latest slot
    /// at or before now, so the first slot to fire is the next one.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown source.
    pub async fn set_schedule(
        &self,
        tenant: &Name,
        source: &Name,
        spec: &ScheduleSpec,
        last_slot: i64,
    ) -> Result<()> {
        self.source(tenant, source).await?;
        let (cron, timezone, every) = match spec {
            ScheduleSpec::Cron {
                expression,
                timezone,
            } => (Some(expression.as_str()), timezone.as_str(), None),
            ScheduleSpec::Every { seconds } => (None, "UTC", Some(*seconds)),
        };
        self.client()
            .await?
            .execute(
                "INSERT INTO schedules (tenant, source, every_seconds, cron, timezone, last_slot)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (tenant, source) DO UPDATE SET every_seconds = $3, cron = $4, timezone = $5,
                     last_slot = $6, enabled = true",
                &[
                    &tenant.as_str(),
                    &source.as_str(),
                    &every,
                    &cron,
                    &timezone,
                    &last_slot,
                ],
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
                "SELECT tenant, source, every_seconds, cron, timezone, enabled, last_slot, last_request
                 FROM schedules ORDER BY tenant, source",
                &[],
            )
            .await?;
        rows.iter()
            .map(|r| {
                let bad = |e: vaultline_types::IdError| {
                    Error::Conflict(format!("catalog holds an invalid name: {e}"))
                };
                let spec = match (r.get::<_, Option<i64>>(2), r.get::<_, Option<String>>(3)) {
                    (_, Some(expression)) => ScheduleSpec::Cron {
                        expression,
                        timezone: r.get(4),
                    },
                    (Some(seconds), None) => ScheduleSpec::Every { seconds },
                    (None, None) => {
                        return Err(Error::Conflict(
                            "a schedule has neither cron nor interval".into(),
                        ));
                    }
                };
                Ok(ScheduleRow {
                    tenant: Name::new(r.get::<_, String>(0)).map_err(bad)?,
                    source: Name::new(r.get::<_, String>(1)).map_err(bad)?,
                    spec,
                    enabled: r.get(5),
                    last_slot: r.get(6),
                    last_request: r.get(7),
                })
            })
            .collect()
    }

    /// Claims the slot that began at `slot` (unix seconds). Exactly one caller
    /// gets true per slot, however many schedulers run; a slot older than the
    /// last one is never claimed, so after downtime only the latest slot fires
    /// (one catch-up). `request` is the trigger about to be published for it;
    /// `None` claims the slot to skip it.
    ///
    /// # Errors
    /// When the query fails.
    pub async fn claim_slot(
        &self,
        tenant: &Name,
        source: &Name,
        slot: i64,
        request: Option<&str>,
    ) -> Result<bool> {
        let n = self
            .client()
            .await?
            .execute(
                "UPDATE schedules SET last_slot = $3,
                     last_request = coalesce($4, last_request),
                     last_fired_at = CASE WHEN $4::text IS NULL THEN last_fired_at ELSE now() END
                 WHERE tenant = $1 AND source = $2 AND enabled AND last_slot < $3",
                &[&tenant.as_str(), &source.as_str(), &slot, &request],
            )
            .await?;
        Ok(n == 1)
    }

    /// The request id of the source's last fired slot: the only `schedule-`
    /// request id the extractor accepts for it, so nobody else can pass a
    /// trigger off as the scheduler's.
    ///
    /// # Errors
    /// When the query fails.
    pub async fn scheduled_request(&self, tenant: &Name, source: &Name) -> Result<Option<String>> {
        Ok(self
            .client()
            .await?
            .query_opt(
                "SELECT last_request FROM schedules WHERE tenant = $1 AND source = $2",
                &[&tenant.as_str(), &source.as_str()],
            )
            .await?
            .and_then(|r| r.get(0)))
    }

    /// Whether the source has a snapshot that has not reached a final status,
    /// or a scheduled trigger fired less than [`PENDING_TRIGGER_SECONDS`] ago
    /// that no extractor has turned into a snapshot yet.
    ///
    /// # Errors
    /// When the query fails.
    pub async fn snapshot_in_flight(&self, tenant: &Name, source: &Name) -> Result<bool> {
        Ok(self
            .client()
            .await?
            .query_one(
                &format!("SELECT EXISTS (SELECT 1 FROM snapshots s WHERE s.tenant = $1 AND s.source = $2
                                  AND {IN_FLIGHT})
                     OR EXISTS (SELECT 1 FROM schedules sc WHERE sc.tenant = $1 AND sc.source = $2
                                  AND sc.last_request IS NOT NULL
                                  AND sc.last_fired_at > now() - make_interval(secs => $3)
                                  AND NOT EXISTS (SELECT 1 FROM snapshots s WHERE s.tenant = $1 AND s.source = $2
                                                                    AND s.request_id = sc.last_request))"),
                &[&tenant.as_str(), &source.as_str(), &(PENDING_TRIGGER_SECONDS as f64)],
            )
            .await?
            .get(0))
    }
}
