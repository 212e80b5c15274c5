//! A catalog lost and rebuilt from the repository and the KEK alone: the
//! snapshot list comes back as it was, every snapshot restores, the next
//! backup dedups against what was there, and garbage collection finds
//! nothing to delete.

use crate::harness::{Env, assert_verified};
use crate::pipeline::{assert_same_tree, build_tree};
use crate::sources::{PG_PASSWORD, PG_SHOP, pg_fingerprint, restore_into_postgres};
use anyhow::Result;
use vaultline_storage::ObjectKey;
use vaultline_testkit::Postgres;
use vaultline_types::Name;

/// What must survive a rebuild of every snapshot, as the catalog holds it.
async fn recorded(env: &Env) -> Result<Vec<String>> {
    let client = env.sql().await?;
    let rows = client
        .query(
            "SELECT concat_ws(' ', tenant, id, source, status, files, bytes_read, source_digest,
                 manifest_digest, manifest_size, key_id, tables::text)
             FROM snapshots ORDER BY tenant, id",
            &[],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_catalog_rebuilt_from_the_bucket_and_the_kek_restores_dedups_and_loses_nothing()
-> Result<()> {
    let env = Env::with_s3().await?;
    let tree = env.path("tree");
    build_tree(&tree)?;
    env.tenant_with_source(&tree).await?;
    let pg = Postgres::start_with_password(PG_PASSWORD)?;
    pg.psql("postgres", "CREATE DATABASE shop")?;
    pg.psql("shop", PG_SHOP)?;
    let shop = pg_fingerprint(&pg, "shop")?;
    crate::sources::add_postgres_source(&env, &pg, "shop", &[]).await?;
    let payload = env.path("payload.bin");
    std::fs::write(&payload, crate::harness::mixed_bytes(3 << 20, 11))?;
    env.cli(&[
        "source",
        "add",
        "acme/blob",
        "--type",
        "command",
        "--command",
        &format!("cat {}", payload.display()),
    ])
    .await?;

    let node = env.node().await?;
    for round in 1..=3 {
        for source in ["docs", "shop", "blob"] {
            env.cli(&[
                "backup",
                &format!("acme/{source}"),
                "--wait",
                "--timeout",
                "300",
            ])
            .await?;
            assert_verified(&env.wait_final_of(source, round).await?);
        }
    }
    node.shutdown().await;
    let before = recorded(&env).await?;
    assert_eq!(before.len(), 9, "{before:#?}");
    let repo = vaultline_runtime::deps::open_repository(&env.config().repository, None).await?;
    let packs_before = repo.list(&ObjectKey::packs(&Name::new("acme")?)).await?;

    // The catalog database is dropped and made anew, empty.
    env._pg
        .psql("template1", "DROP DATABASE postgres WITH (FORCE)")?;
    env._pg.psql("template1", "CREATE DATABASE postgres")?;
    let started = std::time::Instant::now();
    let (ok, stdout, stderr) = env
        .run_cli(
            &[
                "catalog",
                "rebuild",
                "--repo",
                "s3://vaultline/repo",
                "--json",
            ],
            &[],
        )
        .await?;
    assert!(ok, "rebuild failed: {stdout}{stderr}");
    eprintln!("rebuild took {:?}", started.elapsed());
    let report: serde_json::Value = serde_json::from_str(&stdout)?;
    assert_eq!(report["tenants"], serde_json::json!(["acme"]));
    assert_eq!(report["keys"], 1);
    assert_eq!(report["snapshots"], 9);
    assert_eq!(report["packs"], packs_before.len());
    assert!(report["chunks"].as_u64().unwrap() > 0, "{report}");
    for empty in [
        "tenants_skipped",
        "packs_damaged",
        "snapshots_corrupt",
        "manifests_unreadable",
        "sources_without_config",
    ] {
        assert_eq!(report[empty], serde_json::json!([]), "{empty}: {report}");
    }
    assert_eq!(
        report["sources"],
        serde_json::json!(["acme/blob", "acme/docs", "acme/shop"])
    );
    // The snapshot list is the one from before: ids, sources, sizes,
    // digests, table counts, keys, and verified.
    assert_eq!(recorded(&env).await?, before);
    // A catalog that holds anything is not rebuilt over.
    let (ok, _, stderr) = env
        .run_cli(
            &["catalog", "rebuild", "--repo", "s3://vaultline/repo"],
            &[],
        )
        .await?;
    assert!(!ok && stderr.contains("fills an empty catalog"), "{stderr}");

    // Every snapshot restores, with the rebuilt catalog's keys.
    let acme = Name::new("acme")?;
    let catalog = vaultline_catalog::Catalog::connect(env._pg.url())?;
    for (n, row) in catalog
        .snapshots(Some(&acme), Some(&Name::new("docs")?))
        .await?
        .iter()
        .enumerate()
    {
        let restored = env.restore_to(&row.id, &format!("docs-{n}")).await?;
        assert_same_tree(&tree, &restored, "a restore after the rebuild")?;
    }
    for (n, row) in catalog
        .snapshots(Some(&acme), Some(&Name::new("shop")?))
        .await?
        .iter()
        .enumerate()
    {
        let database = format!("restored_{n}");
        restore_into_postgres(&env, &pg, row.id.as_str(), &database).await?;
        assert_eq!(pg_fingerprint(&pg, &database)?, shop);
    }
    for row in catalog
        .snapshots(Some(&acme), Some(&Name::new("blob")?))
        .await?
    {
        let config = env.config_file.to_str().unwrap();
        let out = env
            .bare_cli(
                &["--config", config, "restore", row.id.as_str(), "--to", "-"],
                &[],
            )
            .await?;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.stdout == std::fs::read(&payload)?, "{} differs", row.id);
    }

    // The next backup of the unchanged tree dedups against the rebuilt index.
    let node = env.node().await?;
    env.cli(&["backup", "acme/docs", "--wait", "--timeout", "300"])
        .await?;
    let next = env.wait_final(4).await?;
    assert_verified(&next);
    assert!(
        next.bytes_new * 100 < next.bytes_read,
        "{} new bytes of {}",
        next.bytes_new,
        next.bytes_read
    );
    node.shutdown().await;

    // Garbage collection (condemn, then sweep, no grace) deletes nothing:
    // every pack is some snapshot's.
    let packs_live = repo.list(&ObjectKey::packs(&acme)).await?;
    for _ in 0..2 {
        env.cli(&["gc", "--grace", "0s"]).await?;
    }
    assert_eq!(repo.list(&ObjectKey::packs(&acme)).await?, packs_live);
    let restored = env.restore_to(&next.id, "docs-next").await?;
    assert_same_tree(&tree, &restored, "a restore after GC")?;
    Ok(())
}
