//! SIGKILL between the notification and its ack: RabbitMQ redelivers the
//! message to the restarted process, which must skip it because Redis
//! remembers the order. The proxy in front of RabbitMQ holds the process's
//! outgoing bytes, so the ack is certain not to have arrived when it dies.

use std::time::Duration;

use cloudmart_amqp::AmqpConfig;
use cloudmart_testkit::proxy::TcpProxy;
use cloudmart_testkit::servers::{address, authority, require};
use cloudmart_testkit::{ServiceProcess, wait_until};
use lapin::BasicProperties;
use lapin::options::{
    BasicPublishOptions, ExchangeDeleteOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_notification-service");

/// How many times the process output says it notified `order`.
fn notified(output: &str, order: &str) -> usize {
    output
        .lines()
        .filter(|l| l.contains(&format!("about order {order}")) && l.contains("notified"))
        .count()
}

/// Messages ready in `queue` (not counting those handed to a consumer).
async fn ready_messages(channel: &lapin::Channel, queue: &str) -> Option<u32> {
    let q = channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .ok()?;
    Some(q.message_count())
}

async fn notifications(port: u16) -> Value {
    reqwest::get(format!("http://127.0.0.1:{port}/notifications"))
        .await
        .expect("notification-service answers")
        .json()
        .await
        .expect("a JSON body")
}

#[tokio::test]
async fn a_message_redelivered_after_sigkill_is_not_notified_again() {
    let test = "a_message_redelivered_after_sigkill_is_not_notified_again";
    let (Some(amqp_url), Some(redis_url)) = (
        require("AMQP_URL", test, "rabbitmq-server -detached"),
        require(
            "REDIS_URL",
            test,
            "redis-server --daemonize yes --port 6379 --save '' --appendonly no",
        ),
    ) else {
        return;
    };
    // Arrange: names of our own, RabbitMQ behind a proxy that can hold acks.
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let (exchange, queue) = (
        format!("test.restart.{tag}.x"),
        format!("test.restart.{tag}.q"),
    );
    let proxy = TcpProxy::start(address(&amqp_url).expect("AMQP_URL resolves"))
        .await
        .unwrap();
    let proxied = amqp_url.replacen(
        &authority(&amqp_url).expect("AMQP_URL has a host"),
        &proxy.host_port(),
        1,
    );
    let env = [
        ("AMQP_URL", proxied.as_str()),
        ("AMQP_EXCHANGE", exchange.as_str()),
        ("AMQP_QUEUE", queue.as_str()),
        ("REDIS_URL", redis_url.as_str()),
        ("LOG_FORMAT", "json"),
    ];
    let (mut first, port) = ServiceProcess::start_healthy(BIN, &env).await;
    let ready = wait_until(Duration::from_secs(10), || async {
        let r = reqwest::get(format!("http://127.0.0.1:{port}/ready"))
            .await
            .ok()?;
        (r.status() == 200).then_some(())
    })
    .await;
    assert!(ready.is_some(), "not consuming:\n{}", first.output());
    let config = AmqpConfig::new(&amqp_url, &exchange, &queue).unwrap();
    let connection = cloudmart_amqp::connect(&config, "restart-test")
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let order = uuid::Uuid::now_v7().to_string();
    let body = json!({"order_id": order, "customer": "alice", "items": [{"item": "laptop", "quantity": 1}]});

    // Act: the process gets the message and notifies, but its ack is held
    // back; then it dies, and the broker loses the connection.
    proxy.hold();
    channel
        .basic_publish(
            exchange.as_str().into(),
            cloudmart_amqp::ROUTING_KEY.into(),
            BasicPublishOptions::default(),
            body.to_string().as_bytes(),
            BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    let told = wait_until(Duration::from_secs(10), || async {
        (notified(&first.output(), &order) == 1).then_some(())
    })
    .await;
    assert!(told.is_some(), "never notified:\n{}", first.output());
    first.signal("KILL").unwrap();
    first
        .wait_exit(Duration::from_secs(5))
        .expect("SIGKILL ends it");
    proxy.cut();
    // The broker takes the message back once it sees the connection gone;
    // only then may held bytes flow again (to nobody: the connection is closed).
    let requeued = wait_until(Duration::from_secs(10), || async {
        (ready_messages(&channel, &queue).await? == 1).then_some(())
    })
    .await;
    assert!(
        requeued.is_some(),
        "RabbitMQ did not take the unacked message back"
    );
    proxy.restore();
    proxy.release();
    let (mut second, port) = ServiceProcess::start_healthy(BIN, &env).await;

    // Assert: the redelivery is skipped, and acked this time.
    let skipped = wait_until(Duration::from_secs(15), || async {
        let list = notifications(port).await;
        (list["duplicates"] == 1).then_some(list)
    })
    .await;
    let list = skipped.unwrap_or_else(|| panic!("no redelivery skipped:\n{}", second.output()));
    assert_eq!(list["sent"], 0, "{list}");
    let total = notified(&first.output(), &order) + notified(&second.output(), &order);
    assert_eq!(total, 1, "notified {total} times:\n{}", second.output());
    // Acked, not just handed over: once the process is gone, nothing returns.
    second.signal("TERM").unwrap();
    second
        .wait_exit(Duration::from_secs(10))
        .expect("SIGTERM ends it");
    assert_eq!(
        ready_messages(&channel, &queue).await,
        Some(0),
        "the redelivered message was not acked"
    );

    for q in [queue.clone(), format!("{queue}.dead")] {
        let _ = channel
            .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
    for x in [exchange.clone(), format!("{exchange}.dlx")] {
        let _ = channel
            .exchange_delete(x.as_str().into(), ExchangeDeleteOptions::default())
            .await;
    }
}
