//! `vaultline history`: backup runs, newest first, with their trigger,
//! status, duration, sizes and error.

use crate::context::{catalog, parse_pair};
use crate::output::{human_bytes, print_json, short_time};
use anyhow::Result;
use std::process::ExitCode;
use vaultline_runtime::Config;

/// Flags of `history`.
#[derive(clap::Args, Debug)]
pub struct HistoryArgs {
    /// Only this `tenant/source`.
    #[arg(long)]
    source: Option<String>,
    /// Only this tenant.
    #[arg(long)]
    tenant: Option<String>,
    /// At most this many runs.
    #[arg(long, default_value_t = 50)]
    limit: i64,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub(crate) async fn run(config: &Config, args: HistoryArgs) -> Result<ExitCode> {
    let HistoryArgs {
        source,
        tenant,
        limit,
        json,
    } = args;
    let (tenant, source) = match source {
        Some(pair) => {
            let (t, s) = parse_pair(&pair)?;
            (Some(t.to_string()), Some(s.to_string()))
        }
        None => (tenant, None),
    };
    let rows = catalog(config)
        .await?
        .executions(tenant.as_deref(), source.as_deref(), limit)
        .await?;
    if json {
        print_json(&rows)?;
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<20} {:<24} {:<26} {:<10} {:<10} {:>9} {:>10} {:>10}  ERROR",
        "STARTED (UTC)", "SOURCE", "SNAPSHOT", "TRIGGER", "STATUS", "DURATION", "READ", "STORED"
    );
    for r in rows {
        println!(
            "{:<20} {:<24} {:<26} {:<10} {:<10} {:>9} {:>10} {:>10}  {}",
            short_time(r.started_at),
            format!("{}/{}", r.tenant, r.source),
            r.snapshot,
            r.trigger,
            r.status,
            r.duration_ms
                .map(|ms| format!("{:.1}s", ms as f64 / 1000.0))
                .unwrap_or_else(|| "-".into()),
            r.bytes_read.map(human_bytes).unwrap_or_else(|| "-".into()),
            r.bytes_stored
                .map(human_bytes)
                .unwrap_or_else(|| "-".into()),
            r.error.unwrap_or_default()
        );
    }
    Ok(ExitCode::SUCCESS)
}
