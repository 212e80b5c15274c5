//! `vaultline verify`: check one snapshot now, at level 1 (stored objects
//! against their digests) or level 2 as well (read back in full).

use crate::context::catalog;
use crate::output::{human_bytes, print_json};
use anyhow::{Result, bail};
use std::process::ExitCode;
use vaultline_catalog::SnapshotStatus;
use vaultline_runtime::Config;
use vaultline_types::SnapshotId;

/// Flags of `verify`.
#[derive(clap::Args, Debug)]
pub struct VerifyArgs {
    /// Snapshot id.
    snapshot: String,
    /// Level 2 as well.
    #[arg(long)]
    full: bool,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// Level 1 (and with `full` level 2) of one snapshot, now. A damaged
/// snapshot is marked corrupt with the reason.
pub(crate) async fn run(config: &Config, args: VerifyArgs) -> Result<ExitCode> {
    let VerifyArgs {
        snapshot,
        full,
        json,
    } = args;
    let catalog = &catalog(config).await?;
    let snapshot = SnapshotId::parse(&snapshot)?;
    let row = catalog.find_snapshot(&snapshot).await?;
    if !matches!(
        row.status,
        SnapshotStatus::Verified | SnapshotStatus::Stored | SnapshotStatus::Corrupt
    ) {
        bail!(
            "snapshot {snapshot} is {}: only stored snapshots can be verified",
            row.status
        );
    }
    let repository = vaultline_runtime::deps::open_repository(&config.repository, None).await?;
    let finding = vaultline_verifier::level1(
        catalog,
        &repository,
        &row.tenant,
        &snapshot,
        row.manifest_digest.as_deref(),
        vaultline_verifier::Rehash::All,
    )
    .await?;
    let mut reason = (!finding.problems.is_empty()).then(|| {
        format!(
            "level 1: {} of {} objects damaged: {}",
            finding.problems.len(),
            finding.objects,
            finding.problems.join("; ")
        )
    });
    // With --full both levels run, so each says what it sees.
    let mut level2 = None;
    if full {
        let keys = catalog.tenant_keys(&row.tenant).await?;
        let keyring = vaultline_runtime::deps::load_kek(config)?
            .unwrap_keyring(keys.iter().map(|k| k.wrapped_identity.as_slice()))?;
        match vaultline_verifier::level2(&repository, &row.tenant, &snapshot, &keyring).await? {
            Ok(done) => level2 = Some(done),
            Err(why) => {
                reason = Some(match reason {
                    Some(first) => format!("{first}; level 2: {why}"),
                    None => format!("level 2: {why}"),
                });
            }
        }
    }
    if let Some(reason) = &reason {
        catalog
            .finish_snapshot(
                &row.tenant,
                &snapshot,
                SnapshotStatus::Corrupt,
                Some(reason),
            )
            .await?;
    }
    if json {
        let value = serde_json::json!({
            "snapshot": snapshot,
            "tenant": row.tenant,
            "source": row.source,
            "level": if full { 2 } else { 1 },
            "objects": finding.objects,
            "ok": reason.is_none(),
            "error": reason,
            "files": level2.as_ref().map(|d| d.files),
            "bytes": level2.as_ref().map(|d| d.bytes),
        });
        print_json(&value)?;
    } else {
        match (&reason, &level2) {
            (Some(reason), _) => println!("snapshot {snapshot} is CORRUPT: {reason}"),
            (None, Some(done)) => println!(
                "snapshot {snapshot}: level 1 ok ({} objects), level 2 ok ({} files, {} read back, source digest matches)",
                finding.objects,
                done.files,
                human_bytes(done.bytes as i64)
            ),
            (None, None) => println!(
                "snapshot {snapshot}: level 1 ok ({} objects match their recorded digests)",
                finding.objects
            ),
        }
    }
    Ok(if reason.is_none() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
