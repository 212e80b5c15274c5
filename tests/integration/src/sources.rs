//! Database and command sources, end to end against real servers: a
//! password-protected PostgreSQL and a MariaDB started by the harness, the
//! repository on Garage. Each round trip restores into a fresh database and
//! compares every table's row count and an md5 of its ordered contents;
//! drills restore into a scratch database and compare row counts.

use crate::harness::{Env, assert_verified};
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::time::Duration;
use vaultline_catalog::SnapshotStatus;
use vaultline_testkit::{MariaDb, Postgres};

pub(crate) const PG_PASSWORD: &str = "pg-s3cret-for-tests";

/// A shop: several tables, 100k+ rows, a bytea column, a second schema, an empty table.
pub(crate) const PG_SHOP: &str = "
CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL, email text);
INSERT INTO customers SELECT g, 'customer ' || g, 'c' || g || '@example.com' FROM generate_series(1, 40000) g;
CREATE TABLE orders (id bigint PRIMARY KEY, customer int REFERENCES customers, total numeric(10,2), placed timestamptz);
INSERT INTO orders SELECT g, (g % 40000) + 1, (g % 1000) / 7.0, '2025-01-01'::timestamptz + g * interval '1 minute'
  FROM generate_series(1, 100000) g;
CREATE TABLE attachments (id int PRIMARY KEY, body bytea NOT NULL);
INSERT INTO attachments SELECT g, sha256(g::text::bytea) || sha256((g * 7)::text::bytea) || '\\x00ff00'::bytea
  FROM generate_series(1, 5000) g;
CREATE SCHEMA audit;
CREATE TABLE audit.\"Log\" (id serial PRIMARY KEY, msg text);
INSERT INTO audit.\"Log\" (msg) SELECT 'it''s line ' || g || E' with a tab\\t(and parens);' FROM generate_series(1, 3000) g;
CREATE TABLE empty_table (id int);
";

/// Row count and md5 of the ordered contents of every table of a PostgreSQL database.
pub(crate) fn pg_fingerprint(
    pg: &Postgres,
    database: &str,
) -> Result<BTreeMap<String, (u64, String)>> {
    let tables = pg.psql(database, vaultline_databases::PG_TABLES)?;
    let mut out = BTreeMap::new();
    for table in tables.lines().filter(|l| !l.is_empty()) {
        let row = pg.psql(
            database,
            &format!(
                "SELECT count(*), coalesce(md5(string_agg(t::text, E'\\n' ORDER BY t::text)), '') FROM {table} t"
            ),
        )?;
        let (count, md5) = row.trim().split_once('|').context("count|md5")?;
        out.insert(table.to_owned(), (count.parse()?, md5.to_owned()));
    }
    Ok(out)
}

/// Adds source `acme/shop` over `database` of `pg`, with the password in a
/// file, and any `extra` flags of `source add`.
pub(crate) async fn add_postgres_source(
    env: &Env,
    pg: &Postgres,
    database: &str,
    extra: &[&str],
) -> Result<()> {
    let password_file = env.path("pg-password");
    std::fs::write(&password_file, format!("{PG_PASSWORD}\n"))?;
    let url = pg.url_for(database);
    let mut args = vec![
        "source",
        "add",
        "acme/shop",
        "--type",
        "postgres",
        "--url",
        &url,
        "--password-file",
        password_file.to_str().expect("utf-8 path"),
    ];
    args.extend_from_slice(extra);
    env.cli(&args).await
}

/// Restores `snapshot` with the CLI into a new database `database` of `pg`.
pub(crate) async fn restore_into_postgres(
    env: &Env,
    pg: &Postgres,
    snapshot: &str,
    database: &str,
) -> Result<()> {
    pg.psql("postgres", &format!("CREATE DATABASE {database}"))?;
    let (ok, _, stderr) = env
        .run_cli(
            &["restore", snapshot, "--into", &pg.url_for(database)],
            &[("PGPASSWORD", PG_PASSWORD)],
        )
        .await?;
    anyhow::ensure!(ok, "restore into postgres failed: {stderr}");
    Ok(())
}

/// The `tables` the catalog recorded for a snapshot: name → rows.
async fn recorded_tables(env: &Env, snapshot: &str) -> Result<BTreeMap<String, u64>> {
    let row = env
        .sql()
        .await?
        .query_one("SELECT tables FROM snapshots WHERE id = $1", &[&snapshot])
        .await?;
    let tables: serde_json::Value = row.get(0);
    Ok(tables
        .as_array()
        .context("tables is a list")?
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap_or_default().to_owned(),
                t["rows"].as_u64().unwrap_or(u64::MAX),
            )
        })
        .collect())
}

/// Nothing in the catalog's source rows, the credential rows or the NATS
/// stream holds `secret` in clear.
pub(crate) async fn assert_secret_nowhere(env: &Env, secret: &str) -> Result<()> {
    let client = env.sql().await?;
    for row in client
        .query("SELECT config::text FROM sources", &[])
        .await?
    {
        let config: String = row.get(0);
        assert!(!config.contains(secret), "source config holds the secret");
    }
    for row in client.query("SELECT sealed FROM credentials", &[]).await? {
        let sealed: Vec<u8> = row.get(0);
        assert!(
            !sealed.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "credential stored in clear"
        );
    }
    let audit: i64 = client
        .query_one(
            "SELECT count(*) FROM audit_events WHERE payload::text LIKE '%' || $1 || '%'",
            &[&secret],
        )
        .await?
        .get(0);
    assert_eq!(audit, 0, "the audit trail holds the secret");
    // Every message in the stream, bodies and headers.
    let nats = env.nats_as("operator").await?;
    let js = async_nats::jetstream::new(nats);
    let mut stream = js.get_stream("VAULTLINE").await?;
    let last = stream.info().await?.state.last_sequence;
    for seq in 1..=last {
        let Ok(message) = stream.get_raw_message(seq).await else {
            continue;
        };
        let headers = format!("{:?}", message.headers);
        assert!(
            !message
                .payload
                .windows(secret.len())
                .any(|w| w == secret.as_bytes())
                && !headers.contains(secret),
            "message {seq} on {} holds the secret",
            message.subject
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_postgres_database_round_trips_through_garage_and_its_drill_passes() -> Result<()> {
    let env = Env::with_s3().await?;
    let pg = Postgres::start_with_password(PG_PASSWORD)?;
    pg.psql("postgres", "CREATE DATABASE shop")?;
    pg.psql("shop", PG_SHOP)?;
    let want = pg_fingerprint(&pg, "shop")?;
    assert_eq!(want.len(), 5, "{want:?}");
    assert!(want.values().map(|(n, _)| n).sum::<u64>() > 100_000);

    env.cli(&["tenant", "create", "acme"]).await?;
    add_postgres_source(
        &env,
        &pg,
        "shop",
        &[
            "--verify",
            "full",
            // No scratch server in the verifier's config: drills may use this one.
            "--drill-on-source-server",
        ],
    )
    .await?;
    let node = env.node().await?;
    env.cli(&["backup", "acme/shop", "--wait", "--timeout", "300"])
        .await?;
    let row = env.wait_final_of("shop", 1).await?;
    assert_verified(&row);
    // The verifier read it back in full (level 2) because the source asks for it.
    let client = env.sql().await?;
    let id = row.id.to_string();
    vaultline_testkit::eventually(Duration::from_secs(10), "a level-2 verified event", || {
        let (client, id) = (&client, id.clone());
        async move {
            client
                .query_opt(
                    "SELECT 1 FROM audit_events WHERE kind = 'snapshot.verified' AND snapshot = $1
                       AND payload::jsonb->>'level' = '2'",
                    &[&id],
                )
                .await
                .is_ok_and(|r| r.is_some())
        }
    })
    .await?;

    // The row counts taken at dump time are the database's.
    let recorded = recorded_tables(&env, row.id.as_str()).await?;
    let counts: BTreeMap<String, u64> = want.iter().map(|(t, (n, _))| (t.clone(), *n)).collect();
    assert_eq!(recorded, counts);

    // Restore into a fresh database: every table's count and contents match.
    restore_into_postgres(&env, &pg, row.id.as_str(), "restored").await?;
    assert_eq!(pg_fingerprint(&pg, "restored")?, want);

    // Into a MariaDB URL: refused before anything runs.
    let (ok, _, stderr) = env
        .run_cli(
            &[
                "restore",
                row.id.as_str(),
                "--into",
                "mariadb://root@127.0.0.1:1/x",
            ],
            &[],
        )
        .await?;
    assert!(!ok && stderr.contains("is a postgres backup"), "{stderr}");

    // On-demand level 2 from the CLI agrees.
    let (ok, stdout, stderr) = env
        .run_cli(&["verify", row.id.as_str(), "--full"], &[])
        .await?;
    assert!(ok && stdout.contains("level 2 ok"), "{stdout}{stderr}");

    // The drill restores into a scratch database, compares, and drops it.
    let (ok, stdout, stderr) = env.run_cli(&["drill", "acme/shop", "--json"], &[]).await?;
    assert!(ok, "drill failed: {stdout}{stderr}");
    let drill: serde_json::Value = serde_json::from_str(&stdout)?;
    assert_eq!(drill["outcome"], "passed", "{drill}");
    assert_eq!(drill["snapshot"], row.id.as_str());
    let tables = drill["tables"].as_array().context("tables")?;
    assert_eq!(tables.len(), 5);
    for table in tables {
        assert_eq!(table["expected"], table["restored"], "{table}");
    }
    assert_eq!(
        pg.psql(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname LIKE 'vaultline_drill_%'"
        )?
        .trim(),
        "0",
        "the scratch database is dropped"
    );
    // The auditor's observer exports the drill and the verification from the catalog.
    let shop = [("tenant", "acme"), ("source", "shop")];
    crate::observe::wait_metrics(node.admin, "drill and verification figures", |m| {
        m.get("vaultline_drill_last_success", &shop) == Some(1.0)
            && m.get("vaultline_drill_duration_seconds", &shop)
                .is_some_and(|d| d > 0.0)
            && m.get("vaultline_last_verified_timestamp_seconds", &shop)
                .is_some_and(|t| t > 0.0)
    })
    .await?;

    // The password never left the sealed credential.
    assert_secret_nowhere(&env, PG_PASSWORD).await?;

    // A rotated, wrong password fails the next snapshot with the server's
    // words, and neither password shows.
    let wrong = env.path("wrong-password");
    std::fs::write(&wrong, "not-the-password-xyz")?;
    env.cli(&[
        "source",
        "set-credential",
        "acme/shop",
        "--from-file",
        wrong.to_str().unwrap(),
    ])
    .await?;
    env.cli(&["backup", "acme/shop", "--timeout", "120"])
        .await?;
    let failed = env.wait_final_of("shop", 2).await?;
    assert_eq!(failed.status, SnapshotStatus::Failed);
    let error = failed.error.unwrap_or_default();
    assert!(
        error.contains("password authentication failed for user \"postgres\""),
        "{error}"
    );
    assert!(!error.contains("not-the-password-xyz") && !error.contains(PG_PASSWORD));
    node.shutdown().await;
    Ok(())
}

/// MariaDB data with what trips up naive dump parsers: quotes, backslashes,
/// parentheses and semicolons inside strings, binary columns, an empty table.
const MARIADB_SHOP: &str = "
CREATE TABLE customers (id INT PRIMARY KEY, name VARCHAR(100), note TEXT);
INSERT INTO customers SELECT seq, CONCAT('customer ', seq), CONCAT('it''s (', seq, ') a \\\\ note; with \"quotes\"') FROM seq_1_to_60000;
CREATE TABLE blobs (id INT PRIMARY KEY, data BLOB);
INSERT INTO blobs SELECT seq, UNHEX(CONCAT(SHA2(seq, 256), '0028293B27')) FROM seq_1_to_5000;
CREATE TABLE `odd``name` (id INT PRIMARY KEY);
INSERT INTO `odd``name` SELECT seq FROM seq_1_to_10;
CREATE TABLE empty_table (id INT);
";

/// Row count and md5 of the ordered contents of every table of a MariaDB database.
fn mariadb_fingerprint(db: &MariaDb, database: &str) -> Result<BTreeMap<String, (u64, String)>> {
    let tables = db.sql(&format!(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = '{database}' ORDER BY 1"
    ))?;
    let mut out = BTreeMap::new();
    for table in tables.lines().filter(|l| !l.is_empty()) {
        let quoted = vaultline_databases::mariadb_ident(table);
        let columns: Vec<String> = db
            .sql(&format!(
                "SELECT column_name FROM information_schema.columns \
                 WHERE table_schema = '{database}' AND table_name = '{}' ORDER BY ordinal_position",
                table.replace('\'', "''")
            ))?
            .lines()
            .filter(|l| !l.is_empty())
            .map(|c| {
                format!(
                    "IFNULL(HEX({}), 'NULL')",
                    vaultline_databases::mariadb_ident(c)
                )
            })
            .collect();
        let row = db.sql(&format!(
            "SET SESSION group_concat_max_len = 1073741824; \
             SELECT COUNT(*), IFNULL(MD5(GROUP_CONCAT(CONCAT_WS('|', {cols}) ORDER BY CONCAT_WS('|', {cols}) SEPARATOR '\\n')), '') \
             FROM {database}.{quoted}",
            cols = columns.join(", ")
        ))?;
        let (count, md5) = row
            .trim_end_matches('\n')
            .split_once('\t')
            .with_context(|| format!("count, md5 of {table}: {row:?}"))?;
        out.insert(table.to_owned(), (count.parse()?, md5.to_owned()));
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_mariadb_database_round_trips_through_garage_and_its_drill_passes() -> Result<()> {
    let env = Env::with_s3().await?;
    let db = MariaDb::start()?;
    db.sql("CREATE DATABASE shop")?;
    db.sql(&format!("USE shop; {MARIADB_SHOP}"))?;
    let want = mariadb_fingerprint(&db, "shop")?;
    assert_eq!(want.len(), 4, "{want:?}");
    assert_eq!(want["customers"].0, 60_000);

    env.cli(&["tenant", "create", "acme"]).await?;
    let password_file = env.path("my-password");
    std::fs::write(&password_file, MariaDb::BACKUP_PASSWORD)?;
    env.cli(&[
        "source",
        "add",
        "acme/shop",
        "--type",
        "mariadb",
        "--url",
        &db.url("shop"),
        "--password-file",
        password_file.to_str().unwrap(),
        "--verify",
        "full",
    ])
    .await?;
    // Drills go to the scratch server the verifier's own config names (the
    // same MariaDB here, as its root).
    let mut config = env.config();
    config.drills.mariadb_url = Some(format!("mariadb://root@127.0.0.1:{}/", db.port));
    let node = vaultline::start_node(config, &vaultline::SERVED).await?;
    env.cli(&["backup", "acme/shop", "--wait", "--timeout", "300"])
        .await?;
    let row = env.wait_final_of("shop", 1).await?;
    assert_verified(&row);

    // Counted from the dump text itself: exactly the rows the dump holds.
    let recorded = recorded_tables(&env, row.id.as_str()).await?;
    let counts: BTreeMap<String, u64> = want.iter().map(|(t, (n, _))| (t.clone(), *n)).collect();
    assert_eq!(recorded, counts);

    db.sql("CREATE DATABASE restored")?;
    let url = format!("mariadb://root@127.0.0.1:{}/restored", db.port);
    let (ok, _, stderr) = env
        .run_cli(&["restore", row.id.as_str(), "--into", &url], &[])
        .await?;
    assert!(ok, "restore into mariadb failed: {stderr}");
    assert_eq!(mariadb_fingerprint(&db, "restored")?, want);

    let (ok, stdout, stderr) = env.run_cli(&["drill", "acme/shop", "--json"], &[]).await?;
    assert!(ok, "drill failed: {stdout}{stderr}");
    let drill: serde_json::Value = serde_json::from_str(&stdout)?;
    assert_eq!(drill["outcome"], "passed", "{drill}");
    assert_eq!(drill["tables"].as_array().map(Vec::len), Some(4));
    assert_eq!(
        db.sql("SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name LIKE 'vaultline_drill_%'")?
            .trim(),
        "0"
    );
    assert_secret_nowhere(&env, MariaDb::BACKUP_PASSWORD).await?;

    // A drill of a source whose tables changed since the dump still compares
    // against the dump: restore is of the snapshot, not of today's data.
    db.sql("DELETE FROM shop.customers WHERE id > 100")?;
    let (ok, stdout, _) = env.run_cli(&["drill", "acme/shop", "--json"], &[]).await?;
    assert!(ok, "{stdout}");

    // On a schedule: the CLI's shortest cadence is a minute, so the test sets
    // one second in the catalog; the verifier's timer then requests drills.
    env.cli(&["drill", "acme/shop", "--every", "1m"]).await?;
    let client = env.sql().await?;
    let every: i64 = client
        .query_one(
            "SELECT drill_every_seconds FROM sources WHERE name = 'shop'",
            &[],
        )
        .await?
        .get(0);
    assert_eq!(every, 60);
    client
        .execute(
            "UPDATE sources SET drill_every_seconds = 1 WHERE name = 'shop'",
            &[],
        )
        .await?;
    vaultline_testkit::eventually(Duration::from_secs(60), "a scheduled drill", || {
        let client = &client;
        async move {
            client
                .query_one(
                    "SELECT count(*) FROM drills WHERE request_id LIKE 'drill-acme-shop-%' AND outcome = 'passed'",
                    &[],
                )
                .await
                .is_ok_and(|r| r.get::<_, i64>(0) >= 1)
        }
    })
    .await?;
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_command_source_round_trips_its_bytes_and_a_dying_one_fails_clearly() -> Result<()> {
    let env = Env::new().await?;
    let payload = env.path("payload.bin");
    std::fs::write(&payload, crate::harness::mixed_bytes(9 << 20, 7))?;
    let token_file = env.path("token");
    std::fs::write(&token_file, "tok-123-secret")?;
    let restored = env.path("restored.bin");
    env.cli(&["tenant", "create", "acme"]).await?;
    // The command only produces data when the secret reaches it.
    env.cli(&[
        "source",
        "add",
        "acme/vault",
        "--type",
        "command",
        "--command",
        &format!(
            "test \"$VAULT_TOKEN\" = \"$(cat {})\" && cat {}",
            token_file.display(),
            payload.display()
        ),
        "--restore-command",
        &format!("cat > {}", restored.display()),
        "--secret-file",
        token_file.to_str().unwrap(),
        "--secret-env",
        "VAULT_TOKEN",
    ])
    .await?;
    env.cli(&[
        "source",
        "add",
        "acme/dying",
        "--type",
        "command",
        "--command",
        "head -c 3000000 /dev/urandom; echo 'raft: leader lost, snapshot aborted' >&2; exit 3",
    ])
    .await?;
    let node = env.node().await?;
    env.cli(&["backup", "acme/vault", "--wait", "--timeout", "120"])
        .await?;
    let row = env.wait_final_of("vault", 1).await?;
    assert_verified(&row);
    assert_eq!(row.bytes_read, 9 << 20);

    // The paired restore command gets the bytes on stdin.
    env.cli(&["restore", row.id.as_str(), "--into-command"])
        .await?;
    assert!(
        std::fs::read(&restored)? == std::fs::read(&payload)?,
        "restore command output differs"
    );
    // And stdout does too.
    let (ok, stdout_bytes) = {
        let out = env
            .bare_cli(
                &[
                    "--config",
                    env.config_file.to_str().unwrap(),
                    "restore",
                    row.id.as_str(),
                    "--to",
                    "-",
                ],
                &[],
            )
            .await?;
        (out.status.success(), out.stdout)
    };
    assert!(
        ok && stdout_bytes == std::fs::read(&payload)?,
        "stdout differs"
    );

    // The stream's chunk list is kept for the next one, which confirms the
    // unchanged chunks up front: a rewritten MiB inside costs a few chunks.
    let cache = env.path("staging/.cache/streams/acme/vault");
    let cached = std::fs::metadata(&cache)?.len();
    assert!(cached > 9 * 36, "the stream cache holds {cached} bytes");
    let mut changed = std::fs::read(&payload)?;
    changed[4 << 20..5 << 20].copy_from_slice(&crate::harness::mixed_bytes(1 << 20, 8));
    std::fs::write(&payload, &changed)?;
    env.cli(&["backup", "acme/vault", "--wait", "--timeout", "120"])
        .await?;
    let second = env.wait_final_of("vault", 2).await?;
    assert_verified(&second);
    assert!(
        second.bytes_new > 0 && second.bytes_new <= 3 << 20,
        "a 1 MiB rewrite stored {} new bytes",
        second.bytes_new
    );
    env.cli(&["restore", second.id.as_str(), "--into-command"])
        .await?;
    assert!(
        std::fs::read(&restored)? == changed,
        "the second stream restores differently"
    );

    env.cli(&["backup", "acme/dying", "--timeout", "120"])
        .await?;
    let failed = env.wait_final_of("dying", 1).await?;
    assert_eq!(failed.status, SnapshotStatus::Failed);
    let error = failed.error.unwrap_or_default();
    assert!(error.contains("exit status: 3"), "{error}");
    assert!(
        error.contains("raft: leader lost, snapshot aborted"),
        "{error}"
    );
    assert_secret_nowhere(&env, "tok-123-secret").await?;
    node.shutdown().await;
    Ok(())
}
