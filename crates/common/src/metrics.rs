//! Prometheus metrics: RED metrics for every HTTP route, client-side metrics
//! per downstream, and process memory and file descriptors.
//!
//! Each service owns one [`Registry`]; there is no global state, so several
//! services in one process (`cloudmart up`, the tests) keep separate numbers.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
pub use prometheus_client::registry::Registry;

/// Latency buckets in seconds, from 1 ms to 10 s (the SLA is 2 s).
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
    rss: Gauge,
    fds: Gauge,
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
    pub fn observe(&self, downstream: &str, outcome: &str, elapsed: Duration) {
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

/// Builds a service's registry: the shared metrics first, then its own.
pub struct MetricsBuilder {
    registry: Registry,
    requests: Family<RouteLabels, Counter>,
    durations: Family<RouteLabels, Histogram>,
    client: ClientMetrics,
    rss: Gauge,
    fds: Gauge,
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
        let rss = Gauge::default();
        registry.register(
            "process_resident_memory_bytes",
            "Resident set size of the process",
            rss.clone(),
        );
        let fds = Gauge::default();
        registry.register("process_open_fds", "Open file descriptors", fds.clone());
        Self {
            registry,
            requests,
            durations,
            client,
            rss,
            fds,
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
            rss: self.rss,
            fds: self.fds,
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
        if let Some(rss) = process_rss_bytes() {
            self.rss.set(i64::try_from(rss).unwrap_or(i64::MAX));
        }
        if let Some(fds) = process_open_fds() {
            self.fds.set(i64::try_from(fds).unwrap_or(i64::MAX));
        }
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Resident set size of this process, from `/proc/self/statm`.
pub fn process_rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
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
    }
}
