//! vaultline-runtime: what every stage process shares. The [`Stage`] contract,
//! the [`runner`] that alone speaks the JetStream protocol, the admin HTTP
//! server, configuration, telemetry and the metric names.

pub mod admin;
mod allocator;
pub mod config;
pub mod deps;
pub mod entry;
pub mod metrics;
pub mod micro;
mod readiness;
pub mod runner;
pub mod setup;
pub mod stage;
pub mod telemetry;

pub use config::Config;
pub use deps::{Deps, open_catalog};
pub use entry::Node;
pub use stage::{Cx, ErrorClass, ErrorType, Inbound, Outcome, Outgoing, Stage, StageError};

/// Waits for SIGTERM or Ctrl-C and flips `tx`, so every runner stops taking
/// work, finishes or naks what it holds, and returns.
pub fn shutdown_on_signal() -> tokio::sync::watch::Receiver<bool> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler can be installed");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!("Shutdown requested; finishing work in flight.");
        let _ = tx.send(true);
    });
    rx
}
pub use async_nats::HeaderMap;
