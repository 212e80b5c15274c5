//! A snapshot's entries as its manifest lists them, without restoring
//! anything: what `vaultline ls` prints.

use crate::error::{Error, Result, fail};
use vaultline_format::keys::Keyring;
use vaultline_format::manifest::{Entry, Footer, Header, Record, open_sealed};
use vaultline_storage::{ObjectKey, ObjectReader, RangeReader, Repository};
use vaultline_types::{Name, SnapshotId};

/// Reads `snapshot`'s manifest as a stream on a blocking thread, handing
/// each entry to `each` in manifest order (a directory before what it
/// holds, names in byte order); returns the header and footer. Memory does
/// not grow with the number of entries. An error from `each` (stdout
/// closed) stops the walk.
///
/// # Errors
/// Keys that do not open it, a missing or damaged manifest, or what `each` returns.
pub async fn each_entry<F>(
    repo: &Repository,
    tenant: &Name,
    snapshot: &SnapshotId,
    keyring: &Keyring,
    mut each: F,
) -> Result<(Header, Footer)>
where
    F: FnMut(&Entry) -> std::io::Result<()> + Send + 'static,
{
    let (ranges, tenant, snapshot, keyring) = (
        std::sync::Arc::new(RangeReader::new(repo.clone())),
        tenant.clone(),
        snapshot.clone(),
        keyring.clone(),
    );
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let records = open_manifest(ranges, &tenant, &snapshot, &keyring, runtime)?;
        let (mut header, mut footer) = (None, None);
        for record in records {
            match record? {
                Record::Header(h) => header = Some(h),
                Record::Footer(f) => footer = Some(f),
                Record::Entry(entry) => {
                    each(&entry).map_err(|e| Error::write("cannot write the listing", e))?;
                }
            }
        }
        match (header, footer) {
            (Some(h), Some(f)) => Ok((h, f)),
            _ => fail!(Damaged, "manifest of snapshot {snapshot} is truncated"),
        }
    })
    .await
    .map_err(|e| Error::task("the manifest reader died", e))?
}

/// `snapshot`'s manifest as a stream of records (blocking reads through
/// `runtime`): what a restore walks and `ls` lists. A wrong identity is
/// told apart from damage.
pub(crate) fn open_manifest(
    ranges: std::sync::Arc<RangeReader>,
    tenant: &Name,
    snapshot: &SnapshotId,
    keyring: &Keyring,
    runtime: tokio::runtime::Handle,
) -> Result<impl Iterator<Item = Result<Record>> + use<>> {
    let object = ObjectReader::open(ranges, &ObjectKey::manifest(tenant, snapshot), runtime)
        .map_err(|e| {
            Error::storage(
                format!("cannot read the manifest of snapshot {snapshot}"),
                e,
            )
        })?;
    let records = open_sealed(std::io::BufReader::with_capacity(1 << 20, object), keyring)
        .map_err(|e| crate::wrong_key(e, tenant, snapshot))?;
    let what = format!("manifest of snapshot {snapshot}");
    Ok(records.map(move |record| record.map_err(|e| Error::manifest(what.clone(), e))))
}
