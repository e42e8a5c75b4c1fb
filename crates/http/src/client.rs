//! Calls to downstream services: timeouts, trace propagation, retries and
//! error messages a trainee can grep.
//!
//! Every attempt is its own client span carrying `http.request.resend_count`,
//! injects its own `traceparent`, and is counted in
//! `http_client_requests_total`. Transport errors are described in plain
//! words ("connection refused", "dns error", "timeout") with the downstream's
//! name, because that is what a trainee searches the logs for.

use std::error::Error as _;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use reqwest::{Method, RequestBuilder, Response};
use tracing::Instrument;

use crate::error::ApiError;
use crate::metrics::ClientMetrics;
use cloudmart_config::{EnvReader, EnvVar, Setting};
use cloudmart_retry::{Attempt, Backoff, parse_retry_after, retry};

pub const HTTP_CONNECT_TIMEOUT_MS: Setting<Duration> = Setting::millis(
    EnvVar::with_default(
        "HTTP_CONNECT_TIMEOUT_MS",
        "1000",
        "milliseconds from 1 to 60000",
        "Connect timeout for calls to other services",
    ),
    1,
    60_000,
);
pub const HTTP_TIMEOUT_MS: Setting<Duration> = Setting::millis(
    EnvVar::with_default(
        "HTTP_TIMEOUT_MS",
        "5000",
        "milliseconds from 1 to 300000",
        "Whole-request timeout for one call attempt to another service",
    ),
    1,
    300_000,
);

/// Timeouts for outbound HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientConfig {
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Whole-request timeout per attempt.
    pub timeout: Duration,
}

impl Default for ClientConfig {
    /// The declared defaults of `HTTP_*_TIMEOUT_MS`.
    fn default() -> Self {
        let unset = std::collections::HashMap::new();
        Self::from_env(&mut EnvReader::new(&unset))
    }
}

impl ClientConfig {
    /// Reads `HTTP_*_TIMEOUT_MS`.
    pub fn from_env(reader: &mut EnvReader<'_>) -> Self {
        Self {
            connect_timeout: reader.get(&HTTP_CONNECT_TIMEOUT_MS),
            timeout: reader.get(&HTTP_TIMEOUT_MS),
        }
    }

    /// A reqwest client with these timeouts.
    pub fn build(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .connect_timeout(self.connect_timeout)
            .timeout(self.timeout)
            .pool_idle_timeout(Duration::from_secs(30))
            .tcp_nodelay(true)
            .build()
            .unwrap_or_else(|_| reqwest::Client::new())
    }
}

/// Why a downstream call failed without an HTTP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportError {
    /// The downstream's name.
    pub downstream: &'static str,
    /// `connect_error`, `timeout` or `error`, for metrics.
    pub kind: &'static str,
    /// Plain words: "connection refused", "dns error: cannot resolve <host>: ...", "timeout".
    pub cause: String,
}

impl std::fmt::Display for TransportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} unreachable: {}", self.downstream, self.cause)
    }
}

impl TransportError {
    /// 504 for timeouts, 502 otherwise, naming the downstream.
    pub fn to_api_error(&self) -> ApiError {
        if self.kind == "timeout" {
            ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_timeout",
                format!("{} did not answer in time", self.downstream),
            )
        } else {
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                "upstream_unreachable",
                format!("{} is unreachable: {}", self.downstream, self.cause),
            )
        }
    }
}

/// Describes a reqwest error in the words a trainee greps for.
pub fn describe_error(e: &reqwest::Error) -> String {
    let mut chain = Vec::new();
    let mut source = e.source();
    let mut refused = false;
    let mut reset = false;
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            refused |= io.kind() == std::io::ErrorKind::ConnectionRefused;
            reset |= matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted
            );
        }
        chain.push(s.to_string());
        source = s.source();
    }
    let all = chain.join(": ");
    if e.is_timeout() {
        "timeout".to_owned()
    } else if all.contains("dns error") || all.contains("failed to lookup address") {
        let detail = chain
            .iter()
            .rev()
            .find(|c| !c.is_empty())
            .cloned()
            .unwrap_or_default();
        // The host is the clue: it is the part of a URL setting that names
        // no Service ("database" where "database-service" was meant).
        match e.url().and_then(|u| u.host_str()) {
            Some(host) => format!("dns error: cannot resolve {host}: {detail}"),
            None => format!("dns error: {detail}"),
        }
    } else if refused {
        "connection refused".to_owned()
    } else if reset {
        "connection reset".to_owned()
    } else if all.is_empty() {
        e.to_string()
    } else {
        all
    }
}

fn classify(downstream: &'static str, e: &reqwest::Error) -> TransportError {
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect_error"
    } else {
        "error"
    };
    TransportError {
        downstream,
        kind,
        cause: describe_error(e),
    }
}

/// Whether a call may be sent again once it may have reached the
/// downstream: after a timeout, or a 429, 500, 502, 503 or 504. The caller
/// names the reason, so whoever reads the call sees why repeating it is
/// safe, or why not. A connect failure is retried whatever this says,
/// because nothing reached the downstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// A read: a GET, or a POST that only asks (auth-service's
    /// `/auth/validate`). Repeating it changes nothing.
    Safe,
    /// A write that sets a value rather than adding one, such as PATCHing
    /// an order's notification state: done twice, it leaves what done once
    /// leaves.
    Overwrite,
    /// A write carrying a key the downstream deduplicates on, so a repeat
    /// finds the first result instead of making a second: order-service's
    /// `POST /orders` carries the idempotency key that database-service's
    /// unique index enforces, and `POST /notify` carries the order id that
    /// notification-service delivers once per.
    Keyed,
    /// A write the downstream could apply twice, or one whose safety this
    /// hop cannot know. api-service's `POST /orders` is one: order-service
    /// makes up a fresh idempotency key when the client sent none, so a
    /// repeat could store a second order. The gateway, which forwards any
    /// request, is another; the services behind it retry what they can.
    Never,
}

impl Retry {
    /// Whether a request that may have reached the downstream is sent again.
    pub const fn after_sending(self) -> bool {
        !matches!(self, Self::Never)
    }
}

/// How a call went after retries.
#[derive(Debug)]
enum Failure {
    Transport(TransportError),
    /// A retryable status from the named downstream.
    Status(&'static str, Response),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Transport(t) => t.fmt(f),
            Self::Status(name, r) => write!(f, "{name} answered {}", r.status().as_u16()),
        }
    }
}

/// The low-cardinality form of a request path for span names and
/// `url.template`: no query, and segments that look like ids (any digit,
/// an upper-case letter or a percent escape, or over 24 characters) become
/// `{id}`, so `/orders/0193a7f2-...` is `/orders/{id}`.
pub fn path_template(path: &str) -> String {
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let segments: Vec<&str> = path
        .split('/')
        .map(|seg| {
            let id_like = seg.len() > 24
                || seg
                    .bytes()
                    .any(|b| b.is_ascii_digit() || b.is_ascii_uppercase() || b == b'%');
            if id_like { "{id}" } else { seg }
        })
        .collect();
    let joined = segments.join("/");
    if joined.is_empty() {
        "/".to_owned()
    } else {
        joined
    }
}

/// `server.address` and `server.port` of a base URL.
fn address_of(base_url: &str) -> (String, Option<u16>) {
    match reqwest::Url::parse(base_url) {
        Ok(url) => (
            url.host_str().unwrap_or_default().to_owned(),
            url.port_or_known_default(),
        ),
        Err(_) => (base_url.to_owned(), None),
    }
}

/// A named downstream service with its base URL, client and retry policy.
#[derive(Clone)]
pub struct Downstream {
    name: &'static str,
    base_url: String,
    address: String,
    port: Option<u16>,
    client: reqwest::Client,
    retry: Backoff,
    metrics: ClientMetrics,
}

impl std::fmt::Debug for Downstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Downstream")
            .field("name", &self.name)
            .field("base_url", &self.base_url)
            .finish()
    }
}

impl Downstream {
    /// A downstream called `name` at `base_url`.
    pub fn new(
        name: &'static str,
        base_url: impl Into<String>,
        client: reqwest::Client,
        retry: Backoff,
        metrics: ClientMetrics,
    ) -> Self {
        let base_url = base_url.into();
        let (address, port) = address_of(&base_url);
        Self {
            name,
            base_url,
            address,
            port,
            client,
            retry,
            metrics,
        }
    }

    /// The downstream's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The base URL.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The underlying client.
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// Sends a request built by `build` for each attempt.
    ///
    /// Connect failures are always retried (nothing reached the server).
    /// Timeouts, 429, 500, 502, 503 and 504 are retried only when `retry`
    /// allows it ([`Retry::after_sending`]); a 503 naming a dependency as
    /// down never is. Any HTTP response that is not retried, or the last
    /// one, is returned for the caller to interpret.
    pub async fn send<F>(
        &self,
        method: Method,
        path: &str,
        retry_when: Retry,
        build: F,
    ) -> Result<Response, TransportError>
    where
        F: Fn(RequestBuilder) -> RequestBuilder,
    {
        let url = format!("{}{}", self.base_url, path);
        let what = format!("{method} {} {path}", self.name);
        let template = path_template(path);
        let span_name = format!("{method} {template}");
        let repeatable = retry_when.after_sending();
        let result = retry(&self.retry, &what, |attempt| {
            if attempt > 1 {
                self.metrics.retried(self.name);
            }
            // One client span per attempt (OpenTelemetry HTTP client
            // semantic conventions): siblings under the caller's span, a
            // resend carrying `http.request.resend_count`. Integers go in as
            // i64, which tracing-opentelemetry exports as integers.
            let span = tracing::info_span!(
                "http.client",
                otel.name = %span_name,
                otel.kind = "client",
                peer.service = self.name,
                http.request.method = %method,
                server.address = %self.address,
                server.port = self.port.map(i64::from),
                url.full = %url,
                url.template = %template,
                attempt = i64::from(attempt),
                http.request.resend_count = tracing::field::Empty,
                http.response.status_code = tracing::field::Empty,
                otel.status_code = tracing::field::Empty,
                error.type = tracing::field::Empty,
            );
            if attempt > 1 {
                span.record("http.request.resend_count", i64::from(attempt - 1));
            }
            let mut headers = http::HeaderMap::new();
            cloudmart_telemetry::inject(&span, &mut headers);
            let request = build(self.client.request(method.clone(), &url)).headers(headers);
            let name = self.name;
            let metrics = self.metrics.clone();
            async move {
                let started = Instant::now();
                let result = request.send().await;
                let elapsed = started.elapsed();
                match result {
                    Err(e) => {
                        let t = classify(name, &e);
                        metrics.observe(name, t.kind, elapsed);
                        let current = tracing::Span::current();
                        current.record("otel.status_code", "ERROR");
                        current.record("error.type", t.kind);
                        tracing::warn!(
                            downstream = name,
                            error = %t.cause,
                            "call to {name} failed: {}",
                            t.cause
                        );
                        if t.kind == "connect_error" || repeatable {
                            Attempt::Retryable {
                                error: Failure::Transport(t),
                                retry_after: None,
                            }
                        } else {
                            Attempt::Fatal(Failure::Transport(t))
                        }
                    }
                    Ok(response) => {
                        let status = response.status();
                        metrics.observe(name, status.as_str(), elapsed);
                        let current = tracing::Span::current();
                        current.record("http.response.status_code", i64::from(status.as_u16()));
                        // For a client every 4xx and 5xx is an error.
                        if status.is_client_error() || status.is_server_error() {
                            current.record("otel.status_code", "ERROR");
                            current.record("error.type", status.as_str());
                        }
                        let retryable = matches!(status.as_u16(), 429 | 500 | 502 | 503 | 504);
                        // A 503 that says a dependency of the downstream is
                        // down (its database, Redis) is passed on at once: a
                        // retry inside this request would meet the same
                        // outage and only hold our caller. A busy downstream
                        // (503 `overloaded`) is worth a retry after a wait.
                        let (response, dependency_down) =
                            if retryable && repeatable && status == StatusCode::SERVICE_UNAVAILABLE
                            {
                                names_a_dependency_down(response).await
                            } else {
                                (response, false)
                            };
                        if retryable && repeatable && !dependency_down {
                            let retry_after = response
                                .headers()
                                .get(reqwest::header::RETRY_AFTER)
                                .and_then(|v| v.to_str().ok())
                                .and_then(parse_retry_after);
                            Attempt::Retryable {
                                error: Failure::Status(name, response),
                                retry_after,
                            }
                        } else {
                            Attempt::Success(response)
                        }
                    }
                }
            }
            .instrument(span)
        })
        .await;
        match result {
            Ok(response) | Err(Failure::Status(_, response)) => Ok(response),
            Err(Failure::Transport(t)) => Err(t),
        }
    }
}

/// Whether a 503 names a dependency of the downstream as down (its error
/// code is one of [`crate::error::DEPENDENCY_DOWN_CODES`]), and the same
/// response, rebuilt from the body that had to be read to tell.
async fn names_a_dependency_down(response: Response) -> (Response, bool) {
    let status = response.status();
    let version = response.version();
    let headers = response.headers().clone();
    let body = response.bytes().await.unwrap_or_default();
    let down = serde_json::from_slice::<crate::error::ErrorBody>(&body)
        .is_ok_and(|b| crate::error::DEPENDENCY_DOWN_CODES.contains(&b.error.code.as_str()));
    let mut rebuilt = http::Response::new(body);
    *rebuilt.status_mut() = status;
    *rebuilt.version_mut() = version;
    *rebuilt.headers_mut() = headers;
    (Response::from(rebuilt), down)
}

/// Reads a JSON body, turning a malformed one into a 502 naming `downstream`.
pub async fn read_json<T: serde::de::DeserializeOwned>(
    downstream: &str,
    response: Response,
) -> Result<T, ApiError> {
    response.json::<T>().await.map_err(|e| {
        tracing::error!(downstream, error = %e, "{downstream} sent a body we could not read: {e}");
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "upstream_invalid_response",
            format!("{downstream} sent a response that could not be read"),
        )
    })
}

/// Turns a downstream's error response into ours: its own JSON error is
/// passed through for 4xx; 5xx become 502/503 naming the downstream.
pub async fn upstream_error(downstream: &str, response: Response) -> ApiError {
    let status = response.status();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let body = response.json::<crate::error::ErrorBody>().await.ok();
    let message = body
        .as_ref()
        .map(|b| b.error.message.clone())
        .unwrap_or_else(|| format!("{downstream} answered {}", status.as_u16()));
    if status.is_client_error() {
        let code = match status.as_u16() {
            400 => "bad_request",
            401 => "unauthorized",
            403 => "forbidden",
            404 => "not_found",
            409 => "conflict",
            413 => "payload_too_large",
            422 => "validation_failed",
            429 => "rate_limited",
            _ => "bad_request",
        };
        let mut e = ApiError::new(status, code, message);
        e.retry_after = retry_after;
        return e;
    }
    tracing::error!(
        downstream,
        status = status.as_u16(),
        "{downstream} failed: {} {message}",
        status.as_u16()
    );
    let (status, code) = if status == StatusCode::SERVICE_UNAVAILABLE {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            crate::error::UPSTREAM_UNAVAILABLE,
        )
    } else {
        (StatusCode::BAD_GATEWAY, "upstream_error")
    };
    let mut e = ApiError::new(status, code, format!("{downstream} failed: {message}"));
    e.retry_after = retry_after;
    e
}

impl Downstream {
    /// Sends a request and reads a JSON answer.
    ///
    /// Transport failures become 502/504 naming this downstream (and are
    /// logged once at ERROR); error responses become ours through
    /// [`upstream_error`]. The status is returned with the body so callers
    /// can tell a created resource from a replayed one. `retry_when` says
    /// why the call may be repeated, as for [`Downstream::send`].
    pub async fn call<T, F>(
        &self,
        method: Method,
        path: &str,
        retry_when: Retry,
        build: F,
    ) -> Result<(StatusCode, T), ApiError>
    where
        T: serde::de::DeserializeOwned,
        F: Fn(RequestBuilder) -> RequestBuilder,
    {
        let response = match self.send(method.clone(), path, retry_when, build).await {
            Ok(r) => r,
            Err(t) => {
                tracing::error!(downstream = self.name, error = %t.cause, "{method} {path} on {} failed: {}", self.name, t);
                return Err(t.to_api_error());
            }
        };
        let status = response.status();
        if !status.is_success() {
            return Err(upstream_error(self.name, response).await);
        }
        let body = read_json(self.name, response).await?;
        Ok((status, body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_templates_hide_ids_and_queries() {
        assert_eq!(path_template("/orders"), "/orders");
        assert_eq!(
            path_template("/orders/0193a7f2-7c1e-7d4e-9b1a-3f5c2d1e0a9b/notification"),
            "/orders/{id}/notification"
        );
        assert_eq!(
            path_template("/notifications/pending?limit=100"),
            "/notifications/pending"
        );
        assert_eq!(path_template("/api/orders/a%20b"), "/api/orders/{id}");
        assert_eq!(path_template(""), "/");
    }

    #[test]
    fn only_never_stops_a_retry_once_the_request_was_sent() {
        assert!(Retry::Safe.after_sending());
        assert!(Retry::Overwrite.after_sending());
        assert!(Retry::Keyed.after_sending());
        assert!(!Retry::Never.after_sending());
    }

    /// How many requests a downstream answering 500 to everything gets for
    /// one call under a three-attempt policy.
    async fn attempts_against_a_failing_downstream(retry_when: Retry) -> usize {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        let hits = Arc::new(AtomicUsize::new(0));
        let counted = hits.clone();
        let app = axum::Router::new().fallback(move || {
            let counted = counted.clone();
            async move {
                counted.fetch_add(1, Ordering::SeqCst);
                StatusCode::INTERNAL_SERVER_ERROR
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let downstream = Downstream::new(
            "test-service",
            url,
            reqwest::Client::new(),
            Backoff::immediate(3),
            crate::metrics::MetricsBuilder::new().build().client(),
        );

        let response = downstream
            .send(Method::POST, "/things", retry_when, |r| r)
            .await
            .unwrap();

        server.abort();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        hits.load(Ordering::SeqCst)
    }

    #[tokio::test]
    async fn a_500_is_retried_for_every_reason_but_never() {
        assert_eq!(attempts_against_a_failing_downstream(Retry::Safe).await, 3);
        assert_eq!(
            attempts_against_a_failing_downstream(Retry::Overwrite).await,
            3
        );
        assert_eq!(attempts_against_a_failing_downstream(Retry::Keyed).await, 3);
        assert_eq!(attempts_against_a_failing_downstream(Retry::Never).await, 1);
    }

    #[test]
    fn server_address_and_port_come_from_the_base_url() {
        assert_eq!(
            address_of("http://database-service:8080"),
            ("database-service".to_owned(), Some(8080))
        );
        assert_eq!(
            address_of("http://auth-service"),
            ("auth-service".to_owned(), Some(80))
        );
    }
}
