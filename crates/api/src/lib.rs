//! api-service: the public order API behind the gateway.
//!
//! `POST /api/orders` validates the request, asks auth-service who the
//! caller is (no token means a guest), then asks order-service to create
//! the order. Each step is a separate downstream with its own name, so an
//! error always says which hop failed.
//!
//! Reads are private. Every route asks auth-service who the caller is, so an
//! invalid token is a 401 everywhere. A listing needs a login and shows only
//! the caller's orders (an admin sees everyone's). One order answers its
//! owner; anyone else gets the same 404 as for an id that does not exist,
//! so ids cannot be probed. A guest's order is readable by its id alone:
//! the id is the guest's receipt.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use cloudmart_config::{EnvReader, EnvVar, FromEnv, Setting, port};
use cloudmart_http::client::{ClientConfig, Downstream, Retry};
use cloudmart_http::error::{ApiError, Json, Query};
use cloudmart_http::health::{Check, Health, HttpCheck};
use cloudmart_http::metrics::MetricsBuilder;
use cloudmart_http::server::{self, Server, ServerConfig};
use cloudmart_model::{
    CreateOrder, GUEST, IDEMPOTENCY_KEY, IDEMPOTENT_REPLAYED, Identity, MAX_QUANTITY, Order,
    OrderItem, OrderPage, PageQuery, validate_items,
};
use cloudmart_retry::Backoff;
use cloudmart_run::{App, Service, StartupError};
use reqwest::Method;
use serde::Deserialize;

/// The binary and image name.
pub const NAME: &str = "api-service";
pub const PORT: Setting<u16> = port("3000");
pub const AUTH_SERVICE_URL: Setting<String> = Setting::url(EnvVar::with_default(
    "AUTH_SERVICE_URL",
    "http://auth-service:3000",
    "an http:// URL such as http://auth-service:3000",
    "Base URL of auth-service",
));
pub const ORDER_SERVICE_URL: Setting<String> = Setting::url(EnvVar::with_default(
    "ORDER_SERVICE_URL",
    "http://order-service:3000",
    "an http:// URL such as http://order-service:3000",
    "Base URL of order-service",
));

/// Everything this service reads from its environment, once, at startup.
#[derive(Debug, Clone)]
pub struct Config {
    /// Listener and timeouts.
    pub server: ServerConfig,
    /// Where auth-service answers (`AUTH_SERVICE_URL`).
    pub auth_url: String,
    /// Where order-service answers (`ORDER_SERVICE_URL`).
    pub order_url: String,
    /// Outbound timeouts.
    pub client: ClientConfig,
    /// Retry policy for reads (writes retry only what never reached the server).
    pub retry: Backoff,
}

impl FromEnv for Config {
    fn read(r: &mut EnvReader<'_>) -> Self {
        let port = r.get(&PORT);
        let auth_url = r.get(&AUTH_SERVICE_URL);
        let order_url = r.get(&ORDER_SERVICE_URL);
        let retry = Backoff::from_env(r);
        let client = ClientConfig::from_env(r);
        Self {
            server: ServerConfig::from_env(r, port),
            auth_url,
            order_url,
            client,
            retry,
        }
    }
}

#[derive(Clone)]
struct AppState {
    auth: Downstream,
    order: Downstream,
}

/// One line as a client may send it; quantity is wide so that a negative
/// number gets a precise message rather than a type error.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LineRequest {
    item: String,
    #[serde(default = "one")]
    quantity: i64,
}

/// `{"item":"laptop","quantity":1}` or `{"items":[...]}`.
#[derive(Debug, Deserialize)]
struct OrderRequest {
    item: Option<String>,
    quantity: Option<i64>,
    items: Option<Vec<LineRequest>>,
}

fn one() -> i64 {
    1
}

fn quantity(q: i64, at: &str) -> Result<u32, ApiError> {
    u32::try_from(q)
        .ok()
        .filter(|q| (1..=MAX_QUANTITY).contains(q))
        .ok_or_else(|| {
            ApiError::validation(format!(
                "{at}quantity must be from 1 to {MAX_QUANTITY}, got {q}"
            ))
        })
}

fn lines(req: OrderRequest) -> Result<Vec<OrderItem>, ApiError> {
    let items = match (req.item, req.items) {
        (Some(_), Some(_)) => {
            return Err(ApiError::validation(
                "send either item or items, not both".to_owned(),
            ));
        }
        (None, None) => {
            return Err(ApiError::validation(
                r#"missing field: send {"item":"laptop","quantity":1} or {"items":[...]}"#
                    .to_owned(),
            ));
        }
        (Some(item), None) => vec![OrderItem {
            item,
            quantity: quantity(req.quantity.unwrap_or(1), "")?,
        }],
        (None, Some(list)) => {
            if req.quantity.is_some() {
                return Err(ApiError::validation(
                    "quantity belongs inside each of items".to_owned(),
                ));
            }
            list.into_iter()
                .enumerate()
                .map(|(i, l)| {
                    Ok(OrderItem {
                        item: l.item,
                        quantity: quantity(l.quantity, &format!("items[{i}]."))?,
                    })
                })
                .collect::<Result<Vec<_>, ApiError>>()?
        }
    };
    validate_items(&items).map_err(ApiError::validation)?;
    Ok(items)
}

/// Whether `who` may read `order`: its owner, an admin, or anyone for a
/// guest's order (its id is the guest's receipt).
fn may_read(who: &Identity, order: &Order) -> bool {
    order.customer == GUEST || who.is_admin() || (!who.guest && order.customer == who.subject)
}

/// Asks auth-service who sent `headers`: a guest without a token, a 401
/// naming the problem for a bad one.
async fn identify(auth: &Downstream, headers: &HeaderMap) -> Result<Identity, ApiError> {
    let authorization = headers.get(header::AUTHORIZATION).cloned();
    let (_, who) = auth
        .call(
            Method::POST,
            "/auth/validate",
            Retry::Safe,
            |r| match &authorization {
                Some(v) => r.header(header::AUTHORIZATION, v.clone()),
                None => r,
            },
        )
        .await?;
    Ok(who)
}

async fn create(
    State(s): State<AppState>,
    headers: HeaderMap,
    Json(req): Json<OrderRequest>,
) -> Result<Response, ApiError> {
    let items = lines(req)?;
    let who = identify(&s.auth, &headers).await?;
    let key = headers.get(IDEMPOTENCY_KEY).cloned();
    let body = CreateOrder {
        items,
        customer: Some(who.subject),
    };
    // Not repeated once sent: without the client's key, order-service makes
    // up a new one per request, so a retry here could store a second order.
    let (status, order): (_, Order) = s
        .order
        .call(Method::POST, "/orders", Retry::Never, |r| {
            let r = r.json(&body);
            match &key {
                Some(k) => r.header(IDEMPOTENCY_KEY, k.clone()),
                None => r,
            }
        })
        .await?;
    tracing::info!(order_id = %order.id, customer = %order.customer, "order {} placed by {}", order.id, order.customer);
    let mut response = (status, Json(order)).into_response();
    if status == StatusCode::OK {
        response
            .headers_mut()
            .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    }
    Ok(response)
}

async fn get_one(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Order>, ApiError> {
    let not_found = || ApiError::not_found(format!("no order with id {id}"));
    let well_formed = !id.is_empty()
        && id.len() <= 100
        && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    // Who asks and what they ask for are independent: ask both at once.
    let fetch = async {
        if !well_formed {
            return Ok(None);
        }
        s.order
            .call::<Order, _>(Method::GET, &format!("/orders/{id}"), Retry::Safe, |r| r)
            .await
            .map(|(_, order)| Some(order))
    };
    let (who, order) = tokio::join!(identify(&s.auth, &headers), fetch);
    // An invalid token is a 401 even for an id that does not exist.
    let who = who?;
    let order = match order {
        Ok(Some(order)) => order,
        Ok(None) => return Err(not_found()),
        Err(e) if e.status == StatusCode::NOT_FOUND => return Err(not_found()),
        Err(e) => return Err(e),
    };
    if !may_read(&who, &order) {
        tracing::info!(order_id = %order.id, caller = %who.subject, "order {} is not {}'s; answering 404", order.id, who.subject);
        return Err(not_found());
    }
    Ok(Json(order))
}

async fn list(
    State(s): State<AppState>,
    headers: HeaderMap,
    Query(mut q): Query<PageQuery>,
) -> Result<Json<OrderPage>, ApiError> {
    let who = identify(&s.auth, &headers).await?;
    if who.guest {
        return Err(ApiError::unauthorized(
            "listing orders needs a login: send Authorization: Bearer <token> from POST /api/auth/login (a guest reads an order by its id)",
        ));
    }
    // A customer sees their own orders whatever they ask for; an admin
    // sees everyone's, or one customer's with ?customer=.
    if !who.is_admin() {
        q.customer = Some(who.subject);
    }
    let path = q.forward("/orders").map_err(ApiError::validation)?;
    let (_, page) = s.order.call(Method::GET, &path, Retry::Safe, |r| r).await?;
    Ok(Json(page))
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
            auth: Downstream::new(
                "auth-service",
                &config.auth_url,
                http.clone(),
                config.retry,
                metrics.client(),
            ),
            order: Downstream::new(
                "order-service",
                &config.order_url,
                http.clone(),
                config.retry,
                metrics.client(),
            ),
        };
        let routes = Router::new()
            .route("/api/orders", get(list).post(create))
            .route("/api/orders/{id}", get(get_one))
            .with_state(state);
        let checks: Vec<Box<dyn Check>> = vec![
            Box::new(HttpCheck::new(
                "auth-service",
                &config.auth_url,
                http.clone(),
            )),
            Box::new(HttpCheck::new("order-service", &config.order_url, http)),
        ];
        let health = Health::new(NAME, checks, metrics.clone());
        let router = server::standard(NAME, routes, health, metrics, &config.server);
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

    fn parse(json: &str) -> Result<Vec<OrderItem>, String> {
        let req: OrderRequest = serde_json::from_str(json).map_err(|e| e.to_string())?;
        lines(req).map_err(|e| e.message)
    }

    #[test]
    fn both_request_shapes_are_accepted() {
        assert_eq!(
            parse(r#"{"item":"laptop","quantity":2}"#).unwrap()[0].quantity,
            2
        );
        assert_eq!(parse(r#"{"item":"test"}"#).unwrap()[0].quantity, 1);
        let two =
            parse(r#"{"items":[{"item":"a","quantity":1},{"item":"b","quantity":3}]}"#).unwrap();
        assert_eq!(two.len(), 2);
    }

    #[test]
    fn bad_quantities_and_shapes_are_named() {
        assert!(
            parse(r#"{"item":"laptop","quantity":0}"#)
                .unwrap_err()
                .contains("got 0")
        );
        assert!(
            parse(r#"{"item":"laptop","quantity":-5}"#)
                .unwrap_err()
                .contains("got -5")
        );
        assert!(
            parse(r#"{"item":"laptop","quantity":1001}"#)
                .unwrap_err()
                .contains("got 1001")
        );
        assert!(
            parse(r#"{"items":[{"item":"a","quantity":0}]}"#)
                .unwrap_err()
                .contains("items[0]")
        );
        assert!(parse(r#"{}"#).unwrap_err().contains("missing field"));
        assert!(
            parse(r#"{"item":"a","items":[]}"#)
                .unwrap_err()
                .contains("either")
        );
    }
}
