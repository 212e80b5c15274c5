//! Each stage as a NATS micro service (`vaultline-<stage>`): `$SRV.PING`,
//! `$SRV.INFO` and `$SRV.STATS` (what `nats micro ls` and `nats micro stats`
//! ask) list the running stages, one instance per process. Its one endpoint,
//! `vaultline_svc.<stage>.status` (outside `vaultline.>`, so the stream never
//! stores it), answers with what the stage has handled, and STATS carries the
//! same counts in the endpoint's `data`.

use async_nats::service::ServiceExt;
use futures::StreamExt;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use tokio::sync::watch;
use vaultline_types::StageName;

/// Messages a stage of this process finished, by outcome.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Tally {
    pub done: u64,
    pub retried: u64,
    pub dead_lettered: u64,
}

static TALLIES: Mutex<BTreeMap<&'static str, Tally>> = Mutex::new(BTreeMap::new());

/// Counts one message `stage` finished with `outcome` (the runner's labels).
pub(crate) fn tally(stage: StageName, outcome: &str) {
    let mut tallies = TALLIES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let tally = tallies.entry(stage.as_str()).or_default();
    match outcome {
        "done" => tally.done += 1,
        "retried" => tally.retried += 1,
        "dead_letter" => tally.dead_lettered += 1,
        _ => {}
    }
}

fn counts(stage: StageName) -> serde_json::Value {
    let tally = TALLIES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(stage.as_str())
        .cloned()
        .unwrap_or_default();
    serde_json::json!({ "stage": stage, "messages": tally })
}

/// Serves `stage`'s micro service on its own connection until `stop` flips.
/// A refusal (an older auth.conf without `$SRV` rights) is logged, not fatal:
/// the stage works without it.
pub(crate) async fn serve(
    stage: StageName,
    client: async_nats::Client,
    mut stop: watch::Receiver<bool>,
) {
    let started = client
        .service_builder()
        .description(format!("vaultline {stage} stage"))
        .metadata(HashMap::from([("stage".to_owned(), stage.to_string())]))
        .stats_handler(move |_, _| counts(stage))
        .start(format!("vaultline-{stage}"), env!("CARGO_PKG_VERSION"))
        .await;
    let service = match started {
        Ok(service) => service,
        Err(error) => {
            tracing::warn!(%stage, %error, "Not registered as a NATS micro service.");
            return;
        }
    };
    let endpoint = service
        .endpoint_builder()
        .name("status")
        .add(format!("vaultline_svc.{stage}.status"))
        .await;
    let mut endpoint = match endpoint {
        Ok(endpoint) => endpoint,
        Err(error) => {
            tracing::warn!(%stage, %error, "The micro service's status endpoint is not served.");
            stopped(&mut stop).await;
            let _ = service.stop().await;
            return;
        }
    };
    loop {
        tokio::select! {
            request = endpoint.next() => {
                let Some(request) = request else { break };
                let body = counts(stage).to_string();
                if let Err(error) = request.respond(Ok(body.into())).await {
                    tracing::debug!(%stage, %error, "A status reply was lost.");
                }
            }
            () = stopped(&mut stop) => break,
        }
    }
    let _ = service.stop().await;
}

/// Resolves once `stop` flips (the guard `wait_for` returns is not `Send`).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}
