//! `vaultline restore`: a snapshot back into a directory, stdout, a database
//! or a command, with the key from the catalog (unwrapped with the KEK) or
//! from an identity file, and with or without a catalog at all.

mod target;

use crate::access::KeyFlags;
use crate::output::human_bytes;
use anyhow::Result;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;
use vaultline_runtime::Config;
use vaultline_types::SnapshotId;

use target::Target;

/// Flags of `restore`.
#[derive(clap::Args, Debug)]
pub struct RestoreArgs {
    /// Snapshot id.
    snapshot: String,
    /// Target directory (created if missing), or `-` for stdout.
    #[arg(long)]
    to: Option<PathBuf>,
    /// Restore only this path (and what is under it) of a file tree.
    #[arg(long)]
    path: Option<String>,
    /// A database to restore a postgres or mariadb snapshot into
    /// (`postgres://user@host/db`, `mariadb://user@host/db`; the password
    /// from PGPASSWORD or MYSQL_PWD).
    #[arg(long)]
    into: Option<String>,
    /// Pipe a command snapshot into this shell command (without a value:
    /// the source's own --restore-command).
    #[arg(long, num_args = 0..=1, default_missing_value = "")]
    into_command: Option<String>,
    #[command(flatten)]
    keys: KeyFlags,
    /// As root, give files their recorded user and group ids rather than
    /// the ids this host has for the recorded names.
    #[arg(long)]
    numeric_owner: bool,
}

pub(crate) async fn run(config: &Config, args: RestoreArgs) -> Result<ExitCode> {
    let snapshot = SnapshotId::parse(&args.snapshot)?;
    let target = Target::from_flags(args.to, args.into, args.into_command)?;
    let repository = args.keys.repository(config).await?;
    let access = args
        .keys
        .for_snapshot(config, &repository, &snapshot)
        .await?;
    let started = Instant::now();
    let done = target::run(
        &repository,
        &access.tenant,
        &snapshot,
        &access.keyring,
        args.path.as_deref(),
        target.clone(),
        access.restore_command,
        vaultline_restore::Options {
            numeric_owner: args.numeric_owner,
        },
    )
    .await?;
    let checked = if done.digest_checked {
        "digest verified"
    } else {
        "every chunk authenticated"
    };
    eprintln!(
        "restored {} entries ({} files, {}) of snapshot {snapshot} to {target} in {:.1}s; {checked}",
        done.entries,
        done.files,
        human_bytes(done.bytes as i64),
        started.elapsed().as_secs_f64()
    );
    for line in target::caveats(&done) {
        eprintln!("{line}");
    }
    Ok(ExitCode::SUCCESS)
}
