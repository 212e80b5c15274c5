//! The admin port: `/metrics`, `/health/live`, `/health/ready`,
//! `/health/dependencies`. Ready answers 503 while NATS or the catalog is
//! down, or a stage cannot reach its consumer (saying why).
//! Dependencies are checked once per `admin.check-interval` whatever the
//! request rate, so a flood of probes is not a flood on the catalog and S3;
//! `/metrics` and `/health/dependencies` can require a bearer token.

use crate::Deps;
use crate::metrics::{MetricName, gauge};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use sha2::Digest;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Each dependency by name, with why it is down (`None`: it answered).
type Checked = Vec<(&'static str, Option<String>)>;

#[derive(Clone)]
struct State {
    deps: Arc<Deps>,
    metrics: PrometheusHandle,
    /// The last check and when it ran; the lock makes concurrent requests
    /// wait for one check rather than each start their own.
    last: Arc<tokio::sync::Mutex<Option<(Instant, Checked)>>>,
    /// SHA-256 of the bearer token, when one is required.
    token: Option<[u8; 32]>,
}

impl State {
    async fn checked(&self) -> Checked {
        let mut last = self.last.lock().await;
        let every = self.deps.config.admin.check_interval;
        if let Some((at, results)) = last.as_ref()
            && at.elapsed() < every
        {
            return results.clone();
        }
        let results = check(&self.deps).await;
        *last = Some((Instant::now(), results.clone()));
        results
    }

    fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(want) = &self.token else {
            return true;
        };
        let given = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        // Compared as digests: the time taken says nothing about the token.
        &sha2::Sha256::digest(given.as_bytes())[..] == want
    }
}

/// The admin token, from `VAULTLINE_ADMIN_TOKEN` or `admin.token-file`.
fn load_token(deps: &Deps) -> std::io::Result<Option<[u8; 32]>> {
    let text = crate::deps::read_secret(
        "admin token",
        "VAULTLINE_ADMIN_TOKEN",
        deps.config.admin.token_file.as_deref(),
    )
    .map_err(std::io::Error::other)?;
    let Some(text) = text else {
        return Ok(None);
    };
    let token = text.lines().next().unwrap_or_default().trim();
    if token.is_empty() {
        return Err(std::io::Error::other("the admin token is empty"));
    }
    Ok(Some(sha2::Sha256::digest(token.as_bytes()).into()))
}

const UNAUTHORIZED: (StatusCode, &str) = (StatusCode::UNAUTHORIZED, "a bearer token is required\n");

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
        token: load_token(&deps)?,
        deps,
        metrics: crate::metrics::install(),
        last: Default::default(),
    };
    let app = Router::new()
        .route("/metrics", get(metrics))
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

async fn check(deps: &Deps) -> Checked {
    let nats = (!deps.bus.is_connected()).then(|| "not connected".to_owned());
    let catalog = match tokio::time::timeout(Duration::from_secs(2), deps.catalog.ping()).await {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(_) => Some("no answer within 2s".to_owned()),
    };
    let storage = deps.repository.ping().await.err().map(|e| e.to_string());
    let staging = deps.staging.ping().await.err().map(|e| e.to_string());
    vec![
        ("nats", nats),
        ("catalog", catalog),
        ("repository", storage),
        ("staging", staging),
    ]
}

/// Renders the metrics, with readiness and each dependency as of the last
/// check, so an alert sees what `/health/ready` would answer.
async fn metrics(state: axum::extract::State<State>, headers: HeaderMap) -> Response {
    if !state.authorized(&headers) {
        return UNAUTHORIZED.into_response();
    }
    let checked = state.checked().await;
    for (name, down) in &checked {
        let up = if down.is_none() { 1.0 } else { 0.0 };
        gauge(
            MetricName::DependencyUp,
            &[("dependency", (*name).to_owned())],
            up,
        );
    }
    let ready = not_ready(checked).is_empty();
    gauge(MetricName::Ready, &[], if ready { 1.0 } else { 0.0 });
    state.metrics.render().into_response()
}

/// Why this process cannot take work: dependencies down, stages blocked.
fn not_ready(checked: Checked) -> Vec<String> {
    let mut failing: Vec<String> = checked
        .into_iter()
        .filter_map(|(name, down)| down.map(|e| format!("{name}: {e}")))
        .collect();
    failing.extend(
        crate::readiness::blocked()
            .into_iter()
            .map(|(stage, reason)| format!("{stage}: {reason}")),
    );
    failing
}

async fn ready(state: axum::extract::State<State>) -> impl IntoResponse {
    let failing = not_ready(state.checked().await);
    if failing.is_empty() {
        (StatusCode::OK, "ready\n".to_owned())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", failing.join("; ")),
        )
    }
}

async fn dependencies(state: axum::extract::State<State>, headers: HeaderMap) -> Response {
    if !state.authorized(&headers) {
        return UNAUTHORIZED.into_response();
    }
    let results = state.checked().await;
    let healthy = results.iter().all(|(_, down)| down.is_none());
    let body: serde_json::Map<String, serde_json::Value> = results
        .into_iter()
        .map(|(name, down)| {
            let value = match down {
                None => serde_json::json!({ "ok": true }),
                Some(e) => serde_json::json!({ "ok": false, "error": e }),
            };
            (name.to_owned(), value)
        })
        .collect();
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(serde_json::Value::Object(body))).into_response()
}
