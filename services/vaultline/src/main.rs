use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = vaultline::cli::Cli::parse();
    vaultline_runtime::telemetry::init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(vaultline::cli::run(cli)) {
        Ok(code) => code,
        Err(error) => {
            // One clear sentence, not a backtrace: the causes joined in order.
            let causes: Vec<String> = error.chain().map(|c| c.to_string()).collect();
            eprintln!("error: {}", causes.join(": "));
            ExitCode::FAILURE
        }
    }
}
