//! Workshop fault 7, the retry storm, run as real processes: order-service
//! in front of a database-service that fails half its writes (fault 8) and
//! has room for a fixed number of writes per second.
//!
//! database-service's capacity is pinned by `CHAOS_LATENCY_MS` (every
//! request holds one of `DB_MAX_INFLIGHT` slots that long), so it is the
//! same on a fast laptop and a slow CI machine: 2 slots of 20 ms are 100
//! requests a second. Orders arrive at 40 a second, open loop. With half
//! the writes failing, each order needs about two writes, so the database
//! runs near its limit; the question is what the retry policy does there.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cloudmart_testkit::{ServiceProcess, TempDir, metric};
use tokio::sync::Mutex;

const ORDERS_PER_SEC: u64 = 60;
const SECONDS: u64 = 5;

/// A binary of another workspace package, built beside this test by
/// `cargo test --workspace` (`make test`).
fn sibling_binary(name: &str) -> String {
    let exe = std::env::current_exe().expect("the test knows its own path");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir: PathBuf = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("the test runs from target/<profile>/deps")
        .to_path_buf();
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build -p cloudmart-database` (make test does)",
        path.display()
    );
    path.display().to_string()
}

/// What one run of the traffic came to.
struct Outcome {
    orders: usize,
    created: usize,
    database_posts: u64,
    p95: Duration,
    retry_lines: usize,
    zero_delay_retry_lines: usize,
}

impl Outcome {
    fn amplification(&self) -> f64 {
        self.database_posts as f64 / self.orders as f64
    }
}

async fn run(retry: [(&'static str, &'static str); 3]) -> Outcome {
    // Removed when this returns or the test fails.
    let data = TempDir::new(&format!("storm-{}", retry[1].1));
    let data_dir = data.to_env();
    let (db, db_port) = ServiceProcess::start_healthy(
        &sibling_binary("database-service"),
        &[
            ("DB_NAME", "storm"),
            ("DATA_DIR", &data_dir),
            ("DB_MAX_INFLIGHT", "2"),
            ("DB_QUEUE_TIMEOUT_MS", "250"),
            ("CHAOS_LATENCY_MS", "20"),
            ("CHAOS_FAILURE_RATE", "0.5"),
            ("RUST_LOG", "warn"),
        ],
    )
    .await;
    let database_url = format!("http://127.0.0.1:{db_port}");
    let mut env = vec![
        ("DATABASE_URL", database_url.as_str()),
        ("NOTIFICATION_URL", "http://127.0.0.1:9"),
        ("RUST_LOG", "warn"),
    ];
    env.extend(retry);
    let (order, order_port) =
        ServiceProcess::start_healthy(env!("CARGO_BIN_EXE_order-service"), &env).await;

    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{order_port}/orders");
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    let start = tokio::time::Instant::now();
    let total = ORDERS_PER_SEC * SECONDS;
    for i in 0..total {
        // Open loop: each order leaves at its own time, however slow the
        // earlier ones are, and its latency counts from that time.
        let due = start + Duration::from_micros(i * 1_000_000 / ORDERS_PER_SEC);
        tokio::time::sleep_until(due).await;
        let (client, url, latencies) = (client.clone(), url.clone(), latencies.clone());
        tasks.push(tokio::spawn(async move {
            let sent = Instant::now();
            let status = client
                .post(&url)
                .header("idempotency-key", format!("storm-{i}"))
                .json(&serde_json::json!({"items": [{"item": "laptop", "quantity": 1}]}))
                .timeout(Duration::from_secs(30))
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0);
            latencies.lock().await.push(sent.elapsed());
            status
        }));
    }
    let mut created = 0;
    for t in tasks {
        if t.await.unwrap_or(0) == 201 {
            created += 1;
        }
    }
    let mut latencies = latencies.lock().await.clone();
    latencies.sort();
    let p95 = latencies[latencies.len() * 95 / 100];
    let database_posts = metric(
        &client,
        &database_url,
        "http_server_requests_total",
        &[("method", "POST"), ("route", "/orders")],
    )
    .await
    .unwrap_or_default() as u64;
    let log = order.output();
    let retry_lines = log.lines().filter(|l| l.contains("retrying")).count();
    let zero_delay_retry_lines = log
        .lines()
        .filter(|l| l.contains("retrying") && l.contains(" in 0 ms after"))
        .count();
    drop(order);
    drop(db);
    drop(data);
    Outcome {
        orders: total as usize,
        created,
        database_posts,
        p95,
        retry_lines,
        zero_delay_retry_lines,
    }
}

/// Ten immediate attempts (the broken manifests) against the policy of the
/// healthy ones, under the same traffic. The storm makes database-service
/// serve at least two requests per order placed, fills order-service's log
/// with zero-delay retries, and sends more requests than the backoff policy
/// for the same orders.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_immediate_retries_make_database_service_serve_at_least_two_requests_per_order() {
    let storm = run([
        ("RETRY_MAX_ATTEMPTS", "10"),
        ("RETRY_BASE_DELAY_MS", "0"),
        ("RETRY_MAX_DELAY_MS", "0"),
    ])
    .await;
    let backoff = run([
        ("RETRY_MAX_ATTEMPTS", "3"),
        ("RETRY_BASE_DELAY_MS", "100"),
        ("RETRY_MAX_DELAY_MS", "2000"),
    ])
    .await;

    for (name, o) in [("storm", &storm), ("backoff", &backoff)] {
        eprintln!(
            "{name}: {} orders, {} created, {} database POSTs ({:.2} per order), p95 {} ms, {} retry log lines",
            o.orders,
            o.created,
            o.database_posts,
            o.amplification(),
            o.p95.as_millis(),
            o.retry_lines
        );
    }
    assert!(
        storm.amplification() >= 2.0,
        "the storm should make at least two database requests per order, made {:.2}",
        storm.amplification()
    );
    assert!(
        storm.zero_delay_retry_lines as u64 + storm.orders as u64 >= storm.database_posts,
        "every extra database request should be a zero-delay retry in the log: {} retries for {} requests",
        storm.zero_delay_retry_lines,
        storm.database_posts
    );
    assert!(
        backoff.database_posts < storm.database_posts,
        "backoff should send fewer database requests than the storm: {} vs {}",
        backoff.database_posts,
        storm.database_posts
    );
    assert!(
        backoff.retry_lines < storm.retry_lines,
        "backoff should log fewer retries than the storm: {} vs {}",
        backoff.retry_lines,
        storm.retry_lines
    );
}
