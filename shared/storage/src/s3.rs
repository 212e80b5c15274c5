//! The S3 backend (any S3-compatible server: AWS, Garage, MinIO, Ceph).
//!
//! The client is always built by hand, with an explicit endpoint, region and
//! credentials: the SDK's default provider chain would probe the instance
//! metadata address, which a backup worker has no business talking to.
//! Objects are immutable and appear only complete: a single PUT, or a
//! multipart upload that is invisible until completed (and aborted on error).

use crate::{Error, Result};
use aws_sdk_s3::Client;
use aws_sdk_s3::config::{Credentials, Region, retry::RetryConfig, timeout::TimeoutConfig};
use aws_sdk_s3::primitives::ByteStream;
use sha2::Digest;
use std::path::Path;
use std::time::Duration;

mod download;
mod errors;
mod list;
mod lock;
mod multipart;
use errors::{body_err, head_err, key_taken, read_err, s3_err};

/// The largest object S3 takes in a single PUT.
const SINGLE_PUT_LIMIT: u64 = 5 << 30;

/// What became of a put that must not replace.
enum Stored {
    Yes,
    KeyTaken,
}

/// How to reach a bucket. Secrets are held only here, never printed.
#[derive(Clone)]
pub struct S3Options {
    /// e.g. `http://127.0.0.1:3900` or `https://s3.eu-west-1.amazonaws.com`.
    pub endpoint: String,
    pub region: String,
    pub bucket: String,
    /// Key prefix inside the bucket (no leading or trailing `/`), may be empty.
    pub prefix: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Objects at least this large go up in parts.
    pub multipart_threshold: u64,
    /// Size of each part (S3 wants ≥ 5 MiB but for the last).
    pub part_size: u64,
    /// Attempts per request, first included (the SDK backs off exponentially with jitter).
    pub max_attempts: u32,
    /// Object lock on every object written (the bucket must have it enabled).
    pub object_lock: Option<crate::ObjectLock>,
}

impl std::fmt::Debug for S3Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Options")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl S3Options {
    /// Defaults for the tuning knobs; the caller fills in where and who.
    pub const DEFAULT_MULTIPART_THRESHOLD: u64 = 64 << 20;
    pub const DEFAULT_PART_SIZE: u64 = 16 << 20;
    pub const DEFAULT_MAX_ATTEMPTS: u32 = 8;
}

/// A bucket (and prefix) holding one repository.
#[derive(Clone)]
pub struct S3Repository {
    client: Client,
    bucket: String,
    prefix: String,
    endpoint: String,
    multipart_threshold: u64,
    part_size: u64,
    /// Learnt on the first put, see [`S3Repository::honours_if_none_match`].
    conditional_puts: std::sync::Arc<tokio::sync::OnceCell<bool>>,
    pub(crate) lock: Option<crate::ObjectLock>,
}

impl std::fmt::Debug for S3Repository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

/// Counts one request to S3 by operation and outcome (`vaultline_s3_requests_total`).
fn count(op: &'static str, ok: bool) {
    let outcome = if ok { "ok" } else { "error" };
    vaultline_metrics::count(
        vaultline_metrics::MetricName::S3Requests,
        &[
            ("operation", op.to_owned()),
            ("outcome", outcome.to_owned()),
        ],
        1,
    );
}

impl S3Repository {
    /// Builds the client. No request is made here.
    pub fn new(options: S3Options) -> Self {
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let config = aws_sdk_s3::config::Builder::new()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .http_client(http)
            .endpoint_url(&options.endpoint)
            .region(Region::new(options.region.clone()))
            .credentials_provider(Credentials::new(
                &options.access_key_id,
                &options.secret_access_key,
                None,
                None,
                "vaultline-config",
            ))
            .force_path_style(true)
            // The default (always checksum) breaks on S3-compatible servers
            // such as Garage; we verify digests ourselves.
            .request_checksum_calculation(
                aws_sdk_s3::config::RequestChecksumCalculation::WhenRequired,
            )
            .response_checksum_validation(
                aws_sdk_s3::config::ResponseChecksumValidation::WhenRequired,
            )
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(options.max_attempts.max(1))
                    .with_initial_backoff(Duration::from_millis(200))
                    .with_max_backoff(Duration::from_secs(10)),
            )
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(10))
                    .read_timeout(Duration::from_secs(60))
                    .build(),
            )
            .build();
        S3Repository {
            client: Client::from_conf(config),
            bucket: options.bucket,
            prefix: options.prefix.trim_matches('/').to_owned(),
            endpoint: options.endpoint,
            // Locked objects go up in one PUT up to S3's 5 GiB limit: the
            // lock then travels with the one request that creates the
            // object (moto, the one locking server testable here, ignores
            // it on multipart uploads; AWS honours both).
            multipart_threshold: if options.object_lock.is_some() {
                options.multipart_threshold.max(SINGLE_PUT_LIMIT)
            } else {
                options.multipart_threshold.max(5 << 20)
            },
            part_size: options.part_size.max(5 << 20),
            conditional_puts: Default::default(),
            lock: options.object_lock,
        }
    }

    pub(crate) fn describe(&self) -> String {
        if self.prefix.is_empty() {
            format!("s3://{} at {}", self.bucket, self.endpoint)
        } else {
            format!("s3://{}/{} at {}", self.bucket, self.prefix, self.endpoint)
        }
    }

    fn full_key(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_owned()
        } else {
            format!("{}/{key}", self.prefix)
        }
    }

    pub(crate) async fn put_file(&self, key: &str, local: &Path, replace: bool) -> Result<u64> {
        let size = tokio::fs::metadata(local)
            .await
            .map_err(crate::io_err("stat", local))?
            .len();
        if replace {
            self.upload(key, local, size, false).await?;
            return Ok(size);
        }
        let conditional = self.honours_if_none_match().await?;
        // A server that ignores If-None-Match would overwrite: look first
        // (a race between two writers of one key is then still possible
        // there, which is why such servers are worth replacing).
        if !conditional && self.size(key).await?.is_some() {
            return self.same_object_or_conflict(key, local).await;
        }
        match self.upload(key, local, size, conditional).await? {
            Stored::Yes => Ok(size),
            Stored::KeyTaken => self.same_object_or_conflict(key, local).await,
        }
    }

    /// Whether this server refuses a PUT with `If-None-Match: *` over an
    /// existing object (AWS since 2024, MinIO, Ceph). Asked once per process
    /// with a one-byte probe object that is put twice.
    async fn honours_if_none_match(&self) -> Result<bool> {
        let probe = ".vaultline/conditional-put-probe";
        let answer = self
            .conditional_puts
            .get_or_try_init(|| async {
                for _ in 0..2 {
                    let result = self
                        .client
                        .put_object()
                        .bucket(&self.bucket)
                        .key(self.full_key(probe))
                        .if_none_match("*")
                        .body(ByteStream::from_static(b"1"))
                        .send()
                        .await;
                    count("PutObject", result.is_ok());
                    match result {
                        Ok(_) => {}
                        Err(e) if key_taken(&e) => return Ok(true),
                        Err(e) => return Err(s3_err("PutObject", probe, e)),
                    }
                }
                tracing::warn!(repository = %self.describe(), "The S3 server ignores If-None-Match: objects are checked with HEAD before they are put.");
                Ok(false)
            })
            .await?;
        Ok(*answer)
    }

    /// The object at `key` when it holds the bytes of `local` (a repeated
    /// put), else the conflict. Reads the object whole: this happens only
    /// on a redelivery or an attack, never on the normal path.
    async fn same_object_or_conflict(&self, key: &str, local: &Path) -> Result<u64> {
        let stored = self.digest(key).await?;
        let path = local.to_owned();
        let wanted = tokio::task::spawn_blocking(move || crate::sha256_file(&path))
            .await
            .map_err(crate::join_err("read", local))?
            .map_err(crate::io_err("read", local))?;
        crate::same_or_conflict(key, stored, wanted)
    }

    async fn upload(&self, key: &str, local: &Path, size: u64, exclusive: bool) -> Result<Stored> {
        if size >= self.multipart_threshold {
            return self.put_multipart(key, local, size, exclusive).await;
        }
        let body = ByteStream::from_path(local)
            .await
            .map_err(|e| read_err(local, e))?;
        let (lock_mode, retain_until) = self.lock_for_write();
        let result = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .content_length(size as i64)
            .set_if_none_match(exclusive.then(|| "*".to_owned()))
            .set_object_lock_mode(lock_mode)
            .set_object_lock_retain_until_date(retain_until)
            .set_checksum_algorithm(self.lock_checksum())
            .body(body)
            .send()
            .await;
        count("PutObject", result.is_ok());
        match result {
            Ok(_) => Ok(Stored::Yes),
            Err(e) if key_taken(&e) => Ok(Stored::KeyTaken),
            Err(e) => Err(s3_err("PutObject", key, e)),
        }
    }

    pub(crate) async fn put_bytes(&self, key: &str, bytes: &[u8]) -> Result<()> {
        let (lock_mode, retain_until) = self.lock_for_write();
        let result = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .set_object_lock_mode(lock_mode)
            .set_object_lock_retain_until_date(retain_until)
            .set_checksum_algorithm(self.lock_checksum())
            .body(ByteStream::from(bytes.to_vec()))
            .send()
            .await;
        count("PutObject", result.is_ok());
        result.map(|_| ()).map_err(|e| s3_err("PutObject", key, e))
    }

    async fn get_object(
        &self,
        key: &str,
        range: Option<String>,
    ) -> Result<aws_sdk_s3::operation::get_object::GetObjectOutput> {
        let result = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .set_range(range)
            .send()
            .await;
        count("GetObject", result.is_ok());
        result.map_err(|e| {
            if e.as_service_error().is_some_and(|s| s.is_no_such_key()) {
                Error::NotFound {
                    what: "object",
                    key: key.to_owned(),
                }
            } else {
                s3_err("GetObject", key, e)
            }
        })
    }

    pub(crate) async fn get(&self, key: &str) -> Result<Vec<u8>> {
        let output = self.get_object(key, None).await?;
        let body = output.body.collect().await.map_err(|e| body_err(key, &e))?;
        Ok(body.into_bytes().to_vec())
    }

    pub(crate) async fn get_range(&self, key: &str, offset: u64, length: u32) -> Result<Vec<u8>> {
        if length == 0 {
            return Ok(Vec::new());
        }
        let range = format!("bytes={offset}-{}", offset + u64::from(length) - 1);
        let output = self.get_object(key, Some(range)).await?;
        let body = output
            .body
            .collect()
            .await
            .map_err(|e| body_err(key, &e))?
            .into_bytes();
        if body.len() != length as usize {
            return Err(Error::S3 {
                op: "GetObject",
                key: key.to_owned(),
                message: format!(
                    "asked for {length} bytes at offset {offset}, got {}",
                    body.len()
                ),
                transient: false,
            });
        }
        Ok(body.to_vec())
    }

    pub(crate) async fn digest(&self, key: &str) -> Result<([u8; 32], u64)> {
        let mut body = self.get_object(key, None).await?.body;
        let mut hasher = sha2::Sha256::new();
        let mut size = 0u64;
        while let Some(bytes) = body.try_next().await.map_err(|e| body_err(key, &e))? {
            hasher.update(&bytes);
            size += bytes.len() as u64;
        }
        Ok((hasher.finalize().into(), size))
    }

    pub(crate) async fn size(&self, key: &str) -> Result<Option<u64>> {
        let result = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .send()
            .await;
        match result {
            Ok(head) => {
                count("HeadObject", true);
                Ok(Some(head.content_length.unwrap_or(0).max(0) as u64))
            }
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => {
                count("HeadObject", true);
                Ok(None)
            }
            Err(e) => {
                count("HeadObject", false);
                Err(head_err(key, e))
            }
        }
    }

    pub(crate) async fn delete(&self, key: &str) -> Result<()> {
        let result = self
            .client
            .delete_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .send()
            .await;
        count("DeleteObject", result.is_ok());
        result
            .map(|_| ())
            .map_err(|e| s3_err("DeleteObject", key, e))
    }

    pub(crate) async fn ping(&self) -> Result<()> {
        let result = self.client.head_bucket().bucket(&self.bucket).send().await;
        count("HeadBucket", result.is_ok());
        result
            .map(|_| ())
            .map_err(|e| s3_err("HeadBucket", &self.bucket, e))
    }
}
