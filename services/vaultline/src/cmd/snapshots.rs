//! `vaultline snapshots`: the catalog's snapshots, newest first.

use crate::context::catalog;
use crate::output::{human_bytes, print_json, short_time};
use anyhow::Result;
use std::process::ExitCode;
use vaultline_catalog::SnapshotRow;
use vaultline_runtime::Config;
use vaultline_types::Name;

/// Flags of `snapshots`.
#[derive(clap::Args, Debug)]
pub struct SnapshotsArgs {
    /// Only this tenant.
    #[arg(long)]
    tenant: Option<String>,
    /// Only this source (with --tenant).
    #[arg(long)]
    source: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub(crate) async fn run(config: &Config, args: SnapshotsArgs) -> Result<ExitCode> {
    let tenant = args.tenant.map(Name::new).transpose()?;
    let source = args.source.map(Name::new).transpose()?;
    let rows = catalog(config)
        .await?
        .snapshots(tenant.as_ref(), source.as_ref())
        .await?;
    if args.json {
        print_json(&rows)?;
    } else {
        print_table(&rows);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_table(rows: &[SnapshotRow]) {
    println!(
        "{:<26} {:<24} {:<10} {:<20} {:>7} {:>10} {:>10} {:>10}  ERROR",
        "SNAPSHOT", "SOURCE", "STATUS", "STARTED", "FILES", "READ", "NEW", "STORED"
    );
    for r in rows {
        println!(
            "{:<26} {:<24} {:<10} {:<20} {:>7} {:>10} {:>10} {:>10}  {}",
            r.id.as_str(),
            format!("{}/{}", r.tenant, r.source),
            r.status.as_str(),
            short_time(r.started_at),
            r.files,
            human_bytes(r.bytes_read),
            human_bytes(r.bytes_new),
            human_bytes(r.bytes_stored),
            r.error.as_deref().unwrap_or("")
        );
    }
}
