//! Restores that meet what they did not expect: a symlink swapped in by
//! another user while they run, and a snapshot of the previous manifest
//! format.

use crate::fidelity::{backed_up, chmod, restore_offline};
use crate::harness::{Env, mixed_bytes};
use anyhow::{Result, ensure};
use std::path::Path;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_symlink_swapped_in_mid_restore_never_redirects_a_write() -> Result<()> {
    let env = Env::new().await?;
    let tree = env.path("tree");
    for sub in 0..8 {
        let dir = tree.join(format!("d/sub{sub}"));
        std::fs::create_dir_all(&dir)?;
        for i in 0..400 {
            std::fs::write(dir.join(format!("{i:03}.txt")), format!("file {sub}/{i}\n"))?;
        }
    }
    let (snapshot, _) = backed_up(&env, &tree).await?;
    let outside = env.path("outside");
    std::fs::create_dir(&outside)?;
    let target = env.path("target");
    std::fs::create_dir(&target)?;

    // Another local user, swapping `d` for a symlink to `outside` and back
    // as fast as it can while the restore runs.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let attacker = {
        let (stop, target, outside) = (stop.clone(), target.clone(), outside.clone());
        std::thread::spawn(move || {
            let (d, hidden) = (target.join("d"), target.join("hidden"));
            let mut swaps = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if !d.symlink_metadata().is_ok_and(|m| m.is_dir())
                    || std::fs::rename(&d, &hidden).is_err()
                {
                    std::thread::yield_now();
                    continue;
                }
                std::os::unix::fs::symlink(&outside, &d).expect("plant the symlink");
                swaps += 1;
                std::thread::sleep(std::time::Duration::from_micros(200));
                std::fs::remove_file(&d).expect("remove the symlink");
                std::fs::rename(&hidden, &d).expect("put the directory back");
            }
            swaps
        })
    };
    let restored = env.restore_cli(&snapshot, &target).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let swaps = attacker.join().expect("the attacker thread");
    let (ok, _, stderr) = restored?;
    eprintln!(
        "{swaps} swaps during the restore; the restore {}",
        if ok { "succeeded" } else { "refused" }
    );
    assert!(swaps > 0, "the attacker never got to swap");
    assert_eq!(
        std::fs::read_dir(&outside)?.count(),
        0,
        "the restore wrote outside its target ({swaps} swaps; restore ok: {ok}; {stderr})"
    );
    if !ok {
        // The attacker moves `d` away for a moment each swap: a restore that
        // reaches for it then finds it gone, which is a refusal too.
        assert!(
            stderr.contains("in the way")
                || stderr.contains("a parent is a symlink")
                || stderr.contains("cannot create d: No such file or directory"),
            "a refusal must say why: {stderr}"
        );
    } else {
        crate::pipeline::assert_same_contents(&tree, &target)?;
    }
    Ok(())
}

/// The tree in `tests/fixtures/format1`, made again: a snapshot of it was
/// written by the last build that wrote manifest format 1.
fn format1_tree(root: &Path) -> Result<()> {
    std::fs::create_dir_all(root.join("docs/deeper"))?;
    std::fs::write(root.join("docs/readme.md"), "# format 1\n")?;
    std::fs::write(
        root.join("docs/deeper/data.bin"),
        mixed_bytes(200 << 10, 11),
    )?;
    std::fs::write(root.join("empty"), b"")?;
    std::fs::write(root.join("script.sh"), "#!/bin/sh\necho old\n")?;
    chmod(&root.join("script.sh"), 0o750)?;
    std::os::unix::fs::symlink("docs/readme.md", root.join("link"))?;
    for (path, secs) in [
        ("docs/readme.md", 1_700_000_001),
        ("docs/deeper/data.bin", 1_700_000_002),
        ("empty", 1_700_000_003),
        ("script.sh", 1_700_000_004),
        ("docs/deeper", 1_700_000_005),
        ("docs", 1_700_000_006),
    ] {
        filetime::set_file_mtime(root.join(path), filetime::FileTime::from_unix_time(secs, 0))?;
    }
    filetime::set_symlink_file_times(
        root.join("link"),
        filetime::FileTime::from_unix_time(1_700_000_007, 0),
        filetime::FileTime::from_unix_time(1_700_000_007, 0),
    )?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_of_manifest_format_1_still_restores() -> Result<()> {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/format1");
    let dir = tempfile::tempdir()?;
    let want = dir.path().join("want");
    format1_tree(&want)?;
    let snapshot = std::fs::read_to_string(fixture.join("snapshot"))?;
    let target = dir.path().join("restored");
    let (ok, stderr) = restore_offline(
        None,
        snapshot.trim(),
        &fixture.join("acme.key"),
        &fixture.join("repository"),
        &target,
    )
    .await?;
    ensure!(ok, "restore of the format-1 snapshot failed: {stderr}");
    assert!(stderr.contains("digest verified"), "{stderr}");
    crate::pipeline::assert_same_tree(&want, &target, "the format-1 restore")?;
    Ok(())
}
