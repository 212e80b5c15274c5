//! A private Prometheus (Debian's `prometheus` package) for one test: it
//! scrapes the given targets every second, evaluates the given rule files
//! every second, and keeps its TSDB in a temp dir.

use crate::spawn_on_free_port;
use anyhow::{Context, Result, bail};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

const BINARY: &str = "/usr/bin/prometheus";

/// A running Prometheus.
pub struct Prometheus {
    dir: tempfile::TempDir,
    pub port: u16,
    child: Option<Child>,
}

impl Prometheus {
    /// Starts one scraping `targets` (job `vaultline`) with `rule_files` loaded.
    ///
    /// # Errors
    /// When Prometheus is not installed (scripts/test.sh installs it) or does not start.
    pub fn start(targets: &[SocketAddr], rule_files: &[&Path]) -> Result<Prometheus> {
        if !Path::new(BINARY).exists() {
            bail!("Prometheus is not installed (scripts/test.sh installs Debian's prometheus)");
        }
        let dir = tempfile::tempdir()?;
        let config = dir.path().join("prometheus.yml");
        let config_text = serde_json::json!({
            "global": { "scrape_interval": "1s", "evaluation_interval": "1s" },
            "rule_files": rule_files.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
            "scrape_configs": [{
                "job_name": "vaultline",
                "static_configs": [{
                    "targets": targets.iter().map(ToString::to_string).collect::<Vec<_>>(),
                }],
            }],
        });
        // JSON is YAML: no YAML writer needed.
        std::fs::write(&config, config_text.to_string())?;
        let (port, child) = spawn_on_free_port("prometheus", |port| {
            let log = std::fs::File::create(dir.path().join("prometheus.log"))?;
            Command::new(BINARY)
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .context("cannot run prometheus")
        })?;
        Ok(Prometheus {
            dir,
            port,
            child: Some(child),
        })
    }

    /// Base URL of its HTTP API.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Its log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        crate::kill(self.child.take());
    }
}
