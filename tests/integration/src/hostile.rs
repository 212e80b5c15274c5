//! Every bus message is hostile input: forged packs, failures named in
//! headers, staging keys of other tenants and request ids that are not
//! the publisher's are dead-lettered, and the snapshots they aim at are
//! unharmed.

use crate::harness::{Env, assert_verified, node_with_slow};
use anyhow::{Context, Result};
use futures::StreamExt;
use std::time::Duration;
use vaultline_catalog::SnapshotStatus;
use vaultline_storage::ObjectKey;
use vaultline_types::staging_key::StagedBatch;
use vaultline_types::{
    BackupRequested, Message, Name, PackStaged, SnapshotFailed, StageName, TriggerKind, headers,
};

/// Publishes `event` on its own subject as a stage would, with `extra`
/// headers on top (a forger's).
pub(crate) async fn publish_forged<M: Message>(
    client: &async_nats::Client,
    event: &M,
    extra: &[(&'static str, &str)],
) -> Result<()> {
    let js = async_nats::jetstream::new(client.clone());
    let mut map = async_nats::HeaderMap::new();
    map.insert(headers::CONTENT_TYPE, vaultline_types::CONTENT_TYPE_MSGPACK);
    for (name, value) in extra {
        map.insert(*name, *value);
    }
    js.publish_with_headers(event.subject(), map, vaultline_types::encode(event).into())
        .await?
        .await?;
    Ok(())
}

/// The next dead letter of `stage`: its error type and reason.
pub(crate) async fn next_dead_letter(
    dead: &mut async_nats::Subscriber,
    stage: StageName,
) -> Result<(String, String)> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let message = tokio::time::timeout_at(deadline, dead.next())
            .await
            .with_context(|| format!("no dead letter from the {stage} within 30 s"))?
            .context("subscription closed")?;
        if message.subject.as_str() != vaultline_types::dead_letter_subject(stage) {
            continue;
        }
        let h = message.headers.context("dead letters carry headers")?;
        let get = |name: &str| {
            h.get(name)
                .map(|v| v.as_str().to_owned())
                .unwrap_or_default()
        };
        return Ok((get(headers::ERROR_TYPE), get(headers::ERROR)));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_forged_pack_never_replaces_a_stored_one() -> Result<()> {
    let (env, _tree) = Env::with_small_source().await?;
    let node = env.node().await?;
    env.cli(&["backup", "acme/docs", "--wait"]).await?;
    let old = env.wait_final(1).await?;
    assert_verified(&old);
    let tenant = Name::new("acme")?;
    let (pack, size) = env.catalog.snapshot_packs(&tenant, &old.id).await?[0];
    let stored = env.path("repository").join(ObjectKey::pack(&tenant, &pack));
    let genuine = std::fs::read(&stored)?;

    // The forger is a compromised packager: pack.staged is its to publish.
    let forger = env.nats_as("packager").await?;
    let client = env.nats_as("operator").await?;
    let mut dead = client.subscribe("vaultline.dlq.>").await?;
    client.flush().await?;
    // Other bytes under the stored pack's id, staged where the uploader
    // looks for them (the attacker can write to staging).
    let staging = &node.deps.staging;
    let forge = |attempt: u32, bytes: Vec<u8>| {
        let (tenant, old) = (&tenant, &old);
        async move {
            let batch = StagedBatch {
                tenant,
                snapshot: &old.id,
                attempt,
                batch: 0,
            };
            for (key, bytes) in [
                (batch.pack(&pack), bytes.clone()),
                (batch.pack_index(&pack), vec![0x90]), // MessagePack's empty list
            ] {
                let temp = staging.temp_path(&key)?;
                std::fs::write(&temp, &bytes)?;
                staging.commit(&temp, &key).await?;
            }
            let event = PackStaged {
                tenant: tenant.clone(),
                source: Name::new("docs")?,
                snapshot: old.id.clone(),
                attempt,
                batch: 0,
                pack,
                staged: batch.pack(&pack),
                raw_staged: batch.raw(),
                size: bytes.len() as u64,
            };
            anyhow::Ok(event)
        }
    };
    let mut other = genuine.clone();
    other[genuine.len() / 2] ^= 0xff;
    let forged = forge(90, other).await?;
    publish_forged(&forger, &forged, &[]).await?;
    let (error_type, reason) = next_dead_letter(&mut dead, StageName::Uploader).await?;
    assert_eq!(error_type, "forged", "{reason}");
    assert!(reason.contains("hash to"), "{reason}");

    // A message naming another batch's staging key is refused before
    // anything is read.
    let mut elsewhere = forge(91, genuine.clone()).await?;
    elsewhere.staged = format!("other/{}", elsewhere.staged);
    publish_forged(&forger, &elsewhere, &[]).await?;
    let (error_type, reason) = next_dead_letter(&mut dead, StageName::Uploader).await?;
    assert_eq!(error_type, "forged", "{reason}");
    assert!(reason.contains("staging key"), "{reason}");

    // Genuine bytes, but the stored object was damaged meanwhile: an alarm,
    // and the damaged object is left for a person, not overwritten.
    let mut damaged = genuine.clone();
    damaged.truncate(genuine.len() - 1);
    std::fs::write(&stored, &damaged)?;
    let mut alarms = client.subscribe("vaultline.object.conflict.acme").await?;
    client.flush().await?;
    let replay = forge(92, genuine.clone()).await?;
    publish_forged(&forger, &replay, &[]).await?;
    let (error_type, reason) = next_dead_letter(&mut dead, StageName::Uploader).await?;
    assert_eq!(error_type, "conflict", "{reason}");
    tokio::time::timeout(Duration::from_secs(10), alarms.next())
        .await?
        .context("an object.conflict alarm")?;
    assert_eq!(std::fs::read(&stored)?, damaged, "never overwritten");
    let metrics = vaultline_testkit::http_get(node.admin, "/metrics").await?.1;
    assert!(
        metrics.contains("vaultline_repository_conflicts_total{tenant=\"acme\"} 1"),
        "{metrics}"
    );

    // Put right, the old snapshot passes a full check: the forgeries
    // changed nothing, and failed nothing.
    std::fs::write(&stored, &genuine)?;
    assert_eq!(genuine.len() as u64, size);
    env.cli(&["verify", old.id.as_str(), "--full"]).await?;
    assert_verified(&env.catalog.snapshot(&tenant, &old.id).await?);
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failure_forged_across_tenants_fails_nothing() -> Result<()> {
    let (env, _tree) = Env::with_small_source().await?;
    env.cli(&["tenant", "create", "bravo"]).await?;
    // The uploader dawdles, so acme's snapshot is still in flight when the
    // forgery arrives.
    let node = node_with_slow::<vaultline_uploader::Uploader>(
        &env,
        Duration::from_secs(3),
        Duration::ZERO,
        false,
    )
    .await?;
    // Any stage may publish snapshot.failed: the forger is a compromised extractor.
    let forger = env.nats_as("extractor").await?;
    let client = env.nats_as("operator").await?;
    let mut dead = client.subscribe("vaultline.dlq.>").await?;
    client.flush().await?;
    env.cli(&["backup", "acme/docs"]).await?;
    let (acme, bravo) = (Name::new("acme")?, Name::new("bravo")?);
    let victim = loop {
        if let Some(row) = env
            .catalog
            .snapshots(Some(&acme), None)
            .await?
            .into_iter()
            .next()
        {
            break row;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // On bravo's subject, with bravo in the payload (so the subject check
    // passes), and headers that name acme's snapshot.
    let forged = SnapshotFailed {
        tenant: bravo.clone(),
        source: None,
        snapshot: victim.id.clone(),
        stage: StageName::Packager,
        error_type: "storage".into(),
        error: "disk on fire".into(),
    };
    publish_forged(
        &forger,
        &forged,
        &[
            (headers::TENANT, "acme"),
            (headers::SNAPSHOT, victim.id.as_str()),
        ],
    )
    .await?;
    let (error_type, reason) = next_dead_letter(&mut dead, StageName::Auditor).await?;
    assert_eq!(error_type, "forged", "{reason}");
    assert!(reason.contains("Vaultline-Tenant"), "{reason}");
    let row = env.wait_final(1).await?;
    assert_eq!(row.id, victim.id);
    assert_verified(&row);
    let trail: i64 = env
        .sql()
        .await?
        .query_one(
            "SELECT count(*) FROM audit_events WHERE subject = 'vaultline.dlq.auditor'",
            &[],
        )
        .await?
        .get(0);
    assert!(trail >= 1, "the forgery is in the trail");
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stolen_request_id_suppresses_nothing() -> Result<()> {
    let (env, _tree) = Env::with_small_source().await?;
    env.cli(&["tenant", "create", "bravo"]).await?;
    let other_tree = env.path("bravo-tree");
    std::fs::create_dir_all(&other_tree)?;
    std::fs::write(other_tree.join("b.txt"), b"bravo")?;
    env.cli(&[
        "source",
        "add",
        "bravo/docs",
        "--path",
        other_tree.to_str().unwrap(),
    ])
    .await?;
    let mut node = vaultline::start_node(
        env.config(),
        &crate::harness::all_but(&[StageName::Scheduler]),
    )
    .await?;
    let client = env.nats_as("operator").await?;
    let mut dead = client.subscribe("vaultline.dlq.>").await?;
    client.flush().await?;

    // Before acme's slot fires, bravo publishes what used to be its
    // trigger's id (tenant, source and slot were all a forger needed), as
    // both request id and Nats-Msg-Id, on its own subject.
    env.cli(&["schedule", "add", "acme/docs", "--every", "10s"])
        .await?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let slot = (now / 10 + 1) * 10;
    let stolen = format!("schedule-acme-docs-{slot}");
    let squat = BackupRequested {
        tenant: Some(Name::new("bravo")?),
        source: Some(Name::new("docs")?),
        request_id: Some(stolen.clone()),
        trigger: TriggerKind::Scheduled,
        ..Default::default()
    };
    publish_forged(&client, &squat, &[(headers::MSG_ID, stolen.as_str())]).await?;
    let (error_type, reason) = next_dead_letter(&mut dead, StageName::Extractor).await?;
    assert_eq!(error_type, "forged", "{reason}");
    assert!(reason.contains("did not record"), "{reason}");

    // acme's slot fires all the same and its snapshot is verified.
    let scheduler = node.deps_for(StageName::Scheduler).await?;
    assert_eq!(vaultline_scheduler::tick(&scheduler, slot).await?, 1);
    let row = env.wait_final(1).await?;
    assert_verified(&row);
    assert_eq!(row.trigger, "scheduled");
    let (acme, bravo, docs) = (Name::new("acme")?, Name::new("bravo")?, Name::new("docs")?);
    let fired = env
        .catalog
        .scheduled_request(&acme, &docs)
        .await?
        .context("a scheduled request id")?;
    assert!(fired.starts_with(&format!("{stolen}-")), "{fired}");

    // Once it is known, bravo replays acme's real id as its own: refused,
    // and the id still leads to acme's snapshot alone.
    let replay = BackupRequested {
        request_id: Some(fired.clone()),
        trigger: TriggerKind::Manual,
        ..squat
    };
    publish_forged(&client, &replay, &[]).await?;
    let (error_type, reason) = next_dead_letter(&mut dead, StageName::Extractor).await?;
    assert_eq!(error_type, "forged", "{reason}");
    let ours = env
        .catalog
        .snapshot_by_request(&acme, &docs, &fired)
        .await?;
    assert_eq!(
        ours.map(|r| (r.id, r.status)),
        Some((row.id, SnapshotStatus::Verified))
    );
    assert!(
        env.catalog
            .snapshot_by_request(&bravo, &docs, &fired)
            .await?
            .is_none()
    );

    // An ordinary request id is each source's own: the same one from both
    // tenants makes two snapshots.
    for tenant in ["acme", "bravo"] {
        let request = BackupRequested {
            tenant: Some(Name::new(tenant)?),
            source: Some(docs.clone()),
            request_id: Some("nightly-42".into()),
            trigger: TriggerKind::External,
            ..Default::default()
        };
        publish_forged(&client, &request, &[]).await?;
    }
    for tenant in [&acme, &bravo] {
        assert_verified(&env.wait_request(tenant, &docs, "nightly-42").await?);
    }
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_child_process_sees_none_of_the_workers_secrets() -> Result<()> {
    let env = Env::new().await?;
    env.cli(&["tenant", "create", "acme"]).await?;
    let token = env.path("token");
    std::fs::write(&token, "declared-secret")?;
    let dumped = env.path("env-at-restore");
    env.cli(&[
        "source",
        "add",
        "acme/env",
        "--type",
        "command",
        "--command",
        "env",
        "--restore-command",
        "cat >/dev/null",
        "--secret-file",
        token.to_str().unwrap(),
        "--secret-env",
        "VAULT_TOKEN",
    ])
    .await?;
    // The extractor runs as its own process, its secrets in its environment
    // as an operator would hand them over (the catalog password in its URL:
    // trust authentication lets any password through).
    let kek = std::fs::read_to_string(env.path("kek.txt"))?;
    let credentials_key = std::fs::read_to_string(env.path("credentials-key.txt"))?;
    let catalog_url = env.config().catalog.url.replacen(
        "postgres://postgres@",
        "postgres://postgres:catalog-pw-7@",
        1,
    );
    assert!(catalog_url.contains("catalog-pw-7"), "{catalog_url}");
    let secrets = [
        ("VAULTLINE_KEK", kek.trim().to_owned()),
        (
            "VAULTLINE_CREDENTIALS_KEY",
            credentials_key.trim().to_owned(),
        ),
        ("AWS_SECRET_ACCESS_KEY", "aws-secret-3".to_owned()),
        ("VAULTLINE_CATALOG__URL", catalog_url),
    ];
    let extractor = crate::harness::Process::start_with(&env, "vaultline-extractor", &secrets)?;
    let node = vaultline::start_node(
        env.config(),
        &crate::harness::all_but(&[StageName::Extractor, StageName::Scheduler]),
    )
    .await?;
    env.cli(&["backup", "acme/env", "--wait", "--timeout", "120"])
        .await?;
    drop(extractor);
    let row = env.wait_final_of("env", 1).await?;
    assert_verified(&row);
    let restored = env.restore_to(&row.id, "restored").await?;
    let seen = std::fs::read_to_string(restored.join("stdout"))?;
    assert!(seen.contains("VAULT_TOKEN=declared-secret"), "{seen}");
    for (name, value) in &secrets {
        assert!(
            !seen.contains(value.as_str()),
            "{name} reached the child:\n{seen}"
        );
        assert!(
            !seen.contains(&format!("{name}=")),
            "{name} reached the child"
        );
    }
    assert!(!seen.contains("catalog-pw-7"));

    // The restore command, run by the CLI with the KEK in its environment,
    // gets none of it either.
    let into = format!("cat >/dev/null; env > {}", dumped.display());
    let (ok, _, stderr) = env
        .run_cli(
            &["restore", row.id.as_str(), "--into-command", &into],
            &[("VAULTLINE_KEK", kek.trim())],
        )
        .await?;
    assert!(ok, "{stderr}");
    let at_restore = std::fs::read_to_string(&dumped)?;
    assert!(!at_restore.contains(kek.trim()), "{at_restore}");
    assert!(at_restore.contains("PATH="), "{at_restore}");
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn staged_batches_hold_no_plain_bytes() -> Result<()> {
    let env = Env::new().await?;
    let tree = env.path("tree");
    std::fs::create_dir_all(&tree)?;
    let pattern = crate::harness::mixed_bytes(1 << 20, 0x5eed);
    std::fs::write(tree.join("pattern.bin"), &pattern)?;
    env.tenant_with_source(&tree).await?;
    // The packager waits, so the batch sits in staging while we read it.
    let node = node_with_slow::<vaultline_packager::Packager>(
        &env,
        Duration::from_secs(4),
        Duration::ZERO,
        false,
    )
    .await?;
    env.cli(&["backup", "acme/docs"]).await?;
    let staging = env.path("staging");
    let needles: Vec<&[u8]> = [0, 300_000, 700_000, (1 << 20) - 64]
        .iter()
        .map(|&at| &pattern[at..at + 64])
        .collect();
    let mut batches = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while batches == 0 {
        anyhow::ensure!(std::time::Instant::now() < deadline, "nothing was staged");
        for entry in walkdir::WalkDir::new(&staging) {
            let entry = entry?;
            if !entry.file_type().is_file() {
                continue;
            }
            let Ok(bytes) = std::fs::read(entry.path()) else {
                continue; // committed or swept meanwhile
            };
            let name = entry.file_name().to_string_lossy().into_owned();
            batches += usize::from(name.starts_with("batch-") && bytes.len() > 1 << 20);
            for needle in &needles {
                assert!(
                    !bytes.windows(64).any(|w| w == *needle),
                    "{} holds plain bytes of the file",
                    entry.path().display()
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // And the backup goes through, the bytes intact.
    let row = env.wait_final(1).await?;
    assert_verified(&row);
    let restored = env.restore_to(&row.id, "restored").await?;
    assert!(std::fs::read(restored.join("pattern.bin"))? == pattern);
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_drill_goes_only_where_the_verifiers_config_says() -> Result<()> {
    let env = Env::new().await?;
    env.cli(&["tenant", "create", "acme"]).await?;
    // Whoever can write the catalog can point a source anywhere; without a
    // scratch server in the verifier's config, and without the flag given
    // when the source was added, no drill restores there.
    env.cli(&[
        "source",
        "add",
        "acme/db",
        "--type",
        "postgres",
        "--url",
        "postgres://backup@attacker.example:5432/shop",
    ])
    .await?;
    let node = env.node().await?;
    let (ok, stdout, stderr) = env.run_cli(&["drill", "acme/db", "--json"], &[]).await?;
    assert!(!ok, "{stdout}{stderr}");
    let drill: serde_json::Value = serde_json::from_str(&stdout)?;
    assert_eq!(drill["outcome"], "failed", "{drill}");
    let error = drill["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("no scratch server for postgres drills")
            && error.contains("drills.postgres-url"),
        "{error}"
    );
    node.shutdown().await;
    Ok(())
}
