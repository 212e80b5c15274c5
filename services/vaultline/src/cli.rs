//! Command-line interface. Every command loads the same configuration as the
//! services: `--config FILE` (or `VAULTLINE_CONFIG`), then `VAULTLINE_*` variables.

use anyhow::{Context, Result, bail};
use std::process::ExitCode;
use std::time::{Duration, Instant};
use vaultline_catalog::{Catalog, SnapshotRow};
use vaultline_format::keys::{Kek, identity_file_text};
use vaultline_runtime::Config;
use vaultline_runtime::deps::load_kek;
use vaultline_storage::ObjectKey;
use vaultline_types::{Name, SnapshotId};

mod args;
mod schedule;
mod trigger;

pub use args::{Cli, Command, ScheduleCommand, SourceCommand, TenantCommand};
pub(crate) use trigger::{new_request_id, publish_request};

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
            let (source_config, secret, shown) = spec.resolve()?;
            let kind = source_config.kind();
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
                    config: &source_config,
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
        Command::Schedule(command) => schedule::schedule(&config, command).await?,
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
            trigger::publish_trigger(&config, &tenant, &source, &request_id).await?;
            println!("backup of {tenant}/{source} requested (request {request_id})");
            if wait {
                return trigger::wait_for(
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
                    // The snapshot may outlive its source: then there is no
                    // restore command to offer, and restore says what to give.
                    let restore_command = match catalog.source(&row.tenant, &row.source).await {
                        Ok(source) => source.config()?.restore_command().map(str::to_owned),
                        Err(vaultline_catalog::Error::NotFound(_)) => None,
                        Err(other) => return Err(other.into()),
                    };
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
