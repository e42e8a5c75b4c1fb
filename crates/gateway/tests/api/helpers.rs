//! Shared setup: `spawn_gateway()` runs the gateway in this process on port
//! 0 in front of stand-in upstreams ([`Upstream`]) that record every request
//! they receive; [`raw`] sends bytes a well-behaved client would not (dot
//! segments, a backslash, a chunked body) and reads the answer.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use cloudmart_gateway::Application;
use cloudmart_run::Service;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// How long any one exchange in these tests may take before it counts as hung.
pub(crate) const DEADLINE: Duration = Duration::from_secs(10);

/// One request as an upstream received it.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    pub(crate) method: String,
    /// Path and query exactly as they arrived on the wire.
    pub(crate) target: String,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Vec<u8>,
}

impl Received {
    /// A header's value as text, if present.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// What a stand-in upstream answers to every request: JSON unless
/// `headers` sets another `content-type`.
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) headers: Vec<(&'static str, &'static str)>,
    pub(crate) body: String,
}

/// A real HTTP server standing in for api-service or auth-service.
pub(crate) struct Upstream {
    pub(crate) addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    _stop: oneshot::Sender<()>,
}

impl Upstream {
    /// Answers every request 200 with `{"upstream": name}` and an
    /// `X-Upstream: name` header, so a test can tell which one answered.
    pub(crate) async fn start(name: &'static str) -> Self {
        Self::answering(Reply {
            status: StatusCode::OK,
            headers: vec![("x-upstream", name)],
            body: json!({ "upstream": name }).to_string(),
        })
        .await
    }

    /// Answers every request with `reply`.
    pub(crate) async fn answering(reply: Reply) -> Self {
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = received.clone();
        let app = Router::new().fallback(move |req: Request| {
            let log = log.clone();
            let reply = reply.clone();
            async move {
                let (parts, body) = req.into_parts();
                let body = axum::body::to_bytes(body, usize::MAX)
                    .await
                    .unwrap_or_default();
                log.lock().unwrap().push(Received {
                    method: parts.method.to_string(),
                    target: parts
                        .uri
                        .path_and_query()
                        .map(|p| p.as_str().to_owned())
                        .unwrap_or_default(),
                    headers: parts.headers,
                    body: body.to_vec(),
                });
                let mut response = Response::new(Body::from(reply.body));
                *response.status_mut() = reply.status;
                let headers = response.headers_mut();
                headers.insert("content-type", HeaderValue::from_static("application/json"));
                for (name, value) in reply.headers {
                    headers.insert(
                        HeaderName::from_static(name),
                        HeaderValue::from_static(value),
                    );
                }
                response
            }
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        Self {
            addr,
            received,
            _stop: stop,
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request received so far, oldest first.
    pub(crate) fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// The one request received so far; panics if there were none or more.
    pub(crate) fn only(&self) -> Received {
        let all = self.received();
        assert_eq!(
            all.len(),
            1,
            "exactly one request reaches the upstream: {all:?}"
        );
        all.into_iter().next().unwrap()
    }
}

/// A server that answers a response head announcing more body than it
/// sends, then closes the connection: an upstream that dies mid-answer.
pub(crate) async fn breaks_off_its_answer() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                // Read the request head before answering, so the client
                // is waiting for the response when the connection closes.
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = stream
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"part",
                    )
                    .await;
                let _ = stream.shutdown().await;
            });
        }
    });
    addr
}

/// A running gateway and a client to call it with.
pub(crate) struct TestGateway {
    pub(crate) addr: SocketAddr,
    pub(crate) url: String,
    pub(crate) client: reqwest::Client,
    _stop: oneshot::Sender<()>,
}

/// Starts the gateway with api-service at `api_url`, auth-service at
/// `auth_url` and the extra variables in `env`.
pub(crate) async fn spawn_gateway(
    api_url: &str,
    auth_url: &str,
    env: &[(&str, &str)],
) -> TestGateway {
    cloudmart_testkit::logs::logs();
    let mut vars: HashMap<String, String> = HashMap::from([
        ("HOST".to_owned(), "127.0.0.1".to_owned()),
        ("PORT".to_owned(), "0".to_owned()),
        ("API_SERVICE_URL".to_owned(), api_url.to_owned()),
        ("AUTH_SERVICE_URL".to_owned(), auth_url.to_owned()),
        ("SHUTDOWN_DRAIN_MS".to_owned(), "0".to_owned()),
    ]);
    for (k, v) in env {
        vars.insert((*k).to_owned(), (*v).to_owned());
    }
    let config = Application::config(&vars).expect("valid test configuration");
    let app = Application::build(config)
        .await
        .expect("the gateway starts");
    let addr = SocketAddr::from(([127, 0, 0, 1], app.port()));
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    TestGateway {
        addr,
        url: format!("http://{addr}"),
        client: reqwest::Client::builder()
            .timeout(DEADLINE)
            .build()
            .unwrap(),
        _stop: stop,
    }
}

/// A gateway whose upstreams are both `upstream`.
pub(crate) async fn gateway_to(upstream: &str, env: &[(&str, &str)]) -> TestGateway {
    spawn_gateway(upstream, upstream, env).await
}

impl TestGateway {
    /// `GET` a path through the gateway.
    pub(crate) async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .expect("the gateway answers")
    }
}

/// The `{"error":{"code","message"}}` of a response, asserting that shape:
/// an object with exactly one key, `error`, holding two strings.
pub(crate) fn error_of(body: &Value) -> (String, String) {
    let object = body.as_object().expect("a JSON object");
    assert_eq!(object.len(), 1, "only `error` at the top level: {body}");
    let error = body["error"].as_object().expect("an `error` object");
    assert_eq!(error.len(), 2, "only `code` and `message`: {body}");
    let code = error["code"].as_str().expect("a string code");
    let message = error["message"].as_str().expect("a string message");
    (code.to_owned(), message.to_owned())
}

/// Status, headers and JSON body of a reqwest response.
pub(crate) async fn parts(r: reqwest::Response) -> (u16, reqwest::header::HeaderMap, Value) {
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let body = r.json().await.unwrap_or(Value::Null);
    (status, headers, body)
}

/// An answer read off the wire by [`raw`].
#[derive(Debug)]
pub(crate) struct RawResponse {
    pub(crate) status: u16,
    /// Header names in lower case.
    pub(crate) headers: HashMap<String, String>,
    pub(crate) body: Value,
}

/// Writes `head` (a request line and headers, without the blank line) and
/// `body` to the gateway as they are, with `Connection: close`, and reads
/// the answer to its end.
pub(crate) async fn raw(addr: SocketAddr, head: &str, body: &[u8]) -> RawResponse {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let mut request =
            format!("{head}\r\nHost: {addr}\r\nConnection: close\r\n\r\n").into_bytes();
        request.extend_from_slice(body);
        stream.write_all(&request).await.unwrap();
        let mut answer = Vec::new();
        // The server may close before reading a body it refused; what it
        // wrote before closing is still there to read.
        let _ = stream.read_to_end(&mut answer).await;
        answer
    };
    let answer = tokio::time::timeout(DEADLINE, exchange)
        .await
        .expect("the gateway answers in time");
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .expect("a complete response head");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    RawResponse {
        status,
        headers,
        body: serde_json::from_str(body).unwrap_or(Value::Null),
    }
}
