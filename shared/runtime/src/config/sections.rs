//! The sections of `vaultline.toml`, each with its defaults.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct NatsConfig {
    /// Server URL, e.g. `nats://127.0.0.1:4222`, without credentials.
    pub url: String,
    /// Who this process is (a stage's binary: that stage's user; the CLI:
    /// the operator). Secrets only by file.
    pub user: Option<String>,
    pub password_file: Option<PathBuf>,
    pub nkey_seed_file: Option<PathBuf>,
    pub creds_file: Option<PathBuf>,
    /// Reply subjects; `_INBOX.<user>` by default, as `deploy/nats/auth.conf` expects.
    pub inbox_prefix: Option<String>,
    /// CA that signed the server's certificate (turns TLS on).
    pub tls_ca_file: Option<PathBuf>,
    /// Client certificate and key, for servers that verify clients.
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    /// A stage's own login where one process runs several (`vaultline serve`),
    /// keyed by stage name.
    pub stages: BTreeMap<String, NatsLogin>,
    /// The login `vaultline migrate` applies streams and consumers with.
    pub admin: Option<NatsLogin>,
    /// Copies JetStream keeps of the stream, its consumers and the staging
    /// bucket (`vaultline migrate` applies it): 1 on a single server, 3 on a
    /// 3-server cluster, so losing one server loses nothing.
    pub replicas: usize,
}

/// A NATS login other than the process's own.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct NatsLogin {
    pub user: Option<String>,
    pub password_file: Option<PathBuf>,
    pub nkey_seed_file: Option<PathBuf>,
    pub creds_file: Option<PathBuf>,
    pub inbox_prefix: Option<String>,
}

impl NatsConfig {
    fn with_tls(&self, login: &NatsLogin) -> vaultline_bus::Login {
        vaultline_bus::Login {
            user: login.user.clone(),
            password_file: login.password_file.clone(),
            nkey_seed_file: login.nkey_seed_file.clone(),
            creds_file: login.creds_file.clone(),
            inbox_prefix: login.inbox_prefix.clone(),
            tls: vaultline_bus::Tls {
                ca_file: self.tls_ca_file.clone(),
                cert_file: self.tls_cert_file.clone(),
                key_file: self.tls_key_file.clone(),
            },
        }
    }

    /// The process's own login.
    pub fn login(&self) -> vaultline_bus::Login {
        self.with_tls(&NatsLogin {
            user: self.user.clone(),
            password_file: self.password_file.clone(),
            nkey_seed_file: self.nkey_seed_file.clone(),
            creds_file: self.creds_file.clone(),
            inbox_prefix: self.inbox_prefix.clone(),
        })
    }

    /// `stage`'s own login when configured under `[nats.stages.<stage>]`.
    pub fn stage_login(&self, stage: vaultline_types::StageName) -> Option<vaultline_bus::Login> {
        self.named_login(stage.as_str())
    }

    /// The login under `[nats.stages.<name>]` (a stage, or `api`).
    pub fn named_login(&self, name: &str) -> Option<vaultline_bus::Login> {
        self.stages.get(name).map(|l| self.with_tls(l))
    }

    /// The admin login (`[nats.admin]`), else the process's own.
    pub fn admin_login(&self) -> vaultline_bus::Login {
        self.admin
            .as_ref()
            .map_or_else(|| self.login(), |l| self.with_tls(l))
    }
}

#[derive(Clone, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct CatalogConfig {
    /// `postgres://user@host:port/db`. May carry a password; redacted in Debug.
    pub url: String,
    /// The role to connect as, instead of the URL's user.
    pub user: Option<String>,
    /// File holding the password (instead of one in the URL).
    pub password_file: Option<PathBuf>,
    /// A stage's own role where one process runs several (`vaultline serve`),
    /// keyed by stage name: same server and database, another user.
    pub stages: BTreeMap<String, CatalogLogin>,
}

/// A catalog role other than the URL's.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct CatalogLogin {
    pub user: String,
    pub password_file: Option<PathBuf>,
}

impl std::fmt::Debug for CatalogConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redacted = vaultline_bus::redact_url(&self.url);
        f.debug_struct("CatalogConfig")
            .field("url", &redacted)
            .field("user", &self.user)
            .field("password_file", &self.password_file)
            .field("stages", &self.stages)
            .finish()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct RepositoryConfig {
    /// Where the repository is: `s3://bucket[/prefix]` or `file:///dir`.
    /// When absent, the directory `path`.
    pub url: Option<String>,
    /// Directory of the filesystem repository (when `url` is absent).
    pub path: PathBuf,
    /// How to reach the S3 server of an `s3://` url.
    pub s3: S3Config,
    /// Repositories every stored snapshot is copied to (`[[repository.copies]]`).
    pub copies: Vec<super::CopyConfig>,
    /// Object lock on every pack, manifest and key record written (S3 only).
    pub object_lock: Option<super::ObjectLockConfig>,
}

/// S3 connection settings. Each falls back to the standard AWS variable
/// (`AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`,
/// `AWS_SECRET_ACCESS_KEY`); the secret is only ever read from a file or the
/// environment, never written inline in the config.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct S3Config {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key_file: Option<PathBuf>,
    /// Objects at least this many bytes are uploaded in parts.
    pub multipart_threshold: Option<u64>,
    /// Bytes per part (at least 5 MiB).
    pub part_size: Option<u64>,
    /// Attempts per request, the first included.
    pub max_attempts: Option<u32>,
    /// A stage's own key, keyed by stage name, so each holds only the rights
    /// its job needs (the uploader puts, the verifier reads, retention
    /// deletes; docs/least-privilege.md). Stages without one use the key above.
    pub stages: BTreeMap<String, S3Login>,
}

/// An S3 access key other than `[repository.s3]`'s.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct S3Login {
    pub access_key_id: String,
    pub secret_access_key_file: PathBuf,
}

impl RepositoryConfig {
    /// The repository settings `stage` opens with: its own S3 key when
    /// `[repository.s3.stages.<stage>]` names one, else `None` (the shared ones).
    pub fn for_stage(&self, stage: vaultline_types::StageName) -> Option<RepositoryConfig> {
        let login = self.s3.stages.get(stage.as_str())?;
        let mut config = self.clone();
        config.s3.access_key_id = Some(login.access_key_id.clone());
        config.s3.secret_access_key_file = Some(login.secret_access_key_file.clone());
        config.s3.stages.clear();
        Some(config)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct StagingConfig {
    /// `dir`: finished items stay in `path`, which every stage must see (one
    /// host, or a shared volume). `jetstream`: they go to the object store
    /// bucket VAULTLINE_STAGING on NATS, so stages can run on different
    /// hosts; `path` is then only local scratch space.
    pub backend: StagingBackend,
    /// Directory for claim-check data between stages.
    pub path: PathBuf,
    /// Staged items older than this are swept.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct KeysConfig {
    /// File holding the key-encryption key (an age identity). The variable
    /// `VAULTLINE_KEK` may hold the key itself instead.
    pub kek_file: Option<PathBuf>,
    /// File holding the credentials key (an age identity) that seals source
    /// credentials. Separate from the KEK on purpose: the extractor needs it,
    /// and must never be able to unwrap tenant identities. The variable
    /// `VAULTLINE_CREDENTIALS_KEY` may hold the key itself instead.
    pub credentials_key_file: Option<PathBuf>,
    /// File holding the staging identity (an age identity): the packager
    /// opens staged batches with it. The variable `VAULTLINE_STAGING_KEY`
    /// may hold the key itself instead. `vaultline kek-generate` makes one.
    pub staging_key_file: Option<PathBuf>,
    /// The staging recipient (`age1…`): the extractor seals batches to it.
    /// Derived from the staging identity when that is configured instead,
    /// as in `vaultline serve`.
    pub staging_recipient: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct AdminConfig {
    /// Address of /metrics and /health; port 0 picks a free one.
    pub listen: String,
    /// When set, `/metrics` and `/health/dependencies` answer only requests
    /// with `Authorization: Bearer <the file's first line>` (the variable
    /// `VAULTLINE_ADMIN_TOKEN` may hold the token instead). `/health/live`
    /// and `/health/ready` stay open for probes.
    pub token_file: Option<PathBuf>,
    /// Dependencies are checked at most once per this, however often the
    /// health endpoints are asked.
    #[serde(with = "humantime_serde")]
    pub check_interval: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct RetentionConfig {
    /// How often every source's policy is re-evaluated and packs are
    /// garbage-collected (besides after each verified snapshot).
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// How long an unreferenced pack stays condemned before it is deleted.
    #[serde(with = "humantime_serde")]
    pub gc_grace: Duration,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            interval: Duration::from_secs(3600),
            gc_grace: Duration::from_secs(24 * 3600),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct WebhooksConfig {
    /// Deliveries tried at most this many times.
    pub max_attempts: u32,
    /// First retry delay; each retry doubles it (capped at one hour).
    #[serde(with = "humantime_serde")]
    pub backoff: Duration,
    /// Per-request timeout.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        WebhooksConfig {
            max_attempts: 10,
            backoff: Duration::from_secs(5),
            timeout: Duration::from_secs(10),
        }
    }
}

/// Traces (logs go to stderr, filtered by `RUST_LOG`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct TelemetryConfig {
    /// OTLP/gRPC endpoint spans are exported to, e.g.
    /// `http://otel-collector:4317`; unset (the default), none are.
    pub otlp_endpoint: Option<String>,
}

/// The HTTP API `vaultline serve` offers (off unless `listen` is set). It
/// logs in as `[nats.stages.api]` and `[catalog.stages.api]` when those are
/// configured (the shipped `vaultline-api` user and `vaultline_api` role).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct ApiConfig {
    /// `127.0.0.1:8088`; port 0 picks a free one (logged).
    pub listen: Option<String>,
}

/// The auditor's watch over the pipeline: how often it exports backlog and
/// catalog figures, and when it gives up on a snapshot stuck in flight.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct ObserverConfig {
    /// How often consumer backlogs and catalog figures are read and exported.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// A snapshot still in flight this long after it started is failed,
    /// unless its source sets its own deadline.
    #[serde(with = "humantime_serde")]
    pub snapshot_deadline: Duration,
}

impl Default for ObserverConfig {
    fn default() -> Self {
        ObserverConfig {
            interval: Duration::from_secs(15),
            snapshot_deadline: Duration::from_secs(6 * 3600),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct DrillsConfig {
    /// How often the verifier looks for sources whose drill is due.
    #[serde(with = "humantime_serde")]
    pub check_interval: Duration,
    /// Scratch PostgreSQL server drills restore into, as a URL without a
    /// password (`postgres://drill@scratch:5432/postgres`): a role that may
    /// create databases.
    pub postgres_url: Option<String>,
    /// File holding that role's password.
    pub postgres_password_file: Option<PathBuf>,
    /// Scratch MariaDB server (`mariadb://drill@scratch:3306/`).
    pub mariadb_url: Option<String>,
    /// File holding that user's password.
    pub mariadb_password_file: Option<PathBuf>,
}

impl Default for DrillsConfig {
    fn default() -> Self {
        DrillsConfig {
            check_interval: Duration::from_secs(30),
            postgres_url: None,
            postgres_password_file: None,
            mariadb_url: None,
            mariadb_password_file: None,
        }
    }
}

/// The verifier's rolling integrity check: every stored pack is read back
/// and re-hashed at least once per `rehash-after` (the verifier's stage
/// setting), spread evenly over the window rather than in bursts.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct IntegrityConfig {
    /// How often a round runs (`0s` turns the rolling check off).
    #[serde(with = "humantime_serde")]
    pub check_interval: Duration,
    /// At most this many bytes read back per hour, all rounds together. A
    /// repository larger than `bytes-per-hour` × the window leaves packs
    /// overdue (`vaultline_integrity_packs_overdue` says how many).
    pub bytes_per_hour: u64,
    /// Verified snapshots, chosen at random, read back in full (level 2)
    /// per day by each verifier replica; `0` turns the sample off. Needs
    /// the KEK.
    pub level2_per_day: u32,
}

impl Default for IntegrityConfig {
    fn default() -> Self {
        IntegrityConfig {
            check_interval: Duration::from_secs(60),
            bytes_per_hour: 8 << 30,
            level2_per_day: 1,
        }
    }
}

/// Knobs of one stage.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct StageSettings {
    /// Messages handled at once (≤ the consumer's max_ack_pending).
    pub concurrency: Option<usize>,
    /// Overrides the consumer definition's max_deliver.
    pub max_deliver: Option<i64>,
    /// Overrides the consumer definition's ack wait.
    #[serde(with = "humantime_serde::option")]
    pub ack_wait: Option<Duration>,
    /// Overrides the consumer definition's retry backoff, e.g. `["1s", "5s"]`.
    pub backoff: Option<Vec<String>>,
    /// How long one message may be handled before it is given up (default
    /// 6 h): a hung source program cannot keep its message alive forever
    /// through progress acks.
    #[serde(with = "humantime_serde::option")]
    pub handle_timeout: Option<Duration>,
    /// zstd level (packager).
    pub zstd_level: Option<i32>,
    /// Target bytes of new data per batch and pack (extractor).
    pub batch_bytes: Option<u64>,
    /// After each snapshot, packs not read back and found matching within
    /// this long are re-hashed, the others checked by size (verifier;
    /// default 7 days, `0s` re-hashes every pack every time).
    #[serde(with = "humantime_serde::option")]
    pub rehash_after: Option<Duration>,
}

impl Default for NatsConfig {
    fn default() -> Self {
        NatsConfig {
            url: "nats://127.0.0.1:4222".into(),
            user: None,
            password_file: None,
            nkey_seed_file: None,
            creds_file: None,
            inbox_prefix: None,
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            stages: BTreeMap::new(),
            admin: None,
            replicas: 1,
        }
    }
}

impl Default for CatalogConfig {
    fn default() -> Self {
        CatalogConfig {
            url: "postgres://postgres@127.0.0.1:5432/vaultline".into(),
            user: None,
            password_file: None,
            stages: BTreeMap::new(),
        }
    }
}

impl Default for RepositoryConfig {
    fn default() -> Self {
        RepositoryConfig {
            url: None,
            path: "/var/lib/vaultline/repository".into(),
            s3: S3Config::default(),
            copies: Vec::new(),
            object_lock: None,
        }
    }
}

/// Where finished staged items live.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StagingBackend {
    #[default]
    Dir,
    Jetstream,
}

impl Default for StagingConfig {
    fn default() -> Self {
        StagingConfig {
            backend: StagingBackend::Dir,
            path: "/var/lib/vaultline/staging".into(),
            ttl: Duration::from_secs(24 * 3600),
        }
    }
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: "127.0.0.1:9464".into(),
            token_file: None,
            check_interval: Duration::from_secs(5),
        }
    }
}
