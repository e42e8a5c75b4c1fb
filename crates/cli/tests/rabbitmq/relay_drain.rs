//! How fast the relay drains a backlog: 1,000 orders stored while the broker
//! is away are all published once it is back.

use std::time::{Duration, Instant};

use cloudmart_model::{NewOrder, OrderItem};
use cloudmart_testkit::wait_until;
use futures::StreamExt;

use crate::helpers::{Broker, spawn_app};

const PENDING: usize = 1000;
const MIN_AGE: Duration = Duration::from_millis(500);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_drains_a_thousand_pending_notifications() {
    let Some(broker) = Broker::start("rabbitmq_relay_drain").await else {
        return;
    };
    let app = spawn_app(&broker, &[("RELAY_MIN_AGE_MS", "500")]).await;
    let database = app.service("database-service");

    // Arrange: the broker is away while 1,000 orders are stored as pending.
    broker.proxy.cut();
    app.wait_connected(false).await;
    let created: Vec<u16> = futures::stream::iter(0..PENDING)
        .map(|i| {
            let client = app.client.clone();
            let url = format!("{database}/orders");
            async move {
                let order = NewOrder {
                    id: format!("drain-{i:04}-{}", std::process::id()),
                    customer: "guest".to_owned(),
                    items: vec![OrderItem {
                        item: "laptop".to_owned(),
                        quantity: 1,
                    }],
                    idempotency_key: format!("drain-{i}-{}", std::process::id()),
                };
                let r = client.post(url).json(&order).send().await.unwrap();
                r.status().as_u16()
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    assert!(created.iter().all(|s| *s == 201), "every order is stored");
    // The relay leaves orders younger than RELAY_MIN_AGE_MS to the request
    // path; let the last one come of age so only the relay is measured.
    tokio::time::sleep(MIN_AGE).await;
    let pending = app
        .get_json(&format!("{database}/notifications/pending?limit=1000"))
        .await;
    assert_eq!(pending.as_array().map(Vec::len), Some(PENDING));

    // Act: the broker comes back.
    let restored = Instant::now();
    broker.proxy.restore();
    // The relay publishes as soon as order-service has its channel back.
    app.wait_service_connected("order-service", true).await;
    let reconnected = Instant::now();
    let drained = wait_until(Duration::from_secs(60), || async {
        let left = app
            .get_json(&format!("{database}/notifications/pending?limit=1"))
            .await;
        left.as_array().is_some_and(Vec::is_empty).then_some(())
    })
    .await;
    let drain_ms = reconnected.elapsed().as_millis();

    // Assert
    assert!(drained.is_some(), "the relay did not drain within 60 s");
    eprintln!("relay drained 1000 pending notifications in {drain_ms} ms");
    eprintln!(
        "(order-service reconnected {} ms after the restore; RELAY_INTERVAL_MS=100, RELAY_BATCH=200)",
        (reconnected - restored).as_millis()
    );
    let notified = wait_until(Duration::from_secs(30), || async {
        let (sent, _, _) = app.notified().await;
        (sent as usize == PENDING).then_some(())
    })
    .await;
    assert!(
        notified.is_some(),
        "every relayed order reached notification-service"
    );
    // The relay counts a batch once its last mark has landed, a moment
    // after the pending list is empty: wait for the count, don't sample it.
    let counted = wait_until(Duration::from_secs(10), || async {
        let n = app
            .metric("order-service", "relay_notifications_announced_total")
            .await;
        (n >= PENDING as f64).then_some(n)
    })
    .await;
    assert_eq!(
        counted,
        Some(PENDING as f64),
        "relay_notifications_announced_total"
    );

    app.stop().await;
    broker.cleanup().await;
}
