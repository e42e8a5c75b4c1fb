//! order-service: validates an order, stores it through database-service and
//! announces it to notification-service.
//!
//! Storing uses the common retry policy (`RETRY_*`). Every create carries an
//! idempotency key, so a retried write can never store a second order: that
//! is what makes retrying a POST safe at all. The workshop's retry storm
//! comes from the same code with a policy that has no backoff.
//!
//! Announcing is off the request path: the order is answered as soon as it
//! is stored, and its `notification` stays `pending` until it is announced.
//! With `AMQP_URL` set, order-service publishes `order.created` to RabbitMQ
//! (persistent, with publisher confirms, the trace context in the headers)
//! and marks the order `published` once the broker confirms it; without it,
//! it posts to notification-service's `/notify` and marks the order
//! `notified`, so `make run` needs no broker. Either way the relay
//! ([`relay`]) announces whatever is still pending after `RELAY_MIN_AGE_MS`,
//! which is what makes a broker outage cost latency instead of
//! notifications. A lost broker marks `/ready` `degraded`, not unready:
//! orders are still taken, which is the point.

mod publisher;
mod relay;

use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use cloudmart_amqp::{AmqpConfig, RabbitCheck};
use cloudmart_config::{EnvReader, EnvVar, FromEnv, Setting, port};
use cloudmart_http::client::{ClientConfig, Downstream, Retry};
use cloudmart_http::error::{ApiError, Json, Query};
use cloudmart_http::health::{Health, HttpCheck};
use cloudmart_http::metrics::MetricsBuilder;
use cloudmart_http::server::{self, Server, ServerConfig};
use cloudmart_model::{
    CreateOrder, GUEST, IDEMPOTENCY_KEY, IDEMPOTENT_REPLAYED, NewOrder, NotificationState,
    NotificationUpdate, NotifyReceipt, Order, OrderCreated, OrderPage, PageQuery, validate_items,
};
use cloudmart_retry::Backoff;
use cloudmart_run::Workers;
use cloudmart_run::{App, Service, StartupError};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use reqwest::Method;
use tracing::Instrument;

use crate::publisher::Publisher;
use crate::relay::Relay;

/// The binary and image name.
pub const NAME: &str = "order-service";
pub const PORT: Setting<u16> = port("3000");
pub const DATABASE_URL: Setting<String> = Setting::url(EnvVar::with_default(
    "DATABASE_URL",
    "http://database-service:8080",
    "an http:// URL such as http://database-service:8080",
    "Base URL of database-service",
));
pub const NOTIFICATION_URL: Setting<String> = Setting::url(EnvVar::with_default(
    "NOTIFICATION_URL",
    "http://notification-service:3000",
    "an http:// URL such as http://notification-service:3000",
    "Base URL of notification-service (HTTP mode, when AMQP_URL is unset)",
));
pub const RELAY_INTERVAL_MS: Setting<Duration> = Setting::millis(
    EnvVar::with_default(
        "RELAY_INTERVAL_MS",
        "1000",
        "milliseconds from 10 to 60000",
        "How often the relay looks for orders whose notification is still pending",
    ),
    10,
    60_000,
);
pub const RELAY_MIN_AGE_MS: Setting<Duration> = Setting::millis(
    EnvVar::with_default(
        "RELAY_MIN_AGE_MS",
        "2000",
        "milliseconds from 0 to 3600000",
        "How old a pending order must be before the relay announces it (younger ones are still on the request path)",
    ),
    0,
    3_600_000,
);
pub const RELAY_BATCH: Setting<usize> = Setting::<usize>::whole(
    EnvVar::with_default(
        "RELAY_BATCH",
        "200",
        "a whole number from 1 to 1000",
        "Pending orders the relay announces per pass; a full batch starts the next pass at once",
    ),
    1,
    1000,
);

/// Everything this service reads from its environment, once, at startup.
#[derive(Debug, Clone)]
pub struct Config {
    /// Listener and timeouts.
    pub server: ServerConfig,
    /// Where database-service answers (`DATABASE_URL`).
    pub database_url: String,
    /// Where notification-service answers (`NOTIFICATION_URL`).
    pub notification_url: String,
    /// Outbound timeouts.
    pub client: ClientConfig,
    /// Retry policy for database writes and reads.
    pub retry: Backoff,
    /// RabbitMQ; `None` means HTTP mode.
    pub amqp: Option<AmqpConfig>,
    /// Time between relay passes.
    pub relay_interval: Duration,
    /// Minimum age of an order before the relay announces it.
    pub relay_min_age: Duration,
    /// Orders per relay pass.
    pub relay_batch: usize,
}

impl FromEnv for Config {
    fn read(r: &mut EnvReader<'_>) -> Self {
        let port = r.get(&PORT);
        let database_url = r.get(&DATABASE_URL);
        let notification_url = r.get(&NOTIFICATION_URL);
        let relay_interval = r.get(&RELAY_INTERVAL_MS);
        let relay_min_age = r.get(&RELAY_MIN_AGE_MS);
        let relay_batch = r.get(&RELAY_BATCH);
        let amqp = AmqpConfig::from_env(r);
        let retry = Backoff::from_env(r);
        let client = ClientConfig::from_env(r);
        Self {
            server: ServerConfig::from_env(r, port),
            database_url,
            notification_url,
            client,
            retry,
            amqp,
            relay_interval,
            relay_min_age,
            relay_batch,
        }
    }
}

/// How orders are announced.
#[derive(Clone)]
enum Notifier {
    /// `POST /notify` on notification-service.
    Http(Downstream),
    /// `order.created` through RabbitMQ.
    Amqp(Publisher),
}

#[derive(Clone)]
struct AppState {
    database: Downstream,
    notifier: Notifier,
}

async fn create(
    State(s): State<AppState>,
    headers: HeaderMap,
    Json(body): Json<CreateOrder>,
) -> Result<Response, ApiError> {
    validate_items(&body.items).map_err(ApiError::validation)?;
    let id = uuid::Uuid::now_v7().to_string();
    let idempotency_key = headers
        .get(IDEMPOTENCY_KEY)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|k| !k.is_empty() && k.len() <= 200)
        .map_or_else(|| format!("order-{id}"), str::to_owned);
    let new = NewOrder {
        id,
        customer: body.customer.unwrap_or_else(|| GUEST.to_owned()),
        items: body.items,
        idempotency_key,
    };
    // Safe to repeat: database-service keeps one order per idempotency key,
    // so a retry after a lost answer gets the first order back.
    let (status, order): (_, Order) = s
        .database
        .call(Method::POST, "/orders", Retry::Keyed, |r| r.json(&new))
        .await?;
    let replayed = status == StatusCode::OK;
    if replayed {
        tracing::info!(order_id = %order.id, "order {} replayed for its idempotency key", order.id);
    } else {
        tracing::info!(order_id = %order.id, customer = %order.customer, "order {} created", order.id);
    }
    if order.notification == NotificationState::Pending {
        let span = tracing::info_span!("notify", order_id = %order.id);
        tokio::spawn(notify(s.clone(), order.clone()).instrument(span));
    }
    let status = if replayed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let mut response = (status, Json(order)).into_response();
    if replayed {
        response
            .headers_mut()
            .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// Sets the order's notification state in database-service.
async fn mark(database: &Downstream, id: &str, state: NotificationState) -> Result<(), ApiError> {
    let body = NotificationUpdate {
        notification: state,
    };
    let path = format!(
        "/orders/{}/notification",
        cloudmart_model::encode_component(id)
    );
    database
        .call::<Order, _>(Method::PATCH, &path, Retry::Overwrite, |r| r.json(&body))
        .await
        .map(|_| ())
}

/// Announces the order (publish or `POST /notify`), then marks it. On
/// failure it stays pending and the relay tries again later.
async fn notify(s: AppState, order: Order) {
    let state = match &s.notifier {
        Notifier::Http(notification) => {
            let body = OrderCreated::from(&order);
            let delivered = notification
                .call::<NotifyReceipt, _>(Method::POST, "/notify", Retry::Keyed, |r| r.json(&body))
                .await;
            if let Err(e) = delivered {
                tracing::warn!(order_id = %order.id, error = %e.message, "notification for order {} not delivered; it stays pending: {}", order.id, e.message);
                return;
            }
            NotificationState::Notified
        }
        Notifier::Amqp(publisher) => {
            let published = publisher
                .publish(std::slice::from_ref(&order))
                .await
                .pop()
                .unwrap_or(Err(publisher::PublishError::NotConnected));
            if let Err(e) = published {
                tracing::warn!(order_id = %order.id, error = %e, "order {} not published: {e}; it stays pending for the relay", order.id);
                return;
            }
            tracing::info!(order_id = %order.id, "order {} published to RabbitMQ", order.id);
            NotificationState::Published
        }
    };
    if let Err(e) = mark(&s.database, &order.id, state).await {
        tracing::warn!(order_id = %order.id, error = %e.message, "order {} was announced but could not be marked {state}: {}", order.id, e.message);
    }
}

async fn get_one(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Order>, ApiError> {
    let path = format!("/orders/{}", cloudmart_model::encode_component(&id));
    let (_, order) = s
        .database
        .call(Method::GET, &path, Retry::Safe, |r| r)
        .await?;
    Ok(Json(order))
}

async fn list(
    State(s): State<AppState>,
    Query(q): Query<PageQuery>,
) -> Result<Json<OrderPage>, ApiError> {
    let path = q.forward("/orders").map_err(ApiError::validation)?;
    let (_, page) = s
        .database
        .call(Method::GET, &path, Retry::Safe, |r| r)
        .await?;
    Ok(Json(page))
}

/// The service, as `cloudmart_run` builds and runs it.
pub struct Application;

impl Service for Application {
    const NAME: &'static str = NAME;
    const PORT: Setting<u16> = PORT;
    type Config = Config;

    async fn build(config: Config) -> Result<App, StartupError> {
        let mut builder = MetricsBuilder::new();
        let publisher = config
            .amqp
            .clone()
            .map(|amqp| Publisher::new(amqp, &mut builder));
        let relayed = Counter::default();
        builder.registry().register(
            "relay_notifications_announced",
            "Pending notifications the relay announced (published, or posted in HTTP mode)",
            relayed.clone(),
        );
        let pending = Gauge::default();
        builder.registry().register(
            "notifications_pending",
            "Orders whose notification was pending at the last relay pass (at most RELAY_BATCH)",
            pending.clone(),
        );
        let metrics = builder.build();
        let http = config.client.build();
        let database = Downstream::new(
            "database-service",
            &config.database_url,
            http.clone(),
            config.retry,
            metrics.client(),
        );
        let notifier = match &publisher {
            Some(p) => Notifier::Amqp(p.clone()),
            None => Notifier::Http(Downstream::new(
                "notification-service",
                &config.notification_url,
                http.clone(),
                Backoff::none(),
                metrics.client(),
            )),
        };
        let link = publisher.as_ref().map(Publisher::link);
        let mut workers = Workers::new();
        if let Some(p) = publisher {
            let span = tracing::info_span!(parent: None, "amqp.publisher", service = NAME);
            cloudmart_telemetry::begin_untraced(&span, NAME);
            workers.spawn(p.maintain(workers.stop_signal()).instrument(span));
        }
        let relay = Relay {
            database: database.clone(),
            notifier: notifier.clone(),
            interval: config.relay_interval,
            min_age: config.relay_min_age,
            batch: config.relay_batch,
            relayed,
            pending,
        };
        workers.spawn(relay.run(workers.stop_signal()));
        let state = AppState { database, notifier };
        let routes = Router::new()
            .route("/orders", get(list).post(create))
            .route("/orders/{id}", get(get_one))
            .with_state(state);
        let mut checks: Vec<Box<dyn cloudmart_http::health::Check>> = vec![Box::new(
            HttpCheck::new("database-service", &config.database_url, http),
        )];
        if let Some(link) = &link {
            checks.push(Box::new(RabbitCheck::optional(link.clone())));
        }
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

    #[test]
    fn without_amqp_url_it_notifies_over_http_with_the_default_relay() {
        let c = Config::from_env(&env_of(&[])).unwrap();
        assert!(c.amqp.is_none());
        assert_eq!(c.relay_interval, Duration::from_millis(1000));
        assert_eq!(c.relay_min_age, Duration::from_millis(2000));
        assert_eq!(c.relay_batch, 200);
    }

    #[test]
    fn amqp_mode_reads_the_broker_and_its_names() {
        let c = Config::from_env(&env_of(&[
            ("AMQP_URL", "amqp://guest:hunter2@rabbitmq:5672/%2f"),
            ("AMQP_EXCHANGE", "shop.orders"),
        ]))
        .unwrap();
        assert!(!format!("{c:?}").contains("hunter2"), "{c:?}");
        let amqp = c.amqp.expect("AMQP mode");
        assert_eq!(amqp.exchange, "shop.orders");
        assert_eq!(amqp.queue, "notifications");
    }

    #[test]
    fn bad_relay_settings_name_every_variable() {
        let line = Config::from_env(&env_of(&[
            ("RELAY_INTERVAL_MS", "5"),
            ("RELAY_MIN_AGE_MS", "soon"),
            ("RELAY_BATCH", "5000"),
        ]))
        .unwrap_err()
        .to_string();
        for name in [
            "RELAY_INTERVAL_MS=\"5\"",
            "RELAY_MIN_AGE_MS=\"soon\"",
            "RELAY_BATCH=\"5000\"",
        ] {
            assert!(line.contains(name), "{name} missing from: {line}");
        }
    }
}
