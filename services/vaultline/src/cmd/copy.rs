//! `vaultline copy --to-repo URL`: existing snapshots into another
//! repository, moving only the objects it lacks. What the target holds is
//! learnt by listing each tenant's packs and manifests there once (a LIST
//! per thousand objects), not by asking for each object. Every object moved
//! is checked against its digest on the way and read back after.

use crate::context::catalog;
use crate::output::{human_bytes, print_json};
use crate::progress::{Output, Progress, Unit};
use anyhow::{Context, Result, bail};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use vaultline_catalog::{Catalog, SnapshotRow, SnapshotStatus};
use vaultline_format::key_record::KeyRecord;
use vaultline_format::keys::Kek;
use vaultline_runtime::Config;
use vaultline_runtime::deps::{load_kek, open_repository};
use vaultline_storage::{ObjectKey, Repository};
use vaultline_types::{Name, SnapshotId};

/// Flags of `copy`.
#[derive(clap::Args, Debug)]
pub struct CopyArgs {
    /// The repository to copy into: a `[[repository.copies]]` name (its own
    /// credentials), or `s3://bucket/prefix` / `file:///dir` (S3 settings
    /// from `[repository.s3]` or the AWS variables).
    #[arg(long)]
    to_repo: String,
    /// Only these snapshots (repeatable).
    #[arg(long = "snapshot", value_name = "ID")]
    snapshots: Vec<String>,
    /// Only the snapshots of TENANT/SOURCE (repeatable).
    #[arg(long = "source", value_name = "TENANT/SOURCE")]
    sources: Vec<String>,
    /// The target repository's key-encryption key (an age identity file):
    /// the tenants' key records are wrapped to it there instead of being
    /// copied as they are, so the target opens with its own KEK.
    #[arg(long, value_name = "FILE")]
    to_kek: Option<PathBuf>,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

/// What one run did.
#[derive(Debug, Default, serde::Serialize)]
struct Summary {
    snapshots: usize,
    /// Objects the snapshots need (key records, packs, manifests).
    objects: usize,
    /// Of those, the ones the target already held.
    present: usize,
    moved: usize,
    bytes_moved: u64,
    /// Bytes of the distinct packs the snapshots reference.
    pack_bytes: u64,
    key_records_rewrapped: usize,
}

pub(crate) async fn run(config: &Config, args: CopyArgs) -> Result<ExitCode> {
    let catalog = catalog(config).await?;
    let target = open_target(config, &args.to_repo).await?;
    target.check_lock().await?;
    let source = open_repository(&config.repository, None).await?;
    // Ours to unwrap the key records, theirs to wrap them again.
    let keks = match &args.to_kek {
        Some(file) => Some((load_kek(config)?, read_kek(file)?)),
        None => None,
    };
    let chosen = choose(&catalog, &args).await?;
    if chosen.is_empty() {
        bail!("no stored snapshot matches; nothing to copy");
    }
    let scratch = vaultline_copier::scratch_dir(&config.staging.path).await?;
    let mut summary = Summary {
        snapshots: chosen.len(),
        ..Summary::default()
    };
    let mut by_tenant: BTreeMap<Name, Vec<SnapshotRow>> = BTreeMap::new();
    for row in chosen {
        by_tenant.entry(row.tenant.clone()).or_default().push(row);
    }
    let (moved, to_move) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    // With --json the summary is stdout's: progress goes to stderr.
    let following = Progress::start("copy", Unit::Bytes, None, args.json, Output::StderrOnly)
        .follow_growing(moved.clone(), Some(to_move.clone()));
    let mut copied = Ok(());
    for (tenant, rows) in by_tenant {
        let copy = TenantCopy {
            catalog: &catalog,
            from: &source,
            to: &target,
            to_name: &args.to_repo,
            tenant: &tenant,
            scratch: &scratch,
            moved: &moved,
            to_move: &to_move,
        };
        copied = copy
            .run(
                &rows,
                keks.as_ref().map(|(ours, theirs)| (ours, theirs)),
                &mut summary,
            )
            .await;
        if copied.is_err() {
            break;
        }
    }
    following.finish(copied.is_ok()).await;
    copied?;
    if args.json {
        print_json(&summary)?;
    } else {
        println!(
            "{} snapshot(s) copied to {}: {} object(s) needed, {} already there, {} moved ({}); \
             the packs referenced hold {}",
            summary.snapshots,
            target.describe(),
            summary.objects,
            summary.present,
            summary.moved,
            human_bytes(summary.bytes_moved as i64),
            human_bytes(summary.pack_bytes as i64),
        );
        if summary.key_records_rewrapped > 0 {
            println!(
                "{} key record(s) wrapped to the target's KEK",
                summary.key_records_rewrapped
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A configured copy by name, else a URL.
async fn open_target(config: &Config, to: &str) -> Result<Repository> {
    if let Some(copy) = config.repository.copies.iter().find(|c| c.name == to) {
        return Ok(open_repository(&copy.repository(), None).await?);
    }
    if !to.contains("://") && !to.starts_with('/') {
        bail!("--to-repo {to:?} is neither a configured copy nor a repository URL");
    }
    Ok(open_repository(&config.repository, Some(to)).await?)
}

fn read_kek(file: &std::path::Path) -> Result<Kek> {
    let text = zeroize::Zeroizing::new(
        std::fs::read_to_string(file)
            .with_context(|| format!("cannot read the target's KEK {}", file.display()))?,
    );
    Kek::parse(&text).with_context(|| format!("{} is not an age identity", file.display()))
}

/// The stored snapshots the flags name (all of them without flags).
async fn choose(catalog: &Catalog, args: &CopyArgs) -> Result<Vec<SnapshotRow>> {
    let copyable = |row: &SnapshotRow| {
        matches!(
            row.status,
            SnapshotStatus::Stored | SnapshotStatus::Verified
        ) && row.manifest_digest.is_some()
    };
    let mut chosen = Vec::new();
    for id in &args.snapshots {
        let row = catalog.find_snapshot(&SnapshotId::parse(id)?).await?;
        if !copyable(&row) {
            bail!(
                "snapshot {id} is {}; only stored snapshots are copied",
                row.status
            );
        }
        chosen.push(row);
    }
    for spec in &args.sources {
        let (tenant, source) = crate::context::parse_pair(spec)?;
        chosen.extend(
            catalog
                .snapshots(Some(&tenant), Some(&source))
                .await?
                .into_iter()
                .filter(copyable),
        );
    }
    if args.snapshots.is_empty() && args.sources.is_empty() {
        chosen.extend(
            catalog
                .snapshots(None, None)
                .await?
                .into_iter()
                .filter(copyable),
        );
    }
    let mut seen = BTreeSet::new();
    chosen.retain(|row| seen.insert((row.tenant.clone(), row.id.clone())));
    Ok(chosen)
}

/// One tenant's snapshots into the target.
struct TenantCopy<'a> {
    catalog: &'a Catalog,
    from: &'a Repository,
    to: &'a Repository,
    to_name: &'a str,
    tenant: &'a Name,
    scratch: &'a std::path::Path,
    /// Bytes moved, and bytes known to need moving, for the progress display.
    moved: &'a AtomicU64,
    to_move: &'a AtomicU64,
}

impl TenantCopy<'_> {
    async fn run(
        &self,
        rows: &[SnapshotRow],
        kek: Option<(&Kek, &Kek)>,
        summary: &mut Summary,
    ) -> Result<()> {
        let tenant = self.tenant;
        // What the target holds, by listing: key → size.
        let mut there: HashMap<String, u64> = HashMap::new();
        for prefix in [
            ObjectKey::packs(tenant),
            ObjectKey::manifests(tenant),
            ObjectKey::key_records(tenant),
        ] {
            there.extend(self.to.list_sized(&prefix).await?);
        }
        let key_ids: BTreeSet<&str> = rows.iter().map(|r| r.key_id.as_str()).collect();
        match kek {
            Some((ours, theirs)) => {
                summary.key_records_rewrapped +=
                    self.rewrap(&key_ids, ours, theirs, &there).await?;
            }
            None => {
                for key_id in &key_ids {
                    let prefix = format!("{}{key_id}/", ObjectKey::key_records(tenant));
                    for (key, size) in self.from.list_sized(&prefix).await? {
                        self.one(&key, None, size, &there, summary).await?;
                    }
                }
            }
        }
        let mut packs = BTreeMap::new();
        for row in rows {
            packs.extend(self.catalog.packs_of(tenant, &row.id).await?);
        }
        summary.pack_bytes += packs.values().sum::<u64>();
        let missing: u64 = packs
            .iter()
            .filter(|(pack, size)| there.get(&ObjectKey::pack(tenant, pack)) != Some(size))
            .map(|(_, size)| size)
            .sum();
        self.to_move.fetch_add(missing, Ordering::Relaxed);
        for (pack, size) in &packs {
            self.one(
                &ObjectKey::pack(tenant, pack),
                Some(pack.0),
                *size,
                &there,
                summary,
            )
            .await?;
        }
        // Manifests last: one in the target means its packs are there.
        for row in rows {
            let digest = row
                .manifest_digest
                .as_deref()
                .and_then(vaultline_copier::digest_from_hex)
                .with_context(|| format!("snapshot {} has no manifest digest", row.id))?;
            let size = self
                .from
                .size(&ObjectKey::manifest(tenant, &row.id))
                .await?
                .unwrap_or(0);
            self.one(
                &ObjectKey::manifest(tenant, &row.id),
                Some(digest),
                size,
                &there,
                summary,
            )
            .await?;
        }
        Ok(())
    }

    /// Moves one object unless the target holds it with its size, then
    /// reads it back there against the digest it was copied with.
    async fn one(
        &self,
        key: &str,
        want: Option<[u8; 32]>,
        size: u64,
        there: &HashMap<String, u64>,
        summary: &mut Summary,
    ) -> Result<()> {
        summary.objects += 1;
        if there.get(key) == Some(&size) {
            summary.present += 1;
            return Ok(());
        }
        if !key.starts_with(&ObjectKey::packs(self.tenant)) {
            // Packs were counted ahead, all at once; the rest as they come.
            self.to_move.fetch_add(size, Ordering::Relaxed);
        }
        let (digest, moved) =
            vaultline_copier::transfer(self.from, self.to, self.to_name, key, want, self.scratch)
                .await?;
        self.moved.fetch_add(moved, Ordering::Relaxed);
        let read_back = self.to.digest(key).await?;
        if read_back != (digest, moved) {
            bail!("{key} reads back from the target with other bytes than were copied");
        }
        summary.moved += 1;
        summary.bytes_moved += moved;
        Ok(())
    }

    /// Writes each key's record wrapped to the target's KEK (`theirs`),
    /// unwrapping it with ours; one already there that opens with theirs is kept.
    async fn rewrap(
        &self,
        key_ids: &BTreeSet<&str>,
        ours: &Kek,
        theirs: &Kek,
        there: &HashMap<String, u64>,
    ) -> Result<usize> {
        let mut written = 0;
        for key in self.catalog.tenant_keys(self.tenant).await? {
            if !key_ids.contains(key.key_id.as_str()) {
                continue;
            }
            let object = ObjectKey::key_record(self.tenant, &key.key_id, &theirs.id());
            if there.contains_key(&object)
                && KeyRecord::parse(&self.to.get(&object).await?)
                    .is_ok_and(|r| r.open_with_kek(theirs).is_ok())
            {
                continue;
            }
            let identity = ours.unwrap(&key.wrapped_identity)?;
            let record = KeyRecord::new(
                theirs,
                self.tenant,
                &identity,
                &key.chunk_key,
                key.created_at.unix_timestamp(),
            );
            self.to.put_new_bytes(&object, &record.to_bytes()).await?;
            written += 1;
        }
        Ok(written)
    }
}
