//! vaultline-databases: what the database sources share. Counting every
//! table's rows (at dump time, and again after a drill's restore), making and
//! dropping scratch databases, and the MariaDB client invoked with its
//! password in a 0600 option file rather than its arguments. Every child
//! process starts from [`child_env::command`]: a cleared environment.

pub mod child_env;

use anyhow::{Context, Result, bail};
use std::io::Write;

/// Rows of one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableCount {
    /// `schema.table` in PostgreSQL (quoted where needed), `table` in MariaDB.
    pub name: String,
    pub rows: u64,
}

/// The catalog query that lists the tables counted in PostgreSQL: ordinary
/// and partitioned tables outside the system schemas, quoted with `%I`.
pub const PG_TABLES: &str = "SELECT format('%I.%I', n.nspname, c.relname)
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE c.relkind IN ('r', 'p')
        AND n.nspname NOT IN ('pg_catalog', 'information_schema')
        AND n.nspname NOT LIKE 'pg\\_toast%'
      ORDER BY 1";

/// Counts every table, in the client's current transaction (the extractor
/// calls this inside the snapshot pg_dump shares).
///
/// # Errors
/// When a query fails.
pub async fn pg_table_counts(
    client: &tokio_postgres::Client,
) -> Result<Vec<TableCount>, tokio_postgres::Error> {
    let names = client.query(PG_TABLES, &[]).await?;
    let mut counts = Vec::with_capacity(names.len());
    for row in names {
        let name: String = row.get(0);
        // The name comes quoted from format('%I'), so it is safe to splice.
        let rows: i64 = client
            .query_one(&format!("SELECT count(*) FROM {name}"), &[])
            .await?
            .get(0);
        counts.push(TableCount {
            name,
            rows: rows as u64,
        });
    }
    Ok(counts)
}

/// Connects to a PostgreSQL URL (without a password in it) with `password`.
///
/// # Errors
/// When the URL does not parse or the server refuses; the message never
/// holds the password.
pub async fn pg_connect(url: &str, password: Option<&str>) -> Result<tokio_postgres::Client> {
    let mut config: tokio_postgres::Config = url.parse().context("not a PostgreSQL URL")?;
    if let Some(password) = password {
        config.password(password);
    }
    let (client, connection) = config
        .connect(tokio_postgres::NoTls)
        .await
        .map_err(|e| anyhow::anyhow!("connecting to PostgreSQL: {}", pg_message(&e)))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "A PostgreSQL connection ended.");
        }
    });
    Ok(client)
}

/// The server's own message when there is one.
pub fn pg_message(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return db.message().to_owned();
    }
    match std::error::Error::source(e) {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    }
}

/// `url` with its database replaced by `database`.
///
/// # Errors
/// When `url` is not a URL.
pub fn with_database(url: &str, database: &str) -> Result<String> {
    let mut parsed = url::Url::parse(url).context("not a database URL")?;
    parsed.set_path(&format!("/{database}"));
    Ok(parsed.into())
}

/// A MariaDB client option file holding the password, readable by us only,
/// deleted on drop. It must be the client's first argument.
pub struct MariadbOptions(tempfile::NamedTempFile);

impl MariadbOptions {
    /// Writes `[client] password=…` (escaped as option files want).
    ///
    /// # Errors
    /// When the temporary file cannot be written.
    pub fn new(password: Option<&str>) -> Result<MariadbOptions> {
        // tempfile creates files 0600.
        let mut file = tempfile::Builder::new()
            .prefix("vaultline-my-")
            .tempfile()
            .context("cannot create a MariaDB option file")?;
        let mut text = String::from("[client]\n");
        if let Some(password) = password {
            text.push_str(&format!(
                "password=\"{}\"\n",
                password.replace('\\', "\\\\").replace('"', "\\\"")
            ));
        }
        file.write_all(text.as_bytes())
            .context("cannot write a MariaDB option file")?;
        Ok(MariadbOptions(file))
    }

    /// `--defaults-extra-file=…`, the first argument of any client call.
    pub fn arg(&self) -> String {
        format!("--defaults-extra-file={}", self.0.path().display())
    }
}

/// The last 2 KiB a program wrote to stderr, read to its end (run it on a
/// thread of its own while the program's stdout is consumed). Dump and
/// restore programs explain their failures there.
pub fn stderr_tail(mut stderr: impl std::io::Read) -> String {
    const TAIL: usize = 2048;
    let mut kept = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = stderr.read(&mut buf) {
        if n == 0 {
            break;
        }
        kept.extend_from_slice(&buf[..n]);
        if kept.len() > 4 * TAIL {
            kept.drain(..kept.len() - TAIL);
        }
    }
    let start = kept.len().saturating_sub(TAIL);
    String::from_utf8_lossy(&kept[start..]).into_owned()
}

/// `mariadb`, else `mysql` (older installs).
pub fn mariadb_client() -> &'static str {
    if on_path("mariadb") {
        "mariadb"
    } else {
        "mysql"
    }
}

/// True when `program` is an executable on PATH.
pub fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

/// The connection arguments (after the option file) for a MariaDB URL, and
/// its database.
///
/// # Errors
/// When the URL does not parse.
pub fn mariadb_args(url: &str) -> Result<(Vec<String>, String)> {
    let parsed = url::Url::parse(url).context("not a database URL")?;
    let mut args = vec![
        "--protocol=tcp".to_owned(),
        format!("--host={}", parsed.host_str().unwrap_or("127.0.0.1")),
        format!("--port={}", parsed.port().unwrap_or(3306)),
        "--default-character-set=utf8mb4".to_owned(),
    ];
    if !parsed.username().is_empty() {
        args.push(format!("--user={}", parsed.username()));
    }
    Ok((args, parsed.path().trim_start_matches('/').to_owned()))
}

/// Runs SQL with the MariaDB client (batch mode, no headers) and returns its output.
///
/// # Errors
/// When the client fails; the error carries its stderr.
pub fn mariadb_sql(
    url: &str,
    options: &MariadbOptions,
    database: Option<&str>,
    sql: &str,
) -> Result<String> {
    let (args, _) = mariadb_args(url)?;
    let mut command = child_env::command(mariadb_client(), &[]);
    command
        .arg(options.arg())
        .args(args)
        .args(["-N", "-B", "-e", sql]);
    if let Some(database) = database {
        command.arg(database);
    }
    let out = command
        .output()
        .with_context(|| format!("cannot run {}", mariadb_client()))?;
    if !out.status.success() {
        bail!(
            "{} failed: {}",
            mariadb_client(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Quotes a MariaDB identifier.
pub fn mariadb_ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// Counts every base table of a MariaDB database.
///
/// # Errors
/// When the client fails.
pub fn mariadb_table_counts(
    url: &str,
    options: &MariadbOptions,
    database: &str,
) -> Result<Vec<TableCount>> {
    let listing = mariadb_sql(
        url,
        options,
        Some(database),
        "SELECT table_name FROM information_schema.tables \
         WHERE table_schema = DATABASE() AND table_type = 'BASE TABLE' ORDER BY table_name",
    )?;
    let names: Vec<&str> = listing.lines().filter(|l| !l.is_empty()).collect();
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let sql = names
        .iter()
        .map(|name| format!("SELECT COUNT(*) FROM {}", mariadb_ident(name)))
        .collect::<Vec<_>>()
        .join("; ");
    let output = mariadb_sql(url, options, Some(database), &sql)?;
    let counts: Vec<&str> = output.lines().collect();
    if counts.len() != names.len() {
        bail!(
            "counting {} tables gave {} answers",
            names.len(),
            counts.len()
        );
    }
    names
        .iter()
        .zip(counts)
        .map(|(name, count)| {
            Ok(TableCount {
                name: (*name).to_owned(),
                rows: count
                    .trim()
                    .parse()
                    .context("a count that is not a number")?,
            })
        })
        .collect()
}
