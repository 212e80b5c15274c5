//! vaultline-api: the HTTP API `vaultline serve` offers on `[api] listen`.
//! JSON over HTTP (axum), described in `schemas/openapi.yaml`. Every call
//! carries a bearer token of one tenant and one scope (`vaultline token
//! create`); it sees that tenant only, and every use is published for the
//! audit trail. Triggers go out on NATS like everyone else's: the API is a
//! way in, not a second control path.

mod auth;
mod routes;
mod verify;

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use std::net::SocketAddr;
use std::sync::Arc;
use vaultline_bus::Bus;
use vaultline_catalog::{Catalog, Scope};
use vaultline_runtime::Config;

pub use routes::ROUTES;

/// What every handler reaches: the catalog (as `vaultline_api`) and the
/// bus (as `vaultline-api`).
pub(crate) struct Api {
    catalog: Catalog,
    bus: Bus,
}

/// An answer other than success: a status and one sentence, as JSON.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }
    pub(crate) fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }
    pub(crate) fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            axum::Json(serde_json::json!({ "error": self.message })),
        )
            .into_response()
    }
}

impl From<vaultline_catalog::Error> for ApiError {
    fn from(e: vaultline_catalog::Error) -> ApiError {
        match e {
            vaultline_catalog::Error::NotFound(m) => ApiError::not_found(m),
            vaultline_catalog::Error::Conflict(m) => ApiError::new(StatusCode::CONFLICT, m),
            other => {
                tracing::warn!(error = %other, "API: the catalog failed.");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the catalog is not answering",
                )
            }
        }
    }
}

/// Refuses a caller whose scope is below `needed`.
pub(crate) fn need(caller: &vaultline_catalog::Caller, needed: Scope) -> Result<(), ApiError> {
    if caller.scope < needed {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "this token's scope is {}; this call needs {}",
                caller.scope.as_str(),
                needed.as_str()
            ),
        ));
    }
    Ok(())
}

/// A running API.
pub struct Served {
    pub addr: SocketAddr,
    pub task: tokio::task::JoinHandle<()>,
}

/// Opens the API's own catalog role and NATS login (`[catalog.stages.api]`,
/// `[nats.stages.api]`, else the process's) and serves on `listen`.
///
/// # Errors
/// When the catalog, NATS or the address cannot be reached or bound.
pub async fn start(
    config: &Config,
    listen: &str,
) -> Result<Served, vaultline_runtime::deps::StartError> {
    let catalog = vaultline_runtime::deps::open_catalog_named(&config.catalog, "api")?;
    catalog.check_schema().await?;
    let login = config
        .nats
        .named_login("api")
        .unwrap_or_else(|| config.nats.login());
    let bus = Bus::connect(&config.nats.url, "vaultline-api", &login).await?;
    bus.check_stream().await?;
    let api = Arc::new(Api { catalog, bus });
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| {
        vaultline_runtime::deps::StartError::Other(format!("cannot listen on {listen}: {e}"))
    })?;
    let addr = listener
        .local_addr()
        .map_err(|e| vaultline_runtime::deps::StartError::Other(e.to_string()))?;
    let app = router(api);
    let task = tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(%error, "The API stopped.");
        }
    });
    tracing::info!(%addr, "API listening.");
    Ok(Served { addr, task })
}

fn router(api: Arc<Api>) -> Router {
    routes::routes()
        .layer(axum::middleware::from_fn_with_state(
            api.clone(),
            auth::authorize,
        ))
        .with_state(api)
}
