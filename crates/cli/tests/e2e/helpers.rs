//! Shared setup: one log capture for the test binary, and `spawn_app()`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use cloudmart_cli::stack::{Ports, Stack};
use serde_json::Value;

/// The signing key every test stack uses, so tests can forge tokens.
pub(crate) const JWT_SECRET: &str = "e2e-secret-which-is-at-least-thirty-two-bytes";

pub(crate) use cloudmart_testkit::logs::logs;

/// A running stack plus what tests need to talk to it.
pub(crate) struct TestApp {
    pub(crate) stack: Stack,
    pub(crate) url: String,
    pub(crate) client: reqwest::Client,
    dir: PathBuf,
}

fn unique_dir() -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::SeqCst);
    std::env::temp_dir().join(format!("cloudmart-e2e-{}-{n}", std::process::id()))
}

/// Starts all six services on free ports with their own data directory.
pub(crate) async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

/// Like [`spawn_app`], with extra environment variables.
pub(crate) async fn spawn_app_with(extra: &[(&str, &str)]) -> TestApp {
    let _ = logs();
    let dir = unique_dir();
    let mut env: HashMap<String, String> = HashMap::from([
        ("DATA_DIR".to_owned(), dir.display().to_string()),
        ("DB_NAME".to_owned(), "e2e".to_owned()),
        ("JWT_SECRET".to_owned(), JWT_SECRET.to_owned()),
        ("RETRY_BASE_DELAY_MS".to_owned(), "10".to_owned()),
        ("RETRY_MAX_DELAY_MS".to_owned(), "50".to_owned()),
    ]);
    for (k, v) in extra {
        env.insert((*k).to_owned(), (*v).to_owned());
    }
    let stack = Stack::start(Ports::ANY, &env)
        .await
        .expect("the stack starts");
    let url = stack.gateway_url();
    TestApp {
        stack,
        url,
        client: reqwest::Client::new(),
        dir,
    }
}

impl TestApp {
    /// `POST /api/orders` with a JSON body.
    pub(crate) async fn post_order(&self, body: &Value) -> reqwest::Response {
        self.client
            .post(format!("{}/api/orders", self.url))
            .json(body)
            .send()
            .await
            .expect("the gateway answers")
    }

    /// `GET {gateway}{path}` and its JSON body.
    pub(crate) async fn get_json(&self, path: &str) -> Value {
        self.client
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .expect("the gateway answers")
            .json()
            .await
            .expect("a JSON body")
    }

    /// Logs in a demo user and returns the token.
    pub(crate) async fn login(&self, user: &str, password: &str) -> String {
        let r = self
            .client
            .post(format!("{}/api/auth/login", self.url))
            .json(&serde_json::json!({"username": user, "password": password}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.unwrap();
        body["token"].as_str().unwrap().to_owned()
    }

    /// Stops every service and removes the data directory.
    pub(crate) async fn stop(self) {
        self.stack.stop().await;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Asserts the CloudMart error body and returns its code and message.
pub(crate) async fn error_body(r: reqwest::Response, status: u16) -> (String, String) {
    assert_eq!(r.status().as_u16(), status, "unexpected status");
    let ct = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        ct.starts_with("application/json"),
        "error responses are JSON, got {ct:?}"
    );
    let body: Value = r.json().await.unwrap();
    let code = body["error"]["code"]
        .as_str()
        .expect("error.code")
        .to_owned();
    let message = body["error"]["message"]
        .as_str()
        .expect("error.message")
        .to_owned();
    (code, message)
}
