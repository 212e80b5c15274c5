//! Protected snapshots outlive any retention policy, and `snapshot forget`
//! asks first, guards the newest verified snapshot and is audited.

use crate::harness::{Env, assert_verified};
use anyhow::{Result, ensure};
use std::time::Duration;
use vaultline_catalog::SnapshotStatus;
use vaultline_storage::ObjectKey;
use vaultline_types::{Name, SnapshotId};

/// Runs the binary, which must fail saying `said`.
async fn refused(env: &Env, args: &[&str], said: &str) -> Result<()> {
    let (ok, _, stderr) = env.run_cli(args, &[]).await?;
    ensure!(!ok && stderr.contains(said), "{args:?}: {stderr}");
    Ok(())
}

async fn status(env: &Env, id: &SnapshotId) -> Result<(SnapshotStatus, bool)> {
    let row = env.catalog.snapshot(&Name::new("acme")?, id).await?;
    Ok((row.status, row.protected))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_protected_snapshot_outlives_retention_and_forget_guards_the_newest() -> Result<()> {
    let (env, tree) = Env::with_small_source().await?;
    env.cli(&["retention", "set", "acme/docs", "--keep-last", "1"])
        .await?;
    let mut node = env.node().await?;
    env.cli(&["backup", "acme/docs", "--wait"]).await?;
    let first = env.wait_final(1).await?;
    assert_verified(&first);
    env.cli(&["snapshot", "protect", first.id.as_str()]).await?;

    // The second verified snapshot makes retention forget the first under
    // keep-last 1: it does not, and says why.
    std::fs::write(tree.join("new.txt"), "changed\n")?;
    env.cli(&["backup", "acme/docs", "--wait"]).await?;
    let second = env.wait_final(2).await?;
    assert_verified(&second);
    let preview: serde_json::Value = serde_json::from_str(
        &env.cli_output(&["retention", "preview", "acme/docs", "--json"])
            .await?,
    )?;
    let rule_of = |id: &SnapshotId| {
        preview
            .as_array()
            .and_then(|all| all.iter().find(|d| d["snapshot"] == id.as_str()))
            .map(|d| (d["verdict"].clone(), d["rule"].clone()))
    };
    assert_eq!(
        rule_of(&first.id),
        Some(("keep".into(), "protected".into())),
        "{preview:#}"
    );
    let deps = node.deps_for(vaultline_types::StageName::Retention).await?;
    vaultline_retention::pass(&deps, time::OffsetDateTime::now_utc()).await?;
    assert_eq!(
        status(&env, &first.id).await?,
        (SnapshotStatus::Verified, true)
    );
    let manifest = ObjectKey::manifest(&Name::new("acme")?, &first.id);
    ensure!(
        node.deps.repository.size(&manifest).await?.is_some(),
        "its manifest is kept"
    );

    // A retention worker that asks anyway is refused by the catalog itself.
    let mut login: tokio_postgres::Config = env._pg.url().parse()?;
    login.user("vaultline_retention");
    let (retention, connection) = login.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    let forced = retention
        .execute(
            "UPDATE snapshots SET status = 'expired' WHERE id = $1",
            &[&first.id.as_str()],
        )
        .await;
    let refusal = format!(
        "{:?}",
        forced.expect_err("a protected snapshot cannot expire")
    );
    ensure!(refusal.contains("is protected"), "{refusal}");

    // forget: protected, newest verified, no terminal — each refused in words.
    let (first_id, second_id) = (first.id.as_str(), second.id.as_str());
    refused(
        &env,
        &["snapshot", "forget", first_id, "--yes"],
        "is protected",
    )
    .await?;
    refused(
        &env,
        &["snapshot", "forget", second_id, "--yes"],
        "newest verified",
    )
    .await?;
    env.cli(&["snapshot", "unprotect", first_id]).await?;
    // The binary's stdin is not a terminal here: without --yes it asks no one.
    refused(&env, &["snapshot", "forget", first_id], "add --yes").await?;
    assert_eq!(
        status(&env, &first.id).await?,
        (SnapshotStatus::Verified, false)
    );

    env.cli(&["snapshot", "forget", first_id, "--yes"]).await?;
    assert_eq!(status(&env, &first.id).await?.0, SnapshotStatus::Expired);
    ensure!(
        node.deps.repository.size(&manifest).await?.is_none(),
        "its manifest is gone"
    );
    // --force forgets the newest verified one too.
    env.cli(&["snapshot", "forget", second_id, "--yes", "--force"])
        .await?;
    assert_eq!(status(&env, &second.id).await?.0, SnapshotStatus::Expired);

    // Every change is in the audit trail, with what allowed it.
    let sql = env.sql().await?;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let changes = loop {
        let rows = sql
            .query(
                "SELECT payload::jsonb->>'snapshot', payload::jsonb->>'change', payload::jsonb->>'detail' FROM audit_events
                  WHERE tenant = 'acme' AND kind = 'snapshot.changed' ORDER BY seq",
                &[],
            )
            .await?;
        if rows.len() >= 4 || std::time::Instant::now() > deadline {
            break rows
                .iter()
                .map(|r| {
                    (
                        r.get::<_, String>(0),
                        r.get::<_, String>(1),
                        r.get::<_, String>(2),
                    )
                })
                .collect::<Vec<_>>();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let summary: Vec<(&str, &str)> = changes
        .iter()
        .map(|(id, change, _)| (id.as_str(), change.as_str()))
        .collect();
    assert_eq!(
        summary,
        vec![
            (first_id, "protected"),
            (first_id, "unprotected"),
            (first_id, "forgotten"),
            (second_id, "forgotten"),
        ]
    );
    ensure!(changes[3].2.contains("--force"), "{changes:?}");
    node.shutdown().await;
    Ok(())
}
