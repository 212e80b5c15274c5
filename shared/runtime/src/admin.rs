//! The admin port: `/metrics`, `/health/live`, `/health/ready`,
//! `/health/dependencies`. Ready answers 503 while NATS or the catalog is down.

use crate::Deps;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone)]
struct State {
    deps: Arc<Deps>,
    metrics: PrometheusHandle,
}

/// Binds the admin port and serves it until `shutdown` flips.
///
/// # Errors
/// When the address cannot be bound.
pub async fn serve(
    listen: &str,
    deps: Arc<Deps>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let state = State {
        deps,
        metrics: crate::metrics::install(),
    };
    let app = Router::new()
        .route(
            "/metrics",
            get(|s: axum::extract::State<State>| async move { s.metrics.render() }),
        )
        .route("/health/live", get(|| async { "ok\n" }))
        .route("/health/ready", get(ready))
        .route("/health/dependencies", get(dependencies))
        .with_state(state);
    tokio::spawn(async move {
        let stop = async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        };
        if let Err(error) = axum::serve(listener, app)
            .with_graceful_shutdown(stop)
            .await
        {
            tracing::error!(%error, "Admin server failed.");
        }
    });
    tracing::info!(%addr, "Admin server listening.");
    Ok(addr)
}

async fn check(deps: &Deps) -> Vec<(&'static str, Result<(), String>)> {
    let nats = if deps.bus.is_connected() {
        Ok(())
    } else {
        Err("not connected".to_owned())
    };
    let catalog = match tokio::time::timeout(Duration::from_secs(2), deps.catalog.ping()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no answer within 2s".to_owned()),
    };
    let storage = deps.repository.ping().await.map_err(|e| e.to_string());
    let staging = deps.staging.ping().await.map_err(|e| e.to_string());
    vec![
        ("nats", nats),
        ("catalog", catalog),
        ("repository", storage),
        ("staging", staging),
    ]
}

async fn ready(state: axum::extract::State<State>) -> impl IntoResponse {
    let failing: Vec<String> = check(&state.deps)
        .await
        .into_iter()
        .filter_map(|(name, result)| result.err().map(|e| format!("{name}: {e}")))
        .collect();
    if failing.is_empty() {
        (StatusCode::OK, "ready\n".to_owned())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", failing.join("; ")),
        )
    }
}

async fn dependencies(state: axum::extract::State<State>) -> impl IntoResponse {
    let results = check(&state.deps).await;
    let healthy = results.iter().all(|(_, r)| r.is_ok());
    let body: serde_json::Map<String, serde_json::Value> = results
        .into_iter()
        .map(|(name, result)| {
            let value = match result {
                Ok(()) => serde_json::json!({ "ok": true }),
                Err(e) => serde_json::json!({ "ok": false, "error": e }),
            };
            (name.to_owned(), value)
        })
        .collect();
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(serde_json::Value::Object(body)))
}
