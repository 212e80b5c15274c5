//! vaultline-databases: what the database sources share. Counting every
//! table's rows (at dump time, and again after a drill's restore), making and
//! dropping scratch databases, and the MariaDB client invoked with its
//! password in a 0600 option file rather than its arguments. Every child
//! process starts from [`child_env::command`]: a cleared environment.

pub mod child_env;

use std::io::Write;

/// Why a database helper failed. Messages never hold a password.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A URL that does not parse as what it must be.
    #[error("not a {expected} URL: {cause}")]
    Url {
        expected: &'static str,
        cause: String,
    },
    /// The PostgreSQL server refused the connection or could not be reached.
    #[error("connecting to PostgreSQL: {0}")]
    Connect(String),
    /// A local file or program failed (the option file, the client binary).
    #[error("{what}: {cause}")]
    Io { what: String, cause: std::io::Error },
    /// The MariaDB client ran and failed; its stderr says why.
    #[error("{client} failed: {stderr}")]
    Client {
        client: &'static str,
        stderr: String,
    },
    /// The client answered something that is not what was asked for.
    #[error("{0}")]
    Answer(String),
}

/// Result of the database helpers.
pub type Result<T, E = Error> = std::result::Result<T, E>;

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |cause| Error::Io { what, cause }
}

fn url_error(expected: &'static str) -> impl FnOnce(String) -> Error {
    move |cause| Error::Url { expected, cause }
}

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
    let mut config: tokio_postgres::Config = url
        .parse()
        .map_err(|e: tokio_postgres::Error| url_error("PostgreSQL")(e.to_string()))?;
    if let Some(password) = password {
        config.password(password);
    }
    let (client, connection) = config
        .connect(tokio_postgres::NoTls)
        .await
        .map_err(|e| Error::Connect(pg_message(&e)))?;
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
    let mut parsed = url::Url::parse(url).map_err(|e| url_error("database")(e.to_string()))?;
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
            .map_err(io("cannot create a MariaDB option file"))?;
        let mut text = String::from("[client]\n");
        if let Some(password) = password {
            text.push_str(&format!(
                "password=\"{}\"\n",
                password.replace('\\', "\\\\").replace('"', "\\\"")
            ));
        }
        file.write_all(text.as_bytes())
            .map_err(io("cannot write a MariaDB option file"))?;
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
    let parsed = url::Url::parse(url).map_err(|e| url_error("database")(e.to_string()))?;
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
        .map_err(io(format!("cannot run {}", mariadb_client())))?;
    if !out.status.success() {
        return Err(Error::Client {
            client: mariadb_client(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
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
        return Err(Error::Answer(format!(
            "counting {} tables gave {} answers",
            names.len(),
            counts.len()
        )));
    }
    names
        .iter()
        .zip(counts)
        .map(|(name, count)| {
            Ok(TableCount {
                name: (*name).to_owned(),
                rows: count.trim().parse().map_err(|_| {
                    Error::Answer(format!("the count of {name} is not a number: {count:?}"))
                })?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mariadb_urls_become_client_arguments() {
        let (args, database) = mariadb_args("mariadb://backup@db.internal:3307/shop").unwrap();
        assert_eq!(
            args,
            [
                "--protocol=tcp",
                "--host=db.internal",
                "--port=3307",
                "--default-character-set=utf8mb4",
                "--user=backup"
            ]
        );
        assert_eq!(database, "shop");
        // Defaults: the local server on the standard port, no user, no database.
        let (args, database) = mariadb_args("mysql://127.0.0.1").unwrap();
        assert_eq!(args[1..3], ["--host=127.0.0.1", "--port=3306"]);
        assert_eq!((args.len(), database.as_str()), (4, ""));
        let refused = mariadb_args("db.internal/shop").unwrap_err().to_string();
        assert!(refused.starts_with("not a database URL"), "{refused}");
    }

    #[test]
    fn with_database_swaps_only_the_database() {
        assert_eq!(
            with_database(
                "postgres://backup@db:5433/shop?sslmode=disable",
                "scratch_1"
            )
            .unwrap(),
            "postgres://backup@db:5433/scratch_1?sslmode=disable"
        );
        assert!(with_database("no url", "x").is_err());
    }

    #[test]
    fn identifiers_are_quoted_so_no_name_can_end_the_quote() {
        assert_eq!(mariadb_ident("orders"), "`orders`");
        assert_eq!(mariadb_ident("we`ird"), "`we``ird`");
        assert_eq!(
            mariadb_ident("`; DROP TABLE x; --"),
            "```; DROP TABLE x; --`"
        );
        // Every backtick inside is doubled: the quoted name has an even
        // count between its outer quotes.
        for name in ["a", "`", "``", "a`b`c", "spaces and ; semicolons"] {
            let quoted = mariadb_ident(name);
            let inner = &quoted[1..quoted.len() - 1];
            assert_eq!(inner.replace("``", "`"), name);
            assert_eq!(inner.matches('`').count() % 2, 0, "{quoted}");
        }
    }

    #[test]
    fn the_option_file_escapes_the_password_and_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let options = MariadbOptions::new(Some(r#"p"a\ss"#)).unwrap();
        let path = options.arg();
        let path = path.strip_prefix("--defaults-extra-file=").unwrap();
        let text = std::fs::read_to_string(path).unwrap();
        // Backslashes doubled, then quotes escaped: the client reads back p"a\ss.
        assert_eq!(text, concat!("[client]\n", r#"password="p\"a\\ss""#, "\n"));
        let mode = std::fs::metadata(path).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "{mode:o}");
    }

    #[test]
    fn postgres_urls_that_do_not_parse_are_refused_before_connecting() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let refused = runtime
            .block_on(pg_connect("postgres://u@h:notaport/db", Some("secret")))
            .unwrap_err()
            .to_string();
        assert!(refused.starts_with("not a PostgreSQL URL"), "{refused}");
        assert!(!refused.contains("secret"), "{refused}");
    }
}
