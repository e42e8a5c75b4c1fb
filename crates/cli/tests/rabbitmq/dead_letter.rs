//! A message that keeps failing ends in the dead-letter queue after
//! `NOTIFY_MAX_ATTEMPTS` attempts; the messages around it are not held up.

use std::collections::BTreeSet;
use std::time::Duration;

use cloudmart_testkit::wait_until;
use lapin::options::{BasicGetOptions, BasicPublishOptions};

use crate::helpers::{Broker, spawn_app};

const GOOD: usize = 20;
const MAX_ATTEMPTS: u32 = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_message_is_dead_lettered_and_the_others_are_delivered_once() {
    let Some(broker) = Broker::start("rabbitmq_dead_letter").await else {
        return;
    };
    let max = MAX_ATTEMPTS.to_string();
    let app = spawn_app(&broker, &[("NOTIFY_MAX_ATTEMPTS", &max)]).await;
    let (connection, channel) = broker.channel().await;

    // Act: one unreadable message among twenty good ones.
    let mut good = BTreeSet::new();
    for i in 0..=GOOD {
        let (id, body) = if i == GOOD / 2 {
            ("poison".to_owned(), b"{not json".to_vec())
        } else {
            let id = format!("dlq-good-{i}");
            let body = serde_json::json!({
                "order_id": id,
                "customer": "guest",
                "items": [{"item": "laptop", "quantity": 1}],
            });
            good.insert(id.clone());
            (id, serde_json::to_vec(&body).unwrap())
        };
        let headers = cloudmart_amqp::trace_headers(&tracing::Span::none());
        let confirm = channel
            .basic_publish(
                broker.direct.exchange.as_str().into(),
                cloudmart_amqp::ROUTING_KEY.into(),
                BasicPublishOptions::default(),
                &body,
                cloudmart_amqp::message_properties(&id, headers),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        assert!(confirm.is_ack());
    }

    // Assert: the poison lands in the dead-letter queue, alone.
    let dlq = broker.direct.dead_letter_queue();
    let settled = wait_until(Duration::from_secs(20), || async {
        let dead = broker.depth(&channel, &dlq).await;
        let ready = broker.depth(&channel, &broker.direct.queue).await;
        let (sent, _, _) = app.notified().await;
        (dead == 1 && ready == 0 && sent as usize == GOOD).then_some(())
    })
    .await;
    let (sent, duplicates, recent) = app.notified().await;
    assert!(
        settled.is_some(),
        "expected 1 dead-lettered and {GOOD} delivered; delivered {sent}"
    );
    let gauge = wait_until(Duration::from_secs(10), || async {
        let depth = app
            .metric(
                "notification-service",
                "notification_dead_letter_queue_depth",
            )
            .await;
        (depth == 1.0).then_some(())
    })
    .await;
    assert!(
        gauge.is_some(),
        "the dead-letter depth gauge shows the message"
    );
    let dead = channel
        .basic_get(dlq.as_str().into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .expect("the dead-letter queue holds a message");
    let props = &dead.delivery.properties;
    assert_eq!(dead.delivery.data, b"{not json");
    assert_eq!(
        props.message_id().as_ref().map(|m| m.as_str()),
        Some("poison")
    );
    // x-attempts counts the failures before the last one: the last attempt
    // rejected the message instead of queueing another copy.
    assert_eq!(
        cloudmart_amqp::attempts(props.headers().as_ref()) + 1,
        MAX_ATTEMPTS
    );
    assert!(
        props
            .headers()
            .as_ref()
            .is_some_and(|h| h.contains_key("x-death")),
        "RabbitMQ recorded the dead-lettering"
    );

    // Assert: the good ones were delivered exactly once each.
    assert_eq!(recent.iter().cloned().collect::<BTreeSet<_>>(), good);
    assert_eq!(recent.len(), GOOD);
    assert_eq!(duplicates, 0);
    let metric = |name: &'static str| app.metric("notification-service", name);
    assert_eq!(metric("notifications_dead_lettered_total").await, 1.0);
    assert_eq!(
        metric("notifications_failed_total{reason=\"invalid_payload\"}").await,
        f64::from(MAX_ATTEMPTS)
    );
    assert_eq!(
        metric("notifications_consumed_total").await,
        (GOOD as f64) + f64::from(MAX_ATTEMPTS)
    );

    cloudmart_amqp::close(&connection, "test done").await;
    app.stop().await;
    broker.cleanup().await;
}
