//! Retention rules on a synthetic history, and garbage collection racing a
//! backup that reuses the chunks of a forgotten snapshot.

use crate::harness::{Env, assert_verified, mixed_bytes, node_with_slow};
use anyhow::{Context, Result};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use vaultline_catalog::SnapshotStatus;
use vaultline_storage::ObjectKey;
use vaultline_types::{Name, SnapshotId, StageName};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retention_keeps_exactly_what_each_rule_says_and_preview_matches() -> Result<()> {
    let (env, _tree) = Env::with_small_source().await?;
    env.cli(&[
        "retention",
        "set",
        "acme/docs",
        "--keep-last",
        "2",
        "--keep-daily",
        "3",
        "--keep-weekly",
        "3",
        "--keep-monthly",
        "3",
        "--keep-yearly",
        "2",
        "--max-age",
        "3650days",
    ])
    .await?;
    // (started at, kept?, the rule that must decide). 2025-06-09 and -10 are in
    // ISO week 24, 2025-06-02..08 in week 23, 2025-05-31 in week 22.
    let table: &[(&str, bool, &str)] = &[
        ("2025-06-10T12:00:00Z", true, "newest verified snapshot"),
        ("2025-06-10T08:00:00Z", true, "keep_last=2"),
        ("2025-06-09T20:00:00Z", true, "keep_daily=3 (2025-06-09)"),
        (
            "2025-06-08T10:00:00Z",
            true,
            "keep_daily=3 (2025-06-08), keep_weekly=3 (2025-W23)",
        ),
        ("2025-06-02T10:00:00Z", false, "no keep rule picks it"),
        (
            "2025-05-31T10:00:00Z",
            true,
            "keep_weekly=3 (2025-W22), keep_monthly=3 (2025-05)",
        ),
        ("2025-05-20T10:00:00Z", false, "no keep rule picks it"),
        ("2025-04-15T10:00:00Z", true, "keep_monthly=3 (2025-04)"),
        ("2024-12-31T10:00:00Z", true, "keep_yearly=2 (2024)"),
        ("2010-01-01T00:00:00Z", false, "max_age=3650days"),
    ];
    let sql = env.sql().await?;
    let key: String = sql
        .query_one("SELECT key_id FROM tenant_keys WHERE tenant = 'acme'", &[])
        .await?
        .get(0);
    let mut ids = Vec::new();
    for (at, _, _) in table {
        let at = OffsetDateTime::parse(at, &Rfc3339)?;
        let id = SnapshotId::derive(at, &format!("synthetic-{at}"));
        sql.execute(
            "INSERT INTO snapshots (tenant, id, source, status, trigger, key_id, started_at, finished_at, verified_at)
             VALUES ('acme', $1, 'docs', 'verified', 'scheduled', $2, $3, $3, $3)",
            &[&id.as_str(), &key, &at],
        )
        .await?;
        ids.push(id);
    }
    // A failed snapshot is not the policy's business.
    let failed = SnapshotId::derive(
        OffsetDateTime::parse("2025-06-11T00:00:00Z", &Rfc3339)?,
        "failed",
    );
    sql.execute(
        "INSERT INTO snapshots (tenant, id, source, status, trigger, key_id, started_at)
         VALUES ('acme', $1, 'docs', 'failed', 'manual', $2, '2025-06-11T00:00:00Z')",
        &[&failed.as_str(), &key],
    )
    .await?;

    let preview: serde_json::Value = serde_json::from_str(
        &env.cli_output(&["retention", "preview", "acme/docs", "--json"])
            .await?,
    )?;
    let preview = preview.as_array().context("a list")?;
    assert_eq!(preview.len(), table.len(), "{preview:#?}");
    let mut forget_in_preview = BTreeSet::new();
    for ((at, keep, rule), (decision, id)) in table.iter().zip(preview.iter().zip(&ids)) {
        assert_eq!(
            decision["snapshot"],
            id.as_str(),
            "order: newest first ({at})"
        );
        let verdict = if *keep { "keep" } else { "forget" };
        assert_eq!(decision["verdict"], verdict, "{at}: {decision}");
        assert_eq!(decision["rule"], *rule, "{at}");
        if !keep {
            forget_in_preview.insert(id.to_string());
        }
    }

    // Apply it, as the periodic pass does.
    let mut node = vaultline_runtime::Node::start(env.config(), "test").await?;
    let deps = node.deps_for(StageName::Retention).await?;
    vaultline_retention::pass(&deps, OffsetDateTime::now_utc()).await?;
    let rows = env
        .catalog
        .snapshots(Some(&Name::new("acme")?), Some(&Name::new("docs")?))
        .await?;
    let expired: BTreeSet<String> = rows
        .iter()
        .filter(|r| r.status == SnapshotStatus::Expired)
        .map(|r| r.id.to_string())
        .collect();
    assert_eq!(
        expired, forget_in_preview,
        "preview matches what was forgotten"
    );
    assert!(
        rows.iter()
            .any(|r| r.id == failed && r.status == SnapshotStatus::Failed),
        "the failed snapshot is untouched"
    );
    // A second pass changes nothing more.
    vaultline_retention::pass(&deps, OffsetDateTime::now_utc()).await?;
    let again = env
        .catalog
        .snapshots(Some(&Name::new("acme")?), Some(&Name::new("docs")?))
        .await?
        .iter()
        .filter(|r| r.status == SnapshotStatus::Expired)
        .count();
    assert_eq!(again, expired.len());
    node.shutdown().await;
    Ok(())
}

fn pack_paths(env: &Env, packs: &[vaultline_types::PackId]) -> Result<Vec<std::path::PathBuf>> {
    let tenant = Name::new("acme")?;
    Ok(packs
        .iter()
        .map(|p| env.path("repository").join(ObjectKey::pack(&tenant, p)))
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gc_racing_a_backup_that_reuses_forgotten_chunks_loses_nothing() -> Result<()> {
    let env = Env::new().await?;
    let tree = env.path("tree");
    std::fs::create_dir_all(&tree)?;
    let a = mixed_bytes(1 << 20, 11);
    let b = mixed_bytes(40 << 20, 12);
    std::fs::write(tree.join("a.bin"), &a)?;
    std::fs::write(tree.join("b.bin"), &b)?;
    env.cli(&["tenant", "create", "acme"]).await?;
    env.cli(&[
        "source",
        "add",
        "acme/docs",
        "--path",
        tree.to_str().context("utf-8")?,
        "--keep-last",
        "1",
    ])
    .await?;
    let node = node_with_slow::<vaultline_uploader::Uploader>(
        &env,
        Duration::from_secs(3),
        Duration::ZERO,
        false,
    )
    .await?;
    let (tenant, source) = (Name::new("acme")?, Name::new("docs")?);

    // s1 holds a and b; s2 holds only d, so retention forgets s1.
    env.cli(&["backup", "acme/docs", "--wait", "--timeout", "120"])
        .await?;
    let s1 = env.wait_final(1).await?;
    assert_verified(&s1);
    let s1_packs: Vec<_> = env
        .catalog
        .snapshot_packs(&tenant, &s1.id)
        .await?
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    assert!(s1_packs.len() >= 3, "b spans several packs: {s1_packs:?}");
    std::fs::remove_file(tree.join("a.bin"))?;
    std::fs::remove_file(tree.join("b.bin"))?;
    std::fs::write(tree.join("d.bin"), mixed_bytes(1 << 20, 13))?;
    env.cli(&["backup", "acme/docs", "--wait", "--timeout", "120"])
        .await?;
    assert_verified(&env.wait_final(2).await?);
    let deadline = Instant::now() + Duration::from_secs(30);
    while env.catalog.snapshot(&tenant, &s1.id).await?.status != SnapshotStatus::Expired {
        anyhow::ensure!(Instant::now() < deadline, "s1 was not forgotten");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // s3 reuses a's chunks (in s1's first pack). Its dedup lookup is done and,
    // with the uploader slow, it is still in flight when GC condemns s1's
    // packs and the grace period passes.
    std::fs::remove_file(tree.join("d.bin"))?;
    std::fs::write(tree.join("a.bin"), &a)?;
    std::fs::write(tree.join("c.txt"), "new in s3\n")?;
    env.cli(&["backup", "acme/docs"]).await?;
    let s3 = loop {
        let rows = env.catalog.snapshots(Some(&tenant), Some(&source)).await?;
        if rows.len() == 3 && rows[0].status != SnapshotStatus::Extracting {
            break rows[0].clone();
        }
        anyhow::ensure!(
            Instant::now() < deadline + Duration::from_secs(30),
            "s3 never extracted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let grace = Duration::from_secs(1);
    let mut condemned = 0;
    let mut revived = 0;
    let mut passes_in_flight = 0;
    loop {
        let report =
            vaultline_retention::gc::collect(&env.catalog, &node.deps.repository, &tenant, grace)
                .await?;
        condemned += report.condemned;
        revived += report.revived;
        if env
            .catalog
            .snapshot(&tenant, &s3.id)
            .await?
            .status
            .is_terminal()
        {
            break;
        }
        // s3 was in flight for the whole pass.
        assert_eq!(
            report.deleted, 0,
            "a pass deleted packs while a snapshot that may use them was in flight"
        );
        passes_in_flight += 1;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(
        passes_in_flight >= 4,
        "GC ran past the grace period during the backup ({passes_in_flight} passes)"
    );
    assert!(
        condemned >= s1_packs.len() as u64,
        "s1's packs were condemned during the backup"
    );
    let s3 = env.catalog.snapshot(&tenant, &s3.id).await?;
    assert_verified(&s3);
    let s3_packs: Vec<_> = env
        .catalog
        .snapshot_packs(&tenant, &s3.id)
        .await?
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    let shared: Vec<_> = s1_packs
        .iter()
        .filter(|p| s3_packs.contains(p))
        .copied()
        .collect();
    assert!(!shared.is_empty(), "s3 reuses a pack of s1");

    // Once s3 is done: s1's own packs go, the shared one is revived and stays.
    tokio::time::sleep(grace).await;
    let report =
        vaultline_retention::gc::collect(&env.catalog, &node.deps.repository, &tenant, grace)
            .await?;
    revived += report.revived;
    assert!(
        revived >= shared.len() as u64,
        "the shared pack was revived, not deleted ({revived})"
    );
    let gone: Vec<_> = s1_packs
        .iter()
        .filter(|p| !shared.contains(p))
        .copied()
        .collect();
    for path in pack_paths(&env, &gone)? {
        assert!(!path.exists(), "{} survived GC", path.display());
    }
    for path in pack_paths(&env, &s3_packs)? {
        assert!(
            path.exists(),
            "{} of a live snapshot was deleted",
            path.display()
        );
    }
    let sizes = env.catalog.pack_sizes(&tenant, &gone).await?;
    assert!(
        sizes.is_empty(),
        "catalog rows of deleted packs remain: {sizes:?}"
    );

    // s3 restores byte-identical.
    let out = env.path("restored-s3");
    env.cli(&[
        "restore",
        s3.id.as_str(),
        "--to",
        out.to_str().context("utf-8")?,
    ])
    .await?;
    assert_eq!(std::fs::read(out.join("a.bin"))?, a);
    assert_eq!(std::fs::read_to_string(out.join("c.txt"))?, "new in s3\n");
    assert!(!out.join("b.bin").exists());

    // b's chunks were deleted with their packs: a new backup stores them again.
    std::fs::write(tree.join("b.bin"), &b)?;
    env.cli(&["backup", "acme/docs", "--wait", "--timeout", "120"])
        .await?;
    let s4 = env.wait_final(4).await?;
    assert_verified(&s4);
    let out = env.path("restored-s4");
    env.cli(&[
        "restore",
        s4.id.as_str(),
        "--to",
        out.to_str().context("utf-8")?,
    ])
    .await?;
    assert_eq!(std::fs::read(out.join("b.bin"))?, b);
    assert_eq!(std::fs::read(out.join("a.bin"))?, a);

    // Keep-last 1: once s4 is verified, retention forgets s3, and what only
    // s3 held (its tree's metadata) becomes garbage. Wait for that rather
    // than race it, collect it, and then nothing is left to delete.
    let deadline = Instant::now() + Duration::from_secs(30);
    while env.catalog.snapshot(&tenant, &s3.id).await?.status != SnapshotStatus::Expired {
        anyhow::ensure!(Instant::now() < deadline, "s3 was not forgotten after s4");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    vaultline_retention::gc::collect(&env.catalog, &node.deps.repository, &tenant, grace).await?;
    tokio::time::sleep(grace).await;
    vaultline_retention::gc::collect(&env.catalog, &node.deps.repository, &tenant, grace).await?;
    let plan: serde_json::Value = serde_json::from_str(
        &env.cli_output(&["gc", "--dry-run", "--grace", "1s", "--json"])
            .await?,
    )?;
    assert_eq!(plan["acme"]["to_delete"], 0, "{plan}");
    node.shutdown().await;
    Ok(())
}

/// GC's cost on a catalog with one million chunks (10,000 packs): run by hand
/// with `cargo nextest run --run-ignored only -E 'test(gc_cost)' --no-capture`.
/// Prints wall time and the peak RSS of the `vaultline gc` process.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a measurement, not a check CI needs (about a minute)"]
async fn gc_cost_on_a_million_chunks() -> Result<()> {
    let (env, _tree) = Env::with_small_source().await?;
    let sql = env.sql().await?;
    let key: String = sql
        .query_one("SELECT key_id FROM tenant_keys WHERE tenant = 'acme'", &[])
        .await?
        .get(0);
    let started = Instant::now();
    // 10,000 packs of 100 chunks; 100 snapshots, snapshot i referencing packs
    // [100 i, 100 i + 150); the older half is expired.
    sql.batch_execute(
        "INSERT INTO packs (tenant, id, size, blobs)
           SELECT 'acme', sha256(int4send(i)), 16777216, 100 FROM generate_series(0, 9999) i;
         INSERT INTO chunks (tenant, id, pack, pack_offset, length, raw_length)
           SELECT 'acme', sha256(int8send(j)), sha256(int4send((j / 100)::int)), (j % 100) * 167772, 167772, 262144
           FROM generate_series(0::bigint, 999999) j;",
    )
    .await?;
    for i in 0..100i32 {
        let at = OffsetDateTime::now_utc() - time::Duration::days(i64::from(100 - i));
        let id = SnapshotId::derive(at, &format!("cost-{i}"));
        let status = if i < 50 { "expired" } else { "verified" };
        sql.execute(
            "INSERT INTO snapshots (tenant, id, source, status, trigger, key_id, started_at)
             VALUES ('acme', $1, 'docs', $2, 'scheduled', $3, $4)",
            &[&id.as_str(), &status, &key, &at],
        )
        .await?;
        sql.execute(
            "INSERT INTO snapshot_packs (tenant, snapshot, pack)
             SELECT 'acme', $1, sha256(int4send(p)) FROM generate_series($2::int, least($2 + 149, 9999)) p",
            &[&id.as_str(), &(i * 100)],
        )
        .await?;
    }
    sql.batch_execute("ANALYZE").await?;
    eprintln!(
        "populated 1,000,000 chunks in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    // Live snapshots 50..99 reference packs 5000..9999; the rest is garbage.
    let expected_garbage = 5000u64;

    let measure = |args: &'static [&'static str]| {
        let config = env.config_file.clone();
        async move {
            let binary = crate::harness::binary("vaultline")?;
            let started = Instant::now();
            let output = tokio::process::Command::new("python3")
                .args([
                    "-c",
                    "import resource, subprocess, sys\n\
                     r = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE)\n\
                     sys.stdout.write(r.stdout.decode())\n\
                     print('maxrss_kib', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n\
                     sys.exit(r.returncode)",
                ])
                .arg(&binary)
                .arg("--config")
                .arg(&config)
                .args(args)
                .output()
                .await?;
            anyhow::ensure!(
                output.status.success(),
                "{args:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            let text = String::from_utf8(output.stdout)?;
            let rss: u64 = text
                .lines()
                .find_map(|l| l.strip_prefix("maxrss_kib "))
                .and_then(|v| v.trim().parse().ok())
                .context("maxrss")?;
            eprintln!(
                "vaultline {}: {:.2}s wall, peak RSS {} MiB",
                args.join(" "),
                started.elapsed().as_secs_f64(),
                rss / 1024
            );
            Ok::<_, anyhow::Error>(text)
        }
    };
    measure(&["gc", "--dry-run", "--grace", "1h"]).await?;
    let first = measure(&["gc", "--grace", "1h"]).await?;
    assert!(
        first.contains(&format!("condemned {expected_garbage}")),
        "{first}"
    );
    sql.execute(
        "UPDATE packs SET condemned_at = condemned_at - interval '2 hours'",
        &[],
    )
    .await?;
    measure(&["gc", "--dry-run", "--grace", "1h"]).await?;
    let second = measure(&["gc", "--grace", "1h"]).await?;
    assert!(
        second.contains(&format!("deleted {expected_garbage} pack(s)")),
        "{second}"
    );
    let left: i64 = sql
        .query_one("SELECT count(*) FROM chunks", &[])
        .await?
        .get(0);
    assert_eq!(left, 500_000, "the chunks of live packs stay");
    Ok(())
}
