//! Turning `vaultline source add` flags into a source row: its type, its
//! config (what the extractor reads) and the secret to seal, if any.

use crate::context::read_secret;
use anyhow::{Context, Result, bail};
use std::path::PathBuf;
use vaultline_types::{
    CommandSource, FilesSource, MariadbSource, PostgresMode, PostgresSource, SftpSource,
    SourceConfig,
};

/// `--type` of `source add`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SourceKind {
    Files,
    Postgres,
    Mariadb,
    /// Stored as mariadb.
    Mysql,
    Command,
    /// A tree on another host, over SSH.
    Sftp,
}

impl std::fmt::Display for SourceKind {
    /// As typed after `--type`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use clap::ValueEnum;
        let value = self.to_possible_value().expect("no variant is skipped");
        f.write_str(value.get_name())
    }
}

/// `--mode` of a postgres source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PgMode {
    Dump,
    Physical,
}

/// The flags of `source add` that say what the source is, as typed.
#[derive(clap::Args, Debug)]
pub struct SourceSpec {
    /// Source type (mysql is stored as mariadb).
    #[arg(long = "type", value_enum, default_value_t = SourceKind::Files)]
    pub kind: SourceKind,
    /// Directory to back up (files; sftp: on the host).
    #[arg(long)]
    pub path: Option<PathBuf>,
    /// Database URL without a password (postgres://…, mariadb://…).
    #[arg(long)]
    pub url: Option<String>,
    /// postgres: `dump` (pg_dump of one database, the default) or
    /// `physical` (pg_basebackup of the cluster, for point-in-time
    /// recovery with `vaultline wal-push`; the URL's user needs REPLICATION).
    #[arg(long, value_enum)]
    pub mode: Option<PgMode>,
    /// File holding the database or SSH password; stored sealed with the
    /// credentials key.
    #[arg(long)]
    pub password_file: Option<PathBuf>,
    /// Shell command whose stdout is the backup (command).
    #[arg(long)]
    pub command: Option<String>,
    /// Shell command that reads a backup on stdin to restore it (command).
    #[arg(long)]
    pub restore_command: Option<String>,
    /// File holding a secret for the command, stored sealed (command).
    #[arg(long)]
    pub secret_file: Option<PathBuf>,
    /// Environment variable the command receives the secret in (command).
    #[arg(long)]
    pub secret_env: Option<String>,
    #[command(flatten)]
    pub sftp: SftpFlags,
}

/// The flags only an sftp source takes.
#[derive(clap::Args, Debug, Default)]
pub struct SftpFlags {
    /// The SSH host (sftp).
    #[arg(long)]
    pub host: Option<String>,
    /// The SSH port (sftp; default 22).
    #[arg(long)]
    pub port: Option<u16>,
    /// The user to log in as (sftp).
    #[arg(long)]
    pub user: Option<String>,
    /// Private key to log in with (sftp); stored sealed.
    #[arg(long)]
    pub key_file: Option<PathBuf>,
    /// File holding the private key's passphrase (sftp); stored sealed.
    #[arg(long)]
    pub key_passphrase_file: Option<PathBuf>,
    /// The host key to accept, as `ssh-keygen -lf` shows it (`SHA256:…`);
    /// without it, pin it with `vaultline source trust-host-key`.
    #[arg(long)]
    pub host_key_fingerprint: Option<String>,
}

impl SftpFlags {
    /// The first flag given, for `--X does not apply`.
    fn given(&self) -> Option<&'static str> {
        [
            ("host", self.host.is_some()),
            ("port", self.port.is_some()),
            ("user", self.user.is_some()),
            ("key-file", self.key_file.is_some()),
            ("key-passphrase-file", self.key_passphrase_file.is_some()),
            ("host-key-fingerprint", self.host_key_fingerprint.is_some()),
        ]
        .into_iter()
        .find_map(|(flag, given)| given.then_some(flag))
    }
}

/// Whether `text` looks like an OpenSSH SHA-256 fingerprint.
pub(super) fn check_fingerprint(text: &str) -> Result<()> {
    let digest = text.strip_prefix("SHA256:").unwrap_or_default();
    if digest.len() != 43
        || !digest
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
    {
        bail!(
            "{text:?} is not a host key fingerprint as ssh-keygen -lf shows it (SHA256: and 43 characters)"
        );
    }
    Ok(())
}

impl SourceSpec {
    /// Checks the flags that fit the type were given, and no others.
    /// Returns `(config, secret, shown)`; `shown` never holds the secret.
    pub fn resolve(self) -> Result<(SourceConfig, Option<String>, String)> {
        let SourceSpec {
            kind,
            path,
            url,
            mode,
            password_file,
            command,
            restore_command,
            secret_file,
            secret_env,
            sftp,
        } = self;
        let refuse = |flag: &str, given: bool| -> Result<()> {
            if given {
                bail!("--{flag} does not apply to a {kind} source");
            }
            Ok(())
        };
        if kind != SourceKind::Postgres && mode.is_some() {
            refuse("mode", true)?;
        }
        if kind != SourceKind::Sftp
            && let Some(flag) = sftp.given()
        {
            refuse(flag, true)?;
        }
        match kind {
            SourceKind::Files => {
                refuse("url", url.is_some())?;
                refuse("password-file", password_file.is_some())?;
                refuse("command", command.is_some())?;
                refuse("restore-command", restore_command.is_some())?;
                refuse("secret-file", secret_file.is_some())?;
                refuse("secret-env", secret_env.is_some())?;
                let path = path.context("a files source needs --path")?;
                let path = path
                    .canonicalize()
                    .with_context(|| format!("source path {}", path.display()))?;
                let shown = path.display().to_string();
                Ok((SourceConfig::Files(FilesSource { path }), None, shown))
            }
            SourceKind::Postgres | SourceKind::Mariadb | SourceKind::Mysql => {
                refuse("path", path.is_some())?;
                refuse("command", command.is_some())?;
                refuse("restore-command", restore_command.is_some())?;
                refuse("secret-file", secret_file.is_some())?;
                refuse("secret-env", secret_env.is_some())?;
                let url = url.with_context(|| format!("a {kind} source needs --url"))?;
                let parsed = url::Url::parse(&url).context("--url is not a URL")?;
                let postgres = kind == SourceKind::Postgres;
                let schemes: &[&str] = if postgres {
                    &["postgres", "postgresql"]
                } else {
                    &["mariadb", "mysql"]
                };
                if !schemes.contains(&parsed.scheme()) {
                    bail!("a {kind} source url starts with {}://", schemes[0]);
                }
                if parsed.password().is_some() {
                    bail!("--url must not hold a password: give it with --password-file");
                }
                if parsed.path().trim_start_matches('/').is_empty() {
                    bail!(
                        "--url must name the database, e.g. {}://user@host/db",
                        schemes[0]
                    );
                }
                let secret = password_file.as_deref().map(read_secret).transpose()?;
                let config = if postgres {
                    SourceConfig::Postgres(PostgresSource {
                        url: url.clone(),
                        pg_dump: None,
                        mode: match mode {
                            Some(PgMode::Physical) => PostgresMode::Physical,
                            Some(PgMode::Dump) | None => PostgresMode::Dump,
                        },
                    })
                } else {
                    SourceConfig::Mariadb(MariadbSource {
                        url: url.clone(),
                        dump: None,
                    })
                };
                Ok((config, secret, url))
            }
            SourceKind::Command => {
                refuse("path", path.is_some())?;
                refuse("url", url.is_some())?;
                refuse("password-file", password_file.is_some())?;
                let command = command.context("a command source needs --command")?;
                if secret_file.is_some() != secret_env.is_some() {
                    bail!("--secret-file and --secret-env go together");
                }
                let secret = secret_file.as_deref().map(read_secret).transpose()?;
                let config = SourceConfig::Command(CommandSource {
                    command: command.clone(),
                    restore_command,
                    secret_env,
                    name: None,
                });
                Ok((config, secret, command))
            }
            SourceKind::Sftp => {
                refuse("url", url.is_some())?;
                refuse("command", command.is_some())?;
                refuse("restore-command", restore_command.is_some())?;
                refuse("secret-file", secret_file.is_some())?;
                refuse("secret-env", secret_env.is_some())?;
                let path = path.context("an sftp source needs --path (the tree on the host)")?;
                sftp_source(sftp, path, password_file)
            }
        }
    }
}

/// An sftp source and its credential (a password, or a key checked to open
/// with its passphrase).
fn sftp_source(
    flags: SftpFlags,
    path: PathBuf,
    password_file: Option<PathBuf>,
) -> Result<(SourceConfig, Option<String>, String)> {
    let host = flags.host.context("an sftp source needs --host")?;
    let user = flags.user.context("an sftp source needs --user")?;
    let path = path
        .to_str()
        .filter(|p| p.starts_with('/'))
        .context("--path of an sftp source is an absolute path on the host")?
        .to_owned();
    if let Some(fingerprint) = &flags.host_key_fingerprint {
        check_fingerprint(fingerprint)?;
    }
    let credential = super::sftp::read_credential(
        password_file.as_deref(),
        flags.key_file.as_deref(),
        flags.key_passphrase_file.as_deref(),
    )?;
    let config = SftpSource {
        port: flags.port.unwrap_or(22),
        host,
        user,
        path,
        auth: credential.auth(),
        host_key: flags.host_key_fingerprint,
    };
    let pin = match &config.host_key {
        Some(pin) => format!("host key {pin}"),
        None => "no host key pinned yet: run `vaultline source trust-host-key`".into(),
    };
    let shown = format!(
        "sftp://{}@{}:{}{}, {pin}",
        config.user, config.host, config.port, config.path
    );
    let secret = String::from_utf8(credential.to_bytes()).expect("a credential is JSON");
    Ok((SourceConfig::Sftp(config), Some(secret), shown))
}

#[cfg(test)]
mod tests {
    use super::*;
    use vaultline_types::SftpAuth;

    fn spec(kind: SourceKind) -> SourceSpec {
        SourceSpec {
            kind,
            path: None,
            url: None,
            mode: None,
            password_file: None,
            command: None,
            restore_command: None,
            secret_file: None,
            secret_env: None,
            sftp: SftpFlags::default(),
        }
    }

    fn refused(spec: SourceSpec) -> String {
        format!("{:#}", spec.resolve().unwrap_err())
    }

    #[test]
    fn database_urls_are_checked_and_mysql_is_stored_as_mariadb() {
        let url = |kind, url: &str| SourceSpec {
            url: Some(url.into()),
            ..spec(kind)
        };
        let (config, secret, shown) = url(SourceKind::Mysql, "mysql://u@h/shop")
            .resolve()
            .unwrap();
        assert_eq!(config.kind(), "mariadb");
        assert_eq!((secret, shown.as_str()), (None, "mysql://u@h/shop"));
        let with_password = refused(url(SourceKind::Postgres, "postgres://u:pw@h/shop"));
        assert!(with_password.contains("--password-file"), "{with_password}");
        assert!(!with_password.contains("pw@"), "{with_password}");
        let scheme = refused(url(SourceKind::Postgres, "mariadb://u@h/shop"));
        assert!(scheme.contains("postgres://"), "{scheme}");
        let no_db = refused(url(SourceKind::Mariadb, "mariadb://u@h/"));
        assert!(no_db.contains("name the database"), "{no_db}");
        assert!(refused(spec(SourceKind::Postgres)).contains("--url"));
    }

    #[test]
    fn only_postgres_takes_a_mode() {
        let physical = |kind| SourceSpec {
            url: Some("postgres://u@h/postgres".into()),
            mode: Some(PgMode::Physical),
            ..spec(kind)
        };
        let (config, _, _) = physical(SourceKind::Postgres).resolve().unwrap();
        let SourceConfig::Postgres(postgres) = config else {
            panic!("a postgres source");
        };
        assert_eq!(postgres.mode, PostgresMode::Physical);
        assert!(refused(physical(SourceKind::Mariadb)).contains("--mode does not apply"));
    }

    #[test]
    fn flags_of_another_type_are_refused() {
        let files_with_url = SourceSpec {
            path: Some("/".into()),
            url: Some("postgres://u@h/db".into()),
            ..spec(SourceKind::Files)
        };
        assert!(refused(files_with_url).contains("--url does not apply to a files source"));
        let half_secret = SourceSpec {
            command: Some("echo".into()),
            secret_env: Some("TOKEN".into()),
            ..spec(SourceKind::Command)
        };
        assert!(refused(half_secret).contains("go together"));
        let command = SourceSpec {
            command: Some("pg_dumpall".into()),
            restore_command: Some("psql".into()),
            ..spec(SourceKind::Command)
        };
        let (config, _, shown) = command.resolve().unwrap();
        assert_eq!(config.restore_command(), Some("psql"));
        assert_eq!(shown, "pg_dumpall");
    }

    #[test]
    fn an_sftp_source_takes_its_own_flags_and_a_real_fingerprint() {
        let dir = tempfile::tempdir().unwrap();
        let password = dir.path().join("pw");
        std::fs::write(&password, "hunter2\n").unwrap();
        let sftp = |fingerprint: Option<&str>| SourceSpec {
            path: Some("/srv/www".into()),
            password_file: Some(password.clone()),
            sftp: SftpFlags {
                host: Some("files.example".into()),
                user: Some("backup".into()),
                host_key_fingerprint: fingerprint.map(Into::into),
                ..SftpFlags::default()
            },
            ..spec(SourceKind::Sftp)
        };
        let pin = format!("SHA256:{}", "A".repeat(43));
        let (config, secret, shown) = sftp(Some(&pin)).resolve().unwrap();
        let SourceConfig::Sftp(config) = config else {
            panic!("{config:?}")
        };
        assert_eq!((config.port, config.auth), (22, SftpAuth::Password));
        assert_eq!(config.host_key.as_deref(), Some(pin.as_str()));
        let secret = secret.unwrap();
        assert_eq!(
            vaultline_sftp::Credential::from_bytes(secret.as_bytes(), SftpAuth::Password).unwrap(),
            vaultline_sftp::Credential::Password("hunter2".into())
        );
        assert!(
            !shown.contains("hunter2") && shown.contains(&pin),
            "{shown}"
        );
        assert!(refused(sftp(Some("SHA256:short"))).contains("fingerprint"));
        let no_login = SourceSpec {
            password_file: None,
            ..sftp(None)
        };
        assert!(refused(no_login).contains("--password-file or --key-file"));
        let files_with_host = SourceSpec {
            path: Some("/".into()),
            sftp: SftpFlags {
                host: Some("h".into()),
                ..SftpFlags::default()
            },
            ..spec(SourceKind::Files)
        };
        assert!(refused(files_with_host).contains("--host does not apply to a files source"));
    }

    #[test]
    fn a_files_source_is_stored_by_its_canonical_path() {
        let dir = tempfile::tempdir().unwrap();
        let given = dir.path().join(".").join("");
        let (config, _, _) = SourceSpec {
            path: Some(given),
            ..spec(SourceKind::Files)
        }
        .resolve()
        .unwrap();
        let canonical = dir.path().canonicalize().unwrap();
        assert_eq!(config, SourceConfig::Files(FilesSource { path: canonical }));
        let missing = SourceSpec {
            path: Some(dir.path().join("gone")),
            ..spec(SourceKind::Files)
        };
        assert!(refused(missing).contains("gone"));
    }
}
