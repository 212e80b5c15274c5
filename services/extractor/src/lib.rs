//! extractor — consumes *backup requested*; runs the source connector,
//! content-defined chunking, keyed chunk ids and the dedup lookup; stages only
//! new data; emits *data extracted* per batch and *snapshot extracted*.

mod basebackup;
mod draft;
mod extraction;
mod files;
mod files_cache;
mod metadata;
mod postgres;
pub mod progress;
mod rows;
mod stream;

use std::sync::Arc;
use vaultline_catalog::SnapshotStatus;
use vaultline_runtime::{Cx, Deps, ErrorType, Outcome, Outgoing, Stage, StageError};
use vaultline_types::{
    BackupRequested, DataExtracted, Name, PostgresMode, SCHEDULED_REQUEST_PREFIX,
    SnapshotExtracted, SnapshotId, SnapshotStarted, SourceConfig, StageName, TriggerKind,
};

/// Default bytes of new data per batch (and so per pack).
pub const DEFAULT_BATCH_BYTES: u64 = 16 << 20;

/// The extractor stage.
pub struct Extractor {
    deps: Arc<Deps>,
    batch_bytes: u64,
    staging_recipient: vaultline_format::keys::Recipient,
}

impl Stage for Extractor {
    const NAME: StageName = StageName::Extractor;
    type Input = BackupRequested;

    async fn new(deps: Arc<Deps>) -> Result<Self, StageError> {
        let batch_bytes = deps
            .config
            .stage(Self::NAME)
            .batch_bytes
            .unwrap_or(DEFAULT_BATCH_BYTES);
        let staging_recipient = vaultline_runtime::deps::load_staging_recipient(&deps.config)
            .map_err(|e| StageError::permanent(ErrorType::Config, e))?;
        Ok(Extractor {
            deps,
            batch_bytes,
            staging_recipient,
        })
    }

    async fn handle(&self, cx: &Cx, request: BackupRequested) -> Outcome {
        let catalog = &self.deps.catalog;
        let (tenant, source) = (request.tenant_name().clone(), request.source_name().clone());
        self.check_reserved(&request).await?;
        request.check_labels().map_err(|why| {
            StageError::rejected(
                ErrorType::Decode,
                format!("a trigger for {tenant}/{source} with unusable labels: {why}"),
            )
        })?;
        let source_row = catalog.source(&tenant, &source).await?;
        let key = catalog.active_chunk_key(&tenant).await?;
        // The snapshot id follows from the trigger, so a redelivered trigger
        // resumes the same snapshot instead of starting a second one.
        let trigger_key = match &request.request_id {
            Some(id) => format!("request:{id}"),
            None => cx.input_key().to_owned(),
        };
        let snapshot = SnapshotId::derive(cx.published, &trigger_key);
        cx.set_snapshot(tenant.clone(), Some(source.clone()), snapshot.clone());
        let row = catalog
            .begin_snapshot(&snapshot, &request, &key.key_id)
            .await?;
        match row.status {
            SnapshotStatus::Extracting => {}
            // Extraction finished but our ack was lost: say so again (the
            // output's id is stable, so the stream drops it if it was seen).
            SnapshotStatus::Extracted if cx.delivered > 1 => {
                let summary = draft::Summary {
                    batches: row.batches_total.unwrap_or(0) as u32,
                    files: row.files as u64,
                    bytes_read: row.bytes_read as u64,
                    bytes_new: row.bytes_new as u64,
                    source_digest: row.source_digest.clone().unwrap_or_default(),
                    tables: vec![],
                    base: None,
                };
                let attempt = row.attempt.unwrap_or(1) as u32;
                return Ok(vec![extracted(tenant, source, snapshot, attempt, &summary)]);
            }
            _ => return Ok(vec![]),
        }
        cx.emit(Outgoing::event(&SnapshotStarted {
            tenant: tenant.clone(),
            source: source.clone(),
            snapshot: snapshot.clone(),
            trigger: request.trigger,
        }))
        .await?;

        let attempt = u32::try_from(cx.delivered).unwrap_or(1);
        let config = source_row.config().map_err(|e| {
            StageError::permanent(ErrorType::Source, format!("source {tenant}/{source}: {e}"))
        })?;
        let job = draft::Job {
            deps: self.deps.clone(),
            tenant: tenant.clone(),
            source: source.clone(),
            snapshot: snapshot.clone(),
            attempt,
            key_id: key.key_id.clone(),
            chunk_key: key.chunk_key,
            staging_recipient: self.staging_recipient.clone(),
            batch_bytes: self.batch_bytes,
            created: cx.published.unix_timestamp(),
            source_config: config.clone(),
            read: Default::default(),
        };
        let _progress = progress::Publisher::start(
            self.deps.bus.client.clone(),
            tenant.clone(),
            snapshot.clone(),
            job.read.clone(),
        );
        let summary = match config {
            SourceConfig::Files(config) => files::extract(job, config, cx).await?,
            SourceConfig::Postgres(config) if config.mode == PostgresMode::Physical => {
                let credential = self.credential(&tenant, &source).await?;
                let label = format!("vaultline {tenant}/{source} {snapshot}");
                let program = basebackup::program(&config, credential, &label).await?;
                stream::extract(job, program, cx).await?
            }
            SourceConfig::Postgres(config) => {
                let credential = self.credential(&tenant, &source).await?;
                let program = postgres::program(&config, credential).await?;
                stream::extract(job, program, cx).await?
            }
            SourceConfig::Mariadb(config) => {
                let credential = self.credential(&tenant, &source).await?;
                stream::extract(job, stream::mariadb_program(&config, credential)?, cx).await?
            }
            SourceConfig::Command(config) => {
                let credential = self.credential(&tenant, &source).await?;
                stream::extract(job, stream::command_program(&config, credential)?, cx).await?
            }
            SourceConfig::Sftp(config) => {
                let credential = self.credential(&tenant, &source).await?;
                files::remote::extract(job, config, credential, cx).await?
            }
        };
        if let Some(base) = &summary.base {
            let signed = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
            catalog
                .record_base_backup(
                    &tenant,
                    &source,
                    &snapshot,
                    i32::try_from(base.timeline).unwrap_or(i32::MAX),
                    signed(base.start.0),
                    signed(base.end.0),
                    signed(base.segment_size),
                    signed(base.next_xid),
                    i32::try_from(base.server_version).unwrap_or(i32::MAX),
                )
                .await?;
        }
        let tables = (!summary.tables.is_empty())
            .then(|| serde_json::to_value(&summary.tables))
            .transpose()
            .map_err(|e| StageError::permanent(ErrorType::Source, e.to_string()))?;
        catalog
            .set_extracted(
                &tenant,
                &snapshot,
                attempt,
                summary.batches,
                summary.files,
                summary.bytes_read,
                summary.bytes_new,
                &summary.source_digest,
                tables.as_ref(),
            )
            .await?;
        tracing::info!(
            files = summary.files,
            bytes_read = summary.bytes_read,
            bytes_new = summary.bytes_new,
            batches = summary.batches,
            "Extracted snapshot."
        );
        let labels = [
            ("tenant", tenant.to_string()),
            ("source", source.to_string()),
        ];
        vaultline_runtime::metrics::count(
            vaultline_runtime::metrics::MetricName::BytesRead,
            &labels,
            summary.bytes_read,
        );
        vaultline_runtime::metrics::count(
            vaultline_runtime::metrics::MetricName::BytesNew,
            &labels,
            summary.bytes_new,
        );
        Ok(vec![extracted(tenant, source, snapshot, attempt, &summary)])
    }
}

impl Extractor {
    /// Only the scheduler may say a trigger is scheduled, and only with the
    /// request id it recorded when it claimed the source's last slot.
    async fn check_reserved(&self, request: &BackupRequested) -> Result<(), StageError> {
        let id = request.request_id.as_deref();
        let claims_scheduled = request.trigger == TriggerKind::Scheduled
            || id.is_some_and(|id| id.starts_with(SCHEDULED_REQUEST_PREFIX));
        if !claims_scheduled {
            return Ok(());
        }
        let (tenant, source) = (request.tenant_name(), request.source_name());
        let recorded = self.deps.catalog.scheduled_request(tenant, source).await?;
        if id.is_some() && recorded.as_deref() == id {
            return Ok(());
        }
        Err(StageError::rejected(
            ErrorType::Forged,
            format!(
                "a scheduled trigger for {tenant}/{source} with request id {id:?}, which the scheduler did not record; \
                 {SCHEDULED_REQUEST_PREFIX} ids and the scheduled trigger kind are the scheduler's alone"
            ),
        ))
    }

    /// Opens a source's stored credential, just before its program runs.
    /// The plaintext lives in this call's stack and the child's environment or
    /// option file only.
    async fn credential(
        &self,
        tenant: &Name,
        source: &Name,
    ) -> Result<Option<Vec<u8>>, StageError> {
        let Some(sealed) = self.deps.catalog.source_credential(tenant, source).await? else {
            return Ok(None);
        };
        let key =
            vaultline_runtime::deps::load_credentials_key(&self.deps.config).map_err(|e| {
                StageError::permanent(
                    ErrorType::Source,
                    format!("source {tenant}/{source} has a stored credential, but {e}"),
                )
            })?;
        key.open(&sealed).map(Some).map_err(|_| {
            StageError::permanent(
                ErrorType::Source,
                format!(
                    "the stored credential of source {tenant}/{source} does not open with this credentials key"
                ),
            )
        })
    }
}

/// The end-of-extraction event, from a fresh summary or one rebuilt from the catalog.
fn extracted(
    tenant: Name,
    source: Name,
    snapshot: SnapshotId,
    attempt: u32,
    summary: &draft::Summary,
) -> Outgoing {
    Outgoing::event(&SnapshotExtracted {
        manifest: vaultline_types::staging_key::manifest_draft(&tenant, &snapshot, attempt),
        tenant,
        source,
        snapshot,
        attempt,
        batches: summary.batches,
        files: summary.files,
        bytes_read: summary.bytes_read,
        bytes_new: summary.bytes_new,
    })
}

/// Emits a finished batch; used by the source connectors.
pub(crate) fn batch_event(
    job: &draft::Job,
    batch: u32,
    staged: String,
    chunks: u32,
    bytes: u64,
) -> Outgoing {
    Outgoing::event(&DataExtracted {
        tenant: job.tenant.clone(),
        source: job.source.clone(),
        snapshot: job.snapshot.clone(),
        attempt: job.attempt,
        batch,
        key_id: job.key_id.clone(),
        staged,
        chunks,
        bytes,
    })
}
