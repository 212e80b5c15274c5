fn main() -> std::process::ExitCode {
    vaultline_runtime::entry::main_single::<vaultline_auditor::Auditor>()
}
