//! Poison messages and failing stages: dead letters with reasons, retries,
//! and snapshots marked failed, while the services keep working.

use crate::harness::{Env, assert_verified, input_subjects};
use anyhow::Result;
use futures::StreamExt;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use vaultline_catalog::SnapshotStatus;
use vaultline_runtime::{Cx, Deps, Outcome, Stage, StageError};
use vaultline_types::{DataExtracted, StageName, headers};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn garbage_on_every_input_subject_is_dead_lettered_and_the_next_snapshot_succeeds()
-> Result<()> {
    let (env, _tree) = Env::with_small_source().await?;
    let node = env.node().await?;
    let client = env.nats_as("admin").await?;
    let mut dead = client.subscribe("vaultline.dlq.>").await?;
    client.flush().await?;

    let subjects = input_subjects();
    for (_, subject) in &subjects {
        client
            .publish(
                *subject,
                bytes::Bytes::from_static(b"\xc1\xff not a message {"),
            )
            .await?;
    }
    client.flush().await?;
    let mut seen = BTreeSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while seen.len() < subjects.len() {
        let message = tokio::time::timeout_at(deadline, dead.next())
            .await?
            .expect("subscription open");
        let headers = message.headers.expect("dead letters carry headers");
        let error = headers
            .get(headers::ERROR)
            .map(|v| v.as_str().to_owned())
            .unwrap_or_default();
        let original = headers
            .get(headers::ORIGINAL_SUBJECT)
            .map(|v| v.as_str().to_owned())
            .unwrap_or_default();
        assert!(
            !error.is_empty(),
            "dead letter from {original} has no reason"
        );
        assert_eq!(
            headers.get(headers::ERROR_TYPE).map(|v| v.as_str()),
            Some("decode")
        );
        assert_eq!(
            message.payload.as_ref(),
            b"\xc1\xff not a message {",
            "the payload is kept for inspection"
        );
        seen.insert(original);
    }
    let expected: BTreeSet<String> = subjects.iter().map(|(_, s)| s.to_string()).collect();
    assert_eq!(seen, expected);

    env.cli(&["backup", "acme/docs", "--wait", "--timeout", "120"])
        .await?;
    assert_verified(&env.wait_final(1).await?);
    node.shutdown().await;
    Ok(())
}

/// The real packager behind a switch that fails the next N deliveries transiently.
struct Flaky {
    inner: vaultline_packager::Packager,
    failures_left: Arc<AtomicU32>,
}

impl Stage for Flaky {
    const NAME: StageName = StageName::Packager;
    type Input = DataExtracted;

    async fn new(deps: Arc<Deps>) -> Result<Self, StageError> {
        Ok(Flaky {
            inner: vaultline_packager::Packager::new(deps).await?,
            failures_left: Arc::default(),
        })
    }

    async fn handle(&self, cx: &Cx, input: DataExtracted) -> Outcome {
        let took = self
            .failures_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if took.is_ok() {
            return Err(StageError::transient(
                vaultline_runtime::ErrorType::Storage,
                "injected: disk briefly unavailable",
            ));
        }
        self.inner.handle(cx, input).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transient_failures_are_retried_and_exhausted_ones_fail_the_snapshot() -> Result<()> {
    let (env, tree) = Env::with_small_source().await?;
    let mut node = vaultline_runtime::Node::start(env.config(), "test").await?;
    let flaky = Flaky::new(node.deps_for(StageName::Packager).await?).await?;
    let failures = flaky.failures_left.clone();
    node.spawn_stage(flaky).await?;
    node.spawn::<vaultline_extractor::Extractor>().await?;
    node.spawn::<vaultline_uploader::Uploader>().await?;
    node.spawn::<vaultline_verifier::Verifier>().await?;
    node.spawn::<vaultline_auditor::Auditor>().await?;

    // Fails twice, succeeds on the third delivery (max_deliver is 3 in the test config).
    failures.store(2, Ordering::SeqCst);
    env.cli(&["backup", "acme/docs", "--wait", "--timeout", "120"])
        .await?;
    assert_verified(&env.wait_final(1).await?);
    assert_eq!(failures.load(Ordering::SeqCst), 0);

    // Always failing: dead-lettered after max_deliver, snapshot failed with the error.
    let client = env.nats_as("operator").await?;
    let mut dead = client.subscribe("vaultline.dlq.packager").await?;
    client.flush().await?;
    failures.store(u32::MAX, Ordering::SeqCst);
    // New data, so the packager has work (an unchanged tree never reaches it).
    std::fs::write(
        tree.join("new.txt"),
        "fresh bytes the repository has not seen\n",
    )?;
    let err = env
        .cli(&["backup", "acme/docs", "--wait", "--timeout", "120"])
        .await
        .expect_err("must fail");
    assert!(
        format!("{err:#}").contains("disk briefly unavailable"),
        "{err:#}"
    );
    let row = env.wait_final(2).await?;
    assert_eq!(row.status, SnapshotStatus::Failed);
    assert!(
        row.error
            .as_deref()
            .unwrap_or("")
            .contains("packager failed: injected"),
        "{:?}",
        row.error
    );
    let letter = tokio::time::timeout(Duration::from_secs(10), dead.next())
        .await?
        .expect("a dead letter");
    let headers = letter.headers.expect("headers");
    assert_eq!(
        headers.get(headers::ERROR_TYPE).map(|v| v.as_str()),
        Some("storage")
    );
    assert_eq!(
        headers.get(headers::SNAPSHOT).map(|v| v.as_str()),
        Some(row.id.as_str())
    );
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_vanished_source_fails_the_snapshot_with_a_clear_error() -> Result<()> {
    let (env, tree) = Env::with_small_source().await?;
    let node = env.node().await?;
    std::fs::remove_dir_all(&tree)?;
    let err = env
        .cli(&["backup", "acme/docs", "--wait", "--timeout", "60"])
        .await
        .expect_err("must fail");
    let text = format!("{err:#}");
    assert!(
        text.contains("extractor failed") && text.contains(tree.to_str().unwrap()),
        "{text}"
    );
    let row = env.wait_final(1).await?;
    assert_eq!(row.status, SnapshotStatus::Failed);
    // Nothing half-made is left in staging for that snapshot.
    let staged = env.path("staging").join("acme").join(row.id.as_str());
    assert!(!staged.exists() || std::fs::read_dir(&staged)?.next().is_none());
    node.shutdown().await;
    Ok(())
}

/// A packager that fails every delivery, and tells the test when the last
/// one (the test config's max_deliver, 3) begins.
struct FailsToTheEnd {
    last_begun: Arc<tokio::sync::Notify>,
}

impl Stage for FailsToTheEnd {
    const NAME: StageName = StageName::Packager;
    type Input = DataExtracted;

    async fn new(_deps: Arc<Deps>) -> Result<Self, StageError> {
        Ok(FailsToTheEnd {
            last_begun: Arc::default(),
        })
    }

    async fn handle(&self, cx: &Cx, _input: DataExtracted) -> Outcome {
        if cx.delivered >= 3 {
            self.last_begun.notify_one();
            // Time for the test to take NATS away before the stage gives up.
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        Err(StageError::transient(
            vaultline_runtime::ErrorType::Storage,
            "injected: the disk is gone for good",
        ))
    }
}

/// The server never delivers a message again after its last delivery, so a
/// stage giving up on it while NATS is away must not count on a nak: it
/// keeps trying to publish the dead letter and the snapshot's failure until
/// NATS is back (a leader election, a restart), instead of leaving the
/// snapshot in flight until the reaper's deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_message_given_up_while_nats_is_away_is_dead_lettered_when_it_is_back() -> Result<()> {
    let (mut env, _tree) = Env::with_small_source().await?;
    let mut node = vaultline_runtime::Node::start(env.config(), "test").await?;
    let failing = FailsToTheEnd::new(node.deps_for(StageName::Packager).await?).await?;
    let last_begun = failing.last_begun.clone();
    node.spawn_stage(failing).await?;
    node.spawn::<vaultline_extractor::Extractor>().await?;
    node.spawn::<vaultline_auditor::Auditor>().await?;

    env.cli(&["backup", "acme/docs"]).await?;
    tokio::time::timeout(Duration::from_secs(60), last_begun.notified()).await?;
    env.nats.stop();
    // Longer than a publish waits for its ack, so the first tries fail.
    tokio::time::sleep(Duration::from_secs(8)).await;
    env.nats.restart()?;

    let row = env.wait_final(1).await?;
    assert_eq!(row.status, SnapshotStatus::Failed);
    assert!(
        row.error
            .as_deref()
            .unwrap_or("")
            .contains("the disk is gone for good"),
        "{:?}",
        row.error
    );
    let js = async_nats::jetstream::new(env.nats_as("admin").await?);
    let letter = js
        .get_stream("VAULTLINE")
        .await?
        .get_last_raw_message_by_subject("vaultline.dlq.packager")
        .await?;
    let kept = letter.headers;
    assert!(
        kept.get(headers::ERROR)
            .is_some_and(|e| e.as_str().contains("the disk is gone for good")),
        "{kept:?}"
    );
    node.shutdown().await;
    Ok(())
}
