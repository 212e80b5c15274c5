//! Point-in-time recovery when things go wrong or go away: pushes killed
//! mid-push and a killed `serve` lose no WAL, and retention deletes only
//! the WAL no kept base backup needs.

use crate::fixtures::binary;
use crate::harness::{Env, assert_verified};
use crate::pitr::{Archiving, batches};
use anyhow::{Context, Result};
use std::process::Command;
use std::time::{Duration, Instant};
use time::OffsetDateTime;
use vaultline_types::{Name, StageName};
use vaultline_wal::{Lsn, WalFile};

/// `vaultline serve` as a process of its own, to be killed.
fn serve(env: &Env) -> Result<std::process::Child> {
    Ok(Command::new(binary("vaultline")?)
        .arg("--config")
        .arg(&env.config_file)
        .arg("serve")
        .env(
            "VAULTLINE_ADMIN__LISTEN",
            format!("127.0.0.1:{}", vaultline_testkit::free_port()),
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?)
}

/// Seconds since the newest archived segment was closed: the data a lost
/// cluster would take with it.
async fn rpo_seconds(client: &tokio_postgres::Client) -> Result<f64> {
    let row = client
        .query_one(
            "SELECT coalesce(extract(epoch FROM now() - max(closed_at))::float8, -1) FROM wal_files WHERE segment IS NOT NULL",
            &[],
        )
        .await?;
    Ok(row.get(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_pushes_and_a_killed_serve_lose_no_wal() -> Result<()> {
    let cluster = Archiving::start("2s").await?;
    let env = &cluster.env;
    let mut server = serve(env)?;
    let catalog = env.sql().await?;

    // Steady writes; segments close at least every 2 s (archive_timeout).
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (stop, socket, port) = (
            stop.clone(),
            cluster.pg.dir().context("private")?.to_path_buf(),
            cluster.pg.port,
        );
        std::thread::spawn(move || -> Result<i32> {
            let mut batch = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                batch += 1;
                let status = Command::new("psql")
                    .arg("-h")
                    .arg(&socket)
                    .args(["-p", &port.to_string(), "-U", "postgres", "-d", "postgres", "-qX"])
                    .args(["-v", "ON_ERROR_STOP=1", "-c"])
                    .arg(format!(
                        "INSERT INTO orders SELECT {batch}, n, repeat(md5(n::text), 8) FROM generate_series(1, 2000) n"
                    ))
                    .status()?;
                anyhow::ensure!(status.success(), "insert {batch}");
                std::thread::sleep(Duration::from_millis(50));
            }
            Ok(batch)
        })
    };
    // The RPO while nothing goes wrong.
    let mut rpo = Vec::new();
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        rpo.push(rpo_seconds(&catalog).await?);
    }
    rpo.sort_by(f64::total_cmp);
    eprintln!("RPO under steady writes with archive_timeout = 2s, sampled each second: {rpo:?}");
    assert!(rpo[rpo.len() - 1] < 30.0, "{rpo:?}");

    // Now kill wal-push mid-push, again and again, and serve mid-backup.
    let killer = {
        // The postmaster's own arguments hold archive_command: only a
        // process that *is* this test's vaultline binary is killed.
        let (stop, pattern) = (stop.clone(), format!("^{} ", cluster.bin.display()));
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline && !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = Command::new("pkill")
                    .args(["-KILL", "-f", &pattern])
                    .status();
                std::thread::sleep(Duration::from_millis(120));
            }
        })
    };
    env.cli(&["backup", "acme/shop"]).await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.kill()?;
    server.wait()?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut server = serve(env)?;
    killer
        .join()
        .map_err(|_| anyhow::anyhow!("killer panicked"))?;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let batches_written = writer
        .join()
        .map_err(|_| anyhow::anyhow!("writer panicked"))??;
    let base = env.wait_final_of("shop", 1).await?;
    assert_verified(&base);
    cluster.switch_and_archive().await?;
    // Through sh, a killed push is exit code 137; PostgreSQL keeps the
    // segment and tries it again.
    let log = cluster.pg.log();
    let killed = log.matches("failed with exit code 137").count()
        + log.matches("terminated by signal 9").count();
    assert!(
        killed > 0,
        "no push was killed, so nothing was retried: {}",
        cluster.log_tail()
    );
    eprintln!("pushes killed and retried: {killed}");

    let timeline = cluster.timeline().await?;
    assert_eq!(timeline["gaps"], serde_json::json!([]), "{timeline:#}");
    let want = batches(&cluster.pg)?;
    assert_eq!(want.len(), batches_written as usize);
    let (latest, took) = cluster.recover(&["--pitr", "latest"]).await?;
    eprintln!(
        "PITR to latest after {} batches and killed pushes: {took:?}",
        want.len()
    );
    assert_eq!(batches(&latest)?, want);
    server.kill()?;
    server.wait()?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forgetting_the_first_base_deletes_only_the_wal_before_the_second() -> Result<()> {
    let cluster = Archiving::start("0").await?;
    let env = &cluster.env;
    let node = env.node().await?;
    env.cli(&["backup", "acme/shop", "--wait", "--timeout", "300"])
        .await?;
    let first = env.wait_final_of("shop", 1).await?;
    assert_verified(&first);
    cluster.insert(1, 20_000)?;
    cluster.switch_and_archive().await?;
    env.cli(&["backup", "acme/shop", "--wait", "--timeout", "300"])
        .await?;
    let second = env.wait_final_of("shop", 2).await?;
    assert_verified(&second);
    cluster.insert(2, 20_000)?;
    cluster.switch_and_archive().await?;

    let (acme, shop) = (Name::new("acme")?, Name::new("shop")?);
    let bases = env.catalog.base_backups(&acme, &shop).await?;
    let second_base = bases
        .iter()
        .find(|b| b.snapshot == second.id.as_str())
        .context("the second base is recorded")?;
    let cut = WalFile::segment_of(
        second_base.timeline as u32,
        Lsn(second_base.start_lsn as u64),
        second_base.segment_size as u64,
    )
    .to_string();
    let before = env.catalog.wal_files(&acme, &shop).await?;
    let (doomed, kept): (Vec<_>, Vec<_>) = before
        .iter()
        .partition(|f| f.name[..24] < *cut && !f.name.ends_with(".history"));
    assert!(!doomed.is_empty() && !kept.is_empty(), "{before:#?}");

    env.cli(&["retention", "set", "acme/shop", "--keep-last", "1"])
        .await?;
    let mut retention = vaultline_runtime::Node::start(env.config(), "test").await?;
    let deps = retention.deps_for(StageName::Retention).await?;
    vaultline_retention::pass(&deps, OffsetDateTime::now_utc()).await?;

    let after = env.catalog.wal_files(&acme, &shop).await?;
    let names = |files: &[&vaultline_catalog::WalFileRow]| -> Vec<String> {
        files.iter().map(|f| f.name.clone()).collect()
    };
    assert_eq!(
        after.iter().map(|f| f.name.clone()).collect::<Vec<_>>(),
        names(&kept),
        "only the WAL before {cut} goes"
    );
    let repository =
        vaultline_runtime::deps::open_repository(&env.config().repository, None).await?;
    for file in &doomed {
        assert_eq!(repository.size(&file.object).await?, None, "{}", file.name);
    }
    for file in &kept {
        assert!(
            repository.size(&file.object).await?.is_some(),
            "{}",
            file.name
        );
    }
    let timeline = cluster.timeline().await?;
    assert_eq!(timeline["gaps"], serde_json::json!([]), "{timeline:#}");
    assert_eq!(
        timeline["bases"].as_array().map(Vec::len),
        Some(1),
        "{timeline:#}"
    );
    assert_eq!(timeline["bases"][0]["snapshot"], second.id.as_str());

    // The kept base still recovers to the end.
    let (latest, _) = cluster.recover(&["--pitr", "latest"]).await?;
    assert_eq!(batches(&latest)?, vec![(1, 20_000), (2, 20_000)]);
    drop((node, retention));
    Ok(())
}
