//! The archived WAL of a physical postgres source: kept from the first
//! segment the oldest kept base backup needs, deleted before it. A base
//! that is kept therefore always recovers; WAL older than every kept base
//! recovers nothing and goes when its bases go. With no base backup kept
//! at all, nothing is deleted: the WAL may be all there is.

use vaultline_catalog::Catalog;
use vaultline_runtime::StageError;
use vaultline_storage::Repository;
use vaultline_types::Name;
use vaultline_wal::{Lsn, WalFile};

/// Deletes the WAL no kept base needs; returns how many files went.
///
/// # Errors
/// When the catalog or the repository fails (the next pass goes on).
pub async fn expire(
    catalog: &Catalog,
    repository: &Repository,
    tenant: &Name,
    source: &Name,
) -> Result<usize, StageError> {
    let bases = catalog.base_backups(tenant, source).await?;
    let Some(oldest) = bases.iter().min_by_key(|b| b.start_lsn) else {
        return Ok(0);
    };
    let size = u64::try_from(oldest.segment_size).unwrap_or(16 << 20);
    let timeline = u32::try_from(oldest.timeline).unwrap_or(1);
    let cut = WalFile::segment_of(timeline, Lsn(oldest.start_lsn as u64), size).to_string();
    let doomed = catalog.wal_files_before(tenant, source, &cut).await?;
    for file in &doomed {
        // Object first: a row is never left claiming a deleted object
        // the window would count; a crash between the two leaves the row,
        // and the next pass deletes it again (deleting nothing is fine).
        repository.delete(&file.object).await?;
        catalog.forget_wal_file(tenant, source, &file.name).await?;
    }
    if !doomed.is_empty() {
        tracing::info!(%tenant, %source, files = doomed.len(), before = %cut, "WAL no kept base backup needs deleted.");
    }
    Ok(doomed.len())
}
