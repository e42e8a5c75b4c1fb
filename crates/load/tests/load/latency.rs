//! Injected delays come back as the reported percentiles, and each
//! profile sends the requests the API expects.

use std::collections::HashSet;
use std::time::Duration;

use axum::http::Method;
use cloudmart_load::{Operation, Profile};

use crate::helpers::{Reply, run_with_deadline, show, spawn_server};

/// How far a percentile may sit from the injected delay. Never more than
/// 1 ms below (the histogram's 0.1% buckets and rounding), and at most
/// 15 ms above: loopback, the tokio timer's 1 ms ticks on both sides and
/// scheduling on a shared two-core machine all add a little.
fn assert_near(what: &str, got_ms: f64, injected_ms: f64) {
    assert!(
        got_ms >= injected_ms - 1.0 && got_ms <= injected_ms + 15.0,
        "{what} = {got_ms} ms, injected {injected_ms} ms (allowed -1/+15 ms)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn percentiles_match_the_injected_delays() {
    // Arrange: 9 requests in 10 take 5 ms, every 10th takes 200 ms.
    let server = spawn_server(|n| Reply::created_after(if n % 10 == 9 { 200 } else { 5 })).await;
    let config = server.config(200.0, Duration::from_secs(2));

    // Act
    let report = run_with_deadline(&config).await;
    show("percentiles", &report);

    // Assert: 400 samples, 40 of them slow, so p50 is a fast one and p99
    // (the 396th) a slow one.
    assert_eq!(report.scheduled, 400);
    assert_eq!(report.latency_ms.count, 400);
    assert_eq!(report.statuses.get("201"), Some(&400));
    assert_near("p50", report.latency_ms.p50, 5.0);
    assert_near("p99", report.latency_ms.p99, 200.0);
    // The single worst sample is too noisy on a shared machine for an upper
    // bound, but it must not hide the slow requests.
    assert!(
        report.latency_ms.max >= 199.0,
        "max {}",
        report.latency_ms.max
    );
    let order = &report.operations[&Operation::Order].latency_ms;
    assert_eq!(order.count, 400);
    assert_near("order p50", order.p50, 5.0);
    assert!(
        (report.achieved_rate - 200.0).abs() < 25.0,
        "achieved {} /s",
        report.achieved_rate
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mixed_profile_sends_each_operation_its_share_as_the_api_expects() {
    // Arrange
    let server = spawn_server(|_| Reply::created_after(0)).await;
    let config = cloudmart_load::LoadConfig {
        profile: Profile::Mixed,
        ..server.config(200.0, Duration::from_millis(500))
    };

    // Act
    let report = run_with_deadline(&config).await;
    show("mixed", &report);

    // Assert: 100 requests, exactly 50 / 15 / 35.
    let count = |op| report.operations[&op].latency_ms.count;
    assert_eq!(count(Operation::Browse), 50);
    assert_eq!(count(Operation::Login), 15);
    assert_eq!(count(Operation::Order), 35);

    // One sign-in first, for the browses (listing needs a login), then the
    // 100 requests of the schedule.
    let seen = server.seen();
    assert_eq!(seen.len(), 101);
    assert_eq!(seen[0].uri, "/api/auth/login");
    let browses: Vec<_> = seen.iter().filter(|s| s.method == Method::GET).collect();
    assert_eq!(browses.len(), 50);
    assert!(browses.iter().all(|s| s.uri == "/api/orders?limit=10"));

    let logins: Vec<_> = seen.iter().filter(|s| s.uri == "/api/auth/login").collect();
    assert_eq!(logins.len(), 16);
    for login in &logins {
        assert_eq!(login.content_type.as_deref(), Some("application/json"));
        let body: serde_json::Value = serde_json::from_str(&login.body).unwrap();
        let user = body["username"].as_str().unwrap();
        assert!(user == "alice" || user == "bob", "{body}");
        assert_eq!(body["password"], format!("{user}-secret"));
    }

    let orders: Vec<_> = seen
        .iter()
        .filter(|s| s.method == Method::POST && s.uri == "/api/orders")
        .collect();
    assert_eq!(orders.len(), 35);
    let mut keys = HashSet::new();
    for order in &orders {
        assert_eq!(order.content_type.as_deref(), Some("application/json"));
        let body: serde_json::Value = serde_json::from_str(&order.body).unwrap();
        assert!(
            body["item"].as_str().unwrap().starts_with("item-"),
            "{body}"
        );
        assert_eq!(body["quantity"], 1);
        let key = order
            .idempotency_key
            .as_deref()
            .expect("an Idempotency-Key");
        let uuid = uuid::Uuid::parse_str(key).expect("the key is a UUID");
        assert_eq!(uuid.get_version_num(), 4);
        assert!(keys.insert(key.to_owned()), "key {key} sent twice");
    }
}
