//! The execution history and the figures `vaultline stats` shows.

use crate::{Catalog, Result};
use time::OffsetDateTime;
use vaultline_types::Name;

/// One backup run as the auditor recorded it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ExecutionRow {
    pub tenant: String,
    pub source: String,
    pub snapshot: String,
    /// `scheduled`, `manual` or `external`.
    pub trigger: String,
    /// `running`, `succeeded`, `failed` or `corrupt`.
    pub status: String,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
    pub duration_ms: Option<i64>,
    pub bytes_read: Option<i64>,
    pub bytes_stored: Option<i64>,
    pub error: Option<String>,
}

/// Per-source figures.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SourceStats {
    pub tenant: String,
    pub source: String,
    pub runs: i64,
    pub succeeded: i64,
    pub failed: i64,
    /// succeeded / finished runs, when any finished.
    pub success_rate: Option<f64>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_success: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_verified: Option<OffsetDateTime>,
    /// Snapshots not yet expired.
    pub live_snapshots: i64,
    /// How the newest finished run ended (succeeded, failed, corrupt).
    pub last_outcome: Option<String>,
    /// Runs failed or found corrupt since the last success.
    pub failure_streak: i64,
    /// When the newest drill started, whether it passed, how long it took.
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_drill_at: Option<OffsetDateTime>,
    pub last_drill_passed: Option<bool>,
    pub last_drill_ms: Option<i64>,
    /// How long the newest successful run took, start to verified.
    pub last_success_ms: Option<i64>,
    /// Seconds between drills, when the source wants them.
    pub drill_every_seconds: Option<i64>,
}

/// Per-tenant repository figures.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RepositoryStats {
    pub tenant: String,
    pub packs: i64,
    /// Bytes of packs and of live snapshots' manifests.
    pub stored_bytes: i64,
    /// Bytes the live verified snapshots read from their sources.
    pub logical_bytes: i64,
    /// logical / stored: how many times over deduplication and compression pay.
    pub dedup_ratio: Option<f64>,
}

impl Catalog {
    /// Newest runs first, optionally of one tenant or source.
    ///
    /// # Errors
    /// When the query fails.
    pub async fn executions(
        &self,
        tenant: Option<&str>,
        source: Option<&str>,
        limit: i64,
    ) -> Result<Vec<ExecutionRow>> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT tenant, source, snapshot, trigger, status, started_at, finished_at, duration_ms,
                        bytes_read, bytes_stored, error
                 FROM executions WHERE ($1::text IS NULL OR tenant = $1) AND ($2::text IS NULL OR source = $2)
                 ORDER BY started_at DESC, snapshot DESC LIMIT $3",
                &[&tenant, &source, &limit],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| ExecutionRow {
                tenant: r.get(0),
                source: r.get(1),
                snapshot: r.get(2),
                trigger: r.get(3),
                status: r.get(4),
                started_at: r.get(5),
                finished_at: r.get(6),
                duration_ms: r.get(7),
                bytes_read: r.get(8),
                bytes_stored: r.get(9),
                error: r.get(10),
            })
            .collect())
    }

    /// Figures per source, for every source.
    ///
    /// # Errors
    /// When the query fails.
    pub async fn source_stats(&self) -> Result<Vec<SourceStats>> {
        self.source_stats_of(None, None).await
    }

    /// Figures of one tenant's sources, or of one of them: only those
    /// computed (the HTTP API asks per call).
    ///
    /// # Errors
    /// When the query fails.
    pub async fn source_stats_of(
        &self,
        tenant: Option<&Name>,
        source: Option<&Name>,
    ) -> Result<Vec<SourceStats>> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT so.tenant, so.name,
                        (SELECT count(*) FROM executions e WHERE e.tenant = so.tenant AND e.source = so.name),
                        (SELECT count(*) FROM executions e WHERE e.tenant = so.tenant AND e.source = so.name AND e.status = 'succeeded'),
                        (SELECT count(*) FROM executions e WHERE e.tenant = so.tenant AND e.source = so.name AND e.status IN ('failed', 'corrupt')),
                        won.success,
                        (SELECT max(s.verified_at) FROM snapshots s WHERE s.tenant = so.tenant AND s.source = so.name),
                        (SELECT count(*) FROM snapshots s WHERE s.tenant = so.tenant AND s.source = so.name AND s.status <> 'expired'),
                        (SELECT e.status FROM executions e WHERE e.tenant = so.tenant AND e.source = so.name
                            AND e.finished_at IS NOT NULL ORDER BY e.finished_at DESC LIMIT 1),
                        (SELECT count(*) FROM executions e WHERE e.tenant = so.tenant AND e.source = so.name
                            AND e.status IN ('failed', 'corrupt') AND e.finished_at > coalesce(won.success, '-infinity')),
                        d.started_at, d.outcome = 'passed', d.duration_ms,
                        won.duration_ms, so.drill_every_seconds
                 FROM sources so
                 LEFT JOIN LATERAL (SELECT e.finished_at AS success, e.duration_ms FROM executions e
                     WHERE e.tenant = so.tenant AND e.source = so.name AND e.status = 'succeeded'
                     ORDER BY e.finished_at DESC LIMIT 1) won ON true
                 LEFT JOIN LATERAL (SELECT started_at, outcome, duration_ms FROM drills d
                     WHERE d.tenant = so.tenant AND d.source = so.name ORDER BY started_at DESC LIMIT 1) d ON true
                 WHERE ($1::text IS NULL OR so.tenant = $1) AND ($2::text IS NULL OR so.name = $2)
                 ORDER BY so.tenant, so.name",
                &[&tenant.map(Name::as_str), &source.map(Name::as_str)],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| {
                let (succeeded, failed): (i64, i64) = (r.get(3), r.get(4));
                SourceStats {
                    tenant: r.get(0),
                    source: r.get(1),
                    runs: r.get(2),
                    succeeded,
                    failed,
                    success_rate: (succeeded + failed > 0)
                        .then(|| succeeded as f64 / (succeeded + failed) as f64),
                    last_success: r.get(5),
                    last_verified: r.get(6),
                    live_snapshots: r.get(7),
                    last_outcome: r.get(8),
                    failure_streak: r.get(9),
                    last_drill_at: r.get(10),
                    last_drill_passed: r.get(11),
                    last_drill_ms: r.get(12),
                    last_success_ms: r.get(13),
                    drill_every_seconds: r.get(14),
                }
            })
            .collect())
    }

    /// Repository figures per tenant.
    ///
    /// # Errors
    /// When the query fails.
    pub async fn repository_stats(&self) -> Result<Vec<RepositoryStats>> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT t.name,
                        (SELECT count(*) FROM packs p WHERE p.tenant = t.name AND NOT p.deleting),
                        (SELECT coalesce(sum(p.size), 0)::bigint FROM packs p WHERE p.tenant = t.name AND NOT p.deleting)
                          + (SELECT coalesce(sum(s.manifest_size), 0)::bigint FROM snapshots s
                             WHERE s.tenant = t.name AND s.status NOT IN ('expired', 'failed')),
                        (SELECT coalesce(sum(s.bytes_read), 0)::bigint FROM snapshots s
                             WHERE s.tenant = t.name AND s.status = 'verified')
                 FROM tenants t ORDER BY t.name",
                &[],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| {
                let (stored, logical): (i64, i64) = (r.get(2), r.get(3));
                RepositoryStats {
                    tenant: r.get(0),
                    packs: r.get(1),
                    stored_bytes: stored,
                    logical_bytes: logical,
                    dedup_ratio: (stored > 0).then(|| logical as f64 / stored as f64),
                }
            })
            .collect())
    }
}
