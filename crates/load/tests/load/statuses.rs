//! The status table counts every answer by its code.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::http::StatusCode;

use crate::helpers::{Reply, run_with_deadline, show, spawn_server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fourth_request_failing_is_a_quarter_of_the_status_table() {
    // Arrange: request n fails with 500 when n % 4 == 3.
    let server = spawn_server(|n| Reply {
        delay: Duration::ZERO,
        status: if n % 4 == 3 {
            StatusCode::INTERNAL_SERVER_ERROR
        } else {
            StatusCode::CREATED
        },
    })
    .await;
    let config = server.config(200.0, Duration::from_secs(1));

    // Act
    let report = run_with_deadline(&config).await;
    show("statuses", &report);

    // Assert
    let expected: BTreeMap<String, u64> = [("201".to_owned(), 150), ("500".to_owned(), 50)].into();
    assert_eq!(report.statuses, expected);
    assert_eq!(report.latency_ms.count, 200);
    assert!((report.success_ratio() - 0.75).abs() < 1e-9);
    let text = report.render_text();
    assert!(
        text.lines()
            .any(|l| l.starts_with("500 ") && l.contains(" 50 ")),
        "{text}"
    );
}
