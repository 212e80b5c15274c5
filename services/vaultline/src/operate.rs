//! Commands of the operating loop: retention policies and previews, garbage
//! collection, the audit trail, history, stats and webhooks.

use crate::cli::{human_bytes, parse_pair};
use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use time::OffsetDateTime;
use vaultline_catalog::Catalog;
use vaultline_policy::{Policy, Verdict};
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
    let repository = vaultline_runtime::deps::open_repository(&config.repository, None).await?;
    let reports = vaultline_retention::gc::collect_all(catalog, &repository, grace).await?;
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

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Recompute every tenant's hash chain; fail at the first row that does not hold.
    Verify {
        /// Only this tenant's chain.
        #[arg(long)]
        tenant: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

pub(crate) async fn audit(
    catalog: &Catalog,
    command: AuditCommand,
) -> Result<std::process::ExitCode> {
    let AuditCommand::Verify { tenant, json } = command;
    let check = catalog.verify_audit(tenant.as_deref()).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&check)?);
    }
    match &check.broken {
        None => {
            if !json {
                println!(
                    "audit trail intact: {} row(s) in {} chain(s)",
                    check.rows, check.tenants
                );
            }
            Ok(std::process::ExitCode::SUCCESS)
        }
        Some(row) => anyhow::bail!(
            "audit trail broken at row {} (tenant {}, sequence {}): {}",
            row.id,
            row.tenant,
            row.seq,
            row.reason
        ),
    }
}

/// `vaultline history`: backup runs, newest first.
pub(crate) async fn history(
    catalog: &Catalog,
    source: Option<String>,
    tenant: Option<String>,
    limit: i64,
    json: bool,
) -> Result<()> {
    let (tenant, source) = match source {
        Some(pair) => {
            let (t, s) = parse_pair(&pair)?;
            (Some(t.to_string()), Some(s.to_string()))
        }
        None => (tenant, None),
    };
    let rows = catalog
        .executions(tenant.as_deref(), source.as_deref(), limit)
        .await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
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
    Ok(())
}

/// `vaultline stats`: success rate and freshness per source, size and dedup per tenant.
pub(crate) async fn stats(catalog: &Catalog, json: bool) -> Result<()> {
    let sources = catalog.source_stats().await?;
    let repositories = catalog.repository_stats().await?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({ "sources": sources, "repositories": repositories })
            )?
        );
        return Ok(());
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
    Ok(())
}

#[derive(Subcommand, Debug)]
pub enum WebhookCommand {
    /// Notify URL of failed or corrupt snapshots (and verified ones with --on-success),
    /// signed with the secret in --secret-file.
    Add {
        tenant: String,
        /// Where to POST the JSON body.
        #[arg(long)]
        url: String,
        /// File holding the shared secret (sealed with the KEK in the catalog).
        #[arg(long)]
        secret_file: std::path::PathBuf,
        /// Also notify verified snapshots.
        #[arg(long)]
        on_success: bool,
        /// Name of the webhook (several per tenant).
        #[arg(long, default_value = "default")]
        id: String,
    },
    /// List webhooks with their delivery counts.
    List {
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Remove a webhook and its deliveries.
    Rm {
        tenant: String,
        #[arg(long, default_value = "default")]
        id: String,
    },
}

pub(crate) async fn webhook(
    config: &Config,
    catalog: &Catalog,
    command: WebhookCommand,
) -> Result<()> {
    match command {
        WebhookCommand::Add {
            tenant,
            url,
            secret_file,
            on_success,
            id,
        } => {
            let tenant = Name::new(tenant)?;
            let id = Name::new(id)?;
            let parsed = describe_url(&url)?;
            let secret = std::fs::read_to_string(&secret_file).with_context(|| {
                format!("cannot read the secret file {}", secret_file.display())
            })?;
            let secret = secret.trim();
            if secret.len() < 16 {
                anyhow::bail!("the webhook secret must be at least 16 characters");
            }
            let kek = vaultline_runtime::deps::load_kek(config)?;
            catalog
                .set_webhook(
                    tenant.as_str(),
                    id.as_str(),
                    &url,
                    &kek.seal(secret.as_bytes()),
                    on_success,
                )
                .await?;
            println!(
                "webhook {id} of {tenant} posts to {parsed} on failures{}",
                if on_success { " and successes" } else { "" }
            );
        }
        WebhookCommand::List { tenant, json } => {
            let rows = catalog.webhooks(tenant.as_deref()).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                println!(
                    "{:<16} {:<12} {:<8} {:>7} {:>9} {:>6}  URL",
                    "TENANT", "WEBHOOK", "SUCCESS", "PENDING", "DELIVERED", "FAILED"
                );
                for r in rows {
                    println!(
                        "{:<16} {:<12} {:<8} {:>7} {:>9} {:>6}  {}",
                        r.tenant, r.id, r.on_success, r.pending, r.delivered, r.failed, r.url
                    );
                }
            }
        }
        WebhookCommand::Rm { tenant, id } => {
            if !catalog.remove_webhook(&tenant, &id).await? {
                anyhow::bail!("tenant {tenant} has no webhook {id}");
            }
            println!("removed webhook {id} of {tenant}");
        }
    }
    Ok(())
}

/// The URL's scheme and host, for messages; refuses what is not http(s).
fn describe_url(text: &str) -> Result<String> {
    let url = url::Url::parse(text).with_context(|| format!("{text:?} is not a URL"))?;
    if !matches!(url.scheme(), "http" | "https") {
        anyhow::bail!(
            "webhook URLs must be http:// or https://, not {}://",
            url.scheme()
        );
    }
    let host = url.host_str().context("the webhook URL has no host")?;
    Ok(format!("{}://{host}", url.scheme()))
}
