//! The Prometheus exporter, and the metric names and helpers of
//! `vaultline-metrics` under the path every stage already uses.

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;

pub use vaultline_metrics::*;

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
                // Whole backups take minutes to hours, not milliseconds.
                .set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Full(
                        MetricName::BackupDuration.as_str().to_owned(),
                    ),
                    // About 1.5x apart, so "50% slower than its p95" is
                    // not lost inside one bucket.
                    &[
                        1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 90.0, 120.0, 180.0, 300.0, 450.0,
                        600.0, 900.0, 1200.0, 1800.0, 2700.0, 3600.0, 5400.0, 7200.0, 10800.0,
                        14400.0, 21600.0, 43200.0, 86400.0,
                    ],
                )
                .expect("bucket list is not empty")
                .install_recorder()
                .expect("no other metrics recorder is installed")
        })
        .clone()
}
