//! One snapshot is one trace: every stage, each in its own process, exports
//! its spans over OTLP to a receiver inside this test (opentelemetry-proto's
//! gRPC trace service), all under the snapshot's trace id, each parented to
//! the span of the stage whose message it handled; and the stages' log lines
//! carry that trace id.

use crate::harness::{Env, Process};
use anyhow::Result;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::trace::v1::Span;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vaultline_types::StageName;

/// Spans received, with the service that sent each.
#[derive(Clone, Default)]
struct Collector(Arc<Mutex<Vec<(String, Span)>>>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut received = self.0.lock().expect("collector lock");
        for resource in request.into_inner().resource_spans {
            let service = resource
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|a| a.key == "service.name")
                .and_then(|a| match a.value.as_ref()?.value.as_ref()? {
                    Any::StringValue(name) => Some(name.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for scope in resource.scope_spans {
                for span in scope.spans {
                    received.push((service.clone(), span));
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

fn attribute<'a>(span: &'a Span, key: &str) -> Option<&'a str> {
    span.attributes.iter().find(|a| a.key == key).and_then(|a| {
        match a.value.as_ref()?.value.as_ref()? {
            Any::StringValue(value) => Some(value.as_str()),
            _ => None,
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_snapshot_is_one_trace_across_stage_processes() -> Result<()> {
    let (env, _tree) = Env::with_small_source().await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let endpoint = format!("http://{}", listener.local_addr()?);
    let collector = Collector::default();
    let server = tonic::transport::Server::builder()
        .add_service(TraceServiceServer::new(collector.clone()))
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
    let server = tokio::spawn(server);

    let vars = [
        ("VAULTLINE_TELEMETRY__OTLP_ENDPOINT", endpoint),
        // Export every 200 ms rather than every 5 s.
        ("OTEL_BSP_SCHEDULE_DELAY", "200".to_owned()),
    ];
    let log = env.path("verifier.log");
    let mut processes = Vec::new();
    for stage in crate::harness::consumer_stages() {
        let name = format!("vaultline-{stage}");
        let process = if stage == StageName::Verifier {
            Process::start_logged(&env, &name, &vars, &log)?
        } else {
            Process::start_with(&env, &name, &vars)?
        };
        processes.push(process);
    }
    env.cli(&["backup", "acme/docs"]).await?;
    let row = env.wait_final(1).await?;
    crate::harness::assert_verified(&row);
    let snapshot = row.id.to_string();

    // The snapshot's spans: those that name it, and from them their trace.
    let deadline = Instant::now() + Duration::from_secs(60);
    let (trace, spans) = loop {
        let received = collector.0.lock().expect("collector lock").clone();
        let trace = received
            .iter()
            .find(|(_, s)| attribute(s, "snapshot") == Some(snapshot.as_str()))
            .map(|(_, s)| s.trace_id.clone());
        let spans: Vec<(String, Span)> = received
            .into_iter()
            .filter(|(_, s)| Some(&s.trace_id) == trace.as_ref())
            .collect();
        let services: BTreeSet<&str> = spans.iter().map(|(n, _)| n.as_str()).collect();
        // The pipeline's five, each its own process (retention follows), and
        // every parent that will come has come (spans arrive in batches).
        let ids: BTreeSet<&[u8]> = spans.iter().map(|(_, s)| s.span_id.as_slice()).collect();
        let orphans = spans
            .iter()
            .filter(|(n, s)| {
                !ids.contains(s.parent_span_id.as_slice())
                    && !["vaultline-extractor", "vaultline-auditor"].contains(&n.as_str())
            })
            .count();
        if orphans == 0
            && ["extractor", "packager", "uploader", "verifier", "auditor"]
                .iter()
                .all(|stage| services.contains(format!("vaultline-{stage}").as_str()))
        {
            break (trace.unwrap_or_default(), spans);
        }
        if Instant::now() >= deadline {
            let seen: Vec<String> = collector
                .0
                .lock()
                .expect("collector lock")
                .iter()
                .map(|(n, s)| {
                    let snapshot = attribute(s, "snapshot").unwrap_or("-");
                    format!("{n} {} {} {snapshot}", hex::encode(&s.trace_id), s.name)
                })
                .collect();
            anyhow::bail!(
                "after 60s, spans of the snapshot's trace from {services:?}, {orphans} without their parent; received:\n{}",
                seen.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    // Parented correctly: every span's parent is a span of this trace, or
    // (only for the extractor and the auditor, which consume the trigger)
    // the trigger's, published by the CLI.
    let ids: BTreeMap<&[u8], &str> = spans
        .iter()
        .map(|(n, s)| (s.span_id.as_slice(), n.as_str()))
        .collect();
    for (service, span) in &spans {
        assert!(!span.parent_span_id.is_empty(), "{service}: a root span");
        match ids.get(span.parent_span_id.as_slice()) {
            Some(parent) => assert_ne!(parent, service, "{service} is its own parent"),
            None => assert!(
                ["vaultline-extractor", "vaultline-auditor"].contains(&service.as_str()),
                "{service}'s parent is not in the trace"
            ),
        }
    }
    // The chain runs extractor → packager → uploader → verifier.
    let parent_of = |stage: &str| {
        spans
            .iter()
            .filter(|(n, _)| n == &format!("vaultline-{stage}"))
            .filter_map(|(_, s)| ids.get(s.parent_span_id.as_slice()).copied())
            .collect::<BTreeSet<_>>()
    };
    assert!(parent_of("packager").contains("vaultline-extractor"));
    assert!(parent_of("uploader").contains("vaultline-packager"));
    assert!(parent_of("verifier").contains("vaultline-uploader"));

    // The verifier's log lines while it handles the snapshot carry its trace id.
    let trace_hex = hex::encode(&trace);
    let text = std::fs::read_to_string(&log)?;
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("stage{") && l.contains(&snapshot))
        .collect();
    assert!(!lines.is_empty(), "no log line names the snapshot:\n{text}");
    for line in lines {
        assert!(line.contains(&format!("trace_id={trace_hex}")), "{line}");
    }
    drop(processes);
    server.abort();
    Ok(())
}
