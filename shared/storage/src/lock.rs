//! S3 object lock: every object the repository writes carries a mode and a
//! retain-until date, so nobody (in compliance mode, not even the bucket's
//! owner) can delete or replace it before then.

use std::time::{Duration, SystemTime};

/// Who may lift a lock before its date: in governance mode a principal with
/// `s3:BypassGovernanceRetention`, in compliance mode nobody.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    Governance,
    Compliance,
}

impl LockMode {
    /// The name S3 uses.
    pub fn as_s3(self) -> &'static str {
        match self {
            LockMode::Governance => "GOVERNANCE",
            LockMode::Compliance => "COMPLIANCE",
        }
    }
}

/// The lock every object is written with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectLock {
    pub mode: LockMode,
    /// Days from the write until the object may be deleted.
    pub days: u32,
}

impl ObjectLock {
    /// How long each object stays locked.
    pub fn period(&self) -> Duration {
        Duration::from_secs(u64::from(self.days) * 86_400)
    }

    /// The retain-until date of an object written at `at`.
    pub fn until(&self, at: SystemTime) -> SystemTime {
        at + self.period()
    }
}

impl crate::Repository {
    /// The lock every object is written with, if any.
    pub fn lock(&self) -> Option<ObjectLock> {
        match self {
            crate::Repository::S3(s3) => s3.lock,
            crate::Repository::Fs(_) => None,
        }
    }

    /// At start: fails with one sentence when the repository is to lock
    /// objects and its bucket or server cannot.
    ///
    /// # Errors
    /// [`crate::Error::Config`] saying what cannot lock and what to do.
    pub async fn check_lock(&self) -> crate::Result<()> {
        match self {
            crate::Repository::S3(s3) => s3.check_lock().await,
            crate::Repository::Fs(_) => Ok(()),
        }
    }
}
