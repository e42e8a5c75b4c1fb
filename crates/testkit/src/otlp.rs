//! An OTLP/HTTP collector for tests: it accepts `POST /v1/traces` with a
//! protobuf body, the way an OpenTelemetry Collector or Jaeger does, decodes
//! it with `opentelemetry-proto`, and keeps every span so a test can look a
//! trace up by the id in a `traceparent` header.
//!
//! [`Collector::start`] serves on the caller's runtime (for a test that
//! starts service binaries with `OTEL_EXPORTER_OTLP_ENDPOINT`). [`global`]
//! is one collector for the whole test binary, on a runtime of its own that
//! outlives every test; [`crate::logs::logs_and_traces`] points the
//! in-process services' exporter at it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode as OtelStatus;
use prost::Message;
use serde_json::Value;

use crate::wait_until;

/// One received span, flattened: ids in lower-case hex (an empty
/// `parent_span_id` for a root), the `service.name` of its resource, and
/// attribute values as JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanRecord {
    /// `service.name` of the resource the span came with.
    pub service: String,
    /// 32 hex digits.
    pub trace_id: String,
    /// 16 hex digits.
    pub span_id: String,
    /// 16 hex digits, or empty for a root span.
    pub parent_span_id: String,
    /// The exported name (`otel.name` when the code set one).
    pub name: String,
    /// `server`, `client`, `producer`, `consumer`, `internal` or `unspecified`.
    pub kind: &'static str,
    /// Attributes by key.
    pub attributes: BTreeMap<String, Value>,
    /// Events, in order.
    pub events: Vec<EventRecord>,
    /// Linked spans as (trace id, span id).
    pub links: Vec<(String, String)>,
    /// Whether the span's status is Error.
    pub error: bool,
    /// Start time, nanoseconds since the epoch.
    pub start_unix_nano: u64,
    /// End time, nanoseconds since the epoch.
    pub end_unix_nano: u64,
}

/// One span event.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRecord {
    /// The event's name (for a log line, its message).
    pub name: String,
    /// Attributes by key.
    pub attributes: BTreeMap<String, Value>,
}

impl SpanRecord {
    /// The attribute `key`, if set.
    pub fn attr(&self, key: &str) -> Option<&Value> {
        self.attributes.get(key)
    }

    /// The attribute `key` as a string, if it is one.
    pub fn str_attr(&self, key: &str) -> Option<&str> {
        self.attr(key).and_then(Value::as_str)
    }

    /// The attribute `key` as an integer, if it is one.
    pub fn int_attr(&self, key: &str) -> Option<i64> {
        self.attr(key).and_then(Value::as_i64)
    }

    /// Whether some event carries `key` = `value`.
    pub fn has_event_with(&self, key: &str, value: &Value) -> bool {
        self.events
            .iter()
            .any(|e| e.attributes.get(key) == Some(value))
    }
}

#[derive(Default)]
struct Store {
    spans: Mutex<Vec<SpanRecord>>,
    requests: AtomicU64,
    /// Spans decoded, kept or not.
    span_count: AtomicU64,
    /// Decode and count only, keeping nothing (for benchmarks).
    count_only: bool,
    /// Non-zero: answer every export with this status (a failing collector).
    fail_with: AtomicU16,
}

/// A running collector.
#[derive(Clone)]
pub struct Collector {
    endpoint: String,
    store: Arc<Store>,
}

impl std::fmt::Debug for Collector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Collector")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl Collector {
    /// Serves on 127.0.0.1 on a free port, on the current runtime.
    pub async fn start() -> Self {
        Self::serve("127.0.0.1:0", Store::default())
            .await
            .expect("the collector binds")
    }

    /// Like [`Collector::start`], but spans are decoded and counted, not
    /// kept: a receiver whose own cost stays small, for benchmarks.
    pub async fn start_counting() -> Self {
        Self::start_counting_on("127.0.0.1:0")
            .await
            .expect("the collector binds")
    }

    /// A counting collector on `addr` (such as `0.0.0.0:4318`, the OTLP/HTTP
    /// port, when it stands in for a real collector in a container).
    pub async fn start_counting_on(addr: &str) -> std::io::Result<Self> {
        let store = Store {
            count_only: true,
            ..Store::default()
        };
        Self::serve(addr, store).await
    }

    async fn serve(addr: &str, store: Store) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        let store = Arc::new(store);
        let app = Router::new()
            .route("/v1/traces", post(receive))
            .route("/stats", get(stats))
            .with_state(store.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let host = if local.ip().is_unspecified() {
            "127.0.0.1".to_owned()
        } else {
            local.ip().to_string()
        };
        Ok(Self {
            endpoint: format!("http://{host}:{}", local.port()),
            store,
        })
    }

    /// The value for `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Export requests received so far, answered or not.
    pub fn requests(&self) -> u64 {
        self.store.requests.load(Ordering::SeqCst)
    }

    /// Makes the collector answer every export with `status` (0 to accept
    /// again), to stand for one that is broken.
    pub fn fail_with(&self, status: u16) {
        self.store.fail_with.store(status, Ordering::SeqCst);
    }

    /// How many spans have been received so far.
    pub fn span_count(&self) -> u64 {
        self.store.span_count.load(Ordering::SeqCst)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<SpanRecord> {
        self.store
            .spans
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }

    /// The spans of one trace, by its 32-hex-digit id or a whole
    /// `traceparent` value.
    pub fn trace(&self, trace_id: &str) -> Vec<SpanRecord> {
        let id = trace_id_of(trace_id);
        self.store
            .spans
            .lock()
            .map(|s| s.iter().filter(|r| r.trace_id == id).cloned().collect())
            .unwrap_or_default()
    }

    /// Waits up to `deadline` until `done` holds for the spans of the trace,
    /// and returns them; `Err` holds what had arrived by then.
    pub async fn wait_for_trace(
        &self,
        trace_id: &str,
        deadline: Duration,
        done: impl Fn(&[SpanRecord]) -> bool,
    ) -> Result<Vec<SpanRecord>, Vec<SpanRecord>> {
        let found = wait_until(deadline, || {
            let spans = self.trace(trace_id);
            let ok = done(&spans);
            async move { ok.then_some(spans) }
        })
        .await;
        found.ok_or_else(|| self.trace(trace_id))
    }
}

/// The trace id inside a `traceparent` value, or the value itself.
pub fn trace_id_of(traceparent_or_id: &str) -> String {
    let parts: Vec<&str> = traceparent_or_id.split('-').collect();
    if parts.len() == 4 {
        parts[1].to_owned()
    } else {
        traceparent_or_id.to_owned()
    }
}

/// One collector for the whole test binary, on its own runtime thread so it
/// (and anything started with [`global_handle`] entered) outlives each
/// test's runtime.
pub fn global() -> &'static Collector {
    &shared().0
}

/// The runtime [`global`] runs on.
pub fn global_handle() -> tokio::runtime::Handle {
    shared().1.clone()
}

fn shared() -> &'static (Collector, tokio::runtime::Handle) {
    static SHARED: OnceLock<(Collector, tokio::runtime::Handle)> = OnceLock::new();
    SHARED.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("otlp-collector".to_owned())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .enable_all()
                    .build()
                    .expect("the collector's runtime starts");
                let collector = runtime.block_on(Collector::start());
                let _ = tx.send((collector, runtime.handle().clone()));
                runtime.block_on(std::future::pending::<()>());
            })
            .expect("the collector's thread starts");
        rx.recv().expect("the collector starts")
    })
}

/// `GET /stats`: what has been received, for a check from outside the
/// process (the container test asks the sink in the compose stack).
async fn stats(State(store): State<Arc<Store>>) -> axum::Json<Value> {
    axum::Json(serde_json::json!({
        "requests": store.requests.load(Ordering::SeqCst),
        "spans": store.span_count.load(Ordering::SeqCst),
    }))
}

async fn receive(State(store): State<Arc<Store>>, headers: HeaderMap, body: Bytes) -> Response {
    store.requests.fetch_add(1, Ordering::SeqCst);
    let failing = store.fail_with.load(Ordering::SeqCst);
    if failing != 0 {
        let status = StatusCode::from_u16(failing).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        return (status, "failing on purpose").into_response();
    }
    let protobuf = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-protobuf"));
    if !protobuf {
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "expected application/x-protobuf",
        )
            .into_response();
    }
    let request = match ExportTraceServiceRequest::decode(body) {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let count: usize = request
        .resource_spans
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .map(|s| s.spans.len())
        .sum();
    store
        .span_count
        .fetch_add(u64::try_from(count).unwrap_or(u64::MAX), Ordering::SeqCst);
    if store.count_only {
        return ok_response();
    }
    let mut received = Vec::new();
    for rs in request.resource_spans {
        let resource = rs
            .resource
            .map(|r| attributes(&r.attributes))
            .unwrap_or_default();
        let service = resource
            .get("service.name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        for span in rs.scope_spans.into_iter().flat_map(|s| s.spans) {
            received.push(SpanRecord {
                service: service.clone(),
                trace_id: hex(&span.trace_id),
                span_id: hex(&span.span_id),
                parent_span_id: hex(&span.parent_span_id),
                kind: kind_name(span.kind),
                attributes: attributes(&span.attributes),
                events: span
                    .events
                    .iter()
                    .map(|e| EventRecord {
                        name: e.name.clone(),
                        attributes: attributes(&e.attributes),
                    })
                    .collect(),
                links: span
                    .links
                    .iter()
                    .map(|l| (hex(&l.trace_id), hex(&l.span_id)))
                    .collect(),
                error: span
                    .status
                    .as_ref()
                    .is_some_and(|s| s.code == OtelStatus::Error as i32),
                start_unix_nano: span.start_time_unix_nano,
                end_unix_nano: span.end_time_unix_nano,
                name: span.name,
            });
        }
    }
    if let Ok(mut spans) = store.spans.lock() {
        spans.extend(received);
    }
    ok_response()
}

/// The empty success answer an OTLP/HTTP exporter expects.
fn ok_response() -> Response {
    (
        [(header::CONTENT_TYPE, "application/x-protobuf")],
        ExportTraceServiceResponse::default().encode_to_vec(),
    )
        .into_response()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn kind_name(kind: i32) -> &'static str {
    match SpanKind::try_from(kind) {
        Ok(SpanKind::Server) => "server",
        Ok(SpanKind::Client) => "client",
        Ok(SpanKind::Producer) => "producer",
        Ok(SpanKind::Consumer) => "consumer",
        Ok(SpanKind::Internal) => "internal",
        _ => "unspecified",
    }
}

fn attributes(kvs: &[KeyValue]) -> BTreeMap<String, Value> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), json(kv.value.as_ref())))
        .collect()
}

fn json(value: Option<&AnyValue>) -> Value {
    match value.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => Value::from(s.as_str()),
        Some(any_value::Value::BoolValue(b)) => Value::from(*b),
        Some(any_value::Value::IntValue(i)) => Value::from(*i),
        Some(any_value::Value::DoubleValue(d)) => Value::from(*d),
        Some(any_value::Value::ArrayValue(a)) => {
            Value::Array(a.values.iter().map(|v| json(Some(v))).collect())
        }
        Some(any_value::Value::KvlistValue(l)) => Value::Object(
            l.values
                .iter()
                .map(|kv| (kv.key.clone(), json(kv.value.as_ref())))
                .collect(),
        ),
        Some(any_value::Value::BytesValue(b)) => Value::from(hex(b)),
        _ => Value::Null,
    }
}

/// The spans as an indented tree, parents before children (siblings by
/// start time), one line each: service, kind, name, and the attributes a
/// reader looks for first. Spans whose parent is not among `spans` start
/// their own branch, marked with `(parent ... not received)`.
pub fn tree(spans: &[SpanRecord]) -> String {
    let ids: BTreeSet<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
    let mut children: BTreeMap<&str, Vec<&SpanRecord>> = BTreeMap::new();
    let mut roots = Vec::new();
    for s in spans {
        if s.parent_span_id.is_empty() || !ids.contains(s.parent_span_id.as_str()) {
            roots.push(s);
        } else {
            children
                .entry(s.parent_span_id.as_str())
                .or_default()
                .push(s);
        }
    }
    roots.sort_by_key(|s| s.start_unix_nano);
    for list in children.values_mut() {
        list.sort_by_key(|s| s.start_unix_nano);
    }
    let mut out = String::new();
    for root in roots {
        line(&mut out, root, 0, &children);
    }
    out
}

/// Attributes shown in [`tree`], when present.
const SHOWN: &[&str] = &[
    "http.response.status_code",
    "http.request.resend_count",
    "db.operation.name",
    "db.collection.name",
    "messaging.destination.name",
    "error.type",
    "chaos.injected",
    "chaos.latency_ms",
    "argon2.memory_kib",
    "auth.hash.inflight",
];

fn line(
    out: &mut String,
    span: &SpanRecord,
    depth: usize,
    children: &BTreeMap<&str, Vec<&SpanRecord>>,
) {
    let ms = span.end_unix_nano.saturating_sub(span.start_unix_nano) as f64 / 1e6;
    let _ = write!(
        out,
        "{:indent$}{} [{}] {} ({ms:.1} ms)",
        "",
        span.service,
        span.kind,
        span.name,
        indent = depth * 2
    );
    for key in SHOWN {
        if let Some(v) = span.attr(key) {
            let _ = write!(out, " {key}={v}");
        }
    }
    if span.error {
        out.push_str(" ERROR");
    }
    if depth == 0 && !span.parent_span_id.is_empty() {
        let _ = write!(out, " (parent {} not received)", span.parent_span_id);
    }
    out.push('\n');
    for event in &span.events {
        let _ = writeln!(out, "{:indent$}  * {}", "", event.name, indent = depth * 2);
    }
    if let Some(list) = children.get(span.span_id.as_str()) {
        for child in list {
            line(out, child, depth + 1, children);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(id: &str, parent: &str, name: &str, start: u64) -> SpanRecord {
        SpanRecord {
            service: "svc".to_owned(),
            trace_id: "t".to_owned(),
            span_id: id.to_owned(),
            parent_span_id: parent.to_owned(),
            name: name.to_owned(),
            kind: "internal",
            attributes: BTreeMap::new(),
            events: Vec::new(),
            links: Vec::new(),
            error: false,
            start_unix_nano: start,
            end_unix_nano: start + 1_000_000,
        }
    }

    #[test]
    fn the_tree_puts_children_under_parents_in_start_order() {
        let spans = [
            span("c2", "r", "second", 3),
            span("r", "", "root", 1),
            span("c1", "r", "first", 2),
            span("g", "c1", "grandchild", 4),
            span("o", "missing", "orphan", 5),
        ];
        let tree = tree(&spans);
        let names: Vec<&str> = tree
            .lines()
            .map(|l| l.split(" [internal] ").nth(1).unwrap_or_default())
            .collect();
        assert_eq!(
            names,
            [
                "root (1.0 ms)",
                "first (1.0 ms)",
                "grandchild (1.0 ms)",
                "second (1.0 ms)",
                "orphan (1.0 ms) (parent missing not received)"
            ],
            "{tree}"
        );
        assert!(tree.contains("\n    svc [internal] grandchild"), "{tree}");
    }

    #[test]
    fn trace_ids_come_out_of_traceparent_values() {
        assert_eq!(
            trace_id_of("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(trace_id_of("abc"), "abc");
    }

    #[tokio::test]
    async fn the_collector_decodes_protobuf_and_refuses_other_bodies() {
        use opentelemetry_proto::tonic::resource::v1::Resource;
        use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
        let collector = Collector::start().await;
        let kv = |k: &str, v: &str| KeyValue {
            key: k.to_owned(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(v.to_owned())),
            }),
            ..Default::default()
        };
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv("service.name", "order-service")],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans: vec![Span {
                        trace_id: vec![0xab; 16],
                        span_id: vec![0x01; 8],
                        name: "POST /orders".to_owned(),
                        kind: SpanKind::Server as i32,
                        attributes: vec![kv("http.route", "/orders")],
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let client = reqwest::Client::new();
        let url = format!("{}/v1/traces", collector.endpoint());

        let json = client.post(&url).body("{}").send().await.unwrap();
        let ok = client
            .post(&url)
            .header("content-type", "application/x-protobuf")
            .body(request.encode_to_vec())
            .send()
            .await
            .unwrap();

        assert_eq!(json.status(), 415);
        assert_eq!(ok.status(), 200);
        let spans = collector.trace(&"ab".repeat(16));
        assert_eq!(spans.len(), 1, "{spans:?}");
        assert_eq!(spans[0].service, "order-service");
        assert_eq!(spans[0].kind, "server");
        assert_eq!(spans[0].span_id, "0101010101010101");
        assert_eq!(spans[0].parent_span_id, "");
        assert_eq!(spans[0].str_attr("http.route"), Some("/orders"));
        assert_eq!(collector.requests(), 2);
    }
}
