use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = vaultline::cli::Cli::parse();
    // One clear sentence, not a backtrace: run_main prints the causes in order.
    let export = cli.span_export();
    vaultline_runtime::entry::run_main_exporting(export, vaultline::cli::run(cli))
}
