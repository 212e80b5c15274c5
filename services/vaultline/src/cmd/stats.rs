//! `vaultline stats`: success rate and freshness per source, size and dedup
//! per tenant.

use crate::context::catalog;
use crate::output::{human_bytes, print_json, short_time};
use anyhow::Result;
use std::process::ExitCode;
use time::OffsetDateTime;
use vaultline_runtime::Config;

/// Flags of `stats`.
#[derive(clap::Args, Debug)]
pub struct StatsArgs {
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub(crate) async fn run(config: &Config, args: StatsArgs) -> Result<ExitCode> {
    let catalog = catalog(config).await?;
    let sources = catalog.source_stats().await?;
    let repositories = catalog.repository_stats().await?;
    if args.json {
        print_json(&serde_json::json!({ "sources": sources, "repositories": repositories }))?;
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<24} {:>5} {:>8} {:>20} {:>20} {:>6}",
        "SOURCE", "RUNS", "SUCCESS", "LAST SUCCESS", "LAST VERIFIED", "LIVE"
    );
    let when = |t: Option<OffsetDateTime>| t.map(short_time).unwrap_or_else(|| "never".into());
    for s in &sources {
        println!(
            "{:<24} {:>5} {:>8} {:>20} {:>20} {:>6}",
            format!("{}/{}", s.tenant, s.source),
            s.runs,
            s.success_rate
                .map(|r| format!("{:.0}%", r * 100.0))
                .unwrap_or_else(|| "-".into()),
            when(s.last_success),
            when(s.last_verified),
            s.live_snapshots
        );
    }
    println!();
    println!(
        "{:<24} {:>7} {:>12} {:>12} {:>7}",
        "TENANT", "PACKS", "STORED", "LOGICAL", "DEDUP"
    );
    for r in &repositories {
        println!(
            "{:<24} {:>7} {:>12} {:>12} {:>7}",
            r.tenant,
            r.packs,
            human_bytes(r.stored_bytes),
            human_bytes(r.logical_bytes),
            r.dedup_ratio
                .map(|d| format!("{d:.2}x"))
                .unwrap_or_else(|| "-".into())
        );
    }
    Ok(ExitCode::SUCCESS)
}
