//! One order, one trace across the broker: the consumer's span in
//! notification-service carries the trace id of the gateway's `traceparent`.

use std::time::Duration;

use cloudmart_testkit::wait_until;

use crate::helpers::{Broker, logs, spawn_app};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consumer_span_continues_the_gateway_trace() {
    let Some(broker) = Broker::start("rabbitmq_trace").await else {
        return;
    };
    let app = spawn_app(&broker, &[]).await;

    let r = app
        .client
        .post(format!("{}/api/orders", app.url))
        .json(&serde_json::json!({"item": "traced-through-rabbitmq", "quantity": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let traceparent = r.headers()["traceparent"].to_str().unwrap().to_owned();
    let trace_id = traceparent.split('-').nth(1).unwrap().to_owned();
    let order: serde_json::Value = r.json().await.unwrap();
    let order_id = order["id"].as_str().unwrap().to_owned();

    let consumed = wait_until(Duration::from_secs(10), || async {
        logs().lines_with(&trace_id).into_iter().find(|l| {
            l["service"] == "notification-service"
                && l["span"] == "order.created process"
                && l["order_id"] == order_id.as_str()
        })
    })
    .await;

    let line = consumed.unwrap_or_else(|| {
        panic!("no notification-service log line of the consumer span in trace {trace_id}")
    });
    assert_eq!(line["trace_id"], trace_id.as_str());
    let published = logs().lines_with(&trace_id).into_iter().any(|l| {
        l["service"] == "order-service"
            && l["message"]
                .as_str()
                .is_some_and(|m| m.contains("published to RabbitMQ"))
    });
    assert!(
        published,
        "order-service logged the publish in the same trace"
    );

    app.stop().await;
    broker.cleanup().await;
}
