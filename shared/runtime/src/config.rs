//! Configuration: `vaultline.toml` < `VAULTLINE_*` environment < command-line
//! flags. Secrets are given by reference (a file path), never inline.

use serde::Deserialize;
use std::collections::BTreeMap;

mod copies;
mod sections;
pub use copies::*;
pub use sections::*;

/// The whole configuration of a vaultline process.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct Config {
    pub nats: NatsConfig,
    pub catalog: CatalogConfig,
    pub repository: RepositoryConfig,
    pub staging: StagingConfig,
    pub keys: KeysConfig,
    pub admin: AdminConfig,
    pub retention: RetentionConfig,
    pub webhooks: WebhooksConfig,
    pub drills: DrillsConfig,
    pub integrity: IntegrityConfig,
    pub observer: ObserverConfig,
    pub copier: CopierConfig,
    pub telemetry: TelemetryConfig,
    pub api: ApiConfig,
    /// Per-stage knobs, keyed by stage name.
    pub stages: BTreeMap<String, StageSettings>,
}

/// Stages that hand bulk data to each other through staging: only they may
/// reach the shared staging store (`deploy/nats/auth.conf`); the others
/// never open it.
pub fn hands_over_data(stage: vaultline_types::StageName) -> bool {
    use vaultline_types::StageName;
    matches!(
        stage,
        StageName::Extractor | StageName::Packager | StageName::Uploader
    )
}

/// A configuration that could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(String);

impl Config {
    /// Loads `file` (when given and present), then `VAULTLINE_*` variables with
    /// `__` between levels, e.g. `VAULTLINE_NATS__URL`.
    ///
    /// # Errors
    /// On unknown keys, bad values, or a named file that does not exist.
    pub fn load(file: Option<&std::path::Path>) -> Result<Config, ConfigError> {
        use figment::providers::{Env, Format, Toml};
        let mut figment = figment::Figment::new();
        if let Some(file) = file {
            if !file.exists() {
                return Err(ConfigError(format!(
                    "config file {} does not exist",
                    file.display()
                )));
            }
            figment = figment.merge(Toml::file(file));
        }
        // Only nested keys (`A__B`) are configuration: VAULTLINE_KEK and friends are not.
        figment = figment.merge(Env::prefixed("VAULTLINE_").filter_map(|key| {
            key.as_str()
                .contains("__")
                .then(|| key.as_str().replace("__", ".").replace('_', "-").into())
        }));
        let config: Config = figment.extract().map_err(|e| ConfigError(e.to_string()))?;
        check_copies(&config.repository.copies).map_err(ConfigError)?;
        Ok(config)
    }

    /// The config of a process that runs only `stage`: its own NATS login,
    /// catalog role and S3 key, when configured, become the process's, so
    /// the process holds no other identity.
    #[must_use]
    pub fn as_stage(mut self, stage: vaultline_types::StageName) -> Config {
        if let Some(login) = self.nats.stages.remove(stage.as_str()) {
            self.nats.user = login.user;
            self.nats.password_file = login.password_file;
            self.nats.nkey_seed_file = login.nkey_seed_file;
            self.nats.creds_file = login.creds_file;
            self.nats.inbox_prefix = login.inbox_prefix;
        }
        if let Some(role) = self.catalog.stages.remove(stage.as_str()) {
            self.catalog.user = Some(role.user);
            self.catalog.password_file = role.password_file;
        }
        self.nats.stages.clear();
        self.nats.admin = None;
        self.catalog.stages.clear();
        if let Some(repository) = self.repository.for_stage(stage) {
            self.repository = repository;
        }
        self.repository.s3.stages.clear();
        if !hands_over_data(stage) {
            self.staging.backend = StagingBackend::Dir;
        }
        self
    }

    /// The stage's `[stages.<stage>]` changes to its consumer definition:
    /// `vaultline migrate` applies max-deliver and ack-wait to the server,
    /// the stage's runner its backoff.
    pub fn consumer_overrides(
        &self,
        stage: vaultline_types::StageName,
    ) -> vaultline_bus::ConsumerOverrides {
        let settings = self.stage(stage);
        vaultline_bus::ConsumerOverrides {
            max_deliver: settings.max_deliver,
            backoff: settings
                .backoff
                .as_ref()
                .and_then(|items| vaultline_bus::parse_backoff(&items.join(",")).ok()),
            ack_wait: settings.ack_wait,
        }
    }

    /// Settings of one stage (defaults when absent).
    pub fn stage(&self, stage: vaultline_types::StageName) -> StageSettings {
        self.stages.get(stage.as_str()).cloned().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_single_stage_process_takes_that_stage_s_logins_and_no_other() {
        use vaultline_types::StageName;
        let text = "[nats]\nuser = \"vaultline-operator\"\npassword-file = \"/op\"\n\
                    [nats.admin]\nuser = \"vaultline-admin\"\n\
                    [nats.stages.verifier]\nuser = \"vaultline-verifier\"\npassword-file = \"/v\"\n\
                    [catalog.stages.verifier]\nuser = \"vaultline_verifier\"\n\
                    [repository.s3.stages.verifier]\naccess-key-id = \"GKv\"\nsecret-access-key-file = \"/s\"\n\
                    [staging]\nbackend = \"jetstream\"\n";
        use figment::providers::Format;
        let config: Config = figment::Figment::from(figment::providers::Toml::string(text))
            .extract()
            .unwrap();
        let verifier = config.clone().as_stage(StageName::Verifier);
        assert_eq!(
            verifier.nats.login().user.as_deref(),
            Some("vaultline-verifier")
        );
        assert_eq!(verifier.nats.login().inbox(), "_INBOX.vaultline-verifier");
        assert!(verifier.nats.stages.is_empty() && verifier.nats.admin.is_none());
        assert_eq!(verifier.catalog.user.as_deref(), Some("vaultline_verifier"));
        assert_eq!(verifier.repository.s3.access_key_id.as_deref(), Some("GKv"));
        // The verifier never reaches the staging store its user may not read.
        assert_eq!(verifier.staging.backend, StagingBackend::Dir);
        // A stage without logins of its own keeps the process's; the packager hands data over.
        let packager = config.as_stage(StageName::Packager);
        assert_eq!(
            packager.nats.login().user.as_deref(),
            Some("vaultline-operator")
        );
        assert_eq!(packager.catalog.user, None);
        assert_eq!(packager.staging.backend, StagingBackend::Jetstream);
    }

    #[test]
    fn files_parse_and_unknown_keys_are_refused() {
        let dir = std::env::temp_dir().join(format!("vaultline-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("vaultline.toml");
        std::fs::write(&file, "[nats]\nurl = \"nats://h:1\"\n[staging]\nttl = \"2h\"\n[stages.packager]\nzstd-level = 5\n").unwrap();
        let config = Config::load(Some(&file)).unwrap();
        assert_eq!(config.nats.url, "nats://h:1");
        assert_eq!(config.staging.ttl, Duration::from_secs(7200));
        assert_eq!(
            config
                .stage(vaultline_types::StageName::Packager)
                .zstd_level,
            Some(5)
        );
        std::fs::write(&file, "[nats]\nurll = 1\n").unwrap();
        assert!(
            Config::load(Some(&file))
                .unwrap_err()
                .to_string()
                .contains("urll")
        );
        let debug = format!(
            "{:?}",
            CatalogConfig {
                url: "postgres://u:secret@h/db".into(),
                ..CatalogConfig::default()
            }
        );
        assert!(!debug.contains("secret"), "{debug}");
    }
}
