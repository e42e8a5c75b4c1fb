//! One order, one trace: the trace id in the gateway's `traceparent` header
//! shows up in the log lines of every service the order passed through.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::json;

use cloudmart_testkit::wait_until;

use crate::helpers::{logs, spawn_app};

#[tokio::test]
async fn the_response_trace_id_is_in_the_logs_of_every_hop() {
    let app = spawn_app().await;

    let r = app
        .post_order(&json!({"item": "traced-laptop", "quantity": 1}))
        .await;
    assert_eq!(r.status(), 201);
    let traceparent = r.headers()["traceparent"].to_str().unwrap().to_owned();
    let trace_id = traceparent.split('-').nth(1).unwrap().to_owned();
    assert_eq!(trace_id.len(), 32);

    let expected: BTreeSet<&str> = cloudmart_cli::stack::SERVICE_NAMES.into();
    let seen = wait_until(Duration::from_secs(5), || async {
        let services: BTreeSet<String> = logs()
            .lines()
            .iter()
            .filter(|l| l["trace_id"] == trace_id.as_str())
            .filter_map(|l| l["service"].as_str().map(str::to_owned))
            .collect();
        expected
            .iter()
            .all(|s| services.contains(*s))
            .then_some(services)
    })
    .await;

    let seen = seen.unwrap_or_else(|| panic!("trace {trace_id} did not reach every hop's logs"));
    assert!(seen.len() >= 6, "{seen:?}");
    let hop_lines = logs()
        .lines()
        .into_iter()
        .filter(|l| l["trace_id"] == trace_id.as_str())
        .collect::<Vec<_>>();
    assert!(
        hop_lines
            .iter()
            .all(|l| l["span_id"].as_str().is_some_and(|s| s.len() == 16))
    );
    app.stop().await;
}
