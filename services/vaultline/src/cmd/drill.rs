//! `vaultline drill`: ask the verifier to restore a database source's latest
//! verified snapshot into a scratch database and compare row counts, and wait
//! for the answer; or set how often it does so on its own.

use crate::context::{catalog, parse_pair};
use crate::output::print_json;
use crate::request::{new_request_id, publish_request};
use anyhow::{Context, Result, bail};
use std::process::ExitCode;
use std::time::{Duration, Instant};
use vaultline_runtime::Config;
use vaultline_types::{DrillRequested, Message};

/// Flags of `drill`.
#[derive(clap::Args, Debug)]
pub struct DrillArgs {
    /// `tenant/source`
    source: String,
    /// Instead of drilling now, drill every so often (`1d`, `12h`), or `off`.
    #[arg(long)]
    every: Option<String>,
    /// Seconds to wait for the verifier to run it.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// Requests a drill from the verifier and waits for its result, or sets the
/// source's drill cadence.
pub(crate) async fn run(
    config: &Config,
    config_file: Option<&std::path::Path>,
    args: DrillArgs,
) -> Result<ExitCode> {
    let DrillArgs {
        source,
        every,
        timeout,
        json,
    } = args;
    let catalog = &catalog(config).await?;
    let (tenant, source) = parse_pair(&source)?;
    let row = catalog.source(&tenant, &source).await?;
    let physical = matches!(row.config()?, vaultline_types::SourceConfig::Postgres(p) if p.mode == vaultline_types::PostgresMode::Physical);
    if physical && every.is_some() {
        bail!(
            "{tenant}/{source} is a physical postgres source: its PITR drill runs from `vaultline drill` on a host with PostgreSQL, not on the verifier's schedule (yet)"
        );
    }
    if let Some(every) = every {
        let seconds = match every.as_str() {
            "off" | "never" => None,
            text => Some(
                humantime::parse_duration(text)
                    .with_context(|| {
                        format!("--every {text:?} is not a duration (e.g. 1d, 12h) or off")
                    })?
                    .as_secs()
                    .max(60) as i64,
            ),
        };
        catalog.set_drill_every(&tenant, &source, seconds).await?;
        match seconds {
            Some(s) => println!(
                "{tenant}/{source} is drilled every {}",
                humantime::format_duration(Duration::from_secs(s as u64))
            ),
            None => println!("{tenant}/{source} is no longer drilled on a schedule"),
        }
        return Ok(ExitCode::SUCCESS);
    }
    if physical {
        return crate::cmd::pitr_drill::run(config, config_file, &tenant, &source, json).await;
    }
    let spec = row.config()?;
    if spec.database_url().is_none() {
        bail!(
            "drills restore database sources; {tenant}/{source} is a {} source (try vaultline verify --full)",
            spec.kind()
        );
    }
    let request_id = new_request_id();
    let request = DrillRequested {
        tenant: tenant.clone(),
        source: source.clone(),
        request_id: Some(request_id.clone()),
    };
    publish_request(
        config,
        request.subject(),
        serde_json::to_vec(&request)?,
        &request_id,
        &[],
    )
    .await?;
    eprintln!("drill of {tenant}/{source} requested (request {request_id})");
    let deadline = Instant::now() + Duration::from_secs(timeout);
    let result = loop {
        if let Some(result) = catalog
            .drill_by_request(&tenant, &source, &request_id)
            .await?
        {
            break result;
        }
        if Instant::now() > deadline {
            bail!("no drill result within {timeout}s (is a verifier running?)");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    if json {
        print_json(&result)?;
    } else {
        println!(
            "drill of {tenant}/{source} {} in {:.1}s (snapshot {})",
            result.outcome.to_uppercase(),
            result.duration_ms as f64 / 1000.0,
            result.snapshot.as_deref().unwrap_or("none")
        );
        if let Some(tables) = result.tables.as_array() {
            for table in tables {
                println!(
                    "  {:<40} dump {:>10}  restored {:>10}",
                    table["table"].as_str().unwrap_or("?"),
                    table["expected"],
                    table["restored"]
                );
            }
        }
        if let Some(error) = &result.error {
            println!("  error: {error}");
        }
    }
    Ok(if result.outcome == "passed" {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
