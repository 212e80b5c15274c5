//! `vaultline audit`: recompute the audit trail's hash chains.

use crate::context::catalog;
use crate::output::print_json;
use anyhow::{Result, bail};
use clap::Subcommand;
use std::process::ExitCode;
use vaultline_runtime::Config;

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

pub(crate) async fn run(config: &Config, command: AuditCommand) -> Result<ExitCode> {
    let AuditCommand::Verify { tenant, json } = command;
    let check = catalog(config)
        .await?
        .verify_audit(tenant.as_deref())
        .await?;
    if json {
        print_json(&check)?;
    }
    match &check.broken {
        None => {
            if !json {
                println!(
                    "audit trail intact: {} row(s) in {} chain(s)",
                    check.rows, check.tenants
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(row) => bail!(
            "audit trail broken at row {} (tenant {}, sequence {}): {}",
            row.id,
            row.tenant,
            row.seq,
            row.reason
        ),
    }
}
