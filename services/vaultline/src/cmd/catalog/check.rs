//! `vaultline catalog check`: where the catalog and the repository
//! disagree. Packs are compared one `packs/<hh>/` directory at a time (a
//! 1/256 share of them in memory), by presence and size; manifests by
//! presence. With `--repair` it fixes what is safe to fix: a pack the
//! repository lost, or holds at another size, loses its chunk rows and
//! its row (no backup dedups against it again; the next one stores that
//! data anew) and the snapshots that need it are marked corrupt; a
//! snapshot whose manifest is gone is marked corrupt. Objects the catalog
//! does not know are reported and left alone: an upload may be finishing.

use crate::context::catalog;
use crate::output::print_json;
use anyhow::Result;
use std::collections::{BTreeMap, BTreeSet};
use std::process::ExitCode;
use vaultline_catalog::{Catalog, SnapshotStatus};
use vaultline_runtime::Config;
use vaultline_storage::{ObjectKey, Repository};
use vaultline_types::{Name, PackId, SnapshotId};

/// Flags of `catalog check`.
#[derive(clap::Args, Debug)]
pub struct CatalogCheckArgs {
    /// Fix what is safe to fix (see above), and say what was fixed.
    #[arg(long)]
    repair: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// One disagreement.
#[derive(serde::Serialize)]
struct Finding {
    tenant: Name,
    /// `pack-missing`, `pack-size`, `pack-unknown`, `manifest-missing`, `manifest-unknown`.
    kind: &'static str,
    /// The pack id or snapshot id.
    object: String,
    detail: String,
    /// The snapshots that need the pack.
    snapshots: Vec<SnapshotId>,
    /// Chunk rows that point into the pack.
    chunk_rows: i64,
    /// Fixed by `--repair` in this run.
    repaired: bool,
}

pub(crate) async fn run(config: &Config, args: CatalogCheckArgs) -> Result<ExitCode> {
    let catalog = catalog(config).await?;
    let repo = vaultline_runtime::deps::open_repository(&config.repository, None).await?;
    let mut findings = Vec::new();
    let (mut packs, mut manifests) = (0usize, 0usize);
    for tenant in catalog.tenants().await? {
        packs += compare_packs(&catalog, &repo, &tenant, args.repair, &mut findings).await?;
        manifests +=
            compare_manifests(&catalog, &repo, &tenant, args.repair, &mut findings).await?;
    }
    let unrepaired = findings.iter().filter(|f| !f.repaired).count();
    if args.json {
        print_json(&serde_json::json!({
            "packs": packs,
            "manifests": manifests,
            "findings": findings,
        }))?;
    } else {
        println!(
            "compared {packs} pack(s) and {manifests} manifest(s) of {} with the catalog",
            repo.describe()
        );
        for f in &findings {
            let needed: Vec<&str> = f.snapshots.iter().map(SnapshotId::as_str).collect();
            println!(
                "  {}: {} {}: {}{}{}{}",
                f.tenant,
                f.kind,
                f.object,
                f.detail,
                if needed.is_empty() {
                    String::new()
                } else {
                    format!("; needed by {}", needed.join(", "))
                },
                if f.chunk_rows > 0 {
                    format!("; {} chunk row(s) point into it", f.chunk_rows)
                } else {
                    String::new()
                },
                if f.repaired { " (repaired)" } else { "" }
            );
        }
        if findings.is_empty() {
            println!("the catalog and the repository agree");
        } else if unrepaired > 0 && !args.repair {
            println!("run again with --repair to fix what is safe to fix");
        }
    }
    Ok(if unrepaired == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Compares the tenant's packs, one first byte at a time; returns how many
/// the catalog holds.
async fn compare_packs(
    catalog: &Catalog,
    repo: &Repository,
    tenant: &Name,
    repair: bool,
    findings: &mut Vec<Finding>,
) -> Result<usize> {
    let prefix = ObjectKey::packs(tenant);
    let dirs: BTreeSet<String> = repo.list_dirs(&prefix).await?.into_iter().collect();
    let mut compared = 0;
    for first in 0..=u8::MAX {
        let dir = format!("{first:02x}");
        let stored: BTreeMap<String, u64> = if dirs.contains(&dir) {
            repo.list_sized(&format!("{prefix}{dir}/"))
                .await?
                .into_iter()
                .collect()
        } else {
            BTreeMap::new()
        };
        let recorded = catalog.packs_starting_with(tenant, first).await?;
        compared += recorded.len();
        let mut known = BTreeSet::new();
        for (pack, size) in recorded {
            let key = ObjectKey::pack(tenant, &pack);
            let (kind, detail) = match stored.get(&key) {
                Some(&found) if found == size => {
                    known.insert(key);
                    continue;
                }
                Some(&found) => (
                    "pack-size",
                    format!("the repository holds {found} bytes, the catalog records {size}"),
                ),
                None => ("pack-missing", "the repository does not have it".to_owned()),
            };
            known.insert(key);
            findings.push(lost_pack(catalog, tenant, pack, kind, detail, repair).await?);
        }
        for key in stored.keys().filter(|key| !known.contains(*key)) {
            let Some(pack) = key
                .rsplit('/')
                .next()
                .and_then(|name| PackId::from_hex(name).ok())
            else {
                continue;
            };
            findings.push(Finding {
                tenant: tenant.clone(),
                kind: "pack-unknown",
                object: pack.to_string(),
                detail: "in the repository, not in the catalog (an upload finishing, or \
                         left by a crash; left alone)"
                    .into(),
                snapshots: vec![],
                chunk_rows: 0,
                repaired: false,
            });
        }
    }
    Ok(compared)
}

/// A pack the repository lost or holds damaged: reported, and with
/// `repair` forgotten, its snapshots marked corrupt.
async fn lost_pack(
    catalog: &Catalog,
    tenant: &Name,
    pack: PackId,
    kind: &'static str,
    detail: String,
    repair: bool,
) -> Result<Finding> {
    let snapshots: Vec<SnapshotId> = catalog
        .snapshots_needing(tenant, &pack)
        .await?
        .into_iter()
        .map(|(snapshot, _)| snapshot)
        .collect();
    let chunk_rows = catalog.chunk_rows_in(tenant, &pack).await?;
    if repair {
        let why = format!("catalog check: pack {pack}: {detail}");
        for snapshot in &snapshots {
            catalog
                .finish_snapshot(tenant, snapshot, SnapshotStatus::Corrupt, Some(&why))
                .await?;
        }
        catalog.forget_lost_pack(tenant, &pack).await?;
    }
    Ok(Finding {
        tenant: tenant.clone(),
        kind,
        object: pack.to_string(),
        detail,
        snapshots,
        chunk_rows,
        repaired: repair,
    })
}

/// Compares the tenant's manifests with its snapshots; returns how many
/// snapshots should have one.
async fn compare_manifests(
    catalog: &Catalog,
    repo: &Repository,
    tenant: &Name,
    repair: bool,
    findings: &mut Vec<Finding>,
) -> Result<usize> {
    let prefix = ObjectKey::manifests(tenant);
    let stored: BTreeSet<SnapshotId> = repo
        .list(&prefix)
        .await?
        .iter()
        .filter_map(|key| SnapshotId::parse(&key[prefix.len()..]).ok())
        .collect();
    let rows = catalog.snapshots(Some(tenant), None).await?;
    let known: BTreeSet<&SnapshotId> = rows.iter().map(|r| &r.id).collect();
    let mut compared = 0;
    for row in &rows {
        if !matches!(
            row.status,
            SnapshotStatus::Stored | SnapshotStatus::Verified
        ) {
            continue;
        }
        compared += 1;
        if stored.contains(&row.id) {
            continue;
        }
        if repair {
            catalog
                .finish_snapshot(
                    tenant,
                    &row.id,
                    SnapshotStatus::Corrupt,
                    Some("catalog check: its manifest is missing from the repository"),
                )
                .await?;
        }
        findings.push(Finding {
            tenant: tenant.clone(),
            kind: "manifest-missing",
            object: row.id.to_string(),
            detail: format!(
                "snapshot is {}, its manifest is not in the repository",
                row.status
            ),
            snapshots: vec![row.id.clone()],
            chunk_rows: 0,
            repaired: repair,
        });
    }
    for snapshot in stored.iter().filter(|s| !known.contains(s)) {
        findings.push(Finding {
            tenant: tenant.clone(),
            kind: "manifest-unknown",
            object: snapshot.to_string(),
            detail: "in the repository, not in the catalog (left alone)".into(),
            snapshots: vec![],
            chunk_rows: 0,
            repaired: false,
        });
    }
    Ok(compared)
}
