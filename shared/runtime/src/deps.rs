//! What a stage is built from: one NATS connection, one catalog pool, the
//! repository and staging, shared by every stage of a process.

use crate::Config;
use std::sync::Arc;
use vaultline_bus::Bus;
use vaultline_catalog::Catalog;
use vaultline_format::keys::Kek;
use vaultline_storage::{Repository, Staging};

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
    /// Connects to NATS and the catalog, applies migrations, opens storage.
    ///
    /// # Errors
    /// When a dependency is unreachable or a migration fails.
    pub async fn open(config: Config, client_name: &str) -> Result<Arc<Deps>, StartError> {
        let bus = Bus::connect(&config.nats.url, client_name).await?;
        bus.ensure_stream().await?;
        let catalog = Catalog::connect(&config.catalog.url)?;
        let applied = catalog.migrate().await?;
        if !applied.is_empty() {
            tracing::info!(?applied, "Applied catalog migrations.");
        }
        let repository = Repository::open_dir(&config.repository.path).await?;
        let staging = Staging::open_dir(&config.staging.path, config.staging.ttl)?;
        Ok(Arc::new(Deps {
            config,
            bus,
            catalog,
            repository,
            staging,
        }))
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
    let text = match (std::env::var("VAULTLINE_KEK"), &config.keys.kek_file) {
        (Ok(text), _) => text,
        (Err(_), Some(path)) => std::fs::read_to_string(path).map_err(|e| {
            StartError::Other(format!(
                "cannot read the key-encryption key file {}: {e}",
                path.display()
            ))
        })?,
        (Err(_), None) => {
            return Err(StartError::Other(
                "no key-encryption key: set keys.kek-file in the config or VAULTLINE_KEK".into(),
            ));
        }
    };
    Kek::parse(&text).map_err(|e| StartError::Other(format!("key-encryption key: {e}")))
}
