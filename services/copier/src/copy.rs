//! Copying one snapshot to one target: the objects it needs that the target
//! lacks are read from the primary (checked against their digests on the
//! way, so damage is never copied), put without replacing anything, then
//! every object not yet read back in that target is read back and hashed.

use crate::Target;
use vaultline_catalog::{CopiedObject, CopyDue};
use vaultline_runtime::metrics::{MetricName, count};
use vaultline_runtime::{Deps, ErrorClass, ErrorType, StageError};
use vaultline_storage::{ObjectKey, Repository};
use vaultline_types::SnapshotCopied;

/// What became of one attempt.
pub(crate) enum Outcome {
    /// Every object is in the target and read back matching.
    Copied(SnapshotCopied),
    /// Another copier holds this snapshot's copy to this target.
    Busy,
    /// Recorded as pending with its error; `target_down` when the target's
    /// storage failed in a way a later try may get past.
    Failed { target_down: bool },
}

/// An object of the snapshot, with the digest the primary's bytes must have.
struct Needed {
    key: String,
    /// `None` for key records, which the catalog keeps no digest of.
    digest: Option<[u8; 32]>,
}

/// What one copy moved.
#[derive(Default)]
struct Moved {
    objects: u32,
    bytes: u64,
}

/// Copies `due` to `target`, recording the outcome in the catalog. Waits up
/// to `wait` while another copy of the tenant to the target runs, then
/// leaves it to the next pass.
///
/// # Errors
/// Only when the catalog fails.
pub(crate) async fn copy_to(
    deps: &Deps,
    target: &Target,
    due: &CopyDue,
    wait: std::time::Duration,
) -> Result<Outcome, StageError> {
    let catalog = &deps.catalog;
    // One copy per target and tenant at a time: a tenant's snapshots share
    // packs and key records, which two copies at once would both move.
    // Tenants share no object, so they copy side by side.
    let lock = format!("copy:{}:{}", target.name, due.tenant);
    let deadline = std::time::Instant::now() + wait;
    let lock = loop {
        if let Some(lock) = catalog.try_session_lock(lock.clone()).await? {
            break lock;
        }
        if std::time::Instant::now() >= deadline {
            return Ok(Outcome::Busy);
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    let result = copy_snapshot(deps, target, due).await;
    let labels = |outcome: &str| {
        [
            ("target", target.name.clone()),
            ("outcome", outcome.to_owned()),
        ]
    };
    let outcome = match result {
        Ok(copied) => {
            count(MetricName::Copies, &labels("verified"), 1);
            Outcome::Copied(copied)
        }
        Err(error) if error.error_type == ErrorType::Catalog => {
            lock.release().await?;
            return Err(error);
        }
        Err(error) => {
            tracing::warn!(target = %target.name, tenant = %due.tenant, snapshot = %due.snapshot, %error, "Copy not made; it stays pending.");
            count(MetricName::Copies, &labels("failed"), 1);
            catalog
                .copy_failed(&due.tenant, &due.snapshot, &target.name, &error.message)
                .await?;
            Outcome::Failed {
                target_down: error.class == ErrorClass::Transient
                    && error.error_type == ErrorType::Storage,
            }
        }
    };
    lock.release().await?;
    Ok(outcome)
}

/// Copies, then verifies, one snapshot.
///
/// # Errors
/// The first failure: reading the primary, a digest that does not match,
/// writing or reading back the target, or the catalog.
pub async fn copy_snapshot(
    deps: &Deps,
    target: &Target,
    due: &CopyDue,
) -> Result<SnapshotCopied, StageError> {
    let needed = needed(deps, due).await?;
    let keys: Vec<String> = needed.iter().map(|n| n.key.clone()).collect();
    let mut held = deps.catalog.copied_objects(&target.name, &keys).await?;
    let scratch = scratch_dir(&deps.config.staging.path).await?;
    let mut moved = Moved::default();
    for object in &needed {
        if !held.contains_key(&object.key) {
            let put = put_one(deps, target, object, &scratch, &mut moved).await?;
            held.insert(object.key.clone(), put);
        }
    }
    deps.catalog
        .copy_reached(
            &due.tenant,
            &due.snapshot,
            &target.name,
            false,
            moved.objects,
            moved.bytes,
        )
        .await?;
    for (key, object) in &held {
        if !object.verified {
            read_back(deps, target, key, (object.sha256, object.size)).await?;
        }
    }
    deps.catalog
        .copy_reached(&due.tenant, &due.snapshot, &target.name, true, 0, 0)
        .await?;
    tracing::info!(target = %target.name, tenant = %due.tenant, snapshot = %due.snapshot, objects = needed.len(), moved = moved.objects, bytes = moved.bytes, "Snapshot copied and read back.");
    Ok(SnapshotCopied {
        tenant: due.tenant.clone(),
        source: due.source.clone(),
        snapshot: due.snapshot.clone(),
        target: target.name.clone(),
        objects: needed.len() as u32,
        objects_moved: moved.objects,
        bytes_moved: moved.bytes,
    })
}

/// Key records first, then packs, then the manifest: a manifest in a copy
/// means everything it needs is already there.
async fn needed(deps: &Deps, due: &CopyDue) -> Result<Vec<Needed>, StageError> {
    let mut needed = Vec::new();
    let records = format!("{}{}/", ObjectKey::key_records(&due.tenant), due.key_id);
    for key in deps.repository.list(&records).await? {
        needed.push(Needed { key, digest: None });
    }
    if needed.is_empty() {
        return Err(StageError::permanent(
            ErrorType::Key,
            format!(
                "the primary holds no key record under {records}: a copy without it could not be opened"
            ),
        ));
    }
    for (pack, _size) in deps.catalog.packs_of(&due.tenant, &due.snapshot).await? {
        needed.push(Needed {
            key: ObjectKey::pack(&due.tenant, &pack),
            digest: Some(pack.0),
        });
    }
    let manifest = digest_from_hex(&due.manifest_digest).ok_or_else(|| {
        StageError::permanent(
            ErrorType::Manifest,
            format!("snapshot {} has no manifest digest", due.snapshot),
        )
    })?;
    needed.push(Needed {
        key: ObjectKey::manifest(&due.tenant, &due.snapshot),
        digest: Some(manifest),
    });
    Ok(needed)
}

/// Reads one object from the primary into a scratch file, checks it, puts
/// it into the target and records it.
async fn put_one(
    deps: &Deps,
    target: &Target,
    object: &Needed,
    scratch: &std::path::Path,
    moved: &mut Moved,
) -> Result<CopiedObject, StageError> {
    let (digest, size) = transfer(
        &deps.repository,
        &target.repository,
        &target.name,
        &object.key,
        object.digest,
        scratch,
    )
    .await?;
    deps.catalog
        .record_copied_object(&target.name, &object.key, size, &digest)
        .await?;
    count(
        MetricName::CopyBytes,
        &[("target", target.name.clone())],
        size,
    );
    moved.objects += 1;
    moved.bytes += size;
    Ok(CopiedObject {
        sha256: digest,
        size,
        verified: false,
    })
}

/// Copies the object `key` from `from` to `to` through a scratch file in
/// `scratch`: its bytes must hash to `want` when given (damage is never
/// copied), and it never replaces an object (the same bytes there already
/// are a no-op, other bytes a conflict left for a person). Returns the
/// digest and size of what was copied.
///
/// # Errors
/// Reading, a digest that does not match, writing, or a conflict.
pub async fn transfer(
    from: &Repository,
    to: &Repository,
    to_name: &str,
    key: &str,
    want: Option<[u8; 32]>,
    scratch: &std::path::Path,
) -> Result<([u8; 32], u64), StageError> {
    let local = tempfile::NamedTempFile::new_in(scratch)
        .map_err(|e| StageError::transient(ErrorType::Io, format!("scratch file: {e}")))?;
    let (digest, size) = from.download(key, local.path()).await?;
    if want.is_some_and(|want| want != digest) {
        return Err(StageError::permanent(
            ErrorType::Storage,
            format!("the primary's {key} does not match its recorded digest; not copied"),
        ));
    }
    match to.put_file(key, local.path()).await {
        Ok(_) => Ok((digest, size)),
        Err(vaultline_storage::Error::Conflict { key, found }) => {
            count(
                MetricName::ObjectConflicts,
                &[("tenant", tenant_of(&key))],
                1,
            );
            Err(StageError::permanent(
                ErrorType::Conflict,
                format!(
                    "copy {to_name}: {key} already holds other bytes ({found}); it was left as it is"
                ),
            ))
        }
        Err(other) => Err(other.into()),
    }
}

/// Level 1 on the target: the object read back must hash to the digest it
/// was copied with. One found missing or different is forgotten, so the
/// next try puts it again.
async fn read_back(
    deps: &Deps,
    target: &Target,
    key: &str,
    wanted: ([u8; 32], u64),
) -> Result<(), StageError> {
    let catalog = &deps.catalog;
    let found = match target.repository.digest(key).await {
        Ok(found) => Some(found),
        Err(vaultline_storage::Error::NotFound { .. }) => None,
        Err(other) => return Err(other.into()),
    };
    if found != Some(wanted) {
        catalog.forget_copied_object(&target.name, key).await?;
        let what = if found.is_some() {
            "reads back with other bytes"
        } else {
            "is missing"
        };
        return Err(StageError::transient(
            ErrorType::Storage,
            format!(
                "copy {}: {key} {what}; it is put again on the next try",
                target.name
            ),
        ));
    }
    catalog
        .mark_copied_object_verified(&target.name, key)
        .await?;
    Ok(())
}

/// A SHA-256 recorded as hex in the catalog (manifest digests).
pub fn digest_from_hex(hex: &str) -> Option<[u8; 32]> {
    hex::decode(hex).ok()?.try_into().ok()
}

fn tenant_of(key: &str) -> String {
    key.split('/').nth(1).unwrap_or("").to_owned()
}

/// The copier's scratch directory under the staging directory `staging`.
///
/// # Errors
/// When it cannot be created.
pub async fn scratch_dir(staging: &std::path::Path) -> Result<std::path::PathBuf, StageError> {
    let dir = staging.join("copier");
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| StageError::transient(ErrorType::Io, format!("{}: {e}", dir.display())))?;
    Ok(dir)
}
