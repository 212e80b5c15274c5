//! The sampled level-2 check: verified snapshots chosen at random are read
//! back in full, `[integrity] level2-per-day` a day, so that what level 1
//! cannot see (a snapshot that no longer decrypts or reassembles) is found
//! in old snapshots too, not only in new ones that asked for `--verify full`.

use crate::integrity::mark_corrupt;
use crate::level2;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use vaultline_format::keys::Kek;
use vaultline_runtime::metrics::{MetricName, count};
use vaultline_runtime::{Deps, ErrorType, StageError};
use vaultline_types::SnapshotCorrupt;

/// The service: one sample every day / `level2-per-day`.
pub(crate) async fn sampled_level2(deps: Arc<Deps>, mut stop: watch::Receiver<bool>) {
    let per_day = deps.config.integrity.level2_per_day;
    if per_day == 0 {
        return;
    }
    let Ok(kek) = vaultline_runtime::deps::load_kek(&deps.config) else {
        tracing::warn!(
            stage = "verifier",
            "No key-encryption key: sampled level-2 checks are off."
        );
        return;
    };
    let every = Duration::from_secs_f64(86_400.0 / f64::from(per_day));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.wait_for(|stop| *stop) => break,
        }
        if let Err(error) = sample(&deps, &kek).await {
            tracing::warn!(stage = "verifier", %error, "Sampled level-2 check failed; retrying later.");
        }
    }
}

async fn sample(deps: &Deps, kek: &Kek) -> Result<(), StageError> {
    let Some(row) = deps.catalog.random_verified_snapshot().await? else {
        return Ok(());
    };
    let keys = deps.catalog.tenant_keys(&row.tenant).await?;
    let keyring = kek
        .unwrap_keyring(keys.iter().map(|k| k.wrapped_identity.as_slice()))
        .map_err(|e| StageError::permanent(ErrorType::Key, e.to_string()))?;
    match level2(&deps.repository, &row.tenant, &row.id, &keyring).await? {
        Ok(_) => {
            count(
                MetricName::IntegrityLevel2Samples,
                &[("outcome", "passed".into())],
                1,
            );
            tracing::info!(snapshot = %row.id, "Sampled level-2 check passed.");
        }
        Err(why) => {
            count(
                MetricName::IntegrityLevel2Samples,
                &[("outcome", "failed".into())],
                1,
            );
            tracing::error!(snapshot = %row.id, %why, "Sampled level-2 check failed.");
            let event = SnapshotCorrupt {
                tenant: row.tenant,
                source: row.source,
                snapshot: row.id,
                level: 2,
                reason: format!("sampled level 2: {why}"),
            };
            mark_corrupt(deps, event, "level2").await?;
        }
    }
    Ok(())
}
