//! The data path end to end: a real tree through every stage and back.

use crate::harness::{Env, assert_verified, mixed_bytes};
use anyhow::Result;
use std::collections::BTreeMap;
use std::io::{Seek, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

pub(crate) fn build_tree(root: &Path) -> Result<()> {
    std::fs::create_dir_all(root.join("deep/er/still deeper"))?;
    std::fs::create_dir_all(root.join("empty dir"))?;
    std::fs::write(root.join("empty.txt"), b"")?;
    std::fs::write(root.join("deep/er/still deeper/empty too"), b"")?;
    std::fs::write(root.join("big.bin"), mixed_bytes(50 << 20, 42))?;
    std::fs::write(root.join("naïve café ☕.txt"), "unicode name\n")?;
    std::fs::write(root.join("with  spaces .md"), "# spaces\n")?;
    for i in 0..50 {
        std::fs::write(
            root.join(format!("deep/er/file-{i}.txt")),
            format!("small file {i}\n").repeat(i + 1),
        )?;
    }
    std::fs::write(root.join("deep/script.sh"), "#!/bin/sh\necho hi\n")?;
    std::fs::set_permissions(
        root.join("deep/script.sh"),
        std::fs::Permissions::from_mode(0o750),
    )?;
    std::fs::set_permissions(
        root.join("empty.txt"),
        std::fs::Permissions::from_mode(0o600),
    )?;
    std::os::unix::fs::symlink("deep/script.sh", root.join("link to script"))?;
    std::os::unix::fs::symlink("/nonexistent/target", root.join("dangling"))?;
    filetime::set_file_mtime(
        root.join("big.bin"),
        filetime::FileTime::from_unix_time(1_600_000_000, 123_456_789),
    )?;
    filetime::set_file_mtime(
        root.join("deep/er"),
        filetime::FileTime::from_unix_time(1_500_000_000, 0),
    )?;
    Ok(())
}

#[derive(Debug, PartialEq)]
pub(crate) enum Node {
    Dir {
        mode: u32,
        mtime: (i64, i64),
    },
    File {
        mode: u32,
        mtime: (i64, i64),
        content: Vec<u8>,
    },
    Link {
        target: std::path::PathBuf,
        mtime: (i64, i64),
    },
}

/// Everything a restore must reproduce: paths, kinds, bytes, modes, mtimes, link targets.
pub(crate) fn snapshot_of(root: &Path) -> Result<BTreeMap<String, Node>> {
    let mut out = BTreeMap::new();
    for entry in walk(root)? {
        let meta = std::fs::symlink_metadata(&entry)?;
        let rel = entry.strip_prefix(root)?.to_string_lossy().to_string();
        let mtime = (meta.mtime(), meta.mtime_nsec());
        let mode = meta.mode() & 0o7777;
        let node = if meta.file_type().is_symlink() {
            Node::Link {
                target: std::fs::read_link(&entry)?,
                mtime,
            }
        } else if meta.is_dir() {
            Node::Dir { mode, mtime }
        } else {
            Node::File {
                mode,
                mtime,
                content: std::fs::read(&entry)?,
            }
        };
        out.insert(rel, node);
    }
    Ok(out)
}

/// Asserts `got` holds the same paths as `want`, each with the same kind,
/// mode, mtime and content (or target); `what` names the copy in failures.
pub(crate) fn assert_same_tree(want: &Path, got: &Path, what: &str) -> Result<()> {
    let (want, got) = (snapshot_of(want)?, snapshot_of(got)?);
    assert_eq!(
        want.keys().collect::<Vec<_>>(),
        got.keys().collect::<Vec<_>>(),
        "{what}: the paths differ"
    );
    for (path, node) in &want {
        assert!(got[path] == *node, "{path} differs after {what}");
    }
    Ok(())
}

/// Asserts `got` holds the same paths as `want` with the same file
/// contents and link targets, whatever their metadata.
pub(crate) fn assert_same_contents(want: &Path, got: &Path) -> Result<()> {
    let strip = |tree: BTreeMap<String, Node>| -> BTreeMap<String, Option<Vec<u8>>> {
        tree.into_iter()
            .map(|(path, node)| {
                let content = match node {
                    Node::File { content, .. } => Some(content),
                    Node::Link { target, .. } => Some(target.into_os_string().into_encoded_bytes()),
                    Node::Dir { .. } => None,
                };
                (path, content)
            })
            .collect()
    };
    assert!(
        strip(snapshot_of(want)?) == strip(snapshot_of(got)?),
        "{} and {} differ in paths or contents",
        want.display(),
        got.display()
    );
    Ok(())
}

fn walk(root: &Path) -> Result<Vec<std::path::PathBuf>> {
    let mut all = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if std::fs::symlink_metadata(&path)?.is_dir() {
                stack.push(path.clone());
            }
            all.push(path);
        }
    }
    Ok(all)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tree_round_trips_byte_identical_and_the_second_backup_dedups() -> Result<()> {
    let env = Env::new().await?;
    let tree = env.path("tree");
    build_tree(&tree)?;
    // Many more entries than the restore's queue holds, so its reader waits
    // for the writer again and again.
    let many = tree.join("many");
    std::fs::create_dir(&many)?;
    for i in 0..3000 {
        std::fs::write(
            many.join(format!("{i:04}.txt")),
            format!("small file {i}\n"),
        )?;
    }
    env.tenant_with_source(&tree).await?;
    let node = env.node().await?;

    env.cli(&["backup", "acme/docs", "--wait", "--timeout", "300"])
        .await?;
    let first = env.wait_final(1).await?;
    assert_verified(&first);
    assert!(
        first.bytes_read >= 50 << 20,
        "read {} bytes",
        first.bytes_read
    );

    let restored = env.restore_to(&first.id, "restored").await?;
    assert_same_tree(&tree, &restored, "the restore")?;

    env.cli(&["backup", "acme/docs", "--wait", "--timeout", "300"])
        .await?;
    let second = env.wait_final(2).await?;
    assert_verified(&second);
    assert_ne!(second.id, first.id);
    assert!(
        (second.bytes_new as f64) < 0.01 * second.bytes_read as f64,
        "second backup staged {} new bytes of {}",
        second.bytes_new,
        second.bytes_read
    );
    assert!(
        (second.bytes_stored as f64) < 0.01 * second.bytes_read as f64,
        "second backup stored {} bytes of {}",
        second.bytes_stored,
        second.bytes_read
    );
    // The auditor records every event of the snapshot (started, extracted, stored, verified, …).
    let catalog = env.catalog.clone();
    let id = second.id.clone();
    vaultline_testkit::eventually(
        Duration::from_secs(10),
        "the audit trail of the second snapshot",
        || {
            let (catalog, id) = (catalog.clone(), id.clone());
            async move { catalog.audit_count(Some(&id)).await.unwrap_or(0) >= 4 }
        },
    )
    .await?;
    node.shutdown().await;
    Ok(())
}

/// The files cache: an incremental backup reuses the chunk lists of files
/// whose stat is unchanged, sees every kind of change, and reads files again
/// when their cached chunks are no longer in the catalog.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn incremental_backups_reuse_unchanged_files_and_see_every_change() -> Result<()> {
    let env = Env::new().await?;
    let tree = env.path("tree");
    build_tree(&tree)?;
    // A second large file, after small ones in walk order: both large files
    // change below and are read at once while small ones wait between them.
    let middle = tree.join("deep/middle.bin");
    std::fs::write(&middle, mixed_bytes(12 << 20, 43))?;
    env.tenant_with_source(&tree).await?;
    let node = env.node().await?;
    // Files changed in the second before a backup are left out of the cache
    // (a later write in the same tick would look unchanged); let them age.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    env.cli(&["backup", "acme/docs", "--wait", "--timeout", "300"])
        .await?;
    assert_verified(&env.wait_final(1).await?);
    let cache = env.path("staging/.cache/files/acme/docs");
    let cached = std::fs::metadata(&cache)?.len();
    assert!(cached > 1000, "the files cache holds {cached} bytes");

    let restore_matches = |n: usize| {
        let (env, tree) = (&env, &tree);
        async move {
            let row = env.wait_final(n).await?;
            assert_verified(&row);
            let restored = env.restore_to(&row.id, &format!("restored-{n}")).await?;
            assert_same_tree(tree, &restored, &format!("restoring snapshot {n}"))?;
            anyhow::Ok(row)
        }
    };

    // Every kind of change, including one that keeps the size and the mtime.
    let er = tree.join("deep/er");
    std::fs::OpenOptions::new()
        .append(true)
        .open(er.join("file-3.txt"))?
        .write_all(b"appended\n")?;
    let same_size = er.join("file-4.txt");
    let old = std::fs::metadata(&same_size)?;
    std::fs::write(&same_size, "SMALL FILE 4\n".repeat(5))?;
    filetime::set_file_mtime(
        &same_size,
        filetime::FileTime::from_last_modification_time(&old),
    )?;
    std::fs::remove_file(er.join("file-5.txt"))?;
    std::fs::write(er.join("file-5b.txt"), "new\n")?;
    let mut big = std::fs::OpenOptions::new()
        .write(true)
        .open(tree.join("big.bin"))?;
    big.seek(std::io::SeekFrom::Start(20 << 20))?;
    big.write_all(&[7u8; 4096])?;
    drop(big);
    std::fs::OpenOptions::new()
        .append(true)
        .open(&middle)?
        .write_all(&mixed_bytes(1 << 20, 44))?;
    filetime::set_file_mtime(
        tree.join("big.bin"),
        filetime::FileTime::from_unix_time(1_600_000_000, 123_456_789),
    )?;
    env.cli(&["backup", "acme/docs", "--wait", "--timeout", "300"])
        .await?;
    let second = restore_matches(2).await?;
    assert!(
        second.bytes_new < 10 << 20,
        "the second backup staged {} new bytes",
        second.bytes_new
    );

    // As if retention had collected every chunk since: nothing cached may be
    // trusted now, and every file is read and stored again.
    env.sql()
        .await?
        .execute("DELETE FROM chunks WHERE tenant = 'acme'", &[])
        .await?;
    env.cli(&["backup", "acme/docs", "--wait", "--timeout", "300"])
        .await?;
    let third = restore_matches(3).await?;
    assert!(
        third.bytes_new >= 50 << 20,
        "with no chunk left in the catalog the third backup staged only {} bytes",
        third.bytes_new
    );
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_plain_nats_json_trigger_produces_a_verified_snapshot() -> Result<()> {
    let (env, _tree) = Env::with_small_source().await?;
    let node = env.node().await?;
    // Exactly what an operator types: nats pub vaultline.backup.request.acme.docs '{}'
    let client = env.nats_as("operator").await?;
    client
        .publish("vaultline.backup.request.acme.docs", "{}".into())
        .await?;
    client.flush().await?;
    let row = env.wait_final(1).await?;
    assert_verified(&row);
    assert_eq!(row.trigger, "external");
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restoring_with_another_tenants_identity_fails_clearly() -> Result<()> {
    let (env, tree) = Env::with_small_source().await?;
    env.cli(&["tenant", "create", "other"]).await?;
    let other_identity = env.export_identity("other").await?;
    let node = env.node().await?;
    env.cli(&["backup", "acme/docs", "--wait", "--timeout", "120"])
        .await?;
    let row = env.wait_final(1).await?;
    assert_verified(&row);

    let target = env.path("nope");
    let err = env
        .cli(&[
            "restore",
            row.id.as_str(),
            "--to",
            target.to_str().unwrap(),
            "--identity",
            other_identity.to_str().unwrap(),
        ])
        .await
        .expect_err("another tenant's identity must not restore");
    let text = format!("{err:#}");
    assert!(text.contains("does not match"), "unclear error: {text}");
    assert!(
        !text.contains("AGE-SECRET-KEY"),
        "error leaks key material: {text}"
    );
    assert!(
        std::fs::read_dir(&target)
            .map(|d| d.count() == 0)
            .unwrap_or(true),
        "nothing may be written"
    );

    // The tenant's own identity, exported, restores with no KEK needed.
    let own = env.export_identity("acme").await?;
    let target = env.path("yes");
    env.cli(&[
        "restore",
        row.id.as_str(),
        "--to",
        target.to_str().unwrap(),
        "--identity",
        own.to_str().unwrap(),
    ])
    .await?;
    assert_eq!(
        std::fs::read(target.join("a.txt"))?,
        std::fs::read(tree.join("a.txt"))?
    );
    tokio::time::sleep(Duration::from_millis(10)).await;
    node.shutdown().await;
    Ok(())
}
