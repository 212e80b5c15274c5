//! PostgreSQL point-in-time recovery against a real cluster that archives
//! every WAL segment through `vaultline wal-push`, restored by starting a
//! real PostgreSQL on what `restore --pitr` wrote.
//!
//! The cluster runs as the `postgres` user, as in production: the binary,
//! its configs and their secrets sit in a directory that user can read.
//! wal-push logs in as `vaultline_archiver` (what migration 0013 grants it
//! and nothing more); recovery uses the operator's config with the KEK.

use crate::fixtures::binary;
use crate::harness::{Env, assert_verified, s3_repository};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use vaultline_testkit::{Postgres, eventually};

/// A source cluster archiving into tenant acme's source `shop`.
pub(crate) struct Archiving {
    pub(crate) env: Env,
    pub(crate) pg: Postgres,
    /// What the `postgres` user reads: the binary, configs, secrets.
    pub(crate) shared: tempfile::TempDir,
    pub(crate) bin: PathBuf,
    pub(crate) archiver_config: PathBuf,
    pub(crate) recovery_config: PathBuf,
}

fn give_to_postgres(path: &Path) -> Result<()> {
    if vaultline_testkit::as_root() {
        let status = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(path)
            .status()?;
        anyhow::ensure!(status.success(), "chown {}", path.display());
    }
    Ok(())
}

impl Archiving {
    /// Servers, tenant acme, and a cluster with archive_mode on whose
    /// archive_command is wal-push into acme/shop (a physical source).
    pub(crate) async fn start(archive_timeout: &str) -> Result<Archiving> {
        let env = Env::with_s3().await?;
        let shared = tempfile::tempdir()?;
        std::fs::set_permissions(
            shared.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )?;
        let bin = shared.path().join("vaultline");
        std::fs::copy(binary("vaultline")?, &bin)?;
        let garage = env.garage.as_ref().context("an S3 env")?;
        let repository = s3_repository(garage, shared.path())?;
        let mut archiver_url = url::Url::parse(env._pg.url())?;
        archiver_url
            .set_username("vaultline_archiver")
            .map_err(|()| anyhow::anyhow!("catalog url"))?;
        let archiver_config = shared.path().join("archiver.toml");
        std::fs::write(
            &archiver_config,
            format!("[catalog]\nurl = \"{archiver_url}\"\n[repository]\n{repository}\n"),
        )?;
        let kek = shared.path().join("kek.txt");
        std::fs::copy(env.dir.path().join("kek.txt"), &kek)?;
        let recovery_config = shared.path().join("recovery.toml");
        std::fs::write(
            &recovery_config,
            format!(
                "[catalog]\nurl = \"{}\"\n[keys]\nkek-file = \"{}\"\n[repository]\n{repository}\n",
                env._pg.url(),
                kek.display()
            ),
        )?;
        give_to_postgres(shared.path())?;
        let archive_command = format!(
            "{} --config {} wal-push %p --source acme/shop",
            bin.display(),
            archiver_config.display()
        );
        let pg = Postgres::start_with_settings(&[
            "wal_level=replica".into(),
            "archive_mode=on".into(),
            format!("archive_command={archive_command}"),
            format!("archive_timeout={archive_timeout}"),
        ])?;
        env.cli(&["tenant", "create", "acme"]).await?;
        pg.psql(
            "postgres",
            "CREATE TABLE orders (batch integer NOT NULL, n integer NOT NULL, note text)",
        )?;
        let cluster = Archiving {
            env,
            pg,
            shared,
            bin,
            archiver_config,
            recovery_config,
        };
        cluster.add_source("shop").await?;
        Ok(cluster)
    }

    /// Inserts `rows` rows of batch `batch` in one transaction.
    pub(crate) fn insert(&self, batch: i32, rows: i32) -> Result<()> {
        self.pg.psql(
            "postgres",
            &format!(
                "INSERT INTO orders SELECT {batch}, n, repeat(md5(n::text), 8) FROM generate_series(1, {rows}) n"
            ),
        )?;
        Ok(())
    }

    /// Ends the current segment and waits until PostgreSQL has archived it.
    pub(crate) async fn switch_and_archive(&self) -> Result<String> {
        let segment = self
            .pg
            .psql(
                "postgres",
                "SELECT pg_walfile_name(pg_current_wal_lsn()) FROM (SELECT pg_switch_wal()) s",
            )?
            .trim()
            .to_owned();
        let pg = &self.pg;
        eventually(Duration::from_secs(120), "the segment archived", || {
            let archived = pg
                .psql(
                    "postgres",
                    "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver",
                )
                .unwrap_or_default();
            let archived = archived.trim().to_owned();
            let segment = segment.clone();
            async move { archived.len() >= 24 && archived[..24] >= *segment }
        })
        .await
        .with_context(|| format!("server log: {}", self.log_tail()))?;
        Ok(segment)
    }

    /// The end of the source cluster's log, for a failure's message.
    pub(crate) fn log_tail(&self) -> String {
        let log = self.pg.log();
        log[log.floor_char_boundary(log.len().saturating_sub(3000))..].to_owned()
    }

    /// `pitr timeline acme/shop --json`.
    pub(crate) async fn timeline(&self) -> Result<serde_json::Value> {
        let json = self
            .env
            .cli_output(&["pitr", "timeline", "acme/shop", "--json"])
            .await?;
        Ok(serde_json::from_str(&json)?)
    }

    /// Runs the postgres-readable vaultline with `config`.
    pub(crate) fn vaultline(&self, config: &Path, args: &[&str]) -> Result<(bool, String)> {
        let out = Command::new(&self.bin)
            .arg("--config")
            .arg(config)
            .args(args)
            .output()?;
        Ok((
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned()
                + &String::from_utf8_lossy(&out.stdout),
        ))
    }

    /// `wal-push FILE --source acme/SOURCE` as the archiver.
    pub(crate) fn push(&self, file: &Path, source: &str) -> Result<(bool, String)> {
        let file = file.to_str().expect("utf-8 path");
        let source = format!("acme/{source}");
        self.vaultline(
            &self.archiver_config,
            &["wal-push", file, "--source", &source],
        )
    }

    /// `wal-fetch NAME FILE --source acme/shop` with the restore's keys.
    pub(crate) fn fetch(&self, name: &str, file: &Path) -> Result<(bool, String)> {
        let file = file.to_str().expect("utf-8 path");
        self.vaultline(
            &self.recovery_config,
            &["wal-fetch", name, file, "--source", "acme/shop"],
        )
    }

    /// Adds the physical source acme/`name` over this cluster.
    pub(crate) async fn add_source(&self, name: &str) -> Result<()> {
        let url = format!("postgres://postgres@127.0.0.1:{}/postgres", self.pg.port);
        let source = format!("acme/{name}");
        self.env
            .cli(&[
                "source", "add", &source, "--type", "postgres", "--mode", "physical", "--url", &url,
            ])
            .await
    }

    /// Restores acme/shop with `target` flags, starts PostgreSQL on it and
    /// waits until recovery has ended; returns the server and the time the
    /// restore plus recovery took.
    pub(crate) async fn recover(&self, target: &[&str]) -> Result<(Postgres, Duration)> {
        let root = tempfile::tempdir()?;
        let data = root.path().join("data");
        let started = Instant::now();
        let mut args = vec![
            "restore",
            "acme/shop",
            "--to",
            data.to_str().expect("utf-8"),
        ];
        args.extend_from_slice(target);
        let (ok, said) = self.vaultline(&self.recovery_config, &args)?;
        anyhow::ensure!(ok, "restore {target:?}: {said}");
        assert!(said.contains("pg_ctl -D"), "it says how to start: {said}");
        give_to_postgres(root.path())?;
        let pg = Postgres::start_on(root, &data)?;
        let server = &pg;
        eventually(Duration::from_secs(120), "recovery to end", || async move {
            server
                .psql("postgres", "SELECT pg_is_in_recovery()")
                .is_ok_and(|r| r.trim() == "f")
        })
        .await
        .with_context(|| format!("restored server log: {}", pg.log()))?;
        Ok((pg, started.elapsed()))
    }
}

/// Rows per batch in `pg`'s orders table.
pub(crate) fn batches(pg: &Postgres) -> Result<Vec<(i32, i64)>> {
    pg.psql(
        "postgres",
        "SELECT batch, count(*) FROM orders GROUP BY batch ORDER BY batch",
    )?
    .lines()
    .filter(|l| !l.is_empty())
    .map(|line| {
        let (batch, count) = line.split_once('|').context("batch|count")?;
        Ok((batch.parse()?, count.parse()?))
    })
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_base_and_its_archived_wal_recover_to_a_time_and_to_the_latest() -> Result<()> {
    let cluster = Archiving::start("0").await?;
    let env = &cluster.env;
    let node = env.node().await?;
    env.cli(&["backup", "acme/shop", "--wait", "--timeout", "300"])
        .await?;
    let base = env.wait_final_of("shop", 1).await?;
    assert_verified(&base);

    cluster.insert(1, 20_000)?;
    let t = cluster
        .pg
        .psql(
            "postgres",
            "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
        )?
        .trim()
        .to_owned();
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.insert(2, 20_000)?;
    let pushed = Instant::now();
    let last = cluster.switch_and_archive().await?;
    eprintln!(
        "switched segment {last} archived {:?} after the switch",
        pushed.elapsed()
    );

    let timeline = cluster.timeline().await?;
    assert_eq!(timeline["gaps"], serde_json::json!([]), "{timeline:#}");
    assert_eq!(timeline["bases"].as_array().map(Vec::len), Some(1));
    assert_eq!(timeline["bases"][0]["snapshot"], base.id.as_str());
    assert!(
        timeline["last_segment"].as_str() >= Some(last.as_str()),
        "{timeline:#}"
    );
    let human = env.cli_output(&["pitr", "timeline", "acme/shop"]).await?;
    assert!(
        human.contains("gaps: none") && human.contains("recoverable from"),
        "{human}"
    );

    // To T: batch 1, not batch 2.
    let (at_t, took) = cluster.recover(&["--pitr", &t]).await?;
    eprintln!("PITR to {t}: restore and recovery took {took:?}");
    assert_eq!(batches(&at_t)?, vec![(1, 20_000)]);
    drop(at_t);
    // To the latest: both.
    let (latest, took) = cluster.recover(&["--pitr", "latest"]).await?;
    eprintln!("PITR to latest: restore and recovery took {took:?}");
    assert_eq!(batches(&latest)?, vec![(1, 20_000), (2, 20_000)]);
    drop(latest);

    // The PITR drill: a random point of the window, recovered by a real
    // PostgreSQL run as the postgres user (root is refused in words).
    let (ok, said) = cluster.vaultline(&cluster.recovery_config, &["drill", "acme/shop"])?;
    assert!(!ok && said.contains("refuses to run as root"), "{said}");
    if vaultline_testkit::as_root() {
        let out = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(&cluster.bin)
            .arg("--config")
            .arg(&cluster.recovery_config)
            .args(["drill", "acme/shop"])
            .current_dir(cluster.shared.path())
            .output()?;
        let said = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        eprintln!("{said}");
        assert!(out.status.success() && said.contains("PASSED"), "{said}");
        let outcome: String = env
            .sql()
            .await?
            .query_one(
                "SELECT outcome FROM drills WHERE tenant = 'acme' AND source = 'shop' ORDER BY started_at DESC LIMIT 1",
                &[],
            )
            .await?
            .get(0);
        assert_eq!(outcome, "passed");
    }

    // A target past the archive is refused before anything is written.
    let future = "2999-01-01T00:00:00Z";
    let (ok, said) = cluster.vaultline(
        &cluster.recovery_config,
        &[
            "restore",
            "acme/shop",
            "--pitr",
            future,
            "--to",
            "/nonexistent/x",
        ],
    )?;
    assert!(!ok && said.contains("not archived"), "{said}");
    // So is one before the first base.
    let (ok, said) = cluster.vaultline(
        &cluster.recovery_config,
        &[
            "restore",
            "acme/shop",
            "--pitr",
            "2001-01-01T00:00:00Z",
            "--to",
            "/nonexistent/x",
        ],
    )?;
    assert!(
        !ok && said.contains("before the end of the earliest base"),
        "{said}"
    );

    // The same file pushed again is fine; other bytes under its name are refused.
    let again = cluster.shared.path().join("again");
    std::fs::create_dir(&again)?;
    give_to_postgres(&again)?;
    let copy = again.join(&last);
    let (ok, said) = cluster.fetch(&last, &copy)?;
    assert!(ok, "{said}");
    let (ok, said) = cluster.push(&copy, "shop")?;
    assert!(ok, "the same bytes again: {said}");
    let mut bytes = std::fs::read(&copy)?;
    bytes[100] ^= 0xff;
    std::fs::write(&copy, &bytes)?;
    let (ok, said) = cluster.push(&copy, "shop")?;
    assert!(
        !ok && said.contains("REFUSED") && said.contains("nothing was replaced"),
        "{said}"
    );
    // Push latency: the same real segment under five new names into a
    // source of its own (sealing, the put to Garage, the record).
    cluster.add_source("latency").await?;
    let (ok, said) = cluster.fetch(&last, &copy)?;
    assert!(ok, "{said}");
    let mut took = Vec::new();
    for n in 1..=5 {
        let named = again.join(format!("0000000100000000000000A{n}"));
        std::fs::copy(&copy, &named)?;
        let started = Instant::now();
        let (ok, said) = cluster.push(&named, "latency")?;
        took.push(started.elapsed());
        assert!(ok, "{said}");
    }
    took.sort();
    eprintln!("wal-push of a 16 MiB segment (process start to exit): {took:?}");

    // A name that is not archived: exit 1, the normal end of recovery.
    let out = Command::new(&cluster.bin)
        .arg("--config")
        .arg(&cluster.recovery_config)
        .args([
            "wal-fetch",
            "0000000100000000000000FF",
            "/tmp/x",
            "--source",
            "acme/shop",
        ])
        .output()?;
    assert_eq!(out.status.code(), Some(1));

    // The archiver's login reads no wrapped identity and writes no snapshot.
    let mut archiver: tokio_postgres::Config = env._pg.url().parse()?;
    archiver.user("vaultline_archiver");
    let (client, connection) = archiver.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    for sql in [
        "SELECT wrapped_identity FROM tenant_keys",
        "SELECT chunk_key FROM tenant_keys",
        "SELECT * FROM credentials",
        "UPDATE snapshots SET status = 'failed'",
        "DELETE FROM wal_files",
    ] {
        let err = client.batch_execute(sql).await.expect_err(sql);
        assert!(
            err.to_string().contains("permission denied") || format!("{err:?}").contains("42501"),
            "{sql}: {err:?}"
        );
    }
    drop(node);
    Ok(())
}
