//! Who is calling: the bearer token, checked against the catalog, and the
//! record of every use in the audit trail (`api.called`).

use crate::{Api, ApiError};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use vaultline_catalog::Refusal;
use vaultline_types::{ApiCalled, Message, Name, headers};

/// The token of `Authorization: Bearer <token>`.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let token = value.strip_prefix("Bearer ")?.trim();
    (!token.is_empty()).then_some(token)
}

fn unauthorized(message: &str) -> Response {
    let mut response = ApiError::new(StatusCode::UNAUTHORIZED, message).into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        "Bearer".parse().expect("a valid header value"),
    );
    response
}

/// Lets through a request with a valid, unrevoked token (the handler then
/// finds its [`Caller`] among the request's extensions), and records every
/// use of a token, answered or refused.
pub(crate) async fn authorize(
    State(api): State<Arc<Api>>,
    mut request: Request,
    next: Next,
) -> Response {
    let (method, path) = (
        request.method().to_string(),
        request.uri().path().to_owned(),
    );
    let Some(token) = bearer(request.headers()) else {
        return unauthorized("send a token: Authorization: Bearer vlt_…");
    };
    let checked = match api.catalog.authenticate(token).await {
        Ok(checked) => checked,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let caller = match checked {
        Ok(caller) => caller,
        Err(Refusal::Unknown) => {
            // No tenant to file it under: the log has it.
            tracing::warn!(%method, %path, "API: a token that is not ours.");
            return unauthorized("this token is not valid");
        }
        Err(Refusal::Revoked { token, tenant }) => {
            record(&api, &tenant, &token, "revoked", &method, &path, 401).await;
            return unauthorized("this token was revoked");
        }
    };
    request.extensions_mut().insert(caller.clone());
    let response = next.run(request).await;
    let status = response.status().as_u16();
    record(
        &api,
        &caller.tenant,
        &caller.token,
        caller.scope.as_str(),
        &method,
        &path,
        status,
    )
    .await;
    response
}

/// Publishes one use of a token for the audit trail.
async fn record(
    api: &Api,
    tenant: &Name,
    token: &str,
    scope: &str,
    method: &str,
    path: &str,
    status: u16,
) {
    let event = ApiCalled {
        tenant: tenant.clone(),
        token: token.to_owned(),
        scope: scope.to_owned(),
        method: method.to_owned(),
        path: path.to_owned(),
        status,
    };
    if let Err(error) = publish(api, &event).await {
        // The call is answered already; the gap must be seen.
        tracing::error!(%tenant, token, error = %error.message, "API: a call could not be put in the audit trail.");
    }
}

/// Publishes `event` as JSON with a fresh message id and its tenant and
/// source as headers.
pub(crate) async fn publish<M: Message + serde::Serialize>(
    api: &Api,
    event: &M,
) -> Result<(), ApiError> {
    let id = crate::routes::random_id();
    publish_with_id(api, event, &id).await
}

/// [`publish`] under a message id made of the subject and `id` (a
/// trigger's request id): a retry within the stream's window is dropped
/// as a repeat, while the same Idempotency-Key from another tenant, or for
/// another kind of request, is not mistaken for it.
pub(crate) async fn publish_with_id<M: Message + serde::Serialize>(
    api: &Api,
    event: &M,
    id: &str,
) -> Result<(), ApiError> {
    let body = serde_json::to_vec(event)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let mut map = async_nats::HeaderMap::new();
    map.insert(headers::CONTENT_TYPE, vaultline_types::CONTENT_TYPE_JSON);
    map.insert(
        headers::MSG_ID,
        format!("{}:{id}", event.subject()).as_str(),
    );
    map.insert(headers::TENANT, event.tenant().as_str());
    if let Some(source) = event.source() {
        map.insert(headers::SOURCE, source.as_str());
    }
    api.bus
        .publish(event.subject(), map, body.into())
        .await
        .map(|_| ())
        .map_err(|e| {
            tracing::warn!(error = %e, "API: NATS did not take a message.");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "NATS did not take the request; try again",
            )
        })
}
