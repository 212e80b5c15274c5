fn main() -> std::process::ExitCode {
    vaultline_runtime::entry::main_with(
        vaultline_types::StageName::Verifier,
        async |node: &mut vaultline_runtime::Node| {
            vaultline_verifier::install(node)
                .await
                .map_err(|e| e.to_string())
        },
    )
}
