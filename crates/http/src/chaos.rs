//! Fault injection any service can mount: a fraction of requests answered
//! with 500, and a fixed extra latency. Off by default.
//!
//! The 500 body says the failure was injected, so once a trainee reads the
//! response (or the `chaos.injected` span event) the cause is unambiguous.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::metrics::counter::Counter;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::error::ApiError;
use crate::metrics::Registry;
use cloudmart_config::{EnvReader, EnvVar, Setting};

pub const CHAOS_FAILURE_RATE: Setting<f64> = Setting::number(
    EnvVar::with_default(
        "CHAOS_FAILURE_RATE",
        "0",
        "a number from 0 to 1",
        "Fraction of requests answered 500 on purpose (fault injection)",
    ),
    0.0,
    1.0,
);
pub const CHAOS_LATENCY_MS: Setting<Duration> = Setting::millis(
    EnvVar::with_default(
        "CHAOS_LATENCY_MS",
        "0",
        "milliseconds from 0 to 60000",
        "Extra latency added to every request (fault injection)",
    ),
    0,
    60_000,
);

/// How much chaos to inject.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ChaosConfig {
    /// Fraction of requests that fail, 0..=1.
    pub failure_rate: f64,
    /// Latency added before every request.
    pub latency: Duration,
}

impl ChaosConfig {
    /// Reads `CHAOS_*`, recording out-of-range values in `reader`.
    pub fn from_env(reader: &mut EnvReader<'_>) -> Self {
        Self {
            failure_rate: reader.get(&CHAOS_FAILURE_RATE),
            latency: reader.get(&CHAOS_LATENCY_MS),
        }
    }

    /// Whether anything is injected.
    pub fn is_active(&self) -> bool {
        self.failure_rate > 0.0 || !self.latency.is_zero()
    }
}

/// Chaos settings plus the counter of injected failures.
#[derive(Clone)]
pub struct Chaos {
    config: ChaosConfig,
    injected: Counter,
}

impl Chaos {
    /// Registers `chaos_injected_failures_total` and returns the state for [`inject`].
    pub fn new(config: ChaosConfig, registry: &mut Registry) -> Arc<Self> {
        let injected = Counter::default();
        registry.register(
            "chaos_injected_failures",
            "Requests answered 500 by the chaos middleware",
            injected.clone(),
        );
        Arc::new(Self { config, injected })
    }
}

/// The middleware: mount it with `axum::middleware::from_fn_with_state`.
pub async fn inject(State(chaos): State<Arc<Chaos>>, req: Request, next: Next) -> Response {
    let config = chaos.config;
    if !config.latency.is_zero() {
        // On the server span, so a slow hop says it was slowed on purpose.
        tracing::Span::current().set_attribute(
            "chaos.latency_ms",
            i64::try_from(config.latency.as_millis()).unwrap_or(i64::MAX),
        );
        tokio::time::sleep(config.latency).await;
    }
    if config.failure_rate > 0.0 && fastrand::f64() < config.failure_rate {
        chaos.injected.inc();
        // The server span gets the attribute (searchable in a trace UI) and
        // this line becomes its event, with chaos.injected on it too.
        tracing::Span::current().set_attribute("chaos.injected", true);
        tracing::info!(
            chaos.injected = true,
            chaos.failure_rate = config.failure_rate,
            "chaos: answering {} {} with an injected 500",
            req.method(),
            req.uri().path()
        );
        return ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "chaos_injected",
            "this failure was injected by the chaos middleware",
        )
        .into_response();
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn out_of_range_values_are_config_errors() {
        let env: HashMap<String, String> =
            [("CHAOS_FAILURE_RATE", "1.5"), ("CHAOS_LATENCY_MS", "-1")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
        let mut r = EnvReader::new(&env);
        let cfg = ChaosConfig::from_env(&mut r);
        assert!(!cfg.is_active());
        let msg = r.finish().unwrap_err().to_string();
        assert!(msg.contains("CHAOS_FAILURE_RATE=\"1.5\""), "{msg}");
        assert!(msg.contains("CHAOS_LATENCY_MS=\"-1\""), "{msg}");
    }

    #[test]
    fn off_by_default() {
        let env: HashMap<String, String> = HashMap::new();
        let mut r = EnvReader::new(&env);
        assert_eq!(ChaosConfig::from_env(&mut r), ChaosConfig::default());
        r.finish().unwrap();
    }
}
