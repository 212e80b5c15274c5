//! The auditor: a tamper-evident trail, the execution history and stats, and
//! signed webhooks that are retried until the receiver takes them.

use crate::harness::{Env, assert_verified};
use anyhow::{Context, Result};
use hmac::{KeyInit, Mac};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn wait_for_execution(env: &Env, status: &str) -> Result<()> {
    let sql = env.sql().await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while sql
        .query_opt("SELECT 1 FROM executions WHERE status = $1", &[&status])
        .await?
        .is_none()
    {
        anyhow::ensure!(Instant::now() < deadline, "no {status} execution recorded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn history_stats_and_a_tampered_audit_row_is_named() -> Result<()> {
    let (env, _tree) = Env::with_small_source().await?;
    let node = env.node().await?;
    env.cli(&["backup", "acme/docs", "--wait", "--timeout", "120"])
        .await?;
    let row = env.wait_final(1).await?;
    assert_verified(&row);
    wait_for_execution(&env, "succeeded").await?;

    let history: serde_json::Value = serde_json::from_str(
        &env.cli_output(&["history", "--source", "acme/docs", "--json"])
            .await?,
    )?;
    let run = &history[0];
    assert_eq!(history.as_array().map(Vec::len), Some(1), "{history}");
    assert_eq!(run["snapshot"], row.id.as_str());
    assert_eq!(run["trigger"], "manual");
    assert_eq!(run["status"], "succeeded");
    assert_eq!(run["bytes_read"], row.bytes_read);
    assert!(
        run["duration_ms"].as_i64().is_some_and(|ms| ms >= 0),
        "{run}"
    );
    let stats: serde_json::Value =
        serde_json::from_str(&env.cli_output(&["stats", "--json"]).await?)?;
    let source = &stats["sources"][0];
    assert_eq!(source["runs"], 1);
    assert_eq!(source["success_rate"], 1.0);
    assert!(source["last_verified"].is_string(), "{stats}");
    let repository = &stats["repositories"][0];
    assert!(
        repository["stored_bytes"].as_i64().is_some_and(|b| b > 0),
        "{stats}"
    );
    assert!(
        repository["dedup_ratio"].as_f64().is_some_and(|d| d > 0.0),
        "{stats}"
    );
    node.shutdown().await;

    env.cli(&["audit", "verify"]).await?;
    let sql = env.sql().await?;
    let rows: i64 = sql
        .query_one(
            "SELECT count(*) FROM audit_events WHERE tenant = 'acme'",
            &[],
        )
        .await?
        .get(0);
    assert!(rows >= 5, "the backup left {rows} audit rows");
    let victim = sql
        .query_one(
            "SELECT id, seq, payload FROM audit_events WHERE tenant = 'acme' ORDER BY seq OFFSET 2 LIMIT 1",
            &[],
        )
        .await?;
    let (id, seq, original): (i64, i64, String) = (victim.get(0), victim.get(1), victim.get(2));
    sql.execute(
        "UPDATE audit_events SET payload = '{\"forged\":true}' WHERE id = $1",
        &[&id],
    )
    .await?;
    let err = env
        .cli(&["audit", "verify"])
        .await
        .expect_err("tampering is caught");
    let text = format!("{err:#}");
    assert!(
        text.contains(&format!("row {id} (tenant acme, sequence {seq})"))
            && text.contains("changed"),
        "{text}"
    );
    sql.execute(
        "UPDATE audit_events SET payload = $2 WHERE id = $1",
        &[&id, &original],
    )
    .await?;
    env.cli(&["audit", "verify"]).await?;
    // Deleting the row instead is caught at the row after the gap.
    sql.execute("DELETE FROM audit_events WHERE id = $1", &[&id])
        .await?;
    let next: i64 = sql
        .query_one(
            "SELECT id FROM audit_events WHERE tenant = 'acme' AND seq = $1",
            &[&(seq + 1)],
        )
        .await?
        .get(0);
    let err = env
        .cli(&["audit", "verify"])
        .await
        .expect_err("a gap is caught");
    let text = format!("{err:#}");
    assert!(
        text.contains(&format!("row {next} (tenant acme, sequence {})", seq + 1))
            && text.contains("missing"),
        "{text}"
    );
    Ok(())
}

/// What the test's receiver was sent.
#[derive(Debug, Clone)]
struct Received {
    headers: Vec<(String, String)>,
    body: String,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A minimal HTTP/1.1 receiver: answers 500 to the first `fail_first`
/// requests, 200 after, and keeps what it was sent.
async fn receiver(fail_first: usize) -> Result<(u16, Arc<Mutex<Vec<Received>>>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let got: Arc<Mutex<Vec<Received>>> = Arc::default();
    let seen = got.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let header_end = loop {
                let Ok(n) = socket.read(&mut chunk).await else {
                    break None;
                };
                if n == 0 {
                    break None;
                }
                buf.extend_from_slice(&chunk[..n]);
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break Some(i);
                }
            };
            let Some(end) = header_end else { continue };
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let headers: Vec<(String, String)> = head
                .lines()
                .skip(1)
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                .collect();
            let length: usize = headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.parse().ok())
                .unwrap_or(0);
            let mut body = buf[end + 4..].to_vec();
            while body.len() < length {
                let Ok(n) = socket.read(&mut chunk).await else {
                    break;
                };
                if n == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..n]);
            }
            let count = {
                let mut got = seen.lock().expect("lock");
                got.push(Received {
                    headers,
                    body: String::from_utf8_lossy(&body).to_string(),
                });
                got.len()
            };
            let status = if count <= fail_first {
                "500 Internal Server Error"
            } else {
                "200 OK"
            };
            let _ = socket
                .write_all(
                    format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                        .as_bytes(),
                )
                .await;
        }
    });
    Ok((port, got))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failure_webhook_is_signed_and_redelivered_after_a_500() -> Result<()> {
    let (env, tree) = Env::with_small_source().await?;
    let (port, received) = receiver(1).await?;
    let secret = "a-shared-secret-for-the-test";
    let secret_file = env.path("webhook.secret");
    std::fs::write(&secret_file, format!("{secret}\n"))?;
    env.cli(&[
        "webhook",
        "add",
        "acme",
        "--url",
        &format!("http://127.0.0.1:{port}/hooks/vaultline"),
        "--secret-file",
        secret_file.to_str().context("utf-8")?,
    ])
    .await?;
    let sealed: Vec<u8> = env
        .sql()
        .await?
        .query_one("SELECT sealed_secret FROM webhooks", &[])
        .await?
        .get(0);
    assert!(
        !sealed.windows(secret.len()).any(|w| w == secret.as_bytes()),
        "the secret is stored sealed"
    );
    let node = env.node().await?;

    // A source that vanished: the snapshot fails.
    std::fs::remove_dir_all(&tree)?;
    env.cli(&["backup", "acme/docs", "--wait", "--timeout", "60"])
        .await
        .expect_err("the backup fails");
    let failed = env.wait_final(1).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while received.lock().expect("lock").len() < 2 {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the webhook was not retried after the 500"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let got = received.lock().expect("lock").clone();
    assert_eq!(got[0].body, got[1].body, "a retry sends the same body");
    for request in &got {
        let timestamp = request
            .header("Vaultline-Timestamp")
            .context("timestamp header")?;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes())?;
        mac.update(format!("{timestamp}.{}", request.body).as_bytes());
        let expected = format!("v1={}", hex::encode(mac.finalize().into_bytes()));
        assert_eq!(
            request.header("Vaultline-Signature"),
            Some(expected.as_str())
        );
        assert_eq!(request.header("Content-Type"), Some("application/json"));
        assert!(
            !request.body.contains(secret)
                && !request.headers.iter().any(|(_, v)| v.contains(secret))
        );
    }
    let body: serde_json::Value = serde_json::from_str(&got[0].body)?;
    assert_eq!(body["event"], "snapshot.failed");
    assert_eq!(body["status"], "failed");
    assert_eq!(body["tenant"], "acme");
    assert_eq!(body["source"], "docs");
    assert_eq!(body["snapshot"], failed.id.as_str());
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains(tree.to_str().unwrap_or("?"))),
        "{body}"
    );

    // Each attempt is recorded: 500, then 200, then delivered.
    let sql = env.sql().await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let row = sql
            .query_one("SELECT status, attempts FROM webhook_deliveries", &[])
            .await?;
        if row.get::<_, String>(0) == "delivered" {
            assert_eq!(row.get::<_, i32>(1), 2);
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the delivery was not marked delivered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let statuses: Vec<Option<i32>> = sql
        .query(
            "SELECT http_status FROM webhook_attempts ORDER BY attempt",
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(statuses, [Some(500), Some(200)]);

    // A verified snapshot is not sent to a failures-only webhook.
    std::fs::create_dir_all(&tree)?;
    std::fs::write(tree.join("back.txt"), "back again\n")?;
    env.cli(&["backup", "acme/docs", "--wait", "--timeout", "60"])
        .await?;
    wait_for_execution(&env, "succeeded").await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        received.lock().expect("lock").len(),
        2,
        "a success was sent"
    );
    node.shutdown().await;
    Ok(())
}
