//! `vaultline retention`: set a source's policy, or preview what it keeps
//! and forgets; and the policy flags `source add` shares.

use crate::context::{catalog, parse_pair};
use crate::output::{print_json, short_time};
use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use std::process::ExitCode;
use time::OffsetDateTime;
use vaultline_policy::{Policy, Verdict};
use vaultline_runtime::Config;

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

/// Refuses a policy that would forget snapshots the object lock still holds.
pub(crate) fn check_lock(config: &Config, policy: &Policy) -> Result<()> {
    if let Some(lock) = config.repository.longest_lock() {
        policy
            .check_lock(lock)
            .map_err(|why| anyhow::anyhow!("retention policy refused: {why}"))?;
    }
    Ok(())
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

pub(crate) async fn run(config: &Config, command: RetentionCommand) -> Result<ExitCode> {
    let catalog = &catalog(config).await?;
    match command {
        RetentionCommand::Set { source, policy } => {
            let (tenant, source) = parse_pair(&source)?;
            let policy = policy.policy()?;
            check_lock(config, &policy)?;
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
            let decisions = vaultline_retention::preview(
                catalog,
                &tenant,
                &source,
                OffsetDateTime::now_utc(),
                config.repository.longest_lock(),
            )
            .await?;
            if json {
                print_json(&decisions)?;
            } else {
                println!(
                    "{:<26} {:<20} {:<7} RULE",
                    "SNAPSHOT", "STARTED (UTC)", "VERDICT"
                );
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
    Ok(ExitCode::SUCCESS)
}
