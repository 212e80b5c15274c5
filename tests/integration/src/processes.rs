//! The per-stage binaries, each its own process (as in a cluster): a backup
//! flows through all of them, each answers /metrics and /health, and each
//! exits cleanly on SIGTERM.

use crate::harness::{Env, assert_verified, binary};
use anyhow::Result;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use vaultline_testkit::{free_port, http_get, wait_for_status};
use vaultline_types::StageName;

struct Stages(Vec<(StageName, Child, std::net::SocketAddr)>);

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
    let (env, _tree) = Env::with_small_source().await?;
    env.cli(&["schedule", "add", "acme/docs", "--every", "1day"])
        .await?;
    let mut stages = Stages(Vec::new());
    for stage in StageName::ALL {
        let admin: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse()?;
        let child = Command::new(binary(&format!("vaultline-{stage}"))?)
            .env("VAULTLINE_CONFIG", &env.config_file)
            .env("VAULTLINE_ADMIN__LISTEN", admin.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        stages.0.push((stage, child, admin));
    }
    for (_, _, admin) in &stages.0 {
        wait_for_status(*admin, "/health/ready", 200, Duration::from_secs(30)).await?;
    }

    env.cli(&["backup", "acme/docs", "--wait", "--timeout", "120"])
        .await?;
    assert_verified(&env.wait_final(1).await?);
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
