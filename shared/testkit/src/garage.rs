//! Garage, a real S3 server, on free ports with a single-node layout, one
//! access key and one bucket. The binary is `VAULTLINE_GARAGE`, `garage` on
//! PATH, or the one `scripts/lib/deps.sh` builds into
//! `~/.cache/vaultline/tools/bin` (`cargo install garage`).

use crate::{free_port, wait_for_port};
use anyhow::{Context, Result, bail};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running single-node Garage with bucket [`Garage::BUCKET`].
pub struct Garage {
    binary: PathBuf,
    dir: tempfile::TempDir,
    config: PathBuf,
    /// Port of the S3 API.
    pub port: u16,
    pub access_key_id: String,
    pub secret_access_key: String,
    child: Option<Child>,
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).expect("OS random source");
    hex::encode(buf)
}

/// Where the Garage binary is, if anywhere.
pub fn garage_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("VAULTLINE_GARAGE") {
        return Some(path.into());
    }
    if Command::new("garage")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
    {
        return Some("garage".into());
    }
    let cached = PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
        .join(".cache/vaultline/tools/bin/garage");
    cached.exists().then_some(cached)
}

impl Garage {
    /// The bucket the harness creates.
    pub const BUCKET: &'static str = "vaultline";
    /// The region it answers to.
    pub const REGION: &'static str = "garage";

    /// Starts Garage and bootstraps it to S3-ready (about half a second).
    ///
    /// # Errors
    /// When the binary is missing (run `scripts/test.sh`, which builds it) or a
    /// bootstrap step fails.
    pub fn start() -> Result<Garage> {
        let binary = garage_binary().context(
            "garage is not installed: run scripts/test.sh (it builds it with cargo install garage) or set VAULTLINE_GARAGE",
        )?;
        let dir = tempfile::tempdir()?;
        let (port, rpc) = (free_port(), free_port());
        let config = dir.path().join("garage.toml");
        std::fs::write(
            &config,
            format!(
                r#"metadata_dir = "{root}/meta"
data_dir = "{root}/data"
db_engine = "sqlite"
metadata_fsync = false
data_fsync = false
replication_factor = 1
rpc_bind_addr = "127.0.0.1:{rpc}"
rpc_public_addr = "127.0.0.1:{rpc}"
rpc_secret = "{secret}"

[s3_api]
s3_region = "{region}"
api_bind_addr = "127.0.0.1:{port}"
root_domain = ".s3.garage.localhost"
"#,
                root = dir.path().display(),
                secret = random_hex(32),
                region = Self::REGION,
            ),
        )?;
        let mut garage = Garage {
            binary,
            dir,
            config,
            port,
            access_key_id: format!("GK{}", random_hex(12)),
            secret_access_key: random_hex(32),
            child: None,
        };
        garage.restart()?;
        garage.bootstrap()?;
        Ok(garage)
    }

    /// `http://127.0.0.1:<port>`
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Runs a `garage` admin command and returns its stdout.
    fn admin(&self, args: &[&str]) -> Result<String> {
        let out = Command::new(&self.binary)
            .arg("-c")
            .arg(&self.config)
            .args(args)
            .output()?;
        if !out.status.success() {
            bail!(
                "garage {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn bootstrap(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.admin(&["status"]).is_err() {
            if Instant::now() > deadline {
                bail!("garage did not answer `status` within 30s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let id = self.admin(&["node", "id", "-q"])?;
        let id = id.trim().split('@').next().unwrap_or_default().to_owned();
        self.admin(&["layout", "assign", "-z", "dc1", "-c", "1G", &id])?;
        self.admin(&["layout", "apply", "--version", "1"])?;
        self.admin(&[
            "key",
            "import",
            "--yes",
            "-n",
            "vaultline",
            &self.access_key_id,
            &self.secret_access_key,
        ])?;
        self.admin(&["bucket", "create", Self::BUCKET])?;
        self.admin(&[
            "bucket",
            "allow",
            "--read",
            "--write",
            "--owner",
            Self::BUCKET,
            "--key",
            "vaultline",
        ])?;
        Ok(())
    }

    /// A new access key `name` with only `read` and/or `write` on the bucket
    /// (Garage's write covers put and delete); returns (key id, secret).
    ///
    /// # Errors
    /// When garage refuses.
    pub fn add_key(&self, name: &str, read: bool, write: bool) -> Result<(String, String)> {
        let mut bytes = [0u8; 44];
        getrandom::fill(&mut bytes).expect("OS random source");
        let (id, secret) = (
            format!("GK{}", hex::encode(&bytes[..12])),
            hex::encode(&bytes[12..]),
        );
        self.admin(&["key", "import", "--yes", "-n", name, &id, &secret])?;
        let mut allow = vec!["bucket", "allow"];
        if read {
            allow.push("--read");
        }
        if write {
            allow.push("--write");
        }
        allow.extend([Self::BUCKET, "--key", name]);
        if read || write {
            self.admin(&allow)?;
        }
        Ok((id, secret))
    }

    /// Kills the server; its data stays for [`Garage::restart`].
    pub fn stop(&mut self) {
        crate::kill(self.child.take());
    }

    /// Starts the server again on the same ports and data.
    ///
    /// # Errors
    /// When it does not come up.
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        let log = std::fs::File::create(self.dir.path().join("garage.log"))?;
        let mut child = Command::new(&self.binary)
            .arg("-c")
            .arg(&self.config)
            .arg("server")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot run {}", self.binary.display()))?;
        wait_for_port(self.port, "garage", &mut child)?;
        self.child = Some(child);
        Ok(())
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        self.stop();
    }
}
