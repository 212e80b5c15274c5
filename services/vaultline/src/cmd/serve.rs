//! `vaultline serve`: run stages in this process until SIGTERM, and the
//! HTTP API when `[api] listen` is set.

use anyhow::Result;
use std::process::ExitCode;
use vaultline_runtime::Config;
use vaultline_types::StageName;

/// Flags of `serve`.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// A stage to run (repeatable): scheduler, extractor, packager, uploader, verifier, copier, retention, auditor.
    #[arg(long = "stage")]
    stages: Vec<StageName>,
}

pub(crate) async fn run(config: Config, args: ServeArgs) -> Result<ExitCode> {
    let stages = if args.stages.is_empty() {
        crate::SERVED.to_vec()
    } else {
        args.stages
    };
    let api = match &config.api.listen {
        Some(listen) => Some(vaultline_api::start(&config, listen).await?),
        None => None,
    };
    let node = crate::start_node(config, &stages).await?;
    let names: Vec<_> = stages.iter().map(|s| s.as_str()).collect();
    eprintln!(
        "vaultline serving {} on admin http://{}{} (SIGTERM to stop)",
        names.join(", "),
        node.admin,
        api.as_ref()
            .map(|api| format!(", API http://{}", api.addr))
            .unwrap_or_default()
    );
    node.run_until_signal().await;
    if let Some(api) = api {
        api.task.abort();
    }
    Ok(ExitCode::SUCCESS)
}
