//! `vaultline backup`: trigger a backup now, and with `--wait` follow the
//! snapshot it starts until it is verified or fails.

use crate::context::{catalog, parse_pair};
use crate::output::human_bytes;
use crate::progress::{Output, Progress, Unit};
use crate::request::{new_request_id, publish_trigger};
use anyhow::{Result, bail};
use futures::StreamExt;
use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use vaultline_catalog::{Catalog, SnapshotRow, SnapshotStatus};
use vaultline_extractor::progress::ExtractionProgress;
use vaultline_runtime::Config;
use vaultline_types::{Name, SnapshotId, TriggerKind};

/// Flags of `backup`.
#[derive(clap::Args, Debug)]
pub struct BackupArgs {
    /// `tenant/source`
    source: String,
    /// Follow the snapshot until it is verified; exit non-zero if it fails.
    #[arg(long)]
    wait: bool,
    /// Give up waiting after this many seconds.
    #[arg(long, default_value_t = 3600)]
    timeout: u64,
    /// With --wait: one JSON object per event (status changes, progress).
    #[arg(long)]
    json: bool,
    /// Record KEY=VALUE with the snapshot (repeatable), e.g.
    /// app_version=2.4.1, which a restore into the live application checks.
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    labels: Vec<(String, String)>,
}

fn parse_label(text: &str) -> Result<(String, String), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not KEY=VALUE"))?;
    Ok((key.to_owned(), value.to_owned()))
}

pub(crate) async fn run(config: &Config, args: BackupArgs) -> Result<ExitCode> {
    let (tenant, source) = parse_pair(&args.source)?;
    let catalog = catalog(config).await?;
    let labels = args.labels.into_iter().collect();
    if !args.wait {
        let request_id = trigger(
            config,
            &catalog,
            &tenant,
            &source,
            TriggerKind::Manual,
            labels,
        )
        .await?;
        println!("backup of {tenant}/{source} requested (request {request_id})");
        return Ok(ExitCode::SUCCESS);
    }
    let wait = TriggerWait {
        trigger: TriggerKind::Manual,
        labels,
        timeout: Duration::from_secs(args.timeout),
        json: args.json,
    };
    trigger_and_wait(config, &catalog, &tenant, &source, wait).await?;
    Ok(ExitCode::SUCCESS)
}

/// Publishes a trigger for a source that exists (refused with the catalog's
/// words otherwise, rather than a trigger the extractor would drop); returns
/// its request id.
async fn trigger(
    config: &Config,
    catalog: &Catalog,
    tenant: &Name,
    source: &Name,
    kind: TriggerKind,
    labels: BTreeMap<String, String>,
) -> Result<String> {
    catalog.source(tenant, source).await?;
    let request_id = new_request_id();
    publish_trigger(config, tenant, source, &request_id, kind, labels).await?;
    Ok(request_id)
}

/// A backup to start and follow.
pub(crate) struct TriggerWait {
    pub(crate) trigger: TriggerKind,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) timeout: Duration,
    /// Progress as JSON events rather than a bar or lines.
    pub(crate) json: bool,
}

/// Starts a backup and follows it, with progress, until it is verified.
///
/// # Errors
/// When it cannot be triggered, ends otherwise than verified, or takes
/// longer than the timeout.
pub(crate) async fn trigger_and_wait(
    config: &Config,
    catalog: &Catalog,
    tenant: &Name,
    source: &Name,
    wait: TriggerWait,
) -> Result<SnapshotRow> {
    let request_id = trigger(config, catalog, tenant, source, wait.trigger, wait.labels).await?;
    let mut progress = Progress::start(
        &format!("backup {tenant}/{source}"),
        Unit::Bytes,
        size_guess(catalog, tenant, source).await?,
        wait.json,
        Output::Default,
    );
    progress.note(&format!(
        "backup of {tenant}/{source} requested (request {request_id})"
    ));
    let waited = wait_for(
        config,
        catalog,
        (tenant, source),
        &request_id,
        wait.timeout,
        &mut progress,
    )
    .await;
    match &waited {
        Ok(row) => progress.finish(u64::try_from(row.bytes_read).unwrap_or(0), true),
        Err(_) => progress.finish(0, false),
    }
    waited
}

/// The last verified snapshot's size: this one's best guess, for an ETA.
async fn size_guess(catalog: &Catalog, tenant: &Name, source: &Name) -> Result<Option<u64>> {
    Ok(catalog
        .snapshots(Some(tenant), Some(source))
        .await?
        .into_iter()
        .find(|s| s.status == SnapshotStatus::Verified)
        .and_then(|s| u64::try_from(s.bytes_read).ok()))
}

/// The extractor's progress events for one snapshot, when NATS lets this
/// login hear them (they are a display, never needed).
async fn follow_extraction(
    config: &Config,
    tenant: &Name,
    snapshot: &SnapshotId,
) -> Option<async_nats::Subscriber> {
    let bus = vaultline_bus::Bus::connect(&config.nats.url, "vaultline-cli", &config.nats.login())
        .await
        .ok()?;
    bus.client
        .subscribe(vaultline_extractor::progress::subject(tenant, snapshot))
        .await
        .ok()
}

/// Follows the snapshot the request started until it is final; returns
/// it once verified.
async fn wait_for(
    config: &Config,
    catalog: &Catalog,
    (tenant, source): (&Name, &Name),
    request_id: &str,
    timeout: Duration,
    progress: &mut Progress,
) -> Result<SnapshotRow> {
    let deadline = Instant::now() + timeout;
    let mut last = None;
    let mut events: Option<async_nats::Subscriber> = None;
    let mut current: Option<SnapshotId> = None;
    loop {
        if let Some(row) = catalog
            .snapshot_by_request(tenant, source, request_id)
            .await?
        {
            current = Some(row.id.clone());
            if last != Some(row.status) {
                progress.note(&format!("snapshot {} {}", row.id, row.status));
                last = Some(row.status);
                if row.status == SnapshotStatus::Extracting {
                    events = follow_extraction(config, tenant, &row.id).await;
                } else {
                    events = None;
                    progress.update(u64::try_from(row.bytes_read).unwrap_or(0));
                }
            }
            if row.status.is_terminal() {
                return if row.status == SnapshotStatus::Verified {
                    progress.note(&format!(
                        "read {}, new {}, stored {}",
                        human_bytes(row.bytes_read),
                        human_bytes(row.bytes_new),
                        human_bytes(row.bytes_stored)
                    ));
                    Ok(row)
                } else {
                    bail!(
                        "snapshot {} ended {}: {}",
                        row.id,
                        row.status,
                        row.error.unwrap_or_default()
                    )
                };
            }
        }
        if Instant::now() > deadline {
            bail!(
                "gave up waiting after {}s (is `vaultline serve` running?)",
                timeout.as_secs()
            );
        }
        match events.as_mut() {
            Some(events) => {
                // Waiting on the next event paces the loop like the sleep below.
                if let Ok(Some(message)) =
                    tokio::time::timeout(Duration::from_millis(50), events.next()).await
                    && let Ok(event) = serde_json::from_slice::<ExtractionProgress>(&message.payload)
                    // Anyone may publish there: believe only what names this snapshot.
                    && current.as_ref() == Some(&event.snapshot)
                    && &event.tenant == tenant
                {
                    progress.update(event.bytes_read);
                }
            }
            None => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}
