//! Object lock on S3: the lock headers of each write, and the check at start
//! that the bucket can lock at all.

use super::{S3Repository, count};
use crate::{Error, LockMode, Result};
use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::DateTime;
use aws_sdk_s3::types::{ObjectLockEnabled, ObjectLockMode};
use std::time::SystemTime;

impl S3Repository {
    /// The lock mode and retain-until date for an object written now, when
    /// the repository locks.
    pub(super) fn lock_for_write(&self) -> (Option<ObjectLockMode>, Option<DateTime>) {
        match self.lock {
            None => (None, None),
            Some(lock) => {
                let mode = match lock.mode {
                    LockMode::Governance => ObjectLockMode::Governance,
                    LockMode::Compliance => ObjectLockMode::Compliance,
                };
                (
                    Some(mode),
                    Some(DateTime::from(lock.until(SystemTime::now()))),
                )
            }
        }
    }

    /// A locked write must carry a checksum (S3 refuses it otherwise): the
    /// SDK computes SHA-256 when asked. Unlocked writes skip it, as some
    /// S3-compatible servers (Garage) refuse the SDK's streaming checksums.
    pub(super) fn lock_checksum(&self) -> Option<aws_sdk_s3::types::ChecksumAlgorithm> {
        self.lock
            .map(|_| aws_sdk_s3::types::ChecksumAlgorithm::Sha256)
    }

    /// Fails with one sentence unless the bucket has object lock enabled.
    /// Servers without object lock (Garage answers 501 Not Implemented) and
    /// buckets created without it are told apart.
    pub(crate) async fn check_lock(&self) -> Result<()> {
        if self.lock.is_none() {
            return Ok(());
        }
        let result = self
            .client
            .get_object_lock_configuration()
            .bucket(&self.bucket)
            .send()
            .await;
        count("GetObjectLockConfiguration", result.is_ok());
        let refuse = |message: String| Error::Config(message);
        match result {
            Ok(answer) => {
                let enabled = answer
                    .object_lock_configuration()
                    .and_then(|c| c.object_lock_enabled())
                    == Some(&ObjectLockEnabled::Enabled);
                if enabled {
                    Ok(())
                } else {
                    Err(refuse(format!(
                        "{}: object lock is configured but the bucket does not have it enabled; create the bucket with object lock (it cannot be added to most existing buckets) or remove object-lock from the configuration",
                        self.describe()
                    )))
                }
            }
            Err(e) => {
                let status = e.raw_response().map(|r| r.status().as_u16());
                let code = e.as_service_error().and_then(|s| s.code()).unwrap_or("");
                if status == Some(501) || code == "NotImplemented" {
                    Err(refuse(format!(
                        "{}: object lock is configured but this S3 server cannot lock objects (GetObjectLockConfiguration answered 501 Not Implemented); use a server with object lock, or remove object-lock from the configuration",
                        self.describe()
                    )))
                } else if code == "ObjectLockConfigurationNotFoundError" {
                    Err(refuse(format!(
                        "{}: object lock is configured but the bucket was created without it; create a bucket with object lock enabled, or remove object-lock from the configuration",
                        self.describe()
                    )))
                } else {
                    Err(super::s3_err("GetObjectLockConfiguration", &self.bucket, e))
                }
            }
        }
    }
}
