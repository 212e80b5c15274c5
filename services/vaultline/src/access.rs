//! How a command reaches a snapshot and its key. Through the catalog, the
//! KEK unwraps the tenant key. With `--repo` there is no catalog: an
//! identity file opens the snapshot, or the KEK opens the tenant's key
//! record in the repository; the tenant is the one whose directory holds
//! the snapshot (or, to list snapshots, whose key record the secret opens).

use crate::context::catalog;
use anyhow::{Context, Result, bail};
use std::path::PathBuf;
use vaultline_format::key_record::KeyRecord;
use vaultline_format::keys::{Kek, Keyring};
use vaultline_runtime::Config;
use vaultline_runtime::deps::load_kek;
use vaultline_storage::{ObjectKey, Repository};
use vaultline_types::{Name, SnapshotId};

/// The flags that choose where a snapshot is read from and with what key.
#[derive(clap::Args, Debug)]
pub struct KeyFlags {
    /// Tenant identity file; without it the key is unwrapped with the KEK
    /// (from the catalog, or with --repo from the repository's key records).
    #[arg(long)]
    pub identity: Option<PathBuf>,
    /// Tenant of the snapshot (with --repo, found in the repository when not given).
    #[arg(long)]
    pub tenant: Option<String>,
    /// Read this repository (`s3://bucket/prefix`, `file:///dir`) with no
    /// catalog and no NATS.
    #[arg(long)]
    pub repo: Option<String>,
}

/// A snapshot's tenant and keys, and the source's restore command when the
/// catalog still has the source.
pub(crate) struct Access {
    pub(crate) tenant: Name,
    /// Every key of the tenant the secret given opens: a snapshot taken
    /// after a rotation still references packs sealed to older keys.
    pub(crate) keyring: Keyring,
    pub(crate) restore_command: Option<String>,
    /// Bytes the snapshot read at backup, when the catalog says (a restore's total).
    pub(crate) size: Option<u64>,
}

impl KeyFlags {
    /// The repository: `--repo`, else the configured one.
    pub(crate) async fn repository(&self, config: &Config) -> Result<Repository> {
        Ok(
            vaultline_runtime::deps::open_repository(&config.repository, self.repo.as_deref())
                .await?,
        )
    }

    /// The keys in `--identity`: every identity line of the file (a
    /// tenant's exported file holds each of its keys).
    fn identity_file(&self) -> Result<Option<Keyring>> {
        let Some(file) = &self.identity else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read identity file {}", file.display()))?;
        Ok(Some(Keyring::new(
            vaultline_format::keys::parse_identities(&text)?,
        )))
    }

    fn tenant(&self) -> Result<Option<Name>> {
        Ok(self.tenant.clone().map(Name::new).transpose()?)
    }

    /// The tenant and key of `snapshot`.
    pub(crate) async fn for_snapshot(
        &self,
        config: &Config,
        repo: &Repository,
        snapshot: &SnapshotId,
    ) -> Result<Access> {
        if self.repo.is_some() {
            let tenant = match self.tenant()? {
                Some(tenant) => tenant,
                None => tenant_holding(repo, snapshot).await?,
            };
            let keyring = match self.identity_file()? {
                Some(keyring) => keyring,
                None => {
                    let kek = load_kek(config).context(
                        "--repo needs --identity (the tenant's identity file) or the KEK (keys.kek-file)",
                    )?;
                    let opened = opened_records(repo, &tenant, |r| {
                        r.open_with_kek(&kek).ok().map(|o| o.identity)
                    })
                    .await?;
                    if opened.is_empty() {
                        bail!(
                            "no key record of tenant {tenant} opens with KEK {}",
                            kek.id()
                        );
                    }
                    Keyring::new(opened)
                }
            };
            return Ok(Access {
                tenant,
                keyring,
                restore_command: None,
                size: None,
            });
        }
        let catalog = catalog(config).await?;
        let row = catalog.find_snapshot(snapshot).await?;
        let size = u64::try_from(row.bytes_read).ok();
        if let Some(keyring) = self.identity_file()? {
            return Ok(Access {
                tenant: row.tenant,
                keyring,
                restore_command: None,
                size,
            });
        }
        let keys = catalog.tenant_keys(&row.tenant).await?;
        // The snapshot may outlive its source: then there is no restore
        // command to offer, and restore says what to give.
        let restore_command = match catalog.source(&row.tenant, &row.source).await {
            Ok(source) => source.config()?.restore_command().map(str::to_owned),
            Err(vaultline_catalog::Error::NotFound(_)) => None,
            Err(other) => return Err(other.into()),
        };
        Ok(Access {
            tenant: row.tenant,
            keyring: load_kek(config)?
                .unwrap_keyring(keys.iter().map(|k| k.wrapped_identity.as_slice()))?,
            restore_command,
            size,
        })
    }

    /// With `--repo`: every tenant whose key record the secret opens (one
    /// with `--tenant`), with the keys it opens.
    pub(crate) async fn tenants_offline(
        &self,
        config: &Config,
        repo: &Repository,
    ) -> Result<Vec<(Name, Keyring)>> {
        let named = self.tenant()?;
        let identity = self.identity_file()?;
        // A tenant named with its identity needs no key record (a repository
        // written before key records existed has none).
        if let (Some(tenant), Some(keyring)) = (&named, &identity) {
            return Ok(vec![(tenant.clone(), keyring.clone())]);
        }
        let tenants = match named {
            Some(tenant) => vec![tenant],
            None => repo
                .list_dirs(ObjectKey::TENANTS)
                .await?
                .into_iter()
                .filter_map(|t| Name::new(t).ok())
                .collect(),
        };
        let kek: Option<Kek> = match &identity {
            Some(_) => None,
            None => Some(load_kek(config).context(
                "--repo needs --identity (the tenant's identity file) or the KEK (keys.kek-file)",
            )?),
        };
        let mut opened = Vec::new();
        for tenant in tenants {
            let found = opened_records(repo, &tenant, |record| match (&identity, &kek) {
                (Some(keyring), _) => keyring.identities().find(|i| record.is_for(i)).cloned(),
                (None, Some(kek)) => record.open_with_kek(kek).ok().map(|o| o.identity),
                (None, None) => None,
            })
            .await?;
            if !found.is_empty() {
                opened.push((tenant, Keyring::new(found)));
            }
        }
        if opened.is_empty() {
            bail!(
                "no tenant's key record in {} opens with the {} given",
                repo.describe(),
                if identity.is_some() {
                    "identity"
                } else {
                    "KEK"
                }
            );
        }
        Ok(opened)
    }
}

/// The tenant whose directory holds `snapshot`'s manifest. Two tenants
/// holding the same id is refused rather than guessed: one of them may
/// have planted it.
async fn tenant_holding(repo: &Repository, snapshot: &SnapshotId) -> Result<Name> {
    let mut holders = Vec::new();
    for tenant in repo.list_dirs(ObjectKey::TENANTS).await? {
        let Ok(tenant) = Name::new(tenant) else {
            continue;
        };
        if repo
            .size(&ObjectKey::manifest(&tenant, snapshot))
            .await?
            .is_some()
        {
            holders.push(tenant);
        }
    }
    match holders.len() {
        0 => bail!("{} holds no snapshot {snapshot}", repo.describe()),
        1 => Ok(holders.remove(0)),
        _ => {
            let names: Vec<String> = holders.iter().map(ToString::to_string).collect();
            bail!(
                "tenants {} all hold a snapshot {snapshot}: say which with --tenant",
                names.join(", ")
            )
        }
    }
}

/// What `open` makes of each of `tenant`'s key records it accepts, newest
/// first (one per key).
pub(crate) async fn opened_records<T>(
    repo: &Repository,
    tenant: &Name,
    open: impl Fn(&KeyRecord) -> Option<T>,
) -> Result<Vec<T>> {
    let mut found: Vec<(i64, String, T)> = Vec::new();
    for key in repo.list(&ObjectKey::key_records(tenant)).await? {
        if !key.ends_with(".json") {
            continue;
        }
        let record = match KeyRecord::parse(&repo.get(&key).await?) {
            Ok(record) if &record.tenant == tenant => record,
            // Not a record of this tenant (an old public key file, or a
            // record copied from elsewhere): not a key to use.
            _ => continue,
        };
        if found.iter().any(|(_, id, _)| *id == record.key_id) {
            continue;
        }
        if let Some(value) = open(&record) {
            found.push((record.created, record.key_id, value));
        }
    }
    found.sort_by_key(|(created, _, _)| std::cmp::Reverse(*created));
    Ok(found.into_iter().map(|(_, _, value)| value).collect())
}
