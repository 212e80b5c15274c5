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
    /// Messages a stage's durable consumer still has to finish (pending
    /// plus delivered but unacknowledged), by `stage`; the auditor reads it
    /// from consumer info, as KEDA does.
    StageConsumerLag,
    /// Age of the oldest message a stage's consumer has not finished, by `stage`.
    StageOldestPendingAge,
    /// Bytes read from sources, by `tenant` and `source`.
    BytesRead,
    /// Bytes of new data staged after dedup, by `tenant` and `source`.
    BytesNew,
    /// Bytes written to the repository, by `tenant` and `source`.
    BytesStored,
    /// Backups finished, by `tenant`, `source` and `outcome` (succeeded,
    /// failed, corrupt); counted once per snapshot by the auditor.
    BackupsFinished,
    /// Seconds from a snapshot's start to its verification, by `tenant` and `source`.
    BackupDuration,
    /// Unix time the source's last backup succeeded (was verified), by
    /// `tenant` and `source`; from the catalog, so replicas agree.
    SourceLastSuccess,
    /// 1 when the source's last finished backup succeeded, else 0.
    SourceLastBackupSucceeded,
    /// Backups failed (or found corrupt) since the source's last success.
    SourceFailureStreak,
    /// Seconds between the source's scheduled slots (0: no schedule).
    SourceScheduleInterval,
    /// How long the source's last successful backup took, start to verified.
    SourceLastBackupDuration,
    /// Seconds between the source's drills (0: no drills).
    SourceDrillInterval,
    /// Unix time of the source's newest verified snapshot, by `tenant` and `source`.
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
    /// How long the source's last drill took, by `tenant` and `source`
    /// (this and the two below come from the catalog, via the auditor).
    DrillDuration,
    /// 1 when the source's last drill passed, else 0.
    DrillLastSuccess,
    /// Unix time the source's last drill started.
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
    /// Bytes of the tenant's live packs and manifests, by `tenant`.
    RepositoryBytes,
    /// Bytes the tenant's live snapshots read over the bytes stored, by `tenant`.
    RepositoryDedupRatio,
    /// Snapshots started and not yet verified, failed or corrupt, by `tenant`.
    SnapshotsInFlight,
    /// Age of the tenant's oldest snapshot in flight, by `tenant` (0: none).
    OldestInFlightAge,
    /// Snapshots the reaper failed for running past their deadline, by `tenant`.
    SnapshotsReaped,
    /// Always 1, by `stage` and `version`: which build runs where.
    BuildInfo,
    /// 1 when the process would answer `/health/ready` with 200, else 0.
    Ready,
    /// 1 when a dependency answered its last check, by `dependency`
    /// (nats, catalog, repository, staging).
    DependencyUp,
    /// Snapshots stored in the primary and not yet verified in a copy, by `target`.
    CopyLagSnapshots,
    /// Seconds since the oldest snapshot a copy lacks was stored in the
    /// primary, by `target` (0: the copy is up to date).
    CopyLagSeconds,
    /// Bytes the copier put into a copy, by `target`.
    CopyBytes,
    /// Snapshot copies attempted, by `target` and `outcome` (verified, failed).
    Copies,
    /// Unix time PostgreSQL closed the newest archived WAL segment of a
    /// physical source, by `tenant` and `source`: `time() - this` is the
    /// recovery point objective, what a lost cluster takes with it.
    WalLastArchived,
    /// Seconds from PostgreSQL closing the newest archived segment to
    /// vaultline having stored it, by `tenant` and `source`.
    WalArchiveLag,
    /// Runs of missing segments in a source's archived WAL, by `tenant`
    /// and `source`: no recovery crosses one.
    WalGaps,
    /// Bytes of a source's archived WAL as stored, by `tenant` and `source`.
    WalStoredBytes,
}

impl MetricName {
    /// Every metric, for documentation and the tests that hold dashboards
    /// and rules to names that exist.
    pub const ALL: [MetricName; 49] = [
        MetricName::StageMessages,
        MetricName::StageHandleDuration,
        MetricName::StageErrors,
        MetricName::DeadLetters,
        MetricName::StageRedeliveries,
        MetricName::StageConsumerLag,
        MetricName::StageOldestPendingAge,
        MetricName::BytesRead,
        MetricName::BytesNew,
        MetricName::BytesStored,
        MetricName::BackupsFinished,
        MetricName::BackupDuration,
        MetricName::SourceLastSuccess,
        MetricName::SourceLastBackupSucceeded,
        MetricName::SourceFailureStreak,
        MetricName::SourceScheduleInterval,
        MetricName::SourceLastBackupDuration,
        MetricName::SourceDrillInterval,
        MetricName::LastVerified,
        MetricName::WebhookAttempts,
        MetricName::PacksDeleted,
        MetricName::ObjectConflicts,
        MetricName::UnexpectedDuplicates,
        MetricName::S3Requests,
        MetricName::Drills,
        MetricName::DrillDuration,
        MetricName::DrillLastSuccess,
        MetricName::DrillLastTimestamp,
        MetricName::IntegrityRehashedBytes,
        MetricName::IntegrityDamagedPacks,
        MetricName::IntegrityPacksOverdue,
        MetricName::IntegrityLastCycle,
        MetricName::IntegrityLevel2Samples,
        MetricName::RepositoryBytes,
        MetricName::RepositoryDedupRatio,
        MetricName::SnapshotsInFlight,
        MetricName::OldestInFlightAge,
        MetricName::SnapshotsReaped,
        MetricName::BuildInfo,
        MetricName::Ready,
        MetricName::DependencyUp,
        MetricName::CopyLagSnapshots,
        MetricName::CopyLagSeconds,
        MetricName::CopyBytes,
        MetricName::Copies,
        MetricName::WalLastArchived,
        MetricName::WalArchiveLag,
        MetricName::WalGaps,
        MetricName::WalStoredBytes,
    ];

    /// The exported name.
    pub const fn as_str(self) -> &'static str {
        match self {
            MetricName::StageMessages => "vaultline_stage_messages_total",
            MetricName::StageHandleDuration => "vaultline_stage_handle_duration_seconds",
            MetricName::StageErrors => "vaultline_stage_errors_total",
            MetricName::DeadLetters => "vaultline_dead_letters_total",
            MetricName::StageRedeliveries => "vaultline_stage_redeliveries_total",
            MetricName::StageConsumerLag => "vaultline_stage_consumer_lag_messages",
            MetricName::StageOldestPendingAge => "vaultline_stage_oldest_pending_age_seconds",
            MetricName::BytesRead => "vaultline_source_read_bytes_total",
            MetricName::BytesNew => "vaultline_source_new_bytes_total",
            MetricName::BytesStored => "vaultline_repository_stored_bytes_total",
            MetricName::BackupsFinished => "vaultline_backups_total",
            MetricName::BackupDuration => "vaultline_backup_duration_seconds",
            MetricName::SourceLastSuccess => "vaultline_source_last_success_timestamp_seconds",
            MetricName::SourceLastBackupSucceeded => "vaultline_source_last_backup_succeeded",
            MetricName::SourceFailureStreak => "vaultline_source_failure_streak",
            MetricName::SourceScheduleInterval => "vaultline_source_schedule_interval_seconds",
            MetricName::SourceLastBackupDuration => "vaultline_source_last_backup_duration_seconds",
            MetricName::SourceDrillInterval => "vaultline_source_drill_interval_seconds",
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
            MetricName::RepositoryBytes => "vaultline_repository_bytes",
            MetricName::RepositoryDedupRatio => "vaultline_repository_dedup_ratio",
            MetricName::SnapshotsInFlight => "vaultline_snapshots_in_flight",
            MetricName::OldestInFlightAge => "vaultline_snapshot_oldest_in_flight_age_seconds",
            MetricName::SnapshotsReaped => "vaultline_snapshots_reaped_total",
            MetricName::BuildInfo => "vaultline_build_info",
            MetricName::Ready => "vaultline_ready",
            MetricName::DependencyUp => "vaultline_dependency_up",
            MetricName::CopyLagSnapshots => "vaultline_copy_lag_snapshots",
            MetricName::CopyLagSeconds => "vaultline_copy_lag_seconds",
            MetricName::CopyBytes => "vaultline_copy_bytes_total",
            MetricName::Copies => "vaultline_copies_total",
            MetricName::WalLastArchived => "vaultline_wal_last_archived_timestamp_seconds",
            MetricName::WalArchiveLag => "vaultline_wal_archive_lag_seconds",
            MetricName::WalGaps => "vaultline_wal_gaps",
            MetricName::WalStoredBytes => "vaultline_wal_stored_bytes",
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

#[cfg(test)]
mod tests {
    use super::MetricName;

    #[test]
    fn names_are_unique_and_follow_the_convention() {
        let mut seen = std::collections::BTreeSet::new();
        for metric in MetricName::ALL {
            let name = metric.as_str();
            assert!(name.starts_with("vaultline_"), "{name}");
            assert!(seen.insert(name), "{name} twice");
        }
    }

    #[test]
    fn the_metrics_page_documents_every_metric() {
        let page = include_str!("../../../docs/metrics.md");
        for metric in MetricName::ALL {
            let name = metric.as_str();
            assert!(
                page.contains(&format!("`{name}`")),
                "docs/metrics.md lacks {name}"
            );
        }
    }
}
