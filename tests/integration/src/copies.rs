//! Copies of the repository (`[[repository.copies]]`): a Garage copy beside a
//! filesystem primary holds everything a restore needs once the primary is
//! gone, and a copy that is down leaves the primary on time and catches up.

use crate::harness::{Env, assert_verified, offline_vars};
use crate::pipeline::snapshot_of;
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use vaultline_testkit::{Garage, eventually};

/// Adds a copy named `offsite` in `garage`'s bucket under `copy/` to the
/// env's config, with the copier's pass every second.
fn add_garage_copy(env: &Env, garage: &Garage) -> Result<()> {
    let secret = env.path("copy-s3-secret");
    std::fs::write(&secret, &garage.secret_access_key)?;
    let mut config = std::fs::read_to_string(&env.config_file)?;
    config += &format!(
        "[copier]\ninterval = \"1s\"\n\
         [[repository.copies]]\nname = \"offsite\"\nurl = \"s3://{bucket}/copy\"\n\
         [repository.copies.s3]\nendpoint = \"{endpoint}\"\nregion = \"{region}\"\n\
         access-key-id = \"{key}\"\nsecret-access-key-file = \"{secret}\"\nmax-attempts = 2\n",
        bucket = Garage::BUCKET,
        endpoint = garage.endpoint(),
        region = Garage::REGION,
        key = garage.access_key_id,
        secret = secret.display(),
    );
    std::fs::write(&env.config_file, config)?;
    Ok(())
}

/// Each snapshot's copies as `vaultline snapshots --json` shows them:
/// (snapshot, [(target, status, error)]).
async fn copy_column(env: &Env) -> Result<Vec<(String, Vec<(String, String, Option<String>)>)>> {
    let listed: serde_json::Value =
        serde_json::from_str(&env.cli_output(&["snapshots", "--json"]).await?)?;
    listed
        .as_array()
        .context("a list")?
        .iter()
        .map(|row| {
            let copies = row["copies"]
                .as_array()
                .context("copies")?
                .iter()
                .map(|c| {
                    (
                        c["target"].as_str().unwrap_or("").to_owned(),
                        c["status"].as_str().unwrap_or("").to_owned(),
                        c["error"].as_str().map(str::to_owned),
                    )
                })
                .collect();
            Ok((row["id"].as_str().unwrap_or("").to_owned(), copies))
        })
        .collect()
}

/// A gauge of target `offsite` on a /metrics page.
fn copy_gauge(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(name) && l.contains("target=\"offsite\""))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// Restores `snapshot` from `repo` with the identity file and nothing else
/// (`vars` point the catalog and NATS at closed ports) into `to`, and
/// checks it against `want`.
pub(crate) async fn restore_offline(
    env: &Env,
    vars: &[(String, String)],
    (snapshot, want): (
        &vaultline_types::SnapshotId,
        &BTreeMap<String, crate::pipeline::Node>,
    ),
    repo: &str,
    identity: &std::path::Path,
    to: &std::path::Path,
) -> Result<()> {
    let args = [
        "restore",
        snapshot.as_str(),
        "--repo",
        repo,
        "--identity",
        identity.to_str().context("utf-8")?,
        "--tenant",
        "acme",
        "--to",
        to.to_str().context("utf-8")?,
    ];
    let out = env.bare_cli(&args, vars).await?;
    anyhow::ensure!(
        out.status.success(),
        "restore from {repo}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    anyhow::ensure!(
        snapshot_of(to)? == *want,
        "snapshot {snapshot} restored from {repo} differs"
    );
    Ok(())
}

async fn all_copies_verified(env: &Env, snapshots: usize) -> Result<bool> {
    let column = copy_column(env).await?;
    Ok(column.len() == snapshots
        && column.iter().all(|(_, copies)| {
            copies.len() == 1 && copies[0].0 == "offsite" && copies[0].1 == "verified"
        }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_snapshot_restores_from_a_copy_once_the_primary_is_gone() -> Result<()> {
    let env = Env::new().await?;
    let garage = Garage::start()?;
    add_garage_copy(&env, &garage)?;
    let tree = env.path("tree");
    crate::pipeline::build_tree(&tree)?;
    env.tenant_with_source(&tree).await?;
    let node = env.node().await?;

    let mut expected = Vec::new();
    for round in 1..=3 {
        if round > 1 {
            std::fs::write(
                tree.join(format!("round-{round}.txt")),
                format!("round {round}\n").repeat(5000),
            )?;
            std::fs::write(tree.join("a.txt"), format!("changed in round {round}\n"))?;
        }
        env.cli(&["backup", "acme/docs", "--wait", "--timeout", "120"])
            .await?;
        let row = env.wait_final(round).await?;
        assert_verified(&row);
        expected.push((row.id.clone(), snapshot_of(&tree)?));
    }
    eventually(
        Duration::from_secs(60),
        "every snapshot copied and read back",
        || async { all_copies_verified(&env, 3).await.unwrap_or(false) },
    )
    .await?;
    // A pack shared by the three snapshots went over once.
    let sql = env.sql().await?;
    let (objects, distinct): (i64, i64) = {
        let r = sql
            .query_one(
                "SELECT count(*), count(DISTINCT key) FROM copied_objects WHERE target = 'offsite' AND verified_at IS NOT NULL",
                &[],
            )
            .await?;
        (r.get(0), r.get(1))
    };
    assert_eq!(objects, distinct);
    let moved: i64 = sql
        .query_one(
            "SELECT sum(objects_moved)::bigint FROM snapshot_copies",
            &[],
        )
        .await?
        .get(0);
    assert_eq!(moved, objects, "each object was put into the copy once");
    let metrics = vaultline_testkit::http_get(node.admin, "/metrics").await?.1;
    eventually(Duration::from_secs(10), "the lag metric at 0", || async {
        let metrics = vaultline_testkit::http_get(node.admin, "/metrics")
            .await
            .map(|r| r.1)
            .unwrap_or_default();
        copy_gauge(&metrics, "vaultline_copy_lag_snapshots") == Some(0.0)
    })
    .await
    .with_context(|| metrics.clone())?;

    // The primary goes away entirely; the copy, the identity file and the
    // AWS variables are all a restore has (no catalog, no NATS).
    let identity = env.export_identity("acme").await?;
    node.shutdown().await;
    std::fs::remove_dir_all(env.path("repository"))?;
    let vars = offline_vars(&garage);
    for (i, (snapshot, want)) in expected.iter().enumerate() {
        let to = env.path(&format!("from-copy-{i}"));
        let repo = format!("s3://{}/copy", Garage::BUCKET);
        restore_offline(&env, &vars, (snapshot, want), &repo, &identity, &to).await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_copy_down_for_a_minute_holds_nothing_up_and_catches_up() -> Result<()> {
    let env = Env::new().await?;
    let mut garage = Garage::start()?;
    add_garage_copy(&env, &garage)?;
    let tree = env.path("tree");
    crate::pipeline::build_tree(&tree)?;
    env.tenant_with_source(&tree).await?;
    let node = env.node().await?;
    env.cli(&["backup", "acme/docs", "--wait", "--timeout", "120"])
        .await?;
    assert_verified(&env.wait_final(1).await?);
    eventually(
        Duration::from_secs(60),
        "the first snapshot copied",
        || async { all_copies_verified(&env, 1).await.unwrap_or(false) },
    )
    .await?;

    // The copy's server goes away for 60 s; a backup runs meanwhile.
    garage.stop();
    let down = Instant::now();
    std::fs::write(
        tree.join("new.bin"),
        crate::harness::mixed_bytes(3 << 20, 7),
    )?;
    env.cli(&["backup", "acme/docs", "--wait", "--timeout", "60"])
        .await?;
    let row = env.wait_final(2).await?;
    assert_verified(&row);
    let verified_after = down.elapsed();
    assert!(
        verified_after < Duration::from_secs(60),
        "the primary waited for the copy: {verified_after:?}"
    );

    // The copy shows pending, with why, and the lag rises.
    eventually(
        Duration::from_secs(20),
        "the copy pending with its error",
        || async {
            let column = copy_column(&env).await.unwrap_or_default();
            column.iter().any(|(id, copies)| {
                id == row.id.as_str()
                    && copies
                        .iter()
                        .any(|(_, status, error)| status == "pending" && error.is_some())
            })
        },
    )
    .await?;
    // The copier's pass (every second here) sets the lag.
    eventually(
        Duration::from_secs(10),
        "the lag metric at 1 snapshot",
        || async {
            let metrics = vaultline_testkit::http_get(node.admin, "/metrics")
                .await
                .map(|r| r.1)
                .unwrap_or_default();
            copy_gauge(&metrics, "vaultline_copy_lag_snapshots") == Some(1.0)
        },
    )
    .await?;
    let mut lag_seconds = Vec::new();
    while down.elapsed() < Duration::from_secs(60) {
        let metrics = vaultline_testkit::http_get(node.admin, "/metrics").await?.1;
        assert_eq!(
            copy_gauge(&metrics, "vaultline_copy_lag_snapshots"),
            Some(1.0),
            "{metrics}"
        );
        lag_seconds
            .push(copy_gauge(&metrics, "vaultline_copy_lag_seconds").context("lag seconds")?);
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    assert!(
        lag_seconds.windows(2).filter(|w| w[1] > w[0]).count() >= lag_seconds.len() / 2,
        "the lag did not rise: {lag_seconds:?}"
    );
    let peak = lag_seconds.iter().copied().fold(0.0, f64::max);

    garage.restart()?;
    let back = Instant::now();
    eventually(Duration::from_secs(60), "the copy caught up", || async {
        all_copies_verified(&env, 2).await.unwrap_or(false)
    })
    .await?;
    let caught_up = back.elapsed();
    eventually(Duration::from_secs(10), "the lag back to 0", || async {
        let metrics = vaultline_testkit::http_get(node.admin, "/metrics")
            .await
            .map(|r| r.1)
            .unwrap_or_default();
        copy_gauge(&metrics, "vaultline_copy_lag_snapshots") == Some(0.0)
            && copy_gauge(&metrics, "vaultline_copy_lag_seconds") == Some(0.0)
    })
    .await?;
    eprintln!(
        "copy outage: primary verified {:.1} s into the outage; copy lag peaked at {peak:.1} s; caught up {:.1} s after the copy came back",
        verified_after.as_secs_f64(),
        caught_up.as_secs_f64()
    );
    node.shutdown().await;
    Ok(())
}
