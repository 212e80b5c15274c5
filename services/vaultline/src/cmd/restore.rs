//! `vaultline restore`: a snapshot back into a directory, stdout, a database
//! or a command, with the key from the catalog (unwrapped with the KEK) or
//! from an identity file, and with or without a catalog at all.

mod app;
mod live;
pub(crate) mod pitr;
mod safety;
mod target;

use crate::access::KeyFlags;
use crate::output::human_bytes;
use crate::progress::{Output, Progress, Unit};
use anyhow::Result;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Instant;
use vaultline_runtime::Config;
use vaultline_types::SnapshotId;

use target::Target;

/// Flags of `restore`.
#[derive(clap::Args, Debug)]
pub struct RestoreArgs {
    /// Snapshot id (with --pitr, --lsn or --xid: the source, `tenant/source`).
    snapshot: String,
    /// Target directory (created if missing), or `-` for stdout; with
    /// --format tar, a new file or `-`.
    #[arg(long)]
    to: Option<PathBuf>,
    /// `dir` (files) or `tar` (one POSIX tar stream of the tree, with pax
    /// headers for long names, exact mtimes, owners and xattrs).
    #[arg(long, value_enum, default_value_t)]
    format: target::Format,
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
    /// Progress as one JSON object per line (on stdout, or on stderr when
    /// stdout carries the restored bytes).
    #[arg(long)]
    json: bool,
    /// Restore into a live application: its internal API's root
    /// (https://app/api/internal). Info and a version check, maintenance on,
    /// a safety snapshot, the restore, row counts and its smoke check, then
    /// maintenance off whatever happened (Ctrl-C included).
    #[arg(long, requires = "app_token_file")]
    app: Option<String>,
    /// The file holding the X-Internal-Token the application expects.
    #[arg(long, requires = "app")]
    app_token_file: Option<PathBuf>,
    /// With --app: when the restore or a check fails, restore the safety
    /// snapshot again.
    #[arg(long, requires = "app")]
    rollback_on_failure: bool,
    /// With --app: the source whose backup is the safety snapshot, when the
    /// target is not the snapshot's own source (`tenant/source`).
    #[arg(long, requires = "app")]
    safety_source: Option<String>,
    /// With --app: how long to wait for the safety snapshot to be verified.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    safety_timeout: std::time::Duration,
    /// With --app: do not ask before overwriting (needed when stdin is not
    /// a terminal).
    #[arg(long, requires = "app")]
    yes: bool,
}

pub(crate) async fn run(
    config: &Config,
    config_file: Option<&std::path::Path>,
    args: RestoreArgs,
) -> Result<ExitCode> {
    if let Some(target) =
        pitr::RecoveryTarget::from_flags(args.pitr.as_deref(), args.lsn.as_deref(), args.xid)?
    {
        if args.path.is_some()
            || args.into.is_some()
            || args.into_command.is_some()
            || args.format != target::Format::Dir
        {
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
    let target = Target::from_flags(args.to, args.into, args.into_command, args.format)?;
    let repository = args.keys.repository(config).await?;
    let access = args
        .keys
        .for_snapshot(config, &repository, &snapshot)
        .await?;
    if let (Some(app), Some(token_file)) = (args.app, args.app_token_file) {
        if args.keys.repo.is_some() || args.path.is_some() {
            anyhow::bail!(
                "--app restores through the catalog, the whole snapshot: no --repo, no --path"
            );
        }
        let catalog = crate::context::catalog(config).await?;
        let row = catalog.find_snapshot(&snapshot).await?;
        let live = live::LiveArgs {
            app,
            token_file,
            rollback_on_failure: args.rollback_on_failure,
            yes: args.yes,
            safety_source: args.safety_source,
            safety_timeout: args.safety_timeout,
        };
        return live::run(config, &catalog, &repository, &row, access, target, live).await;
    }
    let started = Instant::now();
    let written = Arc::new(AtomicU64::new(0));
    let output = if matches!(target, Target::Stdout | Target::Tar(None)) {
        Output::StderrOnly
    } else {
        Output::Default
    };
    // The catalog's size is the whole snapshot's; a --path takes a part.
    let total = access.size.filter(|_| args.path.is_none());
    let following =
        Progress::start("restore", Unit::Bytes, total, args.json, output).follow(written.clone());
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
            progress: Some(written),
        },
    )
    .await;
    following.finish(done.is_ok()).await;
    let done = done?;
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
