//! How every extraction runs and ends, whatever the source: the source is
//! read on a blocking thread while the batches it fills are emitted here,
//! and the draft ends with the same footer, commit and summary.

use crate::draft::{Batches, Draft, Job, Summary};
use tokio::sync::mpsc;
use vaultline_format::manifest::{Footer, Record, SourceDigest, TableRows};
use vaultline_runtime::{Cx, Outgoing, StageError};

/// Runs `read` on a blocking thread and emits the batches it sends until
/// it returns.
pub(crate) async fn on_blocking_thread<F>(cx: &Cx, read: F) -> Result<Summary, StageError>
where
    F: FnOnce(&tokio::runtime::Handle, mpsc::Sender<Outgoing>) -> Result<Summary, StageError>
        + Send
        + 'static,
{
    let (tx, mut rx) = mpsc::channel::<Outgoing>(2);
    let runtime = tokio::runtime::Handle::current();
    let worker = tokio::task::spawn_blocking(move || read(&runtime, tx));
    while let Some(out) = rx.recv().await {
        // On failure we return, dropping `rx`: the reader's next send fails and it stops.
        cx.emit(out).await?;
    }
    worker.await?
}

/// What a source read, for the footer and the summary.
pub(crate) struct Totals {
    pub(crate) entries: u64,
    pub(crate) files: u64,
    pub(crate) bytes_read: u64,
    pub(crate) digest: SourceDigest,
    pub(crate) tables: Vec<TableRows>,
}

/// Stages the last batch, ends the draft with its footer and commits it.
/// The caller commits its change cache after this: a cache must never name
/// chunks of an extraction that did not finish.
pub(crate) fn finish(
    job: &Job,
    mut draft: Draft,
    batches: Batches<'_>,
    totals: Totals,
) -> Result<Summary, StageError> {
    let Totals {
        entries,
        files,
        bytes_read,
        digest,
        tables,
    } = totals;
    let (batch_count, bytes_new) = batches.finish()?;
    let source_digest = digest.finish();
    draft.write(&Record::Footer(Footer {
        entries,
        bytes: bytes_read,
        source_digest: source_digest.clone(),
        packs: vec![],
        tables: tables.clone(),
    }))?;
    draft.commit(job)?;
    Ok(Summary {
        batches: batch_count,
        files,
        bytes_read,
        bytes_new,
        source_digest,
        tables,
        base: None,
    })
}
