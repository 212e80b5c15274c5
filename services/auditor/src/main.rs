fn main() -> std::process::ExitCode {
    vaultline_runtime::entry::main_with(
        vaultline_types::StageName::Auditor,
        async |node: &mut vaultline_runtime::Node| {
            vaultline_auditor::install(node)
                .await
                .map_err(|e| e.to_string())
        },
    )
}
