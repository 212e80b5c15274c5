//! The routes: what each shows or starts, and the scope it needs. Every one
//! is confined to the token's tenant: another tenant's snapshot is a 404.

use crate::auth::{publish, publish_with_id};
use crate::{Api, ApiError, need, verify};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde_json::{Value, json};
use std::sync::Arc;
use vaultline_catalog::{Caller, Scope, SourceStats};
use vaultline_types::{
    BackupRequested, DrillRequested, Name, SnapshotChanged, SnapshotId, SnapshotStatus, TriggerKind,
};

/// Method, path and the scope each route needs: the table
/// `schemas/openapi.yaml` documents (a test holds the two together).
pub const ROUTES: &[(&str, &str, Scope)] = &[
    ("GET", "/v1/sources", Scope::Read),
    ("GET", "/v1/sources/{source}", Scope::Read),
    ("POST", "/v1/sources/{source}/backups", Scope::Trigger),
    ("GET", "/v1/sources/{source}/backups/{request}", Scope::Read),
    ("POST", "/v1/sources/{source}/drills", Scope::Trigger),
    ("GET", "/v1/sources/{source}/drills/{request}", Scope::Read),
    ("GET", "/v1/snapshots", Scope::Read),
    ("GET", "/v1/snapshots/{snapshot}", Scope::Read),
    ("POST", "/v1/snapshots/{snapshot}/protect", Scope::Admin),
    ("POST", "/v1/snapshots/{snapshot}/unprotect", Scope::Admin),
    (
        "POST",
        "/v1/snapshots/{snapshot}/verifications",
        Scope::Trigger,
    ),
    ("GET", "/v1/snapshots/{snapshot}/verifications", Scope::Read),
    (
        "GET",
        "/v1/snapshots/{snapshot}/verifications/{request}",
        Scope::Read,
    ),
    ("GET", "/v1/restores", Scope::Read),
    ("GET", "/v1/restores/{restore}", Scope::Read),
    ("GET", "/v1/history", Scope::Read),
    ("GET", "/v1/stats", Scope::Read),
];

pub(crate) fn routes() -> Router<Arc<Api>> {
    Router::new()
        .route("/v1/sources", get(sources))
        .route("/v1/sources/{source}", get(source))
        .route("/v1/sources/{source}/backups", post(backup))
        .route("/v1/sources/{source}/backups/{request}", get(backup_status))
        .route("/v1/sources/{source}/drills", post(drill))
        .route("/v1/sources/{source}/drills/{request}", get(drill_result))
        .route("/v1/snapshots", get(snapshots))
        .route("/v1/snapshots/{snapshot}", get(snapshot))
        .route("/v1/snapshots/{snapshot}/protect", post(protect))
        .route("/v1/snapshots/{snapshot}/unprotect", post(unprotect))
        .route(
            "/v1/snapshots/{snapshot}/verifications",
            post(verify::request).get(verify::list),
        )
        .route(
            "/v1/snapshots/{snapshot}/verifications/{request}",
            get(verify::result),
        )
        .route("/v1/restores", get(restores))
        .route("/v1/restores/{restore}", get(restore))
        .route("/v1/history", get(history))
        .route("/v1/stats", get(stats))
}

pub(crate) type Answer = Result<Json<Value>, ApiError>;
pub(crate) type Accepted = Result<(StatusCode, Json<Value>), ApiError>;

/// A fresh id nobody can guess ahead.
pub(crate) fn random_id() -> String {
    let mut nonce = [0u8; 12];
    getrandom::fill(&mut nonce).expect("OS random source");
    hex::encode(nonce)
}

pub(crate) fn to_json(value: impl serde::Serialize) -> Answer {
    serde_json::to_value(value)
        .map(Json)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

fn name(text: &str, what: &str) -> Result<Name, ApiError> {
    Name::new(text).map_err(|e| ApiError::bad_request(format!("{what}: {e}")))
}

#[derive(serde::Deserialize)]
pub(crate) struct Listing {
    source: Option<String>,
    limit: Option<i64>,
}

impl Listing {
    pub(crate) fn limit(&self) -> i64 {
        self.limit.unwrap_or(100).clamp(1, 1000)
    }
}

/// The source's figures, when it is one of the caller's tenant.
async fn stats_of(api: &Api, caller: &Caller, source: &str) -> Result<SourceStats, ApiError> {
    let source = name(source, "source")?;
    api.catalog
        .source_stats_of(Some(&caller.tenant), Some(&source))
        .await?
        .pop()
        .ok_or_else(|| ApiError::not_found(format!("no source {source}")))
}

/// The state of each copy of one snapshot.
async fn copies_of(api: &Api, caller: &Caller, id: &SnapshotId) -> Result<Value, ApiError> {
    let copies = api
        .catalog
        .copy_states(&caller.tenant, std::slice::from_ref(id))
        .await?
        .remove(id)
        .unwrap_or_default();
    Ok(serde_json::to_value(copies).unwrap_or(Value::Null))
}

/// A source's figures with its schedule (from `schedules`, read once per
/// request) and the copies of its newest stored snapshot.
async fn described(
    api: &Api,
    caller: &Caller,
    stats: SourceStats,
    schedules: &[vaultline_catalog::ScheduleRow],
) -> Answer {
    let source = name(&stats.source, "source")?;
    let schedule = schedules
        .iter()
        .find(|s| s.tenant == caller.tenant && s.source == source);
    let newest = api
        .catalog
        .snapshots(Some(&caller.tenant), Some(&source))
        .await?
        .into_iter()
        .find(|s| matches!(s.status, SnapshotStatus::Stored | SnapshotStatus::Verified));
    let copies = match &newest {
        Some(row) => copies_of(api, caller, &row.id).await?,
        None => Value::Array(Vec::new()),
    };
    let mut value = serde_json::to_value(&stats)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    value["schedule"] = serde_json::to_value(schedule).unwrap_or(Value::Null);
    value["newest_snapshot"] = json!(newest.map(|s| s.id));
    value["copies"] = copies;
    Ok(Json(value))
}

async fn sources(State(api): State<Arc<Api>>, Extension(caller): Extension<Caller>) -> Answer {
    need(&caller, Scope::Read)?;
    let schedules = api.catalog.schedules().await?;
    let mut all = Vec::new();
    for stats in api
        .catalog
        .source_stats_of(Some(&caller.tenant), None)
        .await?
    {
        all.push(described(&api, &caller, stats, &schedules).await?.0);
    }
    Ok(Json(Value::Array(all)))
}

async fn source(
    State(api): State<Arc<Api>>,
    Extension(caller): Extension<Caller>,
    Path(source): Path<String>,
) -> Answer {
    need(&caller, Scope::Read)?;
    let stats = stats_of(&api, &caller, &source).await?;
    described(&api, &caller, stats, &api.catalog.schedules().await?).await
}

/// `api-<Idempotency-Key>`, or a fresh `api-<random>` without one.
pub(crate) fn request_id(headers: &HeaderMap) -> Result<String, ApiError> {
    let Some(key) = headers.get("Idempotency-Key") else {
        return Ok(format!("api-{}", random_id()));
    };
    let key = key
        .to_str()
        .ok()
        .filter(|k| {
            (1..=64).contains(&k.len())
                && k.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
        })
        .ok_or_else(|| ApiError::bad_request("Idempotency-Key: 1-64 of A-Z a-z 0-9 . _ : -"))?;
    Ok(format!("api-{key}"))
}

async fn backup(
    State(api): State<Arc<Api>>,
    Extension(caller): Extension<Caller>,
    Path(source): Path<String>,
    headers: HeaderMap,
) -> Accepted {
    need(&caller, Scope::Trigger)?;
    let source = name(&stats_of(&api, &caller, &source).await?.source, "source")?;
    let request_id = request_id(&headers)?;
    let href = format!("/v1/sources/{source}/backups/{request_id}");
    // The same key again: the snapshot it started, not a second one.
    if let Some(row) = api
        .catalog
        .snapshot_by_request(&caller.tenant, &source, &request_id)
        .await?
    {
        let body = json!({"request_id": request_id, "snapshot": row.id, "status": row.status, "href": href});
        return Ok((StatusCode::OK, Json(body)));
    }
    let request = BackupRequested {
        tenant: Some(caller.tenant.clone()),
        source: Some(source.clone()),
        request_id: Some(request_id.clone()),
        trigger: TriggerKind::Api,
        ..Default::default()
    };
    publish_with_id(&api, &request, &request_id).await?;
    Ok(requested(&request_id, &href))
}

/// 202: the request is on the bus; `href` will say how it went.
pub(crate) fn requested(request_id: &str, href: &str) -> (StatusCode, Json<Value>) {
    let body = json!({"request_id": request_id, "status": "requested", "href": href});
    (StatusCode::ACCEPTED, Json(body))
}

async fn backup_status(
    State(api): State<Arc<Api>>,
    Extension(caller): Extension<Caller>,
    Path((source, request)): Path<(String, String)>,
) -> Answer {
    need(&caller, Scope::Read)?;
    let source = name(&source, "source")?;
    let row = api
        .catalog
        .snapshot_by_request(&caller.tenant, &source, &request)
        .await?
        .ok_or_else(|| {
            ApiError::not_found(format!("no snapshot of {source} for request {request} yet"))
        })?;
    to_json(row)
}

async fn drill(
    State(api): State<Arc<Api>>,
    Extension(caller): Extension<Caller>,
    Path(source): Path<String>,
    headers: HeaderMap,
) -> Accepted {
    need(&caller, Scope::Trigger)?;
    let source = name(&stats_of(&api, &caller, &source).await?.source, "source")?;
    let request_id = request_id(&headers)?;
    let request = DrillRequested {
        tenant: caller.tenant.clone(),
        source: source.clone(),
        request_id: Some(request_id.clone()),
    };
    publish_with_id(&api, &request, &request_id).await?;
    let href = format!("/v1/sources/{source}/drills/{request_id}");
    Ok(requested(&request_id, &href))
}

async fn drill_result(
    State(api): State<Arc<Api>>,
    Extension(caller): Extension<Caller>,
    Path((source, request)): Path<(String, String)>,
) -> Answer {
    need(&caller, Scope::Read)?;
    let source = name(&source, "source")?;
    let row = api
        .catalog
        .drill_by_request(&caller.tenant, &source, &request)
        .await?
        .ok_or_else(|| {
            ApiError::not_found(format!("no result for drill {request} of {source} yet"))
        })?;
    to_json(row)
}

async fn snapshots(
    State(api): State<Arc<Api>>,
    Extension(caller): Extension<Caller>,
    Query(listing): Query<Listing>,
) -> Answer {
    need(&caller, Scope::Read)?;
    let source = listing
        .source
        .as_deref()
        .map(|s| name(s, "source"))
        .transpose()?;
    let mut rows = api
        .catalog
        .snapshots(Some(&caller.tenant), source.as_ref())
        .await?;
    rows.truncate(listing.limit() as usize);
    to_json(rows)
}

pub(crate) fn snapshot_id(text: &str) -> Result<SnapshotId, ApiError> {
    SnapshotId::parse(text).map_err(|e| ApiError::bad_request(format!("snapshot: {e}")))
}

async fn snapshot(
    State(api): State<Arc<Api>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Answer {
    need(&caller, Scope::Read)?;
    let id = snapshot_id(&id)?;
    let row = api.catalog.snapshot(&caller.tenant, &id).await?;
    let mut value = serde_json::to_value(row)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    value["copies"] = copies_of(&api, &caller, &id).await?;
    Ok(Json(value))
}

async fn set_protected(api: &Api, caller: &Caller, id: &str, protected: bool) -> Answer {
    need(caller, Scope::Admin)?;
    let id = snapshot_id(id)?;
    let row = api.catalog.snapshot(&caller.tenant, &id).await?;
    let changed = api
        .catalog
        .set_protected(&caller.tenant, &id, protected)
        .await?;
    let change = if protected {
        "protected"
    } else {
        "unprotected"
    };
    if changed {
        let event = SnapshotChanged {
            tenant: caller.tenant.clone(),
            source: row.source.clone(),
            snapshot: id.clone(),
            change: change.into(),
            detail: format!("by API token {}", caller.token),
        };
        publish(api, &event).await?;
    }
    Ok(Json(
        json!({"snapshot": id, "protected": protected, "changed": changed}),
    ))
}

async fn protect(
    State(api): State<Arc<Api>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Answer {
    set_protected(&api, &caller, &id, true).await
}

async fn unprotect(
    State(api): State<Arc<Api>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Answer {
    set_protected(&api, &caller, &id, false).await
}

async fn restores(
    State(api): State<Arc<Api>>,
    Extension(caller): Extension<Caller>,
    Query(listing): Query<Listing>,
) -> Answer {
    need(&caller, Scope::Read)?;
    to_json(
        api.catalog
            .restore_records(&caller.tenant, listing.limit())
            .await?,
    )
}

async fn restore(
    State(api): State<Arc<Api>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Answer {
    need(&caller, Scope::Read)?;
    to_json(api.catalog.restore_record(&caller.tenant, &id).await?)
}

async fn history(
    State(api): State<Arc<Api>>,
    Extension(caller): Extension<Caller>,
    Query(listing): Query<Listing>,
) -> Answer {
    need(&caller, Scope::Read)?;
    let rows = api
        .catalog
        .executions(
            Some(caller.tenant.as_str()),
            listing.source.as_deref(),
            listing.limit(),
        )
        .await?;
    to_json(rows)
}

async fn stats(State(api): State<Arc<Api>>, Extension(caller): Extension<Caller>) -> Answer {
    need(&caller, Scope::Read)?;
    let tenant = caller.tenant.as_str();
    let sources = api
        .catalog
        .source_stats_of(Some(&caller.tenant), None)
        .await?;
    let repository = api
        .catalog
        .repository_stats()
        .await?
        .into_iter()
        .find(|r| r.tenant == tenant);
    to_json(json!({"sources": sources, "repository": repository}))
}
