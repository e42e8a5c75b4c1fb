//! Logs and traces: log lines that carry `trace_id` and `span_id` (JSON,
//! or text on a terminal: [`LogFormat`]), W3C `traceparent` in and out of
//! every hop, and OTLP export only when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
//!
//! Every span gets real OpenTelemetry ids even when nothing is exported, so
//! the `traceparent` a trainee copies from a response header always matches
//! the `trace_id` in the log lines of every service the request touched.
//!
//! Export is batched and never blocks a request: a finished span goes into a
//! bounded queue ([`MAX_QUEUED_SPANS`]); when the queue is full the span is
//! dropped and counted ([`spans_dropped`]). A collector that is down costs one
//! WARN line per [`WARN_INTERVAL`] at most, naming the endpoint, the cause and
//! how many spans were lost since the previous warning.
//!
//! Several services can share one process (`cloudmart up`, the tests), and an
//! OpenTelemetry resource (with its `service.name`) belongs to the whole
//! process. So each hop marks its parent context with its service
//! ([`server_parent`], [`root_in_service`], [`in_service`]); every span started
//! under it is exported in a batch whose resource names that service. In a
//! single-service binary that is simply the binary's name. Setting
//! `OTEL_SERVICE_NAME` names every span of the process, as the OpenTelemetry
//! specification says it should.

use std::fmt;
use std::io::{self, IsTerminal};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Subscriber;
use tracing::level_filters::LevelFilter;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use cloudmart_config::{Env, EnvReader, EnvVar, FromEnv, Setting};

mod export;
mod format;
mod hop;
mod ids;
mod line;
mod propagation;
#[cfg(test)]
mod tests;
mod warn;

pub use format::{LOG_FORMAT, LogFormat};
pub use hop::{begin_trace, begin_untraced, in_service, root_in_service, server_parent, untraced};
pub use ids::set_parent;
pub use propagation::{extract, extract_map, inject, inject_map, trace_id, traceparent};

use export::tracer_provider;
use ids::IdLayer;
use line::{LineFormat, ServiceFieldLayer};

pub const OTEL_EXPORTER_OTLP_ENDPOINT: Setting<String> = Setting::text(EnvVar::optional(
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "an http:// URL of an OTLP/HTTP collector",
    "Where spans are exported (OTLP over HTTP); unset means no export",
));
pub const OTEL_SERVICE_NAME: Setting<String> = Setting::text(EnvVar::optional(
    "OTEL_SERVICE_NAME",
    "a service name",
    "Service name on spans and log lines; defaults to the binary's name",
));
pub const RUST_LOG: Setting<String> = Setting::with(
    EnvVar::with_default(
        "RUST_LOG",
        "info",
        "a tracing filter such as info or debug,hyper=warn",
        "Log level filter",
    ),
    |v| {
        EnvFilter::try_new(v)
            .map(|_| v.to_owned())
            .map_err(|e| e.to_string())
    },
);

/// What [`init`] reads from the environment.
#[derive(Debug, Clone)]
pub struct TelemetryConfig {
    endpoint: Option<String>,
    service_name: Option<String>,
    filter: String,
    format: Option<LogFormat>,
}

impl FromEnv for TelemetryConfig {
    fn read(r: &mut EnvReader<'_>) -> Self {
        Self {
            endpoint: r.optional(&OTEL_EXPORTER_OTLP_ENDPOINT),
            service_name: r.optional(&OTEL_SERVICE_NAME),
            filter: r.get(&RUST_LOG),
            format: r.optional(&LOG_FORMAT),
        }
    }
}

/// Finished spans waiting for export at most; past this they are dropped
/// (and counted) rather than held in memory or waited for.
pub const MAX_QUEUED_SPANS: usize = 8192;
/// The least time between two warnings about a failing export.
pub const WARN_INTERVAL: Duration = Duration::from_secs(30);
/// Spans dropped because the export queue was full, since the process started.
pub(crate) static SPANS_DROPPED: AtomicU64 = AtomicU64::new(0);

/// Spans dropped since the process started because the export queue was
/// full (the collector slow or down); for a metric or a health report.
pub fn spans_dropped() -> u64 {
    SPANS_DROPPED.load(Ordering::Relaxed)
}

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

/// Installs logging and tracing for a service binary, writing to stdout:
/// text lines when stdout is a terminal, JSON otherwise, unless
/// `LOG_FORMAT` says which.
///
/// Must be called from inside the tokio runtime when export is on.
pub fn init(default_service: &str, env: &dyn Env) -> Result<TelemetryGuard, TelemetryError> {
    let terminal = io::stdout().is_terminal();
    install(default_service, env, io::stdout, terminal)
}

/// Like [`init`], with a chosen log destination (tests capture lines with
/// it). The destination counts as no terminal: JSON unless `LOG_FORMAT`
/// says text.
pub fn init_with_writer<W>(
    default_service: &str,
    env: &dyn Env,
    writer: W,
) -> Result<TelemetryGuard, TelemetryError>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    install(default_service, env, writer, false)
}

fn install<W>(
    default_service: &str,
    env: &dyn Env,
    writer: W,
    terminal: bool,
) -> Result<TelemetryGuard, TelemetryError>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let (subscriber, guard) = build(default_service, env, writer, terminal)?;
    subscriber
        .try_init()
        .map_err(|e| TelemetryError(format!("telemetry is already initialised: {e}")))?;
    Ok(guard)
}

/// The subscriber [`init`] installs, and the guard of its tracer provider.
fn build<W>(
    default_service: &str,
    env: &dyn Env,
    writer: W,
    terminal: bool,
) -> Result<(impl Subscriber + Send + Sync + 'static, TelemetryGuard), TelemetryError>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let config = TelemetryConfig::from_env(env).map_err(|e| TelemetryError(e.to_string()))?;
    // OTEL_SERVICE_NAME names the whole process; without it each hop's spans
    // carry the service that ran them.
    let per_hop = config.service_name.is_none();
    let service = config
        .service_name
        .unwrap_or_else(|| default_service.to_owned());
    let filter = config.filter;
    // opentelemetry-otlp warns once per failed batch; HopExporter reports
    // export failures itself, at most once per WARN_INTERVAL. RUST_LOG's
    // rule has checked the user's part already, so this only fails if the
    // fixed part below is broken.
    let filter = EnvFilter::try_new(format!(
        "{filter},hyper=warn,h2=warn,reqwest=warn,tower=warn,opentelemetry=warn,opentelemetry_sdk=warn,opentelemetry-otlp=error"
    ))
    .map_err(|e| {
        TelemetryError(format!(
            "invalid configuration: RUST_LOG={filter:?} is invalid: {e} (expected {})",
            RUST_LOG.var.expected
        ))
    })?;
    let format = config.format.unwrap_or(LogFormat::when_unset(terminal));
    let endpoint = config.endpoint;
    let provider = tracer_provider(&service, endpoint.as_deref(), per_hop)?;
    let tracer = provider.tracer(service.clone());

    let services = ServiceFieldLayer::default();
    let fmt_layer = tracing_subscriber::fmt::layer()
        .event_format(LineFormat {
            service: service.clone(),
            dispatch: services.dispatch.clone(),
            format,
        })
        .with_writer(writer);
    // Spans are traced at INFO and above whatever RUST_LOG says, so every
    // request has a trace id even when only warnings are logged. The
    // OpenTelemetry crates' own events stay out of the spans.
    let traced = Targets::new()
        .with_default(LevelFilter::INFO)
        .with_target("opentelemetry", LevelFilter::OFF);
    // OpenTelemetry spans only when they leave the process; otherwise each
    // span gets its ids and nothing more (ids.rs).
    let (otel, ids) = if endpoint.is_some() {
        let otel = tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_filter(traced);
        (Some(otel), None)
    } else {
        (None, Some(IdLayer.with_filter(traced)))
    };
    let subscriber = tracing_subscriber::registry()
        .with(services)
        .with(otel)
        .with(ids)
        .with(fmt_layer.with_filter(filter));
    Ok((
        subscriber,
        TelemetryGuard {
            provider,
            exporting: endpoint.is_some(),
        },
    ))
}
