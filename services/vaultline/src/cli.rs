//! Command-line interface. Every command loads the same configuration as the
//! services: `--config FILE` (or `VAULTLINE_CONFIG`), then `VAULTLINE_*` variables.

use crate::operate::{AuditCommand, PolicyArgs, RetentionCommand, WebhookCommand};
use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use vaultline_catalog::{Catalog, ScheduleSpec, SnapshotRow, SnapshotStatus};
use vaultline_format::keys::{Kek, identity_file_text};
use vaultline_runtime::Config;
use vaultline_runtime::deps::load_kek;
use vaultline_scheduler::Cadence;
use vaultline_storage::ObjectKey;
use vaultline_types::{BackupRequested, Name, SnapshotId, StageName, TriggerKind, headers};

#[derive(Parser, Debug)]
#[command(
    name = "vaultline",
    version,
    about = "Deduplicated, encrypted, verified backups on NATS JetStream"
)]
pub struct Cli {
    /// Configuration file (TOML).
    #[arg(long, global = true, env = "VAULTLINE_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Apply catalog migrations.
    Migrate,
    /// Write a new key-encryption key (an age identity file) to FILE; with
    /// --staging, a staging key pair instead (the file is the packager's
    /// half; the recipient printed is the extractor's).
    KekGenerate {
        /// Where to write it (created with mode 0600, never overwritten).
        out: PathBuf,
        /// Make a staging key pair (keys.staging-key-file, keys.staging-recipient).
        #[arg(long)]
        staging: bool,
    },
    /// Manage tenants.
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Manage sources.
    #[command(subcommand)]
    Source(SourceCommand),
    /// Manage schedules (one per source: cron in a time zone, or an interval).
    #[command(subcommand)]
    Schedule(ScheduleCommand),
    /// Retention policies: set one, or preview what it keeps and forgets.
    #[command(subcommand)]
    Retention(RetentionCommand),
    /// Garbage-collect packs no snapshot references (after the grace period).
    Gc {
        /// Show what would be condemned and deleted; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Grace period (default: `retention.gc-grace` of the config, 24h).
        #[arg(long)]
        grace: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// The audit trail.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Backup runs, newest first: trigger, status, duration, bytes, error.
    History {
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
    },
    /// Success rate, last success and last verified per source; repository size and dedup.
    Stats {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Signed webhooks per tenant.
    #[command(subcommand)]
    Webhook(WebhookCommand),
    /// Trigger a backup of TENANT/SOURCE now.
    Backup {
        /// `tenant/source`
        source: String,
        /// Follow the snapshot until it is verified; exit non-zero if it fails.
        #[arg(long)]
        wait: bool,
        /// Give up waiting after this many seconds.
        #[arg(long, default_value_t = 3600)]
        timeout: u64,
    },
    /// List snapshots, newest first.
    Snapshots {
        /// Only this tenant.
        #[arg(long)]
        tenant: Option<String>,
        /// Only this source (with --tenant).
        #[arg(long)]
        source: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Restore a snapshot into a directory.
    Restore {
        /// Snapshot id.
        snapshot: String,
        /// Target directory (created if missing), or `-` for stdout.
        #[arg(long)]
        to: Option<PathBuf>,
        /// Restore only this path (and what is under it) of a file tree.
        #[arg(long)]
        path: Option<String>,
        /// A database to restore a postgres or mariadb snapshot into
        /// (`postgres://user@host/db`, `mariadb://user@host/db`; the password
        /// from PGPASSWORD or MYSQL_PWD).
        #[arg(long)]
        into: Option<String>,
        /// Pipe a command snapshot into this shell command (without a value:
        /// the source's own --restore-command).
        #[arg(long, num_args = 0..=1, default_missing_value = "")]
        into_command: Option<String>,
        /// Tenant identity file; without it the key is unwrapped from the catalog with the KEK.
        #[arg(long)]
        identity: Option<PathBuf>,
        /// Tenant of the snapshot (needed with --identity when there is no catalog).
        #[arg(long)]
        tenant: Option<String>,
        /// As root, give files their recorded user and group ids rather than
        /// the ids this host has for the recorded names.
        #[arg(long)]
        numeric_owner: bool,
        /// Read this repository (`s3://bucket/prefix`, `file:///dir`) with no
        /// catalog and no NATS; needs --identity and --tenant.
        #[arg(long)]
        repo: Option<String>,
    },
    /// Check a snapshot now: level 1 (stored objects against their recorded
    /// digests, no key), or with --full level 2 as well (read back in full and
    /// compared with the source digest). A damaged snapshot is marked corrupt
    /// and the exit code is 1.
    Verify {
        /// Snapshot id.
        snapshot: String,
        /// Level 2 as well.
        #[arg(long)]
        full: bool,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Restore the latest verified snapshot of a postgres or mariadb source
    /// into a scratch database, compare every table's row count with the
    /// counts taken at dump time, drop the scratch database, and publish the
    /// result. Exit code 1 when a count differs or the restore fails.
    Drill {
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
    },
    /// Run stages: all of them, or those named with --stage.
    Serve {
        /// A stage to run (repeatable): extractor, packager, uploader, verifier, retention, auditor.
        #[arg(long = "stage")]
        stages: Vec<StageName>,
    },
}

#[derive(Subcommand, Debug)]
pub enum TenantCommand {
    /// Create a tenant and its age identity (stored wrapped by the KEK).
    Create { name: String },
    /// Write a tenant's identity file, for restores without the catalog.
    ExportIdentity {
        name: String,
        /// Where to write it (mode 0600, never overwritten).
        #[arg(long)]
        out: PathBuf,
    },
}

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

#[derive(Subcommand, Debug)]
// Parsed once per process: the size of the variants does not matter.
#[allow(clippy::large_enum_variant)]
pub enum SourceCommand {
    /// Add a source: `vaultline source add acme/docs --type files --path /srv/docs`,
    /// `… acme/db --type postgres --url postgres://backup@db:5432/shop --password-file F`,
    /// `… acme/vault --type command --command 'vault operator raft snapshot save -'`.
    Add {
        /// `tenant/source`
        source: String,
        /// Source type: files, postgres, mariadb (or mysql), command.
        #[arg(long = "type", default_value = "files")]
        kind: String,
        /// Directory to back up (files).
        #[arg(long)]
        path: Option<PathBuf>,
        /// Database URL without a password (postgres://…, mariadb://…).
        #[arg(long)]
        url: Option<String>,
        /// File holding the database password; stored sealed with the credentials key.
        #[arg(long)]
        password_file: Option<PathBuf>,
        /// Shell command whose stdout is the backup (command).
        #[arg(long)]
        command: Option<String>,
        /// Shell command that reads a backup on stdin to restore it (command).
        #[arg(long)]
        restore_command: Option<String>,
        /// File holding a secret for the command, stored sealed (command).
        #[arg(long)]
        secret_file: Option<PathBuf>,
        /// Environment variable the command receives the secret in (command).
        #[arg(long)]
        secret_env: Option<String>,
        /// Verification after every snapshot: `digests` (level 1: stored
        /// objects re-hashed, no key) or `full` (level 2: also decrypted,
        /// reassembled and compared with the source digest).
        #[arg(long, default_value = "digests", value_parser = ["digests", "full"])]
        verify: String,
        /// Let drills restore into this database's own server when the
        /// verifier has no scratch server for its kind (drills.postgres-url,
        /// drills.mariadb-url). Off by default: a decrypted dump goes only
        /// where the verifier's own configuration says.
        #[arg(long)]
        drill_on_source_server: bool,
        /// Retention rules (none: keep everything).
        #[command(flatten)]
        policy: PolicyArgs,
    },
    /// Replace a source's stored password or secret (rotation); the next
    /// snapshot uses it. Stored sealed with the credentials key.
    SetCredential {
        /// `tenant/source`
        source: String,
        /// File holding the new password or secret.
        #[arg(long = "from-file")]
        file: PathBuf,
    },
}

pub(crate) fn parse_pair(text: &str) -> Result<(Name, Name)> {
    let (tenant, source) = text
        .split_once('/')
        .with_context(|| format!("{text:?} is not tenant/source (e.g. acme/docs)"))?;
    Ok((Name::new(tenant)?, Name::new(source)?))
}

fn write_secret_file(path: &std::path::Path, text: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {} (it must not exist yet)", path.display()))?;
    file.write_all(text.as_bytes())?;
    Ok(())
}

async fn catalog(config: &Config) -> Result<Catalog> {
    let catalog = vaultline_runtime::open_catalog(&config.catalog)?;
    catalog.check_schema().await?;
    Ok(catalog)
}

/// Runs one command.
///
/// # Errors
/// Whatever the command ran into, as one readable chain.
pub async fn run(cli: Cli) -> Result<ExitCode> {
    let config = Config::load(cli.config.as_deref())?;
    match cli.command {
        Command::Migrate => {
            let applied = vaultline_runtime::open_catalog(&config.catalog)?
                .migrate()
                .await?;
            println!(
                "catalog up to date ({} migration(s) applied now)",
                applied.len()
            );
            let nats = vaultline_runtime::setup::apply_bus(&config).await.context(
                "cannot apply the NATS stream and consumers (with the [nats.admin] login)",
            )?;
            println!("NATS set up: {}", nats.join(", "));
        }
        Command::KekGenerate {
            out,
            staging: false,
        } => {
            let (_, text) = Kek::generate();
            write_secret_file(&out, &text)?;
            println!("wrote a new key-encryption key to {}", out.display());
        }
        Command::KekGenerate { out, staging: true } => {
            let identity = vaultline_format::keys::Identity::generate();
            let text =
                vaultline_format::keys::identity_file_text(&identity, "vaultline staging key");
            write_secret_file(&out, &text)?;
            println!(
                "wrote a new staging key to {} (keys.staging-key-file of the packager)",
                out.display()
            );
            println!("staging recipient: {}", identity.to_public());
        }
        Command::Tenant(TenantCommand::Create { name }) => {
            let name = Name::new(name)?;
            let kek = load_kek(&config)?;
            let key = kek.new_tenant_key()?;
            catalog(&config)
                .await?
                .create_tenant(
                    &name,
                    &key.key_id,
                    &key.recipient,
                    &key.wrapped_identity,
                    &key.chunk_key,
                )
                .await?;
            let repo = vaultline_runtime::deps::open_repository(&config.repository, None).await?;
            let public = serde_json::json!({ "tenant": name, "key_id": key.key_id, "recipient": key.recipient });
            repo.put_bytes(
                &ObjectKey::tenant_key(&name, &key.key_id),
                public.to_string().as_bytes(),
            )
            .await?;
            println!(
                "created tenant {name} (key {}, recipient {})",
                key.key_id, key.recipient
            );
        }
        Command::Tenant(TenantCommand::ExportIdentity { name, out }) => {
            let name = Name::new(name)?;
            let kek = load_kek(&config)?;
            let key = catalog(&config).await?.active_key(&name).await?;
            let identity = kek.unwrap(&key.wrapped_identity)?;
            write_secret_file(
                &out,
                &identity_file_text(&identity, &format!("vaultline tenant {name}")),
            )?;
            println!("wrote the identity of tenant {name} to {}", out.display());
        }
        Command::Source(SourceCommand::Add {
            source,
            kind,
            path,
            url,
            password_file,
            command,
            restore_command,
            secret_file,
            secret_env,
            verify,
            drill_on_source_server,
            policy,
        }) => {
            let (tenant, source) = parse_pair(&source)?;
            let verify_level = if verify == "full" { 2 } else { 1 };
            let spec = crate::sources::SourceSpec {
                kind,
                path,
                url,
                password_file,
                command,
                restore_command,
                secret_file,
                secret_env,
            };
            let (kind, config_json, secret, shown) = spec.resolve()?;
            let sealed = match secret {
                Some(secret) => Some(
                    vaultline_runtime::deps::load_credentials_key(&config)?.seal(secret.as_bytes()),
                ),
                None => None,
            };
            let retention = serde_json::to_value(policy.policy()?)?;
            catalog(&config)
                .await?
                .add_source(&vaultline_catalog::NewSource {
                    tenant: &tenant,
                    name: &source,
                    kind: &kind,
                    config: &config_json,
                    retention: &retention,
                    sealed_credential: sealed.as_deref(),
                    verify_level,
                    drill_on_source: drill_on_source_server,
                })
                .await?;
            let sealed_note = if sealed.is_some() {
                ", credential stored sealed"
            } else {
                ""
            };
            println!("added source {tenant}/{source} ({kind}: {shown}{sealed_note})");
        }
        Command::Source(SourceCommand::SetCredential { source, file }) => {
            let (tenant, source) = parse_pair(&source)?;
            let secret = crate::sources::read_secret(&file)?;
            let sealed =
                vaultline_runtime::deps::load_credentials_key(&config)?.seal(secret.as_bytes());
            catalog(&config)
                .await?
                .set_credential(&tenant, &source, &sealed)
                .await?;
            println!("stored a new credential for {tenant}/{source} (sealed)");
        }
        Command::Schedule(command) => schedule(&config, command).await?,
        Command::Audit(command) => {
            return crate::operate::audit(&catalog(&config).await?, command).await;
        }
        Command::History {
            source,
            tenant,
            limit,
            json,
        } => crate::operate::history(&catalog(&config).await?, source, tenant, limit, json).await?,
        Command::Stats { json } => crate::operate::stats(&catalog(&config).await?, json).await?,
        Command::Webhook(command) => {
            crate::operate::webhook(&config, &catalog(&config).await?, command).await?;
        }
        Command::Retention(command) => {
            crate::operate::retention(&catalog(&config).await?, command).await?;
        }
        Command::Gc {
            dry_run,
            grace,
            json,
        } => crate::operate::gc(&config, &catalog(&config).await?, dry_run, grace, json).await?,
        Command::Backup {
            source,
            wait,
            timeout,
        } => {
            let (tenant, source) = parse_pair(&source)?;
            let catalog = catalog(&config).await?;
            catalog.source(&tenant, &source).await?;
            let request_id = new_request_id();
            publish_trigger(&config, &tenant, &source, &request_id).await?;
            println!("backup of {tenant}/{source} requested (request {request_id})");
            if wait {
                return wait_for(
                    &catalog,
                    (&tenant, &source),
                    &request_id,
                    Duration::from_secs(timeout),
                )
                .await;
            }
        }
        Command::Snapshots {
            tenant,
            source,
            json,
        } => {
            let tenant = tenant.map(Name::new).transpose()?;
            let source = source.map(Name::new).transpose()?;
            let rows = catalog(&config)
                .await?
                .snapshots(tenant.as_ref(), source.as_ref())
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                print_table(&rows);
            }
        }
        Command::Restore {
            snapshot,
            to,
            path,
            into,
            into_command,
            identity,
            tenant,
            numeric_owner,
            repo,
        } => {
            let snapshot = SnapshotId::parse(&snapshot)?;
            let target = crate::restoring::Target::from_flags(to, into, into_command)?;
            let repository =
                vaultline_runtime::deps::open_repository(&config.repository, repo.as_deref())
                    .await?;
            let (tenant, identity, restore_command) = match (identity, repo.is_some()) {
                (Some(file), offline) => {
                    let text = std::fs::read_to_string(&file)
                        .with_context(|| format!("cannot read identity file {}", file.display()))?;
                    let identity = vaultline_format::keys::parse_identity(&text)?;
                    let tenant = match (tenant, offline) {
                        (Some(t), _) => Name::new(t)?,
                        (None, true) => {
                            bail!("--repo needs --tenant (there is no catalog to look it up)")
                        }
                        (None, false) => {
                            catalog(&config)
                                .await?
                                .find_snapshot(&snapshot)
                                .await?
                                .tenant
                        }
                    };
                    (tenant, identity, None)
                }
                (None, true) => bail!("--repo needs --identity (the tenant's identity file)"),
                (None, false) => {
                    let catalog = catalog(&config).await?;
                    let row = catalog.find_snapshot(&snapshot).await?;
                    let key = catalog.key(&row.tenant, &row.key_id).await?;
                    let restore_command = catalog
                        .source(&row.tenant, &row.source)
                        .await
                        .ok()
                        .and_then(|s| {
                            s.config
                                .get("restore-command")
                                .and_then(|c| c.as_str().map(str::to_owned))
                        });
                    (
                        row.tenant,
                        load_kek(&config)?.unwrap(&key.wrapped_identity)?,
                        restore_command,
                    )
                }
            };
            let started = Instant::now();
            let done = crate::restoring::run(
                &repository,
                &tenant,
                &snapshot,
                &identity,
                path.as_deref(),
                target.clone(),
                restore_command,
                vaultline_restore::Options { numeric_owner },
            )
            .await?;
            let checked = if done.digest_checked {
                "digest verified"
            } else {
                "every chunk authenticated"
            };
            eprintln!(
                "restored {} entries ({} files, {}) of snapshot {snapshot} to {target} in {:.1}s; {checked}",
                done.entries,
                done.files,
                human_bytes(done.bytes as i64),
                started.elapsed().as_secs_f64()
            );
            for line in crate::restoring::caveats(&done) {
                eprintln!("{line}");
            }
        }
        Command::Verify {
            snapshot,
            full,
            json,
        } => {
            return crate::checks::verify(&config, &catalog(&config).await?, &snapshot, full, json)
                .await;
        }
        Command::Drill {
            source,
            every,
            timeout,
            json,
        } => {
            return crate::checks::drill(
                &config,
                &catalog(&config).await?,
                &source,
                every,
                timeout,
                json,
            )
            .await;
        }
        Command::Serve { stages } => {
            let stages = if stages.is_empty() {
                crate::SERVED.to_vec()
            } else {
                stages
            };
            let node = crate::start_node(config, &stages).await?;
            eprintln!(
                "vaultline serving {} on admin http://{} (SIGTERM to stop)",
                stages
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                node.admin
            );
            node.run_until_signal().await;
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn schedule(config: &Config, command: ScheduleCommand) -> Result<()> {
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
            let cadence = Cadence::parse(&spec).map_err(anyhow::Error::msg)?;
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
                println!("{}", serde_json::to_string_pretty(&rows)?);
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
    Ok(())
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

/// A request id nobody can guess ahead: a trigger published first with the
/// same Nats-Msg-Id would otherwise make the stream drop ours as a duplicate.
pub(crate) fn new_request_id() -> String {
    let mut nonce = [0u8; 12];
    getrandom::fill(&mut nonce).expect("OS random source");
    format!("cli-{}", hex::encode(nonce))
}

/// Publishes the trigger as JSON, as a person with the NATS CLI would.
async fn publish_trigger(
    config: &Config,
    tenant: &Name,
    source: &Name,
    request_id: &str,
) -> Result<()> {
    let body = BackupRequested {
        request_id: Some(request_id.to_owned()),
        trigger: TriggerKind::Manual,
        ..Default::default()
    };
    let ids = [
        (headers::TENANT, tenant.as_str()),
        (headers::SOURCE, source.as_str()),
    ];
    publish_request(
        config,
        BackupRequested::subject_for(tenant, source),
        serde_json::to_vec(&body)?,
        request_id,
        &ids,
    )
    .await
}

/// Publishes a request (a trigger, a drill) as JSON under its request id as
/// Nats-Msg-Id. The ids are random, so a duplicate means the id was taken:
/// an error, not a silent no-op.
pub(crate) async fn publish_request(
    config: &Config,
    subject: String,
    body: Vec<u8>,
    request_id: &str,
    extra: &[(&'static str, &str)],
) -> Result<()> {
    let bus = vaultline_bus::Bus::connect(&config.nats.url, "vaultline-cli", &config.nats.login())
        .await?;
    let mut map = async_nats::HeaderMap::new();
    map.insert(headers::CONTENT_TYPE, vaultline_types::CONTENT_TYPE_JSON);
    map.insert(headers::MSG_ID, request_id);
    for (name, value) in extra {
        map.insert(*name, *value);
    }
    let published = bus
        .publish(subject.clone(), map, body.into())
        .await
        .with_context(|| {
            format!(
                "no stream acknowledged {subject}: is NATS user {} allowed to publish it \
                 (deploy/nats/auth.conf), and has `vaultline migrate` created the stream?",
                config.nats.user.as_deref().unwrap_or("(none)")
            )
        })?;
    if published.duplicate {
        bail!(
            "the stream already held a message with id {request_id}, so it dropped this one; try again"
        );
    }
    Ok(())
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

/// Sizes for people: 1.5 GiB, 20.0 MiB, 512 B.
pub fn human_bytes(bytes: i64) -> String {
    let mut value = bytes as f64;
    for unit in ["B", "KiB", "MiB", "GiB", "TiB"] {
        if value < 1024.0 || unit == "TiB" {
            return if unit == "B" {
                format!("{bytes} B")
            } else {
                format!("{value:.1} {unit}")
            };
        }
        value /= 1024.0;
    }
    unreachable!()
}

fn print_table(rows: &[SnapshotRow]) {
    println!(
        "{:<26} {:<24} {:<10} {:<20} {:>7} {:>10} {:>10} {:>10}  ERROR",
        "SNAPSHOT", "SOURCE", "STATUS", "STARTED", "FILES", "READ", "NEW", "STORED"
    );
    for r in rows {
        let started = r
            .started_at
            .format(&time::macros::format_description!(
                "[year]-[month]-[day] [hour]:[minute]:[second]"
            ))
            .unwrap_or_default();
        println!(
            "{:<26} {:<24} {:<10} {:<20} {:>7} {:>10} {:>10} {:>10}  {}",
            r.id.as_str(),
            format!("{}/{}", r.tenant, r.source),
            r.status.as_str(),
            started,
            r.files,
            human_bytes(r.bytes_read),
            human_bytes(r.bytes_new),
            human_bytes(r.bytes_stored),
            r.error.as_deref().unwrap_or("")
        );
    }
}
