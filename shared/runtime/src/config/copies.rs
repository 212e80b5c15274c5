//! `[[repository.copies]]` and `[copier]`: the repositories every stored
//! snapshot is copied to, and how the copier stage catches up with them.

use super::{RepositoryConfig, S3Config};
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// One copy of the repository: a directory or a bucket of its own, with its
/// own credentials. Every snapshot the primary stores is copied there.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct CopyConfig {
    /// Short name: the `target` label of the copy metrics and the catalog's
    /// key for what this copy holds (lower-case letters, digits and `-`).
    /// Renaming a copy makes the copier start it over.
    pub name: String,
    /// `s3://bucket[/prefix]` or `file:///dir` (or a plain directory path).
    pub url: String,
    /// How to reach the S3 server of an `s3://` url; the same fields as
    /// `[repository.s3]`, none of them shared with it. Each falls back to
    /// the standard AWS variable like the primary's.
    pub s3: S3Config,
    /// Object lock on every object written to the copy (S3 only).
    pub object_lock: Option<ObjectLockConfig>,
}

impl CopyConfig {
    /// The copy as a repository config, to open it like the primary.
    pub fn repository(&self) -> RepositoryConfig {
        RepositoryConfig {
            url: Some(self.url.clone()),
            path: PathBuf::new(),
            s3: self.s3.clone(),
            copies: Vec::new(),
            object_lock: self.object_lock,
        }
    }

    /// Whether `name` may name a copy: a metric label and a catalog key.
    pub fn valid_name(name: &str) -> bool {
        !name.is_empty()
            && name.len() <= 40
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && name != "primary"
    }
}

impl RepositoryConfig {
    /// The longest object lock of the primary and its copies: how long a
    /// snapshot must be kept at least (retention never forgets it sooner).
    pub fn longest_lock(&self) -> Option<Duration> {
        std::iter::once(&self.object_lock)
            .chain(self.copies.iter().map(|c| &c.object_lock))
            .flatten()
            .map(|lock| lock.lock().period())
            .max()
    }
}

/// Checks the copies' names: valid and distinct.
///
/// # Errors
/// The first bad or repeated name, in a sentence.
pub fn check_copies(copies: &[CopyConfig]) -> Result<(), String> {
    let mut seen = std::collections::BTreeSet::new();
    for copy in copies {
        if !CopyConfig::valid_name(&copy.name) {
            return Err(format!(
                "repository.copies: {:?} cannot name a copy (1 to 40 lower-case letters, digits or '-', not \"primary\")",
                copy.name
            ));
        }
        if copy.url.is_empty() {
            return Err(format!(
                "repository.copies: copy {:?} has no url",
                copy.name
            ));
        }
        if !seen.insert(copy.name.as_str()) {
            return Err(format!(
                "repository.copies: two copies are named {:?}",
                copy.name
            ));
        }
    }
    Ok(())
}

/// `object-lock = { mode = "governance" | "compliance", days = N }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ObjectLockConfig {
    pub mode: LockModeConfig,
    pub days: u32,
}

/// The lock mode, as written in the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LockModeConfig {
    Governance,
    Compliance,
}

impl ObjectLockConfig {
    /// As the storage layer takes it.
    pub fn lock(&self) -> vaultline_storage::ObjectLock {
        vaultline_storage::ObjectLock {
            mode: match self.mode {
                LockModeConfig::Governance => vaultline_storage::LockMode::Governance,
                LockModeConfig::Compliance => vaultline_storage::LockMode::Compliance,
            },
            days: self.days,
        }
    }
}

/// How the copier catches up.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct CopierConfig {
    /// How often every copy is checked for snapshots it lacks (a copy that
    /// was down, a snapshot whose event was missed) and the lag metrics set.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Snapshots one pass copies to one target at most; the rest wait for
    /// the next pass, so a new copy of a large repository fills in steps.
    pub batch: u32,
}

impl Default for CopierConfig {
    fn default() -> Self {
        CopierConfig {
            interval: Duration::from_secs(30),
            batch: 50,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy(name: &str) -> CopyConfig {
        CopyConfig {
            name: name.to_owned(),
            url: "file:///tmp/x".to_owned(),
            ..CopyConfig::default()
        }
    }

    #[test]
    fn copy_names_are_labels_and_distinct() {
        assert!(check_copies(&[copy("offsite"), copy("dc-2")]).is_ok());
        for bad in ["", "Offsite", "off site", "primary", "a/b"] {
            let refused = check_copies(&[copy(bad)]).unwrap_err();
            assert!(refused.contains("cannot name a copy"), "{refused}");
        }
        let twice = check_copies(&[copy("offsite"), copy("offsite")]).unwrap_err();
        assert!(twice.contains("two copies are named"), "{twice}");
    }
}
