//! What tests run besides servers: built binaries as processes of their
//! own, real stages slowed down, and deterministic test data.

use crate::harness::Env;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::time::Duration;
use vaultline_types::StageName;

pub(crate) fn binary(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .context("test binary has no target dir")?;
    let path = dir.join(name);
    anyhow::ensure!(
        path.exists(),
        "{} is not built (scripts/test.sh builds every binary first)",
        path.display()
    );
    Ok(path)
}

/// A vaultline binary running as its own process; killed when dropped.
pub(crate) struct Process(pub(crate) std::process::Child);

impl Process {
    /// Starts `vaultline-<stage>` (or any built binary) with the env's config
    /// and an admin port of its own.
    pub(crate) fn start(env: &Env, name: &str) -> Result<Process> {
        Process::start_with(env, name, &[])
    }

    /// [`Process::start`] with more variables in its environment.
    pub(crate) fn start_with(env: &Env, name: &str, vars: &[(&str, String)]) -> Result<Process> {
        Process::spawn(env, name, vars, std::process::Stdio::null())
    }

    /// [`Process::start_with`], its log (stderr) written to `log`.
    pub(crate) fn start_logged(
        env: &Env,
        name: &str,
        vars: &[(&str, String)],
        log: &Path,
    ) -> Result<Process> {
        Process::spawn(env, name, vars, std::fs::File::create(log)?.into())
    }

    fn spawn(
        env: &Env,
        name: &str,
        vars: &[(&str, String)],
        stderr: std::process::Stdio,
    ) -> Result<Process> {
        let admin = format!("127.0.0.1:{}", vaultline_testkit::free_port());
        let child = std::process::Command::new(binary(name)?)
            .envs(vars.iter().map(|(k, v)| (*k, v.as_str())))
            .env("VAULTLINE_CONFIG", &env.config_file)
            .env("VAULTLINE_ADMIN__LISTEN", admin)
            .stdout(std::process::Stdio::null())
            .stderr(stderr)
            .spawn()?;
        Ok(Process(child))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Deterministic pseudo-random bytes: half compressible text, half noise.
pub(crate) fn mixed_bytes(len: usize, mut seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        if (out.len() / 65536) % 2 == 0 {
            out.extend_from_slice(format!("line {seed} of a compressible stretch\n").as_bytes());
        } else {
            out.extend_from_slice(&seed.to_le_bytes());
        }
    }
    out.truncate(len);
    out
}

/// A real stage, slowed: each message waits `before` and, once handled,
/// `after` before its outcome is returned.
pub(crate) struct Slow<S> {
    inner: S,
    before: Duration,
    after: Duration,
}

impl<S: vaultline_runtime::Stage> Slow<S> {
    pub(crate) async fn new(
        deps: std::sync::Arc<vaultline_runtime::Deps>,
        before: Duration,
        after: Duration,
    ) -> Result<Slow<S>> {
        Ok(Slow {
            inner: S::new(deps).await?,
            before,
            after,
        })
    }
}

impl<S: vaultline_runtime::Stage> vaultline_runtime::Stage for Slow<S> {
    const NAME: StageName = S::NAME;
    type Input = S::Input;

    async fn new(
        deps: std::sync::Arc<vaultline_runtime::Deps>,
    ) -> Result<Self, vaultline_runtime::StageError> {
        Ok(Slow {
            inner: S::new(deps).await?,
            before: Duration::ZERO,
            after: Duration::ZERO,
        })
    }

    async fn handle(
        &self,
        cx: &vaultline_runtime::Cx,
        input: S::Input,
    ) -> vaultline_runtime::Outcome {
        tokio::time::sleep(self.before).await;
        let outcome = self.inner.handle(cx, input).await;
        tokio::time::sleep(self.after).await;
        outcome
    }
}

/// Every stage `vaultline serve` runs except `left_out`.
pub(crate) fn all_but(left_out: &[StageName]) -> Vec<StageName> {
    vaultline::SERVED
        .iter()
        .copied()
        .filter(|s| !left_out.contains(s))
        .collect()
}

/// A node with every stage (the scheduler if asked), stage `S` slowed.
pub(crate) async fn node_with_slow<S: vaultline_runtime::Stage>(
    env: &Env,
    before: Duration,
    after: Duration,
    with_scheduler: bool,
) -> Result<vaultline_runtime::Node> {
    let mut left_out = vec![S::NAME];
    if !with_scheduler {
        left_out.push(StageName::Scheduler);
    }
    let mut node = vaultline::start_node(env.config(), &all_but(&left_out)).await?;
    let deps = node.deps_for(S::NAME).await?;
    node.spawn_stage(Slow::<S>::new(deps, before, after).await?)
        .await?;
    Ok(node)
}
