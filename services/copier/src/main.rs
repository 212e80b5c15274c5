fn main() -> std::process::ExitCode {
    vaultline_runtime::entry::main_with(
        vaultline_types::StageName::Copier,
        vaultline_copier::install,
    )
}
