//! Logs and traces: JSON log lines that carry `trace_id` and `span_id`, W3C
//! `traceparent` in and out of every hop, and OTLP export only when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
//!
//! Every span gets real OpenTelemetry ids even when nothing is exported, so
//! the `traceparent` a trainee copies from a response header always matches
//! the `trace_id` in the log lines of every service the request touched.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::sync::OnceLock;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{BatchConfigBuilder, SdkTracerProvider};
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::layer::{Context as LayerContext, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{Env, EnvVar};

/// `OTEL_EXPORTER_OTLP_ENDPOINT`.
pub const OTEL_EXPORTER_OTLP_ENDPOINT: EnvVar = EnvVar::optional(
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "an http:// URL of an OTLP/HTTP collector",
    "Where spans are exported (OTLP over HTTP); unset means no export",
);
/// `OTEL_SERVICE_NAME`.
pub const OTEL_SERVICE_NAME: EnvVar = EnvVar::optional(
    "OTEL_SERVICE_NAME",
    "a service name",
    "Service name on spans and log lines; defaults to the binary's name",
);
/// `RUST_LOG`.
pub const RUST_LOG: EnvVar = EnvVar::with_default(
    "RUST_LOG",
    "info",
    "a tracing filter such as info or debug,hyper=warn",
    "Log level filter",
);

/// The variables [`init`] reads.
pub const ENV: &[EnvVar] = &[OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_SERVICE_NAME, RUST_LOG];

/// Keeps the tracer provider alive; dropping it flushes pending spans.
#[must_use = "dropping the guard shuts telemetry down"]
pub struct TelemetryGuard {
    provider: SdkTracerProvider,
    exporting: bool,
}

impl fmt::Debug for TelemetryGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TelemetryGuard")
            .field("exporting", &self.exporting)
            .finish()
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if !self.exporting {
            return;
        }
        let provider = self.provider.clone();
        let flush = move || {
            if let Err(e) = provider.shutdown() {
                eprintln!("telemetry: flushing spans failed: {e}");
            }
        };
        // The batch processor runs on the tokio runtime; flushing blocks
        // until it answers, so step off the async worker first.
        match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(flush);
            }
            _ => flush(),
        }
    }
}

/// Errors from [`init`].
#[derive(Debug)]
pub struct TelemetryError(String);

impl fmt::Display for TelemetryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TelemetryError {}

/// Installs JSON logging and tracing for a service binary, writing to stdout.
///
/// Must be called from inside the tokio runtime when export is on.
pub fn init(default_service: &str, env: &dyn Env) -> Result<TelemetryGuard, TelemetryError> {
    init_with_writer(default_service, env, io::stdout)
}

/// Like [`init`], with a chosen log destination (tests capture lines with it).
pub fn init_with_writer<W>(
    default_service: &str,
    env: &dyn Env,
    writer: W,
) -> Result<TelemetryGuard, TelemetryError>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let service = env
        .var(OTEL_SERVICE_NAME.name)
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| default_service.to_owned());
    let endpoint = env
        .var(OTEL_EXPORTER_OTLP_ENDPOINT.name)
        .filter(|s| !s.trim().is_empty());
    let filter = env
        .var(RUST_LOG.name)
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| "info".to_owned());
    let filter = EnvFilter::try_new(format!(
        "{filter},hyper=warn,h2=warn,reqwest=warn,tower=warn,opentelemetry=warn,opentelemetry_sdk=warn"
    ))
    .map_err(|e| {
        TelemetryError(format!(
            "invalid configuration: RUST_LOG={filter:?} is invalid: {e} (expected {})",
            RUST_LOG.expected
        ))
    })?;

    let resource = Resource::builder()
        .with_service_name(service.clone())
        .build();
    let mut builder = SdkTracerProvider::builder().with_resource(resource);
    let exporting = endpoint.is_some();
    if let Some(endpoint) = &endpoint {
        let endpoint = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(endpoint)
            .with_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| {
                TelemetryError(format!(
                    "invalid configuration: OTEL_EXPORTER_OTLP_ENDPOINT could not be used: {e}"
                ))
            })?;
        let batch = BatchConfigBuilder::default()
            .with_max_queue_size(8192)
            .with_scheduled_delay(Duration::from_millis(1000))
            .build();
        let processor =
            opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor::builder(
                exporter,
                opentelemetry_sdk::runtime::Tokio,
            )
            .with_batch_config(batch)
            .build();
        builder = builder.with_span_processor(processor);
    }
    let provider = builder.build();
    let tracer = provider.tracer(service.clone());

    let fmt_layer = tracing_subscriber::fmt::layer()
        .event_format(JsonFormat {
            service: service.clone(),
        })
        .with_writer(writer);
    tracing_subscriber::registry()
        .with(ServiceFieldLayer)
        .with(tracing_opentelemetry::layer().with_tracer(tracer))
        .with(fmt_layer.with_filter(filter))
        .try_init()
        .map_err(|e| TelemetryError(format!("telemetry is already initialised: {e}")))?;

    Ok(TelemetryGuard {
        provider,
        exporting,
    })
}

/// The `service` a span declared, stored so log lines can name the hop even
/// when several services share one process (`cloudmart up`, the tests).
struct ServiceName(String);

/// Records a span's `service` field into its extensions.
struct ServiceFieldLayer;

impl<S> Layer<S> for ServiceFieldLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: LayerContext<'_, S>,
    ) {
        if attrs.metadata().fields().field("service").is_none() {
            return;
        }
        let mut visitor = JsonVisitor::default();
        attrs.record(&mut visitor);
        if let (Some(Value::String(name)), Some(span)) = (visitor.0.remove("service"), ctx.span(id))
        {
            span.extensions_mut().insert(ServiceName(name));
        }
    }
}

/// Formats each event as one JSON object per line.
struct JsonFormat {
    service: String,
}

impl<S, N> FormatEvent<S, N> for JsonFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut line = Map::new();
        let mut ts = String::new();
        SystemTime.format_time(&mut Writer::new(&mut ts))?;
        line.insert("timestamp".into(), Value::String(ts));
        let meta = event.metadata();
        line.insert("level".into(), Value::String(meta.level().to_string()));

        let mut service = None;
        let mut span_name = None;
        let mut leaf_id = None;
        if let Some(scope) = ctx.event_scope() {
            for span in scope {
                if leaf_id.is_none() {
                    leaf_id = Some(span.id());
                    span_name = Some(span.name());
                }
                if service.is_none() {
                    service = span.extensions().get::<ServiceName>().map(|s| s.0.clone());
                }
            }
        }
        line.insert(
            "service".into(),
            Value::String(service.unwrap_or_else(|| self.service.clone())),
        );
        line.insert("target".into(), Value::String(meta.target().to_owned()));

        let mut visitor = JsonVisitor::default();
        event.record(&mut visitor);
        let message = visitor
            .0
            .remove("message")
            .unwrap_or(Value::String(String::new()));
        line.insert("message".into(), message);
        for (k, v) in visitor.0 {
            if !k.starts_with("log.") {
                line.insert(k, v);
            }
        }
        if let Some(name) = span_name {
            line.insert("span".into(), Value::String(name.to_owned()));
        }
        if let Some(id) = leaf_id {
            let cx = tracing::dispatcher::get_default(|d| {
                tracing_opentelemetry::get_otel_context(&id, d)
            });
            if let Some(cx) = cx {
                let sc = cx.span().span_context().clone();
                if sc.is_valid() {
                    line.insert("trace_id".into(), Value::String(sc.trace_id().to_string()));
                    line.insert("span_id".into(), Value::String(sc.span_id().to_string()));
                }
            }
        }
        let text = serde_json::to_string(&line).map_err(|_| fmt::Error)?;
        writeln!(writer, "{text}")
    }
}

/// Collects event and span fields as JSON values.
#[derive(Default)]
struct JsonVisitor(Map<String, Value>);

impl Visit for JsonVisitor {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0
            .insert(field.name().into(), Value::from(value.to_string()));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().into(), Value::from(format!("{value:?}")));
    }
}

fn propagator() -> &'static TraceContextPropagator {
    static PROPAGATOR: OnceLock<TraceContextPropagator> = OnceLock::new();
    PROPAGATOR.get_or_init(TraceContextPropagator::new)
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(key), HeaderValue::try_from(value)) {
            self.0.insert(name, value);
        }
    }
}

/// The remote parent carried by `traceparent` in `headers`, if any.
pub fn extract(headers: &HeaderMap) -> Context {
    propagator().extract(&HeaderExtractor(headers))
}

/// Writes `traceparent` for `span` into `headers`.
pub fn inject(span: &tracing::Span, headers: &mut HeaderMap) {
    propagator().inject_context(&span.context(), &mut HeaderInjector(headers));
}

/// The trace context of `span` as string pairs, for carriers that are not
/// HTTP headers (AMQP message headers).
pub fn inject_map(span: &tracing::Span) -> HashMap<String, String> {
    let mut map = HashMap::new();
    propagator().inject_context(&span.context(), &mut map);
    map
}

/// The remote parent carried in string pairs.
pub fn extract_map(map: &HashMap<String, String>) -> Context {
    propagator().extract(map)
}

/// The `traceparent` value that identifies `span`.
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    let mut headers = HeaderMap::new();
    inject(span, &mut headers);
    headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// The trace id of `span` as 32 hex digits.
pub fn trace_id(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| sc.trace_id().to_string())
}
