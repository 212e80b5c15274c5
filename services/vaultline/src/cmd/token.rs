//! `vaultline token create|list|revoke`: bearer tokens of the HTTP API, one
//! tenant and one scope each.

use crate::context::catalog;
use crate::output::{print_json, short_time};
use anyhow::Result;
use std::process::ExitCode;
use vaultline_catalog::Scope;
use vaultline_runtime::Config;
use vaultline_types::Name;

#[derive(clap::Subcommand, Debug)]
pub enum TokenCommand {
    /// Create a token and print it (once: only its hash is kept).
    Create {
        #[arg(long)]
        tenant: String,
        /// read (look), trigger (also start backups and drills) or admin
        /// (also protect and unprotect snapshots).
        #[arg(long)]
        scope: String,
        /// What it is for, for `token list`.
        #[arg(long, default_value = "")]
        name: String,
    },
    /// Tokens, newest first (never their secrets).
    List {
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by id: from now on it gets 401.
    Revoke { id: String },
}

pub(crate) async fn run(config: &Config, command: TokenCommand) -> Result<ExitCode> {
    let catalog = catalog(config).await?;
    match command {
        TokenCommand::Create {
            tenant,
            scope,
            name,
        } => {
            let scope: Scope = scope.parse()?;
            let (id, token) = catalog
                .create_token(&Name::new(tenant)?, scope, &name)
                .await?;
            eprintln!(
                "token {id} ({}); it is shown once, keep it now:",
                scope.as_str()
            );
            println!("{token}");
        }
        TokenCommand::List { tenant, json } => {
            let tenant = tenant.map(Name::new).transpose()?;
            let rows = catalog.tokens(tenant.as_ref()).await?;
            if json {
                print_json(&rows)?;
                return Ok(ExitCode::SUCCESS);
            }
            println!(
                "{:<16} {:<16} {:<8} {:<20} {:<20} {:<20} NAME",
                "ID", "TENANT", "SCOPE", "CREATED", "LAST USED", "REVOKED"
            );
            for r in rows {
                println!(
                    "{:<16} {:<16} {:<8} {:<20} {:<20} {:<20} {}",
                    r.id,
                    r.tenant,
                    r.scope,
                    short_time(r.created_at),
                    r.last_used_at.map(short_time).unwrap_or_default(),
                    r.revoked_at.map(short_time).unwrap_or_default(),
                    r.name
                );
            }
        }
        TokenCommand::Revoke { id } => {
            if catalog.revoke_token(&id).await? {
                eprintln!("token {id} revoked");
            } else {
                eprintln!("token {id} was revoked already");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
