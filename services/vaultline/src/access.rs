//! How a command reaches a snapshot and its key. Through the catalog, the
//! KEK unwraps the tenant key. With `--repo` there is no catalog: an
//! identity file opens the snapshot, or the KEK opens the tenant's key
//! record in the repository; the tenant is the one whose directory holds
//! the snapshot (or, to list snapshots, whose key record the secret opens).

use crate::context::catalog;
use anyhow::{Context, Result, bail};
use std::path::PathBuf;
use vaultline_format::key_record::KeyRecord;
use vaultline_format::keys::{Identity, Kek};
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

/// A snapshot's tenant and key, and the source's restore command when the
/// catalog still has the source.
pub(crate) struct Access {
    pub(crate) tenant: Name,
    pub(crate) identity: Identity,
    pub(crate) restore_command: Option<String>,
}

impl KeyFlags {
    /// The repository: `--repo`, else the configured one.
    pub(crate) async fn repository(&self, config: &Config) -> Result<Repository> {
        Ok(
            vaultline_runtime::deps::open_repository(&config.repository, self.repo.as_deref())
                .await?,
        )
    }

    fn identity_file(&self) -> Result<Option<Identity>> {
        let Some(file) = &self.identity else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read identity file {}", file.display()))?;
        Ok(Some(vaultline_format::keys::parse_identity(&text)?))
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
            let identity = match self.identity_file()? {
                Some(identity) => identity,
                None => {
                    let kek = load_kek(config).context(
                        "--repo needs --identity (the tenant's identity file) or the KEK (keys.kek-file)",
                    )?;
                    newest_record(repo, &tenant, |r| {
                        r.open_with_kek(&kek).ok().map(|o| o.identity)
                    })
                    .await?
                    .with_context(|| {
                        format!(
                            "no key record of tenant {tenant} opens with KEK {}",
                            kek.id()
                        )
                    })?
                }
            };
            return Ok(Access {
                tenant,
                identity,
                restore_command: None,
            });
        }
        let catalog = catalog(config).await?;
        let row = catalog.find_snapshot(snapshot).await?;
        if let Some(identity) = self.identity_file()? {
            return Ok(Access {
                tenant: row.tenant,
                identity,
                restore_command: None,
            });
        }
        let key = catalog.key(&row.tenant, &row.key_id).await?;
        // The snapshot may outlive its source: then there is no restore
        // command to offer, and restore says what to give.
        let restore_command = match catalog.source(&row.tenant, &row.source).await {
            Ok(source) => source.config()?.restore_command().map(str::to_owned),
            Err(vaultline_catalog::Error::NotFound(_)) => None,
            Err(other) => return Err(other.into()),
        };
        Ok(Access {
            tenant: row.tenant,
            identity: load_kek(config)?.unwrap(&key.wrapped_identity)?,
            restore_command,
        })
    }

    /// With `--repo`: every tenant whose key record the secret opens (one
    /// with `--tenant`), with its identity.
    pub(crate) async fn tenants_offline(
        &self,
        config: &Config,
        repo: &Repository,
    ) -> Result<Vec<(Name, Identity)>> {
        let named = self.tenant()?;
        let identity = self.identity_file()?;
        // A tenant named with its identity needs no key record (a repository
        // written before key records existed has none).
        if let (Some(tenant), Some(identity)) = (&named, &identity) {
            return Ok(vec![(tenant.clone(), identity.clone())]);
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
            let found = newest_record(repo, &tenant, |record| match (&identity, &kek) {
                (Some(identity), _) => record.is_for(identity).then(|| identity.clone()),
                (None, Some(kek)) => record.open_with_kek(kek).ok().map(|o| o.identity),
                (None, None) => None,
            })
            .await?;
            if let Some(identity) = found {
                opened.push((tenant, identity));
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

/// What `open` makes of the newest of `tenant`'s key records it accepts.
async fn newest_record<T>(
    repo: &Repository,
    tenant: &Name,
    open: impl Fn(&KeyRecord) -> Option<T>,
) -> Result<Option<T>> {
    let mut best: Option<(i64, T)> = None;
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
        if let Some(value) = open(&record)
            && best
                .as_ref()
                .is_none_or(|(created, _)| record.created > *created)
        {
            best = Some((record.created, value));
        }
    }
    Ok(best.map(|(_, value)| value))
}
