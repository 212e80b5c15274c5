//! `vaultline restore SNAPSHOT --into URL --app URL --app-token-file F`: a
//! restore into a live application's database, in the order an operator
//! would do it by hand. Info (and a version check), maintenance on, a safety
//! snapshot through the pipeline, the restore, row counts against the
//! dump's, the application's smoke check, and maintenance off, which runs
//! whatever happened before it, Ctrl-C included. With --rollback-on-failure
//! a failed restore or check puts the safety snapshot back.

use super::app::{App, AppInfo, check_version};
use super::safety::safety_source;
use super::target::{self, Target};
use crate::access::Access;
use crate::cmd::backup::{TriggerWait, trigger_and_wait};
use crate::output::{confirm, human_bytes};
use anyhow::{Context, Result, anyhow, bail};
use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use vaultline_catalog::{Catalog, SnapshotRow};
use vaultline_runtime::Config;
use vaultline_storage::Repository;
use vaultline_types::{Name, RestoreCompleted, RestoreStep, SnapshotId, TableCheck, TriggerKind};

/// What the command line asked of a live restore.
pub(super) struct LiveArgs {
    pub(super) app: String,
    pub(super) token_file: std::path::PathBuf,
    pub(super) rollback_on_failure: bool,
    pub(super) yes: bool,
    /// The source whose backup is the safety snapshot, when the target is
    /// not the snapshot's own source.
    pub(super) safety_source: Option<String>,
    pub(super) safety_timeout: Duration,
}

/// The run so far: each step as it ended.
struct Run {
    steps: Vec<RestoreStep>,
    tables: Vec<TableCheck>,
    smoke_status: Option<u16>,
    safety: Option<SnapshotId>,
    bytes: u64,
}

impl Run {
    /// Runs one step, records it, and says what it said.
    async fn step<T>(
        &mut self,
        name: &str,
        work: impl std::future::Future<Output = Result<(T, Option<String>)>>,
    ) -> Result<T> {
        let started = Instant::now();
        let outcome = work.await;
        let (ok, detail) = match &outcome {
            Ok((_, detail)) => (true, detail.clone()),
            Err(e) => (false, Some(format!("{e:#}"))),
        };
        let duration_ms = started.elapsed().as_millis() as u64;
        eprintln!(
            "{name}: {} in {:.1}s{}",
            if ok { "ok" } else { "FAILED" },
            duration_ms as f64 / 1000.0,
            detail
                .as_deref()
                .map(|d| format!(" ({d})"))
                .unwrap_or_default()
        );
        self.steps.push(RestoreStep {
            step: name.to_owned(),
            ok,
            duration_ms,
            detail,
        });
        outcome.map(|(value, _)| value)
    }
}

/// Runs the whole live restore and records it.
#[allow(clippy::too_many_arguments)]
pub(super) async fn run(
    config: &Config,
    catalog: &Catalog,
    repository: &Repository,
    row: &SnapshotRow,
    access: Access,
    target: Target,
    live: LiveArgs,
) -> Result<ExitCode> {
    let url = match &target {
        Target::Postgres(url) | Target::Mariadb(url) => Some(url.clone()),
        Target::Command(_) => None,
        _ => bail!("--app restores into a database (--into URL) or a command (--into-command)"),
    };
    let app = App::new(&live.app, &live.token_file)?;
    let safety_source =
        safety_source(catalog, row, url.as_deref(), live.safety_source.as_deref()).await?;
    confirm(
        &format!(
            "Restore snapshot {} of {}/{} into {target} behind {}? What {target} holds now is replaced (a safety snapshot of {}/{} is taken first).",
            row.id,
            row.tenant,
            row.source,
            app.shown(),
            row.tenant,
            safety_source
        ),
        live.yes,
    )?;
    let started = time::OffsetDateTime::now_utc();
    let clock = Instant::now();
    let mut nonce = [0u8; 4];
    getrandom::fill(&mut nonce).expect("OS random source");
    let restore_id = format!(
        "restore-{}-{}",
        started.unix_timestamp(),
        hex::encode(nonce)
    );
    let mut run = Run {
        steps: Vec::new(),
        tables: Vec::new(),
        smoke_status: None,
        safety: None,
        bytes: 0,
    };
    eprintln!("restore {restore_id}: snapshot {} into {target}", row.id);

    // Before anything changes: the application answers, with a version the
    // snapshot fits. A refused token stops here.
    let info = run
        .step("info", async {
            let info = app.info().await?;
            check_version(row, &info)?;
            let detail = info.version.as_ref().map(|v| format!("version {v}"));
            Ok((info, detail))
        })
        .await;
    let app_version = info.as_ref().ok().and_then(|i| i.version.clone());
    let (outcome, error) = match info {
        Err(e) => ("failed", Some(format!("{e:#}"))),
        Ok(info) => {
            let work = guarded(
                config,
                catalog,
                repository,
                row,
                &access,
                &target,
                &live,
                &app,
                &info,
                &safety_source,
                &restore_id,
                &mut run,
            );
            let (outcome, error) = tokio::select! {
                done = work => done,
                _ = interrupted() => ("interrupted", Some("interrupted (Ctrl-C or SIGTERM)".to_owned())),
            };
            // Whatever happened above: the application leaves maintenance.
            let off = run
                .step("maintenance-off", async {
                    switch_off(&app).await.map(|()| ((), None))
                })
                .await;
            match off {
                Ok(()) => (outcome, error),
                Err(e) => (
                    "failed",
                    Some(format!(
                        "{}MAINTENANCE IS STILL ON at {}: {e:#}",
                        error.map(|e| format!("{e}; ")).unwrap_or_default(),
                        app.shown()
                    )),
                ),
            }
        }
    };
    let done = RestoreCompleted {
        tenant: row.tenant.clone(),
        source: row.source.clone(),
        snapshot: row.id.clone(),
        restore: restore_id.clone(),
        target: target.to_string(),
        outcome: outcome.to_owned(),
        safety_snapshot: run.safety.clone(),
        app_version,
        steps: run.steps,
        tables: run.tables,
        smoke_status: run.smoke_status,
        started_at: started.unix_timestamp(),
        duration_ms: clock.elapsed().as_millis() as u64,
        bytes: run.bytes,
        error: error.clone(),
    };
    crate::request::publish_record(config, &done)
        .await
        .context("the restore ended, but its restore.completed event was not published")?;
    eprintln!(
        "restore {restore_id}: {outcome} in {:.1}s ({} restored){}",
        done.duration_ms as f64 / 1000.0,
        human_bytes(done.bytes as i64),
        done.safety_snapshot
            .as_ref()
            .map(|s| format!("; safety snapshot {s}"))
            .unwrap_or_default()
    );
    match error {
        None => Ok(ExitCode::SUCCESS),
        Some(e) => Err(anyhow!("restore {restore_id} {outcome}: {e}")),
    }
}

/// Maintenance on, the safety snapshot, the restore and its checks (and a
/// rollback): what runs between the application going into maintenance and
/// coming out of it. Returns the outcome and the error, if any.
#[allow(clippy::too_many_arguments)]
async fn guarded(
    config: &Config,
    catalog: &Catalog,
    repository: &Repository,
    row: &SnapshotRow,
    access: &Access,
    target: &Target,
    live: &LiveArgs,
    app: &App,
    info: &AppInfo,
    safety_source: &Name,
    restore_id: &str,
    run: &mut Run,
) -> (&'static str, Option<String>) {
    if let Err(e) = run
        .step("maintenance-on", async {
            app.maintenance(true).await.map(|()| ((), None))
        })
        .await
    {
        return ("failed", Some(format!("{e:#}")));
    }
    let mut labels = BTreeMap::from([("safety_for".to_owned(), restore_id.to_owned())]);
    if let Some(version) = &info.version {
        labels.insert("app_version".into(), version.clone());
    }
    let safety = run
        .step("safety-snapshot", async {
            let wait = TriggerWait {
                trigger: TriggerKind::Safety,
                labels,
                timeout: live.safety_timeout,
                json: false,
            };
            let verified =
                trigger_and_wait(config, catalog, &row.tenant, safety_source, wait).await?;
            eprintln!(
                "safety snapshot {} of {}/{safety_source} is verified",
                verified.id, row.tenant
            );
            let detail = format!("{} verified", verified.id);
            Ok((verified.id, Some(detail)))
        })
        .await;
    let safety = match safety {
        Ok(id) => id,
        // Nothing was restored: nothing to roll back.
        Err(e) => return ("failed", Some(format!("{e:#}"))),
    };
    run.safety = Some(safety.clone());

    let failure = restore_and_check(repository, row, access, target, app, run)
        .await
        .err();
    let Some(failure) = failure else {
        return ("succeeded", None);
    };
    if !live.rollback_on_failure {
        return (
            "failed",
            Some(format!(
                "{failure:#} (safety snapshot {safety} holds the database as it was; restore it, or run with --rollback-on-failure)"
            )),
        );
    }
    let rolled = run
        .step("rollback", async {
            let back = catalog.find_snapshot(&safety).await?;
            let restored = put_back(repository, &back, access, target).await?;
            let checks = counts(target, &restored.tables).await?;
            let detail = format!(
                "safety snapshot {safety} restored, {} tables match",
                checks.len()
            );
            Ok(((), Some(detail)))
        })
        .await;
    match rolled {
        Ok(()) => (
            "rolled-back",
            Some(format!(
                "{failure:#}; rolled back to safety snapshot {safety}"
            )),
        ),
        Err(e) => (
            "failed",
            Some(format!(
                "{failure:#}; the rollback to safety snapshot {safety} failed too: {e:#}"
            )),
        ),
    }
}

/// The restore, the row counts and the smoke check.
async fn restore_and_check(
    repository: &Repository,
    row: &SnapshotRow,
    access: &Access,
    target: &Target,
    app: &App,
    run: &mut Run,
) -> Result<()> {
    let restored = run
        .step("restore", async {
            let done = put_back(repository, row, access, target).await?;
            let detail = format!("{} restored", human_bytes(done.bytes as i64));
            Ok((done, Some(detail)))
        })
        .await?;
    run.bytes = restored.bytes;
    if !restored.tables.is_empty() {
        let checks = run
            .step("counts", async {
                let checks = counts(target, &restored.tables).await?;
                Ok((
                    checks.clone(),
                    Some(format!("{} tables as dumped", checks.len())),
                ))
            })
            .await;
        match checks {
            Ok(checks) => run.tables = checks,
            Err(e) => {
                if let Some(found) = e.downcast_ref::<CountsDiffer>() {
                    run.tables = found.0.clone();
                }
                return Err(e);
            }
        }
    }
    let mut answered = None;
    let smoke = run
        .step("smoke", async {
            let (status, body) = app.smoke().await?;
            answered = Some(status);
            if !(200..300).contains(&status) {
                bail!("the smoke check answered {status}: {}", body.trim());
            }
            Ok(((), Some(format!("HTTP {status}"))))
        })
        .await;
    run.smoke_status = answered;
    smoke
}

/// Restores `row` into `target` (no progress display: the steps say it).
async fn put_back(
    repository: &Repository,
    row: &SnapshotRow,
    access: &Access,
    target: &Target,
) -> Result<vaultline_restore::Restored> {
    target::run(
        repository,
        &access.tenant,
        &row.id,
        &access.keyring,
        None,
        target.clone(),
        access.restore_command.clone(),
        vaultline_restore::Options::default(),
    )
    .await
}

/// Table counts that differ from the dump's, with every check for the record.
#[derive(Debug)]
struct CountsDiffer(Vec<TableCheck>);

impl std::fmt::Display for CountsDiffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let wrong: Vec<String> = self
            .0
            .iter()
            .filter(|c| c.restored != Some(c.expected))
            .map(|c| match c.restored {
                Some(n) => format!("{} has {n} rows, {} at dump time", c.table, c.expected),
                None => format!("{} is missing", c.table),
            })
            .collect();
        write!(f, "row counts differ: {}", wrong.join("; "))
    }
}

impl std::error::Error for CountsDiffer {}

/// Counts every table of the target database against `dumped`.
async fn counts(
    target: &Target,
    dumped: &[vaultline_format::manifest::TableRows],
) -> Result<Vec<TableCheck>> {
    let counted = match target {
        Target::Postgres(url) => {
            let password = std::env::var("PGPASSWORD").ok();
            let client = vaultline_databases::pg_connect(url, password.as_deref()).await?;
            vaultline_databases::pg_table_counts(&client)
                .await
                .map_err(|e| anyhow!("counting rows: {}", vaultline_databases::pg_message(&e)))?
        }
        Target::Mariadb(url) => {
            let options = vaultline_databases::MariadbOptions::new(
                std::env::var("MYSQL_PWD").ok().as_deref(),
            )?;
            let (_, database) = vaultline_databases::mariadb_args(url)?;
            vaultline_databases::mariadb_table_counts(url, &options, &database)?
        }
        _ => return Ok(Vec::new()),
    };
    let checks = vaultline_verifier::drill::compare_counts(dumped, counted);
    if checks.iter().any(|c| c.restored != Some(c.expected)) {
        return Err(CountsDiffer(checks).into());
    }
    Ok(checks)
}

/// Takes the application out of maintenance, trying three times: this is
/// the step that must not be skipped.
async fn switch_off(app: &App) -> Result<()> {
    let mut last = None;
    for attempt in 0..3 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        match app.maintenance(false).await {
            Ok(()) => return Ok(()),
            Err(e) => last = Some(e),
        }
    }
    Err(last.expect("three attempts"))
}

/// Resolves when the operator interrupts (Ctrl-C) or the process is asked to stop.
async fn interrupted() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async {
            match term.as_mut() {
                Some(term) => { term.recv().await; }
                None => std::future::pending::<()>().await,
            }
        } => {}
    }
}
