//! Damage and hostility: one flipped byte in a stored pack is found by both
//! verification levels and stops a restore before wrong bytes are written;
//! hand-made hostile manifests restore nothing outside the target.

use crate::harness::{Env, assert_verified};
use anyhow::{Context, Result};
use std::path::Path;
use vaultline_catalog::SnapshotStatus;
use vaultline_format::manifest::{
    ChunkRef, Entry, EntryKind, Footer, Header, Location, Record, SealedWriter,
};
use vaultline_storage::ObjectKey;
use vaultline_types::{ChunkId, Name, PackId, SnapshotId};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flipped_byte_in_a_pack_is_corrupt_at_both_levels_and_restore_refuses() -> Result<()> {
    let env = Env::new().await?;
    let tree = env.path("tree");
    std::fs::create_dir_all(&tree)?;
    std::fs::write(
        tree.join("big.bin"),
        crate::harness::mixed_bytes(6 << 20, 3),
    )?;
    std::fs::write(tree.join("small.txt"), "small and separate\n")?;
    env.tenant_with_source(&tree).await?;
    let node = env.node().await?;
    env.cli(&["backup", "acme/docs", "--wait", "--timeout", "120"])
        .await?;
    let row = env.wait_final(1).await?;
    assert_verified(&row);
    node.shutdown().await;

    let tenant = Name::new("acme")?;
    let packs = env.catalog.snapshot_packs(&tenant, &row.id).await?;
    let (pack, size) = packs.first().copied().context("a pack")?;
    let path = env.path("repository").join(ObjectKey::pack(&tenant, &pack));
    let mut bytes = std::fs::read(&path)?;
    let at = (size / 3) as usize; // inside a blob, past the header
    bytes[at] ^= 0x01;
    std::fs::write(&path, &bytes)?;

    // Level 1 alone: the digest no longer matches, and the pack is named.
    let (code, level1) = verify_json(&env, &row.id, &[]).await?;
    assert_eq!(code, Some(1));
    let error = level1["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(&format!("pack {pack} does not match its recorded digest")),
        "{error}"
    );
    let marked = env.catalog.find_snapshot(&row.id).await?;
    assert_eq!(marked.status, SnapshotStatus::Corrupt);
    assert!(marked.error.unwrap_or_default().contains(&pack.to_string()));

    // Level 2 finds it on its own: decrypting the damaged blob fails.
    let (code, level2) = verify_json(&env, &row.id, &["--full"]).await?;
    assert_eq!(code, Some(1));
    let error = level2["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(&format!("level 2: pack {pack} is damaged")),
        "{error}"
    );

    // Restore fails loudly, and what it leaves behind is never wrong.
    let target = env.path("restored");
    let err = env
        .cli(&["restore", row.id.as_str(), "--to", target.to_str().unwrap()])
        .await
        .expect_err("a damaged pack must not restore");
    assert!(format!("{err:#}").contains("is damaged"), "{err:#}");
    for entry in std::fs::read_dir(&target)? {
        let entry = entry?;
        let name = entry.file_name();
        let original = tree.join(&name);
        assert!(
            original.exists() && std::fs::read(entry.path())? == std::fs::read(&original)?,
            "restore left {name:?}, which is not the original"
        );
    }
    Ok(())
}

/// After each snapshot the verifier re-hashes new packs and packs not
/// re-hashed within `rehash-after`, and checks the others by size: a flipped
/// byte in an old pack is found once it is due, a truncated one at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn old_packs_are_checked_by_size_and_rehashed_when_due() -> Result<()> {
    let env = Env::new().await?;
    let tree = env.path("tree");
    std::fs::create_dir_all(&tree)?;
    std::fs::write(tree.join("a.bin"), crate::harness::mixed_bytes(3 << 20, 5))?;
    env.tenant_with_source(&tree).await?;
    let tenant = Name::new("acme")?;
    let node = env.node().await?;
    let backup = || env.cli(&["backup", "acme/docs", "--wait", "--timeout", "120"]);
    backup().await?;
    let first = env.wait_final(1).await?;
    assert_verified(&first);
    let old = env
        .catalog
        .packs_to_verify(&tenant, &first.id, std::time::Duration::from_secs(3600))
        .await?;
    assert!(!old.is_empty());
    assert!(
        old.iter().all(|p| p.hashed_recently),
        "the first verification hashed every new pack: {old:?}"
    );
    let pack_path = |id: &PackId| env.path("repository").join(ObjectKey::pack(&tenant, id));

    // A flipped byte in a pack hashed a moment ago: the next snapshot (which
    // references it, and one new pack) checks it by size only.
    let flipped = old[0];
    let mut bytes = std::fs::read(pack_path(&flipped.id))?;
    let at = (flipped.size / 2) as usize;
    bytes[at] ^= 0x01;
    std::fs::write(pack_path(&flipped.id), &bytes)?;
    std::fs::write(tree.join("b.bin"), crate::harness::mixed_bytes(1 << 20, 6))?;
    backup().await?;
    let second = env.wait_final(2).await?;
    assert_verified(&second);

    // Once its last hash is older than rehash-after (7 days by default),
    // the next snapshot reads it back and finds the flip.
    env.sql()
        .await?
        .execute(
            "UPDATE packs SET hashed_at = now() - interval '8 days' WHERE id = $1",
            &[&flipped.id.0.as_slice()],
        )
        .await?;
    let error = corrupt_backup(&env, &tree, "c.bin", 7, 3).await?;
    assert!(
        error.contains(&format!(
            "pack {} does not match its recorded digest",
            flipped.id
        )),
        "{error}"
    );

    // A pack cut short is found by the size check, however recently hashed.
    std::fs::write(pack_path(&flipped.id), &bytes[..at])?;
    let error = corrupt_backup(&env, &tree, "d.bin", 8, 4).await?;
    assert!(
        error.contains(&format!(
            "pack {} has {at} bytes, {} recorded",
            flipped.id, flipped.size
        )),
        "{error}"
    );
    node.shutdown().await;
    Ok(())
}

/// Adds `file` to `tree` and backs it up, expecting the `count`th snapshot
/// of acme/docs to end corrupt; returns its error.
async fn corrupt_backup(
    env: &Env,
    tree: &Path,
    file: &str,
    seed: u64,
    count: usize,
) -> Result<String> {
    std::fs::write(tree.join(file), crate::harness::mixed_bytes(1 << 20, seed))?;
    let err = env
        .cli(&["backup", "acme/docs", "--wait", "--timeout", "120"])
        .await
        .expect_err("the snapshot ends corrupt");
    assert!(format!("{err:#}").contains("ended corrupt"), "{err:#}");
    let row = env.wait_final(count).await?;
    assert_eq!(row.status, SnapshotStatus::Corrupt, "{row:?}");
    Ok(row.error.unwrap_or_default())
}

/// `vaultline verify <snapshot> --json [more]`: its exit code and report.
async fn verify_json(
    env: &Env,
    snapshot: &SnapshotId,
    more: &[&str],
) -> Result<(Option<i32>, serde_json::Value)> {
    let mut args = vec![
        "--config".to_owned(),
        env.config_file.display().to_string(),
        "verify".into(),
        snapshot.to_string(),
        "--json".into(),
    ];
    args.extend(more.iter().map(|a| (*a).to_owned()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = env.bare_cli(&args, &[]).await?;
    Ok((out.status.code(), serde_json::from_slice(&out.stdout)?))
}

/// Seals a manifest with `records` for snapshot `id` of acme into the fs repository.
fn plant_manifest(env: &Env, identity: &Path, id: &SnapshotId, entries: Vec<Entry>) -> Result<()> {
    let identity = vaultline_format::keys::parse_identity(&std::fs::read_to_string(identity)?)?;
    let tenant = Name::new("acme")?;
    let mut writer = SealedWriter::new(Vec::new(), &identity.to_public())?;
    writer.write(&Record::Header(Header {
        format: vaultline_format::FORMAT_VERSION,
        tenant: tenant.clone(),
        source: Name::new("docs")?,
        snapshot: id.clone(),
        source_kind: "files".into(),
        created: 1_700_000_000,
        key_id: "hostile".into(),
        content_hash: Default::default(),
        source_config: None,
    }))?;
    let count = entries.len() as u64;
    for entry in entries {
        writer.write(&Record::Entry(entry))?;
    }
    writer.write(&Record::Footer(Footer {
        entries: count,
        bytes: 0,
        source_digest: "00".into(),
        packs: vec![],
        tables: vec![],
    }))?;
    let path = env
        .path("repository")
        .join(ObjectKey::manifest(&tenant, id));
    std::fs::create_dir_all(path.parent().context("parent")?)?;
    std::fs::write(path, writer.finish()?)?;
    Ok(())
}

fn entry(path: &str, kind: EntryKind, target: Option<&str>) -> Entry {
    Entry {
        path: path.as_bytes().to_vec(),
        kind,
        mode: 0o644,
        mtime: 1_700_000_000,
        mtime_nanos: 0,
        size: if kind == EntryKind::File { 5 } else { 0 },
        target: target.map(|t| t.as_bytes().to_vec()),
        chunks: if kind == EntryKind::File {
            vec![ChunkRef {
                id: ChunkId([7; 32]),
                raw_length: 5,
                location: Some(Location {
                    pack: PackId([9; 32]),
                    offset: 8,
                    length: 200,
                }),
            }]
        } else {
            vec![]
        },
        ..Entry::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_manifests_restore_nothing_outside_the_target() -> Result<()> {
    let (env, _tree) = Env::with_small_source().await?;
    let identity = env.export_identity("acme").await?;
    // The restore target sits inside `jail`; everything else in `jail` is "outside".
    let jail = env.path("jail");
    let outside = jail.join("outside");
    std::fs::create_dir_all(&outside)?;
    let cases: Vec<(&str, Vec<Entry>, &str)> = vec![
        (
            "climbs out with ..",
            vec![entry("../escaped.txt", EntryKind::File, None)],
            "climbs out with '..'",
        ),
        (
            "absolute path",
            vec![entry(
                &format!("{}/absolute.txt", outside.display()),
                EntryKind::File,
                None,
            )],
            "the path is absolute",
        ),
        (
            "a symlink, then a file through it",
            vec![
                entry("link", EntryKind::Symlink, Some(outside.to_str().unwrap())),
                entry("link/through.txt", EntryKind::File, None),
            ],
            "a parent is a symlink",
        ),
        (
            "a directory named like the symlink's target, nested",
            vec![
                entry("a", EntryKind::Dir, None),
                entry("a/up", EntryKind::Symlink, Some("../..")),
                entry("a/up/escaped-again.txt", EntryKind::File, None),
            ],
            "a parent is a symlink",
        ),
        (
            "a symlink, then a directory of the same name",
            vec![
                entry("d", EntryKind::Symlink, Some(outside.to_str().unwrap())),
                entry("d", EntryKind::Dir, None),
                entry("d/in.txt", EntryKind::File, None),
            ],
            "a symlink or a file is in the way",
        ),
    ];
    let outside_mode = std::fs::metadata(&outside)?.permissions();
    for (i, (what, entries, refusal)) in cases.into_iter().enumerate() {
        let id = SnapshotId::parse(&format!("20250101T00000{i}Z-0000000{i}"))?;
        plant_manifest(&env, &identity, &id, entries)?;
        let target = jail.join(format!("target-{i}"));
        let out = env
            .bare_cli(
                &[
                    "restore",
                    id.as_str(),
                    "--repo",
                    &format!("file://{}", env.path("repository").display()),
                    "--identity",
                    identity.to_str().unwrap(),
                    "--tenant",
                    "acme",
                    "--to",
                    target.to_str().unwrap(),
                ],
                &[],
            )
            .await?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{what}: restore succeeded");
        assert!(stderr.contains(refusal), "{what}: {stderr}");
        // Nothing landed beside the target or in `outside`.
        let mut landed: Vec<String> = std::fs::read_dir(&jail)?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<std::io::Result<_>>()?;
        landed.retain(|n| n != "outside" && !n.starts_with("target-"));
        assert!(
            landed.is_empty(),
            "{what}: wrote {landed:?} outside the target"
        );
        assert_eq!(std::fs::read_dir(&outside)?.count(), 0, "{what}");
        assert!(!env.path("escaped.txt").exists());
        assert_eq!(
            std::fs::metadata(&outside)?.permissions(),
            outside_mode,
            "{what}: changed the mode of a directory outside"
        );
    }
    Ok(())
}
