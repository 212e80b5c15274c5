//! `vaultline backup`: trigger a backup now, and with `--wait` follow the
//! snapshot it starts until it is verified or fails.

use crate::context::{catalog, parse_pair};
use crate::output::human_bytes;
use crate::request::{new_request_id, publish_trigger};
use anyhow::{Result, bail};
use std::process::ExitCode;
use std::time::{Duration, Instant};
use vaultline_catalog::{Catalog, SnapshotStatus};
use vaultline_runtime::Config;
use vaultline_types::Name;

/// Flags of `backup`.
#[derive(clap::Args, Debug)]
pub struct BackupArgs {
    /// `tenant/source`
    source: String,
    /// Follow the snapshot until it is verified; exit non-zero if it fails.
    #[arg(long)]
    wait: bool,
    /// Give up waiting after this many seconds.
    #[arg(long, default_value_t = 3600)]
    timeout: u64,
}

pub(crate) async fn run(config: &Config, args: BackupArgs) -> Result<ExitCode> {
    let (tenant, source) = parse_pair(&args.source)?;
    let catalog = catalog(config).await?;
    // Refuse a source that does not exist here, with the catalog's words,
    // rather than publish a trigger the extractor would drop.
    catalog.source(&tenant, &source).await?;
    let request_id = new_request_id();
    publish_trigger(config, &tenant, &source, &request_id).await?;
    println!("backup of {tenant}/{source} requested (request {request_id})");
    if !args.wait {
        return Ok(ExitCode::SUCCESS);
    }
    wait_for(
        &catalog,
        (&tenant, &source),
        &request_id,
        Duration::from_secs(args.timeout),
    )
    .await
}

async fn wait_for(
    catalog: &Catalog,
    (tenant, source): (&Name, &Name),
    request_id: &str,
    timeout: Duration,
) -> Result<ExitCode> {
    let deadline = Instant::now() + timeout;
    let mut last = None;
    loop {
        if let Some(row) = catalog
            .snapshot_by_request(tenant, source, request_id)
            .await?
        {
            if last != Some(row.status) {
                println!("snapshot {} {}", row.id, row.status);
                last = Some(row.status);
            }
            if row.status.is_terminal() {
                return if row.status == SnapshotStatus::Verified {
                    println!(
                        "read {}, new {}, stored {}",
                        human_bytes(row.bytes_read),
                        human_bytes(row.bytes_new),
                        human_bytes(row.bytes_stored)
                    );
                    Ok(ExitCode::SUCCESS)
                } else {
                    bail!(
                        "snapshot {} ended {}: {}",
                        row.id,
                        row.status,
                        row.error.unwrap_or_default()
                    )
                };
            }
        }
        if Instant::now() > deadline {
            bail!(
                "gave up waiting after {}s (is `vaultline serve` running?)",
                timeout.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
