//! What happens at the edges: timeouts, a saturated client, a server that
//! is not there, an early stop and a bad config. None of them loses a
//! scheduled request.

use std::time::Duration;

use cloudmart_load::{LoadConfig, LoadError};

use crate::helpers::{Reply, closed_port_url, run_with_deadline, show, spawn_server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_past_its_timeout_is_a_timeout_at_exactly_the_timeout() {
    // Arrange: the server takes 5 s; the client gives up after 200 ms.
    let server = spawn_server(|_| Reply::created_after(5_000)).await;
    let config = LoadConfig {
        timeout: Duration::from_millis(200),
        ..server.config(50.0, Duration::from_millis(400))
    };

    // Act
    let report = run_with_deadline(&config).await;
    show("timeouts", &report);

    // Assert: 20 timeouts, each recorded at 200 ms (to the histogram's 0.1%).
    assert_eq!(report.statuses.get("timeout"), Some(&20));
    assert_eq!(report.statuses.len(), 1);
    let l = report.latency_ms;
    assert_eq!(l.count, 20);
    assert!(l.p50 >= 200.0 && l.max <= 200.2, "{l:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saturated_client_counts_every_dropped_request_at_the_timeout() {
    // Arrange: 5 in flight at most, each taking 300 ms, 10 due every 100 ms.
    let server = spawn_server(|_| Reply::created_after(300)).await;
    let config = LoadConfig {
        max_inflight: 5,
        timeout: Duration::from_secs(1),
        ..server.config(100.0, Duration::from_millis(500))
    };

    // Act
    let report = run_with_deadline(&config).await;
    show("saturated", &report);

    // Assert: about 10 sent and 40 dropped; none of the 50 missing.
    assert_eq!(report.scheduled, 50);
    assert_eq!(report.latency_ms.count, 50);
    assert_eq!(report.sent + report.dropped, 50);
    assert!(report.dropped >= 30, "dropped {}", report.dropped);
    assert_eq!(report.statuses.get("dropped"), Some(&report.dropped));
    assert_eq!(report.statuses.get("201"), Some(&report.sent));
    // Most samples are drops, recorded at the 1 s timeout.
    assert!(report.latency_ms.p50 >= 1_000.0, "{:?}", report.latency_ms);
    assert!(report.render_text().contains("client saturated"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_is_not_there_is_a_connect_error_per_request() {
    // Arrange
    let config = LoadConfig {
        rate_per_sec: 20.0,
        duration: Duration::from_millis(250),
        ..LoadConfig::new(closed_port_url())
    };

    // Act
    let report = run_with_deadline(&config).await;
    show("refused", &report);

    // Assert
    assert_eq!(report.statuses.get("connect_error"), Some(&5));
    assert_eq!(report.latency_ms.count, 5);
    assert_eq!(report.success_ratio(), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_early_stop_reports_on_what_was_scheduled_until_then() {
    // Arrange: a 60 s run, stopped after 500 ms.
    let server = spawn_server(|_| Reply::created_after(0)).await;
    let config = server.config(100.0, Duration::from_secs(60));
    let stop = tokio::time::sleep(Duration::from_millis(500));

    // Act
    let report = tokio::time::timeout(
        Duration::from_secs(5),
        cloudmart_load::run_until(&config, stop),
    )
    .await
    .expect("the stop ends the run")
    .expect("the config is valid");

    // Assert: about 50 scheduled, every one a sample.
    assert!(
        (40..=60).contains(&report.scheduled),
        "scheduled {}",
        report.scheduled
    );
    assert_eq!(report.latency_ms.count, report.scheduled);
    assert_eq!(report.statuses.get("201"), Some(&report.scheduled));
}

#[tokio::test]
async fn a_bad_config_is_an_error_before_any_request() {
    let config = LoadConfig {
        rate_per_sec: -1.0,
        ..LoadConfig::new("http://127.0.0.1:9")
    };
    let err = cloudmart_load::run(&config).await.unwrap_err();
    assert!(matches!(err, LoadError::InvalidRate(_)), "{err}");
}
