//! `vaultline webhook`: signed notifications of a tenant's failed, corrupt
//! (and optionally verified) snapshots.

use crate::context::catalog;
use crate::output::print_json;
use anyhow::{Context, Result, bail};
use clap::Subcommand;
use std::path::PathBuf;
use std::process::ExitCode;
use vaultline_runtime::Config;
use vaultline_types::Name;

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
        secret_file: PathBuf,
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

pub(crate) async fn run(config: &Config, command: WebhookCommand) -> Result<ExitCode> {
    let catalog = catalog(config).await?;
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
                bail!("the webhook secret must be at least 16 characters");
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
                print_json(&rows)?;
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
                bail!("tenant {tenant} has no webhook {id}");
            }
            println!("removed webhook {id} of {tenant}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The URL's scheme and host, for messages; refuses what is not http(s).
fn describe_url(text: &str) -> Result<String> {
    let url = url::Url::parse(text).with_context(|| format!("{text:?} is not a URL"))?;
    if !matches!(url.scheme(), "http" | "https") {
        bail!(
            "webhook URLs must be http:// or https://, not {}://",
            url.scheme()
        );
    }
    let host = url.host_str().context("the webhook URL has no host")?;
    Ok(format!("{}://{host}", url.scheme()))
}
