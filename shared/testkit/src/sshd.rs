//! OpenSSH's sshd, for the sftp source: Debian's `openssh-server` run as an
//! ordinary user on a loopback port, with a host key and config of its own.
//!
//! An sshd that is not root can only log its own user in, so it runs as
//! `vaultline-sftp`, a user this harness creates the first time (as root),
//! with a random password kept in `~/.cache/vaultline/sftp-password`. Its
//! sftp-server logs every file it closes with the bytes it read
//! ([`Sshd::bytes_read`]), which is what went over the link.

use crate::{kill, spawn_on_free_port};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The user the server runs as and logs in.
pub const SFTP_USER: &str = "vaultline-sftp";

pub struct Sshd {
    child: Option<Child>,
    dir: tempfile::TempDir,
    pub port: u16,
    /// The user's password (password login).
    pub password: String,
    uid: String,
}

impl Sshd {
    /// Starts a server that accepts [`SFTP_USER`] with its password or
    /// with the key at [`Sshd::client_key`].
    pub fn start() -> Result<Sshd> {
        let password = ensure_user()?;
        let uid = output(Command::new("id").args(["-u", SFTP_USER]))?;
        let dir = tempfile::Builder::new()
            .prefix("vaultline-sshd")
            .tempdir()?;
        // The server's user must reach its files and the trees below.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )?;
        let client_key = dir.path().join("client_key");
        keygen(&client_key, Sshd::CLIENT_KEY_PASSPHRASE)?;
        std::fs::copy(
            client_key.with_extension("pub"),
            dir.path().join("authorized_keys"),
        )?;
        let mut sshd = Sshd {
            child: None,
            dir,
            port: 0,
            password,
            uid,
        };
        // The sftp-servers run as the user and append their log here.
        std::fs::write(sshd.sftp_log(), b"")?;
        chown(&sshd.sftp_log(), SFTP_USER)?;
        sshd.new_host_key()?;
        let (port, child) = spawn_on_free_port("sshd", |port| sshd.spawn(port))?;
        sshd.port = port;
        sshd.child = Some(child);
        Ok(sshd)
    }

    /// The client's private key (ed25519), encrypted with
    /// [`Sshd::CLIENT_KEY_PASSPHRASE`].
    pub fn client_key(&self) -> PathBuf {
        self.dir.path().join("client_key")
    }

    pub const CLIENT_KEY_PASSPHRASE: &str = "client key passphrase";

    /// A directory the server's user can read, for a tree to back up.
    pub fn tree(&self, name: &str) -> Result<PathBuf> {
        let path = self.dir.path().join(name);
        std::fs::create_dir_all(&path)?;
        Ok(path)
    }

    /// Makes a tree written by root readable by the server's user.
    pub fn share(&self, path: &Path) -> Result<()> {
        let status = Command::new("chmod")
            .arg("-R")
            .arg("a+rX")
            .arg(path)
            .status()?;
        anyhow::ensure!(status.success(), "chmod -R a+rX {} failed", path.display());
        Ok(())
    }

    /// The host key's fingerprint as `ssh-keygen -lf` shows it.
    pub fn host_key_fingerprint(&self) -> Result<String> {
        let listed = output(
            Command::new("ssh-keygen")
                .arg("-lf")
                .arg(self.host_key().with_extension("pub")),
        )?;
        listed
            .split_whitespace()
            .nth(1)
            .map(str::to_owned)
            .context("ssh-keygen -lf printed no fingerprint")
    }

    /// Restarts the server on its port with a new host key.
    pub fn change_host_key(&mut self) -> Result<()> {
        kill(self.child.take());
        self.new_host_key()?;
        let mut child = self.spawn(self.port)?;
        crate::wait_for_port(self.port, "sshd", &mut child)?;
        self.child = Some(child);
        Ok(())
    }

    /// Kills every session process (the connections drop; the server
    /// keeps listening); returns how many there were.
    pub fn kill_sessions(&self) -> Result<usize> {
        kill_below(self.child.as_ref().context("sshd is not running")?.id())
    }

    /// Everything sshd and its sftp-servers logged so far.
    pub fn log(&self) -> Result<String> {
        let mut log = std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default();
        log.push_str(&std::fs::read_to_string(self.sftp_log()).unwrap_or_default());
        Ok(log)
    }

    /// Bytes of files the sftp-servers read and closed (`bytes read N` of
    /// each close), so far.
    pub fn bytes_read(&self) -> Result<u64> {
        let log = std::fs::read_to_string(self.sftp_log()).unwrap_or_default();
        Ok(log
            .lines()
            .filter_map(|line| line.split(" bytes read ").nth(1))
            .filter_map(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
            .sum())
    }

    /// Whether an sftp-server has opened `name` (a path ending) for reading.
    pub fn opened(&self, name: &str) -> bool {
        std::fs::read_to_string(self.sftp_log())
            .unwrap_or_default()
            .lines()
            .any(|l| l.starts_with("open ") && l.contains(&format!("{name}\" flags READ")))
    }

    fn host_key(&self) -> PathBuf {
        self.dir.path().join("host_key")
    }

    fn sftp_log(&self) -> PathBuf {
        self.dir.path().join("sftp.log")
    }

    fn new_host_key(&self) -> Result<()> {
        let key = self.host_key();
        let _ = std::fs::remove_file(&key);
        let _ = std::fs::remove_file(key.with_extension("pub"));
        keygen(&key, "")?;
        chown(&key, SFTP_USER)
    }

    fn spawn(&self, port: u16) -> Result<Child> {
        let dir = self.dir.path();
        let config = dir.join("sshd_config");
        // The subsystem runs through the user's shell, so its log can be
        // redirected; sftp-server's own -e would send it to the client.
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {key}\nPidFile none\n\
                 UsePAM yes\nPasswordAuthentication yes\nKbdInteractiveAuthentication no\n\
                 PubkeyAuthentication yes\nAuthorizedKeysFile {dir}/authorized_keys\n\
                 StrictModes no\nPrintMotd no\nAllowUsers {SFTP_USER}\n\
                 Subsystem sftp /usr/lib/openssh/sftp-server -e -l INFO 2>>{dir}/sftp.log\n",
                key = self.host_key().display(),
                dir = dir.display(),
            ),
        )?;
        chown(&config, SFTP_USER)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("sshd.log"))?;
        Ok(Command::new("setpriv")
            .arg(format!("--reuid={}", self.uid))
            .arg(format!("--regid={}", self.uid))
            .arg("--clear-groups")
            .arg(sshd_binary()?)
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?)
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        if let Some(child) = &self.child {
            let _ = kill_below(child.id());
        }
        kill(self.child.take());
    }
}

fn sshd_binary() -> Result<&'static str> {
    let path = "/usr/sbin/sshd";
    if !Path::new(path).exists() {
        bail!(
            "{path} is missing: apt-get install openssh-server (scripts/lib/deps.sh ensure_sshd)"
        );
    }
    Ok(path)
}

/// Creates the server's user and its password once; under a lock, as
/// tests start servers side by side. Returns the password.
fn ensure_user() -> Result<String> {
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let file = PathBuf::from(home).join(".cache/vaultline/sftp-password");
    std::fs::create_dir_all(file.parent().expect("a parent"))?;
    let script = format!(
        "set -e\n\
         id -u {SFTP_USER} >/dev/null 2>&1 || useradd --create-home --shell /bin/sh {SFTP_USER}\n\
         if [ ! -s '{f}' ]; then\n\
           umask 077; head -c 24 /dev/urandom | base64 | tr -d '/+=' > '{f}.new'; mv '{f}.new' '{f}'\n\
           printf '%s:%s\\n' {SFTP_USER} \"$(cat '{f}')\" | chpasswd\n\
         fi\n",
        f = file.display()
    );
    let status = Command::new("flock")
        .arg(std::env::temp_dir().join("vaultline-sftp-user.lock"))
        .args(["sh", "-c", &script])
        .status()
        .context("flock (util-linux)")?;
    anyhow::ensure!(
        status.success(),
        "could not create the sftp test user {SFTP_USER} (the tests run as root)"
    );
    Ok(std::fs::read_to_string(&file)?.trim().to_owned())
}

fn keygen(path: &Path, passphrase: &str) -> Result<()> {
    let status = Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            passphrase,
            "-C",
            "vaultline-test",
            "-f",
        ])
        .arg(path)
        .stdin(Stdio::null())
        .status()?;
    anyhow::ensure!(status.success(), "ssh-keygen failed for {}", path.display());
    Ok(())
}

fn chown(path: &Path, user: &str) -> Result<()> {
    let status = Command::new("chown").arg(user).arg(path).status()?;
    anyhow::ensure!(status.success(), "chown {user} {} failed", path.display());
    Ok(())
}

fn output(command: &mut Command) -> Result<String> {
    let out = command.output()?;
    anyhow::ensure!(out.status.success(), "{command:?} failed");
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// SIGKILLs every process below `pid`; returns how many there were.
fn kill_below(pid: u32) -> Result<usize> {
    let below = descendants(pid)?;
    for pid in &below {
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    }
    Ok(below.len())
}

/// Every process below `pid` (from /proc).
fn descendants(pid: u32) -> Result<Vec<u32>> {
    let mut parents = Vec::new();
    for entry in std::fs::read_dir("/proc")? {
        let Ok(child) = entry?.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        // `pid (comm) state ppid …`; comm may hold spaces, so split after ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
        if let Some(ppid) = ppid {
            parents.push((child, ppid));
        }
    }
    let mut found = vec![pid];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(
            parents
                .iter()
                .filter(|(_, p)| *p == parent)
                .map(|(c, _)| *c),
        );
        i += 1;
    }
    found.remove(0);
    Ok(found)
}
