//! Verifications of one snapshot asked for by name: the request goes out
//! on the bus (`verify.request`) for the verifier, which records what it
//! found under the request id.

use crate::auth::publish_with_id;
use crate::routes::{Accepted, Answer, Listing, request_id, requested, snapshot_id, to_json};
use crate::{Api, ApiError, need};
use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use std::sync::Arc;
use vaultline_catalog::{Caller, Scope, SnapshotStatus};
use vaultline_types::VerifyRequested;

/// The body of a request, all optional: `{"level": 1}` (every object read
/// back) or `{"level": 2}` (decrypted and reassembled as well).
#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Asked {
    level: Option<u8>,
}

pub(crate) async fn request(
    State(api): State<Arc<Api>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Accepted {
    need(&caller, Scope::Trigger)?;
    let asked: Asked = if body.iter().all(u8::is_ascii_whitespace) {
        Asked::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("body: {e}")))?
    };
    let level = asked.level.unwrap_or(1);
    let id = snapshot_id(&id)?;
    let row = api.catalog.snapshot(&caller.tenant, &id).await?;
    if !matches!(
        row.status,
        SnapshotStatus::Verified | SnapshotStatus::Corrupt
    ) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "snapshot {id} is {}: only a verified or corrupt snapshot can be verified again",
                row.status
            ),
        ));
    }
    let request_id = request_id(&headers)?;
    let href = format!("/v1/snapshots/{id}/verifications/{request_id}");
    // The same key again: what that request found, once it ran.
    if let Some(done) = api
        .catalog
        .verification(&caller.tenant, &request_id)
        .await?
    {
        if done.snapshot != id {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!(
                    "this Idempotency-Key asked for a verification of snapshot {} already",
                    done.snapshot
                ),
            ));
        }
        return Ok((StatusCode::OK, to_json(done)?));
    }
    let request = VerifyRequested {
        tenant: caller.tenant.clone(),
        source: row.source.clone(),
        snapshot: id,
        level,
        request_id: request_id.clone(),
    };
    request.check().map_err(ApiError::bad_request)?;
    publish_with_id(&api, &request, &request_id).await?;
    Ok(requested(&request_id, &href))
}

pub(crate) async fn result(
    State(api): State<Arc<Api>>,
    Extension(caller): Extension<Caller>,
    Path((id, request)): Path<(String, String)>,
) -> Answer {
    need(&caller, Scope::Read)?;
    let id = snapshot_id(&id)?;
    let done = api
        .catalog
        .verification(&caller.tenant, &request)
        .await?
        .filter(|done| done.snapshot == id)
        .ok_or_else(|| {
            ApiError::not_found(format!("no result for verification {request} of {id} yet"))
        })?;
    to_json(done)
}

pub(crate) async fn list(
    State(api): State<Arc<Api>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Query(listing): Query<Listing>,
) -> Answer {
    need(&caller, Scope::Read)?;
    let id = snapshot_id(&id)?;
    // A 404 for another tenant's snapshot, not an empty list.
    api.catalog.snapshot(&caller.tenant, &id).await?;
    to_json(
        api.catalog
            .verifications_of(&caller.tenant, &id, listing.limit())
            .await?,
    )
}
