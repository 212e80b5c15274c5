//! `vaultline restore`: a snapshot back into a directory, stdout, a database
//! or a command, with the key from the catalog (unwrapped with the KEK) or
//! from an identity file, and with or without a catalog at all.

pub(crate) mod pitr;
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
    /// Snapshot id (with --pitr, --lsn or --xid: the source, `tenant/source`).
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
    /// Point-in-time recovery of a physical postgres source: an RFC 3339
    /// time (2026-11-29T10:15:00Z) or `latest`. Writes the data directory
    /// of the latest base backup before it into --to, set to replay the
    /// archived WAL up to it.
    #[arg(long)]
    pitr: Option<String>,
    /// Point-in-time recovery up to this LSN (like 0/3000060).
    #[arg(long)]
    lsn: Option<String>,
    /// Point-in-time recovery up to the commit of this transaction id.
    #[arg(long)]
    xid: Option<u64>,
}

pub(crate) async fn run(
    config: &Config,
    config_file: Option<&std::path::Path>,
    args: RestoreArgs,
) -> Result<ExitCode> {
    if let Some(target) =
        pitr::RecoveryTarget::from_flags(args.pitr.as_deref(), args.lsn.as_deref(), args.xid)?
    {
        if args.path.is_some() || args.into.is_some() || args.into_command.is_some() {
            anyhow::bail!("a point-in-time restore writes a data directory: give --to DIR alone");
        }
        return pitr::run(
            config,
            config_file,
            &args.snapshot,
            target,
            args.to,
            &args.keys,
        )
        .await;
    }
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
