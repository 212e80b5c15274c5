//! A snapshot's life: the statuses it moves through and which moves are
//! allowed. The catalog stores the status and guards each update with
//! [`SnapshotStatus::allowed_from`]; this is where that rule lives, without
//! a database, so it can be read and tested on its own.

use serde::{Deserialize, Serialize};

/// Where a snapshot is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotStatus {
    /// The extractor is reading the source.
    Extracting,
    /// Every batch is staged; packs are being stored.
    Extracted,
    /// Every pack and the manifest are in the repository.
    Stored,
    /// The verifier found every stored byte as recorded.
    Verified,
    /// A check found stored bytes damaged or missing.
    Corrupt,
    /// The backup did not complete.
    Failed,
    /// Retention let it go; its packs may be collected.
    Expired,
}

/// A status name this build does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a snapshot status")]
pub struct UnknownStatus(pub String);

impl SnapshotStatus {
    /// Every status, in life order.
    pub const ALL: [SnapshotStatus; 7] = [
        SnapshotStatus::Extracting,
        SnapshotStatus::Extracted,
        SnapshotStatus::Stored,
        SnapshotStatus::Verified,
        SnapshotStatus::Corrupt,
        SnapshotStatus::Failed,
        SnapshotStatus::Expired,
    ];

    /// Name as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            SnapshotStatus::Extracting => "extracting",
            SnapshotStatus::Extracted => "extracted",
            SnapshotStatus::Stored => "stored",
            SnapshotStatus::Verified => "verified",
            SnapshotStatus::Corrupt => "corrupt",
            SnapshotStatus::Failed => "failed",
            SnapshotStatus::Expired => "expired",
        }
    }

    /// True once the snapshot will not move on by itself.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            SnapshotStatus::Verified
                | SnapshotStatus::Corrupt
                | SnapshotStatus::Failed
                | SnapshotStatus::Expired
        )
    }

    /// True while the pipeline is still working on it.
    pub fn is_in_flight(self) -> bool {
        matches!(
            self,
            SnapshotStatus::Extracting | SnapshotStatus::Extracted | SnapshotStatus::Stored
        )
    }

    /// The statuses a snapshot may move to this one from. Each stage's
    /// update is guarded by it, so a late or replayed event cannot undo a
    /// later step: `failed` never overwrites a verified snapshot, and only
    /// a finished one expires.
    pub fn allowed_from(self) -> &'static [SnapshotStatus] {
        use SnapshotStatus::*;
        match self {
            Extracting => &[],
            Extracted => &[Extracting],
            Stored => &[Extracted],
            Verified => &[Stored],
            // A later on-demand check (level 2, a drill) may find a verified one damaged.
            Corrupt => &[Stored, Verified],
            Failed => &[Extracting, Extracted, Stored],
            Expired => &[Verified, Corrupt, Failed],
        }
    }
}

impl std::str::FromStr for SnapshotStatus {
    type Err = UnknownStatus;

    fn from_str(value: &str) -> Result<Self, UnknownStatus> {
        SnapshotStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == value)
            .ok_or_else(|| UnknownStatus(value.to_owned()))
    }
}

impl std::fmt::Display for SnapshotStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::SnapshotStatus::{self, *};

    #[test]
    fn names_round_trip_and_unknown_ones_are_errors() {
        for status in SnapshotStatus::ALL {
            assert_eq!(status.as_str().parse::<SnapshotStatus>(), Ok(status));
            let json = serde_json::to_string(&status).unwrap();
            assert_eq!(json, format!("\"{status}\""));
        }
        let err = "paused".parse::<SnapshotStatus>().unwrap_err();
        assert_eq!(err.to_string(), "\"paused\" is not a snapshot status");
        assert!("Verified".parse::<SnapshotStatus>().is_err());
    }

    #[test]
    fn the_pipeline_moves_forward_only() {
        let path = [Extracting, Extracted, Stored, Verified];
        for pair in path.windows(2) {
            assert_eq!(pair[1].allowed_from(), &[pair[0]]);
        }
        for status in SnapshotStatus::ALL {
            assert!(
                !status.allowed_from().contains(&status),
                "{status} to itself"
            );
            assert!(!status.allowed_from().contains(&Expired), "out of {status}");
            if status.is_in_flight() {
                assert!(!status.is_terminal());
            }
        }
    }

    #[test]
    fn terminal_statuses_are_guarded() {
        // A failure reported late must not undo a verification.
        assert!(!Failed.allowed_from().contains(&Verified));
        assert!(!Failed.allowed_from().contains(&Expired));
        // Only finished snapshots expire, and a damaged one can be found later.
        for from in Expired.allowed_from() {
            assert!(from.is_terminal());
        }
        assert!(Corrupt.allowed_from().contains(&Verified));
        assert!(!Verified.allowed_from().contains(&Corrupt));
    }
}
