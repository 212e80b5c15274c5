//! Garbage collection of unreferenced packs: condemn, wait out the grace
//! period, then sweep. The catalog decides (see `vaultline_catalog::gc` for
//! why a backup racing it never loses a chunk); this module deletes objects.
//! Work is done in batches, so memory does not grow with the repository.

use std::time::Duration;
use vaultline_catalog::{Catalog, GcPlan};
use vaultline_runtime::ErrorType;
use vaultline_runtime::StageError;
use vaultline_storage::{ObjectKey, Repository};
use vaultline_types::{Name, PackId, PacksDeleted};

/// One pass over one tenant: condemn what no live snapshot references,
/// delete what was condemned longer than `grace` ago.
///
/// # Errors
/// When the catalog or the repository fails; a later pass resumes (packs
/// marked deleting are finished first).
pub async fn collect(
    catalog: &Catalog,
    repository: &Repository,
    tenant: &Name,
    grace: Duration,
) -> Result<PacksDeleted, StageError> {
    let mut report = PacksDeleted {
        tenant: tenant.clone(),
        condemned: 0,
        revived: 0,
        deleted: 0,
        deleted_bytes: 0,
        locked: 0,
    };
    // Leftovers of a pass that died between the object and the row go first.
    finish_deleting(catalog, repository, tenant, &mut report).await?;
    report.condemned = catalog.condemn_unreferenced(tenant.as_str()).await?;
    // Each batch either revives or dooms every pack it takes, so this ends.
    loop {
        let (revived, doomed) = catalog.doom_condemned(tenant.as_str(), grace).await?;
        report.revived += revived;
        if revived + doomed == 0 {
            break;
        }
        finish_deleting(catalog, repository, tenant, &mut report).await?;
    }
    report.locked = catalog.locked_condemned(tenant.as_str(), grace).await?;
    if report.deleted > 0 || report.condemned > 0 || report.revived > 0 {
        tracing::info!(
            %tenant,
            condemned = report.condemned,
            revived = report.revived,
            deleted = report.deleted,
            deleted_bytes = report.deleted_bytes,
            locked = report.locked,
            "Garbage collection pass."
        );
    }
    Ok(report)
}

async fn finish_deleting(
    catalog: &Catalog,
    repository: &Repository,
    tenant: &Name,
    report: &mut PacksDeleted,
) -> Result<(), StageError> {
    loop {
        let doomed = catalog.deleting_packs(tenant.as_str()).await?;
        if doomed.is_empty() {
            return Ok(());
        }
        // Object first, row second: a crash in between leaves a row that the
        // next pass finishes, never an object nothing points to.
        for pack in &doomed {
            repository
                .delete(&ObjectKey::pack(tenant, &pack.id))
                .await?;
        }
        let ids: Vec<PackId> = doomed.iter().map(|p| p.id).collect();
        catalog.forget_packs(tenant.as_str(), &ids).await?;
        report.deleted += doomed.len() as u64;
        vaultline_runtime::metrics::count(
            vaultline_runtime::metrics::MetricName::PacksDeleted,
            &[("tenant", tenant.to_string())],
            doomed.len() as u64,
        );
        report.deleted_bytes += doomed.iter().map(|p| p.size).sum::<u64>();
    }
}

/// One pass over every tenant that has packs.
///
/// # Errors
/// The first failure; a later pass resumes.
pub async fn collect_all(
    catalog: &Catalog,
    repository: &Repository,
    grace: Duration,
) -> Result<Vec<PacksDeleted>, StageError> {
    let mut reports = Vec::new();
    for tenant in catalog.tenants_with_packs().await? {
        let tenant = Name::new(tenant).map_err(|e| StageError::permanent(ErrorType::Catalog, e))?;
        reports.push(collect(catalog, repository, &tenant, grace).await?);
    }
    Ok(reports)
}

/// What a pass would do now, per tenant, changing nothing.
///
/// # Errors
/// When the catalog fails.
pub async fn plan(catalog: &Catalog, grace: Duration) -> Result<Vec<(String, GcPlan)>, StageError> {
    let mut plans = Vec::new();
    for tenant in catalog.tenants_with_packs().await? {
        let plan = catalog.gc_plan(&tenant, grace).await?;
        plans.push((tenant, plan));
    }
    Ok(plans)
}
