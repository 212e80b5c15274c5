//! The Grafana dashboards against a real Prometheus scraping a real stack.
//! No Grafana server can be installed here, so the test does what Grafana
//! would: every template variable's values and every panel's query (with
//! the variables at "All") go to Prometheus, which scrapes the node and
//! evaluates deploy/prometheus/rules.yml. After a backup, a failed backup, a
//! drill and a GC pass, each must return at least one series, and none may
//! name a metric vaultline does not export or a recording rule that does not
//! exist.

use crate::harness::Env;
use crate::operate::{exported, metric_names, repo_root, yaml};
use crate::sources::{PG_PASSWORD, add_postgres_source};
use anyhow::{Context, Result};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use vaultline_testkit::{Postgres, Prometheus};

/// A panel query or a variable, as Grafana would send it.
struct Query {
    what: String,
    /// An instant query, or a label whose values a selector must yield.
    kind: Kind,
}

enum Kind {
    Expr(String),
    LabelValues { label: String, selector: String },
}

/// Every query of every dashboard, with the variables at "All".
fn dashboard_queries() -> Result<Vec<Query>> {
    let dir = repo_root().join("deploy/grafana");
    let mut queries = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(&dir)?
        .map(|e| Ok(e?.path()))
        .collect::<Result<_>>()?;
    files.retain(|p| p.extension().is_some_and(|e| e == "json"));
    files.sort();
    anyhow::ensure!(files.len() == 3, "three dashboards, found {files:?}");
    for file in files {
        let name = file
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let dashboard: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&file)?)?;
        for variable in dashboard["templating"]["list"]
            .as_array()
            .context("templating")?
        {
            let Some(query) = variable["query"]["query"].as_str() else {
                continue; // the data source picker
            };
            let inner = query
                .strip_prefix("label_values(")
                .and_then(|q| q.strip_suffix(')'))
                .with_context(|| format!("{name}: variable query {query}"))?;
            let (selector, label) = inner
                .rsplit_once(',')
                .context("label_values(selector, label)")?;
            queries.push(Query {
                what: format!("{name} variable {}", variable["name"]),
                kind: Kind::LabelValues {
                    label: label.trim().to_owned(),
                    selector: all(selector.trim()),
                },
            });
        }
        let panels = dashboard["panels"].as_array().context("panels")?;
        anyhow::ensure!(!panels.is_empty(), "{name} has no panels");
        for panel in panels {
            for target in panel["targets"].as_array().context("targets")? {
                let expr = target["expr"].as_str().context("expr")?;
                queries.push(Query {
                    what: format!("{name} panel {:?} {}", panel["title"], target["refId"]),
                    kind: Kind::Expr(all(expr)),
                });
            }
        }
    }
    Ok(queries)
}

/// A query with every template variable at "All" (`.*`).
fn all(expr: &str) -> String {
    ["$tenant", "$source", "$stage"]
        .iter()
        .fold(expr.to_owned(), |e, v| e.replace(v, ".*"))
}

/// The recording rules deploy/prometheus/rules.yml defines.
fn recorded() -> Result<BTreeSet<String>> {
    let rules = yaml(&repo_root().join("deploy/prometheus/rules.yml"))?;
    Ok(rules["groups"]
        .as_sequence()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_sequence().into_iter().flatten())
        .filter_map(|r| r["record"].as_str().map(str::to_owned))
        .collect())
}

/// How many series the query returns now.
async fn series(http: &reqwest::Client, prometheus: &str, query: &Query) -> Result<usize> {
    let url = match &query.kind {
        Kind::Expr(expr) => reqwest::Url::parse_with_params(
            &format!("{prometheus}/api/v1/query"),
            [("query", expr.as_str())],
        )?,
        Kind::LabelValues { label, selector } => reqwest::Url::parse_with_params(
            &format!("{prometheus}/api/v1/label/{label}/values"),
            [("match[]", selector.as_str())],
        )?,
    };
    let text = http
        .get(url)
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    let body: serde_json::Value = serde_json::from_str(&text)?;
    anyhow::ensure!(body["status"] == "success", "{}: {body}", query.what);
    let data = &body["data"];
    Ok(match &query.kind {
        Kind::Expr(_) => data["result"].as_array().map_or(0, Vec::len),
        Kind::LabelValues { .. } => data.as_array().map_or(0, Vec::len),
    })
}

#[test]
fn dashboards_refer_only_to_metrics_and_rules_that_exist() -> Result<()> {
    let (exported, recorded) = (exported(), recorded()?);
    let queries = dashboard_queries()?;
    assert!(queries.len() >= 30, "{} queries", queries.len());
    for query in &queries {
        let expr = match &query.kind {
            Kind::Expr(expr) => expr,
            Kind::LabelValues { selector, .. } => selector,
        };
        for name in metric_names(expr) {
            assert!(
                exported.contains(name.as_str()),
                "{}: no metric {name}",
                query.what
            );
        }
        for (start, _) in expr.match_indices("vaultline:") {
            let name: String = expr[start..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            assert!(
                recorded.contains(&name),
                "{}: no recording rule {name}",
                query.what
            );
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_dashboard_panel_returns_series_from_a_real_prometheus_scraping_a_real_stack()
-> Result<()> {
    let env = Env::with_s3().await?;
    let tree = env.path("tree");
    std::fs::create_dir_all(&tree)?;
    std::fs::write(tree.join("a.txt"), "first version")?;
    env.cli(&["tenant", "create", "acme"]).await?;
    env.cli(&[
        "source",
        "add",
        "acme/docs",
        "--path",
        tree.to_str().unwrap(),
        "--keep-last",
        "1",
    ])
    .await?;
    env.cli(&["schedule", "add", "acme/docs", "--every", "1h"])
        .await?;
    env.cli(&[
        "source",
        "add",
        "acme/dying",
        "--type",
        "command",
        "--command",
        "exit 3",
    ])
    .await?;
    let pg = Postgres::start_with_password(PG_PASSWORD)?;
    pg.psql("postgres", "CREATE DATABASE shop")?;
    pg.psql(
        "shop",
        "CREATE TABLE t (x int); INSERT INTO t SELECT generate_series(1, 100)",
    )?;
    add_postgres_source(&env, &pg, "shop", &["--drill-on-source-server"]).await?;

    // GC right after retention forgets a snapshot; integrity rounds every second.
    let mut config = env.config();
    config.retention.interval = Duration::from_secs(2);
    config.retention.gc_grace = Duration::ZERO;
    config.integrity.check_interval = Duration::from_secs(1);
    let node = vaultline::start_node(config, &vaultline::SERVED).await?;
    let rules = repo_root().join("deploy/prometheus/rules.yml");
    let prometheus = Prometheus::start(&[node.admin], &[rules.as_path()])?;

    // A backup, a second that makes retention forget the first (GC deletes
    // what only it held), a failed backup, a drill.
    env.cli(&["backup", "acme/docs", "--wait", "--timeout", "120"])
        .await?;
    std::fs::write(tree.join("a.txt"), "second version, other bytes")?;
    env.cli(&["backup", "acme/docs", "--wait", "--timeout", "120"])
        .await?;
    env.cli(&["backup", "acme/dying"]).await?;
    env.wait_final_of("dying", 1).await?;
    env.cli(&["backup", "acme/shop", "--wait", "--timeout", "120"])
        .await?;
    let (ok, stdout, stderr) = env.run_cli(&["drill", "acme/shop", "--json"], &[]).await?;
    assert!(ok, "drill failed: {stdout}{stderr}");

    let http = reqwest::Client::new();
    let queries = dashboard_queries()?;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let mut empty = Vec::new();
        for query in &queries {
            if series(&http, &prometheus.url(), query).await? == 0 {
                empty.push(query.what.clone());
            }
        }
        if empty.is_empty() {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "queries with no series after 90s:\n{}\nprometheus log:\n{}",
            empty.join("\n"),
            prometheus.log()
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    node.shutdown().await;
    Ok(())
}
