//! `cloudmart smoke`: the workshop's end-to-end check, as a command.
//!
//! It places N orders through the gateway one after another, prints one
//! line per order (status, latency, trace id) and succeeds only when every
//! order got a 2xx in under the SLA.

use std::time::{Duration, Instant};

/// What to run.
#[derive(Debug, Clone)]
pub struct SmokeConfig {
    /// Gateway base URL.
    pub url: String,
    /// How many orders.
    pub orders: u32,
    /// Pause between orders.
    pub interval: Duration,
    /// Slowest acceptable answer.
    pub sla: Duration,
}

/// The outcome of one order.
#[derive(Debug, Clone)]
pub struct SmokeLine {
    /// 1-based order number.
    pub n: u32,
    /// HTTP status, or `None` when no answer came.
    pub status: Option<u16>,
    /// Time to the full answer.
    pub latency: Duration,
    /// The trace id from `traceparent`, if any.
    pub trace_id: Option<String>,
    /// The order id, or the error.
    pub detail: String,
}

impl SmokeLine {
    /// Whether this order passed.
    pub fn ok(&self, sla: Duration) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s)) && self.latency < sla
    }
}

/// Runs the check, calling `report` after each order. Returns every line.
pub async fn run(config: &SmokeConfig, mut report: impl FnMut(&SmokeLine)) -> Vec<SmokeLine> {
    let client = reqwest::Client::builder()
        .timeout(config.sla.max(Duration::from_secs(10)))
        .build()
        .unwrap_or_else(|_| reqwest::Client::new());
    let endpoint = format!("{}/api/orders", config.url.trim_end_matches('/'));
    let mut lines = Vec::with_capacity(config.orders as usize);
    for n in 1..=config.orders {
        let started = Instant::now();
        let body = serde_json::json!({"item": format!("item-{n}"), "quantity": 1});
        let result = client.post(&endpoint).json(&body).send().await;
        let line = match result {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let trace_id = resp
                    .headers()
                    .get("traceparent")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|tp| tp.split('-').nth(1))
                    .map(str::to_owned);
                let body: serde_json::Value = resp.json().await.unwrap_or_default();
                let detail = body["id"]
                    .as_str()
                    .map(|id| format!("order {id}"))
                    .or_else(|| body["error"]["message"].as_str().map(str::to_owned))
                    .unwrap_or_default();
                SmokeLine {
                    n,
                    status: Some(status),
                    latency: started.elapsed(),
                    trace_id,
                    detail,
                }
            }
            Err(e) => SmokeLine {
                n,
                status: None,
                latency: started.elapsed(),
                trace_id: None,
                detail: cloudmart_http::client::describe_error(&e),
            },
        };
        report(&line);
        lines.push(line);
        if n < config.orders && !config.interval.is_zero() {
            tokio::time::sleep(config.interval).await;
        }
    }
    lines
}

/// `order  3/20  201   12.4 ms  trace 4bf9...  order 0193...`
pub fn format_line(line: &SmokeLine, total: u32, sla: Duration) -> String {
    let status = line
        .status
        .map_or_else(|| "---".to_owned(), |s| s.to_string());
    let mark = if line.ok(sla) { "ok  " } else { "FAIL" };
    format!(
        "{mark} order {:>3}/{total}  {status}  {:>8.1} ms  trace {}  {}",
        line.n,
        line.latency.as_secs_f64() * 1000.0,
        line.trace_id.as_deref().unwrap_or("-"),
        line.detail
    )
}

/// The gateway check that `cloudmart doctor cluster` scores: up to
/// `orders` orders placed one after another through the same code as
/// `cloudmart smoke`, stopping at the first that fails or is slower than
/// `sla`. An unreachable gateway is a failure with its reason.
pub async fn gateway_check(
    url: &str,
    orders: u32,
    sla: Duration,
) -> cloudmart_doctor::cluster::scoreboard::SmokeOutcome {
    let mut outcome = cloudmart_doctor::cluster::scoreboard::SmokeOutcome {
        url: url.to_owned(),
        orders,
        passed: 0,
        slowest_ms: 0.0,
        failure: None,
    };
    let one = SmokeConfig {
        url: url.to_owned(),
        orders: 1,
        interval: Duration::ZERO,
        sla,
    };
    for n in 1..=orders {
        let Some(line) = run(&one, |_| {}).await.pop() else {
            break;
        };
        if line.ok(sla) {
            outcome.passed += 1;
            let ms = (line.latency.as_secs_f64() * 10_000.0).round() / 10.0;
            outcome.slowest_ms = outcome.slowest_ms.max(ms);
            continue;
        }
        let ms = line.latency.as_secs_f64() * 1000.0;
        let detail = if line.detail.is_empty() {
            String::new()
        } else {
            format!(": {}", line.detail)
        };
        outcome.failure = Some(match line.status {
            Some(s) if (200..300).contains(&s) => format!(
                "order {n} took {ms:.0} ms, over the {} ms SLA",
                sla.as_millis()
            ),
            Some(s) => format!("order {n} answered {s} in {ms:.0} ms{detail}"),
            None => format!("order {n} got no answer{detail}"),
        });
        break;
    }
    outcome
}
