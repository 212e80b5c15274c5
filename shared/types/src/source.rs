//! What a source is and how it is read: the one type the CLI writes, the
//! extractor reads, and restore and drills consult. The catalog keeps it as
//! two columns, `kind` and `config`, which are this enum's tag and content.
//! Unknown fields are refused, so a typo in a stored config is an error
//! the first time it is read, not a setting silently ignored.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// A source's kind and its settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "config", rename_all = "lowercase")]
pub enum SourceConfig {
    /// A directory tree.
    Files(FilesSource),
    /// A PostgreSQL database, dumped with pg_dump.
    Postgres(PostgresSource),
    /// A MariaDB or MySQL database, dumped with mariadb-dump or mysqldump.
    #[serde(alias = "mysql")]
    Mariadb(MariadbSource),
    /// A shell command whose standard output is the backup.
    Command(CommandSource),
    /// A directory tree on a host reached over SSH (SFTP).
    Sftp(SftpSource),
}

/// `files`: the root of the tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilesSource {
    /// Absolute path of the tree's root.
    pub path: PathBuf,
}

/// `postgres`: a database reached by URL, never with a password in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PostgresSource {
    /// `postgres://user@host:port/database`
    pub url: String,
    /// The pg_dump to run (default: `pg_dump` on PATH).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pg_dump: Option<String>,
    /// A logical dump (the default) or a physical base backup for
    /// point-in-time recovery.
    #[serde(default, skip_serializing_if = "PostgresMode::is_dump")]
    pub mode: PostgresMode,
}

/// How a `postgres` source is read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PostgresMode {
    /// One database with pg_dump, restored with pg_restore.
    #[default]
    Dump,
    /// The whole cluster with pg_basebackup: a base backup that archived
    /// WAL (`vaultline wal-push`) rolls forward to any point in time.
    Physical,
}

impl PostgresMode {
    /// Whether this is the default, logical mode (not written to configs).
    pub fn is_dump(&self) -> bool {
        *self == PostgresMode::Dump
    }
}

/// `mariadb` (or `mysql`): a database reached by URL, never with a password in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct MariadbSource {
    /// `mariadb://user@host:port/database`
    pub url: String,
    /// The dump program (default: `mariadb-dump`, else `mysqldump`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dump: Option<String>,
}

/// `command`: a shell command whose standard output is the backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct CommandSource {
    /// Run with `/bin/sh -c`.
    pub command: String,
    /// Its pair, which reads the backup on standard input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_command: Option<String>,
    /// Environment variable that carries the stored credential to the command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_env: Option<String>,
    /// Name of the entry in the manifest (default `stdout`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// `sftp`: a remote tree read over SFTP. The password or private key is the
/// source's sealed credential, never part of this config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SftpSource {
    /// Host name or address.
    pub host: String,
    /// SSH port (22).
    pub port: u16,
    /// The user to log in as.
    pub user: String,
    /// Absolute path of the tree's root on the host.
    pub path: String,
    /// How the credential logs in.
    pub auth: SftpAuth,
    /// The pinned host key, as OpenSSH shows it (`SHA256:…`); no connection
    /// is made without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_key: Option<String>,
}

/// What an SFTP source's sealed credential holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SftpAuth {
    /// A password.
    Password,
    /// A private key (OpenSSH or PEM), with its passphrase if it has one.
    Key,
}

/// A stored `kind` and `config` that do not make a source this build knows.
#[derive(Debug, thiserror::Error)]
#[error("a {kind:?} source with this config: {reason}")]
pub struct SourceConfigError {
    /// The stored kind.
    pub kind: String,
    /// What serde found wrong.
    pub reason: String,
}

impl SourceConfig {
    /// The source from its catalog columns.
    ///
    /// # Errors
    /// An unknown kind, a missing field or an unknown one.
    pub fn from_parts(kind: &str, config: serde_json::Value) -> Result<Self, SourceConfigError> {
        serde_json::from_value(serde_json::json!({ "kind": kind, "config": config })).map_err(|e| {
            SourceConfigError {
                kind: kind.to_owned(),
                reason: e.to_string(),
            }
        })
    }

    /// The catalog columns: the kind and the config object.
    pub fn to_parts(&self) -> (&'static str, serde_json::Value) {
        let config = match self {
            SourceConfig::Files(c) => serde_json::to_value(c),
            SourceConfig::Postgres(c) => serde_json::to_value(c),
            SourceConfig::Mariadb(c) => serde_json::to_value(c),
            SourceConfig::Command(c) => serde_json::to_value(c),
            SourceConfig::Sftp(c) => serde_json::to_value(c),
        };
        (self.kind(), config.expect("source configs serialise"))
    }

    /// The kind, as stored and as written in manifests.
    pub fn kind(&self) -> &'static str {
        match self {
            SourceConfig::Files(_) => "files",
            SourceConfig::Postgres(_) => "postgres",
            SourceConfig::Mariadb(_) => "mariadb",
            SourceConfig::Command(_) => "command",
            SourceConfig::Sftp(_) => "sftp",
        }
    }

    /// A database's URL (postgres and mariadb sources).
    pub fn database_url(&self) -> Option<&str> {
        match self {
            SourceConfig::Postgres(c) if c.mode.is_dump() => Some(&c.url),
            SourceConfig::Postgres(_) => None,
            SourceConfig::Mariadb(c) => Some(&c.url),
            SourceConfig::Files(_) | SourceConfig::Command(_) | SourceConfig::Sftp(_) => None,
        }
    }

    /// The command that reads a command source's backup back in, if it has one.
    pub fn restore_command(&self) -> Option<&str> {
        match self {
            SourceConfig::Command(c) => c.restore_command.as_deref(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trips_through_its_catalog_columns() {
        let sources = [
            SourceConfig::Files(FilesSource {
                path: "/srv/data".into(),
            }),
            SourceConfig::Postgres(PostgresSource {
                url: "postgres://u@h/db".into(),
                pg_dump: Some("/usr/lib/postgresql/15/bin/pg_dump".into()),
                mode: PostgresMode::Dump,
            }),
            SourceConfig::Postgres(PostgresSource {
                url: "postgres://u@h/postgres".into(),
                pg_dump: None,
                mode: PostgresMode::Physical,
            }),
            SourceConfig::Mariadb(MariadbSource {
                url: "mariadb://u@h/db".into(),
                dump: None,
            }),
            SourceConfig::Command(CommandSource {
                command: "cat /etc/hosts".into(),
                restore_command: Some("cat > /tmp/hosts".into()),
                secret_env: Some("TOKEN".into()),
                name: None,
            }),
            SourceConfig::Sftp(SftpSource {
                host: "files.example".into(),
                port: 22,
                user: "backup".into(),
                path: "/srv/www".into(),
                auth: SftpAuth::Key,
                host_key: Some("SHA256:abc".into()),
            }),
        ];
        for source in sources {
            let (kind, config) = source.to_parts();
            assert_eq!(SourceConfig::from_parts(kind, config).unwrap(), source);
        }
    }

    #[test]
    fn reads_the_configs_earlier_builds_stored() {
        let command = SourceConfig::from_parts(
            "command",
            json!({ "command": "pg_dumpall", "restore-command": "psql", "secret-env": "PGPASSWORD" }),
        )
        .unwrap();
        assert_eq!(command.restore_command(), Some("psql"));
        let mysql = SourceConfig::from_parts("mysql", json!({ "url": "mysql://u@h/db" })).unwrap();
        assert_eq!(mysql.kind(), "mariadb");
        assert_eq!(mysql.database_url(), Some("mysql://u@h/db"));
        let (_, stored) = SourceConfig::from_parts("files", json!({ "path": "/x" }))
            .unwrap()
            .to_parts();
        assert_eq!(stored, json!({ "path": "/x" }));
    }

    #[test]
    fn unknown_kinds_and_fields_are_errors() {
        let typo = SourceConfig::from_parts("files", json!({ "path": "/x", "exclude": ["*.tmp"] }))
            .unwrap_err();
        assert!(typo.to_string().contains("exclude"), "{typo}");
        let kind = SourceConfig::from_parts("ftp", json!({ "url": "ftp://h" })).unwrap_err();
        assert!(kind.to_string().contains("ftp"), "{kind}");
        assert!(SourceConfig::from_parts("postgres", json!({})).is_err());
        assert!(SourceConfig::from_parts("command", json!("echo")).is_err());
    }
}
