//! S3 object lock, against moto's server (the only S3 server with object
//! lock that installs here; this checks the protocol, every other S3 test
//! runs on Garage): objects carry the configured mode and date, GC defers
//! locked packs and deletes nothing, a retention policy that would forget
//! inside the lock is refused, and Garage is refused at start.

use crate::harness::{Env, assert_verified};
use anyhow::{Context, Result};
use std::time::{Duration, Instant};
use vaultline_testkit::{Garage, Moto};

/// The env's directory repository replaced by moto's locked bucket.
fn lock_config(
    env: &Env,
    server: (&str, &str),
    bucket: &str,
    key: &str,
    secret: &str,
) -> Result<()> {
    let (endpoint, region) = server;
    let secret_file = env.path(&format!("secret-{bucket}"));
    std::fs::write(&secret_file, secret)?;
    let config = std::fs::read_to_string(&env.config_file)?;
    let path_line = format!("path = \"{}/repository\"", env.dir.path().display());
    anyhow::ensure!(
        config.contains(&path_line),
        "the env's repository line moved"
    );
    let config = config.replace(
        &path_line,
        &format!(
            "url = \"s3://{bucket}/repo\"\n\
             object-lock = {{ mode = \"governance\", days = 1 }}\n\
             [repository.s3]\nendpoint = \"{endpoint}\"\nregion = \"{region}\"\n\
             access-key-id = \"{key}\"\nsecret-access-key-file = \"{secret}\"\n\
             max-attempts = 2\nmultipart-threshold = 6291456\npart-size = 5242880",
            secret = secret_file.display()
        ),
    );
    std::fs::write(&env.config_file, config)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn locked_objects_carry_their_date_and_gc_defers_them() -> Result<()> {
    let env = Env::new().await?;
    let moto = Moto::start()?;
    lock_config(
        &env,
        (&moto.endpoint(), Moto::REGION),
        Moto::BUCKET,
        Moto::ACCESS_KEY_ID,
        Moto::SECRET_ACCESS_KEY,
    )?;
    let tree = env.path("tree");
    crate::pipeline::build_tree(&tree)?;
    env.cli(&["tenant", "create", "acme"]).await?;
    // A policy that could forget a snapshot inside the 1-day lock is refused.
    let refused = env
        .run_cli(
            &[
                "source",
                "add",
                "acme/docs",
                "--path",
                tree.to_str().unwrap(),
                "--keep-last",
                "1",
            ],
            &[],
        )
        .await?;
    assert!(!refused.0, "a keep-last policy under a lock was accepted");
    assert!(refused.2.contains("--min-age 1day"), "{}", refused.2);
    env.cli(&[
        "source",
        "add",
        "acme/docs",
        "--path",
        tree.to_str().unwrap(),
        "--keep-last",
        "1",
        "--min-age",
        "1d",
    ])
    .await?;
    let short = env
        .run_cli(&["retention", "set", "acme/docs", "--max-age", "12h"], &[])
        .await?;
    assert!(!short.0 && short.2.contains("max-age 12h"), "{}", short.2);

    let node = env.node().await?;
    env.cli(&["backup", "acme/docs", "--wait", "--timeout", "120"])
        .await?;
    let first = env.wait_final(1).await?;
    assert_verified(&first);
    let written = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs() as i64;

    // Every pack, manifest and key record carries the mode and a date a day out.
    let keys: Vec<String> = moto
        .keys()?
        .into_iter()
        .filter(|k| k.starts_with("repo/tenants/"))
        .collect();
    assert!(keys.iter().any(|k| k.contains("/packs/")), "{keys:?}");
    assert!(keys.iter().any(|k| k.contains("/snapshots/")), "{keys:?}");
    assert!(keys.iter().any(|k| k.contains("/keys/")), "{keys:?}");
    for key in &keys {
        let held = moto.retention(key)?;
        assert_eq!(held.mode.as_deref(), Some("GOVERNANCE"), "{key}");
        let until = held
            .retain_until
            .with_context(|| format!("{key} has no retain-until date"))?;
        assert!(
            (until - (written + 86_400)).abs() < 600,
            "{key} is locked until {until}, not a day after {written}"
        );
    }

    // The first snapshot's packs become garbage: the big file goes and the
    // snapshot is forgotten as if a day had passed (its lock in the catalog
    // is left as the uploader recorded it).
    std::fs::remove_file(tree.join("big.bin"))?;
    env.cli(&["backup", "acme/docs", "--wait", "--timeout", "120"])
        .await?;
    assert_verified(&env.wait_final(2).await?);
    let sql = env.sql().await?;
    sql.execute(
        "UPDATE snapshots SET started_at = started_at - interval '2 days' WHERE id = $1",
        &[&first.id.as_str()],
    )
    .await?;
    env.cli(&["retention", "preview", "acme/docs"]).await?;
    // The retention stage forgets it on the next verified snapshot or pass.
    env.cli(&["backup", "acme/docs", "--wait", "--timeout", "120"])
        .await?;
    vaultline_testkit::eventually(
        Duration::from_secs(30),
        "the first snapshot forgotten",
        || async {
            env.catalog
                .find_snapshot(&first.id)
                .await
                .is_ok_and(|r| r.status == vaultline_catalog::SnapshotStatus::Expired)
        },
    )
    .await?;
    let packs_before = moto
        .keys()?
        .iter()
        .filter(|k| k.contains("/packs/"))
        .count();
    // A pass with no grace condemns the forgotten snapshot's packs and
    // would delete them at once; their lock holds them instead.
    let pass: serde_json::Value =
        serde_json::from_str(&env.cli_output(&["gc", "--grace", "0s", "--json"]).await?)?;
    let report = &pass.as_array().context("reports")?[0];
    assert!(report["condemned"].as_u64() >= Some(1), "{pass}");
    assert_eq!(report["deleted"].as_u64(), Some(0), "{pass}");
    assert!(report["locked"].as_u64() >= Some(1), "{pass}");
    assert_eq!(
        moto.keys()?
            .iter()
            .filter(|k| k.contains("/packs/"))
            .count(),
        packs_before
    );
    // Shown as held, each with its date (a day from now).
    let plan: serde_json::Value = serde_json::from_str(
        &env.cli_output(&["gc", "--dry-run", "--grace", "0s", "--json"])
            .await?,
    )?;
    let plan = &plan["acme"];
    assert_eq!(plan["locked"], report["locked"], "{plan}");
    assert_eq!(plan["to_delete"].as_u64(), Some(0), "{plan}");
    let held = plan["locked_sample"].as_array().context("locked_sample")?;
    assert_eq!(
        held.len() as u64,
        plan["locked"].as_u64().unwrap_or(0),
        "{plan}"
    );
    assert!(
        held.iter().all(|p| about_a_day_out(&p["locked_until"])),
        "{plan}"
    );
    let shown = env
        .run_cli(&["gc", "--dry-run", "--grace", "0s"], &[])
        .await?
        .1;
    assert!(
        shown.contains("held by their object lock") && shown.contains("locked until"),
        "{shown}"
    );
    let locked_rows: i64 = sql
        .query_one(
            "SELECT count(*) FROM packs WHERE locked_until > now() + interval '23 hours'",
            &[],
        )
        .await?
        .get(0);
    assert!(locked_rows >= 1);
    node.shutdown().await;
    Ok(())
}

/// Whether an RFC 3339 date is 23 to 25 hours from now.
fn about_a_day_out(date: &serde_json::Value) -> bool {
    let Some(date) = date.as_str().and_then(|d| {
        time::OffsetDateTime::parse(d, &time::format_description::well_known::Rfc3339).ok()
    }) else {
        return false;
    };
    let ahead = date - time::OffsetDateTime::now_utc();
    ahead > time::Duration::hours(23) && ahead < time::Duration::hours(25)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn object_lock_on_a_server_without_it_fails_at_start_in_one_sentence() -> Result<()> {
    let env = Env::new().await?;
    let garage = Garage::start()?;
    lock_config(
        &env,
        (&garage.endpoint(), Garage::REGION),
        Garage::BUCKET,
        &garage.access_key_id,
        &garage.secret_access_key,
    )?;
    let started = Instant::now();
    let refused = match vaultline::start_node(env.config(), &vaultline::SERVED).await {
        Ok(_) => anyhow::bail!("a node started with object lock on Garage"),
        Err(e) => e.to_string(),
    };
    assert!(
        refused.contains("cannot lock objects") && refused.contains("501"),
        "{refused}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the refusal took {:?}",
        started.elapsed()
    );
    // The same for the CLI's own commands that open the repository.
    let (ok, _, stderr) = env.run_cli(&["gc"], &[]).await?;
    assert!(!ok && stderr.contains("cannot lock objects"), "{stderr}");
    Ok(())
}
