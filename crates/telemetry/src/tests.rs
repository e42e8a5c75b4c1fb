//! Tests of the whole pipeline: ids, propagation, export, warnings and lines.

use std::collections::HashMap;
use std::io::{self};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{HeaderMap, HeaderValue};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use serde_json::Value;
use tracing::Subscriber;
use tracing::level_filters::LevelFilter;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;

use super::*;
use crate::export::*;
use crate::hop::*;
use crate::line::*;
use crate::warn::*;
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
    let bad = HashMap::from([(LOG_FORMAT.var.name.to_owned(), "xml".to_owned())]);
    let err = build("svc", &bad, io::sink, false).err().unwrap();
    assert!(err.to_string().contains("LOG_FORMAT=\"xml\""), "{err}");
}

#[test]
fn nothing_is_exported_without_an_endpoint() {
    let env = |v: &str| {
        HashMap::from([(
            OTEL_EXPORTER_OTLP_ENDPOINT.var.name.to_owned(),
            v.to_owned(),
        )])
    };
    let export_endpoint =
        |env: &HashMap<String, String>| TelemetryConfig::from_env(env).unwrap().endpoint;
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

#[test]
fn every_bad_telemetry_variable_is_named_at_once() {
    let bad = HashMap::from([
        (RUST_LOG.var.name.to_owned(), "info,[".to_owned()),
        (LOG_FORMAT.var.name.to_owned(), "xml".to_owned()),
    ]);
    let err = build("svc", &bad, io::sink, false)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.starts_with("invalid configuration: RUST_LOG=\"info,[\" is invalid: "),
        "{err}"
    );
    assert!(
        err.contains("(expected a tracing filter such as info or debug,hyper=warn)"),
        "{err}"
    );
    assert!(
        err.ends_with("; LOG_FORMAT=\"xml\" is invalid (expected json or text)"),
        "{err}"
    );
}
