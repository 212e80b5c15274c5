//! Turning `vaultline source add` flags into a source row: its type, its
//! config (what the extractor reads) and the secret to seal, if any.

use crate::context::read_secret;
use anyhow::{Context, Result, bail};
use std::path::PathBuf;
use vaultline_types::{CommandSource, FilesSource, MariadbSource, PostgresSource, SourceConfig};

/// `--type` of `source add`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SourceKind {
    Files,
    Postgres,
    Mariadb,
    /// Stored as mariadb.
    Mysql,
    Command,
}

impl std::fmt::Display for SourceKind {
    /// As typed after `--type`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use clap::ValueEnum;
        let value = self.to_possible_value().expect("no variant is skipped");
        f.write_str(value.get_name())
    }
}

/// The flags of `source add` that say what the source is, as typed.
#[derive(clap::Args, Debug)]
pub struct SourceSpec {
    /// Source type (mysql is stored as mariadb).
    #[arg(long = "type", value_enum, default_value_t = SourceKind::Files)]
    pub kind: SourceKind,
    /// Directory to back up (files).
    #[arg(long)]
    pub path: Option<PathBuf>,
    /// Database URL without a password (postgres://…, mariadb://…).
    #[arg(long)]
    pub url: Option<String>,
    /// File holding the database password; stored sealed with the credentials key.
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
}

impl SourceSpec {
    /// Checks the flags that fit the type were given, and no others.
    /// Returns `(config, secret, shown)`; `shown` never holds the secret.
    pub fn resolve(self) -> Result<(SourceConfig, Option<String>, String)> {
        let SourceSpec {
            kind,
            path,
            url,
            password_file,
            command,
            restore_command,
            secret_file,
            secret_env,
        } = self;
        let refuse = |flag: &str, given: bool| -> Result<()> {
            if given {
                bail!("--{flag} does not apply to a {kind} source");
            }
            Ok(())
        };
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
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(kind: SourceKind) -> SourceSpec {
        SourceSpec {
            kind,
            path: None,
            url: None,
            password_file: None,
            command: None,
            restore_command: None,
            secret_file: None,
            secret_env: None,
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
