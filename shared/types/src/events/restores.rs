//! How a restore into a live application went, step by step.

use super::{Message, TableCheck};
use crate::ids::{Name, SnapshotId};
use serde::{Deserialize, Serialize};

/// One step of a restore into a live application, in the order they ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreStep {
    /// `info`, `maintenance-on`, `safety-snapshot`, `restore`, `counts`,
    /// `smoke`, `rollback`, `maintenance-off`.
    pub step: String,
    pub ok: bool,
    pub duration_ms: u64,
    /// What it found or why it failed, one sentence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// `vaultline.restore.completed.<tenant>`: a restore into a database or
/// command ended (`vaultline restore --into … --app …`). Ids and results
/// only: the target's URL without its password, never a token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RestoreCompleted {
    pub tenant: Name,
    pub source: Name,
    /// The snapshot restored.
    pub snapshot: SnapshotId,
    /// This run's id (`restore-…`), its row in the history.
    pub restore: String,
    /// Where it was restored (a URL without password).
    pub target: String,
    /// `succeeded`, `failed`, `rolled-back` (failed, then the safety
    /// snapshot was put back) or `interrupted`.
    pub outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub safety_snapshot: Option<SnapshotId>,
    /// The application's version, from its info endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_version: Option<String>,
    pub steps: Vec<RestoreStep>,
    /// Rows per table: counted at dump time, and after the restore.
    pub tables: Vec<TableCheck>,
    /// The application's smoke endpoint's HTTP status, when it was asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smoke_status: Option<u16>,
    /// Unix time (seconds) it started.
    pub started_at: i64,
    pub duration_ms: u64,
    /// Bytes restored.
    pub bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}
impl Message for RestoreCompleted {
    const KIND: &'static str = "restore.completed";
    ids!(RestoreCompleted);
}
