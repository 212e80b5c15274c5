//! Bounded memory from glibc's allocator.
//!
//! By default glibc gives each thread that allocates concurrently its own
//! arena (up to 8 per core) and raises its mmap threshold after the first
//! large free, so multi-MiB chunk and pack buffers end up in arenas that
//! keep freed memory. Measured on a 1 GiB backup, `vaultline serve` grew
//! 148 → 228 → 297 MiB over three backups and held it; restore peaked at
//! 184 MiB. With two arenas and a fixed 256 KiB mmap threshold (large
//! buffers are mapped and returned on free) serve peaks at 67–79 MiB and
//! falls back to ~35 MiB, and restore peaks at 60 MiB.
//!
//! These settings can only be given before the process starts
//! (`GLIBC_TUNABLES`), so the process re-executes itself once with them.
//! An operator's own `GLIBC_TUNABLES` is respected as it is.

use std::os::unix::process::CommandExt;

const VARIABLE: &str = "GLIBC_TUNABLES";
const TUNABLES: &str = "glibc.malloc.arena_max=2:glibc.malloc.mmap_threshold=262144";

/// Re-executes this process with the tunables unless they (or an operator's
/// own) are set. Returns only when no re-execution happened.
pub(crate) fn bound() {
    if std::env::var_os(VARIABLE).is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_else(|| exe.clone().into_os_string());
    // exec replaces the process (same pid, so supervisors see no change);
    // it returns only on failure, and then we carry on with the defaults.
    let error = std::process::Command::new(&exe)
        .arg0(arg0)
        .args(args)
        .env(VARIABLE, TUNABLES)
        .exec();
    eprintln!(
        "warning: could not re-execute {} with {VARIABLE} ({error}); memory may grow more",
        exe.display()
    );
}
