//! Restoring into a program's stdin: pg_restore, the mariadb client, or a
//! source's own restore command. Its exit status and the tail of its stderr
//! decide and explain the outcome. Passwords travel in the standard variables
//! (PGPASSWORD, MYSQL_PWD), never in arguments.

use crate::error::{Error, Result, fail};
use crate::{Options, Restored, Sink, restore_with};
use std::process::{Command, Stdio};
use vaultline_format::keys::Keyring;
use vaultline_storage::Repository;
use vaultline_types::{Name, SnapshotId};

/// pg_restore of a custom-format dump read from stdin, stopping at the first
/// error. `client_env`: a person runs it, whose own `PG*` variables may
/// configure the client (never a worker's: the catalog's could be there).
pub fn pg_restore_command(url: &str, client_env: bool) -> Command {
    let also: &[&str] = if client_env { &["PG*"] } else { &[] };
    let mut command = vaultline_databases::child_env::command("pg_restore", also);
    command
        .args([
            "--no-owner",
            "--no-privileges",
            "--exit-on-error",
            "--no-password",
        ])
        .arg(format!("--dbname={url}"));
    command
}

/// `sh -c script`: a source's restore command, with none of the caller's
/// secrets in its environment.
pub fn shell_command(script: &str) -> Command {
    let mut command = vaultline_databases::child_env::command("/bin/sh", &[]);
    command.arg("-c").arg(script);
    command
}

/// The mariadb (or mysql) client reading SQL from stdin into the URL's
/// database; the password from `options`, else the client's own MYSQL_PWD.
///
/// # Errors
/// When the URL does not parse or names no database.
pub fn mariadb_command(
    url: &str,
    options: Option<&vaultline_databases::MariadbOptions>,
) -> Result<Command> {
    let (args, database) =
        vaultline_databases::mariadb_args(url).map_err(|e| Error::Request(e.to_string()))?;
    if database.is_empty() {
        fail!(
            Request,
            "the URL must name the database, e.g. mariadb://user@host/db"
        );
    }
    // Without options, the person restoring may hand the password over in
    // the client's own MYSQL_PWD.
    let also: &[&str] = if options.is_none() {
        &["MYSQL_PWD"]
    } else {
        &[]
    };
    let mut command =
        vaultline_databases::child_env::command(vaultline_databases::mariadb_client(), also);
    if let Some(options) = options {
        command.arg(options.arg());
    }
    command.args(args).arg(database);
    Ok(command)
}

/// Restores the one file of `snapshot` (a dump, a command's output) into
/// `command`'s stdin. `what` names the destination in errors.
///
/// # Errors
/// Whatever restore reports, or a program that fails (with the tail of its
/// stderr, which is where pg_restore and mariadb explain themselves).
pub async fn restore_into(
    repo: &Repository,
    tenant: &Name,
    snapshot: &SnapshotId,
    keyring: &Keyring,
    command: Command,
    what: &str,
) -> Result<Restored> {
    restore_into_with(
        repo,
        tenant,
        snapshot,
        keyring,
        command,
        what,
        Options::default(),
    )
    .await
}

/// [`restore_into`] with [`Options`] (a progress counter).
///
/// # Errors
/// See [`restore_into`].
pub async fn restore_into_with(
    repo: &Repository,
    tenant: &Name,
    snapshot: &SnapshotId,
    keyring: &Keyring,
    mut command: Command,
    what: &str,
    options: Options,
) -> Result<Restored> {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::Program {
            what: format!("{what}: cannot start {:?}", command.get_program()),
            cause: Some(e),
        })?;
    let stderr = child.stderr.take().expect("piped");
    let stderr_tail = std::thread::spawn(move || vaultline_databases::stderr_tail(stderr));
    let mut stdin = std::io::BufWriter::with_capacity(1 << 20, child.stdin.take().expect("piped"));
    let restored = restore_with(
        repo,
        tenant,
        snapshot,
        keyring,
        None,
        Sink::Stream(&mut stdin),
        options,
    )
    .await;
    // Closing stdin is the end of input; then the program's verdict.
    drop(stdin);
    if restored.is_err() {
        let _ = child.kill();
    }
    let status = child.wait().map_err(|e| Error::Program {
        what: format!("{what}: cannot wait for {:?}", command.get_program()),
        cause: Some(e),
    })?;
    let tail = stderr_tail.join().unwrap_or_default();
    let tail = tail.trim();
    match restored {
        // A program that died early shows up as a broken pipe; its own words say more.
        Err(e) if !status.success() && !tail.is_empty() => Err(Error::Program {
            what: format!("{what} failed ({status}): {tail}; restore stopped: {e}"),
            cause: None,
        }),
        Err(e) => Err(e),
        Ok(_) if !status.success() => Err(Error::Program {
            what: format!("{what} failed ({status}): {tail}"),
            cause: None,
        }),
        Ok(done) => Ok(done),
    }
}
