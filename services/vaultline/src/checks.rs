//! `vaultline verify` and `vaultline drill`: checking, on demand, that
//! snapshots are sound and restorable.

use crate::cli::{human_bytes, parse_pair};
use anyhow::{Context, Result};
use std::process::ExitCode;
use std::time::{Duration, Instant};
use vaultline_catalog::{Catalog, SnapshotStatus};
use vaultline_runtime::Config;
use vaultline_types::{DrillRequested, Message, SnapshotId};

/// Level 1 (and with `full` level 2) of one snapshot, now. A damaged
/// snapshot is marked corrupt with the reason.
pub(crate) async fn verify(
    config: &Config,
    catalog: &Catalog,
    snapshot: &str,
    full: bool,
    json: bool,
) -> Result<ExitCode> {
    let snapshot = SnapshotId::parse(snapshot)?;
    let row = catalog.find_snapshot(&snapshot).await?;
    if !matches!(
        row.status,
        SnapshotStatus::Verified | SnapshotStatus::Stored | SnapshotStatus::Corrupt
    ) {
        anyhow::bail!(
            "snapshot {snapshot} is {}: only stored snapshots can be verified",
            row.status
        );
    }
    let repository = vaultline_runtime::deps::open_repository(&config.repository, None).await?;
    let finding = vaultline_verifier::level1(
        catalog,
        &repository,
        &row.tenant,
        &snapshot,
        row.manifest_digest.as_deref(),
        vaultline_verifier::Rehash::All,
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut reason = (!finding.problems.is_empty()).then(|| {
        format!(
            "level 1: {} of {} objects damaged: {}",
            finding.problems.len(),
            finding.objects,
            finding.problems.join("; ")
        )
    });
    // With --full both levels run, so each says what it sees.
    let mut level2 = None;
    if full {
        let key = catalog.key(&row.tenant, &row.key_id).await?;
        let identity = vaultline_runtime::deps::load_kek(config)?.unwrap(&key.wrapped_identity)?;
        match vaultline_verifier::level2(&repository, &row.tenant, &snapshot, &identity)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?
        {
            Ok(done) => level2 = Some(done),
            Err(why) => {
                reason = Some(match reason {
                    Some(first) => format!("{first}; {why}"),
                    None => why,
                });
            }
        }
    }
    if let Some(reason) = &reason {
        catalog
            .finish_snapshot(
                &row.tenant,
                &snapshot,
                SnapshotStatus::Corrupt,
                Some(reason),
            )
            .await?;
    }
    if json {
        let value = serde_json::json!({
            "snapshot": snapshot,
            "tenant": row.tenant,
            "source": row.source,
            "level": if full { 2 } else { 1 },
            "objects": finding.objects,
            "ok": reason.is_none(),
            "error": reason,
            "files": level2.as_ref().map(|d| d.files),
            "bytes": level2.as_ref().map(|d| d.bytes),
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        match (&reason, &level2) {
            (Some(reason), _) => println!("snapshot {snapshot} is CORRUPT: {reason}"),
            (None, Some(done)) => println!(
                "snapshot {snapshot}: level 1 ok ({} objects), level 2 ok ({} files, {} read back, source digest matches)",
                finding.objects,
                done.files,
                human_bytes(done.bytes as i64)
            ),
            (None, None) => println!(
                "snapshot {snapshot}: level 1 ok ({} objects match their recorded digests)",
                finding.objects
            ),
        }
    }
    Ok(if reason.is_none() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Requests a drill from the verifier and waits for its result, or sets the
/// source's drill cadence.
pub(crate) async fn drill(
    config: &Config,
    catalog: &Catalog,
    source: &str,
    every: Option<String>,
    timeout: u64,
    json: bool,
) -> Result<ExitCode> {
    let (tenant, source) = parse_pair(source)?;
    let row = catalog.source(&tenant, &source).await?;
    if let Some(every) = every {
        let seconds = match every.as_str() {
            "off" | "never" => None,
            text => Some(
                humantime::parse_duration(text)
                    .with_context(|| {
                        format!("--every {text:?} is not a duration (e.g. 1d, 12h) or off")
                    })?
                    .as_secs()
                    .max(60) as i64,
            ),
        };
        catalog.set_drill_every(&tenant, &source, seconds).await?;
        match seconds {
            Some(s) => println!(
                "{tenant}/{source} is drilled every {}",
                humantime::format_duration(Duration::from_secs(s as u64))
            ),
            None => println!("{tenant}/{source} is no longer drilled on a schedule"),
        }
        return Ok(ExitCode::SUCCESS);
    }
    let spec = row.config()?;
    if spec.database_url().is_none() {
        anyhow::bail!(
            "drills restore database sources; {tenant}/{source} is a {} source (try vaultline verify --full)",
            spec.kind()
        );
    }
    let request_id = crate::cli::new_request_id();
    let request = DrillRequested {
        tenant: tenant.clone(),
        source: source.clone(),
        request_id: Some(request_id.clone()),
    };
    crate::cli::publish_request(
        config,
        request.subject(),
        serde_json::to_vec(&request)?,
        &request_id,
        &[],
    )
    .await?;
    eprintln!("drill of {tenant}/{source} requested (request {request_id})");
    let deadline = Instant::now() + Duration::from_secs(timeout);
    let result = loop {
        if let Some(result) = catalog
            .drill_by_request(&tenant, &source, &request_id)
            .await?
        {
            break result;
        }
        if Instant::now() > deadline {
            anyhow::bail!("no drill result within {timeout}s (is a verifier running?)");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&result)?);
    } else {
        println!(
            "drill of {tenant}/{source} {} in {:.1}s (snapshot {})",
            result.outcome.to_uppercase(),
            result.duration_ms as f64 / 1000.0,
            result.snapshot.as_deref().unwrap_or("none")
        );
        if let Some(tables) = result.tables.as_array() {
            for table in tables {
                println!(
                    "  {:<40} dump {:>10}  restored {:>10}",
                    table["table"].as_str().unwrap_or("?"),
                    table["expected"],
                    table["restored"]
                );
            }
        }
        if let Some(error) = &result.error {
            println!("  error: {error}");
        }
    }
    Ok(if result.outcome == "passed" {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
