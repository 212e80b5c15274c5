//! Per-test environment: servers, a config file, a KEK, and helpers that drive
//! the real CLI and node.

use anyhow::{Context, Result};
use clap::Parser;
use std::path::{Path, PathBuf};
use std::time::Duration;
use vaultline_catalog::{Catalog, SnapshotRow, SnapshotStatus};
use vaultline_runtime::Config;
use vaultline_testkit::{Garage, NatsCluster, NatsServer, Postgres};
use vaultline_types::{Name, SnapshotId, StageName};

pub(crate) struct Env {
    pub(crate) nats: NatsServer,
    /// The other members when NATS is the 3-server cluster (n2 and n3).
    pub(crate) nats_peers: Vec<NatsServer>,
    pub(crate) _pg: Postgres,
    /// The S3 server, when the repository is on S3.
    pub(crate) garage: Option<Garage>,
    pub(crate) dir: tempfile::TempDir,
    pub(crate) config_file: PathBuf,
    pub(crate) catalog: Catalog,
}

/// What `vaultline migrate` does on the bus. A cluster that has just formed
/// may refuse a 3-replica stream for a moment while its members learn of each
/// other, so that refusal is retried for a while.
async fn apply_bus(config: &Config) -> Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        match vaultline_runtime::setup::apply_bus(config).await {
            Ok(_) => return Ok(()),
            Err(e) if config.nats.replicas > 1 && std::time::Instant::now() < deadline => {
                eprintln!("migrate on a new cluster: {e}; trying again");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// The `[repository]` lines for the Garage bucket, its secret written
/// into `dir` (mode 0600).
pub(crate) fn s3_repository(garage: &Garage, dir: &Path) -> Result<String> {
    let secret = dir.join("s3-secret");
    std::fs::write(&secret, &garage.secret_access_key)?;
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    Ok(format!(
        "url = \"s3://{bucket}/repo\"\n[repository.s3]\nendpoint = \"{endpoint}\"\nregion = \"{region}\"\naccess-key-id = \"{key}\"\nsecret-access-key-file = \"{secret}\"\nmax-attempts = 3\nmultipart-threshold = 6291456\npart-size = 5242880",
        bucket = Garage::BUCKET,
        endpoint = garage.endpoint(),
        region = Garage::REGION,
        key = garage.access_key_id,
        secret = secret.display(),
    ))
}

impl Env {
    /// Servers and a config with a filesystem repository.
    pub(crate) async fn new() -> Result<Env> {
        Env::build(false).await
    }

    /// Servers and a config with the repository in a Garage bucket.
    pub(crate) async fn with_s3() -> Result<Env> {
        Env::build(true).await
    }

    /// Servers and a config with NATS as the 3-server cluster of
    /// `deploy/nats/cluster`, the stream and consumers at 3 replicas.
    pub(crate) async fn with_nats_cluster() -> Result<Env> {
        Env::build_with(false, true).await
    }

    async fn build(s3: bool) -> Result<Env> {
        Env::build_with(s3, false).await
    }

    async fn build_with(s3: bool, cluster: bool) -> Result<Env> {
        vaultline_runtime::telemetry::init();
        let (nats, nats_peers) = if cluster {
            let mut members = NatsCluster::start().await?.members;
            let first = members.remove(0);
            (first, members)
        } else {
            (NatsServer::start()?, Vec::new())
        };
        let nats_url = std::iter::once(&nats)
            .chain(&nats_peers)
            .map(NatsServer::url)
            .collect::<Vec<_>>()
            .join(",");
        let pg = Postgres::start()?;
        let dir = tempfile::tempdir()?;
        let garage = if s3 { Some(Garage::start()?) } else { None };
        let repository = match &garage {
            None => format!("path = \"{}/repository\"", dir.path().display()),
            Some(garage) => s3_repository(garage, dir.path())?,
        };
        let kek_file = dir.path().join("kek.txt");
        std::fs::write(&kek_file, vaultline_format::keys::Kek::generate().1)?;
        let credentials_key_file = dir.path().join("credentials-key.txt");
        std::fs::write(
            &credentials_key_file,
            vaultline_format::keys::Kek::generate().1,
        )?;
        let staging_key_file = dir.path().join("staging-key.txt");
        std::fs::write(&staging_key_file, vaultline_format::keys::Kek::generate().1)?;
        // Each stage its own NATS user; the CLI is the operator; migrate the admin.
        let nats_login = |role: &str| -> Result<String> {
            Ok(format!(
                "user = \"{}\"\npassword-file = \"{}\"\n",
                NatsServer::user(role),
                nats.write_password_file(role, dir.path())?.display()
            ))
        };
        let mut logins = format!("[nats.admin]\n{}", nats_login("admin")?);
        // … and its own catalog role (migration 0008; the test server trusts loopback).
        // The HTTP API too, when a test starts it.
        let roles = StageName::ALL.iter().map(|s| s.as_str()).chain(["api"]);
        for role in roles {
            logins += &format!("[nats.stages.{role}]\n{}", nats_login(role)?);
            logins += &format!("[catalog.stages.{role}]\nuser = \"vaultline_{role}\"\n");
        }
        let config_file = dir.path().join("vaultline.toml");
        // Short retry delays keep failure tests fast; everything else is the shipped default.
        let toml = format!(
            r#"[nats]
url = "{nats}"
replicas = {replicas}
{operator}{logins}[catalog]
url = "{pg}"
[repository]
{repository}
[staging]
path = "{root}/staging"
ttl = "1h"
[keys]
kek-file = "{kek}"
credentials-key-file = "{credentials_key}"
staging-key-file = "{staging_key}"
[admin]
listen = "127.0.0.1:0"
[stages.extractor]
backoff = ["200ms"]
max-deliver = 3
[stages.packager]
backoff = ["200ms"]
max-deliver = 3
[stages.uploader]
backoff = ["200ms"]
max-deliver = 3
[stages.verifier]
backoff = ["200ms"]
max-deliver = 3
[webhooks]
backoff = "200ms"
[drills]
check-interval = "500ms"
[observer]
interval = "1s"
"#,
            nats = nats_url,
            replicas = if cluster { 3 } else { 1 },
            operator = nats_login("operator")?,
            pg = pg.url(),
            root = dir.path().display(),
            kek = kek_file.display(),
            credentials_key = credentials_key_file.display(),
            staging_key = staging_key_file.display(),
        );
        std::fs::write(&config_file, toml)?;
        // What `vaultline migrate` does, as the catalog's owner and the NATS admin.
        let catalog = Catalog::connect(pg.url())?;
        catalog.migrate().await?;
        let config = Config::load(Some(&config_file))?;
        apply_bus(&config).await?;
        Ok(Env {
            nats,
            nats_peers,
            _pg: pg,
            garage,
            dir,
            config_file,
            catalog,
        })
    }

    pub(crate) fn config(&self) -> Config {
        Config::load(Some(&self.config_file)).expect("test config loads")
    }

    /// Runs a `vaultline` CLI command in-process, exactly as the binary would.
    pub(crate) async fn cli(&self, args: &[&str]) -> Result<()> {
        let mut argv = vec![
            "vaultline",
            "--config",
            self.config_file.to_str().expect("utf-8 path"),
        ];
        argv.extend_from_slice(args);
        let cli = vaultline::cli::Cli::try_parse_from(argv)?;
        let code = vaultline::cli::run(cli).await?;
        anyhow::ensure!(
            code == std::process::ExitCode::SUCCESS,
            "exit code {code:?}"
        );
        Ok(())
    }

    /// Restores `snapshot` through the catalog with the CLI into a fresh
    /// directory `name` under the test's root, and returns that directory.
    pub(crate) async fn restore_to(&self, snapshot: &SnapshotId, name: &str) -> Result<PathBuf> {
        let target = self.path(name);
        self.cli(&[
            "restore",
            snapshot.as_str(),
            "--to",
            target.to_str().expect("utf-8 path"),
        ])
        .await?;
        Ok(target)
    }

    /// Runs the built `vaultline` binary with only `vars` for configuration
    /// (no config file) and returns its output, whatever its exit status.
    pub(crate) async fn bare_cli(
        &self,
        args: &[&str],
        vars: &[(String, String)],
    ) -> Result<std::process::Output> {
        let mut command = tokio::process::Command::new(binary("vaultline")?);
        command.args(args).env_remove("VAULTLINE_CONFIG");
        for (name, value) in vars {
            command.env(name, value);
        }
        Ok(command.output().await?)
    }

    /// Runs the built `vaultline` binary with the env's config plus `vars`;
    /// returns (success, stdout, stderr) whatever its exit status.
    pub(crate) async fn run_cli(
        &self,
        args: &[&str],
        vars: &[(&str, &str)],
    ) -> Result<(bool, String, String)> {
        let mut full = vec!["--config", self.config_file.to_str().expect("utf-8 path")];
        full.extend_from_slice(args);
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let out = self.bare_cli(&full, &vars).await?;
        Ok((
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }

    /// Restores `snapshot` into `target` with the built binary and the
    /// catalog; returns (success, stdout, stderr), for its summary lines.
    pub(crate) async fn restore_cli(
        &self,
        snapshot: &SnapshotId,
        target: &Path,
    ) -> Result<(bool, String, String)> {
        let target = target.to_str().expect("utf-8 path");
        self.run_cli(&["restore", snapshot.as_str(), "--to", target], &[])
            .await
    }

    /// Runs the built `vaultline` binary and returns its stdout (for `--json`).
    pub(crate) async fn cli_output(&self, args: &[&str]) -> Result<String> {
        let output = tokio::process::Command::new(binary("vaultline")?)
            .arg("--config")
            .arg(&self.config_file)
            .args(args)
            .output()
            .await?;
        anyhow::ensure!(
            output.status.success(),
            "vaultline {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(String::from_utf8(output.stdout)?)
    }

    pub(crate) async fn node(&self) -> Result<vaultline_runtime::Node> {
        vaultline::start_node(self.config(), &vaultline::SERVED).await
    }

    /// A fresh environment with tenant `acme` and source `docs` over a small tree.
    pub(crate) async fn with_small_source() -> Result<(Env, PathBuf)> {
        let env = Env::new().await?;
        let tree = env.path("tree");
        small_tree(&tree)?;
        env.tenant_with_source(&tree).await?;
        Ok((env, tree))
    }

    /// Creates tenant `acme` with source `docs` over `tree`.
    pub(crate) async fn tenant_with_source(&self, tree: &Path) -> Result<()> {
        self.cli(&["tenant", "create", "acme"]).await?;
        self.cli(&[
            "source",
            "add",
            "acme/docs",
            "--path",
            tree.to_str().expect("utf-8"),
        ])
        .await
    }

    /// Writes `tenant`'s identity file to `<tenant>.key` under the test's
    /// root, for restores without the catalog, and returns its path.
    pub(crate) async fn export_identity(&self, tenant: &str) -> Result<PathBuf> {
        let file = self.path(&format!("{tenant}.key"));
        self.cli(&[
            "tenant",
            "export-identity",
            tenant,
            "--out",
            file.to_str().expect("utf-8 path"),
        ])
        .await?;
        Ok(file)
    }

    /// A plain connection to the test catalog, for what no command shows.
    pub(crate) async fn sql(&self) -> Result<tokio_postgres::Client> {
        let (client, connection) =
            tokio_postgres::connect(self._pg.url(), tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        Ok(client)
    }

    /// A raw NATS client logged in as `role` (a stage, `operator` or
    /// `admin`), replying on that user's own inbox prefix.
    pub(crate) async fn nats_as(&self, role: &str) -> Result<async_nats::Client> {
        let seeds: Vec<async_nats::ServerAddr> = self
            .nats_members()
            .map(|m| m.url().parse())
            .collect::<Result<_, _>>()?;
        Ok(self.nats_options(role).connect(seeds).await?)
    }

    /// Every NATS server of the test: one, or the cluster's three.
    pub(crate) fn nats_members(&self) -> impl Iterator<Item = &NatsServer> {
        std::iter::once(&self.nats).chain(&self.nats_peers)
    }

    /// The cluster member named `name` (`n1`, `n2`, `n3`).
    pub(crate) fn nats_member(&mut self, name: &str) -> Result<&mut NatsServer> {
        std::iter::once(&mut self.nats)
            .chain(&mut self.nats_peers)
            .find(|m| m.name.as_deref() == Some(name))
            .with_context(|| format!("no NATS server named {name}"))
    }

    /// Connect options logged in as `role`, for clients that need more settings.
    pub(crate) fn nats_options(&self, role: &str) -> async_nats::ConnectOptions {
        let user = NatsServer::user(role);
        async_nats::ConnectOptions::with_user_and_password(
            user.clone(),
            self.nats.password(role).to_owned(),
        )
        .custom_inbox_prefix(format!("_INBOX.{user}"))
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The snapshot a request for `tenant`/`source` made, once it is final.
    pub(crate) async fn wait_request(
        &self,
        tenant: &Name,
        source: &Name,
        request_id: &str,
    ) -> Result<SnapshotRow> {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            match self
                .catalog
                .snapshot_by_request(tenant, source, request_id)
                .await?
            {
                Some(row) if row.status.is_terminal() => return Ok(row),
                _ => anyhow::ensure!(
                    std::time::Instant::now() < deadline,
                    "no final snapshot of {tenant}/{source} for request {request_id} within 60s"
                ),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The newest snapshot of acme/docs once it reaches a final status.
    pub(crate) async fn wait_final(&self, count: usize) -> Result<SnapshotRow> {
        self.wait_final_of("docs", count).await
    }

    /// The newest snapshot of acme/`source` once it is the `count`th and final.
    pub(crate) async fn wait_final_of(&self, source: &str, count: usize) -> Result<SnapshotRow> {
        let (tenant, source) = (Name::new("acme")?, Name::new(source)?);
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        loop {
            let rows = self.catalog.snapshots(Some(&tenant), Some(&source)).await?;
            if rows.len() >= count && rows.first().is_some_and(|r| r.status.is_terminal()) {
                return rows.into_iter().next().context("no snapshot");
            }
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "no final snapshot #{count} within 120s: {rows:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

pub(crate) fn assert_verified(row: &SnapshotRow) {
    assert_eq!(
        row.status,
        SnapshotStatus::Verified,
        "snapshot {} ended {} ({:?})",
        row.id,
        row.status,
        row.error
    );
}

/// Every stage `vaultline serve` runs consumes a subject; garbage goes there.
/// The stages that read a durable consumer: all but the scheduler.
pub(crate) fn consumer_stages() -> Vec<StageName> {
    StageName::ALL
        .into_iter()
        .filter(|stage| vaultline_bus::consumer_json(*stage).is_some())
        .collect()
}

pub(crate) fn input_subjects() -> Vec<(StageName, &'static str)> {
    vec![
        (StageName::Extractor, "vaultline.backup.request.acme.docs"),
        (StageName::Packager, "vaultline.data.extracted.acme"),
        (StageName::Uploader, "vaultline.pack.staged.acme"),
        (StageName::Uploader, "vaultline.snapshot.extracted.acme"),
        (StageName::Verifier, "vaultline.pack.stored.acme"),
        (StageName::Verifier, "vaultline.snapshot.stored.acme"),
        (StageName::Retention, "vaultline.snapshot.verified.acme"),
    ]
}

/// A small tree for tests that are not about data.
fn small_tree(root: &Path) -> Result<()> {
    std::fs::create_dir_all(root.join("sub"))?;
    std::fs::write(root.join("a.txt"), "alpha\n".repeat(1000))?;
    std::fs::write(
        root.join("sub/b.bin"),
        (0..100_000u32)
            .map(|i| (i * 7 % 251) as u8)
            .collect::<Vec<_>>(),
    )?;
    Ok(())
}

/// `target/<profile>/NAME`: a binary built beside this test binary (`…/deps/integration-<hash>`).
/// What a CLI run needs to reach `garage`'s bucket with nothing else: the
/// AWS variables, and the catalog and NATS addresses on closed ports.
pub(crate) fn offline_vars(garage: &vaultline_testkit::Garage) -> Vec<(String, String)> {
    [
        ("AWS_ENDPOINT_URL", garage.endpoint()),
        ("AWS_REGION", vaultline_testkit::Garage::REGION.to_owned()),
        ("AWS_ACCESS_KEY_ID", garage.access_key_id.clone()),
        ("AWS_SECRET_ACCESS_KEY", garage.secret_access_key.clone()),
        (
            "VAULTLINE_CATALOG__URL",
            "postgres://postgres@127.0.0.1:1/none".to_owned(),
        ),
        ("VAULTLINE_NATS__URL", "nats://127.0.0.1:1".to_owned()),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value))
    .collect()
}

pub(crate) use crate::fixtures::{Process, all_but, binary, mixed_bytes, node_with_slow};

/// How far the newest snapshot has got: the number of snapshots, and the
/// newest one's status, batch count (once extracted) and packs stored so far.
pub(crate) async fn snapshot_progress(
    sql: &tokio_postgres::Client,
) -> Result<(i64, Option<(String, Option<i32>, i64)>)> {
    let count: i64 = sql
        .query_one("SELECT count(*) FROM snapshots", &[])
        .await?
        .get(0);
    let newest = sql
        .query_opt(
            "SELECT s.status, s.batches_total, (SELECT count(*) FROM snapshot_batches b
                                WHERE b.tenant = s.tenant AND b.snapshot = s.id)
               FROM snapshots s ORDER BY s.started_at DESC LIMIT 1",
            &[],
        )
        .await?
        .map(|r| (r.get(0), r.get(1), r.get(2)));
    Ok((count, newest))
}
