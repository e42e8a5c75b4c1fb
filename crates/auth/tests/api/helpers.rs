//! Shared setup: `spawn_app()` runs auth-service in this process on port 0,
//! against the in-memory store or the real Redis under a key prefix of its
//! own; plus one log capture for the whole test binary.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use cloudmart_auth::Application;
use cloudmart_run::Service;
use serde_json::Value;
use tokio::sync::oneshot;

/// The signing key of every test app, so tests can sign their own tokens.
pub(crate) const JWT_SECRET: &str = "auth-tests-secret-which-is-at-least-32-bytes";
/// What to run when Redis is missing.
const START_REDIS: &str = "redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save \"\" --appendonly no; export REDIS_URL=redis://127.0.0.1:6379";

/// Where the app keeps counters, revocations and cached tokens.
#[derive(Debug, Clone)]
pub(crate) enum Backend {
    /// No `REDIS_URL`.
    Memory,
    /// The real Redis at this URL.
    Redis(String),
}

impl Backend {
    /// The real Redis from `REDIS_URL`, or `None` after a SKIPPED line
    /// (a failure under `CI=true`).
    pub(crate) fn redis(test: &str) -> Option<Self> {
        cloudmart_testkit::servers::require("REDIS_URL", test, START_REDIS).map(Self::Redis)
    }
}

pub(crate) use cloudmart_testkit::logs::logs;

/// A key prefix no other test, and no other run, uses.
fn unique_prefix() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "cloudmart:test:auth:{}:{}:",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// A running auth-service and what tests need to talk to it.
pub(crate) struct TestApp {
    pub(crate) url: String,
    pub(crate) client: reqwest::Client,
    /// The key prefix, when the app uses Redis.
    pub(crate) prefix: Option<String>,
    /// The real Redis behind the app (not a proxy in front of it).
    redis: Option<String>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

/// Starts auth-service with `backend` and the extra variables in `env`.
pub(crate) async fn spawn_app(backend: &Backend, env: &[(&str, &str)]) -> TestApp {
    let redis = match backend {
        Backend::Memory => None,
        Backend::Redis(url) => Some(url.clone()),
    };
    spawn_with_redis(redis.as_deref(), redis.as_deref(), env).await
}

/// Starts auth-service talking to Redis at `app_url` (for example a proxy),
/// whose keys live in the real Redis at `real_url`.
pub(crate) async fn spawn_with_redis(
    app_url: Option<&str>,
    real_url: Option<&str>,
    env: &[(&str, &str)],
) -> TestApp {
    logs();
    let prefix = app_url.map(|_| unique_prefix());
    let mut vars: HashMap<String, String> = HashMap::from([
        ("HOST".to_owned(), "127.0.0.1".to_owned()),
        ("PORT".to_owned(), "0".to_owned()),
        ("JWT_SECRET".to_owned(), JWT_SECRET.to_owned()),
        ("SHUTDOWN_DRAIN_MS".to_owned(), "2000".to_owned()),
    ]);
    if let (Some(url), Some(prefix)) = (app_url, &prefix) {
        vars.insert("REDIS_URL".to_owned(), url.to_owned());
        vars.insert("REDIS_KEY_PREFIX".to_owned(), prefix.clone());
    }
    for (k, v) in env {
        vars.insert((*k).to_owned(), (*v).to_owned());
    }
    let config = Application::config(&vars).expect("valid test configuration");
    let app = Application::build(config)
        .await
        .expect("auth-service starts");
    let url = format!("http://127.0.0.1:{}", app.port());
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    TestApp {
        url,
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap(),
        prefix,
        redis: real_url.map(str::to_owned),
        stop: Some(stop),
        task: Some(task),
    }
}

impl TestApp {
    /// `POST /auth/login`, from `client` (sent as `X-Forwarded-For`) if given.
    pub(crate) async fn login(
        &self,
        username: &str,
        password: &str,
        client: Option<&str>,
    ) -> reqwest::Response {
        let mut request = self
            .client
            .post(format!("{}/auth/login", self.url))
            .json(&serde_json::json!({"username": username, "password": password}));
        if let Some(c) = client {
            request = request.header("x-forwarded-for", c);
        }
        request.send().await.expect("auth-service answers")
    }

    /// A token for a demo user, asserting the login works.
    pub(crate) async fn token(&self, username: &str) -> String {
        let r = self
            .login(username, &format!("{username}-secret"), None)
            .await;
        assert_eq!(r.status(), 200, "login as {username}");
        let body: Value = r.json().await.unwrap();
        body["token"].as_str().unwrap().to_owned()
    }

    /// `POST /auth/validate` with this bearer token.
    pub(crate) async fn validate(&self, token: &str) -> reqwest::Response {
        self.client
            .post(format!("{}/auth/validate", self.url))
            .bearer_auth(token)
            .send()
            .await
            .expect("auth-service answers")
    }

    /// `POST /auth/logout` with this bearer token, if any.
    pub(crate) async fn logout(&self, token: Option<&str>) -> reqwest::Response {
        let mut request = self.client.post(format!("{}/api/auth/logout", self.url));
        if let Some(t) = token {
            request = request.bearer_auth(t);
        }
        request.send().await.expect("auth-service answers")
    }

    /// `GET` a path, as JSON with its status.
    pub(crate) async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .client
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .expect("auth-service answers");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// The value of one metric series, e.g. `auth_logins_total{outcome="success"}`;
    /// 0 when it has not been written yet.
    pub(crate) async fn metric(&self, series: &str) -> f64 {
        let text = self
            .client
            .get(format!("{}/metrics", self.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0.0)
    }

    /// A connection to the real Redis behind the app.
    pub(crate) async fn redis(&self) -> redis::aio::MultiplexedConnection {
        let url = self.redis.as_deref().expect("this app uses Redis");
        redis::Client::open(url)
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .expect("Redis answers")
    }

    /// The app's keys in Redis that start with `kind` (after the prefix).
    pub(crate) async fn keys(&self, kind: &str) -> Vec<String> {
        let prefix = self.prefix.as_deref().expect("this app uses Redis");
        let mut conn = self.redis().await;
        let mut keys = Vec::new();
        let mut cursor = 0u64;
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{prefix}{kind}*"))
                .arg("COUNT")
                .arg(500)
                .query_async(&mut conn)
                .await
                .unwrap();
            keys.extend(batch);
            cursor = next;
            if cursor == 0 {
                return keys;
            }
        }
    }

    /// Stops the app and deletes its keys from Redis.
    pub(crate) async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        if self.redis.is_some() {
            let keys = self.keys("").await;
            if !keys.is_empty() {
                let mut conn = self.redis().await;
                redis::cmd("DEL")
                    .arg(&keys)
                    .query_async::<()>(&mut conn)
                    .await
                    .unwrap();
            }
            assert!(self.keys("").await.is_empty(), "the test's keys are gone");
        }
    }
}

/// The error code and message of an error response.
pub(crate) async fn error_of(r: reqwest::Response) -> (String, String) {
    let body: Value = r.json().await.unwrap();
    (
        body["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

/// The `Retry-After` seconds of a response.
pub(crate) fn retry_after(r: &reqwest::Response) -> Option<u64> {
    r.headers().get("retry-after")?.to_str().ok()?.parse().ok()
}
