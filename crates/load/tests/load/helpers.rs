//! A test server whose every answer is decided by a closure of the request
//! number, and a run wrapper with a deadline.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::routing::{get, post};
use cloudmart_load::{LoadConfig, Report};

/// What the server does with one request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reply {
    pub(crate) delay: Duration,
    pub(crate) status: StatusCode,
}

impl Reply {
    /// `201 Created` after `millis` ms.
    pub(crate) fn created_after(millis: u64) -> Self {
        Self {
            delay: Duration::from_millis(millis),
            status: StatusCode::CREATED,
        }
    }
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    pub(crate) method: Method,
    pub(crate) uri: String,
    pub(crate) content_type: Option<String>,
    pub(crate) idempotency_key: Option<String>,
    pub(crate) body: String,
}

type Behaviour = dyn Fn(u64) -> Reply + Send + Sync;

struct ServerState {
    requests: AtomicU64,
    behaviour: Box<Behaviour>,
    seen: Mutex<Vec<Seen>>,
}

pub(crate) struct TestServer {
    pub(crate) base_url: String,
    state: Arc<ServerState>,
}

impl TestServer {
    /// Every request the server has received, in arrival order.
    pub(crate) fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    /// A config for this server with the given rate and duration, and the
    /// defaults for everything else.
    pub(crate) fn config(&self, rate_per_sec: f64, duration: Duration) -> LoadConfig {
        LoadConfig {
            rate_per_sec,
            duration,
            ..LoadConfig::new(&self.base_url)
        }
    }
}

/// Serves the three CloudMart routes on 127.0.0.1, port 0. Request `n`
/// (0-based, in arrival order, across routes) gets `behaviour(n)`.
pub(crate) async fn spawn_server(
    behaviour: impl Fn(u64) -> Reply + Send + Sync + 'static,
) -> TestServer {
    let state = Arc::new(ServerState {
        requests: AtomicU64::new(0),
        behaviour: Box::new(behaviour),
        seen: Mutex::new(Vec::new()),
    });
    let app = Router::new()
        .route("/api/orders", get(handle).post(handle))
        .route("/api/auth/login", post(handle))
        .with_state(Arc::clone(&state));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    // The listener is bound before the run starts, so the first
    // connection is queued, not refused.
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    TestServer {
        base_url: format!("http://127.0.0.1:{port}"),
        state,
    }
}

async fn handle(
    State(state): State<Arc<ServerState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let n = state.requests.fetch_add(1, Ordering::SeqCst);
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    state.seen.lock().unwrap().push(Seen {
        method,
        uri: uri.to_string(),
        content_type: header("content-type"),
        idempotency_key: header("idempotency-key"),
        body: String::from_utf8_lossy(&body).into_owned(),
    });
    let reply = (state.behaviour)(n);
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    reply.status
}

/// Runs `config`, failing the test if the run has not ended by the time
/// it must have: the schedule, then one timeout for the last requests,
/// plus 5 s of slack.
pub(crate) async fn run_with_deadline(config: &LoadConfig) -> Report {
    let deadline = config.duration + config.timeout + Duration::from_secs(5);
    tokio::time::timeout(deadline, cloudmart_load::run(config))
        .await
        .unwrap_or_else(|_| panic!("the run did not end within {deadline:?}"))
        .expect("the config is valid")
}

/// A base URL on which nothing listens: bind port 0, then let it go.
pub(crate) fn closed_port_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}

/// Prints the report, visible with `--nocapture` or when a test fails.
pub(crate) fn show(name: &str, report: &Report) {
    println!("--- {name}\n{}", report.render_text());
}
