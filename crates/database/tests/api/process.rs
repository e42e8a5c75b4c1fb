//! The real `database-service` binary: startup contract and graceful stop.

use std::time::{Duration, Instant};

use cloudmart_testkit::{ServiceProcess, TempDir, free_port, metric, wait_until};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_database-service");

/// A data directory removed when the test ends, failed or not.
fn data_dir(tag: &str) -> TempDir {
    TempDir::new(&format!("db-proc-{tag}"))
}

/// Fault 1 of the workshop: without `DB_NAME` the service exits 1 at once
/// and its one line of output names the variable.
#[tokio::test]
async fn without_db_name_it_exits_1_within_2_seconds_naming_db_name() {
    let port = free_port().to_string();
    let started = Instant::now();
    let mut db = ServiceProcess::start(BIN, &[("PORT", &port)]).unwrap();

    let status = db.wait_exit(Duration::from_secs(2));

    let status =
        status.unwrap_or_else(|| panic!("still running after 2 s; output:\n{}", db.output()));
    assert_eq!(status.code(), Some(1));
    assert!(started.elapsed() < Duration::from_secs(2));
    let output = db.output();
    assert!(output.contains("DB_NAME"), "{output}");
    assert_eq!(output.trim().lines().count(), 1, "one line, got:\n{output}");
}

/// Invalid values are reported together, each naming its variable.
#[tokio::test]
async fn every_invalid_variable_is_named_in_one_line() {
    let mut db = ServiceProcess::start(
        BIN,
        &[
            ("DB_NAME", "x"),
            ("PORT", "http"),
            ("CHAOS_FAILURE_RATE", "1.5"),
            ("DB_MAX_INFLIGHT", "0"),
        ],
    )
    .unwrap();

    let status = db.wait_exit(Duration::from_secs(2)).expect("exits");

    assert_eq!(status.code(), Some(1));
    let output = db.output();
    for var in [
        "PORT=\"http\"",
        "CHAOS_FAILURE_RATE=\"1.5\"",
        "DB_MAX_INFLIGHT=\"0\"",
    ] {
        assert!(output.contains(var), "{var} missing from: {output}");
    }
    assert_eq!(output.trim().lines().count(), 1, "{output}");
}

/// SIGTERM while a slow request is in flight: the request completes, then
/// the process exits cleanly.
#[tokio::test]
async fn sigterm_lets_an_in_flight_request_finish() {
    let dir = data_dir("sigterm");
    let (mut db, port) = ServiceProcess::start_healthy(
        BIN,
        &[
            ("DB_NAME", "sigterm"),
            ("DATA_DIR", &dir.to_env()),
            ("CHAOS_LATENCY_MS", "1500"),
        ],
    )
    .await;
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}");
    let order = json!({"id": "o-1", "customer": "guest", "items": [{"item": "laptop", "quantity": 1}], "idempotency_key": "k-1"});
    let in_flight = tokio::spawn({
        let client = client.clone();
        let url = url.clone();
        async move {
            client
                .post(format!("{url}/orders"))
                .json(&order)
                .send()
                .await
        }
    });
    let inflight_seen = wait_until(Duration::from_secs(5), || {
        let client = client.clone();
        let url = url.clone();
        async move {
            (metric(&client, &url, "db_inflight_requests", &[]).await == Some(1.0)).then_some(())
        }
    })
    .await;
    assert!(inflight_seen.is_some(), "the slow request never started");

    db.signal("TERM").unwrap();
    let response = in_flight
        .await
        .unwrap()
        .expect("the in-flight request gets an answer");
    let status = db.wait_exit(Duration::from_secs(5));

    assert_eq!(response.status(), 201);
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "output:\n{}",
        db.output()
    );
    assert!(db.output().contains("SIGTERM received"), "{}", db.output());
}

/// Workshop fault 8: `CHAOS_FAILURE_RATE=0.5` answers about half of the
/// requests with a 500 whose body says the failure was injected, while
/// `/health` stays green (so nothing restarts and the fault hides).
#[tokio::test]
async fn chaos_failure_rate_half_fails_about_half_of_the_requests() {
    let dir = data_dir("chaos");
    let (_db, port) = ServiceProcess::start_healthy(
        BIN,
        &[
            ("DB_NAME", "chaos"),
            ("DATA_DIR", &dir.to_env()),
            ("CHAOS_FAILURE_RATE", "0.5"),
        ],
    )
    .await;
    let client = reqwest::Client::new();

    let mut failed = 0;
    let total = 200;
    for n in 0..total {
        let r = client
            .get(format!("http://127.0.0.1:{port}/orders?limit=1"))
            .send()
            .await
            .unwrap();
        match r.status().as_u16() {
            200 => {}
            500 => {
                let body: serde_json::Value = r.json().await.unwrap();
                assert_eq!(body["error"]["code"], "chaos_injected", "request {n}");
                failed += 1;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    let health = client
        .get(format!("http://127.0.0.1:{port}/health"))
        .send()
        .await
        .unwrap();

    // Binomial(200, 0.5): mean 100, sd ~7; 70..=130 is more than four sd wide.
    assert!((70..=130).contains(&failed), "{failed} of {total} failed");
    assert_eq!(health.status(), 200, "liveness is untouched by chaos");
    let injected = metric(
        &client,
        &format!("http://127.0.0.1:{port}"),
        "chaos_injected_failures_total",
        &[],
    )
    .await;
    assert_eq!(injected, Some(f64::from(failed)));
}

/// A caller that hangs up mid-request must not leave the request counted
/// in `db_inflight_requests`: the gauge is what a trainee reads to see
/// whether database-service is full.
#[tokio::test]
async fn a_request_whose_caller_hangs_up_leaves_the_in_flight_gauge() {
    let dir = data_dir("hangup");
    let (_db, port) = ServiceProcess::start_healthy(
        BIN,
        &[
            ("DB_NAME", "hangup"),
            ("DATA_DIR", &dir.to_env()),
            ("CHAOS_LATENCY_MS", "2000"),
        ],
    )
    .await;
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}");
    let inflight = || metric(&client, &url, "db_inflight_requests", &[]);

    let hung_up = client
        .get(format!("http://127.0.0.1:{port}/orders?limit=1"))
        .timeout(Duration::from_millis(300))
        .send()
        .await;
    let after = wait_until(Duration::from_secs(5), || async {
        inflight().await.filter(|n| *n == 0.0)
    })
    .await;

    assert!(hung_up.is_err(), "the request should have timed out");
    assert_eq!(after, Some(0.0), "the dropped request is still counted");
}
