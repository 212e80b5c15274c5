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
        let method = reqwest::Method::from_bytes(method.as_bytes())?;
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
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
    api.task.abort();
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
