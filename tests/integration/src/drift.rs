//! The catalog and the repository drifting apart: a pack deleted by hand
//! is named by `catalog check` with the snapshots that need it, the
//! rolling check marks those corrupt, `--repair` removes the chunk rows
//! that point into it, and the next backup stores that data again.

use crate::harness::{Env, assert_verified, mixed_bytes};
use crate::pipeline::assert_same_tree;
use anyhow::{Context, Result};
use std::time::{Duration, Instant};
use vaultline_catalog::SnapshotStatus;
use vaultline_storage::ObjectKey;
use vaultline_types::Name;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pack_deleted_by_hand_is_named_repaired_and_stored_again() -> Result<()> {
    let env = Env::new().await?;
    let tree = env.path("tree");
    std::fs::create_dir_all(&tree)?;
    std::fs::write(tree.join("a.bin"), mixed_bytes(20 << 20, 21))?;
    std::fs::write(tree.join("b.txt"), "a small file\n")?;
    env.tenant_with_source(&tree).await?;
    let node = crate::rolling::node_with_a_3s_window(&env).await?;
    env.cli(&["backup", "acme/docs", "--wait", "--timeout", "120"])
        .await?;
    let first = env.wait_final(1).await?;
    assert_verified(&first);

    // The catalog and the repository agree.
    let (ok, out, err) = env.run_cli(&["catalog", "check"], &[]).await?;
    assert!(ok && out.contains("agree"), "{out}{err}");

    let tenant = Name::new("acme")?;
    let packs = env.catalog.snapshot_packs(&tenant, &first.id).await?;
    assert!(packs.len() >= 2, "{packs:?}");
    let (lost, _) = packs[0];
    let sql = env.sql().await?;
    let rows_in = |pack: vaultline_types::PackId| {
        let sql = &sql;
        async move {
            let row = sql
                .query_one(
                    "SELECT count(*) FROM chunks WHERE tenant = 'acme' AND pack = $1",
                    &[&pack.0.as_slice()],
                )
                .await?;
            Ok::<i64, anyhow::Error>(row.get(0))
        }
    };
    let chunk_rows = rows_in(lost).await?;
    assert!(chunk_rows > 0);
    std::fs::remove_file(env.path("repository").join(ObjectKey::pack(&tenant, &lost)))?;

    // `catalog check` names the pack, the snapshot that needs it and the
    // chunk rows that point into it, and changes nothing.
    let (ok, out, _) = env.run_cli(&["catalog", "check", "--json"], &[]).await?;
    assert!(!ok, "a lost pack must fail the check: {out}");
    let report: serde_json::Value = serde_json::from_str(&out)?;
    let findings = report["findings"].as_array().context("findings")?;
    assert_eq!(findings.len(), 1, "{report}");
    assert_eq!(findings[0]["kind"], "pack-missing");
    assert_eq!(findings[0]["object"], lost.to_string());
    assert_eq!(
        findings[0]["snapshots"],
        serde_json::json!([first.id.as_str()])
    );
    assert_eq!(findings[0]["chunk_rows"], chunk_rows);
    assert_eq!(findings[0]["repaired"], false);
    assert_eq!(rows_in(lost).await?, chunk_rows);

    // The rolling check finds it too, and marks the snapshot corrupt.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let row = env.catalog.find_snapshot(&first.id).await?;
        if row.status == SnapshotStatus::Corrupt {
            let error = row.error.unwrap_or_default();
            assert!(error.contains("rolling check"), "{error}");
            assert!(error.contains(&lost.to_string()), "{error}");
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "not marked: {row:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // --repair removes the dangling chunk rows (and the pack's row); then
    // the two agree again.
    let (ok, out, err) = env.run_cli(&["catalog", "check", "--repair"], &[]).await?;
    assert!(ok && out.contains("(repaired)"), "{out}{err}");
    assert_eq!(rows_in(lost).await?, 0);
    let (ok, out, err) = env.run_cli(&["catalog", "check"], &[]).await?;
    assert!(ok && out.contains("agree"), "{out}{err}");

    // The next backup of the unchanged tree stores that data again, and
    // its snapshot restores byte-identical.
    env.cli(&["backup", "acme/docs", "--wait", "--timeout", "120"])
        .await?;
    let second = env.wait_final(2).await?;
    assert_verified(&second);
    assert!(second.bytes_new > 0, "nothing stored again: {second:?}");
    assert!(rows_in(lost).await? == 0);
    let restored = env.restore_to(&second.id, "restored").await?;
    assert_same_tree(&tree, &restored, "a restore after the repair")?;
    node.shutdown().await;
    Ok(())
}
