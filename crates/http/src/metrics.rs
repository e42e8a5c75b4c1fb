//! Prometheus metrics: RED metrics for every HTTP route, client-side metrics
//! per downstream, and the process's memory, file descriptors and start time.
//!
//! Each service owns one [`Registry`]; there is no global state, so several
//! services in one process (`cloudmart up`, the tests) keep separate numbers.
//!
//! Names follow Prometheus conventions: the base unit in the name
//! (`_seconds`, `_bytes`), counters end in `_total` (prometheus-client adds
//! it: register a counter as `http_server_requests` and it is exported as
//! `http_server_requests_total`), and a histogram `x` is scraped as
//! `x_bucket`, `x_sum` and `x_count`. The exposition is OpenMetrics text
//! ([`CONTENT_TYPE`]).

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
pub use prometheus_client::registry::Registry;

/// The media type of [`Metrics::render`]'s output. prometheus-client writes
/// OpenMetrics 1.0 (counters as `<name>_total`, a closing `# EOF`), and
/// Prometheus picks its parser by this header, so it must say so.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Latency buckets in seconds, from 1 ms to 30 s (the SLA is 2 s).
const LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0,
];

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// Labels of a served request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// HTTP method.
    pub method: String,
    /// Route template, e.g. `/orders/{id}`.
    pub route: String,
    /// Response status code.
    pub status: u16,
}

/// Labels of a call to a downstream.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClientLabels {
    /// Downstream service name.
    pub downstream: String,
    /// Status code, or `connect_error` / `timeout` / `error`.
    pub outcome: String,
}

/// Labels naming a downstream.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DownstreamLabels {
    /// Downstream service name.
    pub downstream: String,
}

/// The metrics every service has.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    requests: Family<RouteLabels, Counter>,
    durations: Family<RouteLabels, Histogram>,
    client: ClientMetrics,
    process: ProcessMetrics,
}

/// Client-side metrics, shared by every [`crate::client::Downstream`].
#[derive(Clone)]
pub struct ClientMetrics {
    requests: Family<ClientLabels, Counter>,
    durations: Family<DownstreamLabels, Histogram>,
    retries: Family<DownstreamLabels, Counter>,
}

impl ClientMetrics {
    /// Counts one finished attempt.
    ///
    /// The first attempt to a downstream also creates its retry series at 0:
    /// a counter that appears only at its first increment is invisible to
    /// `rate()` for that increment, and a panel would say "no data" where it
    /// should say 0.
    pub fn observe(&self, downstream: &str, outcome: &str, elapsed: Duration) {
        let _ = self.retries.get_or_create(&DownstreamLabels {
            downstream: downstream.to_owned(),
        });
        self.requests
            .get_or_create(&ClientLabels {
                downstream: downstream.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
        self.durations
            .get_or_create(&DownstreamLabels {
                downstream: downstream.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Counts one retry.
    pub fn retried(&self, downstream: &str) {
        self.retries
            .get_or_create(&DownstreamLabels {
                downstream: downstream.to_owned(),
            })
            .inc();
    }
}

/// The process gauges, refreshed from `/proc` on every scrape.
#[derive(Clone)]
struct ProcessMetrics {
    rss: Gauge,
    fds: Gauge,
    max_fds: Gauge,
    start_time: Gauge<f64, AtomicU64>,
    spans_dropped: Counter,
    /// Serialises the catch-up of `spans_dropped` between two scrapes.
    spans_dropped_sync: Arc<std::sync::Mutex<()>>,
}

impl ProcessMetrics {
    fn register(registry: &mut Registry) -> Self {
        let m = Self {
            rss: Gauge::default(),
            fds: Gauge::default(),
            max_fds: Gauge::default(),
            start_time: Gauge::default(),
            spans_dropped: Counter::default(),
            spans_dropped_sync: Arc::default(),
        };
        registry.register(
            "process_resident_memory_bytes",
            "Resident set size of the process",
            m.rss.clone(),
        );
        registry.register("process_open_fds", "Open file descriptors", m.fds.clone());
        registry.register(
            "process_max_fds",
            "The soft limit on open file descriptors",
            m.max_fds.clone(),
        );
        registry.register(
            "process_start_time_seconds",
            "When the process started, in seconds since the Unix epoch; a change means a restart",
            m.start_time.clone(),
        );
        registry.register(
            "otel_spans_dropped",
            "Spans dropped because the export queue was full (the collector slow or down)",
            m.spans_dropped.clone(),
        );
        m.start_time.set(process_start_time_seconds());
        m
    }

    fn refresh(&self) {
        if let Some(rss) = process_rss_bytes() {
            self.rss.set(i64::try_from(rss).unwrap_or(i64::MAX));
        }
        if let Some(fds) = process_open_fds() {
            self.fds.set(i64::try_from(fds).unwrap_or(i64::MAX));
        }
        if let Some(max) = process_max_fds() {
            self.max_fds.set(i64::try_from(max).unwrap_or(i64::MAX));
        }
        if let Ok(_one_at_a_time) = self.spans_dropped_sync.lock() {
            let dropped = cloudmart_telemetry::spans_dropped();
            self.spans_dropped
                .inc_by(dropped.saturating_sub(self.spans_dropped.get()));
        }
    }
}

/// Counts one unit of work in an in-flight gauge for as long as it lives,
/// so work dropped half-way (a caller that hung up, a panic) is counted
/// down too.
#[derive(Debug)]
pub struct InFlight(Gauge);

impl InFlight {
    /// Increments `gauge` until the returned guard is dropped.
    pub fn enter(gauge: &Gauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Builds a service's registry: the shared metrics first, then its own.
pub struct MetricsBuilder {
    registry: Registry,
    requests: Family<RouteLabels, Counter>,
    durations: Family<RouteLabels, Histogram>,
    client: ClientMetrics,
    process: ProcessMetrics,
}

impl Default for MetricsBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl MetricsBuilder {
    /// Registers the shared metrics.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RouteLabels, Counter>::default();
        registry.register(
            "http_server_requests",
            "HTTP requests served, by method, route and status",
            requests.clone(),
        );
        let durations = Family::<RouteLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register(
            "http_server_request_duration_seconds",
            "Time to serve an HTTP request",
            durations.clone(),
        );
        let client = ClientMetrics {
            requests: Family::default(),
            durations: Family::new_with_constructor(latency_histogram),
            retries: Family::default(),
        };
        registry.register(
            "http_client_requests",
            "Calls to downstream services, by outcome (status code or transport error)",
            client.requests.clone(),
        );
        registry.register(
            "http_client_request_duration_seconds",
            "Time of one call attempt to a downstream service",
            client.durations.clone(),
        );
        registry.register(
            "http_client_retries",
            "Retries of calls to downstream services",
            client.retries.clone(),
        );
        let process = ProcessMetrics::register(&mut registry);
        Self {
            registry,
            requests,
            durations,
            client,
            process,
        }
    }

    /// The registry, for a service to add its own metrics.
    pub fn registry(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// Freezes the registry.
    pub fn build(self) -> Metrics {
        Metrics {
            registry: Arc::new(self.registry),
            requests: self.requests,
            durations: self.durations,
            client: self.client,
            process: self.process,
        }
    }
}

impl Metrics {
    /// Counts one served request.
    pub fn observe(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        let labels = RouteLabels {
            method: method.to_owned(),
            route: route.to_owned(),
            status,
        };
        self.requests.get_or_create(&labels).inc();
        self.durations
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
    }

    /// The client metrics, for building downstream clients.
    pub fn client(&self) -> ClientMetrics {
        self.client.clone()
    }

    /// Prometheus text exposition of everything registered.
    pub fn render(&self) -> String {
        self.process.refresh();
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Resident set size of this process, from `VmRSS` in `/proc/self/status`
/// (in KiB there, whatever the page size).
pub fn process_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    vm_rss_bytes(&status)
}

fn vm_rss_bytes(status: &str) -> Option<u64> {
    let line = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().next()?.parse().ok()?;
    kib.checked_mul(1024)
}

/// The soft limit on open file descriptors, from `/proc/self/limits`;
/// `None` when unlimited or unreadable.
pub fn process_max_fds() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    max_open_files(&limits)
}

fn max_open_files(limits: &str) -> Option<u64> {
    let line = limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))?;
    line.split_whitespace().next()?.parse().ok()
}

/// When this process started, in seconds since the Unix epoch: the first
/// time any service in it registered its metrics, which each does while
/// starting up. Every service in one process reports the same value.
fn process_start_time_seconds() -> f64 {
    static STARTED: OnceLock<f64> = OnceLock::new();
    *STARTED.get_or_init(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64())
    })
}

/// Open file descriptors of this process, from `/proc/self/fd`.
pub fn process_open_fds() -> Option<u64> {
    let count = std::fs::read_dir("/proc/self/fd").ok()?.count();
    u64::try_from(count).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_request_counts_and_process_metrics() {
        let m = MetricsBuilder::new().build();
        m.observe("POST", "/orders", 201, Duration::from_millis(3));
        m.observe("POST", "/orders", 201, Duration::from_millis(4));
        m.client()
            .observe("database-service", "503", Duration::from_millis(1));
        m.client().retried("database-service");
        let text = m.render();
        assert!(
            text.contains(
                r#"http_server_requests_total{method="POST",route="/orders",status="201"} 2"#
            ),
            "{text}"
        );
        assert!(
            text.contains("http_server_request_duration_seconds_bucket"),
            "{text}"
        );
        assert!(
            text.contains(r#"http_client_retries_total{downstream="database-service"} 1"#),
            "{text}"
        );
        assert!(text.contains("process_resident_memory_bytes "), "{text}");
        assert!(text.contains("process_open_fds "), "{text}");
        assert!(text.contains("process_max_fds "), "{text}");
        assert!(text.contains("process_start_time_seconds "), "{text}");
        assert!(
            text.ends_with("# EOF\n"),
            "OpenMetrics text ends with # EOF"
        );
    }

    #[test]
    fn the_first_call_to_a_downstream_shows_zero_retries() {
        let m = MetricsBuilder::new().build();
        assert!(!m.render().contains("http_client_retries_total{"));
        m.client()
            .observe("auth-service", "200", Duration::from_millis(1));
        let text = m.render();
        assert!(
            text.contains(r#"http_client_retries_total{downstream="auth-service"} 0"#),
            "{text}"
        );
    }

    #[test]
    fn every_registered_name_follows_the_conventions() {
        // Families appear once they have a series.
        let m = MetricsBuilder::new().build();
        m.observe("GET", "/orders", 200, Duration::from_millis(1));
        m.client()
            .observe("database-service", "200", Duration::from_millis(1));
        let text = m.render();
        let families: Vec<(&str, &str)> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_once(' '))
            .collect();
        assert!(families.len() >= 9, "{text}");
        for (name, kind) in families {
            // prometheus-client appends `_total` itself; a counter registered
            // with it would be exported as `x_total_total`, and a gauge must
            // not look like a counter.
            assert!(!name.ends_with("_total"), "{name} ({kind})");
            if name.contains("duration") || name.contains("time") {
                assert!(name.ends_with("_seconds"), "{name} is a time, in seconds");
            }
            if name.contains("memory") {
                assert!(name.ends_with("_bytes"), "{name} is a size, in bytes");
            }
        }
    }

    #[test]
    fn process_readings_come_from_proc() {
        let status = "Name:\tx\nVmPeak:\t  9000 kB\nVmRSS:\t    2048 kB\nThreads:\t4\n";
        assert_eq!(vm_rss_bytes(status), Some(2048 * 1024));
        assert_eq!(vm_rss_bytes("Name:\tx\n"), None);
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max open files            1024                 524288               files     \n";
        assert_eq!(max_open_files(limits), Some(1024));
        let unlimited =
            "Max open files            unlimited            unlimited            files     \n";
        assert_eq!(max_open_files(unlimited), None);
        assert!(process_rss_bytes().is_some_and(|b| b > 0));
        assert!(process_open_fds().is_some_and(|n| n > 0));
        assert!(process_start_time_seconds() > 1.0e9);
    }
}
