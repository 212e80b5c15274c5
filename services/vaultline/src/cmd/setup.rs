//! `vaultline migrate` and `vaultline kek-generate`: what an operator runs
//! once, before the first tenant.

use crate::output::write_secret_file;
use anyhow::{Context, Result};
use std::path::PathBuf;
use std::process::ExitCode;
use vaultline_format::keys::{Identity, Kek, identity_file_text};
use vaultline_runtime::Config;

/// Flags of `kek-generate`.
#[derive(clap::Args, Debug)]
pub struct KekArgs {
    /// Where to write it (created with mode 0600, never overwritten).
    out: PathBuf,
    /// Make a staging key pair (keys.staging-key-file, keys.staging-recipient).
    #[arg(long)]
    staging: bool,
}

/// Applies catalog migrations, then the NATS stream and consumers.
pub(crate) async fn migrate(config: &Config) -> Result<ExitCode> {
    let applied = vaultline_runtime::open_catalog(&config.catalog)?
        .migrate()
        .await?;
    println!(
        "catalog up to date ({} migration(s) applied now)",
        applied.len()
    );
    let nats = vaultline_runtime::setup::apply_bus(config)
        .await
        .context("cannot apply the NATS stream and consumers (with the [nats.admin] login)")?;
    println!("NATS set up: {}", nats.join(", "));
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn kek_generate(KekArgs { out, staging }: KekArgs) -> Result<ExitCode> {
    if staging {
        let identity = Identity::generate();
        write_secret_file(
            &out,
            &identity_file_text(&identity, "vaultline staging key"),
        )?;
        println!(
            "wrote a new staging key to {} (keys.staging-key-file of the packager)",
            out.display()
        );
        println!("staging recipient: {}", identity.to_public());
    } else {
        let (_, text) = Kek::generate();
        write_secret_file(&out, &text)?;
        println!("wrote a new key-encryption key to {}", out.display());
    }
    Ok(ExitCode::SUCCESS)
}
