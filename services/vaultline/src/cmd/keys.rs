//! `vaultline kek rotate` and `vaultline credentials-key rotate`: every
//! secret sealed to the old key is sealed to the new one in one catalog
//! transaction, so that afterwards the old key opens nothing. For the KEK,
//! the repository's key records are rewritten under the new KEK first and
//! the old ones removed after, so that the bucket never lacks a record the
//! catalog's keys need, and ends holding none the old KEK opens.

use crate::context::catalog;
use crate::request::publish_rotation;
use anyhow::{Context, Result, bail};
use clap::Subcommand;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use vaultline_catalog::{Catalog, Sealed};
use vaultline_format::key_record::KeyRecord;
use vaultline_format::keys::Kek;
use vaultline_runtime::Config;
use vaultline_runtime::deps::{load_credentials_key, load_kek, open_repository};
use vaultline_storage::{ObjectKey, Repository};
use vaultline_types::{KeyRotated, Name};

#[derive(Subcommand, Debug)]
pub enum RotateCommand {
    /// Seal everything the current key sealed to the key in FILE instead
    /// (make one with `vaultline kek-generate FILE`), then point the
    /// configuration of every process that holds the key at FILE.
    Rotate {
        /// The new key's identity file.
        #[arg(long)]
        new: PathBuf,
    },
}

fn new_key(file: &Path, current: &Kek, what: &str) -> Result<Kek> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read the new {what} {}", file.display()))?;
    let new =
        Kek::parse(&text).with_context(|| format!("{} is not an age identity", file.display()))?;
    if new.id() == current.id() {
        bail!("{} is the {what} in use ({})", file.display(), current.id());
    }
    Ok(new)
}

/// A closure for [`Catalog::reseal_all`]: opens with `old`, seals to `new`.
fn resealer<'a>(old: &'a Kek, new: &'a Kek) -> impl Fn(&[u8]) -> Result<Vec<u8>, String> + 'a {
    move |sealed| {
        let plain = zeroize::Zeroizing::new(old.open(sealed).map_err(|e| e.to_string())?);
        Ok(new.seal(&plain))
    }
}

/// `vaultline kek rotate --new FILE`.
pub(crate) async fn rotate_kek(config: &Config, command: RotateCommand) -> Result<ExitCode> {
    let RotateCommand::Rotate { new } = command;
    let old = load_kek(config)?;
    let new = new_key(&new, &old, "key-encryption key")?;
    let catalog = catalog(config).await?;
    let repo = open_repository(&config.repository, None).await?;
    let tenants = catalog.tenants().await?;
    let mut written = 0;
    for tenant in &tenants {
        written += write_records(&catalog, &repo, tenant, &old, &new).await?;
    }
    let moved = catalog
        .reseal_all(Sealed::ByKek, resealer(&old, &new))
        .await?;
    let mut removed = 0;
    for tenant in &tenants {
        removed += remove_records(&repo, tenant, &new).await?;
    }
    for tenant in tenants {
        publish_rotation(
            config,
            &KeyRotated {
                tenant,
                key: "kek".into(),
                from: old.id(),
                to: new.id(),
                detail: format!(
                    "{moved} identities and webhook secrets re-sealed; {written} key records \
                     written, {removed} under other KEKs removed"
                ),
            },
        )
        .await?;
    }
    println!(
        "KEK {} → {}: {moved} tenant identities and webhook secrets re-sealed, {written} key \
         record(s) written, {removed} old one(s) removed",
        old.id(),
        new.id()
    );
    println!(
        "now point keys.kek-file (or VAULTLINE_KEK) of this CLI and of the verifier at the new \
         file; the old KEK opens nothing any more"
    );
    Ok(ExitCode::SUCCESS)
}

/// Writes the record of every key of `tenant` under `new`. A record already
/// there (a rotation run again after it failed half way) is kept when it
/// opens with `new`.
async fn write_records(
    catalog: &Catalog,
    repo: &Repository,
    tenant: &Name,
    old: &Kek,
    new: &Kek,
) -> Result<usize> {
    let mut written = 0;
    for key in catalog.tenant_keys(tenant).await? {
        let object = ObjectKey::key_record(tenant, &key.key_id, &new.id());
        if let Ok(bytes) = repo.get(&object).await
            && KeyRecord::parse(&bytes).is_ok_and(|r| r.open_with_kek(new).is_ok())
        {
            continue;
        }
        let identity = old.unwrap(&key.wrapped_identity)?;
        let created = key.created_at.unix_timestamp();
        let record = KeyRecord::new(new, tenant, &identity, &key.chunk_key, created);
        repo.put_new_bytes(&object, &record.to_bytes()).await?;
        written += 1;
    }
    Ok(written)
}

/// Removes `tenant`'s key records wrapped by any KEK but `new` (other
/// objects under `keys/`, such as the public keys older builds wrote, are
/// left alone).
async fn remove_records(repo: &Repository, tenant: &Name, new: &Kek) -> Result<usize> {
    let mut removed = 0;
    for object in repo.list(&ObjectKey::key_records(tenant)).await? {
        let Ok(record) = KeyRecord::parse(&repo.get(&object).await?) else {
            continue;
        };
        if record.kek_id != new.id() {
            repo.delete(&object).await?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// `vaultline credentials-key rotate --new FILE`.
pub(crate) async fn rotate_credentials_key(
    config: &Config,
    command: RotateCommand,
) -> Result<ExitCode> {
    let RotateCommand::Rotate { new } = command;
    let old = load_credentials_key(config)?;
    let new = new_key(&new, &old, "credentials key")?;
    let catalog = catalog(config).await?;
    let moved = catalog
        .reseal_all(Sealed::ByCredentialsKey, resealer(&old, &new))
        .await?;
    for tenant in catalog.tenants().await? {
        publish_rotation(
            config,
            &KeyRotated {
                tenant,
                key: "credentials-key".into(),
                from: old.id(),
                to: new.id(),
                detail: format!("{moved} source credentials re-sealed"),
            },
        )
        .await?;
    }
    println!(
        "credentials key {} → {}: {moved} source credential(s) re-sealed",
        old.id(),
        new.id()
    );
    println!(
        "now point keys.credentials-key-file (or VAULTLINE_CREDENTIALS_KEY) of this CLI and of \
         the extractor at the new file"
    );
    Ok(ExitCode::SUCCESS)
}
