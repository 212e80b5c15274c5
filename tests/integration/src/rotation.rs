//! Key rotation across backups: the tenant key between backups 1 and 2,
//! the KEK and the credentials key between 2 and 3. Every snapshot still
//! restores and verifies at level 2, dedup goes on across the tenant key's
//! rotation, new packs name their key, the repository's key records open
//! with the new KEK only, a source credential opens with the new
//! credentials key, and each rotation is in the audit trail, which verifies.

use crate::harness::{Env, assert_verified};
use crate::pipeline::{build_tree, snapshot_of};
use anyhow::Result;
use vaultline_format::key_record::KeyRecord;
use vaultline_format::keys::{Kek, key_id};
use vaultline_storage::ObjectKey;
use vaultline_types::Name;

fn kek_of(path: &std::path::Path) -> Result<Kek> {
    Ok(Kek::parse(&std::fs::read_to_string(path)?)?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rotating_the_tenant_key_the_kek_and_the_credentials_key_loses_nothing() -> Result<()> {
    let env = Env::new().await?;
    let tree = env.path("tree");
    build_tree(&tree)?;
    env.tenant_with_source(&tree).await?;
    let token_file = env.path("token");
    std::fs::write(&token_file, "tok-rotate-secret")?;
    let payload = env.path("payload.bin");
    std::fs::write(&payload, crate::harness::mixed_bytes(2 << 20, 5))?;
    env.cli(&[
        "source",
        "add",
        "acme/vault",
        "--type",
        "command",
        "--command",
        &format!(
            "test \"$VAULT_TOKEN\" = tok-rotate-secret && cat {}",
            payload.display()
        ),
        "--secret-file",
        token_file.to_str().unwrap(),
        "--secret-env",
        "VAULT_TOKEN",
    ])
    .await?;
    let acme = Name::new("acme")?;
    let node = env.node().await?;
    env.cli(&["backup", "acme/docs", "--wait", "--timeout", "300"])
        .await?;
    let first = env.wait_final(1).await?;
    assert_verified(&first);
    let first_tree = snapshot_of(&tree)?;

    // The tenant key, between backups 1 and 2.
    env.cli(&["tenant", "rotate-key", "acme"]).await?;
    let keys = env.catalog.tenant_keys(&acme).await?;
    assert_eq!(keys.len(), 2);
    assert!(keys[0].active && !keys[1].active);
    assert_eq!(keys[1].key_id, first.key_id);
    assert_eq!(
        keys[0].chunk_key, keys[1].chunk_key,
        "the chunk-id key is carried over"
    );
    let rotated_at: Option<time::OffsetDateTime> = env
        .sql()
        .await?
        .query_one(
            "SELECT rotated_at FROM tenant_keys WHERE tenant = 'acme' AND key_id = $1",
            &[&first.key_id],
        )
        .await?
        .get(0);
    assert!(rotated_at.is_some());
    std::fs::write(tree.join("added after the rotation.txt"), "new\n")?;
    env.cli(&["backup", "acme/docs", "--wait", "--timeout", "300"])
        .await?;
    let second = env.wait_final(2).await?;
    assert_verified(&second);
    assert_eq!(second.key_id, keys[0].key_id);
    // Dedup goes on: the 50 MiB file is not stored again.
    assert!(
        second.bytes_new * 100 < second.bytes_read,
        "{} new of {}",
        second.bytes_new,
        second.bytes_read
    );
    // The second snapshot uses packs of both keys; its new pack names the new key.
    let old_packs = env.catalog.snapshot_packs(&acme, &first.id).await?;
    let new_packs = env.catalog.snapshot_packs(&acme, &second.id).await?;
    assert!(new_packs.iter().any(|p| old_packs.contains(p)));
    let (fresh, _) = new_packs
        .iter()
        .find(|p| !old_packs.contains(p))
        .copied()
        .expect("a pack only the second snapshot has");
    let bytes = std::fs::read(env.path("repository").join(ObjectKey::pack(&acme, &fresh)))?;
    assert_eq!(
        vaultline_format::pack::PackKey::key_id(&bytes),
        Some(second.key_id.as_str())
    );
    let second_tree = snapshot_of(&tree)?;
    env.cli(&["backup", "acme/vault", "--wait", "--timeout", "120"])
        .await?;
    assert_verified(&env.wait_final_of("vault", 1).await?);
    node.shutdown().await;

    // The KEK and the credentials key, between backups 2 and 3.
    let (old_kek, new_kek_file) = (kek_of(&env.path("kek.txt"))?, env.path("kek-2.txt"));
    let new_credentials_file = env.path("credentials-key-2.txt");
    for file in [&new_kek_file, &new_credentials_file] {
        env.cli(&["kek-generate", file.to_str().unwrap()]).await?;
    }
    let (ok, out, err) = env
        .run_cli(
            &["kek", "rotate", "--new", new_kek_file.to_str().unwrap()],
            &[],
        )
        .await?;
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("2 key record(s) written, 2 old one(s) removed"),
        "{out}"
    );
    let (ok, out, err) = env
        .run_cli(
            &[
                "credentials-key",
                "rotate",
                "--new",
                new_credentials_file.to_str().unwrap(),
            ],
            &[],
        )
        .await?;
    assert!(
        ok && out.contains("1 source credential(s) re-sealed"),
        "{out}{err}"
    );
    // The same rotation again is refused: the old key is no longer the one in use.
    let (ok, _, err) = env
        .run_cli(
            &["kek", "rotate", "--new", new_kek_file.to_str().unwrap()],
            &[],
        )
        .await?;
    assert!(!ok, "rotating with the old KEK configured must fail: {err}");
    let config = std::fs::read_to_string(&env.config_file)?
        .replace(
            &env.path("kek.txt").display().to_string(),
            &new_kek_file.display().to_string(),
        )
        .replace(
            &env.path("credentials-key.txt").display().to_string(),
            &new_credentials_file.display().to_string(),
        );
    std::fs::write(&env.config_file, config)?;

    // The repository's key records open with the new KEK only.
    let new_kek = kek_of(&new_kek_file)?;
    let repo = vaultline_runtime::deps::open_repository(&env.config().repository, None).await?;
    let records = repo.list(&ObjectKey::key_records(&acme)).await?;
    assert_eq!(records.len(), 2, "{records:?}");
    let mut created = Vec::new();
    for object in &records {
        let record = KeyRecord::parse(&repo.get(object).await?)?;
        created.push((record.created, record.key_id.clone()));
        assert_eq!(record.kek_id, new_kek.id());
        record.open_with_kek(&new_kek)?;
        assert!(record.open_with_kek(&old_kek).is_err());
        let wrapped = env
            .catalog
            .key(&acme, &record.key_id)
            .await?
            .wrapped_identity;
        assert!(old_kek.unwrap(&wrapped).is_err());
        assert_eq!(
            key_id(&new_kek.unwrap(&wrapped)?.to_public().to_string()),
            record.key_id
        );
    }

    // The new key's record is strictly newer (records carry seconds), so a
    // rebuilt catalog makes it the active one.
    created.sort();
    assert!(created[0].0 < created[1].0, "{created:?}");
    assert_eq!(created[1].1, second.key_id);

    let node = env.node().await?;
    std::fs::write(
        tree.join("deep/er/file-3.txt"),
        "rewritten after the KEK rotation\n",
    )?;
    env.cli(&["backup", "acme/docs", "--wait", "--timeout", "300"])
        .await?;
    let third = env.wait_final(3).await?;
    assert_verified(&third);
    // The extractor opened the credential with the new credentials key.
    env.cli(&["backup", "acme/vault", "--wait", "--timeout", "120"])
        .await?;
    assert_verified(&env.wait_final_of("vault", 2).await?);
    node.shutdown().await;

    let (first_id, third_key) = (first.id.clone(), third.key_id.clone());
    // Every snapshot verifies at level 2 and restores as it was.
    for (n, (row, want)) in [
        (first, first_tree),
        (second, second_tree),
        (third, snapshot_of(&tree)?),
    ]
    .into_iter()
    .enumerate()
    {
        let (ok, out, err) = env
            .run_cli(&["verify", row.id.as_str(), "--full"], &[])
            .await?;
        assert!(ok && out.contains("level 2 ok"), "{}: {out}{err}", row.id);
        let restored = env.restore_to(&row.id, &format!("restored-{n}")).await?;
        assert!(
            snapshot_of(&restored)? == want,
            "snapshot {} restores differently",
            row.id
        );
    }

    // Each rotation is in the trail, which verifies.
    let mut kinds: Vec<String> = env
        .sql()
        .await?
        .query(
            "SELECT payload::jsonb->>'key' FROM audit_events
             WHERE tenant = 'acme' AND kind = 'key.rotated' ORDER BY seq",
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    // (The auditor records events it finds queued in parallel: any order.)
    kinds.sort();
    assert_eq!(kinds, ["credentials-key", "kek", "tenant-key"]);
    env.cli(&["audit", "verify"]).await?;

    // The exported identity file holds both keys: with it alone, the oldest
    // snapshot restores from the repository with no catalog.
    let identity = env.export_identity("acme").await?;
    let text = std::fs::read_to_string(&identity)?;
    assert_eq!(
        text.matches("AGE-SECRET-KEY-1").count(),
        2,
        "{}",
        text.lines().count()
    );
    let offline = env.path("restored-offline");
    let repo_url = format!("file://{}", env.path("repository").display());
    let (ok, out, err) = env
        .run_cli(
            &[
                "restore",
                first_id.as_str(),
                "--repo",
                &repo_url,
                "--identity",
                identity.to_str().unwrap(),
                "--to",
                offline.to_str().unwrap(),
            ],
            &[],
        )
        .await?;
    assert!(ok, "{out}{err}");
    assert!(snapshot_of(&offline)? == snapshot_of(&env.path("restored-0"))?);

    // A catalog rebuilt from the repository knows both keys, the newest
    // active, and the oldest snapshot still restores with it.
    env._pg
        .psql("template1", "DROP DATABASE postgres WITH (FORCE)")?;
    env._pg.psql("template1", "CREATE DATABASE postgres")?;
    let (ok, out, err) = env.run_cli(&["catalog", "rebuild"], &[]).await?;
    assert!(ok, "{out}{err}");
    let rebuilt = vaultline_catalog::Catalog::connect(env._pg.url())?;
    let keys = rebuilt.tenant_keys(&acme).await?;
    assert_eq!(keys.len(), 2);
    assert!(keys[0].active && keys[0].key_id == third_key);
    let again = env.restore_to(&first_id, "restored-again").await?;
    assert!(snapshot_of(&again)? == snapshot_of(&env.path("restored-0"))?);
    Ok(())
}
