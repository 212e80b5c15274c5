//! The drill's request and result: restore a database source's latest
//! verified snapshot into a scratch database and compare row counts.

use super::{Message, SUBJECT_PREFIX};
use crate::ids::{Name, SnapshotId};
use serde::{Deserialize, Serialize};

/// `vaultline.drill.request.<tenant>.<source>`: restore the source's latest
/// verified snapshot into a scratch database and check it (the verifier runs it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrillRequested {
    pub tenant: Name,
    pub source: Name,
    /// Caller's id, so `vaultline drill` can find its result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}
impl Message for DrillRequested {
    const KIND: &'static str = "drill.request";
    fn subject(&self) -> String {
        format!(
            "{SUBJECT_PREFIX}.{}.{}.{}",
            Self::KIND,
            self.tenant,
            self.source
        )
    }
    fn tenant(&self) -> &Name {
        &self.tenant
    }
    fn source(&self) -> Option<&Name> {
        Some(&self.source)
    }
    fn snapshot(&self) -> Option<&SnapshotId> {
        None
    }
}

/// Rows of one table: counted at dump time, and in the scratch restore.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableCheck {
    pub table: String,
    pub expected: u64,
    /// Absent when the table is missing from the restore.
    pub restored: Option<u64>,
}

/// `vaultline.drill.completed.<tenant>`: how a restore drill ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrillCompleted {
    pub tenant: Name,
    pub source: Name,
    /// The snapshot restored, when one was found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<SnapshotId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// `passed` or `failed`.
    pub outcome: String,
    pub duration_ms: u64,
    /// Every table compared.
    pub tables: Vec<TableCheck>,
    /// Why it failed: a restore error or the tables whose counts differ.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}
impl Message for DrillCompleted {
    const KIND: &'static str = "drill.completed";
    fn tenant(&self) -> &Name {
        &self.tenant
    }
    fn source(&self) -> Option<&Name> {
        Some(&self.source)
    }
    fn snapshot(&self) -> Option<&SnapshotId> {
        self.snapshot.as_ref()
    }
}
