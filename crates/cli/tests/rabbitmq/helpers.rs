//! Shared setup: the real RabbitMQ behind a cuttable proxy with names unique
//! to each test, the in-process stack wired to it, log capture and span
//! export to an in-test collector, and small readers for `/metrics` and the
//! services' JSON.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use cloudmart_amqp::AmqpConfig;
use cloudmart_cli::stack::{Ports, Stack};
use cloudmart_testkit::logs::{Logs, logs_and_traces};
use cloudmart_testkit::otlp::Collector;
use cloudmart_testkit::proxy::TcpProxy;
use cloudmart_testkit::{TempDir, servers, wait_until};
use lapin::options::{ConfirmSelectOptions, ExchangeDeleteOptions, QueueDeleteOptions};
use lapin::{Channel, Connection};
use serde_json::Value;

/// Every JSON log line of this binary. The capture is installed with span
/// export, so every test here can also read spans from [`traces`].
pub(crate) fn logs() -> Logs {
    logs_and_traces().0
}

/// The collector every span of this binary is exported to.
pub(crate) fn traces() -> &'static Collector {
    logs_and_traces().1
}

fn unique(test: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::SeqCst);
    format!("test.{test}.{}.{n}", std::process::id())
}

/// The real broker, a proxy in front of it, and this test's names.
pub(crate) struct Broker {
    /// The broker itself, for the test's own connection.
    pub(crate) direct: AmqpConfig,
    /// The same names through the proxy, for the services.
    pub(crate) proxied_url: String,
    /// Cut it to take the broker away from the services.
    pub(crate) proxy: TcpProxy,
    cleaned: bool,
}

impl Broker {
    /// The broker from `AMQP_URL`, or `None` after a SKIPPED line (a panic
    /// under `CI=true`) when it is not reachable.
    pub(crate) async fn start(test: &str) -> Option<Self> {
        let url = servers::require("AMQP_URL", test, "rabbitmq-server -detached")?;
        let authority = servers::authority(&url).expect("AMQP_URL has a host");
        let addr = servers::address(&url).expect("AMQP_URL resolves");
        let proxy = TcpProxy::start(addr).await.expect("the proxy starts");
        let proxied_url = url.replacen(&authority, &proxy.host_port(), 1);
        let name = unique(test);
        let direct = AmqpConfig::new(&url, &format!("{name}.x"), &format!("{name}.q"))
            .expect("a valid AMQP config");
        Some(Self {
            direct,
            proxied_url,
            proxy,
            cleaned: false,
        })
    }

    /// A direct connection and a confirm-mode channel, with the topology
    /// declared (so messages published before the services connect are kept).
    pub(crate) async fn channel(&self) -> (Connection, Channel) {
        let connection = cloudmart_amqp::connect(&self.direct, "rabbitmq-test")
            .await
            .expect("the test connects to RabbitMQ");
        let channel = connection.create_channel().await.unwrap();
        cloudmart_amqp::declare_topology(&channel, &self.direct)
            .await
            .expect("the topology is declared");
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        (connection, channel)
    }

    /// Ready messages in `queue`.
    pub(crate) async fn depth(&self, channel: &Channel, queue: &str) -> u32 {
        cloudmart_amqp::queue_depth(channel, queue)
            .await
            .expect("the queue exists")
    }

    /// Deletes this test's queues and exchanges. Call after the stack has
    /// stopped, or its consumer would declare them again.
    pub(crate) async fn cleanup(mut self) {
        delete_topology(&self.direct).await;
        self.cleaned = true;
    }
}

impl Drop for Broker {
    /// A failed test still removes its queues, from a thread of its own
    /// because this may run while the test's runtime unwinds.
    fn drop(&mut self) {
        if self.cleaned {
            return;
        }
        let config = self.direct.clone();
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                rt.block_on(delete_topology(&config));
            }
        })
        .join();
    }
}

async fn delete_topology(config: &AmqpConfig) {
    let Ok(connection) = cloudmart_amqp::connect(config, "rabbitmq-test-cleanup").await else {
        return;
    };
    if let Ok(channel) = connection.create_channel().await {
        for queue in [config.queue.clone(), config.dead_letter_queue()] {
            let _ = channel
                .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
        for exchange in [config.exchange.clone(), config.dead_letter_exchange()] {
            let _ = channel
                .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
                .await;
        }
    }
    cloudmart_amqp::close(&connection, "cleanup done").await;
}

/// A running stack wired to the broker through the proxy.
pub(crate) struct TestApp {
    pub(crate) stack: Stack,
    pub(crate) url: String,
    pub(crate) client: reqwest::Client,
    /// The stack's data, removed when the test ends, failed or not.
    dir: TempDir,
}

/// Starts all six services in AMQP mode with a fast relay; `extra` wins.
pub(crate) async fn spawn_app(broker: &Broker, extra: &[(&str, &str)]) -> TestApp {
    let _ = logs();
    let dir = TempDir::new("rabbitmq");
    let mut env: HashMap<String, String> = [
        ("DATA_DIR", dir.to_env()),
        ("DB_NAME", "rabbitmq".to_owned()),
        (
            "JWT_SECRET",
            "rabbitmq-test-secret-which-is-at-least-32-bytes".to_owned(),
        ),
        ("RETRY_BASE_DELAY_MS", "10".to_owned()),
        ("RETRY_MAX_DELAY_MS", "50".to_owned()),
        ("AMQP_URL", broker.proxied_url.clone()),
        ("AMQP_EXCHANGE", broker.direct.exchange.clone()),
        ("AMQP_QUEUE", broker.direct.queue.clone()),
        ("RELAY_INTERVAL_MS", "100".to_owned()),
        ("RELAY_MIN_AGE_MS", "500".to_owned()),
        ("NOTIFY_HISTORY", "2000".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    for (k, v) in extra {
        env.insert((*k).to_owned(), (*v).to_owned());
    }
    let stack = Stack::start(Ports::ANY, &env)
        .await
        .expect("the stack starts");
    let url = stack.gateway_url();
    let app = TestApp {
        stack,
        url,
        client: reqwest::Client::new(),
        dir,
    };
    app.wait_connected(true).await;
    app
}

impl TestApp {
    /// Base URL of the service called `name`.
    pub(crate) fn service(&self, name: &str) -> String {
        self.stack.service(name).expect("a known service").url()
    }

    /// `POST /api/orders` through the gateway; the order id when 201.
    pub(crate) async fn place_order(&self, item: &str) -> (u16, Option<String>) {
        let r = self
            .client
            .post(format!("{}/api/orders", self.url))
            .json(&serde_json::json!({"item": item, "quantity": 1}))
            .send()
            .await
            .expect("the gateway answers");
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap_or_default();
        (status, body["id"].as_str().map(str::to_owned))
    }

    /// GET a JSON document.
    pub(crate) async fn get_json(&self, url: &str) -> Value {
        self.client
            .get(url)
            .send()
            .await
            .expect("the service answers")
            .json()
            .await
            .expect("a JSON body")
    }

    /// A metric's value (`name` may carry labels), or 0 when absent.
    pub(crate) async fn metric(&self, service: &str, name: &str) -> f64 {
        let text = self
            .client
            .get(format!("{}/metrics", self.service(service)))
            .send()
            .await
            .expect("/metrics answers")
            .text()
            .await
            .unwrap_or_default();
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0.0)
    }

    /// Waits until both order-service and notification-service are (or are
    /// not) connected to RabbitMQ.
    pub(crate) async fn wait_connected(&self, connected: bool) {
        for service in ["order-service", "notification-service"] {
            self.wait_service_connected(service, connected).await;
        }
    }

    /// Waits until `service`'s `amqp_connected` gauge says `connected`.
    pub(crate) async fn wait_service_connected(&self, service: &str, connected: bool) {
        let want = if connected { 1.0 } else { 0.0 };
        let reached = wait_until(Duration::from_secs(20), || async {
            (self.metric(service, "amqp_connected").await == want).then_some(())
        })
        .await;
        assert!(
            reached.is_some(),
            "{service} did not reach amqp_connected={want}"
        );
    }

    /// notification-service's counts and the order ids it notified.
    pub(crate) async fn notified(&self) -> (u64, u64, Vec<String>) {
        let body = self
            .get_json(&format!(
                "{}/notifications",
                self.service("notification-service")
            ))
            .await;
        let ids = body["recent"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|n| n["order_id"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        (
            body["sent"].as_u64().unwrap_or(0),
            body["duplicates"].as_u64().unwrap_or(0),
            ids,
        )
    }

    /// Every stored order as (id, notification state), from database-service.
    pub(crate) async fn stored(&self) -> Vec<(String, String)> {
        let database = self.service("database-service");
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut url = format!("{database}/orders?limit=100");
            if let Some(c) = &cursor {
                url.push_str(&format!("&cursor={c}"));
            }
            let page = self.get_json(&url).await;
            for o in page["orders"].as_array().into_iter().flatten() {
                out.push((
                    o["id"].as_str().unwrap_or_default().to_owned(),
                    o["notification"].as_str().unwrap_or_default().to_owned(),
                ));
            }
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => return out,
            }
        }
    }

    /// Stops every service (consumers close their connections) and removes
    /// the data directory.
    pub(crate) async fn stop(self) {
        self.stack.stop().await;
        drop(self.dir);
    }
}
