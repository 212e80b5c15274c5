//! What a stage is built from: one NATS connection, one catalog pool, the
//! repository and staging, shared by every stage of a process.

use crate::Config;
use crate::config::RepositoryConfig;
use std::sync::Arc;
use vaultline_bus::Bus;
use vaultline_catalog::Catalog;
use vaultline_format::keys::{Identity, Kek, Recipient, parse_identity, parse_recipient};
use vaultline_storage::{Repository, S3Options, Staging};
use vaultline_types::StageName;
use zeroize::Zeroizing;

/// A dependency could not be opened at start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Bus(#[from] vaultline_bus::Error),
    #[error(transparent)]
    Catalog(#[from] vaultline_catalog::Error),
    #[error(transparent)]
    Storage(#[from] vaultline_storage::Error),
    #[error("{0}")]
    Other(String),
}

impl StartError {
    /// Whether waiting cannot help: the configuration asks for what the
    /// dependency cannot do (object lock on a server without it).
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            StartError::Storage(vaultline_storage::Error::Config(_))
        )
    }
}

/// Shared handles of a vaultline process.
#[derive(Debug)]
pub struct Deps {
    pub config: Config,
    pub bus: Bus,
    pub catalog: Catalog,
    pub repository: Repository,
    pub staging: Staging,
}

impl Deps {
    /// Connects to NATS and the catalog as the process's own identity,
    /// checks that the stream and the catalog schema are in place (stages
    /// never create them: `vaultline migrate` does), opens storage.
    ///
    /// # Errors
    /// When a dependency is unreachable, refuses the login, or is not set up.
    pub async fn open(config: Config, client_name: &str) -> Result<Arc<Deps>, StartError> {
        let bus = Bus::connect(&config.nats.url, client_name, &config.nats.login()).await?;
        bus.check_stream().await?;
        let catalog = open_catalog(&config.catalog)?;
        catalog.check_schema().await?;
        let repository = open_repository(&config.repository, None).await?;
        repository.check_lock().await?;
        // With stage logins of their own, the stages open the shared staging
        // store; this process's own user (the operator's, say) may not reach it.
        let shared = config.nats.stages.is_empty().then_some(&bus);
        let staging = open_staging(&config, shared).await?;
        Ok(Arc::new(Deps {
            config,
            bus,
            catalog,
            repository,
            staging,
        }))
    }

    /// What `stage` runs with in this process: its own NATS user, catalog
    /// role and S3 key where `[nats.stages.<stage>]`, `[catalog.stages.<stage>]`
    /// or `[repository.s3.stages.<stage>]` name them, the process's otherwise.
    ///
    /// # Errors
    /// As [`Deps::open`].
    pub async fn for_stage(self: &Arc<Self>, stage: StageName) -> Result<Arc<Deps>, StartError> {
        let nats = self.config.nats.stage_login(stage);
        let role = self.config.catalog.stages.get(stage.as_str());
        let s3 = self.config.repository.for_stage(stage);
        if nats.is_none() && role.is_none() && s3.is_none() {
            return Ok(self.clone());
        }
        let bus = match &nats {
            Some(login) => {
                let bus = Bus::connect(&self.config.nats.url, &format!("vaultline-{stage}"), login)
                    .await?;
                bus.check_stream().await?;
                bus
            }
            None => self.bus.clone(),
        };
        let catalog = match role {
            Some(role) => {
                let catalog = open_catalog_as(&self.config.catalog, Some(role))?;
                catalog.check_schema().await?;
                catalog
            }
            None => self.catalog.clone(),
        };
        let staging = if crate::config::hands_over_data(stage) {
            open_staging(&self.config, Some(&bus)).await?
        } else {
            self.staging.clone()
        };
        Ok(Arc::new(Deps {
            config: self.config.clone(),
            staging,
            bus,
            catalog,
            repository: match s3 {
                Some(own) => open_repository(&own, None).await?,
                None => self.repository.clone(),
            },
        }))
    }
}

/// The catalog as configured (`catalog.url`, `catalog.user`,
/// `catalog.password-file`): what the CLI connects with.
///
/// # Errors
/// When the URL does not parse or the password file cannot be read.
pub fn open_catalog(config: &crate::config::CatalogConfig) -> Result<Catalog, StartError> {
    open_catalog_as(config, None)
}

/// The catalog as `[catalog.stages.<name>]`'s role when configured (a
/// stage, or `api`), else as the configured user.
///
/// # Errors
/// An unreadable password file, or a URL that does not parse.
pub fn open_catalog_named(
    config: &crate::config::CatalogConfig,
    name: &str,
) -> Result<Catalog, StartError> {
    open_catalog_as(config, config.stages.get(name))
}

/// The catalog as the configured user, or as `role`; passwords from files.
fn open_catalog_as(
    config: &crate::config::CatalogConfig,
    role: Option<&crate::config::CatalogLogin>,
) -> Result<Catalog, StartError> {
    let password_file = match role {
        Some(role) => role.password_file.as_deref(),
        None => config.password_file.as_deref(),
    };
    let password = password_file
        .map(|file| secret_line("catalog password", file))
        .transpose()?;
    Ok(Catalog::connect_as(
        &config.url,
        role.map(|r| r.user.as_str()).or(config.user.as_deref()),
        password.as_deref().map(|p| p.as_str()),
    )?)
}

/// The local staging directory, plus the shared JetStream store when that
/// backend is configured and `bus` may reach it.
async fn open_staging(config: &Config, bus: Option<&Bus>) -> Result<Staging, StartError> {
    let staging = Staging::open_dir(&config.staging.path, config.staging.ttl)?;
    match bus {
        Some(bus) if config.staging.backend == crate::config::StagingBackend::Jetstream => {
            let store = vaultline_bus::StagingStore::open(&bus.js).await?;
            Ok(staging.with_shared(store))
        }
        _ => Ok(staging),
    }
}

/// Loads the key-encryption key from `VAULTLINE_KEK` (the key itself) or the
/// configured file. Only restore, the verifier's deep checks and tenant
/// creation call this; backup workers never do.
///
/// # Errors
/// When neither is set, the file is unreadable, or it holds no age identity.
/// The message never contains key material.
pub fn load_kek(config: &Config) -> Result<Kek, StartError> {
    load_age_key(
        "key-encryption key",
        "VAULTLINE_KEK",
        "keys.kek-file",
        config.keys.kek_file.as_deref(),
    )
}

/// Loads the credentials key from `VAULTLINE_CREDENTIALS_KEY` or
/// `keys.credentials-key-file`: the extractor (to open source credentials
/// just in time) and `vaultline source add` (to seal them) call this.
///
/// # Errors
/// As [`load_kek`].
pub fn load_credentials_key(config: &Config) -> Result<Kek, StartError> {
    load_age_key(
        "credentials key",
        "VAULTLINE_CREDENTIALS_KEY",
        "keys.credentials-key-file",
        config.keys.credentials_key_file.as_deref(),
    )
}

/// Loads the staging identity from `VAULTLINE_STAGING_KEY` or
/// `keys.staging-key-file`: only the packager, which opens staged batches.
///
/// # Errors
/// As [`load_kek`].
pub fn load_staging_identity(config: &Config) -> Result<Identity, StartError> {
    let text = read_age_key(
        "staging key",
        "VAULTLINE_STAGING_KEY",
        "keys.staging-key-file",
        config.keys.staging_key_file.as_deref(),
    )?;
    parse_identity(&text).map_err(|e| StartError::Other(format!("staging key: {e}")))
}

/// The staging recipient the extractor seals batches to: `keys.staging-recipient`,
/// else the public half of the staging identity.
///
/// # Errors
/// When neither is configured, or the recipient does not parse.
pub fn load_staging_recipient(config: &Config) -> Result<Recipient, StartError> {
    match &config.keys.staging_recipient {
        Some(text) => parse_recipient(text)
            .map_err(|e| StartError::Other(format!("keys.staging-recipient: {e}"))),
        None => load_staging_identity(config)
            .map(|identity| identity.to_public())
            .map_err(|_| {
                StartError::Other(
                    "no staging key: staged batches are sealed to a staging key pair; set \
                     keys.staging-recipient (the extractor) or keys.staging-key-file (the packager, \
                     and serve), or VAULTLINE_STAGING_KEY; vaultline kek-generate makes one"
                        .into(),
                )
            }),
    }
}

fn load_age_key(
    what: &str,
    var: &str,
    setting: &str,
    file: Option<&std::path::Path>,
) -> Result<Kek, StartError> {
    let text = read_age_key(what, var, setting, file)?;
    Kek::parse(&text).map_err(|e| StartError::Other(format!("{what}: {e}")))
}

fn read_age_key(
    what: &str,
    var: &str,
    setting: &str,
    file: Option<&std::path::Path>,
) -> Result<Zeroizing<String>, StartError> {
    read_secret(what, var, file)?.ok_or_else(|| {
        StartError::Other(format!("no {what}: set {setting} in the config or {var}"))
    })
}

/// A secret from the variable `var` (the secret itself) or `file`, or
/// `None` when neither is set. Wiped from memory when dropped.
///
/// # Errors
/// When the file cannot be read; the message names the file, never its text.
pub(crate) fn read_secret(
    what: &str,
    var: &str,
    file: Option<&std::path::Path>,
) -> Result<Option<Zeroizing<String>>, StartError> {
    match (std::env::var(var), file) {
        (Ok(text), _) => Ok(Some(Zeroizing::new(text))),
        (Err(_), Some(path)) => std::fs::read_to_string(path)
            .map(|text| Some(Zeroizing::new(text)))
            .map_err(|e| {
                StartError::Other(format!(
                    "cannot read the {what} file {}: {e}",
                    path.display()
                ))
            }),
        (Err(_), None) => Ok(None),
    }
}

/// The first line of a secret file, trimmed; wiped from memory when dropped.
///
/// # Errors
/// When the file cannot be read; the message names the file, never its text.
fn secret_line(what: &str, file: &std::path::Path) -> Result<Zeroizing<String>, StartError> {
    let text = Zeroizing::new(std::fs::read_to_string(file).map_err(|e| {
        StartError::Other(format!(
            "cannot read the {what} file {}: {e}",
            file.display()
        ))
    })?);
    Ok(Zeroizing::new(
        text.lines().next().unwrap_or("").trim().to_owned(),
    ))
}

/// Opens the configured repository, or the one at `url` when given (restore
/// with `--repo`). `s3://bucket[/prefix]` takes its endpoint, region and
/// credentials from `[repository.s3]` or the standard AWS variables.
///
/// # Errors
/// On an unknown scheme, a missing S3 setting or an unreadable secret file.
/// Messages name the missing setting, never a secret.
pub async fn open_repository(
    config: &RepositoryConfig,
    url: Option<&str>,
) -> Result<Repository, StartError> {
    let lock = config.object_lock.map(|l| l.lock());
    let dir_with_lock = |path: &str| {
        StartError::Other(format!(
            "object-lock is configured for the directory repository {path}: only an S3 bucket with object lock can lock objects"
        ))
    };
    let Some(url) = url.or(config.url.as_deref()) else {
        if lock.is_some() {
            return Err(dir_with_lock(&config.path.display().to_string()));
        }
        return Ok(Repository::open_dir(&config.path).await?);
    };
    if let Some(path) = url.strip_prefix("file://") {
        if lock.is_some() {
            return Err(dir_with_lock(path));
        }
        return Ok(Repository::open_dir(path).await?);
    }
    let Some(rest) = url.strip_prefix("s3://") else {
        if url.contains("://") {
            return Err(StartError::Other(format!(
                "repository url {url:?}: the scheme must be s3:// or file://"
            )));
        }
        if lock.is_some() {
            return Err(dir_with_lock(url));
        }
        return Ok(Repository::open_dir(url).await?);
    };
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(StartError::Other(format!(
            "repository url {url:?} names no bucket"
        )));
    }
    let s3 = &config.s3;
    let setting = |value: &Option<String>, vars: &[&str], name: &str| {
        value
            .clone()
            .or_else(|| vars.iter().find_map(|v| std::env::var(v).ok()))
            .filter(|v| !v.is_empty())
            .ok_or_else(|| {
                StartError::Other(format!(
                    "S3 repository: set repository.s3.{name} or {}",
                    vars.join(" or ")
                ))
            })
    };
    let secret_access_key = match &s3.secret_access_key_file {
        Some(path) => secret_line("S3 secret key", path)?.to_string(),
        None => setting(&None, &["AWS_SECRET_ACCESS_KEY"], "secret-access-key-file")?,
    };
    let options = S3Options {
        endpoint: setting(
            &s3.endpoint,
            &["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"],
            "endpoint",
        )?,
        region: setting(&s3.region, &["AWS_REGION", "AWS_DEFAULT_REGION"], "region")?,
        bucket: bucket.to_owned(),
        prefix: prefix.to_owned(),
        access_key_id: setting(&s3.access_key_id, &["AWS_ACCESS_KEY_ID"], "access-key-id")?,
        secret_access_key,
        multipart_threshold: s3
            .multipart_threshold
            .unwrap_or(S3Options::DEFAULT_MULTIPART_THRESHOLD),
        part_size: s3.part_size.unwrap_or(S3Options::DEFAULT_PART_SIZE),
        max_attempts: s3.max_attempts.unwrap_or(S3Options::DEFAULT_MAX_ATTEMPTS),
        object_lock: lock,
    };
    Ok(Repository::S3(vaultline_storage::S3Repository::new(
        options,
    )))
}
