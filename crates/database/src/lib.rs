//! database-service: the data service behind order-service.
//!
//! It stores orders (create, get, list, notification state) behind the
//! [`store::OrderStore`] trait: in MongoDB when `MONGODB_URI` is set
//! ([`mongo::MongoStore`]), otherwise in the embedded file store, so a laptop
//! needs no database server. `DB_NAME` is required, as in the workshop:
//! without it the process prints one line naming `DB_NAME` and exits 1,
//! which Kubernetes shows as CrashLoopBackOff.
//!
//! In-flight work is bounded by `DB_MAX_INFLIGHT`; the excess waits at most
//! `DB_QUEUE_TIMEOUT_MS` for a slot (by default not at all) and is then shed
//! with 503 and `Retry-After` instead of queueing without end. The chaos
//! middleware sits inside that bound, so injected latency uses up capacity
//! the way a slow disk would.

pub mod breaker;
pub mod mongo;
pub mod store;

use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch};
use cloudmart_config::{EnvReader, EnvVar, FromEnv, Setting, port};
use cloudmart_http::chaos::{self, Chaos, ChaosConfig};
use cloudmart_http::error::{ApiError, Json, Query};
use cloudmart_http::health::{Check, Health};
use cloudmart_http::metrics::{InFlight, MetricsBuilder};
use cloudmart_http::server::{self, Server, ServerConfig};
use cloudmart_model::{
    IDEMPOTENT_REPLAYED, NewOrder, NotificationState, NotificationUpdate, Order, OrderPage,
};
use cloudmart_run::{App, Service, StartupError};
use futures::future::BoxFuture;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use serde::Deserialize;
use tokio::sync::Semaphore;

use crate::mongo::{MongoOptions, MongoStore};
use crate::store::{EmbeddedStore, Inserted, OrderStore, StoreError};

/// The binary and image name.
pub const NAME: &str = "database-service";

pub const PORT: Setting<u16> = port("8080");
pub const DB_NAME: Setting<String> = Setting::text(EnvVar::required(
    "DB_NAME",
    "the database name, e.g. cloudmart-db",
    "Database name (the embedded store's file name; the MongoDB database)",
));
pub const DATA_DIR: Setting<PathBuf> = Setting::parsed(EnvVar::with_default(
    "DATA_DIR",
    "data",
    "a writable directory",
    "Directory of the embedded store's data file",
));
pub const DB_MAX_INFLIGHT: Setting<usize> = Setting::<usize>::whole(
    EnvVar::with_default(
        "DB_MAX_INFLIGHT",
        "64",
        "a whole number from 1 to 100000",
        "Requests worked on at once; the excess gets 503 with Retry-After",
    ),
    1,
    100_000,
);

pub const DB_QUEUE_TIMEOUT_MS: Setting<std::time::Duration> = Setting::millis(
    EnvVar::with_default(
        "DB_QUEUE_TIMEOUT_MS",
        "0",
        "milliseconds from 0 to 60000",
        "How long a request may wait for one of the DB_MAX_INFLIGHT slots before it gets 503 (0 sheds at once)",
    ),
    0,
    60_000,
);

/// Everything this service reads from its environment, once, at startup.
#[derive(Debug, Clone)]
pub struct Config {
    /// Listener and timeouts.
    pub server: ServerConfig,
    /// Database name.
    pub db_name: String,
    /// Embedded store directory.
    pub data_dir: PathBuf,
    /// Bound on in-flight work.
    pub max_inflight: usize,
    /// Longest wait for an in-flight slot.
    pub queue_timeout: std::time::Duration,
    /// Fault injection.
    pub chaos: ChaosConfig,
    /// MongoDB connection string; `None` selects the embedded store.
    pub mongodb_uri: Option<String>,
    /// Pool and timeouts for MongoDB.
    pub mongo: MongoOptions,
}

impl FromEnv for Config {
    fn read(r: &mut EnvReader<'_>) -> Self {
        let port = r.get(&PORT);
        let db_name = r.required(&DB_NAME);
        let data_dir = r.get(&DATA_DIR);
        let max_inflight = r.get(&DB_MAX_INFLIGHT);
        let queue_timeout = r.get(&DB_QUEUE_TIMEOUT_MS);
        let mongodb_uri = r.optional(&mongo::MONGODB_URI);
        let mongo = MongoOptions::from_env(r);
        let chaos = ChaosConfig::from_env(r);
        Self {
            server: ServerConfig::from_env(r, port),
            db_name,
            data_dir,
            max_inflight,
            queue_timeout,
            chaos,
            mongodb_uri,
            mongo,
        }
    }
}

/// Shared handler state.
#[derive(Clone)]
struct AppState {
    store: Arc<dyn OrderStore>,
}

/// Error enum of this service; each variant has one status.
#[derive(Debug)]
enum DbError {
    /// 404: no order with that id.
    NotFound(String),
    /// 422: the body is well-formed but not acceptable.
    Invalid(String),
    /// 400: the request names something that cannot be used (a cursor).
    BadRequest(String),
    /// 503: the store is unreachable (names the backend).
    Unavailable(String),
    /// 500: anything else; logged, not sent.
    Internal(String),
    /// The body extractor's own 400/413/415/422, passed on as it is.
    Rejected(ApiError),
}

impl From<StoreError> for DbError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(m) => Self::Unavailable(m),
            StoreError::Internal(m) => Self::Internal(m),
            e @ StoreError::UnknownCursor(_) => Self::BadRequest(e.to_string()),
        }
    }
}

impl IntoResponse for DbError {
    fn into_response(self) -> Response {
        match self {
            Self::NotFound(id) => ApiError::not_found(format!("no order with id {id}")),
            Self::Invalid(m) => ApiError::validation(m),
            Self::BadRequest(m) => ApiError::new(StatusCode::BAD_REQUEST, "bad_request", m),
            Self::Unavailable(m) => {
                tracing::error!(error = %m, "store unavailable: {m}");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    cloudmart_http::error::STORE_UNAVAILABLE,
                    m,
                )
                .with_retry_after(1)
            }
            Self::Internal(m) => {
                tracing::error!(error = %m, "store failure: {m}");
                ApiError::internal()
            }
            Self::Rejected(e) => e,
        }
        .into_response()
    }
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    limit: Option<usize>,
    cursor: Option<String>,
    customer: Option<String>,
}

async fn create(State(s): State<AppState>, Json(new): Json<NewOrder>) -> Result<Response, DbError> {
    if new.id.trim().is_empty() || new.idempotency_key.trim().is_empty() {
        return Err(DbError::Invalid(
            "id and idempotency_key must not be empty".to_owned(),
        ));
    }
    cloudmart_model::validate_items(&new.items).map_err(DbError::Invalid)?;
    match s.store.insert(new).await? {
        Inserted::Created(order) => {
            tracing::info!(order_id = %order.id, "stored order {}", order.id);
            Ok((StatusCode::CREATED, Json(order)).into_response())
        }
        Inserted::Existing(order) => {
            tracing::info!(order_id = %order.id, "order {} already stored; returning it", order.id);
            Ok((StatusCode::OK, [(IDEMPOTENT_REPLAYED, "true")], Json(order)).into_response())
        }
    }
}

async fn get_one(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Order>, DbError> {
    s.store
        .get(&id)
        .await?
        .map(Json)
        .ok_or(DbError::NotFound(id))
}

async fn list(
    State(s): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<OrderPage>, DbError> {
    let limit = q.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(DbError::Invalid(format!(
            "limit must be from 1 to 100, got {limit}"
        )));
    }
    Ok(Json(
        s.store
            .list(limit, q.cursor.as_deref(), q.customer.as_deref())
            .await?,
    ))
}

async fn set_notification(
    State(s): State<AppState>,
    Path(id): Path<String>,
    body: Result<Json<NotificationUpdate>, ApiError>,
) -> Result<Json<Order>, DbError> {
    let Json(u) = body.map_err(unknown_state)?;
    s.store
        .set_notification(&id, u.notification)
        .await?
        .map(Json)
        .ok_or(DbError::NotFound(id))
}

/// An unknown state stays the 422 `validation_failed` naming the states
/// that it was when states were strings checked here; the extractor would
/// call it `invalid_body`. Every other rejection passes through unchanged.
fn unknown_state(rejection: ApiError) -> DbError {
    // serde's wording for a string that names no variant of the enum.
    if rejection.code == "invalid_body" && rejection.message.contains("unknown variant") {
        let [a, b, c] = NotificationState::ALL.map(NotificationState::as_str);
        DbError::Invalid(format!("notification must be {a:?}, {b:?} or {c:?}"))
    } else {
        DbError::Rejected(rejection)
    }
}

async fn pending(
    State(s): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Vec<Order>>, DbError> {
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    Ok(Json(s.store.pending_notifications(limit).await?))
}

/// The in-flight bound and its metrics.
#[derive(Clone)]
struct Shedder {
    permits: Arc<Semaphore>,
    queue_timeout: std::time::Duration,
    inflight: Gauge,
    shed: Counter,
}

async fn shed(State(s): State<Shedder>, req: Request, next: Next) -> Response {
    let permit = if s.queue_timeout.is_zero() {
        s.permits.clone().try_acquire_owned().ok()
    } else {
        tokio::time::timeout(s.queue_timeout, s.permits.clone().acquire_owned())
            .await
            .ok()
            .and_then(Result::ok)
    };
    let Some(_permit) = permit else {
        s.shed.inc();
        tracing::warn!(
            load.shed = true,
            "shedding {} {}: too many requests in flight",
            req.method(),
            req.uri().path()
        );
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "database-service is at its in-flight limit; retry later",
        )
        .with_retry_after(1)
        .into_response();
    };
    let _inflight = InFlight::enter(&s.inflight);
    next.run(req).await
}

/// Readiness: the store answers.
struct StoreCheck(Arc<dyn OrderStore>);

impl Check for StoreCheck {
    fn name(&self) -> &str {
        self.0.backend()
    }
    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move { self.0.ping().await.map_err(|e| e.to_string()) })
    }
}

/// The service, as `cloudmart_run` builds and runs it.
pub struct Application;

impl Service for Application {
    const NAME: &'static str = NAME;
    const PORT: Setting<u16> = PORT;
    type Config = Config;

    async fn build(config: Config) -> Result<App, StartupError> {
        let store: Arc<dyn OrderStore> = if let Some(uri) = &config.mongodb_uri {
            let s = MongoStore::connect(uri, &config.db_name, config.mongo)
                .await
                .map_err(|e| format!("MONGODB_URI could not be used: {e}"))?;
            tracing::info!(database = %config.db_name, "using MongoDB");
            Arc::new(s)
        } else {
            let s = EmbeddedStore::open(&config.data_dir, &config.db_name).map_err(|e| {
                format!(
                    "cannot open the data file in DATA_DIR={}: {e}",
                    config.data_dir.display()
                )
            })?;
            tracing::info!(path = %s.path().display(), orders = s.len(), "embedded store opened");
            Arc::new(s)
        };
        let mut metrics = MetricsBuilder::new();
        let chaos = Chaos::new(config.chaos, metrics.registry());
        let shedder = Shedder {
            permits: Arc::new(Semaphore::new(config.max_inflight)),
            queue_timeout: config.queue_timeout,
            inflight: Gauge::default(),
            shed: Counter::default(),
        };
        metrics.registry().register(
            "db_inflight_requests",
            "Requests being worked on",
            shedder.inflight.clone(),
        );
        metrics.registry().register(
            "db_shed_requests",
            "Requests refused with 503 because DB_MAX_INFLIGHT was reached",
            shedder.shed.clone(),
        );
        let metrics = metrics.build();
        let routes = Router::new()
            .route("/orders", get(list).post(create))
            .route("/orders/{id}", get(get_one))
            .route("/orders/{id}/notification", patch(set_notification))
            .route("/notifications/pending", get(pending))
            .with_state(AppState {
                store: store.clone(),
            })
            .route_layer(middleware::from_fn_with_state(chaos, chaos::inject))
            .route_layer(middleware::from_fn_with_state(shedder, shed));
        let health = Health::new(NAME, vec![Box::new(StoreCheck(store))], metrics.clone());
        let router = server::standard_with_quiet_routes(
            NAME,
            routes,
            health,
            metrics,
            &config.server,
            &["/notifications/pending"],
        );
        let server = Server::bind(&config.server, router).await?;
        Ok(App::new(server))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_only_the_settings_it_declares() {
        cloudmart_run::check_settings::<Application>();
    }
}
