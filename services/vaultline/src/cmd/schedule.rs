//! `vaultline schedule`: adding, listing and toggling a source's schedules.

use crate::context::{catalog, parse_pair};
use crate::output::print_json;
use anyhow::{Context, Result, bail};
use clap::Subcommand;
use std::process::ExitCode;
use std::time::Duration;
use vaultline_catalog::Catalog;
use vaultline_policy::{Cadence, ScheduleSpec};
use vaultline_runtime::Config;

#[derive(Subcommand, Debug)]
pub enum ScheduleCommand {
    /// Schedule TENANT/SOURCE: `--cron '0 3 * * *' --timezone Europe/Paris` or `--every 6h`.
    Add {
        /// `tenant/source`
        source: String,
        /// Cron expression: 5 fields (minute hour day month weekday) or 6 with seconds first.
        #[arg(long, conflicts_with = "every", required_unless_present = "every")]
        cron: Option<String>,
        /// IANA time zone the cron expression is read in.
        #[arg(long, default_value = "UTC", requires = "cron")]
        timezone: String,
        /// Interval, e.g. `30s`, `15m`, `6h`, `1day`. Slots start at multiples of it since the unix epoch.
        #[arg(long)]
        every: Option<String>,
    },
    /// List schedules.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Remove a source's schedule.
    Rm { source: String },
    /// Resume a paused schedule.
    Enable { source: String },
    /// Pause a schedule.
    Disable { source: String },
}

pub(crate) async fn run(config: &Config, command: ScheduleCommand) -> Result<ExitCode> {
    let catalog = catalog(config).await?;
    match command {
        ScheduleCommand::Add {
            source,
            cron,
            timezone,
            every,
        } => {
            let (tenant, source) = parse_pair(&source)?;
            let spec = match (cron, every) {
                (Some(expression), _) => ScheduleSpec::Cron {
                    expression,
                    timezone,
                },
                (None, Some(every)) => {
                    let interval = humantime::parse_duration(&every).with_context(|| {
                        format!("{every:?} is not an interval (e.g. 30s, 15m, 6h, 1day)")
                    })?;
                    ScheduleSpec::Every {
                        seconds: i64::try_from(interval.as_secs()).unwrap_or(i64::MAX),
                    }
                }
                (None, None) => bail!("give --cron or --every"),
            };
            let cadence = Cadence::parse(&spec)?;
            let now = time::OffsetDateTime::now_utc().unix_timestamp();
            let last = cadence.latest_at_or_before(now).unwrap_or(now);
            catalog.set_schedule(&tenant, &source, &spec, last).await?;
            let next = cadence
                .next_after(last.max(now))
                .map(utc)
                .unwrap_or_default();
            println!(
                "{tenant}/{source} is backed up {}; next at {next}",
                describe(&spec)
            );
        }
        ScheduleCommand::List { json } => {
            let rows = catalog.schedules().await?;
            if json {
                print_json(&rows)?;
            } else {
                println!(
                    "{:<32} {:<40} {:<8} NEXT (UTC)",
                    "SOURCE", "WHEN", "ENABLED"
                );
                let now = time::OffsetDateTime::now_utc().unix_timestamp();
                for r in rows {
                    let next = Cadence::parse(&r.spec)
                        .ok()
                        .and_then(|c| c.next_after(r.last_slot.max(now)))
                        .map(utc)
                        .unwrap_or_else(|| "-".into());
                    println!(
                        "{:<32} {:<40} {:<8} {next}",
                        format!("{}/{}", r.tenant, r.source),
                        describe(&r.spec),
                        r.enabled
                    );
                }
            }
        }
        ScheduleCommand::Rm { source } => {
            let (tenant, source) = parse_pair(&source)?;
            if !catalog.remove_schedule(&tenant, &source).await? {
                bail!("{tenant}/{source} has no schedule");
            }
            println!("removed the schedule of {tenant}/{source}");
        }
        ScheduleCommand::Enable { source } => toggle(&catalog, &source, true).await?,
        ScheduleCommand::Disable { source } => toggle(&catalog, &source, false).await?,
    }
    Ok(ExitCode::SUCCESS)
}

fn describe(spec: &ScheduleSpec) -> String {
    match spec {
        ScheduleSpec::Cron {
            expression,
            timezone,
        } => format!("at cron {expression:?} ({timezone})"),
        ScheduleSpec::Every { seconds } => format!(
            "every {}",
            humantime::format_duration(Duration::from_secs((*seconds).max(0) as u64))
        ),
    }
}

fn utc(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

async fn toggle(catalog: &Catalog, source: &str, enabled: bool) -> Result<()> {
    let (tenant, source) = parse_pair(source)?;
    if !catalog.enable_schedule(&tenant, &source, enabled).await? {
        bail!("{tenant}/{source} has no schedule");
    }
    println!(
        "schedule of {tenant}/{source} {}",
        if enabled { "enabled" } else { "disabled" }
    );
    Ok(())
}
