//! The operations surface: /metrics by stage and outcome, readiness that
//! follows NATS going away and coming back.

use crate::harness::{Env, assert_verified};
use anyhow::Result;
use std::time::Duration;
use vaultline_testkit::{http_get, wait_for_status};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_report_every_stage_and_ready_follows_nats() -> Result<()> {
    let (mut env, _tree) = Env::with_small_source().await?;
    let node = env.node().await?;
    let admin = node.admin;
    assert_eq!(http_get(admin, "/health/live").await?.0, 200);
    assert_eq!(http_get(admin, "/health/ready").await?.0, 200);

    env.cli(&["backup", "acme/docs", "--wait", "--timeout", "120"])
        .await?;
    assert_verified(&env.wait_final(1).await?);
    // The auditor and retention see the last events just after `verified`.
    let every_stage_done = |body: &str| {
        // Every consuming stage (the scheduler publishes only when a schedule is due).
        vaultline::SERVED
            .iter()
            .filter(|s| **s != vaultline_types::StageName::Scheduler)
            .all(|stage| {
                body.lines().any(|l| {
                    l.starts_with("vaultline_stage_messages_total")
                        && l.contains(&format!("stage=\"{stage}\""))
                        && l.contains("outcome=\"done\"")
                })
            })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let body = loop {
        let body = http_get(admin, "/metrics").await?.1;
        if every_stage_done(&body) {
            break body;
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "not every stage reported done; /metrics was:\n{body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        body.contains("vaultline_stage_handle_duration_seconds_bucket"),
        "histograms are exported"
    );

    env.nats.stop();
    wait_for_status(admin, "/health/ready", 503, Duration::from_secs(20)).await?;
    let (_, why) = http_get(admin, "/health/dependencies").await?;
    assert!(why.contains("\"nats\":{\"error\""), "{why}");
    env.nats.restart()?;
    wait_for_status(admin, "/health/ready", 200, Duration::from_secs(30)).await?;
    // And the pipeline works after the outage.
    env.cli(&["backup", "acme/docs", "--wait", "--timeout", "120"])
        .await?;
    assert_verified(&env.wait_final(2).await?);
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_admin_port_can_want_a_token_and_checks_once_per_interval() -> Result<()> {
    let env = Env::with_s3().await?;
    let token_file = env.path("admin-token");
    std::fs::write(&token_file, "tok-3141\n")?;
    let mut config = env.config();
    config.admin.token_file = Some(token_file);
    config.admin.check_interval = Duration::from_secs(30);
    let node = vaultline::start_node(config, &vaultline::SERVED).await?;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::new();
    let get = |path: &str, token: Option<&str>| {
        let mut request = client.get(format!("http://{}{path}", node.admin));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        async move { anyhow::Ok(request.send().await?) }
    };
    // Probes stay open; what shows the insides wants the token.
    assert_eq!(get("/health/live", None).await?.status(), 200);
    assert_eq!(get("/health/ready", None).await?.status(), 200);
    for path in ["/metrics", "/health/dependencies"] {
        assert_eq!(get(path, None).await?.status(), 401, "{path}");
        assert_eq!(get(path, Some("wrong")).await?.status(), 401, "{path}");
        assert_eq!(get(path, Some("tok-3141")).await?.status(), 200, "{path}");
    }
    // Fifty probes within the interval: the bucket is asked at most once more.
    let head_buckets = || async {
        let text = get("/metrics", Some("tok-3141")).await?.text().await?;
        anyhow::Ok(
            text.lines()
                .filter(|l| {
                    l.starts_with("vaultline_s3_requests_total") && l.contains("HeadBucket")
                })
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>(),
        )
    };
    let before = head_buckets().await?;
    for _ in 0..25 {
        assert_eq!(get("/health/ready", None).await?.status(), 200);
        assert_eq!(
            get("/health/dependencies", Some("tok-3141"))
                .await?
                .status(),
            200
        );
    }
    let after = head_buckets().await?;
    assert!(
        after - before <= 1.0,
        "{before} → {after} HeadBucket requests"
    );
    node.shutdown().await;
    Ok(())
}

/// A stage whose consumer is missing says so on /health/ready, naming the
/// consumer and `vaultline migrate`, and is ready once migrate has run.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ready_names_a_missing_consumer_until_migrate_creates_it() -> Result<()> {
    let (env, _tree) = Env::with_small_source().await?;
    let admin = async_nats::jetstream::new(env.nats_as("admin").await?);
    admin
        .get_stream("VAULTLINE")
        .await?
        .delete_consumer("packager")
        .await?;
    let node = env.node().await?;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let body = loop {
        let (status, body) = http_get(node.admin, "/health/ready").await?;
        if status == 503 && body.contains("packager") {
            break body;
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "ready never named the missing consumer: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(body.contains("vaultline migrate"), "{body}");

    let (ok, out, err) = env.run_cli(&["migrate"], &[]).await?;
    assert!(ok, "migrate failed: {err}");
    assert!(out.contains("consumer packager"), "{out}");
    wait_for_status(node.admin, "/health/ready", 200, Duration::from_secs(20)).await?;
    env.cli(&["backup", "acme/docs", "--wait", "--timeout", "120"])
        .await?;
    assert_verified(&env.wait_final(1).await?);
    node.shutdown().await;
    Ok(())
}
