//! Commands of the operating loop: retention policies and previews, garbage
//! collection, the audit trail, history, stats and webhooks.

use crate::cli::{human_bytes, parse_pair};
use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use time::OffsetDateTime;
use vaultline_catalog::Catalog;
use vaultline_retention::{Policy, Verdict};
use vaultline_runtime::Config;
use vaultline_types::Name;

/// Retention rules, as flags (`source add`, `retention set`).
#[derive(Args, Debug, Default, Clone)]
pub struct PolicyArgs {
    /// Keep the newest N verified snapshots.
    #[arg(long)]
    pub keep_last: Option<u32>,
    /// Keep the newest snapshot of each of the newest N hours that have one.
    #[arg(long)]
    pub keep_hourly: Option<u32>,
    /// … of each of the newest N days (UTC).
    #[arg(long)]
    pub keep_daily: Option<u32>,
    /// … of each of the newest N ISO weeks.
    #[arg(long)]
    pub keep_weekly: Option<u32>,
    /// … of each of the newest N months.
    #[arg(long)]
    pub keep_monthly: Option<u32>,
    /// … of each of the newest N years.
    #[arg(long)]
    pub keep_yearly: Option<u32>,
    /// Keep every snapshot taken within this long of the newest one, e.g. `14days`.
    #[arg(long)]
    pub keep_within: Option<String>,
    /// Never forget a snapshot younger than this.
    #[arg(long)]
    pub min_age: Option<String>,
    /// Forget snapshots older than this, whatever keeps them (never the newest verified).
    #[arg(long)]
    pub max_age: Option<String>,
}

impl PolicyArgs {
    /// The policy these flags describe.
    ///
    /// # Errors
    /// A duration that does not parse.
    pub fn policy(&self) -> Result<Policy> {
        let duration = |flag: &str, value: &Option<String>| {
            value
                .as_deref()
                .map(|text| {
                    humantime::parse_duration(text).with_context(|| {
                        format!("--{flag} {text:?} is not a duration (e.g. 12h, 30days, 1y)")
                    })
                })
                .transpose()
        };
        Ok(Policy {
            keep_last: self.keep_last,
            keep_hourly: self.keep_hourly,
            keep_daily: self.keep_daily,
            keep_weekly: self.keep_weekly,
            keep_monthly: self.keep_monthly,
            keep_yearly: self.keep_yearly,
            keep_within: duration("keep-within", &self.keep_within)?,
            min_age: duration("min-age", &self.min_age)?,
            max_age: duration("max-age", &self.max_age)?,
        })
    }
}

#[derive(Subcommand, Debug)]
pub enum RetentionCommand {
    /// Replace a source's policy: `vaultline retention set acme/docs --keep-daily 7 --keep-weekly 4`.
    Set {
        /// `tenant/source`
        source: String,
        #[command(flatten)]
        policy: PolicyArgs,
    },
    /// Print keep or forget for each verified snapshot, with the rule that decided.
    Preview {
        /// `tenant/source`
        source: String,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

pub(crate) async fn retention(catalog: &Catalog, command: RetentionCommand) -> Result<()> {
    match command {
        RetentionCommand::Set { source, policy } => {
            let (tenant, source) = parse_pair(&source)?;
            let policy = policy.policy()?;
            catalog
                .set_retention(&tenant, &source, &serde_json::to_value(&policy)?)
                .await?;
            println!(
                "retention of {tenant}/{source}: {}",
                serde_json::to_string(&policy)?
            );
        }
        RetentionCommand::Preview { source, json } => {
            let (tenant, source) = parse_pair(&source)?;
            let decisions =
                vaultline_retention::preview(catalog, &tenant, &source, OffsetDateTime::now_utc())
                    .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&decisions)?);
            } else {
                println!("{:<26} {:<20} {:<7} RULE", "SNAPSHOT", "STARTED (UTC)", "");
                for d in &decisions {
                    println!(
                        "{:<26} {:<20} {:<7} {}",
                        d.snapshot.as_str(),
                        short_time(d.time),
                        match d.verdict {
                            Verdict::Keep => "keep",
                            Verdict::Forget => "forget",
                        },
                        d.rule
                    );
                }
            }
        }
    }
    Ok(())
}

/// `vaultline gc`: one garbage-collection pass now, or what it would do.
pub(crate) async fn gc(
    config: &Config,
    catalog: &Catalog,
    dry_run: bool,
    grace: Option<String>,
    json: bool,
) -> Result<()> {
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
            println!("{}", serde_json::to_string_pretty(&value)?);
            return Ok(());
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
        }
        return Ok(());
    }
    let repository = vaultline_storage::Repository::open_dir(&config.repository.path).await?;
    let mut reports = Vec::new();
    for tenant in catalog.tenants_with_packs().await? {
        let tenant = Name::new(tenant)?;
        reports.push(vaultline_retention::gc::collect(catalog, &repository, &tenant, grace).await?);
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    } else {
        for r in &reports {
            println!(
                "{}: deleted {} pack(s) ({}), condemned {}, revived {}",
                r.tenant,
                r.deleted,
                human_bytes(r.deleted_bytes as i64),
                r.condemned,
                r.revived
            );
        }
    }
    Ok(())
}

pub(crate) fn short_time(t: OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .format(&time::macros::format_description!(
            "[year]-[month]-[day] [hour]:[minute]:[second]"
        ))
        .unwrap_or_default()
}
