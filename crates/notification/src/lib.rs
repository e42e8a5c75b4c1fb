//! notification-service: tells customers their order is placed.
//!
//! It stands in for an e-mail or webhook sender: `POST /notify` records a
//! delivery in a bounded list of recent ones, counts it and logs it.
//! Delivery is idempotent per order, so a retried or redelivered request for
//! the same order does not notify the customer twice.
//!
//! With `AMQP_URL` set it also consumes `order.created` from RabbitMQ
//! ([`consumer`]): manual acks, `NOTIFY_PREFETCH` messages in hand, retries
//! counted in `x-attempts` and a dead-letter queue after
//! `NOTIFY_MAX_ATTEMPTS`; `/ready` then includes a `RabbitMQ` check. The
//! chaos settings (`CHAOS_*`) apply to HTTP requests and to messages alike,
//! and `NOTIFY_DELAY_MS` slows messages down to build a backlog on purpose.
//! `POST /notify` keeps working in both modes.
//!
//! With `REDIS_URL` set, which orders were notified is kept in Redis
//! ([`dedupe`]), so a message redelivered after a crash or a restart is
//! skipped; without it, an in-memory window catches redeliveries to the
//! same process only.

mod consumer;
pub mod dedupe;

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::middleware;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use cloudmart_amqp::{AmqpConfig, RabbitCheck};
use cloudmart_config::{EnvReader, EnvVar, FromEnv, Setting, port};
use cloudmart_http::chaos::{self, Chaos, ChaosConfig};
use cloudmart_http::error::{ApiError, Json};
use cloudmart_http::health::Health;
use cloudmart_http::metrics::MetricsBuilder;
use cloudmart_http::server::{self, Server, ServerConfig};
use cloudmart_model::{NotificationState, NotifyReceipt, OrderCreated, now_rfc3339};
use cloudmart_run::Workers;
use cloudmart_run::{App, Service, StartupError};
use prometheus_client::metrics::counter::Counter;
use serde::{Deserialize, Serialize};
use tracing::Instrument;

use crate::consumer::{Consumer, Settings};
use crate::dedupe::{Claim, DedupeConfig, Durable};

/// The binary and image name.
pub const NAME: &str = "notification-service";
pub const PORT: Setting<u16> = port("3000");
pub const NOTIFY_HISTORY: Setting<usize> = Setting::<usize>::whole(
    EnvVar::with_default(
        "NOTIFY_HISTORY",
        "100",
        "a whole number from 1 to 100000",
        "How many recent notifications GET /notifications keeps",
    ),
    1,
    100_000,
);
pub const NOTIFY_PREFETCH: Setting<u16> = Setting::<u16>::whole(
    EnvVar::with_default(
        "NOTIFY_PREFETCH",
        "16",
        "a whole number from 1 to 10000",
        "Unacked messages RabbitMQ hands over at once; also how many are processed at once",
    ),
    1,
    10_000,
);
pub const NOTIFY_MAX_ATTEMPTS: Setting<u32> = Setting::<u32>::whole(
    EnvVar::with_default(
        "NOTIFY_MAX_ATTEMPTS",
        "5",
        "a whole number from 1 to 100",
        "Processing attempts per message before it goes to the dead-letter queue",
    ),
    1,
    100,
);
pub const NOTIFY_DELAY_MS: Setting<Duration> = Setting::millis(
    EnvVar::with_default(
        "NOTIFY_DELAY_MS",
        "0",
        "milliseconds from 0 to 60000",
        "Extra time spent on each message, to build a backlog on purpose",
    ),
    0,
    60_000,
);

/// Everything this service reads from its environment, once, at startup.
#[derive(Debug, Clone)]
pub struct Config {
    /// Listener and timeouts.
    pub server: ServerConfig,
    /// Size of the recent list (and of the duplicate-detection window).
    pub history: usize,
    /// RabbitMQ; `None` means HTTP only.
    pub amqp: Option<AmqpConfig>,
    /// Prefetch and processing concurrency.
    pub prefetch: u16,
    /// Attempts before dead-lettering.
    pub max_attempts: u32,
    /// Extra time per message.
    pub delay: Duration,
    /// Fault injection.
    pub chaos: ChaosConfig,
    /// Redis for de-duplication across restarts; `None` keeps it in memory.
    pub dedupe: Option<DedupeConfig>,
}

impl FromEnv for Config {
    fn read(r: &mut EnvReader<'_>) -> Self {
        let port = r.get(&PORT);
        let history = r.get(&NOTIFY_HISTORY);
        let prefetch = r.get(&NOTIFY_PREFETCH);
        let max_attempts = r.get(&NOTIFY_MAX_ATTEMPTS);
        let delay = r.get(&NOTIFY_DELAY_MS);
        let amqp = AmqpConfig::from_env(r);
        let dedupe = DedupeConfig::from_env(r);
        let chaos = ChaosConfig::from_env(r);
        Self {
            server: ServerConfig::from_env(r, port),
            dedupe,
            history,
            amqp,
            prefetch,
            max_attempts,
            delay,
            chaos,
        }
    }
}

/// One delivered notification.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Notification {
    /// The order.
    pub order_id: String,
    /// Who was told.
    pub customer: String,
    /// How (always `email` in this stand-in).
    pub channel: String,
    /// What was said.
    pub message: String,
    /// When, RFC 3339.
    pub sent_at: String,
}

/// Whether a delivery was new.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Recorded for the first time.
    Sent,
    /// Already delivered for this order; nothing sent.
    Duplicate,
}

/// What this service has delivered: the recent deliveries that
/// `GET /notifications` lists, and which orders were delivered, so that
/// each is delivered once (in Redis when configured, and an in-memory
/// window always). Nothing in it waits to be sent; the outbox of this
/// system is order-service's relay, which announces pending orders.
pub struct DeliveryLog {
    inner: Mutex<DeliveryLogInner>,
    capacity: usize,
    sent: Counter,
    duplicates: Counter,
    durable: Option<Durable>,
    /// Redis failed on the last claim; logged once per outage.
    degraded: AtomicBool,
}

struct DeliveryLogInner {
    recent: VecDeque<Notification>,
    seen: HashSet<String>,
    seen_order: VecDeque<String>,
}

impl DeliveryLog {
    /// A delivery log remembering `capacity` orders in memory, and every order
    /// in `durable` when given; registers its counters.
    pub fn new(
        capacity: usize,
        durable: Option<Durable>,
        metrics: &mut MetricsBuilder,
    ) -> Arc<Self> {
        let sent = Counter::default();
        let duplicates = Counter::default();
        metrics.registry().register(
            "notifications_sent",
            "Notifications delivered",
            sent.clone(),
        );
        metrics.registry().register(
            "notifications_duplicates",
            "Notifications skipped because the order was already notified",
            duplicates.clone(),
        );
        Arc::new(Self {
            inner: Mutex::new(DeliveryLogInner {
                recent: VecDeque::with_capacity(capacity),
                seen: HashSet::with_capacity(capacity * 10),
                seen_order: VecDeque::with_capacity(capacity * 10),
            }),
            capacity,
            sent,
            duplicates,
            durable,
            degraded: AtomicBool::new(false),
        })
    }

    /// Delivers a notification for `req` unless the order was already
    /// notified: by any process, when Redis remembers; by this one, always.
    pub async fn deliver(&self, req: &OrderCreated) -> Delivery {
        if let Some(durable) = &self.durable {
            match durable.claim(&req.order_id).await {
                Ok(claim) => {
                    if self.degraded.swap(false, Ordering::Relaxed) {
                        tracing::info!(
                            "Redis answers again; notified orders are remembered across restarts"
                        );
                    }
                    if claim == Claim::Repeat {
                        self.duplicates.inc();
                        return Delivery::Duplicate;
                    }
                }
                Err(e) => {
                    if !self.degraded.swap(true, Ordering::Relaxed) {
                        tracing::warn!(error = %e, "{e}; de-duplicating in memory until it answers, so a restart meanwhile could notify an order twice");
                    }
                }
            }
        }
        self.deliver_once_here(req)
    }

    /// The in-memory half of [`DeliveryLog::deliver`].
    fn deliver_once_here(&self, req: &OrderCreated) -> Delivery {
        let mut inner = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if inner.seen.contains(&req.order_id) {
            self.duplicates.inc();
            return Delivery::Duplicate;
        }
        // Remember ten times more orders than we list, to catch late redeliveries.
        if inner.seen_order.len() >= self.capacity * 10
            && let Some(old) = inner.seen_order.pop_front()
        {
            inner.seen.remove(&old);
        }
        inner.seen.insert(req.order_id.clone());
        inner.seen_order.push_back(req.order_id.clone());
        let count: u32 = req.items.iter().map(|i| i.quantity).sum();
        let n = Notification {
            order_id: req.order_id.clone(),
            customer: req.customer.clone(),
            channel: "email".to_owned(),
            message: format!(
                "Your order {} of {count} item(s) is confirmed",
                req.order_id
            ),
            sent_at: now_rfc3339(),
        };
        if inner.recent.len() >= self.capacity {
            inner.recent.pop_front();
        }
        inner.recent.push_back(n);
        self.sent.inc();
        Delivery::Sent
    }

    /// Recent deliveries, newest first, and the counts.
    pub fn snapshot(&self) -> (Vec<Notification>, u64, u64) {
        let inner = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        (
            inner.recent.iter().rev().cloned().collect(),
            self.sent.get(),
            self.duplicates.get(),
        )
    }
}

async fn notify(
    State(delivery_log): State<Arc<DeliveryLog>>,
    Json(req): Json<OrderCreated>,
) -> Result<impl IntoResponse, ApiError> {
    if req.order_id.trim().is_empty() {
        return Err(ApiError::validation("order_id must not be empty"));
    }
    let delivery = delivery_log.deliver(&req).await;
    match delivery {
        Delivery::Sent => {
            tracing::info!(order_id = %req.order_id, customer = %req.customer, "notified {} about order {}", req.customer, req.order_id)
        }
        Delivery::Duplicate => {
            tracing::info!(order_id = %req.order_id, "order {} was already notified; skipping", req.order_id)
        }
    }
    let receipt = NotifyReceipt {
        order_id: req.order_id,
        status: NotificationState::Notified,
        duplicate: delivery == Delivery::Duplicate,
    };
    Ok((StatusCode::ACCEPTED, Json(receipt)))
}

async fn list(State(delivery_log): State<Arc<DeliveryLog>>) -> Json<serde_json::Value> {
    let (recent, sent, duplicates) = delivery_log.snapshot();
    Json(serde_json::json!({"sent": sent, "duplicates": duplicates, "recent": recent}))
}

/// The service, as `cloudmart_run` builds and runs it.
pub struct Application;

impl Service for Application {
    const NAME: &'static str = NAME;
    const PORT: Setting<u16> = PORT;
    type Config = Config;

    async fn build(config: Config) -> Result<App, StartupError> {
        let mut metrics = MetricsBuilder::new();
        let durable = match &config.dedupe {
            Some(d) => {
                let durable = Durable::new(d).map_err(StartupError::from)?;
                tracing::info!(
                    redis = durable.target(),
                    "remembering notified orders in Redis at {}",
                    durable.target()
                );
                Some(durable)
            }
            None => {
                tracing::info!(
                    "REDIS_URL is not set; notified orders are remembered in memory, per process"
                );
                None
            }
        };
        let delivery_log = DeliveryLog::new(config.history, durable, &mut metrics);
        let chaos = Chaos::new(config.chaos, metrics.registry());
        let mut workers = Workers::new();
        let mut checks: Vec<Box<dyn cloudmart_http::health::Check>> = Vec::new();
        if let Some(amqp) = config.amqp.clone() {
            let settings = Settings {
                prefetch: config.prefetch,
                max_attempts: config.max_attempts,
                delay: config.delay,
                chaos: config.chaos,
            };
            let consumer = Consumer::new(amqp, settings, delivery_log.clone(), &mut metrics);
            checks.push(Box::new(RabbitCheck::required(consumer.link())));
            let span = tracing::info_span!(parent: None, "amqp.consumer", service = NAME);
            cloudmart_telemetry::begin_untraced(&span, NAME);
            workers.spawn(consumer.run(workers.stop_signal()).instrument(span));
        }
        let metrics = metrics.build();
        let routes = Router::new()
            .route("/notify", post(notify))
            .route("/notifications", get(list))
            .with_state(delivery_log)
            .route_layer(middleware::from_fn_with_state(chaos, chaos::inject));
        let health = Health::new(NAME, checks, metrics.clone());
        let router = server::standard(NAME, routes, health, metrics, &config.server);
        Ok(App::with_workers(
            Server::bind(&config.server, router).await?,
            workers,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloudmart_config::env_of;

    #[test]
    fn reads_only_the_settings_it_declares() {
        cloudmart_run::check_settings::<Application>();
    }

    fn req(id: &str) -> OrderCreated {
        OrderCreated {
            order_id: id.to_owned(),
            customer: "guest".to_owned(),
            items: vec![],
        }
    }

    #[test]
    fn without_amqp_url_it_serves_http_only_with_default_settings() {
        let c = Config::from_env(&env_of(&[])).unwrap();
        assert!(c.amqp.is_none());
        assert_eq!((c.prefetch, c.max_attempts), (16, 5));
        assert_eq!(c.delay, Duration::ZERO);
    }

    #[test]
    fn bad_consumer_settings_name_every_variable() {
        let e = env_of(&[
            ("AMQP_URL", "ftp://guest:hunter2@rabbitmq"),
            ("NOTIFY_PREFETCH", "0"),
            ("NOTIFY_MAX_ATTEMPTS", "many"),
            ("NOTIFY_DELAY_MS", "-5"),
        ]);
        let line = Config::from_env(&e).unwrap_err().to_string();
        for name in [
            "AMQP_URL=<redacted>",
            "NOTIFY_PREFETCH=\"0\"",
            "NOTIFY_MAX_ATTEMPTS=\"many\"",
            "NOTIFY_DELAY_MS=\"-5\"",
        ] {
            assert!(line.contains(name), "{name} missing from: {line}");
        }
        assert!(!line.contains("hunter2"), "{line}");
    }

    #[tokio::test]
    async fn the_same_order_is_notified_once_and_the_list_is_bounded() {
        let mut m = MetricsBuilder::new();
        let delivery_log = DeliveryLog::new(3, None, &mut m);
        assert_eq!(delivery_log.deliver(&req("a")).await, Delivery::Sent);
        assert_eq!(delivery_log.deliver(&req("a")).await, Delivery::Duplicate);
        for id in ["b", "c", "d"] {
            delivery_log.deliver(&req(id)).await;
        }
        let (recent, sent, dup) = delivery_log.snapshot();
        let ids: Vec<_> = recent.iter().map(|n| n.order_id.as_str()).collect();
        assert_eq!(ids, ["d", "c", "b"]);
        assert_eq!((sent, dup), (4, 1));
    }
}
