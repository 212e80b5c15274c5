//! The physical `postgres` source: a base backup of the whole cluster with
//! pg_basebackup, streamed as one tar into the pipeline, with the WAL it
//! needs to be consistent (`-X fetch`), so the base restores on its own and
//! archived WAL (`vaultline wal-push`) rolls it forward to any later point.
//!
//! Where the base sits in the WAL comes from pg_basebackup itself (its
//! verbose start and end points); the first transaction id handed out
//! after it, the segment size and the server version from one query once
//! it is done. The extractor records them beside the snapshot.

use crate::draft::source_err;
use crate::postgres::pg_err;
use crate::stream::Program;
use vaultline_runtime::{ErrorType, StageError};
use vaultline_types::PostgresSource;
use vaultline_wal::Lsn;

/// Where a base backup sits in the WAL.
#[derive(Debug, Clone)]
pub(crate) struct BaseBackup {
    pub(crate) timeline: u32,
    pub(crate) start: Lsn,
    pub(crate) end: Lsn,
    pub(crate) segment_size: u64,
    pub(crate) next_xid: u64,
    pub(crate) server_version: u32,
}

/// The connection that asks the server about the base once pg_basebackup is done.
pub(crate) struct Probe {
    client: tokio_postgres::Client,
}

impl Probe {
    /// Reads the start and end points from pg_basebackup's stderr and asks
    /// the server for the rest.
    pub(crate) async fn finish(self, stderr: &str) -> Result<BaseBackup, StageError> {
        let (timeline, start, end) = wal_points(stderr).ok_or_else(|| {
            StageError::transient(
                ErrorType::Source,
                format!(
                    "pg_basebackup did not say where its WAL starts and ends: {}",
                    stderr.trim()
                ),
            )
        })?;
        let row = self
            .client
            .query_one(
                "SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint,
                        (SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size'),
                        current_setting('server_version_num')::integer",
                &[],
            )
            .await
            .map_err(|e| pg_err("reading the next transaction id", &e))?;
        let as_u64 = |v: i64| u64::try_from(v).unwrap_or_default();
        Ok(BaseBackup {
            timeline,
            start,
            end,
            next_xid: as_u64(row.get(0)),
            segment_size: as_u64(row.get(1)),
            server_version: u32::try_from(row.get::<_, i32>(2)).unwrap_or_default(),
        })
    }
}

/// `write-ahead log start point: 0/2000028 on timeline 1` and
/// `write-ahead log end point: 0/2000100`, as pg_basebackup --verbose
/// prints them in the C locale.
fn wal_points(stderr: &str) -> Option<(u32, Lsn, Lsn)> {
    let after = |marker: &str| {
        stderr
            .lines()
            .find_map(|line| line.split_once(marker).map(|(_, rest)| rest.trim()))
    };
    let start = after("write-ahead log start point: ")?;
    let (lsn, timeline) = start.split_once(" on timeline ")?;
    let end = after("write-ahead log end point: ")?;
    Some((
        timeline.trim().parse().ok()?,
        Lsn::parse(lsn).ok()?,
        Lsn::parse(end).ok()?,
    ))
}

/// Connects (so a wrong password fails before anything runs) and builds
/// the pg_basebackup command.
pub(crate) async fn program(
    config: &PostgresSource,
    credential: Option<Vec<u8>>,
    label: &str,
) -> Result<Program, StageError> {
    let (pg, password) = crate::postgres::url_and_password(&config.url, credential)?;
    let client = vaultline_databases::pg_connect(&config.url, password.as_deref())
        .await
        .map_err(|e| StageError::transient(ErrorType::Source, format!("postgres source: {e:#}")))?;
    let version: i32 = client
        .query_one("SELECT current_setting('server_version_num')::integer", &[])
        .await
        .map_err(|e| pg_err("reading the server version", &e))?
        .get(0);
    if version < 130_000 {
        return Err(source_err(format!(
            "a physical postgres source needs PostgreSQL 13 or newer (this server is {version})"
        )));
    }
    let host = pg
        .get_hosts()
        .first()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .unwrap_or_else(|| "localhost".into());
    let program = config
        .pg_dump
        .as_deref()
        .map(|dump| {
            // A configured pg_dump path names the client's directory.
            std::path::Path::new(dump)
                .with_file_name("pg_basebackup")
                .into_os_string()
        })
        .unwrap_or_else(|| "pg_basebackup".into());
    let mut command = vaultline_databases::child_env::command(&program, &[]);
    // The WAL it needs goes into the tar (-X fetch): a base restores on its
    // own. A fast checkpoint starts it now rather than at the next one.
    command
        .args(["--format=tar", "--pgdata=-", "--wal-method=fetch"])
        .args(["--checkpoint=fast", "--no-password", "--verbose"])
        .arg(format!("--label={label}"))
        .arg(format!("--dbname={}", config.url))
        // Its messages are read (the WAL points): untranslated, please.
        .env("LC_ALL", "C");
    if let Some(password) = password {
        command.env("PGPASSWORD", password);
    }
    Ok(Program {
        kind: "postgres-base",
        shown: format!("pg_basebackup of {host}"),
        command,
        entry: "base.tar".into(),
        count_sql_rows: false,
        pg_snapshot: None,
        base: Some(Probe { client }),
        cleanup: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wal_points_are_read_from_verbose_output() {
        let stderr = "pg_basebackup: initiating base backup, waiting for checkpoint to complete\n\
            pg_basebackup: checkpoint completed\n\
            pg_basebackup: write-ahead log start point: 0/2000028 on timeline 1\n\
            pg_basebackup: write-ahead log end point: 0/2000100\n\
            pg_basebackup: base backup completed\n";
        let (timeline, start, end) = wal_points(stderr).unwrap();
        assert_eq!((timeline, start.0, end.0), (1, 0x200_0028, 0x200_0100));
        assert!(wal_points("pg_basebackup: base backup completed\n").is_none());
    }
}
