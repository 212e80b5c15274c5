//! Restore: read a manifest with the tenant identity and rebuild the tree.
//! Works from the repository alone (no catalog, no NATS). Never writes outside
//! the target: paths with `..`, absolute paths, and paths through symlinks are
//! refused before anything is written for them.

use anyhow::{Context, Result, bail};
use std::ffi::OsStr;
use std::fs::File;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use vaultline_format::keys::Identity;
use vaultline_format::manifest::{ContentDigest, EntryKind, Record, SourceDigest, open_sealed};
use vaultline_storage::{ObjectKey, Repository};
use vaultline_types::{Name, SnapshotId};

/// What a restore did.
#[derive(Debug, Default)]
pub struct Restored {
    pub entries: u64,
    pub files: u64,
    pub bytes: u64,
}

/// Restores `snapshot` of `tenant` into `target`, then checks the rebuilt tree
/// against the source digest recorded at backup time.
///
/// # Errors
/// A wrong identity, a damaged or missing object, a hostile path, or a disk error.
pub async fn restore_tree(
    repo: &Repository,
    tenant: &Name,
    snapshot: &SnapshotId,
    identity: &Identity,
    target: &Path,
) -> Result<Restored> {
    let manifest = repo
        .get(&ObjectKey::manifest(tenant, snapshot))
        .await
        .with_context(|| format!("cannot read the manifest of snapshot {snapshot}"))?;
    let records = open_sealed(&manifest[..], identity).map_err(|e| match e {
        vaultline_format::Error::WrongKey => anyhow::anyhow!(
            "the identity given does not match the key snapshot {snapshot} of tenant {tenant} was encrypted to"
        ),
        other => anyhow::anyhow!("manifest of snapshot {snapshot}: {other}"),
    })?;
    std::fs::create_dir_all(target)
        .with_context(|| format!("cannot create {}", target.display()))?;
    let target = target.canonicalize()?;
    let mut digest = SourceDigest::default();
    let mut done = Restored::default();
    let mut dir_times = Vec::new();
    let mut expected_digest = None;
    for record in records {
        let entry = match record.with_context(|| format!("manifest of snapshot {snapshot}"))? {
            Record::Header(header) => {
                if &header.tenant != tenant || &header.snapshot != snapshot {
                    bail!(
                        "manifest of snapshot {snapshot} names another snapshot ({}/{})",
                        header.tenant,
                        header.snapshot
                    );
                }
                continue;
            }
            Record::Footer(footer) => {
                expected_digest = Some(footer.source_digest);
                continue;
            }
            Record::Entry(entry) => entry,
        };
        let path = safe_join(&target, &entry.path)?;
        let mut content = [0u8; 32];
        match entry.kind {
            EntryKind::Dir => {
                std::fs::create_dir_all(&path)
                    .with_context(|| format!("cannot create {}", path.display()))?;
                set_mode(&path, entry.mode)?;
                dir_times.push((path.clone(), entry.mtime, entry.mtime_nanos));
            }
            EntryKind::Symlink => {
                let link_target = entry.target.as_deref().unwrap_or_default();
                remove_existing(&path)?;
                std::os::unix::fs::symlink(OsStr::from_bytes(link_target), &path)
                    .with_context(|| format!("cannot create symlink {}", path.display()))?;
                let mtime = filetime::FileTime::from_unix_time(entry.mtime, entry.mtime_nanos);
                filetime::set_symlink_file_times(&path, mtime, mtime)?;
            }
            EntryKind::File => {
                remove_existing(&path)?;
                let mut out = std::io::BufWriter::with_capacity(
                    1 << 20,
                    File::create(&path)
                        .with_context(|| format!("cannot create {}", path.display()))?,
                );
                let mut hasher = ContentDigest::default();
                for chunk in &entry.chunks {
                    let location = chunk.location.with_context(|| {
                        format!(
                            "manifest of snapshot {snapshot} lacks a chunk location for {}",
                            path.display()
                        )
                    })?;
                    let key = ObjectKey::pack(tenant, &location.pack);
                    let sealed = repo
                        .get_range(&key, location.offset, location.length)
                        .await
                        .with_context(|| {
                            format!("cannot read pack {} for {}", location.pack, path.display())
                        })?;
                    let plain = tokio::task::block_in_place(|| {
                        vaultline_format::blob::open(&sealed, identity)
                    })
                    .with_context(|| {
                        format!(
                            "pack {} is damaged (restoring {})",
                            location.pack,
                            path.display()
                        )
                    })?;
                    if plain.len() != chunk.raw_length as usize {
                        bail!(
                            "pack {} returned a chunk of the wrong size for {}",
                            location.pack,
                            path.display()
                        );
                    }
                    hasher.update(&plain);
                    out.write_all(&plain)
                        .with_context(|| format!("cannot write {}", path.display()))?;
                }
                out.into_inner()
                    .map_err(|e| e.into_error())
                    .with_context(|| format!("cannot write {}", path.display()))?;
                set_mode(&path, entry.mode)?;
                let mtime = filetime::FileTime::from_unix_time(entry.mtime, entry.mtime_nanos);
                filetime::set_file_mtime(&path, mtime)?;
                content = hasher.finish();
                done.files += 1;
                done.bytes += entry.size;
            }
        }
        digest.entry(&entry, content);
        done.entries += 1;
    }
    // Directory times last: creating their children changed them.
    for (path, secs, nanos) in dir_times.into_iter().rev() {
        filetime::set_file_mtime(&path, filetime::FileTime::from_unix_time(secs, nanos))?;
    }
    match expected_digest {
        Some(expected) if expected == digest.finish() => Ok(done),
        Some(_) => bail!(
            "restored tree does not match the digest recorded at backup time (snapshot {snapshot})"
        ),
        None => bail!("manifest of snapshot {snapshot} is truncated (no footer)"),
    }
}

/// Joins a manifest path onto the target, refusing anything that could land
/// outside it: absolute paths, `..`, and parents that are symlinks.
fn safe_join(target: &Path, raw: &[u8]) -> Result<PathBuf> {
    let relative = Path::new(OsStr::from_bytes(raw));
    let shown = String::from_utf8_lossy(raw);
    if raw.is_empty() || raw.contains(&0) {
        bail!("refusing to restore an entry with an empty or invalid path");
    }
    let mut path = target.to_path_buf();
    let parts: Vec<_> = relative.components().collect();
    for (i, part) in parts.iter().enumerate() {
        match part {
            Component::Normal(name) => {
                path.push(name);
                // Every parent must be a real directory we made, never a symlink.
                if i + 1 < parts.len()
                    && let Ok(meta) = std::fs::symlink_metadata(&path)
                    && !meta.is_dir()
                {
                    bail!("refusing to restore {shown:?}: a parent is a symlink or a file");
                }
            }
            Component::CurDir => {}
            Component::ParentDir => bail!("refusing to restore {shown:?}: it climbs out with '..'"),
            Component::RootDir | Component::Prefix(_) => {
                bail!("refusing to restore {shown:?}: the path is absolute")
            }
        }
    }
    if path == target {
        bail!("refusing to restore {shown:?}: it names the target itself");
    }
    Ok(path)
}

fn remove_existing(path: &Path) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => bail!(
            "cannot restore {}: a directory is in the way",
            path.display()
        ),
        Ok(_) => {
            std::fs::remove_file(path).with_context(|| format!("cannot replace {}", path.display()))
        }
        Err(_) => Ok(()),
    }
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot set the mode of {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_paths_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path();
        for bad in ["../x", "a/../../x", "/etc/passwd", "", "."] {
            assert!(
                safe_join(target, bad.as_bytes()).is_err(),
                "{bad:?} must be refused"
            );
        }
        std::os::unix::fs::symlink("/tmp", target.join("link")).unwrap();
        assert!(safe_join(target, b"link/file").is_err());
        assert_eq!(
            safe_join(target, b"a/b c/\xc3\xbc").unwrap(),
            target.join("a/b c/ü")
        );
    }
}
