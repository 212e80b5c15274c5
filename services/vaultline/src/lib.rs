//! The `vaultline` CLI and the all-in-one node: every stage in one process on
//! the same code as the per-stage binaries.

pub mod access;
pub mod cli;
pub mod cmd;
mod context;
mod output;
mod progress;
mod request;

use vaultline_runtime::{Config, Node, StageError};
use vaultline_types::StageName;

/// Starts a node running `stages` (the explicit list of the pipeline's stages;
/// no plugin magic: there are eight and they are known).
///
/// # Errors
/// When a dependency is unreachable or a stage cannot be built.
pub async fn start_node(config: Config, stages: &[StageName]) -> anyhow::Result<Node> {
    let mut node = Node::start(config, "vaultline").await?;
    for stage in stages {
        spawn_stage(&mut node, *stage).await?;
    }
    Ok(node)
}

/// Stages `vaultline serve` runs by default: all of them.
pub const SERVED: [StageName; 8] = StageName::ALL;

async fn spawn_stage(node: &mut Node, stage: StageName) -> Result<(), StageError> {
    match stage {
        StageName::Extractor => node.spawn::<vaultline_extractor::Extractor>().await,
        StageName::Packager => node.spawn::<vaultline_packager::Packager>().await,
        StageName::Uploader => node.spawn::<vaultline_uploader::Uploader>().await,
        StageName::Verifier => vaultline_verifier::install(node).await,
        StageName::Copier => vaultline_copier::install(node).await,
        StageName::Retention => vaultline_retention::install(node).await,
        StageName::Auditor => vaultline_auditor::install(node).await,
        StageName::Scheduler => vaultline_scheduler::install(node).await,
    }
}
