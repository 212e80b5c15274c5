//! The verifier's rolling integrity check: packs are read back on a
//! schedule whatever their snapshots' age, so a flipped byte in a pack that
//! only an old snapshot uses is found within the window, and that snapshot
//! (and only it) is marked corrupt. Run with a window of seconds.

use crate::harness::{Env, assert_verified, mixed_bytes};
use anyhow::{Context, Result};
use std::time::{Duration, Instant};
use vaultline_catalog::SnapshotStatus;
use vaultline_storage::ObjectKey;
use vaultline_types::Name;

/// The sum of a metric's samples in a /metrics text.
fn metric(text: &str, name: &str) -> Option<f64> {
    let values: Vec<f64> = text
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

/// A node whose rolling check re-reads every pack within 3 s, a round
/// every 500 ms.
pub(crate) async fn node_with_a_3s_window(env: &Env) -> Result<vaultline_runtime::Node> {
    let mut config = env.config();
    config
        .stages
        .entry("verifier".into())
        .or_default()
        .rehash_after = Some(Duration::from_secs(3));
    config.integrity.check_interval = Duration::from_millis(500);
    vaultline::start_node(config, &vaultline::SERVED).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flipped_byte_in_an_old_pack_is_found_by_the_rolling_check() -> Result<()> {
    let env = Env::new().await?;
    let tree = env.path("tree");
    std::fs::create_dir_all(&tree)?;
    std::fs::write(tree.join("data.bin"), mixed_bytes(3 << 20, 11))?;
    env.tenant_with_source(&tree).await?;
    let node = node_with_a_3s_window(&env).await?;

    env.cli(&["backup", "acme/docs", "--wait", "--timeout", "120"])
        .await?;
    let old = env.wait_final(1).await?;
    assert_verified(&old);
    // New content throughout: the second snapshot shares no pack with the first.
    std::fs::write(tree.join("data.bin"), mixed_bytes(3 << 20, 12))?;
    env.cli(&["backup", "acme/docs", "--wait", "--timeout", "120"])
        .await?;
    let new = env.wait_final(2).await?;
    assert_verified(&new);
    let tenant = Name::new("acme")?;
    let new_packs = env.catalog.snapshot_packs(&tenant, &new.id).await?;
    let (pack, size) = env
        .catalog
        .snapshot_packs(&tenant, &old.id)
        .await?
        .into_iter()
        .find(|p| !new_packs.contains(p))
        .context("a pack only the old snapshot uses")?;

    // Every pack hashed since the node started: a cycle completes, and
    // the check keeps reading packs back although no snapshot is new.
    let deadline = Instant::now() + Duration::from_secs(30);
    let metrics = loop {
        let text = vaultline_testkit::http_get(node.admin, "/metrics").await?.1;
        let cycled = metric(&text, "vaultline_integrity_last_cycle_timestamp_seconds");
        let read = metric(&text, "vaultline_integrity_rehashed_bytes_total").unwrap_or(0.0);
        if cycled.is_some() && read >= size as f64 {
            break text;
        }
        anyhow::ensure!(Instant::now() < deadline, "no rolling cycle: {text}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(
        metric(&metrics, "vaultline_integrity_packs_overdue"),
        Some(0.0)
    );

    // `vaultline check` reads every pack back and finds nothing wrong.
    let (ok, out, err) = env
        .run_cli(&["check", "--read-data-subset", "100%"], &[])
        .await?;
    assert!(ok && out.contains("no errors"), "{out}{err}");

    let path = env.path("repository").join(ObjectKey::pack(&tenant, &pack));
    let mut bytes = std::fs::read(&path)?;
    let at = (size / 2) as usize;
    bytes[at] ^= 0x40;
    std::fs::write(&path, &bytes)?;
    let flipped = Instant::now();

    let deadline = Instant::now() + Duration::from_secs(30);
    let marked = loop {
        let row = env.catalog.find_snapshot(&old.id).await?;
        if row.status == SnapshotStatus::Corrupt {
            break row;
        }
        anyhow::ensure!(Instant::now() < deadline, "not found: {row:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!(
        "found {:.1}s after the flip (window 3s)",
        flipped.elapsed().as_secs_f64()
    );
    let error = marked.error.unwrap_or_default();
    assert!(error.contains("rolling check"), "{error}");
    assert!(
        error.contains(&format!("pack {pack} does not match its recorded digest")),
        "{error}"
    );
    // Only the snapshot that needs the pack.
    assert_eq!(
        env.catalog.find_snapshot(&new.id).await?.status,
        SnapshotStatus::Verified
    );
    let text = vaultline_testkit::http_get(node.admin, "/metrics").await?.1;
    assert_eq!(
        metric(&text, "vaultline_integrity_damaged_packs_total"),
        Some(1.0),
        "{text}"
    );
    // The auditor recorded the corrupt event the check published.
    // `check` finds it too when it reads every pack back, and names the
    // snapshot; checking sizes alone cannot see a flipped byte.
    let (ok, out, _) = env
        .run_cli(&["check", "--read-data-subset", "1/1", "--json"], &[])
        .await?;
    assert!(!ok, "{out}");
    let report: serde_json::Value = serde_json::from_str(&out)?;
    let problems = report["problems"].to_string();
    assert!(
        problems.contains(&pack.to_string()) && problems.contains(old.id.as_str()),
        "{problems}"
    );
    let (ok, out, _) = env.run_cli(&["check"], &[]).await?;
    assert!(ok && out.contains("0 read back"), "{out}");

    let sql = env.sql().await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let kinds: Vec<String> = sql
            .query(
                "SELECT kind FROM audit_events WHERE snapshot = $1 ORDER BY id",
                &[&old.id.as_str()],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        if kinds.iter().any(|k| k == "snapshot.corrupt") {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "no snapshot.corrupt event: {kinds:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    node.shutdown().await;
    Ok(())
}

/// The sampled level-2 check reads verified snapshots back in full on a
/// schedule: it passes on a sound one, and a pack removed by hand (with the
/// rolling re-hash off) makes it mark the snapshot corrupt.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sampled_level_2_checks_read_old_snapshots_back() -> Result<()> {
    let env = Env::new().await?;
    let tree = env.path("tree");
    std::fs::create_dir_all(&tree)?;
    std::fs::write(tree.join("data.bin"), mixed_bytes(2 << 20, 21))?;
    env.tenant_with_source(&tree).await?;
    let mut config = env.config();
    config.integrity.check_interval = Duration::ZERO;
    config.integrity.level2_per_day = 2 * 86_400; // one every half second
    let node = vaultline::start_node(config, &vaultline::SERVED).await?;
    env.cli(&["backup", "acme/docs", "--wait", "--timeout", "120"])
        .await?;
    let row = env.wait_final(1).await?;
    assert_verified(&row);

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = vaultline_testkit::http_get(node.admin, "/metrics").await?.1;
        let passed = text
            .lines()
            .filter(|l| {
                l.starts_with("vaultline_integrity_level2_samples_total")
                    && l.contains("outcome=\"passed\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>();
        if passed >= 1.0 {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "no sample passed: {text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        env.catalog.find_snapshot(&row.id).await?.status,
        SnapshotStatus::Verified
    );

    let tenant = Name::new("acme")?;
    let (pack, _) = env.catalog.snapshot_packs(&tenant, &row.id).await?[0];
    std::fs::remove_file(env.path("repository").join(ObjectKey::pack(&tenant, &pack)))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let marked = loop {
        let marked = env.catalog.find_snapshot(&row.id).await?;
        if marked.status == SnapshotStatus::Corrupt {
            break marked;
        }
        anyhow::ensure!(Instant::now() < deadline, "not found: {marked:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let error = marked.error.unwrap_or_default();
    assert!(error.starts_with("sampled level 2:"), "{error}");
    assert!(error.contains(&pack.to_string()), "{error}");
    node.shutdown().await;
    Ok(())
}

/// What the rolling check costs per GiB: `vaultline check
/// --read-data-subset 100%` reads back and re-hashes every pack, the work a
/// rolling round does per pack, cold (page cache dropped, as root) and
/// warm. Prints wall and CPU seconds per GiB of packs. By hand:
/// `cargo nextest run -p vaultline-integration --run-ignored only -E 'test(measure)' --no-capture`
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a measurement (1 GiB backed up, then read back twice): run by hand"]
async fn measure_the_rolling_checks_cost_per_gib() -> Result<()> {
    let env = Env::new().await?;
    let tree = env.path("tree");
    std::fs::create_dir_all(&tree)?;
    for i in 0..8u64 {
        std::fs::write(
            tree.join(format!("part-{i}.bin")),
            mixed_bytes(128 << 20, 100 + i),
        )?;
    }
    env.tenant_with_source(&tree).await?;
    let node = env.node().await?;
    env.cli(&["backup", "acme/docs", "--wait", "--timeout", "900"])
        .await?;
    assert_verified(&env.wait_final(1).await?);
    node.shutdown().await;
    let config = env.config_file.clone();
    let binary = crate::harness::binary("vaultline")?;
    for run in ["cold", "warm"] {
        if run == "cold" {
            let dropped = std::fs::write("/proc/sys/vm/drop_caches", "3").is_ok();
            eprintln!("page cache dropped: {dropped}");
        }
        let out = tokio::process::Command::new("bash")
            .args(["-c", "time -p \"$@\"", "_"])
            .arg(&binary)
            .args(["--config", config.to_str().unwrap()])
            .args(["check", "--read-data-subset", "100%", "--json"])
            .output()
            .await?;
        anyhow::ensure!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        let gib = report["read_bytes"].as_f64().context("read_bytes")? / (1u64 << 30) as f64;
        let times: std::collections::HashMap<String, f64> = String::from_utf8_lossy(&out.stderr)
            .lines()
            .filter_map(|l| {
                let (k, v) = l.split_once(' ')?;
                Some((k.to_owned(), v.trim().parse().ok()?))
            })
            .collect();
        let (real, cpu) = (times["real"], times["user"] + times["sys"]);
        eprintln!(
            "{run}: {:.2} GiB of packs read back in {real:.2} s wall, {cpu:.2} s CPU: {:.2} s wall and {:.2} s CPU per GiB",
            gib,
            real / gib,
            cpu / gib
        );
    }
    Ok(())
}
