//! vaultline-metrics: metric names live here and nowhere else, and this is
//! the only file that calls the `metrics` macros (clippy.toml disallows them
//! elsewhere). Names follow `vaultline_<name>_<unit>[_total]`; labels come
//! from bounded sets only (`stage`, `outcome`, `error_type`, `tenant`,
//! `source`, `operation`), never a snapshot id or an error text.
//!
//! A crate of its own so the storage crate, below the runtime, counts its
//! S3 requests through the same names.
#![allow(clippy::disallowed_macros)]

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
    /// Requests to S3, by `operation` and `outcome` (ok, error).
    S3Requests,
    /// Drills run, by `tenant`, `source` and `outcome` (passed, failed).
    Drills,
    /// How long the last drill took, by `tenant` and `source`.
    DrillDuration,
    /// 1 when the last drill passed, else 0, by `tenant` and `source`.
    DrillLastSuccess,
    /// Unix time the last drill started, by `tenant` and `source`.
    DrillLastTimestamp,
    /// Bytes of stored packs the rolling integrity check read back.
    IntegrityRehashedBytes,
    /// Packs the rolling check found missing or not matching their digest.
    IntegrityDamagedPacks,
    /// Packs not read back within `rehash-after` (never, or too long ago).
    IntegrityPacksOverdue,
    /// Unix time the rolling check last completed a cycle: every live pack
    /// read back at least once since the cycle before.
    IntegrityLastCycle,
    /// Sampled level-2 checks of verified snapshots, by `outcome` (passed, failed).
    IntegrityLevel2Samples,
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
            MetricName::S3Requests => "vaultline_s3_requests_total",
            MetricName::Drills => "vaultline_drills_total",
            MetricName::DrillDuration => "vaultline_drill_duration_seconds",
            MetricName::DrillLastSuccess => "vaultline_drill_last_success",
            MetricName::DrillLastTimestamp => "vaultline_drill_last_timestamp_seconds",
            MetricName::IntegrityRehashedBytes => "vaultline_integrity_rehashed_bytes_total",
            MetricName::IntegrityDamagedPacks => "vaultline_integrity_damaged_packs_total",
            MetricName::IntegrityPacksOverdue => "vaultline_integrity_packs_overdue",
            MetricName::IntegrityLastCycle => "vaultline_integrity_last_cycle_timestamp_seconds",
            MetricName::IntegrityLevel2Samples => "vaultline_integrity_level2_samples_total",
        }
    }
}

/// Increments a counter.
pub fn count(name: MetricName, labels: &[(&'static str, String)], value: u64) {
    metrics::counter!(name.as_str(), owned(labels)).increment(value);
}

/// Records a histogram sample.
pub fn observe(name: MetricName, labels: &[(&'static str, String)], value: f64) {
    metrics::histogram!(name.as_str(), owned(labels)).record(value);
}

/// Sets a gauge.
pub fn gauge(name: MetricName, labels: &[(&'static str, String)], value: f64) {
    metrics::gauge!(name.as_str(), owned(labels)).set(value);
}

fn owned(labels: &[(&'static str, String)]) -> Vec<metrics::Label> {
    labels
        .iter()
        .map(|(k, v)| metrics::Label::new(*k, v.clone()))
        .collect()
}
