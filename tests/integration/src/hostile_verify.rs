//! Verification requests are hostile input too: one naming another
//! tenant's snapshot, or a snapshot under another source, is dead-lettered
//! as forged, records nothing, and leaves both snapshots as they were.

use crate::harness::{Env, assert_verified};
use crate::hostile::{next_dead_letter, publish_forged};
use anyhow::Result;
use vaultline_types::{Name, StageName, VerifyRequested};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_forged_verification_request_touches_no_snapshot() -> Result<()> {
    let (env, tree) = Env::with_small_source().await?;
    env.cli(&["tenant", "create", "bravo"]).await?;
    env.cli(&[
        "source",
        "add",
        "bravo/docs",
        "--type",
        "files",
        "--path",
        tree.to_str().expect("utf-8 path"),
    ])
    .await?;
    let node = env.node().await?;
    env.cli(&["backup", "acme/docs", "--wait"]).await?;
    env.cli(&["backup", "bravo/docs", "--wait"]).await?;
    let (acme, bravo) = (Name::new("acme")?, Name::new("bravo")?);
    let of = |tenant: &Name| {
        let catalog = env.catalog.clone();
        let tenant = tenant.clone();
        async move { anyhow::Ok(catalog.snapshots(Some(&tenant), None).await?.remove(0)) }
    };
    let (mine, theirs) = (of(&acme).await?, of(&bravo).await?);
    // The forger is a compromised API: verify.request is its to publish.
    let forger = env.nats_as("api").await?;
    let watcher = env.nats_as("operator").await?;
    let mut dead = watcher.subscribe("vaultline.dlq.>").await?;
    watcher.flush().await?;

    // acme's subject and payload, bravo's snapshot.
    let across = VerifyRequested {
        tenant: acme.clone(),
        source: Name::new("docs")?,
        snapshot: theirs.id.clone(),
        level: 2,
        request_id: "forged-1".into(),
    };
    publish_forged(&forger, &across, &[]).await?;
    let (error_type, reason) = next_dead_letter(&mut dead, StageName::Verifier).await?;
    assert_eq!(error_type, "forged", "{reason}");
    assert!(reason.contains(theirs.id.as_str()), "{reason}");

    // acme's own snapshot, claimed for a source it is not of.
    let elsewhere = VerifyRequested {
        source: Name::new("other")?,
        snapshot: mine.id.clone(),
        request_id: "forged-2".into(),
        ..across
    };
    publish_forged(&forger, &elsewhere, &[]).await?;
    let (error_type, reason) = next_dead_letter(&mut dead, StageName::Verifier).await?;
    assert_eq!(error_type, "forged", "{reason}");
    assert!(reason.contains("not other's"), "{reason}");

    for row in [&mine, &theirs] {
        assert_verified(&env.catalog.find_snapshot(&row.id).await?);
    }
    let recorded: i64 = env
        .sql()
        .await?
        .query_one("SELECT count(*) FROM verifications", &[])
        .await?
        .get(0);
    assert_eq!(recorded, 0);
    node.shutdown().await;
    Ok(())
}
