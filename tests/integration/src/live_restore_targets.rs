//! The live-application restore into MariaDB and into a command source's
//! restore command: the same steps in the same order (row counts checked
//! against the dump's where there are tables), and a failed smoke check
//! rolled back to the safety snapshot.

use crate::harness::{Env, assert_verified};
use crate::live_restore::{ALL_STEPS, Seen, TOKEN, recorded, start_app};
use anyhow::{Result, ensure};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use vaultline_testkit::MariaDb;

fn items(db: &MariaDb) -> Result<u64> {
    Ok(db.sql("SELECT count(*) FROM shop.items")?.trim().parse()?)
}

/// `restore SNAPSHOT TARGET… --app … --yes [extra]` with the binary.
async fn live_restore(
    env: &Env,
    snapshot: &str,
    target: &[&str],
    app: &str,
    token: &std::path::Path,
    extra: &[&str],
) -> Result<(bool, String)> {
    let token = token.to_str().expect("utf-8 path");
    let mut args = vec!["restore", snapshot];
    args.extend_from_slice(target);
    args.extend_from_slice(&["--app", app, "--app-token-file", token, "--yes"]);
    args.extend_from_slice(extra);
    let (ok, _, stderr) = env.run_cli(&args, &[]).await?;
    Ok((ok, stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_mariadb_restore_into_a_live_application_checks_counts_and_rolls_back() -> Result<()> {
    let env = Env::new().await?;
    let db = MariaDb::start()?;
    db.sql(
        "CREATE DATABASE shop; USE shop;
         CREATE TABLE items (id INT PRIMARY KEY, name TEXT);
         INSERT INTO items SELECT seq, CONCAT('item ', seq) FROM seq_1_to_4000;
         CREATE TABLE notes (id INT, body TEXT);
         INSERT INTO notes SELECT seq, REPEAT('n', 50) FROM seq_1_to_300;",
    )?;
    env.cli(&["tenant", "create", "acme"]).await?;
    let password_file = env.path("my-password");
    std::fs::write(&password_file, MariaDb::BACKUP_PASSWORD)?;
    env.cli(&[
        "source",
        "add",
        "acme/shop",
        "--type",
        "mariadb",
        "--url",
        &db.url("shop"),
        "--password-file",
        password_file.to_str().expect("utf-8 path"),
    ])
    .await?;
    let node = env.node().await?;
    env.cli(&["backup", "acme/shop", "--wait", "--timeout", "300"])
        .await?;
    let snapshot = env.wait_final_of("shop", 1).await?;
    assert_verified(&snapshot);

    let seen = Arc::new(Seen::default());
    seen.smoke_status.store(200, Ordering::SeqCst);
    let app = start_app(seen.clone()).await?;
    let token = env.path("app-token");
    std::fs::write(&token, TOKEN)?;
    // The application's own login: the same database as the source's.
    let target = format!("mariadb://root@127.0.0.1:{}/shop", db.port);
    let target = ["--into", target.as_str()];
    let restore = |extra: &'static [&'static str]| {
        live_restore(&env, snapshot.id.as_str(), &target, &app, &token, extra)
    };
    db.sql("USE shop; INSERT INTO shop.items SELECT seq, 'new' FROM seq_4001_to_5000; DELETE FROM shop.notes")?;
    let (ok, stderr) = restore(&[]).await?;
    ensure!(ok, "the live restore failed: {stderr}");
    assert_eq!(items(&db)?, 4000);
    assert_eq!(db.sql("SELECT count(*) FROM shop.notes")?.trim(), "300");
    assert_eq!(
        seen.names(),
        ["info", "maintenance-on", "smoke", "maintenance-off"]
    );
    let safety = env.wait_final_of("shop", 2).await?;
    assert_verified(&safety);
    assert_eq!(safety.trigger, "safety");
    let restores = recorded(&env, 1).await?;
    assert_eq!(restores[0].0, "succeeded");
    assert_eq!(restores[0].1, ALL_STEPS);

    // Smoke answers 500 with --rollback-on-failure: the rows from before
    // the restore are back, and maintenance is off.
    seen.clear();
    seen.smoke_status.store(500, Ordering::SeqCst);
    db.sql("USE shop; INSERT INTO shop.items SELECT seq, 'kept' FROM seq_4001_to_4500")?;
    let (ok, stderr) = restore(&["--rollback-on-failure"]).await?;
    ensure!(!ok && stderr.contains("rolled back"), "{stderr}");
    assert_eq!(items(&db)?, 4500);
    assert_eq!(
        seen.names().last().map(String::as_str),
        Some("maintenance-off")
    );
    assert!(!seen.maintenance.load(Ordering::SeqCst));
    let restores = recorded(&env, 2).await?;
    assert_eq!(restores[1].0, "rolled-back");
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_command_restore_into_a_live_application_rolls_back_its_state() -> Result<()> {
    let env = Env::new().await?;
    let state = env.path("state.bin");
    std::fs::write(&state, crate::harness::mixed_bytes(2 << 20, 1))?;
    env.cli(&["tenant", "create", "acme"]).await?;
    env.cli(&[
        "source",
        "add",
        "acme/state",
        "--type",
        "command",
        "--command",
        &format!("cat {}", state.display()),
        "--restore-command",
        &format!("cat > {}", state.display()),
    ])
    .await?;
    let node = env.node().await?;
    env.cli(&["backup", "acme/state", "--wait", "--timeout", "120"])
        .await?;
    let snapshot = env.wait_final_of("state", 1).await?;
    assert_verified(&snapshot);

    let seen = Arc::new(Seen::default());
    seen.smoke_status.store(200, Ordering::SeqCst);
    let app = start_app(seen.clone()).await?;
    let token = env.path("app-token");
    std::fs::write(&token, TOKEN)?;
    let restore = |extra: &'static [&'static str]| {
        live_restore(
            &env,
            snapshot.id.as_str(),
            &["--into-command"],
            &app,
            &token,
            extra,
        )
    };

    // The restore command gets the snapshot back; no tables, so no counts step.
    let original = std::fs::read(&state)?;
    std::fs::write(&state, crate::harness::mixed_bytes(1 << 20, 2))?;
    let (ok, stderr) = restore(&[]).await?;
    ensure!(ok, "the live restore failed: {stderr}");
    ensure!(
        std::fs::read(&state)? == original,
        "the state was not restored"
    );
    let safety = env.wait_final_of("state", 2).await?;
    assert_verified(&safety);
    assert_eq!(safety.trigger, "safety");
    let steps: Vec<&str> = ALL_STEPS.into_iter().filter(|s| *s != "counts").collect();
    assert_eq!(recorded(&env, 1).await?[0].1, steps);

    // A failed smoke check with --rollback-on-failure: the state from
    // before the restore is back.
    seen.clear();
    seen.smoke_status.store(503, Ordering::SeqCst);
    let before = crate::harness::mixed_bytes(1 << 20, 3);
    std::fs::write(&state, &before)?;
    let (ok, stderr) = restore(&["--rollback-on-failure"]).await?;
    ensure!(!ok && stderr.contains("rolled back"), "{stderr}");
    ensure!(
        std::fs::read(&state)? == before,
        "the rollback did not put the state back"
    );
    assert_eq!(
        seen.names().last().map(String::as_str),
        Some("maintenance-off")
    );
    assert_eq!(recorded(&env, 2).await?[1].0, "rolled-back");
    node.shutdown().await;
    Ok(())
}
