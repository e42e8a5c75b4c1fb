//! Shared setup: one log capture for the test binary, `spawn_app()`, a stack
//! wired to the real RabbitMQ, and `/metrics` read with a strict parser.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use cloudmart_amqp::AmqpConfig;
use cloudmart_cli::stack::{Ports, Stack};
use cloudmart_testkit::{TempDir, servers, wait_until};
use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
use openmetrics_parser::{
    MetricsExposition, OpenMetricsType, OpenMetricsValue, openmetrics::parse_openmetrics,
};
use serde_json::Value;

/// The signing key every test stack uses, so tests can forge tokens.
pub(crate) const JWT_SECRET: &str = "e2e-secret-which-is-at-least-thirty-two-bytes";

pub(crate) use cloudmart_testkit::logs::logs;

/// A running stack plus what tests need to talk to it.
pub(crate) struct TestApp {
    pub(crate) stack: Stack,
    pub(crate) url: String,
    pub(crate) client: reqwest::Client,
    /// The stack's data, removed when the test ends, failed or not.
    dir: TempDir,
}

/// Starts all six services on free ports with their own data directory.
pub(crate) async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

/// Like [`spawn_app`], with extra environment variables.
pub(crate) async fn spawn_app_with(extra: &[(&str, &str)]) -> TestApp {
    let _ = logs();
    let dir = TempDir::new("e2e");
    let mut env: HashMap<String, String> = HashMap::from([
        ("DATA_DIR".to_owned(), dir.to_env()),
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

    /// `GET {gateway}{path}` with `Authorization: Bearer {token}`: the status
    /// and the JSON body.
    pub(crate) async fn get_as(&self, path: &str, token: &str) -> (u16, Value) {
        let r = self
            .client
            .get(format!("{}{path}", self.url))
            .bearer_auth(token)
            .send()
            .await
            .expect("the gateway answers");
        let status = r.status().as_u16();
        (status, r.json().await.expect("a JSON body"))
    }

    /// The operator's token: the admin view of every customer's orders.
    pub(crate) async fn operator(&self) -> String {
        self.login("operator", "operator-secret").await
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
        drop(self.dir);
    }
}

/// The six services, in the order the stack starts them.
pub(crate) const SERVICES: [&str; 6] = [
    "database-service",
    "notification-service",
    "order-service",
    "auth-service",
    "api-service",
    "gateway",
];

/// The real RabbitMQ with exchange and queue names of this test's own.
pub(crate) struct Broker {
    config: AmqpConfig,
    url: String,
}

impl Broker {
    /// The broker in `AMQP_URL`, or `None` after a SKIPPED line (a panic under
    /// `CI=true`) when it is not reachable.
    pub(crate) fn require(test: &str) -> Option<Self> {
        let url = servers::require("AMQP_URL", test, "rabbitmq-server -detached")?;
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "test.e2e.{test}.{}.{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        let config = AmqpConfig::new(&url, &format!("{name}.x"), &format!("{name}.q"))
            .expect("a valid AMQP config");
        Some(Self { config, url })
    }

    /// The variables that point a stack at this broker and these names.
    pub(crate) fn env(&self) -> [(&str, &str); 3] {
        [
            ("AMQP_URL", self.url.as_str()),
            ("AMQP_EXCHANGE", self.config.exchange.as_str()),
            ("AMQP_QUEUE", self.config.queue.as_str()),
        ]
    }

    /// Deletes this test's queues and exchanges; call after the stack has
    /// stopped, or its consumer would declare them again.
    pub(crate) async fn cleanup(self) {
        let Ok(connection) = cloudmart_amqp::connect(&self.config, "e2e-cleanup").await else {
            return;
        };
        if let Ok(channel) = connection.create_channel().await {
            for queue in [self.config.queue.clone(), self.config.dead_letter_queue()] {
                let _ = channel
                    .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                    .await;
            }
            for exchange in [
                self.config.exchange.clone(),
                self.config.dead_letter_exchange(),
            ] {
                let _ = channel
                    .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
                    .await;
            }
        }
        cloudmart_amqp::close(&connection, "cleanup done").await;
    }
}

/// Starts the stack in AMQP mode on `broker` and waits until order-service
/// and notification-service are connected.
pub(crate) async fn spawn_app_with_broker(broker: &Broker) -> TestApp {
    let app = spawn_app_with(&broker.env()).await;
    for service in ["order-service", "notification-service"] {
        let connected = wait_until(Duration::from_secs(20), || async {
            let page = app.scrape(service).await;
            (page.value("amqp_connected", &[]) == Some(1.0)).then_some(())
        })
        .await;
        assert!(connected.is_some(), "{service} never connected to RabbitMQ");
    }
    app
}

/// One service's `/metrics`, accepted by a strict OpenMetrics parser.
pub(crate) struct Scrape {
    service: String,
    page: MetricsExposition<OpenMetricsType, OpenMetricsValue>,
}

impl Scrape {
    /// Parses `text`; the error names the service and quotes the parser.
    pub(crate) fn parse(service: &str, text: &str) -> Result<Self, String> {
        let page = parse_openmetrics(text)
            .map_err(|e| format!("{service}'s /metrics is not valid OpenMetrics: {e}\n{text}"))?;
        Ok(Self {
            service: service.to_owned(),
            page,
        })
    }

    /// The family names on the page, as registered (`http_server_requests`).
    pub(crate) fn families(&self) -> BTreeSet<String> {
        self.page.families.keys().cloned().collect()
    }

    /// The type of `family`, if the page has it.
    pub(crate) fn kind(&self, family: &str) -> Option<OpenMetricsType> {
        self.page.families.get(family).map(|f| f.family_type)
    }

    /// The metric names as documented: `x_total` for a counter `x`, the
    /// family name for a gauge or a histogram.
    pub(crate) fn metric_names(&self) -> BTreeSet<String> {
        self.page
            .families
            .iter()
            .map(|(name, family)| match family.family_type {
                OpenMetricsType::Counter => format!("{name}_total"),
                _ => name.clone(),
            })
            .collect()
    }

    /// The series names Prometheus stores for this page, whether or not a
    /// family has samples yet: `x_total` for a counter `x`, `x_bucket`,
    /// `x_sum` and `x_count` for a histogram `x`, `x` for a gauge.
    pub(crate) fn series_names(&self) -> BTreeSet<String> {
        let mut names = BTreeSet::new();
        for (name, family) in &self.page.families {
            match family.family_type {
                OpenMetricsType::Counter => {
                    names.insert(format!("{name}_total"));
                }
                OpenMetricsType::Histogram => {
                    for suffix in ["_bucket", "_sum", "_count"] {
                        names.insert(format!("{name}{suffix}"));
                    }
                }
                _ => {
                    names.insert(name.clone());
                }
            }
        }
        names
    }

    /// The sum over the samples of `family` whose labels include `labels`
    /// (a histogram counts its observations), or `None` when none match.
    pub(crate) fn value(&self, family: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let family = self.page.families.get(family)?;
        let mut total = None;
        for sample in family.iter_samples() {
            let Ok(set) = sample.get_labelset() else {
                continue;
            };
            if labels
                .iter()
                .all(|(k, v)| set.get_label_value(k) == Some(*v))
            {
                let v = match &sample.value {
                    OpenMetricsValue::Counter(c) => c.value.as_f64(),
                    OpenMetricsValue::Gauge(n) | OpenMetricsValue::Unknown(n) => n.as_f64(),
                    OpenMetricsValue::Histogram(h) => h.count.unwrap_or(0) as f64,
                    _ => continue,
                };
                *total.get_or_insert(0.0) += v;
            }
        }
        total
    }

    /// Like [`Scrape::value`], but panics with the service and family when
    /// nothing matches.
    pub(crate) fn must(&self, family: &str, labels: &[(&str, &str)]) -> f64 {
        self.value(family, labels).unwrap_or_else(|| {
            panic!(
                "{} exports no {family} sample with {labels:?}; it has {:?}",
                self.service,
                self.families()
            )
        })
    }
}

impl TestApp {
    /// Base URL of the service called `name`.
    pub(crate) fn service_url(&self, name: &str) -> String {
        self.stack.service(name).expect("a known service").url()
    }

    /// `GET /metrics` of `service`, checked to be served as OpenMetrics and
    /// parsed strictly; panics with the parser's complaint otherwise.
    pub(crate) async fn scrape(&self, service: &str) -> Scrape {
        let r = self
            .client
            .get(format!("{}/metrics", self.service_url(service)))
            .send()
            .await
            .expect("/metrics answers");
        assert_eq!(r.status(), 200, "{service} /metrics");
        let content_type = content_type(&r);
        assert!(
            content_type.starts_with("application/openmetrics-text; version=1.0.0"),
            "{service} serves /metrics as {content_type:?}"
        );
        let text = r.text().await.expect("a text body");
        Scrape::parse(service, &text).unwrap_or_else(|e| panic!("{e}"))
    }
}

/// The path of a file in the repository, from this crate's directory.
pub(crate) fn repo_file(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

/// The response's `Content-Type`, or empty.
fn content_type(r: &reqwest::Response) -> String {
    r.headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// Asserts the CloudMart error body and returns its code and message.
pub(crate) async fn error_body(r: reqwest::Response, status: u16) -> (String, String) {
    assert_eq!(r.status().as_u16(), status, "unexpected status");
    let ct = content_type(&r);
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
