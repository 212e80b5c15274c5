//! Metric names live here and nowhere else. Names follow
//! `vaultline_<name>_<unit>[_total]`; labels come from bounded sets only
//! (`stage`, `outcome`, `error_type`, `tenant`), never a snapshot id or an error text.

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;

/// Every metric vaultline records.
#[derive(Debug, Clone, Copy)]
pub enum MetricName {
    /// Messages handled, by `stage` and `outcome` (done, retried, dead_letter).
    StageMessages,
    /// Time spent in a stage's handler, by `stage`.
    StageHandleDuration,
    /// Errors, by `stage` and `error_type`.
    StageErrors,
    /// Messages sent to the dead-letter subject, by `stage`.
    DeadLetters,
    /// Deliveries after the first, by `stage`.
    StageRedeliveries,
    /// Bytes read from sources, by `tenant`.
    BytesRead,
    /// Bytes of new data staged after dedup, by `tenant`.
    BytesNew,
    /// Bytes written to the repository, by `tenant`.
    BytesStored,
    /// Unix time of the last verified snapshot, by `tenant`.
    LastVerified,
    /// Webhook delivery attempts, by `outcome` (delivered, retry, gave_up).
    WebhookAttempts,
    /// Packs deleted by garbage collection, by `tenant`.
    PacksDeleted,
    /// Writes refused because the repository already holds other bytes
    /// under the key, by `tenant`: damage or tampering, never overwritten.
    ObjectConflicts,
    /// Publishes the stream dropped as duplicates although this was the
    /// input's first delivery, by `stage`: someone published the id first.
    UnexpectedDuplicates,
}

impl MetricName {
    /// The exported name.
    pub const fn as_str(self) -> &'static str {
        match self {
            MetricName::StageMessages => "vaultline_stage_messages_total",
            MetricName::StageHandleDuration => "vaultline_stage_handle_duration_seconds",
            MetricName::StageErrors => "vaultline_stage_errors_total",
            MetricName::DeadLetters => "vaultline_dead_letters_total",
            MetricName::StageRedeliveries => "vaultline_stage_redeliveries_total",
            MetricName::BytesRead => "vaultline_source_read_bytes_total",
            MetricName::BytesNew => "vaultline_source_new_bytes_total",
            MetricName::BytesStored => "vaultline_repository_stored_bytes_total",
            MetricName::LastVerified => "vaultline_last_verified_timestamp_seconds",
            MetricName::WebhookAttempts => "vaultline_webhook_attempts_total",
            MetricName::PacksDeleted => "vaultline_gc_deleted_packs_total",
            MetricName::ObjectConflicts => "vaultline_repository_conflicts_total",
            MetricName::UnexpectedDuplicates => "vaultline_unexpected_duplicates_total",
        }
    }
}

/// Increments a counter.
pub fn count(name: MetricName, labels: &[(&'static str, String)], value: u64) {
    let labels: Vec<metrics::Label> = labels
        .iter()
        .map(|(k, v)| metrics::Label::new(*k, v.clone()))
        .collect();
    metrics::counter!(name.as_str(), labels).increment(value);
}

/// Records a histogram sample.
pub fn observe(name: MetricName, labels: &[(&'static str, String)], value: f64) {
    let labels: Vec<metrics::Label> = labels
        .iter()
        .map(|(k, v)| metrics::Label::new(*k, v.clone()))
        .collect();
    metrics::histogram!(name.as_str(), labels).record(value);
}

/// Sets a gauge.
pub fn gauge(name: MetricName, labels: &[(&'static str, String)], value: f64) {
    let labels: Vec<metrics::Label> = labels
        .iter()
        .map(|(k, v)| metrics::Label::new(*k, v.clone()))
        .collect();
    metrics::gauge!(name.as_str(), labels).set(value);
}

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the Prometheus recorder (once per process) and returns its handle.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .set_buckets(&[
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                    300.0,
                ])
                .expect("bucket list is not empty")
                .install_recorder()
                .expect("no other metrics recorder is installed")
        })
        .clone()
}
