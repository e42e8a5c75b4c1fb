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

use std::collections::HashMap;
use std::fmt;
use std::io::{self, IsTerminal};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    Sampler, SamplingDecision, SamplingResult, SdkTracerProvider, ShouldSample, SpanData,
    SpanExporter, SpanProcessor,
};
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::{Event, Subscriber};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::layer::{Context as LayerContext, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use cloudmart_config::{Env, EnvVar};

mod format;

pub use format::{LOG_FORMAT, LogFormat};

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
pub const ENV: &[EnvVar] = &[
    OTEL_EXPORTER_OTLP_ENDPOINT,
    OTEL_SERVICE_NAME,
    RUST_LOG,
    LOG_FORMAT,
];

/// Finished spans waiting for export at most; past this they are dropped
/// (and counted) rather than held in memory or waited for.
pub const MAX_QUEUED_SPANS: usize = 8192;
/// Spans per export request.
const EXPORT_BATCH_SIZE: usize = 256;
/// How often the batch is sent when it is not full.
const EXPORT_INTERVAL: Duration = Duration::from_millis(1000);
/// One export request, the exporter's own retries included.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);
/// The least time between two warnings about a failing export.
pub const WARN_INTERVAL: Duration = Duration::from_secs(30);
/// Span attribute through which the processor tells the exporter which
/// service a span belongs to; removed before export.
const HOP_SERVICE_KEY: &str = "cloudmart.hop.service";

/// Spans dropped because the export queue was full, since the process started.
static SPANS_DROPPED: AtomicU64 = AtomicU64::new(0);

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
    let named = env
        .var(OTEL_SERVICE_NAME.name)
        .filter(|s| !s.trim().is_empty());
    // OTEL_SERVICE_NAME names the whole process; without it each hop's spans
    // carry the service that ran them.
    let per_hop = named.is_none();
    let service = named.unwrap_or_else(|| default_service.to_owned());
    let filter = env
        .var(RUST_LOG.name)
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| "info".to_owned());
    // opentelemetry-otlp warns once per failed batch; HopExporter reports
    // export failures itself, at most once per WARN_INTERVAL.
    let filter = EnvFilter::try_new(format!(
        "{filter},hyper=warn,h2=warn,reqwest=warn,tower=warn,opentelemetry=warn,opentelemetry_sdk=warn,opentelemetry-otlp=error"
    ))
    .map_err(|e| {
        TelemetryError(format!(
            "invalid configuration: RUST_LOG={filter:?} is invalid: {e} (expected {})",
            RUST_LOG.expected
        ))
    })?;
    let format =
        LogFormat::choose(env.var(LOG_FORMAT.name).as_deref(), terminal).map_err(TelemetryError)?;
    let endpoint = export_endpoint(env);
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
    let subscriber = tracing_subscriber::registry()
        .with(services)
        .with(
            tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_filter(traced),
        )
        .with(fmt_layer.with_filter(filter));
    Ok((
        subscriber,
        TelemetryGuard {
            provider,
            exporting: endpoint.is_some(),
        },
    ))
}

/// `OTEL_EXPORTER_OTLP_ENDPOINT`, when set and not blank: the only thing
/// that turns export on.
fn export_endpoint(env: &dyn Env) -> Option<String> {
    env.var(OTEL_EXPORTER_OTLP_ENDPOINT.name)
        .filter(|s| !s.trim().is_empty())
}

/// A tracer provider that gives every span real ids and, with an
/// `endpoint`, exports them in batches through a bounded queue.
fn tracer_provider(
    service: &str,
    endpoint: Option<&str>,
    per_hop: bool,
) -> Result<SdkTracerProvider, TelemetryError> {
    let resource = service_resource(service);
    let mut builder = SdkTracerProvider::builder()
        .with_resource(resource.clone())
        .with_sampler(HopSampler::default());
    if let Some(endpoint) = endpoint {
        let url = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
        let make = {
            let url = url.clone();
            move || {
                opentelemetry_otlp::SpanExporter::builder()
                    .with_http()
                    .with_endpoint(url.clone())
                    .with_timeout(EXPORT_TIMEOUT)
                    .build()
                    .map_err(|e| e.to_string())
            }
        };
        // Fail at start-up, naming the variable, if the endpoint cannot work.
        make().map_err(|e| {
            TelemetryError(format!(
                "invalid configuration: OTEL_EXPORTER_OTLP_ENDPOINT={endpoint:?} could not be used: {e}"
            ))
        })?;
        let queue = Arc::new(Queue::new(MAX_QUEUED_SPANS));
        let exporter = HopExporter::new(url, resource, queue.clone(), make);
        let batcher = ThreadBatcher::start(exporter);
        builder = builder.with_span_processor(HopProcessor {
            inner: batcher,
            per_hop,
            queue,
        });
    }
    Ok(builder.build())
}

/// The resource of `service`'s spans: its name plus the SDK's own attributes.
fn service_resource(service: &str) -> Resource {
    Resource::builder()
        .with_service_name(service.to_owned())
        .build()
}

/// The service a hop's spans belong to, carried in the OpenTelemetry context
/// from the hop's first span to every span started under it.
#[derive(Debug, Clone, Copy)]
struct Hop(&'static str);

/// `cx` marked as the work of `service`: spans started under it are
/// exported with `service.name` set to `service`.
pub fn in_service(cx: Context, service: &'static str) -> Context {
    cx.with_value(Hop(service))
}

/// The parent of a server span: the caller's trace from the `traceparent`
/// in `headers` (none starts a new trace), marked as `service`'s work.
pub fn server_parent(service: &'static str, headers: &HeaderMap) -> Context {
    in_service(extract(headers), service)
}

/// The parent of a span that starts a trace of its own inside `service`
/// (a relay pass, a background loop).
pub fn root_in_service(service: &'static str) -> Context {
    in_service(Context::new(), service)
}

/// Makes `span` (created with `parent: None`, not yet entered) the root of
/// a new trace whose spans are `service`'s.
pub fn begin_trace(span: &tracing::Span, service: &'static str) {
    let _ = span.set_parent(root_in_service(service));
}

/// Like [`begin_trace`], but nothing under `span` is exported: for
/// background polling that would otherwise add a trace every interval.
pub fn begin_untraced(span: &tracing::Span, service: &'static str) {
    let _ = span.set_parent(untraced(root_in_service(service)));
}

/// Marks a context whose spans are not exported: probe and scrape traffic
/// (`/health`, `/ready`, `/metrics`), which would otherwise bury the
/// traces of real requests. Their spans still get ids, so log lines and
/// `traceparent` work as everywhere else.
#[derive(Debug, Clone, Copy)]
struct Untraced;

/// `cx` with every span started under it left out of export.
pub fn untraced(cx: Context) -> Context {
    cx.with_value(Untraced)
}

/// Follows the parent's decision (everything is sampled unless a caller
/// said otherwise in `traceparent`) and drops spans under [`untraced`].
#[derive(Debug, Clone)]
struct HopSampler(Sampler);

impl Default for HopSampler {
    fn default() -> Self {
        Self(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)))
    }
}

impl ShouldSample for HopSampler {
    fn should_sample(
        &self,
        parent_context: Option<&Context>,
        trace_id: opentelemetry::trace::TraceId,
        name: &str,
        span_kind: &opentelemetry::trace::SpanKind,
        attributes: &[KeyValue],
        links: &[opentelemetry::trace::Link],
    ) -> SamplingResult {
        if let Some(cx) = parent_context
            && cx.get::<Untraced>().is_some()
        {
            return SamplingResult {
                decision: SamplingDecision::Drop,
                attributes: Vec::new(),
                trace_state: cx.span().span_context().trace_state().clone(),
            };
        }
        self.0
            .should_sample(parent_context, trace_id, name, span_kind, attributes, links)
    }
}

/// Finished spans admitted to the export queue and not yet handed to the
/// exporter, with a hard limit.
#[derive(Debug)]
struct Queue {
    waiting: AtomicUsize,
    limit: usize,
    dropped: AtomicU64,
}

impl Queue {
    fn new(limit: usize) -> Self {
        Self {
            waiting: AtomicUsize::new(0),
            limit,
            dropped: AtomicU64::new(0),
        }
    }

    /// Counts a span that found the queue full.
    fn drop_one(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
        SPANS_DROPPED.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes a place in the queue; `false` when it is full.
    fn admit(&self) -> bool {
        self.waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.limit).then_some(n + 1)
            })
            .is_ok()
    }

    /// Gives back the places of `n` spans that left the queue.
    fn release(&self, n: usize) {
        let _ = self
            .waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                Some(w.saturating_sub(n))
            });
    }
}

/// Tags each span with its hop's service and keeps the export queue bounded
/// in front of the batch processor, counting what it has to drop.
///
/// Nothing here waits: a full queue drops the span at once, so a slow or
/// absent collector never slows a request down.
#[derive(Debug)]
struct HopProcessor<P> {
    inner: P,
    per_hop: bool,
    queue: Arc<Queue>,
}

impl<P: SpanProcessor> SpanProcessor for HopProcessor<P> {
    fn on_start(&self, span: &mut opentelemetry_sdk::trace::Span, cx: &Context) {
        if self.per_hop
            && let Some(hop) = cx.get::<Hop>()
        {
            use opentelemetry::trace::Span as _;
            span.set_attribute(KeyValue::new(HOP_SERVICE_KEY, hop.0));
        }
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        if self.queue.admit() {
            self.inner.on_end(span);
        } else {
            // No logging here: this runs while a span closes. The exporter
            // reports the count with its next warning.
            self.queue.drop_one();
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// Buffers finished spans and exports them from a thread of its own, with
/// a one-thread runtime, so encoding and sending never take a worker
/// thread from the requests.
///
/// Closing a span only pushes it onto a buffer under a short lock. The
/// export thread is woken when a full batch is waiting, or else once per
/// [`EXPORT_INTERVAL`], not once per span: the SDK's batch processor wakes
/// its task for every span, which here cost thousands of context switches
/// a second and about 2 ms of p99 at 200 orders/s. [`HopProcessor`] in
/// front keeps the buffer bounded.
struct ThreadBatcher {
    shared: Arc<BatchShared>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

#[derive(Default)]
struct BatchShared {
    spans: Mutex<Vec<SpanData>>,
    commands: Mutex<Vec<BatchCommand>>,
    wake: tokio::sync::Notify,
}

/// A request to the export thread, answered once it is done.
enum BatchCommand {
    Flush(std::sync::mpsc::Sender<()>),
    Shutdown(std::sync::mpsc::Sender<()>),
}

impl fmt::Debug for ThreadBatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThreadBatcher").finish_non_exhaustive()
    }
}

impl ThreadBatcher {
    fn start<E: SpanExporter + 'static>(exporter: E) -> Self {
        let shared = Arc::new(BatchShared::default());
        let worker = shared.clone();
        let thread = std::thread::Builder::new()
            .name("otel-export".to_owned())
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt.block_on(export_loop(exporter, &worker)),
                    Err(e) => eprintln!("telemetry: no runtime for span export: {e}"),
                }
            })
            .map_err(|e| eprintln!("telemetry: no thread for span export: {e}"))
            .ok();
        Self {
            shared,
            thread: Mutex::new(thread),
        }
    }

    /// Asks the export thread for `command` and waits up to `timeout`.
    fn ask(
        &self,
        command: impl FnOnce(std::sync::mpsc::Sender<()>) -> BatchCommand,
        timeout: Duration,
    ) -> OTelSdkResult {
        let (tx, rx) = std::sync::mpsc::channel();
        lock(&self.shared.commands).push(command(tx));
        self.shared.wake.notify_one();
        rx.recv_timeout(timeout)
            .map_err(|_| OTelSdkError::Timeout(timeout))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The export thread: sends what is buffered, in batches, whenever woken
/// or every [`EXPORT_INTERVAL`], and answers flush and shutdown requests.
async fn export_loop<E: SpanExporter>(exporter: E, shared: &BatchShared) {
    loop {
        let _ = tokio::time::timeout(EXPORT_INTERVAL, shared.wake.notified()).await;
        let commands = std::mem::take(&mut *lock(&shared.commands));
        loop {
            let batch: Vec<SpanData> = {
                let mut spans = lock(&shared.spans);
                let n = spans.len().min(EXPORT_BATCH_SIZE);
                spans.drain(..n).collect()
            };
            if batch.is_empty() {
                break;
            }
            // HopExporter reports failures itself.
            let _ = exporter.export(batch).await;
        }
        let mut stop = false;
        for command in commands {
            match command {
                BatchCommand::Flush(done) => {
                    let _ = done.send(());
                }
                BatchCommand::Shutdown(done) => {
                    let _ = exporter.shutdown_with_timeout(EXPORT_TIMEOUT);
                    stop = true;
                    let _ = done.send(());
                }
            }
        }
        if stop {
            return;
        }
    }
}

impl SpanProcessor for ThreadBatcher {
    fn on_start(&self, _span: &mut opentelemetry_sdk::trace::Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        let waiting = {
            let mut spans = lock(&self.shared.spans);
            spans.push(span);
            spans.len()
        };
        if waiting == EXPORT_BATCH_SIZE {
            self.shared.wake.notify_one();
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.ask(BatchCommand::Flush, EXPORT_TIMEOUT + Duration::from_secs(1))
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        let Some(thread) = lock(&self.thread).take() else {
            return Err(OTelSdkError::AlreadyShutdown);
        };
        self.ask(BatchCommand::Shutdown, timeout)?;
        let _ = thread.join();
        Ok(())
    }
}

/// Sends each batch as one request per service, with that service's
/// resource, and turns export failures into rate-limited warnings.
///
/// Failures are reported here and never returned to the SDK, which would
/// log one error per batch.
struct HopExporter<E> {
    endpoint: String,
    base: Resource,
    queue: Arc<Queue>,
    make: Box<dyn Fn() -> Result<E, String> + Send + Sync>,
    by_service: Mutex<HashMap<String, Arc<E>>>,
    warnings: Warnings,
    /// Whether a warning tries to connect to the collector to name the cause.
    probing: bool,
}

impl<E> fmt::Debug for HopExporter<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HopExporter")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl<E: SpanExporter + 'static> HopExporter<E> {
    fn new(
        endpoint: String,
        base: Resource,
        queue: Arc<Queue>,
        make: impl Fn() -> Result<E, String> + Send + Sync + 'static,
    ) -> Self {
        Self {
            endpoint,
            base,
            queue,
            make: Box::new(make),
            by_service: Mutex::new(HashMap::new()),
            warnings: Warnings::default(),
            probing: true,
        }
    }

    /// The service.name of spans no hop claimed.
    fn default_service(&self) -> String {
        self.base
            .get(&opentelemetry::Key::from_static_str("service.name"))
            .map(|v| v.to_string())
            .unwrap_or_default()
    }

    /// The exporter for `service`, made with its resource on first use.
    fn exporter_for(&self, service: &str) -> Result<Arc<E>, String> {
        let mut map = self
            .by_service
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(e) = map.get(service) {
            return Ok(e.clone());
        }
        let mut exporter = (self.make)()?;
        let attrs = self
            .base
            .iter()
            .filter(|(k, _)| k.as_str() != "service.name")
            .map(|(k, v)| KeyValue::new(k.clone(), v.clone()));
        let resource = Resource::builder_empty()
            .with_attributes(attrs)
            .with_service_name(service.to_owned())
            .build();
        exporter.set_resource(&resource);
        let exporter = Arc::new(exporter);
        map.insert(service.to_owned(), exporter.clone());
        Ok(exporter)
    }

    /// Splits `batch` by service, in first-seen order, removing the tag.
    fn group(&self, batch: Vec<SpanData>) -> Vec<(String, Vec<SpanData>)> {
        let default = self.default_service();
        let mut groups: Vec<(String, Vec<SpanData>)> = Vec::new();
        for mut span in batch {
            let mut service = None;
            span.attributes.retain(|kv| {
                if kv.key.as_str() == HOP_SERVICE_KEY {
                    service = Some(kv.value.to_string());
                    false
                } else {
                    true
                }
            });
            let service = service.unwrap_or_else(|| default.clone());
            match groups.iter_mut().find(|(s, _)| *s == service) {
                Some((_, spans)) => spans.push(span),
                None => groups.push((service, vec![span])),
            }
        }
        groups
    }

    fn all(&self) -> Vec<Arc<E>> {
        self.by_service
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }
}

impl<E: SpanExporter + 'static> SpanExporter for HopExporter<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.queue.release(batch.len());
        let mut lost = 0;
        let mut cause = None;
        for (service, spans) in self.group(batch) {
            let n = spans.len();
            let result = match self.exporter_for(&service) {
                Ok(exporter) => exporter.export(spans).await.map_err(|e| match e {
                    OTelSdkError::InternalFailure(why) => why,
                    OTelSdkError::Timeout(after) => {
                        format!("no answer within {} ms", after.as_millis())
                    }
                    other => other.to_string(),
                }),
                Err(e) => Err(e),
            };
            if let Err(e) = result {
                lost += n;
                cause.get_or_insert(e);
            }
        }
        let report = self.warnings.report(
            cause,
            lost,
            self.queue.dropped.load(Ordering::Relaxed),
            tokio::time::Instant::now(),
        );
        announce(&self.endpoint, report, self.probing).await;
        Ok(())
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        let mut result = Ok(());
        for exporter in self.all() {
            if let Err(e) = exporter.shutdown_with_timeout(timeout)
                && !matches!(e, OTelSdkError::AlreadyShutdown)
            {
                result = Err(e);
            }
        }
        result
    }

    fn force_flush(&self) -> OTelSdkResult {
        for exporter in self.all() {
            exporter.force_flush()?;
        }
        Ok(())
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.base = resource.clone();
        self.by_service
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
    }
}

/// Export failures and drops since the last warning, and when that was.
#[derive(Debug, Default)]
struct Warnings {
    state: Mutex<WarnState>,
}

#[derive(Debug, Default)]
struct WarnState {
    last: Option<tokio::time::Instant>,
    failed_batches: u64,
    lost: u64,
    dropped_reported: u64,
    failing: bool,
}

/// What one export's outcome calls for.
#[derive(Debug, PartialEq)]
enum Report {
    /// Nothing new, or the last warning is too recent.
    Quiet,
    /// Warn now about what went wrong since the last warning.
    Warn {
        cause: Option<String>,
        batches: u64,
        lost: u64,
        dropped: u64,
    },
    /// Export works again after a warning.
    Recovered { lost: u64 },
}

impl Warnings {
    /// Records one export's outcome; says to warn when there is news and
    /// the last warning is at least [`WARN_INTERVAL`] old, and once when
    /// export works again after a warning.
    fn report(
        &self,
        cause: Option<String>,
        lost: usize,
        dropped_total: u64,
        now: tokio::time::Instant,
    ) -> Report {
        let mut st = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let dropped = dropped_total.saturating_sub(st.dropped_reported);
        if cause.is_some() {
            st.failed_batches += 1;
            st.lost += u64::try_from(lost).unwrap_or(u64::MAX);
        } else if st.failing && dropped == 0 {
            let lost = st.lost;
            st.failing = false;
            st.failed_batches = 0;
            st.lost = 0;
            return Report::Recovered { lost };
        }
        if st.failed_batches == 0 && dropped == 0 {
            return Report::Quiet;
        }
        if st
            .last
            .is_some_and(|t| now.duration_since(t) < WARN_INTERVAL)
        {
            return Report::Quiet;
        }
        let report = Report::Warn {
            cause,
            batches: st.failed_batches,
            lost: st.lost,
            dropped,
        };
        st.last = Some(now);
        st.failed_batches = 0;
        st.lost = 0;
        st.dropped_reported += dropped;
        st.failing = true;
        report
    }
}

/// Longest wait for each step of [`probe`].
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Why the collector at `endpoint` cannot be reached, in the words a
/// trainee greps for ("dns error", "connection refused", "timeout"), by
/// trying what the exporter tried; `None` when a connection opens.
///
/// The OTLP exporter only says "network error"; this runs at most once per
/// warning.
async fn probe(endpoint: &str) -> Option<String> {
    let url = reqwest::Url::parse(endpoint).ok()?;
    let host = url.host_str()?.to_owned();
    let port = url.port_or_known_default()?;
    let lookup = tokio::net::lookup_host((host.as_str(), port));
    let addr = match tokio::time::timeout(PROBE_TIMEOUT, lookup).await {
        Err(_) => return Some(format!("dns error: no answer for {host} in time")),
        Ok(Err(e)) => return Some(format!("dns error: cannot resolve {host}: {e}")),
        Ok(Ok(mut addrs)) => addrs.next()?,
    };
    match tokio::time::timeout(PROBE_TIMEOUT, tokio::net::TcpStream::connect(addr)).await {
        Err(_) => Some(format!("timeout connecting to {addr}")),
        Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
            Some("connection refused".to_owned())
        }
        Ok(Err(e)) => Some(format!("cannot connect to {addr}: {e}")),
        Ok(Ok(_)) => None,
    }
}

/// Logs what [`Warnings::report`] asked for.
async fn announce(endpoint: &str, report: Report, probing: bool) {
    match report {
        Report::Quiet => {}
        Report::Recovered { lost } => tracing::info!(
            otel.endpoint = endpoint,
            spans_lost = lost,
            "exporting spans to {endpoint} works again; {lost} span(s) were lost since the last warning"
        ),
        Report::Warn {
            cause,
            batches,
            lost,
            dropped,
        } => {
            let why = match cause {
                None => "the collector is too slow".to_owned(),
                Some(c) => {
                    let seen = if probing { probe(endpoint).await } else { None };
                    match seen {
                        Some(seen) => format!("{seen} ({c})"),
                        None => format!("{c} (is the collector at {endpoint} up?)"),
                    }
                }
            };
            let mut losses = Vec::new();
            if batches > 0 {
                losses.push(format!("{lost} span(s) lost in {batches} failed export(s)"));
            }
            if dropped > 0 {
                losses.push(format!(
                    "{dropped} span(s) dropped because the queue of {MAX_QUEUED_SPANS} was full"
                ));
            }
            tracing::warn!(
                otel.endpoint = endpoint,
                spans_lost = lost,
                spans_dropped = dropped,
                failed_exports = batches,
                "cannot export spans to {endpoint}: {why}; {} since the last warning; \
                 requests are not affected; the next warning comes in {} s at the earliest",
                losses.join(" and "),
                WARN_INTERVAL.as_secs()
            );
        }
    }
}

/// The `service` a span declared, stored so log lines can name the hop even
/// when several services share one process (`cloudmart up`, the tests).
struct ServiceName(String);

/// Records a span's `service` field into its extensions, and remembers the
/// dispatcher it is part of for [`LineFormat`].
#[derive(Default)]
struct ServiceFieldLayer {
    dispatch: DispatchCell,
}

/// The dispatcher the subscriber was installed as, weakly held.
///
/// A log line looks up its span's trace id through the dispatcher. Asking
/// `tracing` for the current one while an event is being dispatched only
/// works for a global subscriber, so the formatter gets it from here.
#[derive(Clone, Default)]
struct DispatchCell(Arc<OnceLock<tracing::dispatcher::WeakDispatch>>);

impl DispatchCell {
    fn get(&self) -> Option<tracing::Dispatch> {
        self.0
            .get()
            .and_then(tracing::dispatcher::WeakDispatch::upgrade)
    }
}

impl<S> Layer<S> for ServiceFieldLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_register_dispatch(&self, subscriber: &tracing::Dispatch) {
        let _ = self.dispatch.0.set(subscriber.downgrade());
    }

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

/// Formats each event as one line, JSON or text.
struct LineFormat {
    service: String,
    dispatch: DispatchCell,
    format: LogFormat,
}

impl<S, N> FormatEvent<S, N> for LineFormat
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
            // shift_remove keeps the other fields in the order they were written.
            .shift_remove("message")
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
        // The nearest span that is traced: a DEBUG span under RUST_LOG=debug
        // is logged but not traced, and its lines carry its parent's ids.
        if leaf_id.is_some()
            && let Some(scope) = ctx.event_scope()
        {
            let ids: Vec<tracing::span::Id> = scope.map(|s| s.id()).collect();
            let nearest = |d: &tracing::Dispatch| {
                ids.iter().find_map(|id| {
                    let cx = tracing_opentelemetry::get_otel_context(id, d)?;
                    let sc = cx.span().span_context().clone();
                    sc.is_valid().then_some(sc)
                })
            };
            let found = match self.dispatch.get() {
                Some(d) => nearest(&d),
                None => tracing::dispatcher::get_default(nearest),
            };
            if let Some(sc) = found {
                line.insert("trace_id".into(), Value::String(sc.trace_id().to_string()));
                line.insert("span_id".into(), Value::String(sc.span_id().to_string()));
            }
        }
        let text = self.format.render(&line)?;
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
///
/// It starts from an empty context, not the current one: a remote parent
/// must not inherit what the local task happens to carry (an untraced
/// background loop, another service's hop).
pub fn extract(headers: &HeaderMap) -> Context {
    propagator().extract_with_context(&Context::new(), &HeaderExtractor(headers))
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
    propagator().extract_with_context(&Context::new(), map)
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

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{Span as _, Tracer as _};
    use opentelemetry_sdk::trace::SimpleSpanProcessor;
    use std::sync::atomic::AtomicBool;

    /// An exporter that keeps what it gets, tagged with the service.name of
    /// its resource, or fails while `fail` is set.
    #[derive(Debug, Clone, Default)]
    struct Recorder {
        got: Arc<Mutex<Vec<(String, SpanData)>>>,
        fail: Arc<AtomicBool>,
        service: String,
    }

    impl SpanExporter for Recorder {
        async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            if self.fail.load(Ordering::SeqCst) {
                return Err(OTelSdkError::InternalFailure(
                    "HTTP export failed: network error".to_owned(),
                ));
            }
            let mut got = self.got.lock().unwrap();
            got.extend(batch.into_iter().map(|s| (self.service.clone(), s)));
            Ok(())
        }

        fn set_resource(&mut self, resource: &Resource) {
            self.service = resource
                .get(&opentelemetry::Key::from_static_str("service.name"))
                .map(|v| v.to_string())
                .unwrap_or_default();
        }
    }

    fn hop_exporter(recorder: &Recorder, queue: Arc<Queue>) -> HopExporter<Recorder> {
        let r = recorder.clone();
        let mut exporter = HopExporter::new(
            "http://collector:4318/v1/traces".to_owned(),
            service_resource("cloudmart"),
            queue,
            move || Ok(r.clone()),
        );
        exporter.probing = false;
        exporter
    }

    #[tokio::test]
    async fn the_probe_names_the_cause_in_plain_words() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let open = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let open_port = open.local_addr().unwrap().port();

        let refused = probe(&format!("http://127.0.0.1:{closed}/v1/traces")).await;
        let fine = probe(&format!("http://127.0.0.1:{open_port}/v1/traces")).await;
        let unknown = probe("http://no-such-collector.invalid:4318/v1/traces").await;

        assert_eq!(refused.as_deref(), Some("connection refused"));
        assert_eq!(fine, None);
        let unknown = unknown.unwrap();
        assert!(
            unknown.starts_with("dns error: ") && unknown.contains("no-such-collector.invalid"),
            "{unknown}"
        );
    }

    /// A subscriber like the real one, exporting synchronously to `recorder`,
    /// with its log lines in the returned buffer.
    fn subscriber(
        recorder: &Recorder,
        per_hop: bool,
    ) -> (impl Subscriber + Send + Sync, SdkTracerProvider, Logs) {
        let queue = Arc::new(Queue::new(MAX_QUEUED_SPANS));
        let provider = SdkTracerProvider::builder()
            .with_resource(service_resource("cloudmart"))
            .with_sampler(HopSampler::default())
            .with_span_processor(HopProcessor {
                inner: SimpleSpanProcessor::new(hop_exporter(recorder, queue.clone())),
                per_hop,
                queue,
            })
            .build();
        let logs = Logs::default();
        let writer = logs.clone();
        let services = ServiceFieldLayer::default();
        let dispatch = services.dispatch.clone();
        let subscriber = tracing_subscriber::registry()
            .with(services)
            .with(
                tracing_opentelemetry::layer()
                    .with_tracer(provider.tracer("test"))
                    .with_filter(LevelFilter::INFO),
            )
            .with(
                tracing_subscriber::fmt::layer()
                    .event_format(LineFormat {
                        service: "cloudmart".to_owned(),
                        dispatch,
                        format: LogFormat::Json,
                    })
                    .with_writer(move || writer.clone())
                    .with_filter(LevelFilter::DEBUG),
            );
        (subscriber, provider, logs)
    }

    /// Log lines written to memory.
    #[derive(Clone, Default)]
    struct Logs(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Logs {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Logs {
        fn lines(&self) -> Vec<Value> {
            let bytes = self.0.lock().unwrap().clone();
            String::from_utf8_lossy(&bytes)
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect()
        }
    }

    fn attr(span: &SpanData, key: &str) -> Option<String> {
        span.attributes
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| kv.value.to_string())
    }

    #[test]
    fn each_hop_is_exported_under_its_own_service_name() {
        let recorder = Recorder::default();
        let (subscriber, provider, _) = subscriber(&recorder, true);
        let mut incoming = HeaderMap::new();
        incoming.insert(
            "traceparent",
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        );

        tracing::subscriber::with_default(subscriber, || {
            let server = tracing::info_span!("server", service = "api-service");
            let _ = server.set_parent(server_parent("api-service", &incoming));
            server.in_scope(|| tracing::info_span!("client call").in_scope(|| {}));
            let pass = tracing::info_span!(parent: None, "relay");
            begin_trace(&pass, "order-service");
            pass.in_scope(|| {});
            tracing::info_span!(parent: None, "startup").in_scope(|| {});
        });
        provider.force_flush().unwrap();

        let got = recorder.got.lock().unwrap();
        let by_name: HashMap<&str, (&str, &SpanData)> = got
            .iter()
            .map(|(svc, s)| (s.name.as_ref(), (svc.as_str(), s)))
            .collect();
        assert_eq!(by_name["server"].0, "api-service");
        assert_eq!(by_name["client call"].0, "api-service");
        assert_eq!(by_name["relay"].0, "order-service");
        assert_eq!(
            by_name["startup"].0, "cloudmart",
            "no hop: the process's name"
        );
        // The caller's trace goes on; the relay pass starts one of its own.
        assert_eq!(
            by_name["server"].1.span_context.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(
            by_name["relay"].1.parent_span_id,
            opentelemetry::SpanId::INVALID
        );
        assert!(
            got.iter().all(|(_, s)| attr(s, HOP_SERVICE_KEY).is_none()),
            "the hop tag is never exported"
        );
    }

    #[test]
    fn probe_traffic_gets_ids_but_is_not_exported() {
        let recorder = Recorder::default();
        let (subscriber, provider, logs) = subscriber(&recorder, true);

        let id = tracing::subscriber::with_default(subscriber, || {
            let probe = tracing::info_span!("GET /ready", service = "database-service");
            let _ = probe.set_parent(untraced(server_parent(
                "database-service",
                &HeaderMap::new(),
            )));
            probe.in_scope(|| {
                tracing::info_span!("ping").in_scope(|| tracing::info!("pinged"));
            });
            let real = tracing::info_span!("GET /orders");
            let _ = real.set_parent(server_parent("database-service", &HeaderMap::new()));
            real.in_scope(|| {});
            trace_id(&probe)
        });
        provider.force_flush().unwrap();

        let got = recorder.got.lock().unwrap();
        let names: Vec<&str> = got.iter().map(|(_, s)| s.name.as_ref()).collect();
        assert_eq!(names, ["GET /orders"]);
        let id = id.expect("a probe still has a trace id");
        let line = logs
            .lines()
            .into_iter()
            .find(|l| l["message"] == "pinged")
            .unwrap();
        assert_eq!(line["trace_id"], id.as_str());
    }

    #[test]
    fn otel_service_name_names_every_span() {
        let recorder = Recorder::default();
        let (subscriber, provider, _) = subscriber(&recorder, false);

        tracing::subscriber::with_default(subscriber, || {
            let server = tracing::info_span!("server");
            let _ = server.set_parent(server_parent("api-service", &HeaderMap::new()));
            server.in_scope(|| {});
        });
        provider.force_flush().unwrap();

        let got = recorder.got.lock().unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, "cloudmart");
    }

    #[test]
    fn lines_in_an_untraced_span_carry_the_nearest_traced_ids() {
        let recorder = Recorder::default();
        let (subscriber, _provider, logs) = subscriber(&recorder, true);

        let ids = tracing::subscriber::with_default(subscriber, || {
            let request = tracing::info_span!("request", service = "order-service");
            let _ = request.set_parent(root_in_service("order-service"));
            request.in_scope(|| {
                // DEBUG spans are logged (RUST_LOG=debug) but not traced.
                tracing::debug_span!("detail").in_scope(|| tracing::info!("inside"));
                tracing::info!("outside");
            });
            tracing::info!("no span");
            (trace_id(&request).unwrap(), request.context())
        });

        let lines = logs.lines();
        let span_id = ids.1.span().span_context().span_id().to_string();
        for message in ["inside", "outside"] {
            let line = lines.iter().find(|l| l["message"] == message).unwrap();
            assert_eq!(line["trace_id"], ids.0.as_str(), "{line}");
            assert_eq!(line["span_id"], span_id.as_str(), "{line}");
            assert_eq!(line["service"], "order-service", "{line}");
        }
        let outside = lines.iter().find(|l| l["message"] == "no span").unwrap();
        assert!(outside.get("trace_id").is_none(), "{outside}");
    }

    #[test]
    fn a_terminal_gets_text_lines_that_end_with_the_trace_id() {
        let logs = Logs::default();
        let writer = logs.clone();
        let unset = HashMap::<String, String>::new();
        let (subscriber, _guard) = build("svc", &unset, move || writer.clone(), true).unwrap();

        let id = tracing::subscriber::with_default(subscriber, || {
            let request = tracing::info_span!("request", service = "order-service");
            let _ = request.set_parent(root_in_service("order-service"));
            request.in_scope(|| tracing::info!(order_id = "o1", customer = "guest", "stored"));
            trace_id(&request).unwrap()
        });

        let bytes = logs.0.lock().unwrap().clone();
        let text = String::from_utf8(bytes).unwrap();
        assert!(
            text.ends_with(&format!(
                " INFO order-service: stored  order_id=o1 customer=guest  trace_id={id}\n"
            )),
            "{text}"
        );
        let bad = HashMap::from([(LOG_FORMAT.name.to_owned(), "xml".to_owned())]);
        let err = build("svc", &bad, io::sink, false).err().unwrap();
        assert!(err.to_string().contains("LOG_FORMAT=\"xml\""), "{err}");
    }

    #[test]
    fn nothing_is_exported_without_an_endpoint() {
        let env =
            |v: &str| HashMap::from([(OTEL_EXPORTER_OTLP_ENDPOINT.name.to_owned(), v.to_owned())]);
        assert_eq!(export_endpoint(&HashMap::<String, String>::new()), None);
        assert_eq!(export_endpoint(&env("  ")), None);
        assert_eq!(
            export_endpoint(&env("http://collector:4318")).as_deref(),
            Some("http://collector:4318")
        );
        // Without an endpoint the provider has no processor at all, yet
        // spans still get real ids for traceparent and the logs.
        let provider = tracer_provider("svc", None, true).unwrap();
        let span = provider.tracer("t").start("s");
        assert!(span.span_context().is_valid());
    }

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_waiting() {
        let recorder = Recorder::default();
        let queue = Arc::new(Queue::new(2));
        let provider = SdkTracerProvider::builder()
            .with_span_processor(HopProcessor {
                inner: SimpleSpanProcessor::new(Recorder::default()),
                per_hop: true,
                queue: queue.clone(),
            })
            .build();
        let tracer = provider.tracer("t");
        let before = spans_dropped();

        for _ in 0..5 {
            tracer.start("s").end();
        }
        let dropped = queue.dropped.load(Ordering::Relaxed);
        queue.release(2);
        tracer.start("after export").end();

        assert_eq!(dropped, 3);
        assert_eq!(
            queue.dropped.load(Ordering::Relaxed),
            3,
            "room again once exported"
        );
        assert!(spans_dropped() - before >= 3, "the process-wide count too");
        drop(recorder);
    }

    #[tokio::test(start_paused = true)]
    async fn a_collector_that_is_down_costs_one_warning_per_interval() {
        let recorder = Recorder::default();
        recorder.fail.store(true, Ordering::SeqCst);
        let exporter = hop_exporter(&recorder, Arc::new(Queue::new(10)));
        let logs = Logs::default();
        let writer = logs.clone();
        let _default = tracing::subscriber::set_default(
            tracing_subscriber::registry().with(
                tracing_subscriber::fmt::layer()
                    .event_format(LineFormat {
                        service: "svc".to_owned(),
                        dispatch: DispatchCell::default(),
                        format: LogFormat::Json,
                    })
                    .with_writer(move || writer.clone()),
            ),
        );
        let span = |name: &str| SpanData {
            span_context: opentelemetry::trace::SpanContext::empty_context(),
            parent_span_id: opentelemetry::SpanId::INVALID,
            parent_span_is_remote: false,
            span_kind: opentelemetry::trace::SpanKind::Internal,
            name: name.to_owned().into(),
            start_time: std::time::SystemTime::UNIX_EPOCH,
            end_time: std::time::SystemTime::UNIX_EPOCH,
            attributes: Vec::new(),
            dropped_attributes_count: 0,
            events: opentelemetry_sdk::trace::SpanEvents::default(),
            links: opentelemetry_sdk::trace::SpanLinks::default(),
            status: opentelemetry::trace::Status::Unset,
            instrumentation_scope: opentelemetry::InstrumentationScope::builder("t").build(),
        };

        // 100 s of failing exports, one per second.
        for _ in 0..100 {
            assert!(exporter.export(vec![span("a"), span("b")]).await.is_ok());
            tokio::time::advance(Duration::from_secs(1)).await;
        }
        recorder.fail.store(false, Ordering::SeqCst);
        for _ in 0..3 {
            exporter.export(vec![span("c")]).await.unwrap();
        }

        let lines = logs.lines();
        let warnings: Vec<&str> = lines
            .iter()
            .filter(|l| l["level"] == "WARN")
            .filter_map(|l| l["message"].as_str())
            .collect();
        assert_eq!(warnings.len(), 4, "at 0, 30, 60 and 90 s: {warnings:#?}");
        assert!(
            warnings[0].starts_with(
                "cannot export spans to http://collector:4318/v1/traces: HTTP export failed: network error"
            ),
            "{}",
            warnings[0]
        );
        assert!(
            warnings[1].contains("60 span(s) lost in 30 failed export(s)"),
            "{}",
            warnings[1]
        );
        let back: Vec<&Value> = lines.iter().filter(|l| l["level"] == "INFO").collect();
        assert_eq!(back.len(), 1, "{back:#?}");
        assert!(
            back[0]["message"]
                .as_str()
                .unwrap()
                .contains("works again; 18 span(s) were lost since the last warning"),
            "{}",
            back[0]
        );
        assert_eq!(recorder.got.lock().unwrap().len(), 3);
    }
}
