//! Progress output: a bar under a terminal, plain lines or JSON elsewhere.

use crate::harness::{Env, assert_verified, binary};
use anyhow::{Context, Result, ensure};

/// A source whose one file is 1 GiB (1 MiB of data in it, the rest zeros),
/// backed up and verified; returns the snapshot id.
async fn one_gib_snapshot(env: &Env) -> Result<String> {
    let tree = env.path("tree");
    std::fs::create_dir_all(&tree)?;
    let file = std::fs::File::create(tree.join("disk.img"))?;
    file.set_len(1 << 30)?;
    std::os::unix::fs::FileExt::write_all_at(
        &file,
        &crate::harness::mixed_bytes(1 << 20, 3),
        512 << 20,
    )?;
    drop(file);
    env.tenant_with_source(&tree).await?;
    let node = env.node().await?;
    let (ok, stdout, stderr) = env
        .run_cli(&["backup", "acme/docs", "--wait", "--json"], &[])
        .await?;
    ensure!(ok, "{stderr}");
    // --json: every line of stdout is one JSON object, from started to finished.
    let events: Vec<serde_json::Value> = stdout
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()
        .with_context(|| format!("not JSON lines: {stdout}"))?;
    assert_eq!(
        events.first().map(|e| e["event"].clone()),
        Some("started".into())
    );
    assert_eq!(
        events.last().map(|e| e["event"].clone()),
        Some("finished".into())
    );
    assert_eq!(
        events.last().map(|e| e["done"].clone()),
        Some((1u64 << 30).into())
    );
    ensure!(
        events.iter().any(|e| e["event"] == "note"
            && e["message"]
                .as_str()
                .is_some_and(|m| m.ends_with("verified"))),
        "{stdout}"
    );
    let row = env.wait_final(1).await?;
    assert_verified(&row);
    node.shutdown().await;
    Ok(row.id.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restore_shows_a_bar_on_a_terminal_and_plain_lines_elsewhere() -> Result<()> {
    let env = Env::new().await?;
    let snapshot = one_gib_snapshot(&env).await?;

    // Under a pseudo-terminal (script), the bar redraws as bytes arrive.
    let target = env.path("on-a-tty");
    let command = format!(
        "{} --config {} restore {snapshot} --to {}",
        binary("vaultline")?.display(),
        env.config_file.display(),
        target.display()
    );
    let out = tokio::process::Command::new("script")
        .args(["-qefc", &command, "/dev/null"])
        .env("TERM", "xterm")
        .output()
        .await?;
    let shown = String::from_utf8_lossy(&out.stdout);
    ensure!(out.status.success(), "{shown}");
    assert_eq!(std::fs::metadata(target.join("disk.img"))?.len(), 1 << 30);
    // Each redraw starts with a carriage return or a cursor move.
    let redraws: std::collections::BTreeSet<&str> = shown
        .split(['\r', '\u{1b}'])
        .filter(|frame| frame.contains("restore [") && frame.contains("GiB"))
        .collect();
    ensure!(
        redraws.len() >= 3,
        "{} distinct frames: {shown:?}",
        redraws.len()
    );

    // Off a terminal: no control character but the line ends.
    let target = env.path("off-a-tty");
    let (ok, stdout, stderr) = env
        .run_cli(
            &["restore", &snapshot, "--to", target.to_str().unwrap()],
            &[],
        )
        .await?;
    ensure!(ok, "{stderr}");
    let text = format!("{stdout}{stderr}");
    ensure!(
        !text.chars().any(|c| c.is_control() && c != '\n'),
        "control characters off a terminal: {text:?}"
    );
    ensure!(stderr.contains("(1 files, 1.0 GiB)"), "{stderr}");

    // --json: one object per line, the last one finished with every byte.
    let target = env.path("json");
    let (ok, stdout, stderr) = env
        .run_cli(
            &[
                "restore",
                &snapshot,
                "--to",
                target.to_str().unwrap(),
                "--json",
            ],
            &[],
        )
        .await?;
    ensure!(ok, "{stderr}");
    let last: serde_json::Value = serde_json::from_str(stdout.lines().last().context("a line")?)?;
    assert_eq!(last["event"], "finished");
    assert_eq!(last["done"], 1u64 << 30);
    assert_eq!(last["total"], 1u64 << 30);
    Ok(())
}
