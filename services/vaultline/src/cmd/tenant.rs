//! `vaultline tenant`: creating a tenant and its keys, and exporting its
//! identity for restores without the catalog.

use crate::context::catalog;
use crate::output::write_secret_file;
use anyhow::Result;
use clap::Subcommand;
use std::path::PathBuf;
use std::process::ExitCode;
use vaultline_format::key_record::KeyRecord;
use vaultline_format::keys::identity_file_text;
use vaultline_runtime::Config;
use vaultline_runtime::deps::load_kek;
use vaultline_storage::ObjectKey;
use vaultline_types::Name;

#[derive(Subcommand, Debug)]
pub enum TenantCommand {
    /// Create a tenant and its age identity (stored wrapped by the KEK).
    Create { name: String },
    /// Write the key record of every tenant (or of NAME) that the
    /// repository lacks for the current KEK: for tenants created before
    /// key records existed, and after a KEK is replaced.
    PublishKeys { name: Option<String> },
    /// Give a tenant a new key: new snapshots are sealed to it, older ones
    /// keep theirs (marked rotated, never deleted), and the chunk-id key is
    /// carried over so that dedup goes on. Writes the new key's record and
    /// publishes `key.rotated` for the audit trail.
    RotateKey { name: String },
    /// Write a tenant's identity file (every key of it, the active one
    /// first), for restores without the catalog.
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
        TenantCommand::PublishKeys { name } => {
            publish(config, name.map(Name::new).transpose()?).await?
        }
        TenantCommand::RotateKey { name } => rotate(config, Name::new(name)?).await?,
        TenantCommand::ExportIdentity { name, out } => {
            let name = Name::new(name)?;
            let kek = load_kek(config)?;
            // Every key, the active one first: snapshots taken before a
            // rotation are sealed to the older ones.
            let mut text = String::new();
            for key in catalog(config).await?.tenant_keys(&name).await? {
                let identity = kek.unwrap(&key.wrapped_identity)?;
                let state = if key.active { "active" } else { "rotated" };
                text += &identity_file_text(
                    &identity,
                    &format!("vaultline tenant {name}, key {} ({state})", key.key_id),
                );
            }
            write_secret_file(&out, &text)?;
            println!("wrote the identity of tenant {name} to {}", out.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The catalog keeps the wrapped keys, and the repository a key record of
/// the same (`schemas/repository-format.md`): with the bucket and the KEK,
/// or the bucket and the tenant's identity file, nothing else is needed.
async fn create(config: &Config, name: Name) -> Result<()> {
    let kek = load_kek(config)?;
    let key = kek.new_tenant_key()?;
    // Whole seconds, the same in the catalog and the key record.
    let created = now();
    catalog(config)
        .await?
        .create_tenant(
            &name,
            &key.key_id,
            &key.recipient,
            &key.wrapped_identity,
            &key.chunk_key,
            time::OffsetDateTime::from_unix_timestamp(created)?,
        )
        .await?;
    let repo = vaultline_runtime::deps::open_repository(&config.repository, None).await?;
    let identity = kek.unwrap(&key.wrapped_identity)?;
    let record = KeyRecord::new(&kek, &name, &identity, &key.chunk_key, created);
    repo.put_new_bytes(
        &ObjectKey::key_record(&name, &key.key_id, &record.kek_id),
        &record.to_bytes(),
    )
    .await?;
    println!(
        "created tenant {name} (key {}, recipient {})",
        key.key_id, key.recipient
    );
    Ok(())
}

/// The new key's record is written before the catalog switches to it: the
/// repository never lacks the record of a key new snapshots are sealed to.
async fn rotate(config: &Config, name: Name) -> Result<()> {
    let kek = load_kek(config)?;
    let catalog = catalog(config).await?;
    let old = catalog.active_key(&name).await?;
    let fresh = kek.new_tenant_key()?;
    let identity = kek.unwrap(&fresh.wrapped_identity)?;
    // The chunk-id key is the old one: chunk ids stay what they were, so
    // the next backup stores only what changed.
    // A later second than the old key's, whatever the clock says: records
    // carry seconds, and a rebuild takes the newest as the active key.
    let created = now().max(old.created_at.unix_timestamp() + 1);
    let record = KeyRecord::new(&kek, &name, &identity, &old.chunk_key, created);
    let repo = vaultline_runtime::deps::open_repository(&config.repository, None).await?;
    repo.put_new_bytes(
        &ObjectKey::key_record(&name, &fresh.key_id, &record.kek_id),
        &record.to_bytes(),
    )
    .await?;
    let from = catalog
        .rotate_tenant_key(
            &name,
            &vaultline_catalog::NewKey {
                key_id: &fresh.key_id,
                recipient: &fresh.recipient,
                wrapped_identity: &fresh.wrapped_identity,
                created: time::OffsetDateTime::from_unix_timestamp(created)?,
            },
        )
        .await?;
    crate::request::publish_rotation(
        config,
        &vaultline_types::KeyRotated {
            tenant: name.clone(),
            key: "tenant-key".into(),
            from: from.clone(),
            to: fresh.key_id.clone(),
            detail: "chunk-id key carried over; the old key stays for the snapshots sealed to it"
                .into(),
        },
    )
    .await?;
    println!(
        "tenant {name}: new snapshots use key {} (recipient {}); key {from} is rotated and kept",
        fresh.key_id, fresh.recipient
    );
    Ok(())
}

/// Writes the key records the repository lacks under the current KEK;
/// records already there are kept as they are (never replaced).
async fn publish(config: &Config, only: Option<Name>) -> Result<()> {
    let kek = load_kek(config)?;
    let catalog = catalog(config).await?;
    let repo = vaultline_runtime::deps::open_repository(&config.repository, None).await?;
    let tenants = match only {
        Some(name) => vec![name],
        None => catalog.tenants().await?,
    };
    for tenant in tenants {
        let key = catalog.active_key(&tenant).await?;
        let object = ObjectKey::key_record(&tenant, &key.key_id, &kek.id());
        if repo.size(&object).await?.is_some() {
            println!("{tenant}: key record {} is there", key.key_id);
            continue;
        }
        let identity = kek.unwrap(&key.wrapped_identity)?;
        let created = key.created_at.unix_timestamp();
        let record = KeyRecord::new(&kek, &tenant, &identity, &key.chunk_key, created);
        repo.put_new_bytes(&object, &record.to_bytes()).await?;
        println!(
            "{tenant}: wrote key record {} (KEK {})",
            key.key_id, record.kek_id
        );
    }
    Ok(())
}

pub(crate) fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}
