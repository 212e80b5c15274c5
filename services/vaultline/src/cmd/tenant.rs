//! `vaultline tenant`: creating a tenant and its keys, and exporting its
//! identity for restores without the catalog.

use crate::context::catalog;
use crate::output::write_secret_file;
use anyhow::Result;
use clap::Subcommand;
use std::path::PathBuf;
use std::process::ExitCode;
use vaultline_format::keys::identity_file_text;
use vaultline_runtime::Config;
use vaultline_runtime::deps::load_kek;
use vaultline_storage::ObjectKey;
use vaultline_types::Name;

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

pub(crate) async fn run(config: &Config, command: TenantCommand) -> Result<ExitCode> {
    match command {
        TenantCommand::Create { name } => create(config, Name::new(name)?).await?,
        TenantCommand::ExportIdentity { name, out } => {
            let name = Name::new(name)?;
            let kek = load_kek(config)?;
            let key = catalog(config).await?.active_key(&name).await?;
            let identity = kek.unwrap(&key.wrapped_identity)?;
            write_secret_file(
                &out,
                &identity_file_text(&identity, &format!("vaultline tenant {name}")),
            )?;
            println!("wrote the identity of tenant {name} to {}", out.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The catalog keeps the wrapped keys; the repository gets the public half,
/// so that whoever reads the bucket can tell which key a tenant writes with.
async fn create(config: &Config, name: Name) -> Result<()> {
    let key = load_kek(config)?.new_tenant_key()?;
    catalog(config)
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
    let public =
        serde_json::json!({ "tenant": name, "key_id": key.key_id, "recipient": key.recipient });
    repo.put_bytes(
        &ObjectKey::tenant_key(&name, &key.key_id),
        public.to_string().as_bytes(),
    )
    .await?;
    println!(
        "created tenant {name} (key {}, recipient {})",
        key.key_id, key.recipient
    );
    Ok(())
}
