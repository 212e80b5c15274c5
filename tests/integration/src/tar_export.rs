//! `restore --format tar`: the fidelity tree, exported as one tar stream
//! and extracted by GNU tar, comes back as it was.

use crate::fidelity::{assert_restored, backed_up, build_fidelity_tree, describe, is_root};
use crate::harness::{Env, binary};
use anyhow::{Result, ensure};
use std::path::Path;
use std::process::Stdio;

/// Streams `restore SNAPSHOT --format tar --to - [--path P]` into
/// `tar -x` in `into`; returns vaultline's stderr.
async fn export_into(env: &Env, snapshot: &str, path: Option<&str>, into: &Path) -> Result<String> {
    std::fs::create_dir_all(into)?;
    let mut args = vec![
        "--config".to_owned(),
        env.config_file.display().to_string(),
        "restore".into(),
        snapshot.into(),
        "--format".into(),
        "tar".into(),
        "--to".into(),
        "-".into(),
    ];
    if let Some(path) = path {
        args.extend(["--path".into(), path.into()]);
    }
    let mut export = std::process::Command::new(binary("vaultline")?)
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let stream = export.stdout.take().expect("piped");
    // GNU tar reads every SCHILY.xattr record only when told which to take.
    let extract = tokio::task::spawn_blocking({
        let into = into.to_path_buf();
        move || {
            std::process::Command::new("tar")
                .args(["-x", "-f", "-", "--xattrs", "--xattrs-include=*", "-C"])
                .arg(into)
                .stdin(stream)
                .output()
        }
    });
    let exported = tokio::task::spawn_blocking(move || export.wait_with_output()).await??;
    let extracted = extract.await??;
    let stderr = String::from_utf8_lossy(&exported.stderr).into_owned();
    ensure!(exported.status.success(), "the export failed: {stderr}");
    ensure!(
        extracted.status.success(),
        "GNU tar refused the stream: {}",
        String::from_utf8_lossy(&extracted.stderr)
    );
    Ok(stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tar_export_extracts_with_gnu_tar_to_the_same_tree() -> Result<()> {
    let env = Env::new().await?;
    let tree = env.path("tree");
    build_fidelity_tree(&tree)?;
    // Symlinks: a short one, one whose target is too long for ustar, a
    // dangling one under a 200+ byte path.
    std::os::unix::fs::symlink("attrs.txt", tree.join("to-attrs"))?;
    let far = format!("{}/{}", "t".repeat(150), "u".repeat(120));
    std::os::unix::fs::symlink(&far, tree.join("far-link"))?;
    let long_dir = tree.join(format!("{}/{}", "p".repeat(120), "q".repeat(110)));
    std::fs::create_dir_all(&long_dir)?;
    std::os::unix::fs::symlink("../nowhere", long_dir.join("dangling"))?;
    std::fs::write(long_dir.join("file.txt"), "under a 230-byte path\n")?;
    let want = describe(&tree)?;
    ensure!(
        want.keys()
            .any(|p| p.len() > 200 && want[p].kind == "symlink"),
        "the tree has a symlink under a 200+ byte path"
    );
    let (snapshot, _identity) = backed_up(&env, &tree).await?;

    let out = env.path("extracted");
    let stderr = export_into(&env, snapshot.as_str(), None, &out).await?;
    ensure!(stderr.contains("as tar"), "{stderr}");
    let got = describe(&out)?;
    // Modes, mtimes to the nanosecond, owners, links, content, xattrs and
    // ACLs, hard links (nlink), the FIFO and, as root, the device.
    assert_restored(&want, &got, "GNU tar's extraction", |_, _| {});
    assert_eq!(got["links/first"].nlink, 4);
    assert_eq!(got["far-link"].link.as_deref(), Some(Path::new(&far)));
    if is_root() {
        assert_eq!(got["owners/setuid"].mode, 0o4755);
    }
    let diff = std::process::Command::new("diff")
        .args([
            "-r",
            "--no-dereference",
            "-x",
            "fifo",
            "-x",
            "socket",
            "-x",
            "null",
        ])
        .arg(&tree)
        .arg(&out)
        .output()?;
    ensure!(
        diff.status.success(),
        "diff -r: {}{}",
        String::from_utf8_lossy(&diff.stdout),
        String::from_utf8_lossy(&diff.stderr)
    );

    // --path narrows the archive to one directory and what is under it.
    let part = env.path("links-only");
    export_into(&env, snapshot.as_str(), Some("links"), &part).await?;
    let got = describe(&part)?;
    ensure!(
        got.keys().all(|p| p.starts_with("links")),
        "{:?}",
        got.keys()
    );
    assert_eq!(got["links/b/y"].nlink, 2);
    assert_eq!(got["links/a/x"].content, want["links/a/x"].content);

    // A file that exists is never overwritten by an export.
    let existing = env.path("existing.tar");
    std::fs::write(&existing, "someone's data")?;
    let (ok, _, stderr) = env
        .run_cli(
            &[
                "restore",
                snapshot.as_str(),
                "--format",
                "tar",
                "--to",
                existing.to_str().unwrap(),
            ],
            &[],
        )
        .await?;
    ensure!(!ok && stderr.contains("must not exist"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&existing)?, "someone's data");
    // To a new file, it is the same archive as on stdout.
    let file = env.path("export.tar");
    env.cli(&[
        "restore",
        snapshot.as_str(),
        "--format",
        "tar",
        "--to",
        file.to_str().unwrap(),
    ])
    .await?;
    let listed = std::process::Command::new("tar")
        .arg("-tf")
        .arg(&file)
        .output()?;
    ensure!(listed.status.success());
    let names = String::from_utf8_lossy(&listed.stdout);
    ensure!(
        names
            .lines()
            .any(|l| l.ends_with("/deep.txt") && l.len() > 3000),
        "{names}"
    );
    Ok(())
}
