//! A restore into a live application: a small HTTP application here
//! implements PickDriver Vault's internal endpoints with a token check, and
//! `restore --into … --app …` must call them around a safety snapshot, the
//! restore and its checks, and always end with maintenance off.

use crate::harness::{Env, assert_verified};
use crate::sources::{PG_PASSWORD, add_postgres_source};
use anyhow::{Context, Result, ensure};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use time::OffsetDateTime;
use vaultline_testkit::Postgres;

/// Every step of a live restore that went well, in order.
pub(crate) const ALL_STEPS: [&str; 7] = [
    "info",
    "maintenance-on",
    "safety-snapshot",
    "restore",
    "counts",
    "smoke",
    "maintenance-off",
];

pub(crate) const TOKEN: &str = "internal-token-7f3a";

/// What the application saw: each call, when, and whether maintenance was on.
#[derive(Default)]
pub(crate) struct Seen {
    calls: Mutex<Vec<(String, OffsetDateTime, bool)>>,
    pub(crate) maintenance: AtomicBool,
    pub(crate) smoke_status: AtomicU16,
}

impl Seen {
    pub(crate) fn names(&self) -> Vec<String> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .map(|c| c.0.clone())
            .collect()
    }
    fn at(&self, name: &str) -> Option<(OffsetDateTime, bool)> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .find(|c| c.0 == name)
            .map(|c| (c.1, c.2))
    }
    pub(crate) fn clear(&self) {
        self.calls.lock().unwrap().clear();
    }
}

/// Answers `name` after a token check; records it.
fn handle(seen: &Seen, headers: &HeaderMap, name: &str) -> Result<(), StatusCode> {
    if headers
        .get("X-Internal-Token")
        .and_then(|v| v.to_str().ok())
        != Some(TOKEN)
    {
        seen.calls.lock().unwrap().push((
            format!("{name} refused"),
            OffsetDateTime::now_utc(),
            false,
        ));
        return Err(StatusCode::UNAUTHORIZED);
    }
    let on = seen.maintenance.load(Ordering::SeqCst);
    seen.calls
        .lock()
        .unwrap()
        .push((name.to_owned(), OffsetDateTime::now_utc(), on));
    Ok(())
}

/// Serves the application on a free loopback port; returns its internal API root.
pub(crate) async fn start_app(seen: Arc<Seen>) -> Result<String> {
    let app = axum::Router::new()
        .route(
            "/api/internal/system/info",
            get(
                |State(seen): State<Arc<Seen>>, headers: HeaderMap| async move {
                    handle(&seen, &headers, "info")?;
                    Ok::<_, StatusCode>(axum::Json(
                        serde_json::json!({"name": "pickdriver", "version": "2.4.1"}),
                    ))
                },
            ),
        )
        .route(
            "/api/internal/system/maintenance/enable",
            post(
                |State(seen): State<Arc<Seen>>, headers: HeaderMap| async move {
                    handle(&seen, &headers, "maintenance-on")?;
                    seen.maintenance.store(true, Ordering::SeqCst);
                    Ok::<_, StatusCode>(StatusCode::NO_CONTENT)
                },
            ),
        )
        .route(
            "/api/internal/system/maintenance/disable",
            post(
                |State(seen): State<Arc<Seen>>, headers: HeaderMap| async move {
                    handle(&seen, &headers, "maintenance-off")?;
                    seen.maintenance.store(false, Ordering::SeqCst);
                    Ok::<_, StatusCode>(StatusCode::NO_CONTENT)
                },
            ),
        )
        .route(
            "/api/internal/system/smoke",
            get(
                |State(seen): State<Arc<Seen>>, headers: HeaderMap| async move {
                    handle(&seen, &headers, "smoke")?;
                    let status = StatusCode::from_u16(seen.smoke_status.load(Ordering::SeqCst))
                        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                    Ok::<_, StatusCode>((status, "smoke"))
                },
            ),
        )
        .with_state(seen);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(format!("http://{addr}/api/internal"))
}

fn items(pg: &Postgres) -> Result<u64> {
    Ok(pg
        .psql("shop", "SELECT count(*) FROM items")?
        .trim()
        .parse()?)
}

/// `restore SNAPSHOT --into shop --app … --yes [extra]` with the binary.
async fn live_restore(
    env: &Env,
    pg: &Postgres,
    snapshot: &str,
    app: &str,
    token: &std::path::Path,
    extra: &[&str],
) -> Result<(bool, String)> {
    let url = pg.url_for("shop");
    let mut args = vec![
        "restore",
        snapshot,
        "--into",
        &url,
        "--app",
        app,
        "--app-token-file",
        token.to_str().expect("utf-8 path"),
        "--yes",
    ];
    args.extend_from_slice(extra);
    let (ok, _, stderr) = env.run_cli(&args, &[("PGPASSWORD", PG_PASSWORD)]).await?;
    Ok((ok, stderr))
}

/// The restores the auditor recorded: (outcome, step names, smoke status).
pub(crate) async fn recorded(
    env: &Env,
    count: usize,
) -> Result<Vec<(String, Vec<String>, Option<i64>)>> {
    let sql = env.sql().await?;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let rows = sql
            .query(
                "SELECT outcome, results FROM restores WHERE tenant = 'acme' ORDER BY started_at",
                &[],
            )
            .await?;
        if rows.len() >= count {
            return rows
                .iter()
                .map(|r| {
                    let results: serde_json::Value = r.get(1);
                    let steps = results["steps"]
                        .as_array()
                        .context("steps")?
                        .iter()
                        .map(|s| {
                            let ok = if s["ok"] == true { "" } else { " FAILED" };
                            format!("{}{ok}", s["step"].as_str().unwrap_or("?"))
                        })
                        .collect();
                    Ok((r.get(0), steps, results["smoke_status"].as_i64()))
                })
                .collect();
        }
        ensure!(
            std::time::Instant::now() < deadline,
            "{} restores recorded, not {count}",
            rows.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restore_into_a_live_application_keeps_it_in_maintenance_and_checks_it() -> Result<()> {
    let env = Env::new().await?;
    let pg = Postgres::start_with_password(PG_PASSWORD)?;
    pg.psql("postgres", "CREATE DATABASE shop")?;
    pg.psql(
        "shop",
        "CREATE TABLE items (id int PRIMARY KEY, name text);
         INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 5000) g;
         CREATE TABLE notes (id int, body text);
         INSERT INTO notes SELECT g, repeat('n', 50) FROM generate_series(1, 300) g;",
    )?;
    env.cli(&["tenant", "create", "acme"]).await?;
    add_postgres_source(&env, &pg, "shop", &[]).await?;
    let node = env.node().await?;
    env.cli(&["backup", "acme/shop", "--wait", "--timeout", "300"])
        .await?;
    let snapshot = env.wait_final_of("shop", 1).await?;
    assert_verified(&snapshot);
    let id = snapshot.id.as_str();

    let seen = Arc::new(Seen::default());
    seen.smoke_status.store(200, Ordering::SeqCst);
    let app = start_app(seen.clone()).await?;
    let token = env.path("app-token");
    std::fs::write(&token, format!("{TOKEN}\n"))?;

    // A restore that goes well: the database holds the snapshot's rows again.
    pg.psql(
        "shop",
        "INSERT INTO items SELECT g, 'new' FROM generate_series(5001, 6000) g; DELETE FROM notes",
    )?;
    let (ok, stderr) = live_restore(&env, &pg, id, &app, &token, &[]).await?;
    ensure!(ok, "the live restore failed: {stderr}");
    assert_eq!(items(&pg)?, 5000);
    assert_eq!(
        seen.names(),
        ["info", "maintenance-on", "smoke", "maintenance-off"]
    );
    assert!(!seen.maintenance.load(Ordering::SeqCst));
    let (_, on_at_smoke) = seen.at("smoke").context("smoke")?;
    assert!(
        on_at_smoke,
        "smoke ran while the application was in maintenance"
    );
    // The safety snapshot went through the pipeline between maintenance on
    // and the smoke check, labelled with the version it was taken of, and
    // holds the database as it was (6000 items, no notes).
    let safety = env.wait_final_of("shop", 2).await?;
    assert_verified(&safety);
    ensure!(
        stderr.contains(&format!("safety snapshot {}", safety.id)),
        "{stderr}"
    );
    assert_eq!(safety.trigger, "safety");
    assert_eq!(
        safety.labels.get("app_version").map(String::as_str),
        Some("2.4.1")
    );
    let (enabled, _) = seen.at("maintenance-on").context("enable")?;
    let (smoked, _) = seen.at("smoke").context("smoke")?;
    ensure!(
        enabled < safety.started_at,
        "the safety snapshot began after maintenance was on"
    );
    ensure!(
        safety.finished_at.is_some_and(|f| f < smoked),
        "and was verified before the smoke check"
    );
    let tables: serde_json::Value = env
        .sql()
        .await?
        .query_one(
            "SELECT tables FROM snapshots WHERE id = $1",
            &[&safety.id.as_str()],
        )
        .await?
        .get(0);
    ensure!(tables.to_string().contains("6000"), "{tables}");
    let restores = recorded(&env, 1).await?;
    assert_eq!(restores[0].0, "succeeded");
    assert_eq!(restores[0].1, ALL_STEPS);
    assert_eq!(restores[0].2, Some(200));
    let history: i64 = env
        .sql()
        .await?
        .query_one(
            "SELECT count(*) FROM executions WHERE trigger = 'restore' AND status = 'succeeded'",
            &[],
        )
        .await?
        .get(0);
    assert_eq!(history, 1);

    // Smoke answers 500: the command fails, and maintenance is still switched off.
    seen.clear();
    seen.smoke_status.store(500, Ordering::SeqCst);
    pg.psql(
        "shop",
        "INSERT INTO items SELECT g, 'later' FROM generate_series(5001, 7000) g",
    )?;
    let (ok, stderr) = live_restore(&env, &pg, id, &app, &token, &[]).await?;
    ensure!(
        !ok && stderr.contains("smoke check answered 500"),
        "{stderr}"
    );
    assert_eq!(
        seen.names().last().map(String::as_str),
        Some("maintenance-off")
    );
    assert!(!seen.maintenance.load(Ordering::SeqCst));
    assert_eq!(
        items(&pg)?,
        5000,
        "without --rollback-on-failure the restore stays"
    );

    // With --rollback-on-failure the database holds its pre-restore rows again.
    seen.clear();
    pg.psql(
        "shop",
        "INSERT INTO items SELECT g, 'kept' FROM generate_series(5001, 7500) g",
    )?;
    let (ok, stderr) =
        live_restore(&env, &pg, id, &app, &token, &["--rollback-on-failure"]).await?;
    ensure!(!ok && stderr.contains("rolled back"), "{stderr}");
    assert_eq!(items(&pg)?, 7500);
    assert_eq!(
        seen.names().last().map(String::as_str),
        Some("maintenance-off")
    );
    assert!(!seen.maintenance.load(Ordering::SeqCst));
    let restores = recorded(&env, 3).await?;
    assert_eq!(restores[1].0, "failed");
    assert_eq!(restores[1].2, Some(500));
    assert_eq!(restores[2].0, "rolled-back");
    ensure!(
        restores[2].1.contains(&"rollback".to_owned()),
        "{:?}",
        restores[2]
    );

    // A wrong token: a clear error, and nothing starts.
    seen.clear();
    let wrong = env.path("wrong-token");
    std::fs::write(&wrong, "not-the-token\n")?;
    let before = env.catalog.snapshots(None, None).await?.len();
    let (ok, stderr) = live_restore(&env, &pg, id, &app, &wrong, &[]).await?;
    ensure!(!ok && stderr.contains("refused the token"), "{stderr}");
    assert_eq!(seen.names(), ["info refused"]);
    assert_eq!(
        env.catalog.snapshots(None, None).await?.len(),
        before,
        "no safety snapshot"
    );
    assert_eq!(items(&pg)?, 7500, "no restore");

    // A snapshot of another major version of the application is refused.
    env.cli(&[
        "backup",
        "acme/shop",
        "--wait",
        "--label",
        "app_version=1.9.0",
    ])
    .await?;
    let old = env
        .catalog
        .snapshots(None, None)
        .await?
        .into_iter()
        .next()
        .context("a snapshot")?;
    assert_eq!(
        old.labels.get("app_version").map(String::as_str),
        Some("1.9.0")
    );
    seen.clear();
    let (ok, stderr) = live_restore(&env, &pg, old.id.as_str(), &app, &token, &[]).await?;
    ensure!(
        !ok && stderr.contains("application version 1.9.0"),
        "{stderr}"
    );
    assert_eq!(seen.names(), ["info"]);
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a measurement: a 1 GiB database restored into a live application, step by step"]
async fn a_one_gib_live_restore_step_by_step() -> Result<()> {
    let env = Env::new().await?;
    let pg = Postgres::start_with_password(PG_PASSWORD)?;
    pg.psql("postgres", "CREATE DATABASE shop")?;
    // About 1 GiB of table: a million rows of 1 KiB that do not compress away.
    pg.psql(
        "shop",
        "CREATE TABLE items (id int PRIMARY KEY, body text);
         INSERT INTO items SELECT g, string_agg(md5(g::text || i::text), '')
           FROM generate_series(1, 1000000) g, generate_series(1, 32) i GROUP BY g;",
    )?;
    let size = pg.psql("shop", "SELECT pg_size_pretty(pg_database_size('shop'))")?;
    env.cli(&["tenant", "create", "acme"]).await?;
    add_postgres_source(&env, &pg, "shop", &[]).await?;
    let node = env.node().await?;
    let started = std::time::Instant::now();
    env.cli(&["backup", "acme/shop", "--wait", "--timeout", "1800"])
        .await?;
    let backup = started.elapsed();
    let snapshot = env.wait_final_of("shop", 1).await?;
    let seen = Arc::new(Seen::default());
    seen.smoke_status.store(200, Ordering::SeqCst);
    let app = start_app(seen).await?;
    let token = env.path("app-token");
    std::fs::write(&token, TOKEN)?;
    let (ok, stderr) = live_restore(&env, &pg, snapshot.id.as_str(), &app, &token, &[]).await?;
    ensure!(ok, "{stderr}");
    let restores = recorded(&env, 1).await?;
    let results: serde_json::Value = env
        .sql()
        .await?
        .query_one("SELECT results FROM restores", &[])
        .await?
        .get(0);
    eprintln!(
        "database {}, backup {:.1}s, snapshot {} read",
        size.trim(),
        backup.as_secs_f64(),
        snapshot.bytes_read
    );
    for step in results["steps"].as_array().context("steps")? {
        eprintln!(
            "  {:<16} {:>8} ms",
            step["step"].as_str().unwrap_or("?"),
            step["duration_ms"]
        );
    }
    eprintln!(
        "  total {} ms, outcome {}",
        results["duration_ms"], restores[0].0
    );
    node.shutdown().await;
    Ok(())
}
