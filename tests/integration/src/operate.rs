//! The operating surface as shipped in `deploy/`: the Prometheus rules pass
//! promtool's checks and unit tests, every alert is shown firing and not
//! firing and has a runbook, and nothing refers to a metric vaultline does
//! not export.

use anyhow::{Context, Result};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

pub(crate) fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn promtool(args: &[&str]) -> Result<String> {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(repo_root().join("deploy/prometheus"))
        .output()
        .context("promtool is missing: scripts/test.sh installs Debian's prometheus package")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    anyhow::ensure!(out.status.success(), "promtool {args:?}:\n{text}");
    Ok(text)
}

/// Every `vaultline_…` name an expression uses, histogram suffixes removed.
pub(crate) fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (start, _) in expr.match_indices("vaultline_") {
        // Recording rules are `vaultline:…`, never `vaultline_`; a name
        // inside another (…_vaultline_…) is not one.
        let before = expr[..start].chars().last();
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        let name: String = expr[start..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let base = ["_bucket", "_count", "_sum"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .unwrap_or(&name);
        names.insert(base.to_owned());
    }
    names
}

/// Names exported, as Prometheus sees them.
pub(crate) fn exported() -> BTreeSet<&'static str> {
    vaultline_metrics::MetricName::ALL
        .iter()
        .map(|m| m.as_str())
        .collect()
}

pub(crate) fn yaml(path: &Path) -> Result<serde_yaml::Value> {
    let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
    serde_yaml::from_str(&text).with_context(|| path.display().to_string())
}

#[test]
fn the_alert_rules_pass_promtool_and_every_alert_is_tested_and_has_a_runbook() -> Result<()> {
    let checked = promtool(&["check", "rules", "rules.yml"])?;
    assert!(checked.contains("SUCCESS"), "{checked}");
    let tests: Vec<String> = std::fs::read_dir(repo_root().join("deploy/prometheus/tests"))?
        .map(|e| Ok(e?.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_>>()?;
    let mut args = vec!["test", "rules"];
    let paths: Vec<String> = tests.iter().map(|t| format!("tests/{t}")).collect();
    args.extend(paths.iter().map(String::as_str));
    let tested = promtool(&args)?;
    assert!(!tested.contains("FAILED"), "{tested}");

    // Which alerts the unit tests show firing, and which not firing.
    let (mut firing, mut quiet) = (BTreeSet::new(), BTreeSet::new());
    for path in &paths {
        let file = yaml(&repo_root().join("deploy/prometheus").join(path))?;
        for test in file["tests"].as_sequence().into_iter().flatten() {
            for case in test["alert_rule_test"].as_sequence().into_iter().flatten() {
                let name = case["alertname"].as_str().unwrap_or_default().to_owned();
                match case["exp_alerts"].as_sequence() {
                    Some(alerts) if !alerts.is_empty() => firing.insert(name),
                    _ => quiet.insert(name),
                };
            }
        }
    }

    let rules = yaml(&repo_root().join("deploy/prometheus/rules.yml"))?;
    let runbooks = std::fs::read_to_string(repo_root().join("docs/runbooks.md"))?;
    let exported = exported();
    let mut alerts = 0;
    for group in rules["groups"].as_sequence().context("groups")? {
        for rule in group["rules"].as_sequence().context("rules")? {
            let expr = rule["expr"].as_str().context("expr")?;
            for name in metric_names(expr) {
                assert!(
                    exported.contains(name.as_str()),
                    "a rule uses {name}, which vaultline does not export"
                );
            }
            let Some(alert) = rule["alert"].as_str() else {
                continue;
            };
            alerts += 1;
            assert!(firing.contains(alert), "no unit test shows {alert} firing");
            assert!(quiet.contains(alert), "no unit test shows {alert} quiet");
            let runbook = rule["annotations"]["runbook_url"]
                .as_str()
                .with_context(|| format!("{alert} has no runbook_url"))?;
            let anchor = runbook
                .strip_prefix("docs/runbooks.md#")
                .with_context(|| format!("{alert}: {runbook} is not in docs/runbooks.md"))?;
            assert!(
                runbooks.contains(&format!("\n## {anchor}\n")),
                "docs/runbooks.md has no section {anchor} for {alert}"
            );
            assert!(
                runbooks.contains(&format!("**{alert}**")),
                "docs/runbooks.md does not name {alert}"
            );
        }
    }
    assert!(alerts >= 15, "{alerts} alerts");
    Ok(())
}

#[test]
fn metric_names_are_found_in_expressions() {
    let names = metric_names(
        "histogram_quantile(0.95, sum by (le) (rate(vaultline_backup_duration_seconds_bucket[5m]))) \
         > vaultline:backups:count_7d and vaultline_ready == 0",
    );
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    assert_eq!(
        names,
        ["vaultline_backup_duration_seconds", "vaultline_ready"]
    );
}
