//! The auditor's observer: each stage's backlog as KEDA reads it, the
//! catalog's per-source and per-tenant figures, and the reaper that fails a
//! snapshot stuck in flight past its deadline.

use crate::harness::Env;
use anyhow::{Context, Result};
use prometheus_parse::{Scrape, Value};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use vaultline_types::{Name, SnapshotStatus, StageName};

/// A parsed `/metrics` page.
pub(crate) struct Metrics(Scrape);

impl Metrics {
    pub(crate) async fn scrape(admin: SocketAddr) -> Result<Metrics> {
        let text = vaultline_testkit::http_get(admin, "/metrics").await?.1;
        let lines = text.lines().map(|l| Ok(l.to_owned()));
        Ok(Metrics(Scrape::parse(lines)?))
    }

    /// The value of `name` with these labels (a histogram's: its count).
    pub(crate) fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.0
            .samples
            .iter()
            .filter(|s| s.metric == name)
            .find(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| match &s.value {
                Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
                Value::Histogram(buckets) => buckets.last().map_or(0.0, |b| b.count),
                Value::Summary(_) => f64::NAN,
            })
    }
}

/// Scrapes until `ready` holds (the observer exports every second in tests).
pub(crate) async fn wait_metrics(
    admin: SocketAddr,
    what: &str,
    ready: impl Fn(&Metrics) -> bool,
) -> Result<Metrics> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let metrics = Metrics::scrape(admin).await?;
        if ready(&metrics) {
            return Ok(metrics);
        }
        anyhow::ensure!(Instant::now() < deadline, "within 60s, no {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_auditor_exports_backlog_and_fleet_figures_and_reaps_a_stuck_snapshot() -> Result<()> {
    let (env, tree) = Env::with_small_source().await?;
    env.cli(&[
        "source",
        "add",
        "acme/dying",
        "--type",
        "command",
        "--command",
        "echo 'disk on fire' >&2; exit 3",
    ])
    .await?;
    env.cli(&[
        "source",
        "add",
        "acme/stuck",
        "--path",
        tree.to_str().unwrap(),
    ])
    .await?;
    env.cli(&["source", "set-deadline", "acme/stuck", "1h"])
        .await?;
    let refused = env
        .cli(&["source", "set-deadline", "acme/stuck", "soon"])
        .await;
    assert!(format!("{:#}", refused.unwrap_err()).contains("is not a duration"));
    // Once a year: never due during the test, and its interval is a year.
    env.cli(&["schedule", "add", "acme/docs", "--cron", "0 3 1 1 *"])
        .await?;

    // Two triggers and no extractor yet: the extractor's backlog is both,
    // as the auditor (and KEDA) read it, and its oldest has waited.
    env.cli(&["backup", "acme/docs"]).await?;
    env.cli(&["backup", "acme/dying"]).await?;
    let client = env.nats_as("auditor").await?;
    let bus = vaultline_bus::Bus {
        js: async_nats::jetstream::new(client.clone()),
        client,
    };
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let backlog = bus.backlog(StageName::Extractor).await?;
    assert_eq!(backlog.lag, 2, "{backlog:?}");
    assert!(backlog.oldest >= Duration::from_secs(1), "{backlog:?}");
    assert_eq!(bus.backlog(StageName::Verifier).await?.lag, 0);

    // A snapshot that hung mid-extraction two hours ago; its source allows one.
    let sql = env.sql().await?;
    sql.batch_execute(
        "INSERT INTO snapshots (tenant, id, source, status, trigger, key_id, started_at)
         SELECT 'acme', '20261201T000000Z-00000001', 'stuck', 'extracting', 'manual', key_id,
                now() - interval '2 hours'
         FROM tenant_keys WHERE tenant = 'acme' AND active",
    )
    .await?;

    let node = env.node().await?;
    env.wait_final_of("docs", 1).await?;
    let dying = env.wait_final_of("dying", 1).await?;
    assert_eq!(dying.status, SnapshotStatus::Failed);
    let acme = [("tenant", "acme")];
    let docs = [("tenant", "acme"), ("source", "docs")];
    let metrics = wait_metrics(node.admin, "settled figures", |m| {
        m.get(
            "vaultline_stage_consumer_lag_messages",
            &[("stage", "extractor")],
        ) == Some(0.0)
            && m.get("vaultline_snapshots_reaped_total", &acme) == Some(1.0)
            && m.get("vaultline_snapshots_in_flight", &acme) == Some(0.0)
            && m.get("vaultline_source_failure_streak", &[("source", "dying")]) == Some(1.0)
            && m.get("vaultline_source_last_success_timestamp_seconds", &docs)
                .is_some_and(|t| t > 0.0)
    })
    .await?;
    let get = |name: &str, labels: &[(&str, &str)]| {
        metrics
            .get(name, labels)
            .with_context(|| format!("no {name} {labels:?}"))
    };
    for stage in crate::harness::consumer_stages() {
        let labels = [("stage", stage.as_str())];
        get("vaultline_stage_consumer_lag_messages", &labels)?;
        get("vaultline_stage_oldest_pending_age_seconds", &labels)?;
    }
    let outcome = |source, outcome| [("source", source), ("outcome", outcome)];
    assert_eq!(
        get("vaultline_backups_total", &outcome("docs", "succeeded"))?,
        1.0
    );
    assert_eq!(
        get("vaultline_backups_total", &outcome("dying", "failed"))?,
        1.0
    );
    assert_eq!(
        get("vaultline_backups_total", &outcome("stuck", "failed"))?,
        1.0
    );
    assert_eq!(get("vaultline_backup_duration_seconds", &docs)?, 1.0);
    assert_eq!(get("vaultline_source_last_backup_succeeded", &docs)?, 1.0);
    let dying_labels = [("source", "dying")];
    assert_eq!(
        get("vaultline_source_last_backup_succeeded", &dying_labels)?,
        0.0
    );
    assert_eq!(get("vaultline_source_failure_streak", &docs)?, 0.0);
    assert!(get("vaultline_last_verified_timestamp_seconds", &docs)? > 0.0);
    assert!(get("vaultline_source_last_backup_duration_seconds", &docs)? > 0.0);
    let year = get("vaultline_source_schedule_interval_seconds", &docs)?;
    assert!(
        (365.0 * 86_400.0..=366.0 * 86_400.0).contains(&year),
        "{year}"
    );
    assert_eq!(get("vaultline_source_drill_interval_seconds", &docs)?, 0.0);
    assert!(get("vaultline_repository_bytes", &acme)? > 0.0);
    assert!(get("vaultline_repository_dedup_ratio", &acme)? > 0.0);
    assert_eq!(
        get("vaultline_snapshot_oldest_in_flight_age_seconds", &acme)?,
        0.0
    );
    assert_eq!(get("vaultline_ready", &[])?, 1.0);
    assert_eq!(
        get("vaultline_dependency_up", &[("dependency", "catalog")])?,
        1.0
    );
    assert_eq!(get("vaultline_build_info", &[("stage", "auditor")])?, 1.0);
    let read = get("vaultline_source_read_bytes_total", &docs)?;
    assert!(read > 0.0, "{read}");

    // The reaped snapshot failed with why, and its failure is in the trail.
    let stuck = env
        .catalog
        .snapshots(Some(&Name::new("acme")?), Some(&Name::new("stuck")?))
        .await?;
    assert_eq!(stuck.len(), 1);
    assert_eq!(stuck[0].status, SnapshotStatus::Failed);
    let error = stuck[0].error.clone().unwrap_or_default();
    assert!(
        error.contains("still extracting after 2h") && error.contains("past its deadline of 1h"),
        "{error}"
    );
    let trail: i64 = sql
        .query_one(
            "SELECT count(*) FROM audit_events
             WHERE snapshot = '20261201T000000Z-00000001' AND kind = 'snapshot.failed'",
            &[],
        )
        .await?
        .get(0);
    assert_eq!(trail, 1);
    node.shutdown().await;
    Ok(())
}

/// Processes whose command line is `sleep 6173`.
fn sleepers() -> usize {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .filter(|cmdline| cmdline.as_slice() == b"sleep\x006173\x00")
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hung_source_program_is_killed_at_the_time_limit_and_its_snapshot_fails() -> Result<()> {
    let env = Env::new().await?;
    env.cli(&["tenant", "create", "acme"]).await?;
    env.cli(&[
        "source",
        "add",
        "acme/hung",
        "--type",
        "command",
        "--command",
        "echo started; sleep 6173; echo never",
    ])
    .await?;
    let mut config = env.config();
    let extractor = config.stages.entry("extractor".into()).or_default();
    extractor.handle_timeout = Some(Duration::from_secs(2));
    let node = vaultline::start_node(config, &vaultline::SERVED).await?;
    let started = Instant::now();
    env.cli(&["backup", "acme/hung"]).await?;
    let row = env.wait_final_of("hung", 1).await?;
    assert_eq!(row.status, SnapshotStatus::Failed);
    let error = row.error.clone().unwrap_or_default();
    assert!(error.contains("past its time limit of 2s"), "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    // The program and the sleep it started are gone, not left holding on.
    let deadline = Instant::now() + Duration::from_secs(5);
    while sleepers() > 0 {
        anyhow::ensure!(Instant::now() < deadline, "sleep 6173 outlived its message");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_stage_answers_nats_micro_ping_info_and_stats_with_its_counts() -> Result<()> {
    use futures::StreamExt;
    let (env, _tree) = Env::with_small_source().await?;
    let node = env.node().await?;
    env.cli(&["backup", "acme/docs", "--wait", "--timeout", "120"])
        .await?;
    let client = env.nats_as("operator").await?;

    // `nats micro ls`: every stage answers $SRV.PING.
    let inbox = client.new_inbox();
    let mut answers = client.subscribe(inbox.clone()).await?;
    client
        .publish_with_reply("$SRV.PING", inbox, bytes::Bytes::new())
        .await?;
    let mut names = std::collections::BTreeSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while let Ok(Some(pong)) = tokio::time::timeout_at(deadline, answers.next()).await {
        let pong: serde_json::Value = serde_json::from_slice(&pong.payload)?;
        assert_eq!(pong["type"], "io.nats.micro.v1.ping_response", "{pong}");
        names.insert(pong["name"].as_str().unwrap_or_default().to_owned());
    }
    let expected: std::collections::BTreeSet<String> = StageName::ALL
        .iter()
        .map(|s| format!("vaultline-{s}"))
        .collect();
    assert_eq!(names, expected);

    // INFO names the status endpoint; STATS and the endpoint carry the counts.
    let info = client
        .request("$SRV.INFO.vaultline-verifier", bytes::Bytes::new())
        .await?;
    let info: serde_json::Value = serde_json::from_slice(&info.payload)?;
    assert_eq!(
        info["endpoints"][0]["subject"], "vaultline_svc.verifier.status",
        "{info}"
    );
    let stats = client
        .request("$SRV.STATS.vaultline-extractor", bytes::Bytes::new())
        .await?;
    let stats: serde_json::Value = serde_json::from_slice(&stats.payload)?;
    let done = &stats["endpoints"][0]["data"]["messages"]["done"];
    assert!(done.as_u64().is_some_and(|n| n >= 1), "{stats}");
    let status = client
        .request("vaultline_svc.verifier.status", bytes::Bytes::new())
        .await?;
    let status: serde_json::Value = serde_json::from_slice(&status.payload)?;
    assert_eq!(status["stage"], "verifier");
    assert!(
        status["messages"]["done"].as_u64().is_some_and(|n| n >= 1),
        "{status}"
    );
    node.shutdown().await;
    Ok(())
}
