use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = vaultline::cli::Cli::parse();
    vaultline_runtime::entry::run_main(async {
        // One clear sentence, not a backtrace: the causes joined in order.
        vaultline::cli::run(cli).await.map_err(|error| {
            error
                .chain()
                .map(|cause| cause.to_string())
                .collect::<Vec<_>>()
                .join(": ")
        })
    })
}
