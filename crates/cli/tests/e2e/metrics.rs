//! `/metrics` through real traffic: every service's page is valid
//! OpenMetrics (a strict parser reads it), and after N orders through the
//! gateway each hop's counters say N: RED metrics by route and status,
//! client calls per downstream, retries, the queue, auth hashing, the
//! database's in-flight, shed and chaos counts, and the process gauges.
//! (Dead-lettering, which needs a message that fails, is counted in
//! `tests/rabbitmq/dead_letter.rs`.)

use std::time::Duration;

use cloudmart_testkit::wait_until;
use openmetrics_parser::OpenMetricsType;
use serde_json::json;

use crate::helpers::{
    Broker, SERVICES, Scrape, TestApp, spawn_app, spawn_app_with, spawn_app_with_broker,
};

/// Orders placed by each test.
const N: usize = 3;

/// How long asynchronous counters (notify, consume) may take to settle.
const SETTLE: Duration = Duration::from_secs(10);

async fn place_orders(app: &TestApp, n: usize) -> Vec<u16> {
    let mut statuses = Vec::new();
    for i in 0..n {
        let r = app
            .post_order(&json!({"item": format!("metrics-{i}"), "quantity": 1}))
            .await;
        statuses.push(r.status().as_u16());
    }
    statuses
}

/// Waits until `family{labels}` on `service` reads `want`, then returns what
/// it reads (so a mismatch fails with the last value seen).
async fn settled(
    app: &TestApp,
    service: &str,
    family: &str,
    labels: &[(&str, &str)],
    want: f64,
) -> f64 {
    let reached = wait_until(SETTLE, || async {
        let v = app.scrape(service).await.value(family, labels);
        (v == Some(want)).then_some(want)
    })
    .await;
    match reached {
        Some(v) => v,
        None => app
            .scrape(service)
            .await
            .value(family, labels)
            .unwrap_or(0.0),
    }
}

#[tokio::test]
async fn every_service_exports_strict_openmetrics_counting_each_order_once_per_hop() {
    // Arrange
    let app = spawn_app().await;
    let n = N as f64;

    // Act
    let statuses = place_orders(&app, N).await;
    let _token = app.login("alice", "alice-secret").await;

    // Assert: each page parses, and carries the shared metrics (the client
    // ones where the service calls another: a family shows once it has a
    // series).
    assert_eq!(statuses, vec![201; N]);
    for service in SERVICES {
        let page = app.scrape(service).await;
        let mut families = vec![
            ("http_server_requests", OpenMetricsType::Counter),
            (
                "http_server_request_duration_seconds",
                OpenMetricsType::Histogram,
            ),
            ("process_resident_memory_bytes", OpenMetricsType::Gauge),
            ("process_open_fds", OpenMetricsType::Gauge),
            ("process_max_fds", OpenMetricsType::Gauge),
            ("process_start_time_seconds", OpenMetricsType::Gauge),
        ];
        if ["gateway", "api-service", "order-service"].contains(&service) {
            families.extend([
                ("http_client_requests", OpenMetricsType::Counter),
                (
                    "http_client_request_duration_seconds",
                    OpenMetricsType::Histogram,
                ),
                ("http_client_retries", OpenMetricsType::Counter),
            ]);
        }
        for (family, kind) in families {
            assert_eq!(page.kind(family), Some(kind), "{service}: {family}");
        }
        assert!(
            page.must("process_resident_memory_bytes", &[]) > 1_000_000.0,
            "{service}"
        );
        assert!(page.must("process_open_fds", &[]) > 0.0, "{service}");
        assert!(
            page.must("process_start_time_seconds", &[]) > 1.0e9,
            "{service}"
        );
    }

    // The request path: gateway -> api-service -> auth-service (guest) and
    // order-service -> database-service, each hop once per order.
    let post = |route: &'static str, status: &'static str| {
        [("method", "POST"), ("route", route), ("status", status)]
    };
    let gateway = app.scrape("gateway").await;
    assert_eq!(
        gateway.must("http_server_requests", &post("/api/{*rest}", "201")),
        n
    );
    assert_eq!(
        gateway.must(
            "http_server_request_duration_seconds",
            &post("/api/{*rest}", "201")
        ),
        n
    );
    assert_eq!(
        gateway.must(
            "http_client_requests",
            &[("downstream", "api-service"), ("outcome", "201")]
        ),
        n
    );
    let api = app.scrape("api-service").await;
    assert_eq!(
        api.must("http_server_requests", &post("/api/orders", "201")),
        n
    );
    assert_eq!(
        api.must(
            "http_client_requests",
            &[("downstream", "auth-service"), ("outcome", "200")]
        ),
        n
    );
    assert_eq!(
        api.must(
            "http_client_requests",
            &[("downstream", "order-service"), ("outcome", "201")]
        ),
        n
    );
    let auth = app.scrape("auth-service").await;
    assert_eq!(
        auth.must("http_server_requests", &post("/auth/validate", "200")),
        n
    );
    let order = app.scrape("order-service").await;
    assert_eq!(
        order.must("http_server_requests", &post("/orders", "201")),
        n
    );
    assert_eq!(
        order.must(
            "http_client_requests",
            &[("downstream", "database-service"), ("outcome", "201")]
        ),
        n
    );
    assert_eq!(
        order.value("http_client_retries", &[("downstream", "database-service")]),
        Some(0.0),
        "the series exists from the first call, at 0"
    );
    let database = app.scrape("database-service").await;
    assert_eq!(
        database.must("http_server_requests", &post("/orders", "201")),
        n
    );
    assert_eq!(
        database.must(
            "http_server_request_duration_seconds",
            &post("/orders", "201")
        ),
        n
    );
    assert_eq!(database.value("db_shed_requests", &[]), Some(0.0));
    assert_eq!(database.value("chaos_injected_failures", &[]), Some(0.0));
    assert_eq!(
        database.kind("db_inflight_requests"),
        Some(OpenMetricsType::Gauge)
    );

    // Notification happens after the 201, over HTTP here: POST /notify, then
    // the order is marked sent in database-service.
    let notified = settled(&app, "notification-service", "notifications_sent", &[], n).await;
    assert_eq!(notified, n, "notifications_sent_total");
    let notify = [("method", "POST"), ("route", "/notify"), ("status", "202")];
    let page = app.scrape("notification-service").await;
    assert_eq!(page.must("http_server_requests", &notify), n);
    assert_eq!(page.value("notifications_duplicates", &[]), Some(0.0));
    let marked = [
        ("method", "PATCH"),
        ("route", "/orders/{id}/notification"),
        ("status", "200"),
    ];
    assert_eq!(
        settled(&app, "database-service", "http_server_requests", &marked, n).await,
        n
    );
    let order = app.scrape("order-service").await;
    assert_eq!(
        order.must(
            "http_client_requests",
            &[("downstream", "notification-service"), ("outcome", "202")]
        ),
        n
    );

    // One login: one success, at least one hash timed, none running now.
    let auth = app.scrape("auth-service").await;
    assert_eq!(auth.must("auth_logins", &[("outcome", "success")]), 1.0);
    assert!(auth.must("auth_hash_duration_seconds", &[]) >= 1.0);
    assert_eq!(
        settled(&app, "auth-service", "auth_hash_inflight", &[], 0.0).await,
        0.0
    );
    app.stop().await;
}

#[tokio::test]
async fn retries_and_injected_failures_are_counted_per_attempt() {
    // Arrange: every database-service request fails; order-service tries
    // each POST three times (it carries an idempotency key). The relay waits
    // a minute before its first pass, so only orders reach the database.
    let app = spawn_app_with(&[
        ("CHAOS_FAILURE_RATE", "1"),
        ("RETRY_MAX_ATTEMPTS", "3"),
        ("RELAY_INTERVAL_MS", "60000"),
    ])
    .await;
    let n = N as f64;

    // Act
    let statuses = place_orders(&app, N).await;

    // Assert
    assert!(statuses.iter().all(|s| *s >= 500), "{statuses:?}");
    let database = app.scrape("database-service").await;
    let failed = [("method", "POST"), ("route", "/orders"), ("status", "500")];
    assert_eq!(database.must("http_server_requests", &failed), 3.0 * n);
    assert_eq!(database.must("chaos_injected_failures", &[]), 3.0 * n);
    assert_eq!(database.must("db_shed_requests", &[]), 0.0);
    let order = app.scrape("order-service").await;
    assert_eq!(
        order.must(
            "http_client_requests",
            &[("downstream", "database-service"), ("outcome", "500")]
        ),
        3.0 * n
    );
    assert_eq!(
        order.must("http_client_retries", &[("downstream", "database-service")]),
        2.0 * n,
        "two retries per order"
    );
    assert_eq!(
        order.must(
            "http_client_request_duration_seconds",
            &[("downstream", "database-service")]
        ),
        3.0 * n,
        "one duration per attempt"
    );
    // api-service does not retry a POST without an idempotency key.
    let api = app.scrape("api-service").await;
    assert_eq!(
        api.value("http_client_retries", &[("downstream", "order-service")]),
        Some(0.0)
    );
    app.stop().await;
}

#[tokio::test]
async fn the_queue_counts_published_consumed_and_sent_messages() {
    let Some(broker) = Broker::require("the_queue_counts_published_consumed_and_sent_messages")
    else {
        return;
    };
    let app = spawn_app_with_broker(&broker).await;
    let n = N as f64;

    let statuses = place_orders(&app, N).await;

    assert_eq!(statuses, vec![201; N]);
    let consumed = settled(
        &app,
        "notification-service",
        "notifications_consumed",
        &[],
        n,
    )
    .await;
    assert_eq!(consumed, n, "notifications_consumed_total");
    let sent = settled(&app, "notification-service", "notifications_sent", &[], n).await;
    assert_eq!(sent, n, "notifications_sent_total");
    let order = app.scrape("order-service").await;
    assert_eq!(order.must("amqp_messages_published", &[]), n);
    assert_eq!(order.value("amqp_publish_failures", &[]), Some(0.0));
    assert_eq!(order.must("amqp_connected", &[]), 1.0);
    let page = app.scrape("notification-service").await;
    assert_eq!(page.must("notifications_dead_lettered", &[]), 0.0);
    assert_eq!(
        page.kind("notification_queue_depth"),
        Some(OpenMetricsType::Gauge)
    );
    assert_eq!(page.must("notification_dead_letter_queue_depth", &[]), 0.0);
    assert_eq!(
        settled(
            &app,
            "notification-service",
            "notification_queue_depth",
            &[],
            0.0
        )
        .await,
        0.0
    );
    app.stop().await;
    broker.cleanup().await;
}

#[test]
fn the_parser_rejects_pages_prometheus_would_reject() {
    let good = "# TYPE a counter\na_total 1\n# TYPE b gauge\nb 2\n# EOF\n";
    Scrape::parse("x", good).expect("a valid page");
    for bad in [
        // No `# EOF`: a truncated page.
        "# TYPE a counter\na_total 1\n",
        // A counter sample without `_total`.
        "# TYPE a counter\na 1\n# EOF\n",
        // Buckets that are not cumulative, and no +Inf bucket.
        "# TYPE h histogram\nh_bucket{le=\"1\"} 5\nh_bucket{le=\"2\"} 3\nh_sum 1\nh_count 5\n# EOF\n",
        // The same series twice.
        "# TYPE b gauge\nb 1\nb 2\n# EOF\n",
        // Garbage where a sample should be.
        "# TYPE b gauge\nb one\n# EOF\n",
    ] {
        assert!(Scrape::parse("x", bad).is_err(), "accepted:\n{bad}");
    }
}
