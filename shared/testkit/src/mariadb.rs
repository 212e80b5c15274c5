//! A private MariaDB server for one test: `mariadb-install-db` into a temp
//! dir, `mariadbd` on a free port, root with no password, a `backup` user with
//! a password (so source credentials are really used), and an empty `test`
//! database.

use crate::spawn_on_free_port;
use anyhow::{Context, Result, bail};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running MariaDB.
pub struct MariaDb {
    dir: tempfile::TempDir,
    pub port: u16,
    child: Option<Child>,
}

impl MariaDb {
    /// The password of the `backup` user.
    pub const BACKUP_PASSWORD: &'static str = "s3cret \"pass\\word";

    /// Starts a server (about a second).
    ///
    /// # Errors
    /// When MariaDB is not installed (`apt-get install mariadb-server`) or does not start.
    pub fn start() -> Result<MariaDb> {
        let install = Command::new("mariadb-install-db").arg("--version").output();
        if install.is_err() || !std::path::Path::new("/usr/sbin/mariadbd").exists() {
            bail!("MariaDB is not installed (scripts/test.sh installs mariadb-server)");
        }
        let dir = tempfile::tempdir()?;
        let data = dir.path().join("data");
        let out = Command::new("mariadb-install-db")
            .args([
                "--no-defaults",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                "--user=root",
            ])
            .arg(format!("--datadir={}", data.display()))
            .output()?;
        if !out.status.success() {
            bail!(
                "mariadb-install-db failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let (port, child) = spawn_on_free_port("mariadbd", |port| {
            let log = std::fs::File::create(dir.path().join("server.log"))?;
            Command::new("/usr/sbin/mariadbd")
                .arg("--no-defaults")
                .arg(format!("--datadir={}", data.display()))
                .arg(format!("--socket={}", dir.path().join("sock").display()))
                .arg(format!("--port={port}"))
                .args([
                    "--bind-address=127.0.0.1",
                    "--user=root",
                    "--skip-log-bin",
                    "--innodb-flush-log-at-trx-commit=0",
                    "--innodb-buffer-pool-size=64M",
                ])
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .context("cannot run mariadbd")
        })?;
        let server = MariaDb {
            dir,
            port,
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let created = server.sql(&format!(
                "CREATE USER IF NOT EXISTS 'backup'@'%' IDENTIFIED BY '{}'; \
                 GRANT ALL ON *.* TO 'backup'@'%'; CREATE DATABASE IF NOT EXISTS test",
                Self::BACKUP_PASSWORD
                    .replace('\\', "\\\\")
                    .replace('\'', "\\'")
            ));
            match created {
                Ok(_) => break,
                Err(e) if Instant::now() > deadline => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
        Ok(server)
    }

    /// `mariadb://backup@127.0.0.1:<port>/<database>` (the password apart).
    pub fn url(&self, database: &str) -> String {
        format!("mariadb://backup@127.0.0.1:{}/{database}", self.port)
    }

    /// Runs SQL as root and returns the rows, tab-separated, without headers.
    ///
    /// # Errors
    /// When the client fails.
    pub fn sql(&self, sql: &str) -> Result<String> {
        let out = Command::new("mariadb")
            .args(["--protocol=tcp", "-h127.0.0.1", "-uroot", "-N", "-B"])
            .arg(format!("-P{}", self.port))
            .args(["-e", sql])
            .output()?;
        if !out.status.success() {
            bail!("mariadb: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Where the server writes its log (for a failing test's message).
    pub fn log(&self) -> std::path::PathBuf {
        self.dir.path().join("server.log")
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        crate::kill(self.child.take());
    }
}
