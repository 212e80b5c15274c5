//! Least privilege, tried as an attacker holding one stage's credentials
//! would: every stage's NATS user (from the shipped `deploy/nats/auth.conf`)
//! and catalog role (migration 0008) attempts what that stage must not do,
//! and every attempt is refused. A control cell per stage shows the same
//! login does get through where its stage must, so a refusal is the
//! permissions' doing, not a broken login.

use crate::harness::Env;
use anyhow::{Context, Result};
use std::time::Duration;
use vaultline_testkit::NatsServer;
use vaultline_types::StageName;

/// A raw client as `role` whose requests give up after a second: a refused
/// publish is dropped by the server, so its request never gets an answer.
async fn nats_login(env: &Env, role: &str) -> Result<async_nats::Client> {
    Ok(env
        .nats_options(role)
        .request_timeout(Some(Duration::from_secs(1)))
        .connect(env.nats.url())
        .await?)
}

/// A subject `stage` does not publish, whose messages the stream would keep.
fn foreign_event(stage: StageName) -> &'static str {
    match stage {
        StageName::Extractor => "vaultline.pack.stored.acme",
        _ => "vaultline.data.extracted.acme",
    }
}

/// Another stage's durable consumer.
fn foreign_consumer(stage: StageName) -> &'static str {
    match stage {
        StageName::Uploader => "extractor",
        _ => "uploader",
    }
}

/// What `stage`'s NATS user tried and was allowed to do (must stay empty).
async fn nats_attempts(env: &Env, stage: StageName) -> Result<Vec<String>> {
    let client = nats_login(env, stage.as_str()).await?;
    let mut allowed = Vec::new();
    // Control: the stage reads its stream's info, as it does at start.
    let info = client
        .request("$JS.API.STREAM.INFO.VAULTLINE", "".into())
        .await
        .with_context(|| format!("{stage} cannot read the stream's info: its login is broken"))?;
    anyhow::ensure!(
        String::from_utf8_lossy(&info.payload).contains("\"VAULTLINE\""),
        "{stage}: unexpected stream info"
    );
    let js = async_nats::jetstream::new(client.clone());
    let attempts: Vec<(String, String, String)> = vec![
        (
            format!("publish {}", foreign_event(stage)),
            foreign_event(stage).to_owned(),
            "\u{c0}".to_owned(),
        ),
        (
            "create a stream".into(),
            "$JS.API.STREAM.CREATE.EVIL".into(),
            r#"{"name":"EVIL","subjects":["evil.>"]}"#.into(),
        ),
        (
            "delete the stream".into(),
            "$JS.API.STREAM.DELETE.VAULTLINE".into(),
            String::new(),
        ),
        (
            "purge the stream".into(),
            "$JS.API.STREAM.PURGE.VAULTLINE".into(),
            String::new(),
        ),
        (
            "create a consumer".into(),
            "$JS.API.CONSUMER.CREATE.VAULTLINE.evil".into(),
            r#"{"stream_name":"VAULTLINE","config":{"durable_name":"evil","ack_policy":"explicit"}}"#
                .into(),
        ),
        (
            format!("delete consumer {}", foreign_consumer(stage)),
            format!("$JS.API.CONSUMER.DELETE.VAULTLINE.{}", foreign_consumer(stage)),
            String::new(),
        ),
        (
            format!("pull from consumer {}", foreign_consumer(stage)),
            format!(
                "$JS.API.CONSUMER.MSG.NEXT.VAULTLINE.{}",
                foreign_consumer(stage)
            ),
            r#"{"batch":1,"expires":500000000}"#.into(),
        ),
    ];
    for (what, subject, body) in attempts {
        let outcome = if subject.starts_with("vaultline.") {
            match js.publish(subject, body.into()).await {
                Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            }
        } else {
            client
                .request(subject, body.into())
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        if outcome.is_ok() {
            allowed.push(format!("{stage} may {what}"));
        }
    }
    // Nor may it listen to the whole bus or another's replies. (Each probe
    // on vaultline.probe lands in the stream: one per stage.)
    for subject in ["vaultline.>", "_INBOX.vaultline-operator.>"] {
        let mut sub = client.subscribe(subject).await?;
        client.flush().await?;
        let probe = nats_login(env, "admin").await?;
        probe
            .publish(
                subject.replace('>', "probe"),
                bytes::Bytes::from_static(b"x"),
            )
            .await?;
        probe.flush().await?;
        use futures::StreamExt;
        if tokio::time::timeout(Duration::from_millis(500), sub.next())
            .await
            .is_ok_and(|m| m.is_some())
        {
            allowed.push(format!("{stage} may subscribe to {subject}"));
        }
    }
    Ok(allowed)
}

/// What `stage`'s catalog role tried and was allowed to do (must stay empty).
async fn catalog_attempts(env: &Env, stage: StageName) -> Result<Vec<String>> {
    let mut config: tokio_postgres::Config = env._pg.url().parse()?;
    config.user(format!("vaultline_{stage}"));
    let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    // Control: the role logs in and reads what every stage reads at start.
    let applied: i64 = client
        .query_one("SELECT count(*) FROM schema_migrations", &[])
        .await
        .with_context(|| format!("vaultline_{stage} cannot read schema_migrations"))?
        .get(0);
    anyhow::ensure!(applied >= 8, "{stage}: {applied} migrations");
    let mut attempts = vec![
        (
            "UPDATE tenant_keys",
            "UPDATE tenant_keys SET recipient = recipient",
        ),
        ("UPDATE sources", "UPDATE sources SET kind = 'command'"),
        (
            "INSERT sources",
            "INSERT INTO sources (tenant, name, kind, config) VALUES ('acme', 'evil', 'command', '{}')",
        ),
        ("create a table", "CREATE TABLE evil (x int)"),
        ("alter a table", "ALTER TABLE snapshots ADD COLUMN evil int"),
        ("drop a table", "DROP TABLE audit_events"),
        ("truncate the trail", "TRUNCATE audit_events"),
        // Protection is the operator's (migration 0014).
        (
            "unprotect a snapshot",
            "UPDATE snapshots SET protected = false",
        ),
    ];
    // Only the extractor and the verifier open source credentials.
    if !matches!(stage, StageName::Extractor | StageName::Verifier) {
        attempts.push(("SELECT credentials", "SELECT sealed FROM credentials"));
    }
    // Source configs are for the stages that read, drill or expire sources;
    // the auditor's observer sees only their names and deadlines.
    if !matches!(
        stage,
        StageName::Extractor | StageName::Verifier | StageName::Retention
    ) {
        attempts.push(("SELECT source configs", "SELECT config FROM sources"));
    }
    // Only the verifier, which holds the KEK, reads wrapped identities.
    if stage != StageName::Verifier {
        attempts.push((
            "SELECT wrapped identities",
            "SELECT wrapped_identity FROM tenant_keys",
        ));
    }
    let mut allowed = Vec::new();
    for (what, sql) in attempts {
        match client.batch_execute(sql).await {
            Ok(()) => allowed.push(format!("vaultline_{stage} may {what}")),
            Err(e) => anyhow::ensure!(
                e.code() == Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE),
                "vaultline_{stage}: {what} failed otherwise than refused: {e:?}"
            ),
        }
    }
    Ok(allowed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_stage_is_refused_what_its_job_does_not_need() -> Result<()> {
    let (env, _tree) = Env::with_small_source().await?;
    // A credential and keys exist, so a refused SELECT is not an empty one.
    let secret = env.path("secret");
    std::fs::write(&secret, "s3cret")?;
    env.cli(&[
        "source",
        "add",
        "acme/cmd",
        "--type",
        "command",
        "--command",
        "echo hi",
        "--secret-file",
        secret.to_str().unwrap(),
        "--secret-env",
        "TOKEN",
    ])
    .await?;
    let before = nats_login(&env, "admin").await?;
    let before = async_nats::jetstream::new(before);
    let consumers_before = consumer_names(&before).await?;

    // Stages side by side: a refused request costs its whole timeout.
    let tried = futures::future::try_join_all(StageName::ALL.map(|stage| {
        let env = &env;
        async move {
            let mut allowed = nats_attempts(env, stage).await?;
            allowed.extend(catalog_attempts(env, stage).await?);
            anyhow::Ok(allowed)
        }
    }))
    .await?;
    let allowed: Vec<String> = tried.into_iter().flatten().collect();
    assert!(allowed.is_empty(), "not refused: {allowed:#?}");

    // The attempts left no trace: same stream, same consumers, no EVIL.
    assert!(before.get_stream("EVIL").await.is_err());
    let mut stream = before.get_stream("VAULTLINE").await?;
    let probes = StageName::ALL.len() as u64;
    assert_eq!(
        stream.info().await?.state.messages,
        probes,
        "a foreign event got in"
    );
    assert_eq!(consumer_names(&before).await?, consumers_before);
    let sources: i64 = env
        .sql()
        .await?
        .query_one("SELECT count(*) FROM sources WHERE kind = 'command'", &[])
        .await?
        .get(0);
    assert_eq!(sources, 1, "only acme/cmd is a command source");
    Ok(())
}

async fn consumer_names(js: &async_nats::jetstream::Context) -> Result<Vec<String>> {
    use futures::TryStreamExt;
    let stream = js.get_stream("VAULTLINE").await?;
    let mut names: Vec<String> = stream.consumer_names().try_collect().await?;
    names.sort();
    Ok(names)
}

/// The whole pipeline under least privilege: every stage its own process
/// (its binary picks its own NATS user and catalog role from the shared
/// config), and a file tree, a PostgreSQL database and a command source
/// back up, verify and restore byte-identical.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_pipeline_runs_with_each_stage_on_its_own_logins() -> Result<()> {
    use crate::harness::{Process, assert_verified};
    use crate::sources::{PG_PASSWORD, pg_fingerprint};
    let env = Env::new().await?;
    let tree = env.path("tree");
    crate::pipeline::build_tree(&tree)?;
    env.tenant_with_source(&tree).await?;
    let pg = vaultline_testkit::Postgres::start_with_password(PG_PASSWORD)?;
    pg.psql("postgres", "CREATE DATABASE shop")?;
    pg.psql(
        "shop",
        "CREATE TABLE items (id int PRIMARY KEY, body text);
         INSERT INTO items SELECT g, repeat(md5(g::text), 8) FROM generate_series(1, 20000) g;",
    )?;
    crate::sources::add_postgres_source(&env, &pg, "shop", &[]).await?;
    let payload = env.path("payload.bin");
    std::fs::write(&payload, crate::harness::mixed_bytes(3 << 20, 11))?;
    let restored_payload = env.path("restored.bin");
    env.cli(&[
        "source",
        "add",
        "acme/blob",
        "--type",
        "command",
        "--command",
        &format!("cat {}", payload.display()),
        "--restore-command",
        &format!("cat > {}", restored_payload.display()),
    ])
    .await?;

    let mut processes = Vec::new();
    for stage in StageName::ALL {
        processes.push(Process::start(&env, &format!("vaultline-{stage}"))?);
    }
    for source in ["docs", "shop", "blob"] {
        env.cli(&[
            "backup",
            &format!("acme/{source}"),
            "--wait",
            "--timeout",
            "180",
        ])
        .await?;
    }

    // Each stage process connected as its own NATS user and catalog role.
    let (_, connz) = vaultline_testkit::http_get(
        format!("127.0.0.1:{}", env.nats.monitor_port).parse()?,
        "/connz?auth=true&limit=1000",
    )
    .await?;
    let roles: Vec<String> = env
        .sql()
        .await?
        .query(
            "SELECT DISTINCT usename::text FROM pg_stat_activity WHERE datname = current_database()",
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    for stage in StageName::ALL {
        let user = NatsServer::user(stage.as_str());
        assert!(
            connz.contains(&format!("\"authorized_user\": \"{user}\""))
                || connz.contains(&format!("\"authorized_user\":\"{user}\"")),
            "no NATS connection as {user}"
        );
        // The scheduler's pool connects lazily; every consumer-driven stage
        // has queried by now but the copier, which has no copy to make here.
        if !matches!(stage, StageName::Scheduler | StageName::Copier) {
            assert!(
                roles.contains(&format!("vaultline_{stage}")),
                "no catalog session as vaultline_{stage}: {roles:?}"
            );
        }
    }

    let (docs, shop, blob) = (
        env.wait_final_of("docs", 1).await?,
        env.wait_final_of("shop", 1).await?,
        env.wait_final_of("blob", 1).await?,
    );
    for row in [&docs, &shop, &blob] {
        assert_verified(row);
    }
    let target = env.restore_to(&docs.id, "restored-tree").await?;
    crate::pipeline::assert_same_tree(&tree, &target, "the tree's restore")?;
    crate::sources::restore_into_postgres(&env, &pg, shop.id.as_str(), "restored").await?;
    assert_eq!(
        pg_fingerprint(&pg, "restored")?,
        pg_fingerprint(&pg, "shop")?
    );
    env.cli(&["restore", blob.id.as_str(), "--into-command"])
        .await?;
    assert!(std::fs::read(&restored_payload)? == std::fs::read(&payload)?);
    drop(processes);
    Ok(())
}

/// Each stage on an S3 key of its own: the uploader and retention may read
/// and write, the verifier and the copier only read, and the extractor, packager, scheduler
/// and auditor hold a key with no right on the bucket at all. A backup still
/// verifies, and the verifier's key is refused a write.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stages_on_s3_keys_of_their_own_back_up_and_the_verifier_cannot_write() -> Result<()> {
    use crate::harness::assert_verified;
    use vaultline_runtime::config::S3Login;
    let env = Env::with_s3().await?;
    let tree = env.path("tree");
    crate::pipeline::build_tree(&tree)?;
    env.tenant_with_source(&tree).await?;
    let garage = env.garage.as_ref().expect("an S3 env");
    let mut config = env.config();
    for stage in StageName::ALL {
        let (read, write) = match stage {
            StageName::Uploader | StageName::Retention => (true, true),
            // The copier reads the primary; its copies have keys of their own.
            StageName::Verifier | StageName::Copier => (true, false),
            _ => (false, false),
        };
        let (access_key_id, secret) = garage.add_key(&format!("vl-{stage}"), read, write)?;
        let secret_access_key_file = env.path(&format!("s3-secret-{stage}"));
        std::fs::write(&secret_access_key_file, secret)?;
        config.repository.s3.stages.insert(
            stage.to_string(),
            S3Login {
                access_key_id,
                secret_access_key_file,
            },
        );
    }
    let node = vaultline::start_node(config.clone(), &vaultline::SERVED).await?;
    env.cli(&["backup", "acme/docs", "--wait", "--timeout", "300"])
        .await?;
    assert_verified(&env.wait_final(1).await?);

    let verifier = config
        .repository
        .for_stage(StageName::Verifier)
        .context("the verifier's key")?;
    let verifier = vaultline_runtime::deps::open_repository(&verifier, None).await?;
    let row = env.wait_final(1).await?;
    let packs = env
        .catalog
        .snapshot_packs(&vaultline_types::Name::new("acme")?, &row.id)
        .await?;
    let (pack, size) = packs.first().context("a pack")?;
    let key = vaultline_storage::ObjectKey::pack(&vaultline_types::Name::new("acme")?, pack);
    assert_eq!(
        verifier.size(&key).await?,
        Some(*size),
        "the verifier reads"
    );
    let refused = verifier.put_bytes("tenants/acme/evil", b"x").await;
    assert!(refused.is_err(), "the verifier's key wrote to the bucket");
    node.shutdown().await;
    Ok(())
}
