//! `vaultline snapshots`: snapshots newest first, from the catalog, or with
//! `--repo` from the repository's manifests alone (no catalog).

use crate::access::KeyFlags;
use crate::context::catalog;
use crate::output::{human_bytes, print_json, short_time};
use anyhow::Result;
use std::collections::{BTreeMap, HashMap};
use std::process::ExitCode;
use vaultline_catalog::{CopyState, SnapshotRow, SnapshotStatus};
use vaultline_runtime::Config;
use vaultline_storage::ObjectKey;
use vaultline_types::{Name, SnapshotId};

/// Flags of `snapshots`.
#[derive(clap::Args, Debug)]
pub struct SnapshotsArgs {
    /// Only this source (with --tenant).
    #[arg(long)]
    source: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    keys: KeyFlags,
}

pub(crate) async fn run(config: &Config, args: SnapshotsArgs) -> Result<ExitCode> {
    if args.keys.repo.is_some() {
        return from_repository(config, args).await;
    }
    let tenant = args.keys.tenant.clone().map(Name::new).transpose()?;
    let source = args.source.map(Name::new).transpose()?;
    let catalog = catalog(config).await?;
    let rows = catalog.snapshots(tenant.as_ref(), source.as_ref()).await?;
    let rows = with_copies(config, &catalog, rows).await?;
    if args.json {
        print_json(&rows)?;
    } else {
        print_table(&rows, !config.repository.copies.is_empty());
    }
    Ok(ExitCode::SUCCESS)
}

/// A snapshot with the state of each of its copies.
#[derive(serde::Serialize)]
struct WithCopies {
    #[serde(flatten)]
    row: SnapshotRow,
    copies: Vec<CopyState>,
}

/// Adds each snapshot's copies: the catalog's record, and `pending` for a
/// configured copy that has not tried a snapshot it will copy yet.
async fn with_copies(
    config: &Config,
    catalog: &vaultline_catalog::Catalog,
    rows: Vec<SnapshotRow>,
) -> Result<Vec<WithCopies>> {
    let mut by_tenant: BTreeMap<Name, Vec<SnapshotId>> = BTreeMap::new();
    for r in &rows {
        by_tenant
            .entry(r.tenant.clone())
            .or_default()
            .push(r.id.clone());
    }
    let mut states = HashMap::new();
    for (tenant, ids) in by_tenant {
        for (id, copies) in catalog.copy_states(&tenant, &ids).await? {
            states.insert((tenant.clone(), id), copies);
        }
    }
    Ok(rows
        .into_iter()
        .map(|row| {
            let mut copies = states
                .remove(&(row.tenant.clone(), row.id.clone()))
                .unwrap_or_default();
            let copyable = matches!(
                row.status,
                SnapshotStatus::Stored | SnapshotStatus::Verified
            );
            for target in &config.repository.copies {
                if copyable && !copies.iter().any(|c| c.target == target.name) {
                    copies.push(CopyState {
                        target: target.name.clone(),
                        status: "pending".into(),
                        attempts: 0,
                        error: None,
                        verified_at: None,
                    });
                }
            }
            WithCopies { row, copies }
        })
        .collect())
}

fn print_table(rows: &[WithCopies], copies_configured: bool) {
    let show_copies = copies_configured || rows.iter().any(|r| !r.copies.is_empty());
    let copies_header = if show_copies {
        format!(" {:<24}", "COPIES")
    } else {
        String::new()
    };
    println!(
        "{:<26} {:<24} {:<10} {:<9} {:<20} {:>7} {:>10} {:>10} {:>10}{copies_header}  ERROR",
        "SNAPSHOT", "SOURCE", "STATUS", "PROTECTED", "STARTED", "FILES", "READ", "NEW", "STORED"
    );
    for WithCopies { row: r, copies } in rows {
        let copies = if show_copies {
            let listed: Vec<String> = copies
                .iter()
                .map(|c| format!("{}:{}", c.target, c.status))
                .collect();
            format!(" {:<24}", listed.join(","))
        } else {
            String::new()
        };
        println!(
            "{:<26} {:<24} {:<10} {:<9} {:<20} {:>7} {:>10} {:>10} {:>10}{copies}  {}",
            r.id.as_str(),
            format!("{}/{}", r.tenant, r.source),
            r.status.as_str(),
            if r.protected { "yes" } else { "" },
            short_time(r.started_at),
            r.files,
            human_bytes(r.bytes_read),
            human_bytes(r.bytes_new),
            human_bytes(r.bytes_stored),
            r.error.as_deref().unwrap_or("")
        );
    }
}

/// A snapshot as its manifest records it.
#[derive(serde::Serialize)]
struct Listed {
    snapshot: SnapshotId,
    tenant: Name,
    source: Option<Name>,
    kind: Option<String>,
    created: Option<i64>,
    entries: Option<u64>,
    bytes: Option<u64>,
    tables: Option<Vec<vaultline_format::manifest::TableRows>>,
    /// Why the manifest could not be read (damaged, another key).
    error: Option<String>,
}

/// Reads the header and footer of every manifest of every tenant the
/// secret given opens, one manifest at a time.
async fn from_repository(config: &Config, args: SnapshotsArgs) -> Result<ExitCode> {
    let repo = args.keys.repository(config).await?;
    let source = args.source.map(Name::new).transpose()?;
    let mut listed = Vec::new();
    for (tenant, keyring) in args.keys.tenants_offline(config, &repo).await? {
        let prefix = ObjectKey::manifests(&tenant);
        for key in repo.list(&prefix).await? {
            let Ok(snapshot) = SnapshotId::parse(&key[prefix.len()..]) else {
                continue;
            };
            let read =
                vaultline_restore::manifest_summary(&repo, &tenant, &snapshot, &keyring).await;
            let mut row = Listed {
                snapshot,
                tenant: tenant.clone(),
                source: None,
                kind: None,
                created: None,
                entries: None,
                bytes: None,
                tables: None,
                error: None,
            };
            match read {
                Ok((header, footer)) => {
                    if source.as_ref().is_some_and(|s| s != &header.source) {
                        continue;
                    }
                    row.source = Some(header.source);
                    row.kind = Some(header.source_kind);
                    row.created = Some(header.created);
                    row.entries = Some(footer.entries);
                    row.bytes = Some(footer.bytes);
                    row.tables = Some(footer.tables);
                }
                Err(e) => row.error = Some(e.to_string()),
            }
            listed.push(row);
        }
    }
    listed.sort_by(|a, b| b.snapshot.as_str().cmp(a.snapshot.as_str()));
    if args.json {
        print_json(&listed)?;
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<26} {:<24} {:<9} {:<20} {:>8} {:>10}  ERROR",
        "SNAPSHOT", "SOURCE", "KIND", "CREATED", "ENTRIES", "SIZE"
    );
    for r in &listed {
        let source = r
            .source
            .as_ref()
            .map_or("?".into(), |s| format!("{}/{s}", r.tenant));
        let created = r
            .created
            .and_then(|c| time::OffsetDateTime::from_unix_timestamp(c).ok())
            .map(short_time)
            .unwrap_or_default();
        println!(
            "{:<26} {:<24} {:<9} {:<20} {:>8} {:>10}  {}",
            r.snapshot.as_str(),
            source,
            r.kind.as_deref().unwrap_or("?"),
            created,
            r.entries.map_or("-".into(), |n| n.to_string()),
            r.bytes.map_or("-".into(), |b| human_bytes(b as i64)),
            r.error.as_deref().unwrap_or("")
        );
    }
    Ok(ExitCode::SUCCESS)
}
