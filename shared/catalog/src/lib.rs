//! vaultline-catalog: the PostgreSQL index of tenants, sources, snapshots,
//! packs, chunks, executions and the audit trail. The repository is the truth;
//! this is an index that makes lookups cheap.

mod audit;
mod chunks;
mod copies;
mod drift;
mod drills;
mod gc;
mod history;
mod in_flight;
mod integrity;
mod locks;
mod recovered;
mod restores;
mod rotation;
mod schedules;
mod snapshot_packs;
mod snapshots;
mod tenants;
mod tokens;
mod verifications;
mod wal;
mod webhooks;

pub use audit::{AuditCheck, AuditEvent, BrokenRow, FinishedRun, audit_hash};
pub use chunks::{BatchKey, ChunkLocation, StoredChunk};
pub use copies::{CopiedObject, CopyDue, CopyLag, CopyState};
pub use drills::{DrillRow, timer_drill_id};
pub use gc::{CONDEMN_SLACK_SECONDS, DoomedPack, GcPlan, LockedPack, SWEEP_BATCH};
pub use history::{ExecutionRow, RepositoryStats, SourceStats};
pub use in_flight::{InFlight, StuckSnapshot};
pub use integrity::{DuePack, IntegrityState};
pub use locks::SnapshotLock;
pub use recovered::{RecoveredKey, RecoveredSnapshot};
pub use restores::RestoreRow;
pub use rotation::{NewKey, Sealed};
pub use schedules::{PENDING_TRIGGER_SECONDS, ScheduleRow};
pub use snapshot_packs::SnapshotPack;
pub use snapshots::SnapshotRow;
pub use tenants::{ChunkKeyRow, NewSource, SourceRow, TenantKeyRow};
pub use tokens::{Caller, Refusal, Scope, TokenRow};
pub use vaultline_policy::ScheduleSpec;
pub use vaultline_types::SnapshotStatus;
pub use wal::{BaseBackupRow, WalFileRow, WalPush, WalStats};
pub use webhooks::{AttemptOutcome, DueDelivery, WebhookRow};

use deadpool_postgres::{Pool, PoolConfig, Runtime, Timeouts};
use std::time::Duration;

/// Errors of the catalog.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database could not be reached or a query failed at the transport level.
    #[error("catalog unavailable: {0}")]
    Unavailable(String),
    /// A query failed.
    #[error("catalog query failed: {}", describe(.0))]
    Query(#[from] tokio_postgres::Error),
    /// A lookup found nothing.
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with what exists.
    #[error("{0}")]
    Conflict(String),
}

impl Error {
    /// True when retrying may help: the database is down or a transaction
    /// was chosen as a serialisation or deadlock victim.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Unavailable(_) => true,
            Error::Query(e) => {
                e.is_closed()
                    || e.code().is_none()
                    || e.code().is_some_and(|c| {
                        c == &tokio_postgres::error::SqlState::T_R_SERIALIZATION_FAILURE
                            || c == &tokio_postgres::error::SqlState::T_R_DEADLOCK_DETECTED
                            || c.code().starts_with("08")
                            || c.code().starts_with("57")
                    })
            }
            Error::NotFound(_) | Error::Conflict(_) => false,
        }
    }
}

impl From<deadpool_postgres::PoolError> for Error {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        match e {
            deadpool_postgres::PoolError::Backend(e) => Error::Unavailable(describe(&e)),
            other => Error::Unavailable(other.to_string()),
        }
    }
}

/// tokio-postgres says only "db error"; the server's own message is what helps.
fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{} ({})", db.message(), db.code().code());
    }
    match std::error::Error::source(e) {
        Some(source) => format!("{e}: {source}"),
        None => e.to_string(),
    }
}

/// Result of the catalog.
pub type Result<T> = std::result::Result<T, Error>;

/// Migrations embedded in the binary, applied in order.
const MIGRATIONS: &[(i32, &str)] = &[
    (1, include_str!("../migrations/0001_initial.sql")),
    (2, include_str!("../migrations/0002_schedules.sql")),
    (3, include_str!("../migrations/0003_operating_loop.sql")),
    (4, include_str!("../migrations/0004_data_path.sql")),
    (5, include_str!("../migrations/0005_pack_hashing.sql")),
    (
        6,
        include_str!("../migrations/0006_request_ids_per_source.sql"),
    ),
    (
        7,
        include_str!("../migrations/0007_drills_on_scratch_servers.sql"),
    ),
    (8, include_str!("../migrations/0008_stage_roles.sql")),
    (9, include_str!("../migrations/0009_key_rotation.sql")),
    (10, include_str!("../migrations/0010_observer.sql")),
    (11, include_str!("../migrations/0011_copies.sql")),
    (12, include_str!("../migrations/0012_object_lock.sql")),
    (13, include_str!("../migrations/0013_pitr.sql")),
    (14, include_str!("../migrations/0014_restore_workflows.sql")),
    (15, include_str!("../migrations/0015_api.sql")),
    (16, include_str!("../migrations/0016_verifications.sql")),
];

/// A pool of catalog connections.
#[derive(Clone)]
pub struct Catalog {
    pool: Pool,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Catalog")
    }
}

impl Catalog {
    /// Creates a pool for a `postgres://` URL. Connects lazily.
    ///
    /// # Errors
    /// When the URL cannot be parsed.
    pub fn connect(url: &str) -> Result<Self> {
        Catalog::connect_as(url, None, None)
    }

    /// Like [`Catalog::connect`], as `user` (instead of the URL's) and with
    /// `password` (instead of one in the URL): each stage has its own role.
    ///
    /// # Errors
    /// When the URL does not parse.
    pub fn connect_as(url: &str, user: Option<&str>, password: Option<&str>) -> Result<Self> {
        let mut config = deadpool_postgres::Config::new();
        config.url = Some(url.to_owned());
        config.user = user.map(str::to_owned);
        config.password = password.map(str::to_owned);
        let mut pool = PoolConfig::new(16);
        // Bounded waits: a dead database must turn /health/ready red, not hang it.
        pool.timeouts = Timeouts {
            wait: Some(Duration::from_secs(10)),
            create: Some(Duration::from_secs(5)),
            recycle: Some(Duration::from_secs(5)),
        };
        config.pool = Some(pool);
        let pool = config
            .create_pool(Some(Runtime::Tokio1), tokio_postgres::NoTls)
            .map_err(|e| Error::Unavailable(format!("invalid catalog URL: {e}")))?;
        Ok(Catalog { pool })
    }

    pub(crate) async fn client(&self) -> Result<deadpool_postgres::Object> {
        Ok(self.pool.get().await?)
    }

    /// Applies the embedded migrations that are missing. Safe to run from
    /// several processes at once (an advisory lock serialises them).
    ///
    /// # Errors
    /// When the database is unreachable or a migration fails.
    pub async fn migrate(&self) -> Result<Vec<i32>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock(7261636)", &[])
            .await?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                 version INTEGER PRIMARY KEY,
                 applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
        )
        .await?;
        let applied: Vec<i32> = tx
            .query("SELECT version FROM schema_migrations", &[])
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let mut newly = Vec::new();
        for (version, sql) in MIGRATIONS {
            if applied.contains(version) {
                continue;
            }
            tx.batch_execute(sql).await?;
            tx.execute(
                "INSERT INTO schema_migrations (version) VALUES ($1)",
                &[version],
            )
            .await?;
            newly.push(*version);
        }
        tx.commit().await?;
        Ok(newly)
    }

    /// Checks that every migration this release knows has been applied:
    /// stages never migrate, `vaultline migrate` does.
    ///
    /// # Errors
    /// [`Error::NotFound`] naming the missing versions, or when the
    /// database cannot be read.
    pub async fn check_schema(&self) -> Result<()> {
        let client = self.client().await?;
        let applied: Vec<i32> = match client
            .query("SELECT version FROM schema_migrations", &[])
            .await
        {
            Ok(rows) => rows.iter().map(|r| r.get(0)).collect(),
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => {
                Vec::new()
            }
            Err(e) => return Err(e.into()),
        };
        let missing: Vec<i32> = MIGRATIONS
            .iter()
            .map(|(version, _)| *version)
            .filter(|v| !applied.contains(v))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        Err(Error::NotFound(format!(
            "the catalog lacks migration(s) {missing:?}; run `vaultline migrate` (as the role \
             that owns the catalog)"
        )))
    }

    /// Checks the database answers (for `/health/ready`).
    ///
    /// # Errors
    /// When it does not within the pool's timeouts.
    pub async fn ping(&self) -> Result<()> {
        self.client().await?.simple_query("SELECT 1").await?;
        Ok(())
    }
}
