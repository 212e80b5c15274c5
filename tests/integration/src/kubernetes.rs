//! The Kubernetes manifests, checked offline (no cluster runs here): the
//! base is what scripts/k8s/generate.py writes, the example overlay builds
//! with `kubectl kustomize` and passes `kubernetes-validate --strict`, and
//! the objects no schema covers (KEDA's ScaledObjects, the PrometheusRule
//! and dashboards) are held to deploy/nats, deploy/prometheus and
//! deploy/grafana here.

use crate::operate::repo_root;
use anyhow::{Context, Result};
use serde::Deserialize;
use serde_yaml::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use vaultline_types::StageName;

fn run(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .current_dir(repo_root())
        .output()
        .with_context(|| format!("{program} is missing: scripts/test.sh installs it"))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    anyhow::ensure!(out.status.success(), "{program} {args:?} failed:\n{stderr}");
    Ok(String::from_utf8(out.stdout)?)
}

/// The example overlay as `kubectl kustomize` builds it.
fn built() -> Result<Vec<Value>> {
    let text = run("kubectl", &["kustomize", "deploy/k8s/overlays/example"])?;
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| Ok(Value::deserialize(doc)?))
        .collect()
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn component(doc: &Value) -> &str {
    doc["metadata"]["labels"]["app.kubernetes.io/component"]
        .as_str()
        .unwrap_or_default()
}

fn json_file(path: &str) -> Result<serde_json::Value> {
    Ok(serde_json::from_str(&std::fs::read_to_string(
        repo_root().join(path),
    )?)?)
}

#[test]
fn the_base_is_generated_and_the_overlay_builds_and_validates_strictly() -> Result<()> {
    run("python3", &["scripts/k8s/generate.py", "--check"])?;
    let text = run("kubectl", &["kustomize", "deploy/k8s/overlays/example"])?;
    let file = tempfile::NamedTempFile::new()?;
    std::fs::write(file.path(), &text)?;
    let path = file.path().to_str().context("utf-8")?;
    let report = run(
        "python3",
        &["-m", "kubernetes_validate", "--strict", "--quiet", path],
    )?;
    assert!(!report.contains("ERROR"), "{report}");
    Ok(())
}

#[test]
fn every_consumer_stage_scales_on_its_own_consumer_and_the_scheduler_is_fixed() -> Result<()> {
    let docs = built()?;
    let stream = json_file("deploy/nats/streams/vaultline.json")?;
    let scaled = of_kind(&docs, "ScaledObject");
    let deployments: BTreeMap<&str, &Value> = of_kind(&docs, "Deployment")
        .into_iter()
        .map(|d| (d["metadata"]["name"].as_str().unwrap_or_default(), d))
        .collect();
    let mut seen = BTreeSet::new();
    for object in &scaled {
        let stage = component(object);
        let consumer = json_file(&format!("deploy/nats/consumers/{stage}.json"))?;
        let target = object["spec"]["scaleTargetRef"]["name"]
            .as_str()
            .context("scaleTargetRef")?;
        let deployment = deployments
            .get(target)
            .with_context(|| format!("{stage}: no Deployment {target}"))?;
        let command = &deployment["spec"]["template"]["spec"]["containers"][0]["command"][0];
        assert_eq!(
            command.as_str(),
            Some(format!("vaultline-{stage}").as_str())
        );
        let triggers = object["spec"]["triggers"]
            .as_sequence()
            .context("triggers")?;
        assert_eq!(triggers.len(), 1, "{stage}");
        let trigger = &triggers[0];
        assert_eq!(trigger["type"], "nats-jetstream", "{stage}");
        let metadata = &trigger["metadata"];
        // What KEDA's nats-jetstream scaler requires, as strings.
        for key in [
            "natsServerMonitoringEndpoint",
            "account",
            "stream",
            "consumer",
            "lagThreshold",
        ] {
            let value = metadata[key].as_str().unwrap_or_default();
            assert!(
                !value.is_empty(),
                "{stage}: {key} is missing or not a string"
            );
        }
        assert!(
            metadata["lagThreshold"]
                .as_str()
                .unwrap_or_default()
                .parse::<u32>()?
                > 0
        );
        assert_eq!(
            metadata["stream"].as_str(),
            stream["name"].as_str(),
            "{stage}"
        );
        assert_eq!(
            metadata["consumer"].as_str(),
            consumer["durable_name"].as_str(),
            "{stage} scales on another consumer"
        );
        assert!(
            seen.insert(stage.to_owned()),
            "{stage} has two ScaledObjects"
        );
    }
    let consumers: BTreeSet<String> = crate::harness::consumer_stages()
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(seen, consumers, "a ScaledObject per consumer stage");
    let scheduler = deployments
        .get("vaultline-scheduler")
        .context("scheduler")?;
    assert_eq!(scheduler["spec"]["replicas"].as_u64(), Some(2));
    Ok(())
}

#[test]
fn every_stage_runs_locked_down_with_only_its_own_secret() -> Result<()> {
    let docs = built()?;
    let accounts: BTreeMap<&str, &Value> = of_kind(&docs, "ServiceAccount")
        .into_iter()
        .map(|d| (d["metadata"]["name"].as_str().unwrap_or_default(), d))
        .collect();
    let secrets: BTreeMap<&str, &Value> = of_kind(&docs, "Secret")
        .into_iter()
        .map(|d| (d["metadata"]["name"].as_str().unwrap_or_default(), d))
        .collect();
    let budgets: BTreeSet<&str> = of_kind(&docs, "PodDisruptionBudget")
        .iter()
        .map(|d| component(d))
        .collect();
    let deployments = of_kind(&docs, "Deployment");
    assert_eq!(deployments.len(), StageName::ALL.len());
    for deployment in deployments {
        let stage = component(deployment);
        let pod = &deployment["spec"]["template"]["spec"];
        let account = pod["serviceAccountName"]
            .as_str()
            .context("serviceAccountName")?;
        assert_eq!(account, format!("vaultline-{stage}"));
        assert_eq!(
            accounts.get(account).context("its ServiceAccount")?["automountServiceAccountToken"],
            Value::Bool(false)
        );
        assert_eq!(pod["automountServiceAccountToken"], Value::Bool(false));
        assert_eq!(
            pod["securityContext"]["runAsNonRoot"],
            Value::Bool(true),
            "{stage}"
        );
        let container = &pod["containers"][0];
        let security = &container["securityContext"];
        assert_eq!(
            security["readOnlyRootFilesystem"],
            Value::Bool(true),
            "{stage}"
        );
        assert_eq!(
            security["allowPrivilegeEscalation"],
            Value::Bool(false),
            "{stage}"
        );
        for probe in ["livenessProbe", "readinessProbe"] {
            assert!(
                container[probe]["httpGet"]["path"].is_string(),
                "{stage}: {probe}"
            );
        }
        for bound in ["requests", "limits"] {
            assert!(
                container["resources"][bound]["memory"].is_string(),
                "{stage}: {bound}"
            );
        }
        assert!(
            budgets.contains(stage),
            "{stage} has no PodDisruptionBudget"
        );
        // Its own Secret only; the KEK only in the verifier's.
        let mut mounted = Vec::new();
        for volume in pod["volumes"].as_sequence().context("volumes")? {
            if let Some(name) = volume["secret"]["secretName"].as_str() {
                mounted.push(name);
            }
        }
        assert_eq!(mounted.len(), 1, "{stage}: {mounted:?}");
        assert!(
            mounted[0].starts_with(&format!("vaultline-{stage}-")),
            "{stage}: {mounted:?}"
        );
        let secret = secrets.get(mounted[0]).context("the mounted Secret")?;
        let holds_kek = secret["data"]["kek.txt"].is_string();
        assert_eq!(holds_kek, stage == "verifier", "{stage} and the KEK");
    }
    let policies = of_kind(&docs, "NetworkPolicy");
    let egress_ports: BTreeSet<u64> = policies
        .iter()
        .find(|p| p["metadata"]["name"] == "vaultline-stages")
        .context("the stages' NetworkPolicy")?["spec"]["egress"]
        .as_sequence()
        .into_iter()
        .flatten()
        .flat_map(|rule| rule["ports"].as_sequence().into_iter().flatten())
        .filter_map(|port| port["port"].as_u64())
        .collect();
    // NATS, PostgreSQL, S3 over HTTPS, DNS.
    assert_eq!(egress_ports, BTreeSet::from([4222, 5432, 443, 53]));
    Ok(())
}

#[test]
fn the_rule_and_dashboards_in_the_cluster_are_the_shipped_ones() -> Result<()> {
    let docs = built()?;
    let rules = crate::operate::yaml(&repo_root().join("deploy/prometheus/rules.yml"))?;
    let rule = of_kind(&docs, "PrometheusRule");
    assert_eq!(rule.len(), 1);
    assert_eq!(rule[0]["spec"]["groups"], rules["groups"]);
    assert_eq!(of_kind(&docs, "ServiceMonitor").len(), 1);
    let maps: BTreeMap<&str, &Value> = of_kind(&docs, "ConfigMap")
        .into_iter()
        .filter(|m| m["metadata"]["labels"]["grafana_dashboard"] == "1")
        .map(|m| (m["metadata"]["name"].as_str().unwrap_or_default(), m))
        .collect();
    let mut dashboards = 0;
    for entry in std::fs::read_dir(repo_root().join("deploy/grafana"))? {
        let path = entry?.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let stem = path.file_stem().unwrap_or_default().to_string_lossy();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let map = maps
            .iter()
            .find(|(k, _)| k.starts_with(&format!("vaultline-dashboard-{stem}")))
            .with_context(|| format!("no ConfigMap for {name}"))?
            .1;
        assert_eq!(
            map["data"][name.as_ref()].as_str(),
            Some(std::fs::read_to_string(&path)?.as_str()),
            "{name} differs in its ConfigMap"
        );
        dashboards += 1;
    }
    assert_eq!(dashboards, 3);
    Ok(())
}
