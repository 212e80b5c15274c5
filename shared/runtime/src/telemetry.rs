//! Logs and traces. Logs go to stderr, filtered by `RUST_LOG` (default
//! `info`); while a stage handles a message, every line carries that
//! message's `trace_id`. Traces go out over OTLP/gRPC when `[telemetry]
//! otlp-endpoint` is set (off by default): one span per message handled,
//! parented to the span of the stage that published it, so one snapshot is
//! one trace from trigger to verified, across processes.

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::collections::HashMap;
use std::sync::Mutex;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

static PROVIDER: Mutex<Option<SdkTracerProvider>> = Mutex::new(None);

/// Where and as whom spans are exported.
#[derive(Debug, Clone)]
pub struct Export {
    /// OTLP/gRPC endpoint, e.g. `http://collector:4317`.
    pub endpoint: String,
    /// The `service.name` of this process's spans.
    pub service: String,
}

/// Installs the subscriber without exporting spans; once per process,
/// later calls do nothing.
pub fn init() {
    let _ = init_exporting(None);
}

/// Installs the subscriber, exporting spans when `export` says where. The
/// exporting layer is part of the subscriber from the start: spans are only
/// parented across processes when their layer can be reached (a layer
/// swapped in later through `reload` cannot). With `export`, call it inside
/// the Tokio runtime (tonic's channel needs it).
///
/// # Errors
/// When the exporter cannot be built; logging is installed regardless.
pub fn init_exporting(export: Option<&Export>) -> Result<(), String> {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,async_nats=warn"));
    // Colour only on a terminal: files and log collectors get plain text.
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let (provider, failed) = match export.map(provider).transpose() {
        Ok(provider) => (provider, None),
        Err(error) => (None, Some(error)),
    };
    let layer = provider
        .as_ref()
        .map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer("vaultline")));
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(layer)
        .with(fmt)
        .try_init()
        .is_ok();
    if let (true, Some(provider), Some(export)) = (installed, provider, export) {
        *PROVIDER
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(provider);
        tracing::info!(endpoint = %export.endpoint, service = %export.service, "Exporting spans over OTLP.");
    }
    failed.map_or(Ok(()), Err)
}

fn provider(export: &Export) -> Result<SdkTracerProvider, String> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(&export.endpoint)
        .build()
        .map_err(|e| format!("OTLP exporter for {}: {e}", export.endpoint))?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(export.service.clone())
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

/// Sends what is still buffered and stops exporting (at shutdown).
pub async fn flush() {
    let provider = PROVIDER
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take();
    if let Some(provider) = provider {
        let _ = tokio::task::spawn_blocking(move || provider.shutdown()).await;
    }
}

/// The trace id of a W3C `traceparent` (`00-<trace id>-<span id>-<flags>`).
pub fn trace_id(traceparent: &str) -> &str {
    traceparent.split('-').nth(1).unwrap_or("-")
}

/// Makes `span` a child of the span that `traceparent` names, and returns
/// the `traceparent` its own outputs carry: the span's own, when spans are
/// exported, else the one received (same trace id either way).
pub fn adopt(span: &tracing::Span, traceparent: &str) -> String {
    let carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    let parent = TraceContextPropagator::new().extract(&carrier);
    let _ = span.set_parent(parent);
    let context = span.context();
    let own = context.span().span_context().clone();
    if own.is_valid() {
        format!(
            "00-{}-{}-{:02x}",
            own.trace_id(),
            own.span_id(),
            own.trace_flags().to_u8()
        )
    } else {
        traceparent.to_owned()
    }
}
