//! `vaultline gc`: delete the packs no snapshot references any more, after
//! they have waited out the grace period as condemned.

use crate::context::catalog;
use crate::output::{human_bytes, print_json, short_time};
use anyhow::{Context, Result};
use std::process::ExitCode;
use vaultline_runtime::Config;

/// Flags of `gc`.
#[derive(clap::Args, Debug)]
pub struct GcArgs {
    /// Show what would be condemned and deleted; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Grace period (default: `retention.gc-grace` of the config, 24h).
    #[arg(long)]
    grace: Option<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// One garbage-collection pass now, or what it would do.
pub(crate) async fn run(config: &Config, args: GcArgs) -> Result<ExitCode> {
    let GcArgs {
        dry_run,
        grace,
        json,
    } = args;
    let catalog = &catalog(config).await?;
    let grace = match grace {
        Some(text) => humantime::parse_duration(&text)
            .with_context(|| format!("--grace {text:?} is not a duration"))?,
        None => config.retention.gc_grace,
    };
    if dry_run {
        let plans = vaultline_retention::gc::plan(catalog, grace).await?;
        if json {
            let value: serde_json::Map<String, serde_json::Value> = plans
                .into_iter()
                .map(|(t, p)| Ok((t, serde_json::to_value(p)?)))
                .collect::<Result<_>>()?;
            print_json(&value)?;
            return Ok(ExitCode::SUCCESS);
        }
        for (tenant, plan) in plans {
            println!(
                "{tenant}: would delete {} pack(s) ({}), condemn {} ({}) for {}; {} held by snapshots in flight, {} in their grace period",
                plan.to_delete,
                human_bytes(plan.to_delete_bytes as i64),
                plan.to_condemn,
                human_bytes(plan.to_condemn_bytes as i64),
                humantime::format_duration(grace),
                plan.held,
                plan.waiting
            );
            for id in &plan.sample {
                println!("  delete pack {id}");
            }
            if plan.locked > 0 {
                println!(
                    "{tenant}: {} pack(s) ({}) held by their object lock, deleted once it expires",
                    plan.locked,
                    human_bytes(plan.locked_bytes as i64)
                );
            }
            for held in &plan.locked_sample {
                println!(
                    "  held pack {} locked until {}",
                    held.id,
                    short_time(held.locked_until)
                );
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let repository = vaultline_runtime::deps::open_repository(&config.repository, None).await?;
    repository.check_lock().await?;
    let reports = vaultline_retention::gc::collect_all(catalog, &repository, grace).await?;
    if json {
        print_json(&reports)?;
    } else {
        for r in &reports {
            println!(
                "{}: deleted {} pack(s) ({}), condemned {}, revived {}, {} held by their object lock",
                r.tenant,
                r.deleted,
                human_bytes(r.deleted_bytes as i64),
                r.condemned,
                r.revived,
                r.locked
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
