//! How far a running extraction has read, for whoever follows it
//! (`vaultline backup --wait`). On core NATS, outside the stream: it is worth
//! nothing a second later, and the stream holds only what stages act on.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use vaultline_types::{Name, SnapshotId};

/// Subjects `vaultline_progress.<tenant>.<snapshot>`.
pub const SUBJECT_PREFIX: &str = "vaultline_progress";

/// Published about once a second while a snapshot is being extracted.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ExtractionProgress {
    pub tenant: Name,
    pub snapshot: SnapshotId,
    /// Bytes of the source covered so far: read and chunked, or found
    /// unchanged in the files cache.
    pub bytes_read: u64,
}

/// Where the progress of `snapshot` is published.
pub fn subject(tenant: &Name, snapshot: &SnapshotId) -> String {
    format!("{SUBJECT_PREFIX}.{tenant}.{snapshot}")
}

/// Publishes `read` every second until dropped.
pub(crate) struct Publisher(tokio::task::JoinHandle<()>);

impl Publisher {
    pub(crate) fn start(
        client: async_nats::Client,
        tenant: Name,
        snapshot: SnapshotId,
        read: Arc<AtomicU64>,
    ) -> Publisher {
        Publisher(tokio::spawn(async move {
            let subject = subject(&tenant, &snapshot);
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let progress = ExtractionProgress {
                    tenant: tenant.clone(),
                    snapshot: snapshot.clone(),
                    bytes_read: read.load(Ordering::Relaxed),
                };
                let Ok(body) = serde_json::to_vec(&progress) else {
                    return;
                };
                // Nobody listening, or a refused subject, costs the backup nothing.
                let _ = client.publish(subject.clone(), body.into()).await;
            }
        }))
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.0.abort();
    }
}
