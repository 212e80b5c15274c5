//! The sftp source against a real OpenSSH server started by the harness:
//! password and key logins, the host key pin, a second backup that reads
//! almost nothing over the link, a connection killed mid-transfer, and a
//! password that goes nowhere but the sealed credential and the server.

use crate::fixtures::{Process, all_but};
use crate::harness::{Env, assert_verified, mixed_bytes};
use crate::pipeline::assert_same_tree;
use crate::sources::assert_secret_nowhere;
use anyhow::{Context, Result};
use std::path::Path;
use std::time::{Duration, Instant};
use vaultline_catalog::SnapshotStatus;
use vaultline_testkit::{SFTP_USER, Sshd};
use vaultline_types::StageName;

const BIG: usize = 50 << 20;

/// Nested directories, a 50 MiB file, symlinks (one dangling), odd names, a
/// read-only directory and several modes, owned by the server's user, with
/// whole-second mtimes (all SFTP carries). Returns the bytes of its files.
fn build_remote_tree(root: &Path) -> Result<u64> {
    let write = |rel: &str, bytes: &[u8]| -> Result<u64> {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().context("a parent")?)?;
        std::fs::write(&path, bytes)?;
        Ok(bytes.len() as u64)
    };
    let mut bytes = write("big.bin", &mixed_bytes(BIG, 21))?;
    bytes += write("a/b/c/deep.txt", b"deep in the tree\n")?;
    bytes += write(
        "docs/\u{fc}n\u{ef}c\u{f6}d\u{e9} name.txt",
        "ünïcödé\n".as_bytes(),
    )?;
    bytes += write("docs/with space & 'quotes' \"too\".txt", b"quoted\n")?;
    bytes += write("docs/-leading-dash", b"dash\n")?;
    bytes += write("docs/tab\tand\nnewline", b"control characters\n")?;
    bytes += write(&format!("docs/{}.txt", "n".repeat(240)), b"a long name\n")?;
    bytes += write("docs/private.txt", b"only the owner\n")?;
    bytes += write("docs/empty", b"")?;
    bytes += write("bin/run.sh", b"#!/bin/sh\necho hi\n")?;
    bytes += write("frozen/kept.txt", b"read-only\n")?;
    std::os::unix::fs::symlink("a/b/c/deep.txt", root.join("link-to-deep"))?;
    std::os::unix::fs::symlink("nowhere/at all", root.join("dangling"))?;
    let chmod = |rel: &str, mode: u32| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(root.join(rel), std::fs::Permissions::from_mode(mode))
    };
    chmod("docs/private.txt", 0o600)?;
    chmod("bin/run.sh", 0o755)?;
    chmod("frozen/kept.txt", 0o444)?;
    chmod("frozen", 0o555)?;
    let status = std::process::Command::new("chown")
        .args(["-R", "--no-dereference", SFTP_USER])
        .arg(root)
        .status()?;
    anyhow::ensure!(status.success(), "chown -R {SFTP_USER} failed");
    whole_seconds(root)?;
    Ok(bytes)
}

/// Gives every entry below `root` an mtime of whole seconds, as SFTP
/// carries no more; children first, so a file's leaves its directory's alone.
fn whole_seconds(root: &Path) -> Result<()> {
    let mut paths: Vec<_> = walkdir::WalkDir::new(root)
        .min_depth(1)
        .into_iter()
        .map(|e| e.map(|e| e.into_path()))
        .collect::<Result<_, _>>()?;
    paths.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for (i, path) in paths.iter().enumerate() {
        let when = filetime::FileTime::from_unix_time(1_700_000_000 + i as i64 * 3600, 0);
        filetime::set_symlink_file_times(path, when, when)?;
    }
    Ok(())
}

/// Adds `acme/<name>` over `tree` on `sshd`, logging in with `login`
/// (extra flags), and returns the CLI's words.
async fn add_source(
    env: &Env,
    sshd: &Sshd,
    name: &str,
    tree: &Path,
    login: &[&str],
) -> Result<String> {
    let port = sshd.port.to_string();
    let mut args = vec![
        "source",
        "add",
        name,
        "--type",
        "sftp",
        "--host",
        "127.0.0.1",
        "--port",
        &port,
        "--user",
        SFTP_USER,
        "--path",
        tree.to_str().context("utf-8 path")?,
    ];
    args.extend_from_slice(login);
    env.cli_output(&args).await
}

/// Tenant `acme` with source `acme/<name>` over `tree`, logging in with the
/// server's password, its host key pinned; returns the pin.
async fn add_pinned_source(env: &Env, sshd: &Sshd, name: &str, tree: &Path) -> Result<String> {
    env.cli(&["tenant", "create", "acme"]).await?;
    let password_file = env.path("sftp-password");
    std::fs::write(&password_file, &sshd.password)?;
    let pin = sshd.host_key_fingerprint()?;
    add_source(
        env,
        sshd,
        &format!("acme/{name}"),
        tree,
        &[
            "--password-file",
            password_file.to_str().context("utf-8 path")?,
            "--host-key-fingerprint",
            &pin,
        ],
    )
    .await?;
    Ok(pin)
}

/// Source `acme/<name>` over `tree`, logging in with the server's client
/// key and its passphrase, the host key pinned when added; returns the pin
/// and the CLI's words.
async fn add_key_source(
    env: &Env,
    sshd: &Sshd,
    name: &str,
    tree: &Path,
) -> Result<(String, String)> {
    let passphrase = env.path("key-passphrase");
    std::fs::write(&passphrase, Sshd::CLIENT_KEY_PASSPHRASE)?;
    let pin = sshd.host_key_fingerprint()?;
    let key = sshd.client_key();
    let added = add_source(
        env,
        sshd,
        &format!("acme/{name}"),
        tree,
        &[
            "--key-file",
            key.to_str().context("utf-8 path")?,
            "--key-passphrase-file",
            passphrase.to_str().context("utf-8 path")?,
            "--host-key-fingerprint",
            &pin,
        ],
    )
    .await?;
    Ok((pin, added))
}

async fn backup(env: &Env, source: &str) -> Result<()> {
    env.cli(&["backup", &format!("acme/{source}"), "--timeout", "300"])
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_remote_tree_round_trips_with_a_password_and_with_a_key() -> Result<()> {
    let env = Env::new().await?;
    let sshd = Sshd::start()?;
    let tree = sshd.tree("www")?;
    let tree_bytes = build_remote_tree(&tree)?;
    env.cli(&["tenant", "create", "acme"]).await?;
    let password_file = env.path("sftp-password");
    std::fs::write(&password_file, format!("{}\n", sshd.password))?;
    let added = add_source(
        &env,
        &sshd,
        "acme/web",
        &tree,
        &["--password-file", password_file.to_str().unwrap()],
    )
    .await?;
    assert!(added.contains("no host key pinned yet"), "{added}");

    // The extractor runs as its own process, so its whole log can be read.
    let log = env.path("extractor.log");
    let _extractor = Process::start_logged(
        &env,
        "vaultline-extractor",
        &[("RUST_LOG", "debug".into())],
        &log,
    )?;
    let node = vaultline::start_node(
        env.config(),
        &all_but(&[StageName::Extractor, StageName::Scheduler]),
    )
    .await?;

    // Without a pin nothing connects.
    backup(&env, "web").await?;
    let unpinned = env.wait_final_of("web", 1).await?;
    assert_eq!(unpinned.status, SnapshotStatus::Failed);
    let error = unpinned.error.unwrap_or_default();
    assert!(
        error.contains("no pinned host key") && error.contains("trust-host-key"),
        "{error}"
    );
    assert!(
        !sshd.log()?.contains("Accepted"),
        "a login happened without a pin"
    );

    let trusted = env
        .cli_output(&["source", "trust-host-key", "acme/web"])
        .await?;
    let fingerprint = sshd.host_key_fingerprint()?;
    assert!(
        trusted.contains(&format!("pinned {fingerprint}")),
        "{trusted}"
    );

    backup(&env, "web").await?;
    let first = env.wait_final_of("web", 2).await?;
    assert_verified(&first);
    assert!(
        sshd.log()?
            .contains(&format!("Accepted password for {SFTP_USER}"))
    );
    let read_first = sshd.bytes_read()?;
    assert!(
        read_first >= tree_bytes,
        "{read_first} bytes read of {tree_bytes}"
    );
    let restored = env.restore_to(&first.id, "web-1").await?;
    assert_same_tree(&tree, &restored, "the sftp restore")?;

    // Nothing changed: the files cache keeps the link quiet.
    backup(&env, "web").await?;
    let second = env.wait_final_of("web", 3).await?;
    assert_verified(&second);
    let read_again = sshd.bytes_read()? - read_first;
    assert!(
        read_again * 100 < tree_bytes,
        "the unchanged tree's second backup read {read_again} of {tree_bytes} bytes over the link"
    );
    println!("second backup read {read_again} of {tree_bytes} bytes over the link");

    // A key with a passphrase, the fingerprint pinned when added.
    let (pinned, added) = add_key_source(&env, &sshd, "web-key", &tree).await?;
    assert_eq!(pinned, fingerprint);
    assert!(added.contains(&fingerprint), "{added}");
    backup(&env, "web-key").await?;
    let keyed = env.wait_final_of("web-key", 1).await?;
    assert_verified(&keyed);
    assert!(
        sshd.log()?
            .contains(&format!("Accepted publickey for {SFTP_USER}"))
    );
    let restored = env.restore_to(&keyed.id, "web-key").await?;
    assert_same_tree(&tree, &restored, "the key login's restore")?;

    // A wrong password: refused in words that hold neither password.
    let wrong = env.path("wrong-password");
    std::fs::write(&wrong, "not-the-sftp-password-42")?;
    env.cli(&[
        "source",
        "set-credential",
        "acme/web",
        "--from-file",
        wrong.to_str().unwrap(),
    ])
    .await?;
    backup(&env, "web").await?;
    let refused = env.wait_final_of("web", 4).await?;
    assert_eq!(refused.status, SnapshotStatus::Failed);
    let error = refused.error.unwrap_or_default();
    assert!(error.contains("refused the password login"), "{error}");
    assert!(
        !error.contains("not-the-sftp-password-42") && !error.contains(&sshd.password),
        "{error}"
    );

    // The password is in no message, audit event, catalog row or log line.
    assert_secret_nowhere(&env, &sshd.password).await?;
    let logged = std::fs::read_to_string(&log)?;
    assert!(
        logged.contains("sftp"),
        "the extractor's log is empty: {logged}"
    );
    assert!(
        !logged.contains(&sshd.password),
        "the extractor logged the password"
    );
    assert!(
        !logged.contains("not-the-sftp-password-42"),
        "the extractor logged the wrong password"
    );
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_changed_host_key_fails_the_snapshot_and_nothing_logs_in() -> Result<()> {
    let env = Env::new().await?;
    let mut sshd = Sshd::start()?;
    let tree = sshd.tree("small")?;
    std::fs::write(tree.join("a.txt"), b"alpha\n")?;
    sshd.share(&tree)?;
    let pinned = add_pinned_source(&env, &sshd, "small", &tree).await?;
    let node = env.node().await?;
    backup(&env, "small").await?;
    assert_verified(&env.wait_final_of("small", 1).await?);

    sshd.change_host_key()?;
    let offered = sshd.host_key_fingerprint()?;
    assert_ne!(offered, pinned);
    let logins = sshd.log()?.matches("Accepted password").count();
    backup(&env, "small").await?;
    let failed = env.wait_final_of("small", 2).await?;
    assert_eq!(failed.status, SnapshotStatus::Failed);
    let error = failed.error.unwrap_or_default();
    assert!(
        error.contains("host key") && error.contains("changed"),
        "{error}"
    );
    assert!(
        error.contains(&pinned) && error.contains(&offered),
        "{error}"
    );
    assert_eq!(
        sshd.log()?.matches("Accepted password").count(),
        logins,
        "a login was sent to the host with the changed key"
    );

    // Pinning again takes --replace, and then backups go on.
    let refused = env.cli(&["source", "trust-host-key", "acme/small"]).await;
    assert!(
        refused.is_err(),
        "a changed key was pinned without --replace"
    );
    env.cli(&[
        "source",
        "trust-host-key",
        "acme/small",
        "--replace",
        "--expect",
        &offered,
    ])
    .await?;
    backup(&env, "small").await?;
    assert_verified(&env.wait_final_of("small", 3).await?);
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_connection_killed_mid_transfer_is_retried_and_the_snapshot_verifies() -> Result<()> {
    let env = Env::new().await?;
    let sshd = Sshd::start()?;
    let tree = sshd.tree("big")?;
    std::fs::write(tree.join("huge.bin"), mixed_bytes(200 << 20, 5))?;
    std::fs::write(tree.join("small.txt"), b"small\n")?;
    sshd.share(&tree)?;
    whole_seconds(&tree)?;
    add_pinned_source(&env, &sshd, "big", &tree).await?;
    let node = env.node().await?;
    backup(&env, "big").await?;
    // Kill the session once the server has started reading the large file.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !sshd.opened("huge.bin") {
        anyhow::ensure!(Instant::now() < deadline, "huge.bin was never opened");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let killed = sshd.kill_sessions()?;
    assert!(killed > 0, "no session to kill");
    let row = env.wait_final_of("big", 1).await?;
    assert_verified(&row);
    assert!(
        row.attempt.unwrap_or(1) >= 2,
        "the snapshot was extracted in one attempt: the kill came too late"
    );
    let restored = env.restore_to(&row.id, "big").await?;
    assert_same_tree(&tree, &restored, "the restore after a killed connection")?;
    node.shutdown().await;
    Ok(())
}

/// Not run by the suite (`cargo nextest run -p vaultline-integration
/// --run-ignored only sftp_throughput`): 1 GiB in eight files, backed up over
/// SFTP and from the local disk, and copied with `scp -r`, on loopback; the
/// times go in docs/benchmarks.md.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a measurement, about a minute"]
async fn sftp_throughput() -> Result<()> {
    let env = Env::new().await?;
    let sshd = Sshd::start()?;
    let tree = sshd.tree("gib")?;
    for i in 0..8 {
        std::fs::write(
            tree.join(format!("part-{i}.bin")),
            mixed_bytes(128 << 20, i),
        )?;
    }
    sshd.share(&tree)?;
    env.cli(&["tenant", "create", "acme"]).await?;
    add_key_source(&env, &sshd, "remote", &tree).await?;
    // Another tenant, so the local read finds none of the remote one's chunks.
    env.cli(&["tenant", "create", "other"]).await?;
    env.cli(&[
        "source",
        "add",
        "other/local",
        "--path",
        tree.to_str().unwrap(),
    ])
    .await?;
    let node = env.node().await?;
    let mut seconds = Vec::new();
    for (tenant, source) in [("acme", "remote"), ("other", "local")] {
        let started = Instant::now();
        env.cli(&[
            "backup",
            &format!("{tenant}/{source}"),
            "--wait",
            "--timeout",
            "600",
        ])
        .await?;
        let (tenant, source) = (
            vaultline_types::Name::new(tenant)?,
            vaultline_types::Name::new(source)?,
        );
        let rows = env.catalog.snapshots(Some(&tenant), Some(&source)).await?;
        let row = rows.first().context("no snapshot")?;
        assert_verified(row);
        assert_eq!(row.bytes_read, 1 << 30);
        seconds.push(started.elapsed().as_secs_f64());
    }
    node.shutdown().await;
    // scp with the same key: an unencrypted copy, for ssh-agent-less batch use.
    let plain_key = env.path("plain_key");
    std::fs::copy(sshd.client_key(), &plain_key)?;
    let status = std::process::Command::new("ssh-keygen")
        .args([
            "-q",
            "-p",
            "-P",
            Sshd::CLIENT_KEY_PASSPHRASE,
            "-N",
            "",
            "-f",
        ])
        .arg(&plain_key)
        .status()?;
    anyhow::ensure!(status.success(), "ssh-keygen -p failed");
    let copy = env.path("scp-copy");
    let started = Instant::now();
    let status = std::process::Command::new("scp")
        .args([
            "-q",
            "-r",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
        ])
        .args(["-o", "UserKnownHostsFile=/dev/null", "-i"])
        .arg(&plain_key)
        .args(["-P", &sshd.port.to_string()])
        .arg(format!("{SFTP_USER}@127.0.0.1:{}", tree.display()))
        .arg(&copy)
        .status()?;
    anyhow::ensure!(status.success(), "scp failed");
    let scp = started.elapsed().as_secs_f64();
    crate::pipeline::assert_same_contents(&tree, &copy)?;
    let mib = 1024.0;
    println!(
        "1 GiB: sftp source {:.1} s ({:.0} MiB/s, trigger to verified), local files source {:.1} s ({:.0} MiB/s), scp -r {scp:.1} s ({:.0} MiB/s)",
        seconds[0],
        mib / seconds[0],
        seconds[1],
        mib / seconds[1],
        mib / scp
    );
    Ok(())
}
