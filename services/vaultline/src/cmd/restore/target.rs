//! Where `vaultline restore` puts a snapshot: a directory, stdout, a
//! PostgreSQL or MariaDB database, or a command's stdin.

use anyhow::{Context, Result, bail};
use std::path::PathBuf;
use vaultline_format::keys::Keyring;
use vaultline_restore::programs::{
    mariadb_command, pg_restore_command, restore_into_with, shell_command,
};
use vaultline_restore::{Restored, Sink};
use vaultline_storage::Repository;
use vaultline_types::{Name, SnapshotId};

/// How `--to` writes a snapshot: as files, or as one tar stream.
#[derive(clap::ValueEnum, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum Format {
    /// Files in a directory (or, with `--to -`, the one selected file).
    #[default]
    Dir,
    /// A POSIX (pax) tar stream of the entries, to stdout or a new file.
    Tar,
}

/// The destination chosen with --to, --into or --into-command.
#[derive(Debug, Clone)]
pub(super) enum Target {
    Dir(PathBuf),
    Stdout,
    /// A tar stream to stdout (`None`) or to a new file.
    Tar(Option<PathBuf>),
    Postgres(String),
    Mariadb(String),
    /// A shell command; `None` means the source's own restore command.
    Command(Option<String>),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Dir(dir) => write!(f, "{}", dir.display()),
            Target::Stdout => f.write_str("stdout"),
            Target::Tar(None) => f.write_str("stdout as tar"),
            Target::Tar(Some(file)) => write!(f, "{} as tar", file.display()),
            Target::Postgres(url) | Target::Mariadb(url) => {
                f.write_str(&vaultline_bus::redact_url(url))
            }
            Target::Command(_) => f.write_str("the restore command"),
        }
    }
}

impl Target {
    /// Exactly one destination must be given.
    ///
    /// # Errors
    /// None or several, or a database URL of an unknown kind or with a password.
    pub(super) fn from_flags(
        to: Option<PathBuf>,
        into: Option<String>,
        into_command: Option<String>,
        format: Format,
    ) -> Result<Target> {
        if format == Format::Tar {
            return match (to, into, into_command) {
                (Some(to), None, None) if to.as_os_str() == "-" => Ok(Target::Tar(None)),
                (Some(to), None, None) => Ok(Target::Tar(Some(to))),
                _ => bail!("--format tar writes to --to - (stdout) or --to FILE.tar, nothing else"),
            };
        }
        match (to, into, into_command) {
            (Some(to), None, None) if to.as_os_str() == "-" => Ok(Target::Stdout),
            (Some(to), None, None) => Ok(Target::Dir(to)),
            (None, Some(url), None) => {
                let parsed = url::Url::parse(&url).context("--into is not a URL")?;
                if parsed.password().is_some() {
                    bail!("--into must not hold a password: set PGPASSWORD or MYSQL_PWD");
                }
                match parsed.scheme() {
                    "postgres" | "postgresql" => Ok(Target::Postgres(url)),
                    "mariadb" | "mysql" => Ok(Target::Mariadb(url)),
                    other => bail!("--into takes postgres:// or mariadb:// URLs, not {other}://"),
                }
            }
            (None, None, Some(command)) => Ok(Target::Command(
                Some(command).filter(|c| !c.trim().is_empty()),
            )),
            (None, None, None) => {
                bail!("say where to restore: --to DIR, --to -, --into URL or --into-command")
            }
            _ => bail!("give only one of --to, --into and --into-command"),
        }
    }
}

/// Restores into `target`.
///
/// # Errors
/// Whatever restore reports, a snapshot of the wrong kind for the target,
/// or a restore program that fails (with the tail of its stderr).
#[allow(clippy::too_many_arguments)]
pub(super) async fn run(
    repo: &Repository,
    tenant: &Name,
    snapshot: &SnapshotId,
    keyring: &Keyring,
    select: Option<&str>,
    target: Target,
    source_restore_command: Option<String>,
    options: vaultline_restore::Options,
) -> Result<Restored> {
    let restored = match target {
        Target::Dir(dir) => {
            vaultline_restore::restore_with(
                repo,
                tenant,
                snapshot,
                keyring,
                select,
                Sink::Dir(&dir),
                options,
            )
            .await
        }
        Target::Stdout => {
            let mut out = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout());
            let sink = Sink::Stream(&mut out);
            vaultline_restore::restore_with(repo, tenant, snapshot, keyring, select, sink, options)
                .await
        }
        Target::Tar(None) => {
            let mut out = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout());
            let sink = Sink::Tar(&mut out);
            vaultline_restore::restore_with(repo, tenant, snapshot, keyring, select, sink, options)
                .await
        }
        Target::Tar(Some(path)) => {
            // A new file only: an existing one may be someone's data.
            let file = std::fs::File::create_new(&path)
                .with_context(|| format!("cannot create {} (it must not exist)", path.display()))?;
            let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
            let sink = Sink::Tar(&mut out);
            let written = vaultline_restore::restore_with(
                repo, tenant, snapshot, keyring, select, sink, options,
            )
            .await;
            let written = match written {
                Ok(done) => out
                    .into_inner()
                    .map_err(|e| e.into_error())
                    .and_then(|file| file.sync_all())
                    .map(|()| done)
                    .with_context(|| format!("cannot write {}", path.display())),
                Err(e) => Err(e.into()),
            };
            if written.is_err() {
                // Half an archive is worse than none: it would look like a download.
                let _ = std::fs::remove_file(&path);
            }
            return written;
        }
        Target::Postgres(url) | Target::Mariadb(url) => {
            let kind = if url.starts_with("postgres") {
                "postgres"
            } else {
                "mariadb"
            };
            let (header, _) =
                vaultline_restore::manifest_summary(repo, tenant, snapshot, keyring).await?;
            if header.source_kind != kind {
                bail!(
                    "snapshot {snapshot} is a {} backup; it cannot be restored into a {kind} database",
                    header.source_kind
                );
            }
            let command = if kind == "postgres" {
                let mut command = pg_restore_command(&url, true);
                // The database must end up holding the snapshot: what the
                // dump holds is dropped first where it exists.
                command.args(["--clean", "--if-exists"]);
                command
            } else {
                mariadb_command(&url, None)?
            };
            let what = format!("restoring into {}", vaultline_bus::redact_url(&url));
            restore_into_with(repo, tenant, snapshot, keyring, command, &what, options).await
        }
        Target::Command(command) => {
            let command = command
                .or(source_restore_command)
                .context("the source has no restore command: give one with --into-command 'CMD'")?;
            let shell = shell_command(&command);
            restore_into_with(
                repo,
                tenant,
                snapshot,
                keyring,
                shell,
                "the restore command",
                options,
            )
            .await
        }
    };
    Ok(restored?)
}

/// What a directory restore could not put back as it was, one line each,
/// for the summary.
pub(super) fn caveats(done: &Restored) -> Vec<String> {
    let kept = &done.kept;
    let mut lines = Vec::new();
    if kept.owners_not_restored > 0 {
        lines.push(format!(
            "ownership not restored for {} entries: they belong to the restoring user (only root gives owners back, and snapshots older than manifest format 2 recorded none)",
            kept.owners_not_restored
        ));
    }
    if kept.setid_dropped > 0 {
        lines.push(format!(
            "setuid/setgid bits dropped from {} entries whose owner was not restored",
            kept.setid_dropped
        ));
    }
    if kept.xattrs_skipped > 0 {
        lines.push(format!(
            "{} extended attributes not restored{}",
            kept.xattrs_skipped,
            kept.xattr_error
                .as_ref()
                .map(|e| format!(" (first refusal: {e}; file capabilities need root)"))
                .unwrap_or_else(|| " (file capabilities need root)".into())
        ));
    }
    if done.devices_skipped > 0 {
        lines.push(format!(
            "{} device nodes skipped: only root can make them",
            done.devices_skipped
        ));
    }
    if done.sockets_skipped > 0 {
        lines.push(format!(
            "{} sockets skipped: a socket belongs to the program listening on it",
            done.sockets_skipped
        ));
    }
    lines
}
