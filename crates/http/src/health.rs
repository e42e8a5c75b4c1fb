//! `/health` (liveness), `/ready` (readiness) and `/metrics`.
//!
//! Liveness never touches a dependency: a pod whose database is down is not
//! a pod that a restart would fix. Readiness checks this service's own
//! dependencies concurrently, with a short deadline, and names the one that
//! failed. A dependency the service can work without is checked too, but its
//! failure only marks the service `degraded` (still 200).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures::future::{BoxFuture, join_all};
use std::collections::BTreeMap;

use cloudmart_model::{CHECK_OK, ErrorDetail, Liveness, Readiness, ReadyStatus};

use crate::metrics::Metrics;

/// How long a readiness check may take before it counts as failed.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// One dependency a service needs before it can take traffic.
pub trait Check: Send + Sync {
    /// The dependency's name, e.g. `database-service` or `MongoDB`.
    fn name(&self) -> &str;
    /// `Ok` when usable, or why not.
    fn check(&self) -> BoxFuture<'_, Result<(), String>>;
    /// Whether a failure makes the service unready. A dependency the service
    /// keeps working without (auth-service's Redis: token validation fails
    /// open) returns `false`: its failure shows in `/ready` as `degraded`
    /// instead of taking every replica out of the load balancer at once,
    /// which would turn a partial outage into a full one.
    fn required(&self) -> bool {
        true
    }
}

/// A check that a downstream HTTP service answers its `/health`.
///
/// It never makes this service unready: if order-service went unready
/// whenever database-service did, api-service and the gateway would follow,
/// and one crashed pod would empty every Service up to the ingress. The
/// failure is reported (`degraded`, with the downstream's name and the
/// cause) and each request still gets its own precise 502.
pub struct HttpCheck {
    name: String,
    url: String,
    client: reqwest::Client,
}

impl HttpCheck {
    /// Checks `{base_url}/health`.
    pub fn new(name: impl Into<String>, base_url: &str, client: reqwest::Client) -> Self {
        Self {
            name: name.into(),
            url: format!("{base_url}/health"),
            client,
        }
    }
}

impl Check for HttpCheck {
    fn required(&self) -> bool {
        false
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            match self
                .client
                .get(&self.url)
                .timeout(CHECK_TIMEOUT)
                .send()
                .await
            {
                Ok(r) if r.status().is_success() => Ok(()),
                Ok(r) => Err(format!("{} answered {}", self.url, r.status().as_u16())),
                Err(e) => Err(format!(
                    "{}: {}",
                    self.url,
                    crate::client::describe_error(&e)
                )),
            }
        })
    }
}

/// State behind the health routes.
#[derive(Clone)]
pub struct Health {
    service: &'static str,
    checks: Arc<Vec<Box<dyn Check>>>,
    metrics: Metrics,
}

impl Health {
    /// Health for `service` with its readiness checks.
    pub fn new(service: &'static str, checks: Vec<Box<dyn Check>>, metrics: Metrics) -> Self {
        Self {
            service,
            checks: Arc::new(checks),
            metrics,
        }
    }

    /// Runs every check: whether every required one passed, whether one
    /// that is not required failed (degraded), and each check's `ok` or why
    /// not.
    async fn states(&self) -> (bool, bool, BTreeMap<String, String>) {
        let results = join_all(self.checks.iter().map(|c| async move {
            let outcome = match tokio::time::timeout(CHECK_TIMEOUT, c.check()).await {
                Ok(r) => r,
                Err(_) => Err(format!("no answer within {} ms", CHECK_TIMEOUT.as_millis())),
            };
            (c.name().to_owned(), c.required(), outcome)
        }))
        .await;
        let mut ok = true;
        let mut degraded = false;
        let mut checks = BTreeMap::new();
        for (name, required, outcome) in results {
            let v = match outcome {
                Ok(()) => CHECK_OK.to_owned(),
                Err(e) => {
                    if required {
                        ok = false;
                    } else {
                        degraded = true;
                    }
                    e
                }
            };
            checks.insert(name, v);
        }
        (ok, degraded, checks)
    }

    /// `/health`, `/ready` and `/metrics`.
    pub fn router(self) -> Router {
        Router::new()
            .route("/health", get(live))
            .route("/ready", get(ready))
            .route("/metrics", get(metrics))
            .with_state(self)
    }
}

async fn live(State(h): State<Health>) -> Json<Liveness> {
    Json(Liveness {
        status: CHECK_OK.to_owned(),
        service: h.service.to_string(),
    })
}

async fn ready(State(h): State<Health>) -> Response {
    let (ok, degraded, checks) = h.states().await;
    let service = h.service.to_string();
    if ok {
        let status = if degraded {
            ReadyStatus::Degraded
        } else {
            ReadyStatus::Ready
        };
        let body = Readiness {
            error: None,
            status,
            service,
            checks,
        };
        return Json(body).into_response();
    }
    let failed: Vec<String> = checks
        .iter()
        .filter(|(_, v)| v.as_str() != CHECK_OK)
        .map(|(k, v)| format!("{k}: {v}"))
        .collect();
    let body = Readiness {
        error: Some(ErrorDetail {
            code: "not_ready".to_owned(),
            message: format!("not ready: {}", failed.join("; ")),
        }),
        status: ReadyStatus::NotReady,
        service,
        checks,
    };
    (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
}

async fn metrics(State(h): State<Health>) -> Response {
    (
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        h.metrics.render(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(&'static str, bool, Result<(), String>);

    impl Check for Fixed {
        fn name(&self) -> &str {
            self.0
        }
        fn check(&self) -> BoxFuture<'_, Result<(), String>> {
            Box::pin(async move { self.2.clone() })
        }
        fn required(&self) -> bool {
            self.1
        }
    }

    fn health(checks: Vec<Box<dyn Check>>) -> Health {
        Health::new(
            "test",
            checks,
            crate::metrics::MetricsBuilder::new().build(),
        )
    }

    #[tokio::test]
    async fn a_failed_optional_check_degrades_but_stays_ready() {
        let h = health(vec![
            Box::new(Fixed("MongoDB", true, Ok(()))),
            Box::new(Fixed("Redis", false, Err("connection refused".to_owned()))),
        ]);
        let (ok, degraded, checks) = h.states().await;
        assert!(ok);
        assert!(degraded);
        assert_eq!(checks["MongoDB"], "ok");
        assert_eq!(checks["Redis"], "connection refused");
    }

    #[tokio::test]
    async fn a_failed_required_check_is_not_ready() {
        let h = health(vec![Box::new(Fixed(
            "MongoDB",
            true,
            Err("timed out".to_owned()),
        ))]);
        let (ok, _, checks) = h.states().await;
        assert!(!ok);
        assert_eq!(checks["MongoDB"], "timed out");
    }
}
