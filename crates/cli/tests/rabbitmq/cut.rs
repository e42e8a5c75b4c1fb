//! The broker goes away in the middle of 200 orders: every order is still
//! taken and stored, and once it is back every order is notified exactly once.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use cloudmart_testkit::wait_until;

use crate::helpers::{Broker, spawn_app};

const ORDERS: usize = 200;
const AT_ONCE: usize = 10;
const CUT_AFTER: usize = 50;
const RESTORE_AFTER: usize = 150;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_order_placed_across_a_rabbitmq_cut_is_stored_and_notified_once() {
    let Some(broker) = Broker::start("rabbitmq_cut").await else {
        return;
    };
    let app = spawn_app(&broker, &[]).await;

    // Act: 200 orders, 10 at a time, with the broker cut for the middle 100.
    let mut ids = Vec::with_capacity(ORDERS);
    let mut statuses = Vec::with_capacity(ORDERS);
    let mut restored_at = Instant::now();
    for start in (0..ORDERS).step_by(AT_ONCE) {
        if start == CUT_AFTER {
            broker.proxy.cut();
            app.wait_connected(false).await;
        }
        if start == RESTORE_AFTER {
            broker.proxy.restore();
            restored_at = Instant::now();
        }
        let placed = futures::future::join_all((start..start + AT_ONCE).map(|i| {
            let app = &app;
            async move { app.place_order(&format!("cut-{i}")).await }
        }))
        .await;
        for (status, id) in placed {
            statuses.push(status);
            ids.extend(id);
        }
    }

    // Assert: every order was taken and stored.
    assert!(statuses.iter().all(|s| *s == 201), "{statuses:?}");
    let expected: BTreeSet<String> = ids.iter().cloned().collect();
    assert_eq!(expected.len(), ORDERS);
    let stored: BTreeSet<String> = app.stored().await.into_iter().map(|(id, _)| id).collect();
    assert_eq!(stored, expected, "every order is stored");

    // Assert: after the cut, every order is published and notified once.
    let done = wait_until(Duration::from_secs(30), || async {
        let (sent, _, _) = app.notified().await;
        let all_published = app
            .stored()
            .await
            .iter()
            .all(|(_, state)| state == "published");
        (sent as usize == ORDERS && all_published).then_some(())
    })
    .await;
    let caught_up_ms = restored_at.elapsed().as_millis();
    let (sent, duplicates, recent) = app.notified().await;
    assert!(
        done.is_some(),
        "not every order was notified and published within 30 s: sent {sent}"
    );
    let notified: BTreeSet<String> = recent.iter().cloned().collect();
    assert_eq!(recent.len(), ORDERS, "one notification per order");
    assert_eq!(
        notified, expected,
        "the notified orders are the placed ones"
    );

    let failed = app
        .metric(
            "order-service",
            "amqp_publish_failures_total{reason=\"not_connected\"}",
        )
        .await;
    let relayed = app
        .metric("order-service", "relay_notifications_announced_total")
        .await;
    let published = app
        .metric("order-service", "amqp_messages_published_total")
        .await;
    assert!(
        failed >= 1.0,
        "some orders were placed while the broker was away"
    );
    assert!(
        relayed >= failed,
        "the relay published what the request path could not"
    );
    eprintln!(
        "rabbitmq cut: {ORDERS} orders placed, {} answered 201, {} stored; {failed} publishes \
         failed during the cut, {relayed} relayed afterwards, {published} confirmed in all; \
         {sent} notified, {duplicates} duplicate deliveries skipped; all notified {caught_up_ms} ms \
         after the restore",
        statuses.iter().filter(|s| **s == 201).count(),
        stored.len(),
    );

    app.stop().await;
    broker.cleanup().await;
}
