//! `vaultline catalog rebuild`: fills an empty catalog from the repository
//! and the KEK alone. Tenants and keys come from the key records, packs and
//! the chunk index from each pack's sealed index (two ranged reads a
//! pack), sources and snapshots from the manifests. Memory holds one
//! listing page of packs (a 1/256 share: packs sit under their first two
//! hex digits) and one manifest's pack ids at a time, whatever the size of
//! the repository.

use crate::progress::{Output, Progress, Unit};
use anyhow::{Context, Result, bail};
use futures::StreamExt;
use std::collections::BTreeSet;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use time::OffsetDateTime;
use vaultline_catalog::{Catalog, RecoveredKey, RecoveredSnapshot, StoredChunk};
use vaultline_format::key_record::{KeyRecord, OpenedKey};
use vaultline_format::keys::{Kek, Keyring};
use vaultline_format::manifest::{EntryKind, Footer, Header};
use vaultline_runtime::Config;
use vaultline_runtime::deps::{load_kek, open_repository};
use vaultline_storage::{ObjectKey, RangeReader, Repository};
use vaultline_types::{Name, PackId, SnapshotId};

/// Flags of `catalog rebuild`.
#[derive(clap::Args, Debug)]
pub struct RebuildArgs {
    /// The repository to read (`s3://bucket/prefix`, `file:///dir`);
    /// the configured one when not given.
    #[arg(long)]
    repo: Option<String>,
    /// Also read every pack in full and check that its SHA-256 is its id
    /// (as level 1 does). Without it only each pack's header and index are
    /// read, and the verifier's rolling check re-hashes the packs first.
    #[arg(long)]
    rehash: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// Packs read at once. Each is two small ranged reads, whose time is the
/// store's latency (tens of milliseconds), so many go at once.
const PARALLEL: usize = 32;

/// What the rebuild recovered, and what it could not.
#[derive(Default, serde::Serialize)]
struct Report {
    tenants: Vec<Name>,
    /// Tenants none of whose key records opens with the KEK given.
    tenants_skipped: Vec<Name>,
    keys: usize,
    packs: usize,
    chunks: usize,
    /// `tenant/pack: why` for packs whose header or index did not open.
    packs_damaged: Vec<String>,
    snapshots: usize,
    /// `tenant/snapshot: why` for snapshots recorded corrupt.
    snapshots_corrupt: Vec<String>,
    /// `tenant/snapshot: why` for manifests that could not be read.
    manifests_unreadable: Vec<String>,
    sources: BTreeSet<String>,
    /// Sources whose manifests predate the recorded config.
    sources_without_config: BTreeSet<String>,
    seconds: f64,
}

impl Report {
    fn clean(&self) -> bool {
        self.tenants_skipped.is_empty()
            && self.packs_damaged.is_empty()
            && self.snapshots_corrupt.is_empty()
            && self.manifests_unreadable.is_empty()
    }
}

/// One tenant and every key of it the KEK opens, newest first.
struct TenantKeys {
    tenant: Name,
    keyring: Arc<Keyring>,
}

pub(crate) async fn run(config: &Config, args: RebuildArgs) -> Result<ExitCode> {
    let started = std::time::Instant::now();
    let catalog = vaultline_runtime::open_catalog(&config.catalog)?;
    catalog.migrate().await?;
    let held = catalog.tenant_count().await?;
    if held > 0 {
        bail!(
            "catalog rebuild fills an empty catalog, and this one holds {held} tenant(s): \
             compare it with the repository with `vaultline catalog check`, or point \
             catalog.url at a new database"
        );
    }
    let repo = open_repository(&config.repository, args.repo.as_deref()).await?;
    let kek = load_kek(config)
        .context("catalog rebuild needs the KEK (keys.kek-file): it opens the key records")?;
    let mut report = Report::default();
    let read = Arc::new(AtomicU64::new(0));
    // With --json the report is stdout's: progress goes to stderr.
    let following = Progress::start(
        "catalog rebuild",
        Unit::Items("objects"),
        None,
        args.json,
        Output::StderrOnly,
    )
    .follow(read.clone());
    let rebuilt = rebuild(&catalog, &repo, &kek, args.rehash, &read, &mut report).await;
    following.finish(rebuilt.is_ok()).await;
    rebuilt?;
    report.seconds = started.elapsed().as_secs_f64();
    print(&report, &repo, args.json)?;
    Ok(if report.clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Every tenant the KEK opens: keys, packs, snapshots; `read` counts the
/// packs and manifests read.
async fn rebuild(
    catalog: &Catalog,
    repo: &Repository,
    kek: &Kek,
    rehash: bool,
    read: &AtomicU64,
    report: &mut Report,
) -> Result<()> {
    for tenant in repo.list_dirs(ObjectKey::TENANTS).await? {
        let Ok(tenant) = Name::new(tenant) else {
            continue;
        };
        let Some(keys) = recover_keys(catalog, repo, &tenant, kek, report).await? else {
            report.tenants_skipped.push(tenant);
            continue;
        };
        recover_packs(catalog, repo, &keys, rehash, read, report).await?;
        recover_snapshots(catalog, repo, &keys, read, report).await?;
        report.tenants.push(tenant);
    }
    catalog.credit_recovered_packs().await?;
    Ok(())
}

/// Records every key of `tenant` whose record opens with `kek`; the newest
/// is the active one. `None` when no record opens.
async fn recover_keys(
    catalog: &Catalog,
    repo: &Repository,
    tenant: &Name,
    kek: &Kek,
    report: &mut Report,
) -> Result<Option<TenantKeys>> {
    let opened: Vec<(KeyRecord, OpenedKey)> =
        crate::access::opened_records(repo, tenant, |record| {
            let key = record.open_with_kek(kek).ok()?;
            Some((record.clone(), key))
        })
        .await?;
    if opened.is_empty() {
        return Ok(None);
    }
    for (at, (record, key)) in opened.iter().enumerate() {
        catalog
            .recover_key(&RecoveredKey {
                tenant,
                key_id: &record.key_id,
                recipient: &record.recipient,
                wrapped_identity: &record.wrapped_identity,
                chunk_key: &key.chunk_key,
                active: at == 0,
                created: OffsetDateTime::from_unix_timestamp(record.created)?,
            })
            .await?;
    }
    report.keys += opened.len();
    Ok(Some(TenantKeys {
        tenant: tenant.clone(),
        keyring: Arc::new(Keyring::new(
            opened.into_iter().map(|(_, key)| key.identity),
        )),
    }))
}

/// Records every pack of the tenant that opens, with its chunks.
async fn recover_packs(
    catalog: &Catalog,
    repo: &Repository,
    keys: &TenantKeys,
    rehash: bool,
    read: &AtomicU64,
    report: &mut Report,
) -> Result<()> {
    let ranges = RangeReader::new(repo.clone());
    let packs = ObjectKey::packs(&keys.tenant);
    // One directory's listing at a time, but the packs of the next one
    // are read while the last of this one's finish.
    let listed = futures::stream::iter(repo.list_dirs(&packs).await?)
        .then(|dir| {
            let prefix = format!("{packs}{dir}/");
            async move { repo.list_sized(&prefix).await }
        })
        .map(|listing| match listing {
            Ok(listing) => futures::stream::iter(listing.into_iter().map(Ok)).left_stream(),
            Err(e) => futures::stream::once(async { Err(e) }).right_stream(),
        })
        .flatten();
    let mut outcomes = std::pin::pin!(
        listed
            .map(|listed| async {
                let (key, size) = listed?;
                recover_pack(catalog, repo, &ranges, keys, key, size, rehash).await
            })
            .buffer_unordered(PARALLEL)
    );
    while let Some(outcome) = outcomes.next().await {
        read.fetch_add(1, Ordering::Relaxed);
        match outcome? {
            Outcome::Recorded { chunks } => {
                report.packs += 1;
                report.chunks += chunks;
            }
            Outcome::Damaged(why) => report.packs_damaged.push(why),
            Outcome::NotAPack => {}
        }
    }
    Ok(())
}

enum Outcome {
    Recorded { chunks: usize },
    Damaged(String),
    NotAPack,
}

async fn recover_pack(
    catalog: &Catalog,
    repo: &Repository,
    ranges: &RangeReader,
    keys: &TenantKeys,
    key: String,
    size: u64,
    rehash: bool,
) -> Result<Outcome> {
    let tenant = &keys.tenant;
    let Some(pack) = key
        .rsplit('/')
        .next()
        .and_then(|name| PackId::from_hex(name).ok())
        .filter(|pack| ObjectKey::pack(tenant, pack) == key)
    else {
        return Ok(Outcome::NotAPack);
    };
    let damaged = |why: String| Ok(Outcome::Damaged(format!("{tenant}/{pack}: {why}")));
    if rehash {
        let (digest, _) = repo.digest(&key).await?;
        if digest != pack.0 {
            return damaged("its SHA-256 is not its id".into());
        }
    }
    let entries =
        match vaultline_restore::read_pack_index(ranges, &key, pack, size, &keys.keyring).await {
            Ok(entries) => entries,
            Err(e) if e.is_transient() => return Err(e.into()),
            Err(e) => return damaged(e.to_string()),
        };
    let chunks: Vec<StoredChunk> = entries
        .iter()
        .map(|e| StoredChunk {
            id: e.id,
            offset: e.offset,
            length: e.length,
            raw_length: e.raw_length,
        })
        .collect();
    catalog
        .recover_pack(tenant, &pack, size, &chunks, rehash)
        .await?;
    Ok(Outcome::Recorded {
        chunks: chunks.len(),
    })
}

/// Records every snapshot of the tenant whose manifest opens, and its source.
async fn recover_snapshots(
    catalog: &Catalog,
    repo: &Repository,
    keys: &TenantKeys,
    read: &AtomicU64,
    report: &mut Report,
) -> Result<()> {
    let tenant = &keys.tenant;
    let prefix = ObjectKey::manifests(tenant);
    // In key order, which is time order: a source's newest config is recorded last.
    for key in repo.list(&prefix).await? {
        let Ok(snapshot) = SnapshotId::parse(&key[prefix.len()..]) else {
            continue;
        };
        read.fetch_add(1, Ordering::Relaxed);
        let (digest, manifest_size) = repo.digest(&key).await?;
        let read = match read_manifest(repo, keys, &snapshot).await? {
            Ok(read) => read,
            Err(why) => {
                report
                    .manifests_unreadable
                    .push(format!("{tenant}/{snapshot}: {why}"));
                continue;
            }
        };
        let Read {
            header,
            footer,
            files,
            packs,
        } = read;
        catalog
            .recover_source(
                tenant,
                &header.source,
                &header.source_kind,
                header.source_config.as_ref(),
            )
            .await?;
        let source = format!("{tenant}/{}", header.source);
        if header.source_config.is_none() {
            report.sources_without_config.insert(source.clone());
        } else {
            report.sources_without_config.remove(&source);
        }
        report.sources.insert(source);
        let packs: Vec<PackId> = packs
            .into_iter()
            .chain(footer.packs.iter().map(|p| p.id))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let problem = missing_packs(catalog, tenant, &packs, &footer).await?;
        let tables = (!footer.tables.is_empty())
            .then(|| serde_json::to_value(&footer.tables))
            .transpose()?;
        catalog
            .recover_snapshot(&RecoveredSnapshot {
                tenant,
                id: &snapshot,
                source: &header.source,
                key_id: &header.key_id,
                created: OffsetDateTime::from_unix_timestamp(header.created)?,
                files,
                bytes_read: footer.bytes,
                source_digest: &footer.source_digest,
                manifest_digest: &hex::encode(digest),
                manifest_size,
                tables: tables.as_ref(),
                packs: &packs,
                problem: problem.as_deref(),
            })
            .await?;
        report.snapshots += 1;
        if let Some(problem) = problem {
            report
                .snapshots_corrupt
                .push(format!("{tenant}/{snapshot}: {problem}"));
        }
    }
    Ok(())
}

/// A manifest as the rebuild needs it.
struct Read {
    header: Header,
    footer: Footer,
    /// File entries.
    files: u64,
    /// Every pack its entries' chunks name.
    packs: BTreeSet<PackId>,
}

/// Reads a manifest with the tenant's keys. The outer error stops the
/// rebuild (storage unreachable); the inner one is why this manifest cannot
/// be used.
async fn read_manifest(
    repo: &Repository,
    keys: &TenantKeys,
    snapshot: &SnapshotId,
) -> Result<std::result::Result<Read, String>> {
    let seen = Arc::new(Mutex::new((0u64, BTreeSet::new())));
    let each = {
        let seen = seen.clone();
        move |entry: &vaultline_format::manifest::Entry| {
            let mut seen = seen.lock().expect("not poisoned");
            if entry.kind == EntryKind::File {
                seen.0 += 1;
            }
            seen.1.extend(
                entry
                    .chunks
                    .iter()
                    .filter_map(|c| c.location.map(|l| l.pack)),
            );
            Ok(())
        }
    };
    match vaultline_restore::each_entry(repo, &keys.tenant, snapshot, &keys.keyring, each).await {
        Ok((header, footer)) => {
            if header.tenant != keys.tenant || &header.snapshot != snapshot {
                return Ok(Err(format!(
                    "the manifest says it is {}/{}",
                    header.tenant, header.snapshot
                )));
            }
            let (files, packs) = std::mem::take(&mut *seen.lock().expect("not poisoned"));
            Ok(Ok(Read {
                header,
                footer,
                files,
                packs,
            }))
        }
        Err(e) if e.is_transient() => Err(e.into()),
        Err(e) => Ok(Err(e.to_string())),
    }
}

/// Why the snapshot cannot be restored: a pack it names that was not
/// recovered, or whose size is not the one its footer records.
async fn missing_packs(
    catalog: &Catalog,
    tenant: &Name,
    packs: &[PackId],
    footer: &Footer,
) -> Result<Option<String>> {
    let found = catalog.pack_sizes(tenant, packs).await?;
    let mut missing = packs.iter().filter(|p| !found.contains_key(p));
    if let Some(first) = missing.next() {
        let more = missing.count();
        return Ok(Some(if more == 0 {
            format!("pack {first} is missing or damaged")
        } else {
            format!("pack {first} and {more} more are missing or damaged")
        }));
    }
    for record in &footer.packs {
        if found
            .get(&record.id)
            .is_some_and(|&size| size != record.size)
        {
            return Ok(Some(format!(
                "pack {} is {} bytes, not the {} its manifest records",
                record.id, found[&record.id], record.size
            )));
        }
    }
    Ok(None)
}

fn print(report: &Report, repo: &Repository, json: bool) -> Result<()> {
    if json {
        return crate::output::print_json(report);
    }
    println!(
        "rebuilt the catalog from {} in {:.1} s: {} tenant(s), {} key(s), {} source(s), \
         {} snapshot(s), {} pack(s), {} chunk(s)",
        repo.describe(),
        report.seconds,
        report.tenants.len(),
        report.keys,
        report.sources.len(),
        report.snapshots,
        report.packs,
        report.chunks
    );
    for tenant in &report.tenants_skipped {
        println!("tenant {tenant}: no key record opens with this KEK; skipped");
    }
    for line in report
        .packs_damaged
        .iter()
        .chain(&report.manifests_unreadable)
    {
        println!("damaged: {line}");
    }
    for line in &report.snapshots_corrupt {
        println!("corrupt: {line}");
    }
    for source in &report.sources_without_config {
        println!(
            "source {source}: its manifests predate recorded configs; add it again \
             (`vaultline source add`) before its next backup"
        );
    }
    println!(
        "not in the repository, so set again: retention policies, schedules, source \
         credentials, webhooks, verify levels and drill settings; the audit trail starts anew"
    );
    Ok(())
}
