//! `vaultline snapshot protect|unprotect|forget`: what an operator decides
//! about one snapshot, outside the retention policy. Each change is
//! published for the audit trail.

use crate::context::catalog;
use crate::output::{confirm, human_bytes, short_time};
use crate::request::publish_record;
use anyhow::{Context, Result, bail};
use std::process::ExitCode;
use vaultline_catalog::{Catalog, SnapshotRow, SnapshotStatus};
use vaultline_runtime::Config;
use vaultline_storage::ObjectKey;
use vaultline_types::{SnapshotChanged, SnapshotId};

#[derive(clap::Subcommand, Debug)]
pub enum SnapshotCommand {
    /// Keep a snapshot whatever the retention policy says, until unprotected.
    Protect { snapshot: String },
    /// Let the retention policy decide about a protected snapshot again.
    Unprotect { snapshot: String },
    /// Forget a snapshot now: it is expired, its manifest deleted, and its
    /// packs go at a later garbage collection (after the grace period).
    /// Asks first; refuses a protected snapshot, one still in flight, and
    /// the source's newest verified snapshot unless --force.
    Forget {
        snapshot: String,
        /// Also when it is the source's newest verified snapshot.
        #[arg(long)]
        force: bool,
        /// Do not ask (needed when stdin is not a terminal).
        #[arg(long)]
        yes: bool,
    },
}

pub(crate) async fn run(config: &Config, command: SnapshotCommand) -> Result<ExitCode> {
    let catalog = catalog(config).await?;
    match command {
        SnapshotCommand::Protect { snapshot } => protect(config, &catalog, &snapshot, true).await,
        SnapshotCommand::Unprotect { snapshot } => {
            protect(config, &catalog, &snapshot, false).await
        }
        SnapshotCommand::Forget {
            snapshot,
            force,
            yes,
        } => forget(config, &catalog, &snapshot, force, yes).await,
    }
}

async fn protect(
    config: &Config,
    catalog: &Catalog,
    snapshot: &str,
    protected: bool,
) -> Result<ExitCode> {
    let row = catalog.find_snapshot(&SnapshotId::parse(snapshot)?).await?;
    let change = if protected {
        "protected"
    } else {
        "unprotected"
    };
    if !catalog
        .set_protected(&row.tenant, &row.id, protected)
        .await?
    {
        eprintln!(
            "snapshot {} of {}/{} was already {change}",
            row.id, row.tenant, row.source
        );
        return Ok(ExitCode::SUCCESS);
    }
    publish_record(
        config,
        &changed(&row, change, format!("status {}", row.status)),
    )
    .await
    .with_context(|| {
        format!(
            "snapshot {} is {change}, but its audit event was not published",
            row.id
        )
    })?;
    eprintln!(
        "snapshot {} of {}/{} is {change}",
        row.id, row.tenant, row.source
    );
    Ok(ExitCode::SUCCESS)
}

async fn forget(
    config: &Config,
    catalog: &Catalog,
    snapshot: &str,
    force: bool,
    yes: bool,
) -> Result<ExitCode> {
    let row = catalog.find_snapshot(&SnapshotId::parse(snapshot)?).await?;
    let detail = refusal(config, catalog, &row, force).await?;
    confirm(
        &format!(
            "Forget snapshot {} of {}/{} ({}, started {}, {} files, {})? Its manifest is deleted; this cannot be undone.",
            row.id,
            row.tenant,
            row.source,
            row.status,
            short_time(row.started_at),
            row.files,
            human_bytes(row.bytes_read)
        ),
        yes,
    )?;
    // Catalog first, as retention does: once expired nothing reads it, and
    // the database refuses it if someone protected it meanwhile.
    if !catalog
        .finish_snapshot(&row.tenant, &row.id, SnapshotStatus::Expired, None)
        .await?
    {
        bail!(
            "snapshot {} changed while you were asked: nothing was forgotten",
            row.id
        );
    }
    let repository = vaultline_runtime::deps::open_repository(&config.repository, None).await?;
    repository
        .delete(&ObjectKey::manifest(&row.tenant, &row.id))
        .await
        .with_context(|| {
            format!(
                "snapshot {} is expired, but its manifest could not be deleted (garbage collection and `vaultline check` will show it)",
                row.id
            )
        })?;
    publish_record(config, &changed(&row, "forgotten", detail))
        .await
        .with_context(|| {
            format!(
                "snapshot {} is forgotten, but its audit event was not published",
                row.id
            )
        })?;
    eprintln!(
        "snapshot {} of {}/{} forgotten; its packs go at a garbage collection after the grace period",
        row.id, row.tenant, row.source
    );
    Ok(ExitCode::SUCCESS)
}

/// The audit event of a change to `row`.
fn changed(row: &SnapshotRow, change: &str, detail: String) -> SnapshotChanged {
    SnapshotChanged {
        tenant: row.tenant.clone(),
        source: row.source.clone(),
        snapshot: row.id.clone(),
        change: change.into(),
        detail,
    }
}

/// Why a snapshot may not be forgotten, or what allowed it (for the trail).
async fn refusal(
    config: &Config,
    catalog: &Catalog,
    row: &SnapshotRow,
    force: bool,
) -> Result<String> {
    let id = &row.id;
    if row.protected {
        bail!("snapshot {id} is protected: `vaultline snapshot unprotect {id}` first");
    }
    match row.status {
        SnapshotStatus::Expired => bail!("snapshot {id} is already forgotten"),
        SnapshotStatus::Verified | SnapshotStatus::Corrupt | SnapshotStatus::Failed => {}
        other => bail!(
            "snapshot {id} is {other}: a backup in flight is not forgotten; wait until it is verified or failed"
        ),
    }
    if let Some(lock) = config.repository.longest_lock() {
        let until = row.started_at + lock;
        if until > time::OffsetDateTime::now_utc() {
            bail!(
                "snapshot {id} is under object lock until {}: its objects cannot be deleted before",
                short_time(until)
            );
        }
    }
    if row.status != SnapshotStatus::Verified {
        return Ok(format!("status {}", row.status));
    }
    let newest_verified = catalog
        .snapshots(Some(&row.tenant), Some(&row.source))
        .await?
        .into_iter()
        .find(|s| s.status == SnapshotStatus::Verified);
    if newest_verified.is_some_and(|newest| &newest.id == id) {
        if !force {
            bail!(
                "snapshot {id} is the newest verified snapshot of {}/{}: the one a restore would take. Add --force to forget it anyway",
                row.tenant,
                row.source
            );
        }
        return Ok("--force: the source's newest verified snapshot".into());
    }
    Ok("status verified, a newer verified snapshot remains".into())
}
