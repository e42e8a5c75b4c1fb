//! gateway: the single entry point, replacing the workshop's nginx.
//!
//! `/api/auth/*` goes to auth-service and every other `/api/*` to
//! api-service, with path and query untouched. The gateway adds an
//! `X-Request-Id` when the caller sent none, and every response carries a
//! `traceparent` header, so a trainee can copy the trace id of any request
//! straight from `curl -v`. `GET /api/health` gathers the readiness of both
//! downstreams in one document.
//!
//! Upstream failures are answered by the gateway itself with the JSON error
//! body: 502 when a downstream cannot be reached (the message says why:
//! connection refused, dns error), 504 when it does not answer in time.
//! A downstream's own JSON error is passed on as it came; a 5xx without one
//! becomes 503 or 502 naming the downstream.
//!
//! "Untouched" has one limit: a downstream must see the path the gateway
//! routed. A `.` or `..` segment is refused with a 400 and a backslash is
//! escaped (see [`forwarded_path`]), so `/api/../metrics` cannot reach
//! api-service's own `/metrics`.

use std::collections::BTreeMap;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use cloudmart_config::{EnvReader, EnvVar, FromEnv, Setting, port};
use cloudmart_http::client::{self, ClientConfig, Downstream, Retry};
use cloudmart_http::error::{ApiError, BODY_LIMIT_BYTES};
use cloudmart_http::health::{Check, Health, HttpCheck};
use cloudmart_http::metrics::MetricsBuilder;
use cloudmart_http::server::{self, Server, ServerConfig};
use cloudmart_model::{
    DownstreamReadiness, ErrorDetail, Readiness, ReadyStatus, SystemHealth, SystemStatus,
};
use cloudmart_retry::Backoff;
use cloudmart_run::{App, Service, StartupError};

/// The binary and image name.
pub const NAME: &str = "gateway";
pub const PORT: Setting<u16> = port("8080");
pub const API_SERVICE_URL: Setting<String> = Setting::url(EnvVar::with_default(
    "API_SERVICE_URL",
    "http://api-service:3000",
    "an http:// URL such as http://api-service:3000",
    "Base URL of api-service (every /api/* except /api/auth/*)",
));
pub const AUTH_SERVICE_URL: Setting<String> = Setting::url(EnvVar::with_default(
    "AUTH_SERVICE_URL",
    "http://auth-service:3000",
    "an http:// URL such as http://auth-service:3000",
    "Base URL of auth-service (/api/auth/*)",
));

/// Everything this service reads from its environment, once, at startup.
#[derive(Debug, Clone)]
pub struct Config {
    /// Listener and timeouts.
    pub server: ServerConfig,
    /// Where api-service answers (`API_SERVICE_URL`).
    pub api_url: String,
    /// Where auth-service answers (`AUTH_SERVICE_URL`).
    pub auth_url: String,
    /// Outbound timeouts.
    pub client: ClientConfig,
}

impl FromEnv for Config {
    fn read(r: &mut EnvReader<'_>) -> Self {
        let port = r.get(&PORT);
        let api_url = r.get(&API_SERVICE_URL);
        let auth_url = r.get(&AUTH_SERVICE_URL);
        let client = ClientConfig::from_env(r);
        Self {
            server: ServerConfig::from_env(r, port),
            api_url,
            auth_url,
            client,
        }
    }
}

#[derive(Clone)]
struct AppState {
    api: Downstream,
    auth: Downstream,
}

/// Headers that describe one connection, not the message; never forwarded.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
    "traceparent",
    "tracestate",
    // The gateway reads the whole body before it forwards anything, so it
    // has met a `100-continue` expectation itself; passed on, it would only
    // ask the downstream for an interim answer nobody waits for.
    "expect",
];

fn forwardable(name: &HeaderName) -> bool {
    !HOP_BY_HOP.contains(&name.as_str())
}

fn request_id(headers: &HeaderMap) -> HeaderValue {
    headers
        .get("x-request-id")
        .filter(|v| !v.is_empty() && v.len() <= 200)
        .cloned()
        .unwrap_or_else(|| {
            HeaderValue::from_str(&uuid::Uuid::new_v4().to_string())
                .unwrap_or(HeaderValue::from_static("unknown"))
        })
}

/// The path and query to send downstream: as the caller wrote them, except
/// that a backslash is escaped, or a 400 when a segment is `.` or `..`.
///
/// The client parses the downstream URL the WHATWG way, which resolves dot
/// segments (also spelled `%2e`) and reads `\` as `/`. Forwarded as they
/// came, `/api/../metrics` or `/api/..\metrics` would match the gateway's
/// `/api/*` route and reach api-service as `/metrics`: a route the gateway
/// never meant to expose. Browsers and curl resolve dot segments before
/// sending, so only a crafted request has one.
fn forwarded_path(uri: &Uri) -> Result<String, ApiError> {
    let path = uri.path().replace('\\', "%5C");
    if path.split('/').any(is_dot_segment) {
        return Err(ApiError::bad_request(
            "the request path has a '.' or '..' segment (or %2e); send the path resolved",
        ));
    }
    Ok(match uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path,
    })
}

/// `.` or `..`, in any mix of literal and `%2e` that URL parsers resolve.
fn is_dot_segment(segment: &str) -> bool {
    matches!(
        segment.to_ascii_lowercase().as_str(),
        "." | "%2e" | ".." | ".%2e" | "%2e." | "%2e%2e"
    )
}

/// Gives every request an `X-Request-Id` before anything else runs (the
/// caller's, when it is usable) and returns it on every answer, so a 404,
/// a 413 or a timeout from the shared stack carries it as a proxied answer
/// does, and the id in a trainee's curl output is the one in the logs.
async fn with_request_id(mut req: Request, next: Next) -> Response {
    let id = request_id(req.headers());
    req.headers_mut().insert("x-request-id", id.clone());
    let mut response = next.run(req).await;
    response.headers_mut().insert("x-request-id", id);
    response
}

async fn proxy(to: &Downstream, req: Request) -> Result<Response, ApiError> {
    let peer = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    let (parts, body) = req.into_parts();
    let path = forwarded_path(&parts.uri)?;
    // The shared stack has already read the body within its limit.
    let body: Bytes = axum::body::to_bytes(body, BODY_LIMIT_BYTES)
        .await
        .map_err(|e| ApiError::bad_request(format!("the request body could not be read: {e}")))?;
    let mut headers = HeaderMap::with_capacity(parts.headers.len() + 1);
    for (name, value) in parts.headers.iter().filter(|(n, _)| forwardable(n)) {
        headers.append(name.clone(), value.clone());
    }
    if let Some(ip) = peer {
        // Append the caller to X-Forwarded-For so auth-service can rate-limit per client.
        let chain = match parts
            .headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
        {
            Some(prior) => format!("{prior}, {ip}"),
            None => ip.to_string(),
        };
        if let Ok(v) = HeaderValue::from_str(&chain) {
            headers.insert("x-forwarded-for", v);
        }
    }
    // The gateway never retries: it cannot know whether a request is safe to repeat.
    let upstream = to
        .send(parts.method.clone(), &path, Retry::Never, |r| {
            r.headers(headers.clone()).body(body.clone())
        })
        .await
        .map_err(|t| {
            tracing::error!(downstream = to.name(), error = %t.cause, "{} {path} -> {}", parts.method, t);
            t.to_api_error()
        })?;
    let status = upstream.status();
    // A 5xx that is not CloudMart's JSON error (a proxy in front of the
    // hop, a URL naming the wrong port) would be rewritten by the shared
    // error layer into a bare 500 `internal` that hides which hop failed.
    let json = upstream
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if status.is_server_error() && !json {
        return Err(client::upstream_error(to.name(), upstream).await);
    }
    let mut out_headers = HeaderMap::with_capacity(upstream.headers().len() + 1);
    for (name, value) in upstream.headers().iter().filter(|(n, _)| forwardable(n)) {
        out_headers.append(name.clone(), value.clone());
    }
    let bytes = upstream.bytes().await.map_err(|e| {
        let cause = client::describe_error(&e);
        tracing::error!(downstream = to.name(), error = %cause, "{} broke off its answer: {cause}", to.name());
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "upstream_error",
            format!("{} broke off its answer: {cause}", to.name()),
        )
    })?;
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = status;
    *response.headers_mut() = out_headers;
    Ok(response)
}

async fn to_api(State(s): State<AppState>, req: Request) -> Result<Response, ApiError> {
    proxy(&s.api, req).await
}

async fn to_auth(State(s): State<AppState>, req: Request) -> Result<Response, ApiError> {
    proxy(&s.auth, req).await
}

/// `GET /api/health`: every downstream's `/ready` in one document.
async fn system_health(State(s): State<AppState>) -> Response {
    let (api, auth) = futures::join!(readiness(&s.api), readiness(&s.auth));
    let failing: Vec<&str> = [(s.api.name(), &api), (s.auth.name(), &auth)]
        .into_iter()
        .filter(|(_, d)| !d.ready)
        .map(|(n, _)| n)
        .collect();
    let degraded = [&api, &auth].iter().any(|d| {
        d.detail
            .as_ref()
            .is_some_and(|r| r.status == ReadyStatus::Degraded)
    });
    let mut body = SystemHealth {
        error: None,
        status: if failing.is_empty() && !degraded {
            SystemStatus::Ok
        } else {
            SystemStatus::Degraded
        },
        downstreams: BTreeMap::from([
            (s.api.name().to_owned(), api),
            (s.auth.name().to_owned(), auth),
        ]),
    };
    if failing.is_empty() {
        return axum::Json(body).into_response();
    }
    body.error = Some(ErrorDetail {
        code: "degraded".to_owned(),
        message: format!("not ready: {}", failing.join(", ")),
    });
    (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response()
}

async fn readiness(d: &Downstream) -> DownstreamReadiness {
    let url = format!("{}/ready", d.base_url());
    match d
        .client()
        .get(&url)
        .timeout(std::time::Duration::from_secs(3))
        .send()
        .await
    {
        Ok(r) => {
            let status = r.status();
            DownstreamReadiness {
                ready: status.is_success(),
                status: Some(status.as_u16()),
                detail: r.json::<Readiness>().await.ok(),
                error: None,
            }
        }
        Err(e) => DownstreamReadiness {
            ready: false,
            status: None,
            detail: None,
            error: Some(client::describe_error(&e)),
        },
    }
}

/// The service, as `cloudmart_run` builds and runs it.
pub struct Application;

impl Service for Application {
    const NAME: &'static str = NAME;
    const PORT: Setting<u16> = PORT;
    type Config = Config;

    async fn build(config: Config) -> Result<App, StartupError> {
        let metrics = MetricsBuilder::new().build();
        let http = config.client.build();
        let state = AppState {
            api: Downstream::new(
                "api-service",
                &config.api_url,
                http.clone(),
                Backoff::none(),
                metrics.client(),
            ),
            auth: Downstream::new(
                "auth-service",
                &config.auth_url,
                http.clone(),
                Backoff::none(),
                metrics.client(),
            ),
        };
        let routes = Router::new()
            .route("/api/health", get(system_health))
            .route("/api/auth", any(to_auth))
            .route("/api/auth/{*rest}", any(to_auth))
            .route("/api/{*rest}", any(to_api))
            .with_state(state);
        let checks: Vec<Box<dyn Check>> = vec![
            Box::new(HttpCheck::new("api-service", &config.api_url, http.clone())),
            Box::new(HttpCheck::new("auth-service", &config.auth_url, http)),
        ];
        let health = Health::new(NAME, checks, metrics.clone());
        let router = server::standard(NAME, routes, health, metrics, &config.server)
            .layer(middleware::from_fn(with_request_id));
        Ok(App::new(Server::bind(&config.server, router).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_only_the_settings_it_declares() {
        cloudmart_run::check_settings::<Application>();
    }

    fn forwarded(target: &str) -> Result<String, ApiError> {
        forwarded_path(&target.parse().expect("a valid request target"))
    }

    #[test]
    fn dot_segments_in_any_spelling_are_refused() {
        for target in [
            "/api/../metrics",
            "/api/./orders",
            "/api/%2e%2e/metrics",
            "/api/.%2E/metrics",
            "/api/orders/..",
            "/api/orders/%2e?limit=1",
        ] {
            let e = forwarded(target).expect_err(target);
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{target}");
        }
    }

    #[test]
    fn a_backslash_is_escaped_so_it_cannot_act_as_a_slash() {
        assert_eq!(forwarded("/api/..\\metrics").unwrap(), "/api/..%5Cmetrics");
    }

    #[test]
    fn other_paths_and_queries_pass_untouched() {
        for target in [
            "/api/orders",
            "/api/orders?limit=5&cursor=..",
            "/api/orders/...",
            "/api/orders/.hidden",
            "/api/a%2Fb",
        ] {
            assert_eq!(forwarded(target).unwrap(), target);
        }
    }
}
