//! vaultline-testkit: real servers for integration tests, started on free
//! ports with temporary directories and stopped on drop. No mocks.
//!
//! - Garage (S3), MariaDB, Prometheus, moto and OpenSSH's sshd: see their modules.
//! - nats-server: `VAULTLINE_NATS_SERVER` or `nats-server` on PATH; must be 2.10+.
//!   It runs with the shipped users and permissions (`deploy/nats/auth.conf`),
//!   alone or as the 3-server cluster of `deploy/nats/cluster`.
//! - PostgreSQL: `VAULTLINE_TEST_PG_URL` points at an existing server (a fresh
//!   database is created per test), else a private cluster is made with
//!   `initdb` from /usr/lib/postgresql/*/bin (as the `postgres` user when root).

mod garage;
mod mariadb;
mod moto;
mod nats;
mod nats_cluster;
mod prometheus;
mod sshd;
pub use garage::{Garage, garage_binary};
pub use mariadb::MariaDb;
pub use moto::{Moto, ObjectRetention};
pub use nats::{NATS_ROLES, NatsServer};
pub use nats_cluster::NatsCluster;
pub use prometheus::Prometheus;
pub use sshd::{SFTP_USER, Sshd};

use anyhow::{Context, Result, bail};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free TCP port on loopback (released before returning; a tiny race we accept in tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Stops a server this harness started, if it still runs, and reaps it.
pub(crate) fn kill(child: Option<Child>) {
    if let Some(mut child) = child {
        let _ = child.kill();
        let _ = child.wait();
    }
}

pub(crate) fn wait_for_port(port: u16, what: &str, child: &mut Child) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            bail!("{what} exited with {status} before listening on {port}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("{what} did not listen on port {port} within 30s")
}

/// Starts a server that cannot pick its own port (PostgreSQL, MariaDB) on a
/// free one, and on another when it exits before listening: between
/// [`free_port`] releasing a port and the server binding it, another test
/// may take it. Three tries; a server that fails three times is broken.
pub(crate) fn spawn_on_free_port(
    what: &str,
    mut spawn: impl FnMut(u16) -> Result<Child>,
) -> Result<(u16, Child)> {
    let mut last = None;
    for _ in 0..3 {
        let port = free_port();
        let mut child = spawn(port)?;
        match wait_for_port(port, what, &mut child) {
            Ok(()) => return Ok((port, child)),
            // Exited: most likely the port was taken meanwhile. Try another.
            Err(e) if child.try_wait()?.is_some() => last = Some(e),
            Err(e) => {
                kill(Some(child));
                return Err(e);
            }
        }
    }
    Err(last
        .expect("three tries")
        .context(format!("{what} did not start on three ports")))
}

/// A PostgreSQL database for one test.
pub struct Postgres {
    url: String,
    child: Option<Child>,
    _dir: Option<tempfile::TempDir>,
    /// Port of a private cluster.
    pub port: u16,
}

impl Postgres {
    /// Starts a private cluster, or creates a database on `VAULTLINE_TEST_PG_URL`.
    ///
    /// # Errors
    /// When PostgreSQL's binaries are missing or it does not start.
    pub fn start() -> Result<Postgres> {
        Postgres::start_cluster(None)
    }

    /// Starts a private cluster whose `postgres` user needs `password` over
    /// TCP (scram-sha-256), like a production database; the URL holds no password.
    ///
    /// # Errors
    /// As [`Postgres::start`].
    pub fn start_with_password(password: &str) -> Result<Postgres> {
        Postgres::start_cluster(Some(password))
    }

    /// Starts a private cluster (never the shared server) with more
    /// server settings, `name=value` each: archiving for PITR tests.
    ///
    /// # Errors
    /// As [`Postgres::start`].
    pub fn start_with_settings(settings: &[String]) -> Result<Postgres> {
        Postgres::start_private(None, settings)
    }

    fn start_cluster(password: Option<&str>) -> Result<Postgres> {
        if let Some(base) = std::env::var("VAULTLINE_TEST_PG_URL")
            .ok()
            .filter(|_| password.is_none())
        {
            let name = format!("vaultline_test_{}_{}", std::process::id(), free_port());
            let status = Command::new("psql")
                .args([&base, "-qc", &format!("CREATE DATABASE {name}")])
                .status()?;
            if !status.success() {
                bail!("cannot create database {name} on {base}");
            }
            let url = match base.rsplit_once('/') {
                Some((server, _)) => format!("{server}/{name}"),
                None => bail!("VAULTLINE_TEST_PG_URL must end with /database"),
            };
            return Ok(Postgres {
                url,
                child: None,
                _dir: None,
                port: 0,
            });
        }
        Postgres::start_private(password, &[])
    }

    fn start_private(password: Option<&str>, settings: &[String]) -> Result<Postgres> {
        let bin = postgres_bin()?;
        let dir = tempfile::tempdir()?;
        let data = dir.path().join("data");
        if as_root() {
            // PostgreSQL refuses to run as root; the cluster belongs to `postgres`.
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()?;
            if !status.success() {
                bail!("cannot hand {} to the postgres user", dir.path().display());
            }
        }
        let mut initdb = run_as_postgres(&bin.join("initdb"));
        initdb.args(["-U", "postgres", "-E", "UTF8", "--no-sync"]);
        match password {
            None => {
                initdb.args(["-A", "trust"]);
            }
            Some(password) => {
                let pwfile = dir.path().join("pwfile");
                std::fs::write(&pwfile, password)?;
                if as_root() {
                    let _ = Command::new("chown").arg("postgres").arg(&pwfile).status();
                }
                initdb
                    .args(["--auth-local=trust", "--auth-host=scram-sha-256"])
                    .arg(format!("--pwfile={}", pwfile.display()));
            }
        }
        let out = initdb.arg("-D").arg(&data).output()?;
        if !out.status.success() {
            bail!("initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Postgres::serve(dir, &data, settings)
    }

    /// Starts PostgreSQL on an existing data directory (a restored one,
    /// which may first replay WAL) that the `postgres` user owns when
    /// root runs the tests; its socket goes into `dir`, which is removed
    /// when the server is dropped.
    ///
    /// # Errors
    /// When it does not start or accept connections within 30 s (a
    /// cluster in recovery accepts them once it is consistent).
    pub fn start_on(dir: tempfile::TempDir, data: &Path) -> Result<Postgres> {
        Postgres::serve(dir, data, &[])
    }

    fn serve(dir: tempfile::TempDir, data: &Path, settings: &[String]) -> Result<Postgres> {
        let bin = postgres_bin()?;
        let (port, child) = spawn_on_free_port("postgres", |port| {
            let mut command = run_as_postgres(&bin.join("postgres"));
            command
                .arg("-D")
                .arg(data)
                .args([
                    "-p",
                    &port.to_string(),
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    "fsync=off",
                ])
                .args([
                    "-c",
                    "synchronous_commit=off",
                    "-c",
                    "full_page_writes=off",
                    "-k",
                ])
                .arg(dir.path());
            // Given last, so they win over the defaults above.
            for setting in settings {
                command.arg("-c").arg(setting);
            }
            let log = std::fs::File::create(dir.path().join("server.log"))?;
            Ok(command.stdout(Stdio::null()).stderr(log).spawn()?)
        })?;
        // The port opens before recovery ends ("the database system is starting up").
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = Command::new(bin.join("pg_isready"))
                .args([
                    "-q",
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &port.to_string(),
                    "-U",
                    "postgres",
                ])
                .status()?;
            if ready.success() {
                break;
            }
            if Instant::now() > deadline {
                bail!("postgres on port {port} did not accept connections within 30s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Postgres {
            url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
            child: Some(child),
            _dir: Some(dir),
            port,
        })
    }

    /// The private cluster's directory: its socket, its log
    /// (`server.log`), and `data` when the harness ran initdb.
    pub fn dir(&self) -> Option<&Path> {
        self._dir.as_ref().map(tempfile::TempDir::path)
    }

    /// What a private cluster's server wrote to its log so far (empty on
    /// the shared server).
    pub fn log(&self) -> String {
        self.dir()
            .and_then(|d| std::fs::read_to_string(d.join("server.log")).ok())
            .unwrap_or_default()
    }

    /// `postgres://postgres@127.0.0.1:<port>/<database>` (no password in it).
    pub fn url_for(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Runs SQL as the superuser over the private cluster's socket (no
    /// password) and returns the rows, `|`-separated, without headers.
    ///
    /// # Errors
    /// When psql fails.
    pub fn psql(&self, database: &str, sql: &str) -> Result<String> {
        let socket = self._dir.as_ref().context("not a private cluster")?.path();
        let out = Command::new("psql")
            .arg("-h")
            .arg(socket)
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                database,
            ])
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .output()?;
        if !out.status.success() {
            bail!("psql: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// URL of the test database.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // SIGINT-free fast stop: killing the postmaster is fine for a throwaway cluster.
        kill(self.child.take());
    }
}

/// Whether the tests run as root (then PostgreSQL runs as `postgres`);
/// asked of `id` once per process.
pub fn as_root() -> bool {
    static ROOT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ROOT.get_or_init(|| {
        Command::new("id")
            .arg("-u")
            .output()
            .map(|o| o.stdout == b"0\n")
            .unwrap_or(false)
    })
}

fn run_as_postgres(program: &Path) -> Command {
    if as_root() {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"]).arg(program);
        cmd
    } else {
        Command::new(program)
    }
}

fn postgres_bin() -> Result<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .context("PostgreSQL is not installed (apt-get install postgresql)")?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    found.sort();
    found
        .pop()
        .context("no initdb under /usr/lib/postgresql/*/bin")
}

/// A plain HTTP GET: returns the status code and body.
///
/// # Errors
/// When the server cannot be reached.
pub async fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::net::TcpStream::connect(addr),
    )
    .await??;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response)).await??;
    let text = String::from_utf8_lossy(&response).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no HTTP status line")?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// Polls `GET path` until it answers `status`, for at most `timeout`.
///
/// # Errors
/// When it does not in time.
pub async fn wait_for_status(
    addr: SocketAddr,
    path: &str,
    status: u16,
    timeout: Duration,
) -> Result<()> {
    let what = format!("{path} on {addr} to answer {status}");
    eventually(timeout, &what, || async move {
        http_get(addr, path)
            .await
            .map(|r| r.0 == status)
            .unwrap_or(false)
    })
    .await
}

/// Polls `check` every 100 ms until it returns true or `timeout` passes.
///
/// # Errors
/// When the timeout passes, naming `what`.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check().await {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("timed out after {}s waiting for {what}", timeout.as_secs())
}
