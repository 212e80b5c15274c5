//! The per-stage binaries, each its own process as on separate hosts: they
//! share only NATS (with staging in its object store), the catalog and the
//! S3 repository, each with a local scratch directory of its own. A backup
//! flows through all of them, each answers /metrics and /health, and each
//! exits cleanly on SIGTERM. Then each stage is killed (SIGKILL) in the
//! middle of a snapshot and restarted: the snapshot still ends verified and
//! restores byte-identical.

use crate::harness::{Env, assert_verified, binary};
use anyhow::{Context, Result};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use vaultline_testkit::{free_port, http_get, wait_for_status};
use vaultline_types::StageName;

pub(crate) struct Stages(pub(crate) Vec<(StageName, Child, std::net::SocketAddr)>);

/// Starts `vaultline-<stage>` as if on a host of its own: its own scratch
/// directory, staging through NATS, short ack waits so a killed process's
/// messages come back quickly.
fn start_stage(env: &Env, stage: StageName) -> Result<(Child, std::net::SocketAddr)> {
    start_in(env, stage, &format!("scratch-{stage}"), &[])
}

/// Replica `replica` of `stage`, with a scratch directory of its own and
/// `vars` for its configuration besides the test's.
pub(crate) fn start_replica(
    env: &Env,
    stage: StageName,
    replica: usize,
    vars: &[(&str, &str)],
) -> Result<(Child, std::net::SocketAddr)> {
    start_in(env, stage, &format!("scratch-{stage}-{replica}"), vars)
}

fn start_in(
    env: &Env,
    stage: StageName,
    scratch: &str,
    vars: &[(&str, &str)],
) -> Result<(Child, std::net::SocketAddr)> {
    let admin: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse()?;
    let mut command = Command::new(binary(&format!("vaultline-{stage}"))?);
    command
        .env("VAULTLINE_CONFIG", &env.config_file)
        .env("VAULTLINE_ADMIN__LISTEN", admin.to_string())
        .env("VAULTLINE_STAGING__PATH", env.path(scratch))
        .stdout(Stdio::null())
        // Kept with the test's files, for a failure to be read.
        .stderr(std::fs::File::create(env.path(&format!("{scratch}.log")))?);
    command.envs(consumer_settings());
    command.envs(vars.iter().copied());
    Ok((command.spawn()?, admin))
}

/// Production's delivery budget (the test config's 3 is for fast failure
/// tests): a killed handler's message costs one delivery. Short ack waits.
fn consumer_settings() -> Vec<(String, String)> {
    let mut vars = vec![(
        "VAULTLINE_STAGING__BACKEND".to_owned(),
        "jetstream".to_owned(),
    )];
    for consumer in ["EXTRACTOR", "PACKAGER", "UPLOADER", "VERIFIER"] {
        vars.push((
            format!("VAULTLINE_STAGES__{consumer}__ACK_WAIT"),
            "3s".into(),
        ));
        vars.push((
            format!("VAULTLINE_STAGES__{consumer}__MAX_DELIVER"),
            "6".into(),
        ));
    }
    vars
}

/// `vaultline migrate` with those settings: the consumers take them, and the
/// staging bucket is created, before any stage starts.
pub(crate) async fn migrate(env: &Env) -> Result<()> {
    let vars = consumer_settings();
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let (ok, out, err) = env.run_cli(&["migrate"], &vars).await?;
    anyhow::ensure!(ok, "vaultline migrate failed: {err}");
    anyhow::ensure!(out.contains("object store VAULTLINE_STAGING"), "{out}");
    Ok(())
}

/// Names of the items in the shared staging bucket.
pub(crate) async fn staged_objects(env: &Env) -> Result<Vec<String>> {
    use futures::TryStreamExt;
    let js = async_nats::jetstream::new(env.nats_as("admin").await?);
    let store = js.get_object_store(vaultline_bus::STAGING_BUCKET).await?;
    let names = store
        .list()
        .await?
        .map_ok(|info| info.name)
        .try_collect()
        .await?;
    Ok(names)
}

impl Drop for Stages {
    fn drop(&mut self) {
        for (_, child, _) in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_stage_runs_as_its_own_process() -> Result<()> {
    let env = Env::with_s3().await?;
    let tree = env.path("tree");
    crate::pipeline::build_tree(&tree)?;
    env.tenant_with_source(&tree).await?;
    env.cli(&["schedule", "add", "acme/docs", "--every", "1day"])
        .await?;
    migrate(&env).await?;
    let mut stages = Stages(Vec::new());
    for stage in StageName::ALL {
        let (child, admin) = start_stage(&env, stage)?;
        stages.0.push((stage, child, admin));
    }
    for (_, _, admin) in &stages.0 {
        wait_for_status(*admin, "/health/ready", 200, Duration::from_secs(30)).await?;
    }

    env.cli(&["backup", "acme/docs", "--wait", "--timeout", "120"])
        .await?;
    let row = env.wait_final(1).await?;
    assert_verified(&row);
    let restored = env.restore_to(&row.id, "restored").await?;
    assert!(crate::pipeline::snapshot_of(&tree)? == crate::pipeline::snapshot_of(&restored)?);
    // Nothing of the snapshot is left in the shared bucket or any scratch directory.
    assert_eq!(staged_objects(&env).await?, Vec::<String>::new());
    for stage in StageName::ALL {
        let scratch = env.path(&format!("scratch-{stage}"));
        let files: Vec<_> = walkdir::WalkDir::new(&scratch)
            .into_iter()
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_file())
            .map(|e| e.path().display().to_string())
            // The extractor's files cache stays on purpose.
            .filter(|p| !p.contains("/.cache/files/"))
            .collect();
        assert!(files.is_empty(), "{stage} left {files:?}");
    }
    for (stage, _, admin) in &stages.0 {
        let metrics = http_get(*admin, "/metrics").await?.1;
        if *stage != StageName::Scheduler {
            let line =
                format!("vaultline_stage_messages_total{{stage=\"{stage}\",outcome=\"done\"}}");
            assert!(
                metrics.contains(&line),
                "{stage} reported no handled messages:\n{metrics}"
            );
        }
    }

    // SIGTERM: every process finishes its work in flight and exits 0.
    for (stage, child, _) in &mut stages.0 {
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()?;
        anyhow::ensure!(status.success(), "cannot signal {stage}");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let exit = loop {
            if let Some(exit) = child.try_wait()? {
                break exit;
            }
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "{stage} ignored SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(exit.success(), "{stage} exited with {exit}");
    }
    Ok(())
}

/// When to pull the trigger on a stage, judged from the catalog: the
/// snapshot's status, packs stored so far, and batches in all (once known).
fn mid_snapshot(victim: StageName, status: &str, packs_stored: i64, batches: Option<i32>) -> bool {
    let more_to_come = batches.is_none_or(|total| packs_stored < i64::from(total));
    match victim {
        // Reading the source.
        StageName::Extractor => status == "extracting",
        // Some packs made and stored, more to come.
        StageName::Packager | StageName::Uploader => {
            (status == "extracting" || status == "extracted") && packs_stored >= 1 && more_to_come
        }
        // Stored, being read back (level 2 takes a while).
        StageName::Verifier => status == "stored",
        _ => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stage_killed_mid_snapshot_is_resumed_and_the_snapshot_restores_byte_identical()
-> Result<()> {
    let env = Env::with_s3().await?;
    let tree = env.path("tree");
    std::fs::create_dir_all(tree.join("docs"))?;
    for i in 0..40 {
        std::fs::write(
            tree.join(format!("docs/note-{i}.txt")),
            format!("note {i}\n").repeat(200),
        )?;
    }
    env.cli(&["tenant", "create", "acme"]).await?;
    env.cli(&[
        "source",
        "add",
        "acme/docs",
        "--path",
        tree.to_str().unwrap(),
        "--verify",
        "full",
    ])
    .await?;
    migrate(&env).await?;
    let mut stages = Stages(Vec::new());
    for stage in StageName::ALL {
        if stage == StageName::Scheduler {
            continue;
        }
        let (child, admin) = start_stage(&env, stage)?;
        stages.0.push((stage, child, admin));
    }
    for (_, _, admin) in &stages.0 {
        wait_for_status(*admin, "/health/ready", 200, Duration::from_secs(30)).await?;
    }
    let sql = env.sql().await?;
    let victims = [
        StageName::Extractor,
        StageName::Packager,
        StageName::Uploader,
        StageName::Verifier,
    ];
    let mut snapshots = 0;
    for (round, victim) in victims.into_iter().enumerate() {
        // On a loaded machine a snapshot can outrun the watcher; then the
        // round is tried again with new data (at most three times).
        let mut seen = None;
        for attempt in 0..3u64 {
            // New data every time, so every stage has real work.
            std::fs::write(
                tree.join("big.bin"),
                crate::harness::mixed_bytes(160 << 20, 100 + 10 * round as u64 + attempt),
            )?;
            env.cli(&["backup", "acme/docs"]).await?;
            snapshots += 1;
            seen = watch_and_kill(&env, &sql, &mut stages, victim, snapshots).await?;
            if seen.is_some() {
                break;
            }
            env.wait_final(snapshots as usize).await?;
        }
        let seen = seen.with_context(|| format!("never caught {victim} mid-snapshot"))?;
        let row = env.wait_final(snapshots as usize).await?;
        assert_verified(&row);
        let restored = env
            .restore_to(&row.id, &format!("restored-{round}"))
            .await?;
        assert!(
            crate::pipeline::snapshot_of(&tree)? == crate::pipeline::snapshot_of(&restored)?,
            "round {round}: killing {victim} while {seen} changed what restores"
        );
        std::fs::remove_dir_all(&restored)?;
    }
    // Every attempt's leftovers were cleaned up with its snapshot.
    assert_eq!(staged_objects(&env).await?, Vec::<String>::new());
    Ok(())
}

/// Watches snapshot number `nth` and SIGKILLs `victim` mid-work, then starts
/// it again. Returns the status it was killed in, or `None` when the
/// snapshot ended first.
async fn watch_and_kill(
    env: &Env,
    sql: &tokio_postgres::Client,
    stages: &mut Stages,
    victim: StageName,
    nth: i64,
) -> Result<Option<String>> {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let status = loop {
        let (count, newest) = crate::harness::snapshot_progress(sql).await?;
        if let Some((status, batches, packs)) = newest.filter(|_| count == nth) {
            if mid_snapshot(victim, &status, packs, batches) {
                break status;
            }
            if matches!(status.as_str(), "verified" | "failed" | "corrupt") {
                return Ok(None);
            }
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "snapshot {nth} never got anywhere"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let slot = stages
        .0
        .iter_mut()
        .find(|(stage, _, _)| *stage == victim)
        .expect("every victim runs");
    slot.1.kill()?; // SIGKILL: no chance to finish or clean up
    slot.1.wait()?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (child, admin) = start_stage(env, victim)?;
    slot.1 = child;
    slot.2 = admin;
    Ok(Some(status))
}
