//! Why a stage of this process cannot take work yet, for `/health/ready`:
//! its durable consumer is missing (`vaultline migrate` has not run) or its
//! user may not read it. The runner sets and clears it; process-wide, since
//! `vaultline serve` runs every stage with dependencies of its own.

use std::collections::BTreeMap;
use std::sync::Mutex;
use vaultline_types::StageName;

static BLOCKED: Mutex<BTreeMap<&'static str, String>> = Mutex::new(BTreeMap::new());

/// Records why `stage` cannot take work, or with `None` that it can.
pub(crate) fn set(stage: StageName, reason: Option<String>) {
    let mut blocked = BLOCKED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    match reason {
        Some(reason) => blocked.insert(stage.as_str(), reason),
        None => blocked.remove(stage.as_str()),
    };
}

/// Every stage that cannot take work, with why.
pub(crate) fn blocked() -> Vec<(&'static str, String)> {
    BLOCKED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
        .map(|(stage, reason)| (*stage, reason.clone()))
        .collect()
}
