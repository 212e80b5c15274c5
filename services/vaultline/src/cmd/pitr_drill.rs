//! `vaultline drill T/S` for a physical postgres source: a point-in-time
//! recovery, run here. It restores to a random point of the recoverable
//! window, starts PostgreSQL on the result (a private socket, no TCP),
//! waits for recovery to reach the point and promote, reads every
//! database's catalog, stops the server and records the drill.
//!
//! The point is an LSN, not a time: a recovery target time with no commit
//! after it in the archive never counts as reached (PostgreSQL stops with
//! "recovery ended before configured recovery target was reached"), while
//! an LSN before the last archived segment always has records after it.
//! PostgreSQL refuses to run as root, so neither does the drill.

use crate::cmd::pitr::Archive;
use crate::cmd::restore::pitr::{Prepared, RecoveryTarget, prepare};
use crate::context::catalog;
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};
use time::OffsetDateTime;
use vaultline_catalog::DrillRow;
use vaultline_runtime::Config;
use vaultline_types::Name;
use vaultline_wal::Lsn;

/// How long recovery may take before the drill fails.
const RECOVERY_LIMIT: Duration = Duration::from_secs(1800);

/// A random LSN from the end of the earliest base to the start of the last
/// segment the latest base reaches; `latest` when that range is empty.
fn random_target(archive: &Archive) -> Result<RecoveryTarget> {
    let (Some(first), Some(reach)) = (archive.bases.first(), archive.window.reach.last()) else {
        bail!("no stored base backup: take one (vaultline backup) before drilling");
    };
    let low = first.end_lsn as u64;
    // The start of the last archived segment: records always follow it.
    let high = reach
        .segments_end
        .map_or(0, |end| end.0 - archive.segment_size);
    if high <= low {
        return Ok(RecoveryTarget::Latest);
    }
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).context("no randomness")?;
    Ok(RecoveryTarget::Lsn(Lsn(
        low + u64::from_le_bytes(bytes) % (high - low)
    )))
}

/// The `postgres` binary of the base's major version.
fn postgres_binary(server_version: i32) -> Result<PathBuf> {
    let major = server_version / 10_000;
    let packaged = PathBuf::from(format!("/usr/lib/postgresql/{major}/bin/postgres"));
    if packaged.exists() {
        return Ok(packaged);
    }
    vaultline_databases::on_path("postgres")
        .then(|| PathBuf::from("postgres"))
        .with_context(|| {
            format!(
                "no PostgreSQL {major} server here (looked for {} and postgres on PATH)",
                packaged.display()
            )
        })
}

/// The last lines of the drill server's log, for a failure.
fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(8)..].join("\n")
}

/// Stops the drill server when the drill ends, however it ends.
struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        // SIGINT is PostgreSQL's fast shutdown.
        let pid = rustix::process::Pid::from_child(&self.0);
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::INT);
        let _ = self.0.wait();
    }
}

/// Starts PostgreSQL on `data`, reachable only on a socket in `scratch`
/// and trusting it (its own pg_hba.conf there: the source's may want
/// passwords or peers this host lacks), waits for recovery to end, and
/// reads every database; returns how many it read.
async fn recover(binary: &Path, data: &Path, scratch: &Path, log: &Path) -> Result<usize> {
    let hba = scratch.join("pg_hba.conf");
    std::fs::write(&hba, "local all all trust\n")?;
    // A cluster whose configuration lives outside its data directory
    // (Debian's /etc/postgresql) restores without one.
    if !data.join("postgresql.conf").exists() {
        std::fs::write(data.join("postgresql.conf"), "")?;
    }
    let mut server = Server(
        std::process::Command::new(binary)
            .arg("-D")
            .arg(data)
            .args(["-p", "5432", "-c", "listen_addresses="])
            .arg("-c")
            .arg(format!("hba_file={}", hba.display()))
            .arg("-k")
            .arg(scratch)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(log)?)
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?,
    );
    // The cluster's superuser is who ran initdb, usually postgres.
    let users = [whoami(), "postgres".to_owned()];
    let connect = |user: &str, database: &str| {
        let mut config = tokio_postgres::Config::new();
        config
            .host_path(scratch)
            .port(5432)
            .user(user)
            .dbname(database);
        config
    };
    let deadline = Instant::now() + RECOVERY_LIMIT;
    let (client, user) = 'wait: loop {
        if Instant::now() > deadline {
            bail!(
                "recovery did not end within {RECOVERY_LIMIT:?}: {}",
                log_tail(log)
            );
        }
        if let Some(status) = server.0.try_wait()? {
            bail!("PostgreSQL exited with {status}: {}", log_tail(log));
        }
        for user in &users {
            let Ok((client, connection)) = connect(user, "postgres")
                .connect(tokio_postgres::NoTls)
                .await
            else {
                continue;
            };
            tokio::spawn(connection);
            let in_recovery = client
                .query_one("SELECT pg_is_in_recovery()", &[])
                .await
                .map(|row| row.get::<_, bool>(0));
            if let Ok(false) = in_recovery {
                break 'wait (client, user.clone());
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let databases: Vec<String> = client
        .query(
            "SELECT datname FROM pg_database WHERE datallowconn ORDER BY datname",
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    for database in &databases {
        let (db, connection) = connect(&user, database)
            .connect(tokio_postgres::NoTls)
            .await?;
        tokio::spawn(connection);
        db.query_one("SELECT count(*) FROM pg_class", &[])
            .await
            .with_context(|| format!("reading database {database}"))?;
    }
    drop(server);
    Ok(databases.len())
}

fn whoami() -> String {
    uzers::get_current_username()
        .and_then(|n| n.into_string().ok())
        .unwrap_or_else(|| "postgres".into())
}

/// `vaultline drill T/S` of a physical source.
pub(crate) async fn run(
    config: &Config,
    config_file: Option<&Path>,
    tenant: &Name,
    source: &Name,
    json: bool,
) -> Result<ExitCode> {
    if rustix::process::geteuid().is_root() {
        bail!(
            "a PITR drill starts PostgreSQL, which refuses to run as root: run it as the user that runs PostgreSQL (runuser -u postgres -- vaultline drill {tenant}/{source})"
        );
    }
    let catalog = catalog(config).await?;
    let archive = Archive::load(&catalog, tenant, source).await?;
    let target = random_target(&archive)?;
    let scratch = tempfile::Builder::new()
        .prefix("vaultline-pitr-drill")
        .tempdir()?;
    let data = scratch.path().join("data");
    let log = scratch.path().join("postgres.log");
    let started_at = OffsetDateTime::now_utc();
    let started = Instant::now();
    let keys = crate::access::KeyFlags {
        identity: None,
        tenant: None,
        repo: None,
    };
    let mut snapshot = None;
    let outcome: Result<usize> = async {
        let Prepared { base, .. } =
            prepare(config, config_file, tenant, source, &target, &data, &keys).await?;
        snapshot = Some(base.snapshot.clone());
        let binary = postgres_binary(base.server_version)?;
        recover(&binary, &data, scratch.path(), &log).await
    }
    .await;
    let duration = started.elapsed();
    let (passed, error) = match &outcome {
        Ok(_) => (true, None),
        Err(e) => (false, Some(format!("{e:#}"))),
    };
    let row = DrillRow {
        tenant: tenant.to_string(),
        source: source.to_string(),
        snapshot: snapshot.clone(),
        request_id: None,
        started_at,
        duration_ms: duration.as_millis() as i64,
        outcome: if passed { "passed" } else { "failed" }.into(),
        tables: serde_json::json!([]),
        error: error.clone(),
    };
    catalog.record_drill(&row).await?;
    if json {
        crate::output::print_json(&row)?;
    } else {
        println!(
            "PITR drill of {tenant}/{source} {} in {:.1}s: base {}, recovered to {target}{}",
            row.outcome.to_uppercase(),
            duration.as_secs_f64(),
            snapshot.as_deref().unwrap_or("none"),
            match &outcome {
                Ok(n) => format!(", promoted, {n} databases read"),
                Err(_) => String::new(),
            }
        );
        if let Some(error) = &error {
            println!("  error: {error}");
        }
    }
    Ok(if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
