//! The HTTP stack every service shares, and the serve loop.
//!
//! [`standard`] wraps a service's routes with, from the outside in: a server
//! span and RED metrics ([`observe`]), the JSON error rewrite, a request
//! timeout, a 64 KiB body limit and reading the whole body before routing
//! ([`read_body_first`]), and adds `/health`, `/ready`, `/metrics` and a
//! JSON 404 fallback. [`Server`] binds from config (port 0 works in tests)
//! and [`Server::run`] serves until a shutdown future resolves, then drains
//! in-flight requests for a bounded time.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, FromRequest, MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use tracing::Instrument;

use crate::error::{BODY_LIMIT_BYTES, json_errors, not_found};
use crate::health::Health;
use crate::metrics::Metrics;
use cloudmart_config::{EnvReader, EnvVar, Setting};

pub const HOST: Setting<std::net::IpAddr> = Setting::parsed(EnvVar::with_default(
    "HOST",
    "0.0.0.0",
    "an IP address",
    "Address the HTTP server binds to",
));
pub const REQUEST_TIMEOUT_MS: Setting<Duration> = Setting::millis(
    EnvVar::with_default(
        "REQUEST_TIMEOUT_MS",
        "30000",
        "milliseconds from 1 to 300000",
        "Longest time this service spends on one inbound request",
    ),
    1,
    300_000,
);
pub const SHUTDOWN_DRAIN_MS: Setting<Duration> = Setting::millis(
    EnvVar::with_default(
        "SHUTDOWN_DRAIN_MS",
        "10000",
        "milliseconds from 0 to 120000",
        "How long in-flight requests may run after SIGTERM before the process exits",
    ),
    0,
    120_000,
);

/// Settings every server reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerConfig {
    /// Where to listen.
    pub addr: SocketAddr,
    /// Per-request time limit.
    pub request_timeout: Duration,
    /// Bounded drain after a shutdown signal.
    pub drain: Duration,
}

impl ServerConfig {
    /// Reads `HOST`, `REQUEST_TIMEOUT_MS` and `SHUTDOWN_DRAIN_MS`. The port
    /// is the service's own setting (each has its default), read before.
    pub fn from_env(reader: &mut EnvReader<'_>, port: u16) -> Self {
        Self {
            addr: SocketAddr::new(reader.get(&HOST), port),
            request_timeout: reader.get(&REQUEST_TIMEOUT_MS),
            drain: reader.get(&SHUTDOWN_DRAIN_MS),
        }
    }
}

/// What [`observe`] needs.
#[derive(Clone)]
struct Observer {
    service: &'static str,
    metrics: Metrics,
    quiet: &'static [&'static str],
}

/// Wraps `routes` with the shared stack and adds the health routes.
pub fn standard(
    service: &'static str,
    routes: Router,
    health: Health,
    metrics: Metrics,
    config: &ServerConfig,
) -> Router {
    standard_with_quiet_routes(service, routes, health, metrics, config, &[])
}

/// Like [`standard`], with more routes whose access log goes to DEBUG:
/// routes that other services poll (database-service's pending
/// notifications, polled by the relay every second).
pub fn standard_with_quiet_routes(
    service: &'static str,
    routes: Router,
    health: Health,
    metrics: Metrics,
    config: &ServerConfig,
    quiet: &'static [&'static str],
) -> Router {
    let observer = Observer {
        service,
        metrics,
        quiet,
    };
    routes
        .merge(health.router())
        .fallback(not_found)
        .layer(middleware::from_fn(read_body_first))
        .layer(DefaultBodyLimit::max(BODY_LIMIT_BYTES))
        .layer(RequestBodyLimitLayer::new(BODY_LIMIT_BYTES))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            config.request_timeout,
        ))
        .layer(middleware::from_fn(json_errors))
        .layer(middleware::from_fn_with_state(observer, observe))
}

/// Reads the request body to its end (within the body limit) before any
/// handler runs.
///
/// A handler that answers without reading the body (a 404, 405 or 415)
/// leaves bytes unread, and hyper then closes the connection once the
/// answer is out. A pooled client (the gateway, api-service) has by then
/// taken the connection back and may be writing its next request on it,
/// which fails with a broken pipe and turns into a 502 for an innocent
/// caller. Bodies are small (64 KiB at most) and every JSON handler reads
/// them whole anyway. Found by the edge fuzzer in `crates/cli/tests/e2e`.
async fn read_body_first(req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    match Bytes::from_request(Request::new(body), &()).await {
        Ok(bytes) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        // 413 over the limit, 400 when the client broke off; `json_errors`
        // gives either the standard body.
        Err(rejection) => rejection.into_response(),
    }
}

/// Routes polled by probes and Prometheus, logged at DEBUG so a trainee's
/// `kubectl logs` shows the traffic that matters.
const PROBE_ROUTES: &[&str] = &["/health", "/ready", "/metrics"];

/// Server span, `traceparent` response header, access log and RED metrics.
async fn observe(State(obs): State<Observer>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let matched = req.extensions().get::<MatchedPath>().is_some();
    let (server_address, server_port) = host_and_port(req.headers());
    let client_address = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip().to_string());
    // OpenTelemetry HTTP server semantic conventions: "{method} {route}",
    // or the method alone when no route matched.
    let span = tracing::info_span!(
        "http.server",
        otel.name = %if matched { format!("{method} {route}") } else { method.to_string() },
        otel.kind = "server",
        service = obs.service,
        http.request.method = %method,
        http.route = tracing::field::Empty,
        url.path = %path,
        url.scheme = "http",
        server.address = server_address.as_deref(),
        server.port = server_port.map(i64::from),
        client.address = client_address.as_deref(),
        http.response.status_code = tracing::field::Empty,
        error.type = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
        request_id = %request_id,
    );
    if matched {
        span.record("http.route", route.as_str());
    }
    let parent = cloudmart_telemetry::server_parent(obs.service, req.headers());
    // Probes and scrapes arrive every few seconds per pod: keep them out of
    // the exported traces so the requests that matter stay easy to find.
    let parent = if PROBE_ROUTES.contains(&route.as_str()) {
        cloudmart_telemetry::untraced(parent)
    } else {
        parent
    };
    cloudmart_telemetry::set_parent(&span, parent);

    let mut response = next.run(req).instrument(span.clone()).await;

    let status = response.status();
    let elapsed = started.elapsed();
    // Integers as i64: tracing-opentelemetry exports other integer types as strings.
    span.record("http.response.status_code", i64::from(status.as_u16()));
    // 4xx is the client's mistake, not this server's: only 5xx is an error.
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
        span.record("error.type", status.as_str());
    }
    if let Some(tp) = cloudmart_telemetry::traceparent(&span)
        && let Ok(value) = HeaderValue::from_str(&tp)
    {
        response.headers_mut().insert("traceparent", value);
    }
    obs.metrics
        .observe(method.as_str(), &route, status.as_u16(), elapsed);
    let ms = (elapsed.as_secs_f64() * 1_000_000.0).round() / 1000.0;
    span.in_scope(|| {
        if PROBE_ROUTES.contains(&route.as_str()) || obs.quiet.contains(&route.as_str()) {
            tracing::debug!(
                status = status.as_u16(),
                duration_ms = ms,
                "{method} {path} {}",
                status.as_u16()
            );
        } else if status.is_server_error() {
            tracing::warn!(
                status = status.as_u16(),
                duration_ms = ms,
                "{method} {path} {}",
                status.as_u16()
            );
        } else {
            tracing::info!(
                status = status.as_u16(),
                duration_ms = ms,
                "{method} {path} {}",
                status.as_u16()
            );
        }
    });
    response
}

/// `server.address` and `server.port` from the `Host` header.
fn host_and_port(headers: &axum::http::HeaderMap) -> (Option<String>, Option<u16>) {
    let Some(host) = headers
        .get(axum::http::header::HOST)
        .and_then(|v| v.to_str().ok())
    else {
        return (None, None);
    };
    match host
        .rsplit_once(':')
        .and_then(|(name, port)| Some((name, port.parse::<u16>().ok()?)))
    {
        Some((name, port)) => (Some(name.to_owned()), Some(port)),
        None => (Some(host.to_owned()), None),
    }
}

/// A bound listener plus the router it will serve.
pub struct Server {
    listener: TcpListener,
    router: Router,
    drain: Duration,
}

impl Server {
    /// Binds `config.addr`; port 0 picks a free port.
    pub async fn bind(config: &ServerConfig, router: Router) -> io::Result<Self> {
        let listener = TcpListener::bind(config.addr).await?;
        Ok(Self {
            listener,
            router,
            drain: config.drain,
        })
    }

    /// The port actually bound.
    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// Serves until `shutdown` resolves, then lets in-flight requests finish
    /// for at most the configured drain time.
    pub async fn run<F>(self, shutdown: F) -> io::Result<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let graceful = async move {
            shutdown.await;
            let _ = tx.send(());
        };
        let app = self
            .router
            .into_make_service_with_connect_info::<SocketAddr>();
        let serve = axum::serve(self.listener, app).with_graceful_shutdown(graceful);
        let drain = self.drain;
        let deadline = async move {
            if rx.await.is_ok() {
                tokio::time::sleep(drain).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            result = serve => result,
            () = deadline => {
                tracing::warn!(drain_ms = u64::try_from(drain.as_millis()).unwrap_or(u64::MAX), "drain time is over; closing the remaining connections");
                Ok(())
            }
        }
    }
}

/// Resolves on ctrl-c or SIGTERM, logging which one arrived.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    let which = tokio::select! {
        () = ctrl_c => "ctrl-c",
        () = term => "SIGTERM",
    };
    tracing::info!(
        signal = which,
        "{which} received; finishing in-flight requests"
    );
}
