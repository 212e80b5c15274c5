//! Verifications asked for by name (`verify.request`, from the HTTP API):
//! one stored snapshot checked again now, every object read back (level 1)
//! and, at level 2, the snapshot decrypted and reassembled. Damage found
//! marks a verified snapshot corrupt, as the rolling check does; the result
//! is recorded under the request id and published (`verify.completed`).

use crate::integrity::mark_corrupt;
use crate::{Rehash, level1, level2};
use std::time::Instant;
use time::OffsetDateTime;
use vaultline_catalog::SnapshotStatus;
use vaultline_format::keys::Kek;
use vaultline_runtime::{Deps, ErrorType, Outcome, Outgoing, StageError};
use vaultline_types::{SnapshotCorrupt, VerificationCompleted, VerifyRequested};

/// What the checks found: damage (`problems`), or why nothing could be
/// checked (`error`).
#[derive(Default)]
struct Found {
    objects: u32,
    files: Option<u64>,
    bytes: Option<u64>,
    problems: Vec<String>,
    error: Option<String>,
}

pub(crate) async fn run(deps: &Deps, kek: Option<&Kek>, request: VerifyRequested) -> Outcome {
    request
        .check()
        .map_err(|why| StageError::rejected(ErrorType::Decode, why))?;
    let catalog = &deps.catalog;
    // Redelivered after it ran: the result already recorded, published again.
    if let Some(done) = catalog
        .verification(&request.tenant, &request.request_id)
        .await?
    {
        return Ok(vec![Outgoing::event(&done)]);
    }
    let started_at = OffsetDateTime::now_utc().unix_timestamp();
    let clock = Instant::now();
    // Ids come from the subject: another tenant's snapshot is unknown here.
    let row = match catalog.snapshot(&request.tenant, &request.snapshot).await {
        Err(vaultline_catalog::Error::NotFound(why)) => {
            return Err(StageError::rejected(ErrorType::Forged, why));
        }
        found => found?,
    };
    if row.source != request.source {
        return Err(StageError::rejected(
            ErrorType::Forged,
            format!(
                "snapshot {} is {}'s, not {}'s",
                request.snapshot, row.source, request.source
            ),
        ));
    }
    let found = match row.status {
        // A stored snapshot is still the pipeline's to judge.
        SnapshotStatus::Verified | SnapshotStatus::Corrupt => {
            check(deps, kek, &request, row.manifest_digest.as_deref()).await?
        }
        status => Found {
            error: Some(format!(
                "snapshot {} is {status}: only a verified or corrupt snapshot can be verified again",
                request.snapshot
            )),
            ..Found::default()
        },
    };
    // Damage found is damage, even when level 2 could not follow.
    let outcome = match (found.problems.is_empty(), &found.error) {
        (false, _) => "failed",
        (true, Some(_)) => "error",
        (true, None) => "passed",
    };
    let done = VerificationCompleted {
        tenant: request.tenant.clone(),
        source: request.source.clone(),
        snapshot: request.snapshot.clone(),
        request_id: request.request_id.clone(),
        level: request.level,
        outcome: outcome.to_owned(),
        objects: found.objects,
        files: found.files,
        bytes: found.bytes,
        problems: found.problems,
        error: found.error,
        started_at,
        duration_ms: clock.elapsed().as_millis() as u64,
    };
    if outcome == "failed" && row.status == SnapshotStatus::Verified {
        let event = SnapshotCorrupt {
            tenant: done.tenant.clone(),
            source: done.source.clone(),
            snapshot: done.snapshot.clone(),
            level: done.level,
            reason: format!(
                "verification {}: {}",
                done.request_id,
                done.problems.join("; ")
            ),
        };
        mark_corrupt(deps, event, &format!("request-{}", done.request_id)).await?;
    }
    match outcome {
        "passed" => {
            tracing::info!(snapshot = %done.snapshot, level = done.level, objects = done.objects, "Requested verification passed.");
        }
        "failed" => {
            tracing::error!(snapshot = %done.snapshot, problems = ?done.problems, "Requested verification found damage.");
        }
        _ => {
            tracing::warn!(snapshot = %done.snapshot, error = ?done.error, "Requested verification could not run.");
        }
    }
    catalog.record_verification(&done).await?;
    Ok(vec![Outgoing::event(&done)])
}

/// Level 1 with every object read back, then level 2 when asked for: both
/// run, so each says what it sees.
async fn check(
    deps: &Deps,
    kek: Option<&Kek>,
    request: &VerifyRequested,
    manifest_digest: Option<&str>,
) -> Result<Found, StageError> {
    let (tenant, snapshot) = (&request.tenant, &request.snapshot);
    let finding = level1(
        &deps.catalog,
        &deps.repository,
        tenant,
        snapshot,
        manifest_digest,
        Rehash::All,
    )
    .await?;
    let mut found = Found {
        objects: finding.objects,
        problems: finding.problems,
        ..Found::default()
    };
    if request.level < 2 {
        return Ok(found);
    }
    let Some(kek) = kek else {
        found.error = Some(
            "level 2 needs the key-encryption key, which this verifier does not hold (keys.kek-file)"
                .into(),
        );
        return Ok(found);
    };
    let keys = deps.catalog.tenant_keys(tenant).await?;
    let keyring = kek
        .unwrap_keyring(keys.iter().map(|k| k.wrapped_identity.as_slice()))
        .map_err(|e| StageError::permanent(ErrorType::Key, e.to_string()))?;
    match level2(&deps.repository, tenant, snapshot, &keyring).await? {
        Ok(done) => {
            found.files = Some(done.files);
            found.bytes = Some(done.bytes);
        }
        Err(why) => found.problems.push(format!("level 2: {why}")),
    }
    Ok(found)
}
