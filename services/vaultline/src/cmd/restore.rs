//! `vaultline restore`: a snapshot back into a directory, stdout, a database
//! or a command, with the key from the catalog (unwrapped with the KEK) or
//! from an identity file, and with or without a catalog at all.

mod target;

use crate::context::catalog;
use crate::output::human_bytes;
use anyhow::{Context, Result, bail};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;
use vaultline_format::keys::Identity;
use vaultline_runtime::Config;
use vaultline_runtime::deps::load_kek;
use vaultline_types::{Name, SnapshotId};

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
    /// Tenant identity file; without it the key is unwrapped from the catalog with the KEK.
    #[arg(long)]
    identity: Option<PathBuf>,
    /// Tenant of the snapshot (needed with --identity when there is no catalog).
    #[arg(long)]
    tenant: Option<String>,
    /// As root, give files their recorded user and group ids rather than
    /// the ids this host has for the recorded names.
    #[arg(long)]
    numeric_owner: bool,
    /// Read this repository (`s3://bucket/prefix`, `file:///dir`) with no
    /// catalog and no NATS; needs --identity and --tenant.
    #[arg(long)]
    repo: Option<String>,
}

/// Whose snapshot it is, the key to open it, and the source's restore
/// command if the catalog still has the source.
struct Access {
    tenant: Name,
    identity: Identity,
    restore_command: Option<String>,
}

pub(crate) async fn run(config: &Config, args: RestoreArgs) -> Result<ExitCode> {
    let snapshot = SnapshotId::parse(&args.snapshot)?;
    let target = Target::from_flags(args.to, args.into, args.into_command)?;
    let repository =
        vaultline_runtime::deps::open_repository(&config.repository, args.repo.as_deref()).await?;
    let access = access(
        config,
        &snapshot,
        args.identity,
        args.tenant,
        args.repo.is_some(),
    )
    .await?;
    let started = Instant::now();
    let done = target::run(
        &repository,
        &access.tenant,
        &snapshot,
        &access.identity,
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

async fn access(
    config: &Config,
    snapshot: &SnapshotId,
    identity: Option<PathBuf>,
    tenant: Option<String>,
    offline: bool,
) -> Result<Access> {
    match (identity, offline) {
        (Some(file), offline) => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read identity file {}", file.display()))?;
            let identity = vaultline_format::keys::parse_identity(&text)?;
            let tenant = match (tenant, offline) {
                (Some(t), _) => Name::new(t)?,
                (None, true) => bail!("--repo needs --tenant (there is no catalog to look it up)"),
                (None, false) => catalog(config).await?.find_snapshot(snapshot).await?.tenant,
            };
            Ok(Access {
                tenant,
                identity,
                restore_command: None,
            })
        }
        (None, true) => bail!("--repo needs --identity (the tenant's identity file)"),
        (None, false) => {
            let catalog = catalog(config).await?;
            let row = catalog.find_snapshot(snapshot).await?;
            let key = catalog.key(&row.tenant, &row.key_id).await?;
            // The snapshot may outlive its source: then there is no
            // restore command to offer, and restore says what to give.
            let restore_command = match catalog.source(&row.tenant, &row.source).await {
                Ok(source) => source.config()?.restore_command().map(str::to_owned),
                Err(vaultline_catalog::Error::NotFound(_)) => None,
                Err(other) => return Err(other.into()),
            };
            Ok(Access {
                tenant: row.tenant,
                identity: load_kek(config)?.unwrap(&key.wrapped_identity)?,
                restore_command,
            })
        }
    }
}
