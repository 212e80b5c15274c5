//! `vaultline catalog`: the catalog rebuilt from the repository, and the
//! two compared. The repository is the truth; the catalog indexes it.

use anyhow::Result;
use clap::Subcommand;
use std::process::ExitCode;
use vaultline_runtime::Config;

mod check;
mod rebuild;

#[derive(Subcommand, Debug)]
pub enum CatalogCommand {
    /// Fill an empty catalog from the repository and the KEK: tenants and
    /// keys from the key records, packs and chunks from each pack's sealed
    /// index, sources and snapshots from the manifests. Exit code 1 when
    /// something could not be recovered (it is listed).
    Rebuild(rebuild::RebuildArgs),
    /// Report where the catalog and the repository disagree: a pack
    /// missing or of another size (and the snapshots that need it and the
    /// chunk rows that point into it), a manifest missing, objects the
    /// catalog does not know. `--repair` fixes what is safe to fix. Exit
    /// code 1 while anything is left unrepaired.
    Check(check::CatalogCheckArgs),
}

pub(crate) async fn run(config: &Config, command: CatalogCommand) -> Result<ExitCode> {
    match command {
        CatalogCommand::Rebuild(args) => rebuild::run(config, args).await,
        CatalogCommand::Check(args) => check::run(config, args).await,
    }
}
