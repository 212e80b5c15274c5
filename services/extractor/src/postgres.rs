//! The `postgres` source's consistency: one REPEATABLE READ transaction
//! exports its snapshot, pg_dump runs inside that same snapshot
//! (`--snapshot`), and every table is counted in it. The counts are exactly
//! the rows the dump holds, however busy the database is.

use crate::draft::source_err;
use crate::stream::Program;
use vaultline_format::manifest::TableRows;
use vaultline_runtime::ErrorType;
use vaultline_runtime::StageError;
use vaultline_types::PostgresSource;

/// The open transaction whose snapshot pg_dump shares.
pub(crate) struct ExportedSnapshot {
    client: tokio_postgres::Client,
    tables: Vec<TableRows>,
}

impl ExportedSnapshot {
    /// Ends the transaction once pg_dump is done and returns the counts.
    pub(crate) async fn finish(self) -> Result<Vec<TableRows>, StageError> {
        self.client
            .batch_execute("COMMIT")
            .await
            .map_err(|e| pg_err("ending the snapshot transaction", &e))?;
        Ok(self.tables)
    }
}

pub(crate) fn pg_err(what: &str, e: &tokio_postgres::Error) -> StageError {
    // tokio-postgres errors carry the server's message, never the password.
    StageError::transient(
        ErrorType::Source,
        format!(
            "postgres source, {what}: {}",
            vaultline_databases::pg_message(e)
        ),
    )
}

/// The source URL, refused when it holds a password, and the stored
/// password (the sealed credential, opened).
pub(crate) fn url_and_password(
    url: &str,
    credential: Option<Vec<u8>>,
) -> Result<(tokio_postgres::Config, Option<String>), StageError> {
    let pg: tokio_postgres::Config = url
        .parse()
        .map_err(|e| source_err(format!("source url: {e}")))?;
    if pg.get_password().is_some() {
        return Err(source_err(
            "the source url holds a password; store it with --password-file instead",
        ));
    }
    let password = credential
        .map(String::from_utf8)
        .transpose()
        .map_err(|_| source_err("the stored credential is not UTF-8 text"))?;
    Ok((pg, password))
}

/// Connects, exports a snapshot, counts every table in it, and builds the
/// pg_dump command that reads the same snapshot.
pub(crate) async fn program(
    config: &PostgresSource,
    credential: Option<Vec<u8>>,
) -> Result<Program, StageError> {
    let (pg, password) = url_and_password(&config.url, credential)?;
    let database = pg.get_dbname().unwrap_or("postgres").to_owned();
    let client = vaultline_databases::pg_connect(&config.url, password.as_deref())
        .await
        .map_err(|e| StageError::transient(ErrorType::Source, format!("postgres source: {e:#}")))?;
    client
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await
        .map_err(|e| pg_err("starting the snapshot transaction", &e))?;
    let snapshot: String = client
        .query_one("SELECT pg_export_snapshot()", &[])
        .await
        .map_err(|e| pg_err("exporting the snapshot", &e))?
        .get(0);
    let tables = vaultline_databases::pg_table_counts(&client)
        .await
        .map_err(|e| pg_err("counting rows", &e))?
        .into_iter()
        .map(|t| TableRows {
            name: t.name,
            rows: t.rows,
        })
        .collect();
    let pg_dump = config.pg_dump.clone().unwrap_or_else(|| "pg_dump".into());
    let mut command = vaultline_databases::child_env::command(&pg_dump, &[]);
    // No compression inside the dump: zstd after chunking compresses it as
    // well, and an uncompressed dump dedups against yesterday's.
    command
        .args(["--format=custom", "--compress=0", "--no-password"])
        .arg(format!("--snapshot={snapshot}"))
        .arg(format!("--dbname={}", config.url));
    if let Some(password) = password {
        command.env("PGPASSWORD", password);
    }
    Ok(Program {
        kind: "postgres",
        shown: format!("pg_dump of {database}"),
        command,
        entry: format!("{database}.pgdump"),
        count_sql_rows: false,
        pg_snapshot: Some(ExportedSnapshot { client, tables }),
        base: None,
        cleanup: None,
    })
}
