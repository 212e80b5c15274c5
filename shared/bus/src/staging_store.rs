//! Shared staging on JetStream: an object store bucket whose objects expire
//! after the staging TTL, so stages on different hosts hand each other bulk
//! data (batches, packs, manifest drafts) and abandoned items vanish on their
//! own. An object becomes visible only once all its chunks and then its
//! metadata are stored, and every read is checked against its SHA-256.

use crate::{Error, Result, js_err};
use async_nats::jetstream::{self, object_store};
use futures::TryStreamExt;
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The object store bucket holding staged items.
pub const STAGING_BUCKET: &str = "VAULTLINE_STAGING";

/// Chunks of 512 KiB: the object store awaits each chunk's ack before the
/// next, so larger chunks go faster (about 450 MB/s on loopback).
const CHUNK_SIZE: usize = 512 << 10;

/// The longest a read may wait for the next chunk. Chunks expire (TTL)
/// before the metadata written after them, so an item expiring while it is
/// read leaves the reader waiting for chunks that will never come.
const CHUNK_WAIT: Duration = Duration::from_secs(20);

/// A handle on the staging bucket.
#[derive(Clone)]
pub struct StagingStore {
    store: object_store::ObjectStore,
}

impl std::fmt::Debug for StagingStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "jetstream object store {STAGING_BUCKET}")
    }
}

impl StagingStore {
    /// Creates the bucket with `ttl` as its objects' maximum age and
    /// `replicas` copies, or leaves an existing one's age alone. Either way its
    /// stream is brought to `replicas` and to reads from the leader only (see
    /// below). Needs the admin's rights (`vaultline migrate`).
    ///
    /// # Errors
    /// When JetStream is unavailable or refuses.
    pub async fn create(js: &jetstream::Context, ttl: Duration, replicas: usize) -> Result<()> {
        if js.get_object_store(STAGING_BUCKET).await.is_err() {
            js.create_object_store(object_store::Config {
                bucket: STAGING_BUCKET.into(),
                description: Some("vaultline claim-check staging between stages".into()),
                max_age: ttl,
                storage: jetstream::stream::StorageType::File,
                num_replicas: replicas,
                ..Default::default()
            })
            .await
            .map_err(|e| js_err("create staging bucket")(e.to_string()))?;
        }
        // Object stores are made with direct gets, which any replica may
        // answer, one that is behind included: in a cluster a stage could
        // then find an item another stage has just staged "gone" (seen on a
        // 3-server cluster under load). Without them reads go to the
        // stream's leader, which has every acknowledged write.
        let stream = format!("OBJ_{STAGING_BUCKET}");
        let mut found = js
            .get_stream(&stream)
            .await
            .map_err(|e| js_err("staging bucket stream")(e.to_string()))?;
        let current = found
            .info()
            .await
            .map_err(|e| js_err("staging bucket info")(e.to_string()))?
            .config
            .clone();
        if current.allow_direct || current.num_replicas != replicas {
            let mut updated = current;
            updated.allow_direct = false;
            updated.num_replicas = replicas;
            js.update_stream(updated)
                .await
                .map_err(|e| js_err("update staging bucket")(e.to_string()))?;
        }
        Ok(())
    }

    /// Opens the bucket, which must exist.
    ///
    /// # Errors
    /// [`Error::NotReady`] when it does not; others when JetStream fails.
    pub async fn open(js: &jetstream::Context) -> Result<StagingStore> {
        match js.get_object_store(STAGING_BUCKET).await {
            Ok(store) => Ok(StagingStore { store }),
            Err(e) if e.to_string().contains("not found") => Err(Error::NotReady(format!(
                "the staging object store {STAGING_BUCKET} does not exist"
            ))),
            Err(e) => Err(js_err("open staging bucket")(e.to_string())),
        }
    }

    /// Stores the file at `local` as `name`.
    ///
    /// # Errors
    /// When the file cannot be read or JetStream refuses.
    pub async fn put_file(&self, name: &str, local: &Path) -> Result<()> {
        let mut file = tokio::fs::File::open(local)
            .await
            .map_err(|e| js_err("staging put")(format!("{}: {e}", local.display())))?;
        self.store
            .put(
                object_store::ObjectMetadata {
                    name: name.to_owned(),
                    chunk_size: Some(CHUNK_SIZE),
                    ..Default::default()
                },
                &mut file,
            )
            .await
            .map_err(|e| js_err("staging put")(format!("{name}: {e}")))?;
        Ok(())
    }

    /// Writes `name` to the file `local`; `false` when there is no such item.
    ///
    /// # Errors
    /// When JetStream or the local disk fails, or the item is damaged.
    pub async fn get_file(&self, name: &str, local: &Path) -> Result<bool> {
        let mut object = match self.store.get(name).await {
            Ok(object) => object,
            Err(e) if e.kind() == object_store::GetErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(js_err("staging get")(format!("{name}: {e}"))),
        };
        let mut file = tokio::fs::File::create(local)
            .await
            .map_err(|e| js_err("staging get")(format!("{}: {e}", local.display())))?;
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let read = tokio::time::timeout(CHUNK_WAIT, object.read(&mut buf)).await;
            let n = match read {
                Ok(read) => read.map_err(|e| js_err("staging get")(format!("{name}: {e}")))?,
                Err(_) => return self.stalled(name, local).await,
            };
            if n == 0 {
                break;
            }
            file.write_all(&buf[..n])
                .await
                .map_err(|e| js_err("staging get")(format!("{}: {e}", local.display())))?;
        }
        file.sync_all()
            .await
            .map_err(|e| js_err("staging get")(format!("{}: {e}", local.display())))?;
        Ok(true)
    }

    /// A read that stopped getting chunks: the item expired meanwhile (it
    /// is absent, as if never found) or it is damaged.
    async fn stalled(&self, name: &str, local: &Path) -> Result<bool> {
        let _ = tokio::fs::remove_file(local).await;
        match self.store.info(name).await {
            Err(e) if e.kind() == object_store::InfoErrorKind::NotFound => Ok(false),
            _ => Err(js_err("staging get")(format!(
                "{name}: no chunk for {CHUNK_WAIT:?} while its metadata is still there"
            ))),
        }
    }

    /// Deletes `name`; deleting an absent item succeeds.
    ///
    /// # Errors
    /// When JetStream refuses.
    pub async fn delete(&self, name: &str) -> Result<()> {
        match self.store.delete(name).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == object_store::DeleteErrorKind::NotFound => Ok(()),
            Err(e) => Err(js_err("staging delete")(format!("{name}: {e}"))),
        }
    }

    /// Deletes every item whose name starts with `prefix`.
    ///
    /// # Errors
    /// When JetStream refuses.
    pub async fn delete_prefix(&self, prefix: &str) -> Result<usize> {
        let names: Vec<String> = self
            .store
            .list()
            .await
            .map_err(|e| js_err("staging list")(e.to_string()))?
            .map_ok(|info| info.name)
            .try_filter(|name| futures::future::ready(name.starts_with(prefix)))
            .try_collect()
            .await
            .map_err(|e| js_err("staging list")(e.to_string()))?;
        for name in &names {
            self.delete(name).await?;
        }
        Ok(names.len())
    }

    /// Checks the bucket answers (for `/health/ready`).
    ///
    /// # Errors
    /// When it does not.
    pub async fn ping(&self) -> Result<()> {
        self.store
            .info("ping")
            .await
            .map(|_| ())
            .or_else(|e| match e.kind() {
                object_store::InfoErrorKind::NotFound => Ok(()),
                _ => Err(Error::JetStream {
                    op: "staging ping",
                    reason: e.to_string(),
                }),
            })
    }
}
