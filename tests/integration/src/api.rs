//! The HTTP API behind scoped bearer tokens: a tenant's token sees that
//! tenant only, a trigger token starts a backup that reaches verified, a
//! read token cannot trigger, a revoked token gets 401, and every use is in
//! the audit trail. And the OpenAPI document describes exactly the routes.

use crate::harness::Env;
use anyhow::{Context, Result, ensure};
use reqwest::StatusCode;
use serde_json::Value;
use std::time::Duration;

struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        key: Option<&str>,
    ) -> Result<(StatusCode, Value)> {
        self.send(method, path, token, key, None).await
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        key: Option<&str>,
        body: Option<Value>,
    ) -> Result<(StatusCode, Value)> {
        let method = reqwest::Method::from_bytes(method.as_bytes())?;
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        if let Some(body) = body {
            request = request
                .header("Content-Type", "application/json")
                .body(body.to_string());
        }
        let response = request.send().await?;
        let status = response.status();
        let text = response.text().await?;
        Ok((
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        ))
    }
}

/// GETs `href` until it answers 200 (a result recorded), for up to a minute.
async fn until_found(client: &Client, href: &str, token: &str) -> Result<Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = client.call("GET", href, Some(token), None).await?;
        if status == StatusCode::OK {
            return Ok(body);
        }
        ensure!(
            status == StatusCode::NOT_FOUND && std::time::Instant::now() < deadline,
            "{href}: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn start_api(env: &Env) -> Result<(vaultline_api::Served, Client)> {
    let api = vaultline_api::start(&env.config(), "127.0.0.1:0").await?;
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    let client = Client {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?,
        base: format!("http://{}", api.addr),
    };
    Ok((api, client))
}

async fn token(env: &Env, tenant: &str, scope: &str) -> Result<String> {
    let out = env
        .cli_output(&[
            "token", "create", "--tenant", tenant, "--scope", scope, "--name", "test",
        ])
        .await?;
    Ok(out.trim().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tokens_see_their_tenant_trigger_by_scope_and_every_use_is_audited() -> Result<()> {
    let (env, tree) = Env::with_small_source().await?;
    env.cli(&["tenant", "create", "bravo"]).await?;
    env.cli(&[
        "source",
        "add",
        "bravo/docs",
        "--type",
        "files",
        "--path",
        tree.to_str().unwrap(),
    ])
    .await?;
    let node = env.node().await?;
    env.cli(&["backup", "bravo/docs", "--wait"]).await?;
    let bravo = env.catalog.snapshots(None, None).await?.remove(0);
    assert_eq!(bravo.tenant.as_str(), "bravo");

    let (api, client) = start_api(&env).await?;
    let (read, trigger, admin) = (
        token(&env, "acme", "read").await?,
        token(&env, "acme", "trigger").await?,
        token(&env, "acme", "admin").await?,
    );
    let mut audited = 0; // calls made with acme's tokens

    // A trigger token starts a backup that reaches verified; the same
    // Idempotency-Key again is the same snapshot.
    let (status, body) = client
        .call(
            "POST",
            "/v1/sources/docs/backups",
            Some(&trigger),
            Some("nightly-1"),
        )
        .await?;
    audited += 1;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["request_id"], "api-nightly-1");
    let href = body["href"].as_str().context("href")?.to_owned();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let snapshot = loop {
        let (status, body) = client.call("GET", &href, Some(&read), None).await?;
        audited += 1;
        if status == StatusCode::OK && body["status"] == "verified" {
            break body;
        }
        ensure!(
            std::time::Instant::now() < deadline,
            "not verified: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(snapshot["trigger"], "api");
    let id = snapshot["id"].as_str().context("id")?.to_owned();
    let (status, again) = client
        .call(
            "POST",
            "/v1/sources/docs/backups",
            Some(&trigger),
            Some("nightly-1"),
        )
        .await?;
    audited += 1;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["snapshot"], id.as_str());

    // A read token lists only its tenant's snapshots; bravo's is not there.
    let (status, list) = client
        .call("GET", "/v1/snapshots", Some(&read), None)
        .await?;
    audited += 1;
    assert_eq!(status, StatusCode::OK);
    let list = list.as_array().context("a list")?;
    ensure!(
        !list.is_empty() && list.iter().all(|s| s["tenant"] == "acme"),
        "{list:?}"
    );
    let (status, _) = client
        .call(
            "GET",
            &format!("/v1/snapshots/{}", bravo.id),
            Some(&read),
            None,
        )
        .await?;
    audited += 1;
    assert_eq!(status, StatusCode::NOT_FOUND);
    for path in [
        "/v1/sources",
        "/v1/sources/docs",
        "/v1/history",
        "/v1/stats",
        "/v1/restores",
        &format!("/v1/snapshots/{id}"),
    ] {
        let (status, body) = client.call("GET", path, Some(&read), None).await?;
        audited += 1;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
    }
    let (_, history) = client.call("GET", "/v1/history", Some(&read), None).await?;
    audited += 1;
    ensure!(
        history
            .as_array()
            .is_some_and(|h| h.iter().any(|r| r["trigger"] == "api")),
        "{history}"
    );

    // A read token cannot trigger, nor protect; a trigger token cannot protect.
    let (status, _) = client
        .call("POST", "/v1/sources/docs/backups", Some(&read), None)
        .await?;
    audited += 1;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let protect = format!("/v1/snapshots/{id}/protect");
    let (status, _) = client.call("POST", &protect, Some(&trigger), None).await?;
    audited += 1;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = client.call("POST", &protect, Some(&admin), None).await?;
    audited += 1;
    assert_eq!(
        (status, body["protected"].clone()),
        (StatusCode::OK, Value::Bool(true))
    );
    ensure!(
        env.catalog
            .find_snapshot(&vaultline_types::SnapshotId::parse(&id)?)
            .await?
            .protected
    );

    // A drill request, and its result once the verifier ran it (a files
    // source is refused a drill, and the result says so).
    let (status, body) = client
        .call("POST", "/v1/sources/docs/drills", Some(&trigger), None)
        .await?;
    audited += 1;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let href = body["href"].as_str().context("href")?.to_owned();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let drill = loop {
        let (status, body) = client.call("GET", &href, Some(&read), None).await?;
        audited += 1;
        if status == StatusCode::OK {
            break body;
        }
        ensure!(
            std::time::Instant::now() < deadline,
            "no drill result: {body}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(drill["outcome"], "failed", "{drill}");

    // Without a token, with a made-up one, and revoked: 401.
    let (status, _) = client.call("GET", "/v1/snapshots", None, None).await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let forged = format!("vlt_{}_{}", "0".repeat(16), "1".repeat(64));
    let (status, _) = client
        .call("GET", "/v1/snapshots", Some(&forged), None)
        .await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let read_id = read.split('_').nth(1).context("token id")?;
    env.cli(&["token", "revoke", read_id]).await?;
    let (status, _) = client
        .call("GET", "/v1/snapshots", Some(&read), None)
        .await?;
    audited += 1;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Every call with one of acme's tokens is in acme's trail, the refused ones too.
    let sql = env.sql().await?;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let rows = sql
            .query(
                "SELECT payload::jsonb->>'status', payload::jsonb->>'scope' FROM audit_events
                  WHERE tenant = 'acme' AND kind = 'api.called'",
                &[],
            )
            .await?;
        if rows.len() >= audited {
            assert_eq!(rows.len(), audited);
            let statuses: Vec<(String, String)> =
                rows.iter().map(|r| (r.get(0), r.get(1))).collect();
            ensure!(
                statuses.contains(&("403".into(), "read".into())),
                "{statuses:?}"
            );
            ensure!(
                statuses.contains(&("401".into(), "revoked".into())),
                "{statuses:?}"
            );
            break;
        }
        ensure!(
            std::time::Instant::now() < deadline,
            "{} of {audited} calls audited",
            rows.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The protection is in the trail as the API published it (with its
    // source header, which the auditor holds to the payload).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let changed: Vec<String> = sql
            .query(
                "SELECT payload::jsonb->>'change' FROM audit_events
                  WHERE tenant = 'acme' AND kind = 'snapshot.changed' AND snapshot = $1",
                &[&id],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        if !changed.is_empty() || std::time::Instant::now() > deadline {
            assert_eq!(changed, ["protected"]);
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    api.task.abort();
    node.shutdown().await;
    Ok(())
}

/// A verification asked for through the API: level 2 of a sound snapshot
/// passes with what it reassembled; after a pack is damaged, level 1 finds
/// it, names it, and the snapshot is marked corrupt. A read token cannot ask,
/// a bad level is refused in words, and the same Idempotency-Key again answers
/// with the first result.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_requested_verification_reports_what_it_found_and_marks_damage() -> Result<()> {
    let (env, _tree) = Env::with_small_source().await?;
    let node = env.node().await?;
    env.cli(&["backup", "acme/docs", "--wait"]).await?;
    let snapshot = env.wait_final(1).await?;
    let (_api, client) = start_api(&env).await?;
    let (read, trigger) = (
        token(&env, "acme", "read").await?,
        token(&env, "acme", "trigger").await?,
    );
    let path = format!("/v1/snapshots/{}/verifications", snapshot.id);
    let level = |n: u64| Some(serde_json::json!({ "level": n }));

    let (status, _) = client
        .send("POST", &path, Some(&read), None, level(2))
        .await?;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = client
        .send("POST", &path, Some(&trigger), None, level(3))
        .await?;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    ensure!(
        body["error"]
            .as_str()
            .unwrap_or("")
            .contains("level 3 is not 1 or 2"),
        "{body}"
    );
    let unknown = "/v1/snapshots/20200101T000000Z-00000000/verifications";
    let (status, _) = client.call("POST", unknown, Some(&trigger), None).await?;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, body) = client
        .send("POST", &path, Some(&trigger), Some("check-1"), level(2))
        .await?;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let href = body["href"].as_str().context("href")?.to_owned();
    let sound = until_found(&client, &href, &read).await?;
    assert_eq!(
        (&sound["outcome"], &sound["level"], &sound["request_id"]),
        (
            &Value::from("passed"),
            &Value::from(2),
            &Value::from("api-check-1")
        ),
        "{sound}"
    );
    ensure!(sound["objects"].as_u64() >= Some(2), "{sound}");
    assert_eq!(
        sound["files"].as_u64(),
        Some(snapshot.files as u64),
        "{sound}"
    );
    let (status, again) = client
        .send("POST", &path, Some(&trigger), Some("check-1"), level(2))
        .await?;
    assert_eq!((status, &again), (StatusCode::OK, &sound));

    // A byte flipped in one of its packs: level 1 reads every pack back.
    let tenant = vaultline_types::Name::new("acme")?;
    let pack = env
        .catalog
        .packs_to_verify(&tenant, &snapshot.id, Duration::ZERO)
        .await?
        .remove(0);
    let file = env
        .path("repository")
        .join(vaultline_storage::ObjectKey::pack(&tenant, &pack.id));
    let mut bytes = std::fs::read(&file)?;
    bytes[(pack.size / 2) as usize] ^= 0x01;
    std::fs::write(&file, &bytes)?;
    let (status, body) = client.call("POST", &path, Some(&trigger), None).await?;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let damaged = until_found(&client, body["href"].as_str().context("href")?, &read).await?;
    assert_eq!(damaged["outcome"], "failed", "{damaged}");
    assert_eq!(damaged["level"], 1, "{damaged}");
    let wanted = format!("pack {} does not match its recorded digest", pack.id);
    ensure!(
        damaged["problems"] == serde_json::json!([wanted]),
        "{damaged}"
    );
    let row = env.catalog.find_snapshot(&snapshot.id).await?;
    assert_eq!(
        row.status,
        vaultline_types::SnapshotStatus::Corrupt,
        "{row:?}"
    );
    ensure!(row.error.unwrap_or_default().contains(&wanted));

    let (status, list) = client.call("GET", &path, Some(&read), None).await?;
    assert_eq!(status, StatusCode::OK);
    let outcomes: Vec<&Value> = list
        .as_array()
        .context("a list")?
        .iter()
        .map(|v| &v["outcome"])
        .collect();
    assert_eq!(
        outcomes,
        [&Value::from("failed"), &Value::from("passed")],
        "{list}"
    );
    node.shutdown().await;
    Ok(())
}

#[test]
fn the_openapi_document_describes_exactly_the_routes() -> Result<()> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../schemas/openapi.yaml"
    ))?;
    let doc: serde_yaml::Value = serde_yaml::from_str(&text)?;
    let mut documented = Vec::new();
    for (path, item) in doc["paths"].as_mapping().context("paths")? {
        for (method, operation) in item.as_mapping().context("an operation")? {
            let method = method.as_str().context("a method")?;
            if method == "parameters" {
                continue;
            }
            let scope = operation["x-vaultline-scope"]
                .as_str()
                .context("x-vaultline-scope")?;
            documented.push((
                method.to_uppercase(),
                path.as_str().context("a path")?.to_owned(),
                scope.to_owned(),
            ));
        }
    }
    let mut served: Vec<(String, String, String)> = vaultline_api::ROUTES
        .iter()
        .map(|(m, p, s)| ((*m).to_owned(), (*p).to_owned(), s.as_str().to_owned()))
        .collect();
    documented.sort();
    served.sort();
    assert_eq!(documented, served);
    Ok(())
}
