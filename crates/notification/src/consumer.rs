//! Consuming `order.created` from RabbitMQ.
//!
//! One connection, one channel with `basic_qos(NOTIFY_PREFETCH)` and manual
//! acks, kept by [`Consumer::run`], a loop that reconnects with the common
//! backoff because lapin does not. Up to `NOTIFY_PREFETCH` messages are
//! processed at once. Each one gets a consumer span whose parent is the
//! publisher's span (from `traceparent` in the headers), so one trace runs
//! from the gateway to the notification.
//!
//! Processing is idempotent: [`DeliveryLog::deliver`] notifies once per order
//! id (across restarts when Redis is configured), so a redelivered message
//! (after a lost ack, a crash, a relay re-publish) is acked without
//! notifying twice. A message that fails (unreadable JSON, an
//! invalid order, or a failure injected with `CHAOS_FAILURE_RATE`) is
//! re-published to the back of the queue with `x-attempts` raised and the
//! original is acked; on its `NOTIFY_MAX_ATTEMPTS`th failure it is rejected
//! instead, and RabbitMQ moves it to the dead-letter queue (with its
//! `x-death` header). Retries are not delayed: a poison message reaches the
//! dead-letter queue quickly and the queue keeps moving.

use std::sync::Arc;
use std::time::Duration;

use cloudmart_amqp::{AmqpConfig, LinkState, ReasonLabels};
use cloudmart_http::chaos::ChaosConfig;
use cloudmart_http::metrics::MetricsBuilder;
use cloudmart_model::{OrderCreated, validate_items};
use futures::TryStreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions,
    BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Confirmation, Connection};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::watch;
use tracing::Instrument;

use crate::{Delivery as Outcome, DeliveryLog, NAME};

/// How often the queue depth gauges are refreshed.
const DEPTH_INTERVAL: Duration = Duration::from_secs(2);
/// Longest wait for the broker to confirm a retry copy.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(5);
/// How long messages in hand may take to finish when the service stops.
const STOP_DRAIN: Duration = Duration::from_secs(3);

/// How messages are processed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    /// Unacked messages the broker may hand over, and the processing concurrency.
    pub(crate) prefetch: u16,
    /// Attempts before a message is dead-lettered.
    pub(crate) max_attempts: u32,
    /// Extra time per message (the backlog scenario).
    pub(crate) delay: Duration,
    /// Fault injection, applied to messages as to HTTP requests.
    pub(crate) chaos: ChaosConfig,
}

/// The consumer's metrics.
#[derive(Clone)]
struct Metrics {
    consumed: Counter,
    failed: Family<ReasonLabels, Counter>,
    dead_lettered: Counter,
    depth: Gauge,
    dead_depth: Gauge,
}

/// Why processing one message failed.
#[derive(Debug)]
enum Failure {
    /// The body is not an `order.created` message.
    InvalidPayload(String),
    /// The body parsed but the order is not acceptable.
    InvalidOrder(String),
    /// `CHAOS_FAILURE_RATE` said so.
    Chaos,
}

impl Failure {
    fn reason(&self) -> &'static str {
        match self {
            Self::InvalidPayload(_) => "invalid_payload",
            Self::InvalidOrder(_) => "invalid_order",
            Self::Chaos => "chaos_injected",
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::InvalidPayload(e) => write!(f, "the body is not an order.created message: {e}"),
            Self::InvalidOrder(e) => write!(f, "the order is invalid: {e}"),
            Self::Chaos => f.write_str("this failure was injected by CHAOS_FAILURE_RATE"),
        }
    }
}

/// The RabbitMQ side of notification-service.
pub(crate) struct Consumer {
    config: AmqpConfig,
    settings: Settings,
    delivery_log: Arc<DeliveryLog>,
    link: LinkState,
    metrics: Metrics,
}

/// How a consuming session ended.
enum Ended {
    Stopped,
    Lost(String),
}

impl Consumer {
    /// A consumer of `config`'s queue; registers its metrics.
    pub(crate) fn new(
        config: AmqpConfig,
        settings: Settings,
        delivery_log: Arc<DeliveryLog>,
        builder: &mut MetricsBuilder,
    ) -> Arc<Self> {
        let link = LinkState::new(&config, builder.registry());
        let metrics = Metrics {
            consumed: Counter::default(),
            failed: Family::default(),
            dead_lettered: Counter::default(),
            depth: Gauge::default(),
            dead_depth: Gauge::default(),
        };
        let r = builder.registry();
        r.register(
            "notifications_consumed",
            "Messages taken from the queue, every attempt counted",
            metrics.consumed.clone(),
        );
        r.register(
            "notifications_failed",
            "Message processing attempts that failed, by reason",
            metrics.failed.clone(),
        );
        // Every reason at 0 from the start, so rate() sees the first failure.
        for reason in ["invalid_payload", "invalid_order", "chaos_injected"] {
            let _ = metrics.failed.get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            });
        }
        r.register(
            "notifications_dead_lettered",
            "Messages rejected to the dead-letter queue after NOTIFY_MAX_ATTEMPTS failures",
            metrics.dead_lettered.clone(),
        );
        r.register(
            "notification_queue_depth",
            "Messages ready in the queue (refreshed every 2 s)",
            metrics.depth.clone(),
        );
        r.register(
            "notification_dead_letter_queue_depth",
            "Messages in the dead-letter queue (refreshed every 2 s)",
            metrics.dead_depth.clone(),
        );
        Arc::new(Self {
            config,
            settings,
            delivery_log,
            link,
            metrics,
        })
    }

    /// The connection state, for `/ready`.
    pub(crate) fn link(&self) -> LinkState {
        self.link.clone()
    }

    /// Consumes until `stop` fires, reconnecting (with backoff, logging each
    /// attempt) whenever the connection is lost.
    pub(crate) async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let backoff = cloudmart_amqp::reconnect_backoff();
        loop {
            let this = self.clone();
            let session =
                cloudmart_amqp::connect_with_retry(&backoff, &self.link, &mut stop, || {
                    let this = this.clone();
                    async move {
                        let connection = cloudmart_amqp::connect(&this.config, NAME).await?;
                        match this.open(&connection).await {
                            Ok((channel, consumer)) => Ok((connection, channel, consumer)),
                            Err(e) => {
                                cloudmart_amqp::close(&connection, "setup failed").await;
                                Err(cloudmart_amqp::describe(&e))
                            }
                        }
                    }
                })
                .await;
            let Some((connection, channel, consumer)) = session else {
                return;
            };
            tracing::info!(
                queue = %self.config.queue,
                prefetch = self.settings.prefetch,
                "consuming {} with prefetch {}",
                self.config.queue,
                self.settings.prefetch
            );
            let depth_channel = connection.create_channel().await.ok();
            let depth = tokio::spawn(
                self.clone()
                    .watch_depth(depth_channel)
                    .instrument(tracing::Span::current()),
            );
            let ended = self
                .clone()
                .consume(&connection, &channel, consumer, &mut stop)
                .await;
            depth.abort();
            match ended {
                Ended::Stopped => {
                    self.link.set_down("notification-service is stopping");
                    cloudmart_amqp::close(&connection, "notification-service is stopping").await;
                    tracing::info!("closed the RabbitMQ connection");
                    return;
                }
                Ended::Lost(why) => {
                    self.link.set_down(why.clone());
                    tracing::warn!(error = %why, "lost the RabbitMQ connection: {why}; reconnecting");
                    cloudmart_amqp::close(&connection, "reconnecting").await;
                }
            }
        }
    }

    /// A channel with the topology declared, confirms on (for retry copies),
    /// the prefetch set, and a consumer on the queue.
    async fn open(&self, connection: &Connection) -> lapin::Result<(Channel, lapin::Consumer)> {
        let channel = connection.create_channel().await?;
        cloudmart_amqp::declare_topology(&channel, &self.config).await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        channel
            .basic_qos(self.settings.prefetch, BasicQosOptions::default())
            .await?;
        let consumer = channel
            .basic_consume(
                self.config.queue.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok((channel, consumer))
    }

    /// Processes deliveries until the connection is lost or `stop` fires;
    /// on stop, cancels the consumer and lets messages in hand finish.
    async fn consume(
        self: Arc<Self>,
        connection: &Connection,
        channel: &Channel,
        consumer: lapin::Consumer,
        stop: &mut watch::Receiver<bool>,
    ) -> Ended {
        let tag = consumer.tag();
        let concurrency = usize::from(self.settings.prefetch);
        let work = consumer.try_for_each_concurrent(concurrency, |delivery| {
            let this = self.clone();
            let channel = channel.clone();
            async move {
                this.handle(&channel, delivery).await;
                Ok(())
            }
        });
        tokio::pin!(work);
        let channels = [channel];
        tokio::select! {
            result = &mut work => Ended::Lost(match result {
                Ok(()) => "RabbitMQ cancelled the consumer".to_owned(),
                Err(e) => cloudmart_amqp::describe(&e),
            }),
            lost = cloudmart_amqp::until_lost(connection, &channels, stop) => match lost {
                Some(why) => Ended::Lost(why),
                None => {
                    let _ = channel.basic_cancel(tag, BasicCancelOptions::default()).await;
                    if tokio::time::timeout(STOP_DRAIN, &mut work).await.is_err() {
                        tracing::warn!("messages in hand did not finish in time; RabbitMQ will redeliver them");
                    }
                    Ended::Stopped
                }
            },
        }
    }

    /// Processes one delivery inside its consumer span, then acks, retries
    /// or dead-letters it.
    async fn handle(&self, channel: &Channel, delivery: Delivery) {
        self.metrics.consumed.inc();
        let headers = delivery.properties.headers().as_ref();
        let attempt = cloudmart_amqp::attempts(headers).saturating_add(1);
        let message_id = delivery
            .properties
            .message_id()
            .as_ref()
            .map(|m| m.as_str().to_owned())
            .unwrap_or_default();
        // OpenTelemetry messaging semantic conventions: "process {queue}",
        // a consumer span whose parent is the publish span in the headers.
        let span = tracing::info_span!(
            parent: None,
            "order.created process",
            service = NAME,
            otel.name = %format!("process {}", self.config.queue),
            otel.kind = "consumer",
            otel.status_code = tracing::field::Empty,
            error.type = tracing::field::Empty,
            messaging.system = "rabbitmq",
            messaging.operation.type = "process",
            messaging.operation.name = "process",
            messaging.destination.name = %self.config.exchange,
            messaging.destination.subscription.name = %self.config.queue,
            messaging.rabbitmq.destination.routing_key = delivery.routing_key.as_str(),
            messaging.message.id = %message_id,
            messaging.message.body.size = i64::try_from(delivery.data.len()).unwrap_or(i64::MAX),
            messaging.rabbitmq.message.delivery_tag = i64::try_from(delivery.delivery_tag).unwrap_or(i64::MAX),
            messaging.message.redelivered = delivery.redelivered,
            attempt = i64::from(attempt),
            chaos.injected = tracing::field::Empty,
            order_id = tracing::field::Empty,
        );
        cloudmart_amqp::set_remote_parent(&span, headers, NAME);
        async {
            match self.process(&delivery).await {
                Ok(()) => {
                    if let Err(e) = delivery.ack(BasicAckOptions::default()).await {
                        tracing::warn!(error = %cloudmart_amqp::describe(&e), "ack failed; RabbitMQ will redeliver message {message_id}: {}", cloudmart_amqp::describe(&e));
                    }
                }
                Err(failure) => {
                    let current = tracing::Span::current();
                    current.record("otel.status_code", "ERROR");
                    current.record("error.type", failure.reason());
                    if matches!(failure, Failure::Chaos) {
                        current.record("chaos.injected", true);
                    }
                    self.metrics
                        .failed
                        .get_or_create(&ReasonLabels {
                            reason: failure.reason().to_owned(),
                        })
                        .inc();
                    self.retry_or_dead_letter(channel, &delivery, &message_id, attempt, &failure)
                        .await;
                }
            }
        }
        .instrument(span)
        .await;
    }

    /// The work itself: delay, chaos, parse, validate, deliver once.
    async fn process(&self, delivery: &Delivery) -> Result<(), Failure> {
        if !self.settings.delay.is_zero() {
            tokio::time::sleep(self.settings.delay).await;
        }
        let chaos = self.settings.chaos;
        if !chaos.latency.is_zero() {
            tokio::time::sleep(chaos.latency).await;
        }
        if chaos.failure_rate > 0.0 && fastrand::f64() < chaos.failure_rate {
            return Err(Failure::Chaos);
        }
        let req: OrderCreated = serde_json::from_slice(&delivery.data)
            .map_err(|e| Failure::InvalidPayload(e.to_string()))?;
        tracing::Span::current().record("order_id", req.order_id.as_str());
        if req.order_id.trim().is_empty() {
            return Err(Failure::InvalidOrder("order_id is empty".to_owned()));
        }
        validate_items(&req.items).map_err(Failure::InvalidOrder)?;
        match self.delivery_log.deliver(&req).await {
            Outcome::Sent => {
                tracing::info!(order_id = %req.order_id, customer = %req.customer, "notified {} about order {}", req.customer, req.order_id);
            }
            Outcome::Duplicate => {
                tracing::info!(order_id = %req.order_id, "order {} was already notified; acking the repeated message", req.order_id);
            }
        }
        Ok(())
    }

    /// After a failure: a copy with `x-attempts` raised goes to the back of
    /// the queue and the original is acked, or, on the last attempt, the
    /// original is rejected so RabbitMQ dead-letters it.
    async fn retry_or_dead_letter(
        &self,
        channel: &Channel,
        delivery: &Delivery,
        message_id: &str,
        attempt: u32,
        failure: &Failure,
    ) {
        let max = self.settings.max_attempts;
        if is_last_attempt(attempt, max) {
            let dlq = self.config.dead_letter_queue();
            tracing::error!(
                attempt,
                max_attempts = max,
                error = %failure,
                "message {message_id} failed (attempt {attempt} of {max}): {failure}; rejecting it to the dead-letter queue {dlq}"
            );
            let reject = BasicNackOptions {
                requeue: false,
                ..BasicNackOptions::default()
            };
            match delivery.nack(reject).await {
                Ok(_) => {
                    self.metrics.dead_lettered.inc();
                }
                Err(e) => {
                    tracing::warn!(error = %cloudmart_amqp::describe(&e), "rejecting message {message_id} failed; RabbitMQ will redeliver it: {}", cloudmart_amqp::describe(&e));
                }
            }
            return;
        }
        let mut headers = delivery.properties.headers().clone().unwrap_or_default();
        cloudmart_amqp::set_attempts(&mut headers, attempt);
        let properties = delivery.properties.clone().with_headers(headers);
        // Straight to our queue through the default exchange, so a retry
        // never reaches other queues bound to the exchange.
        let copied = match channel
            .basic_publish(
                "".into(),
                self.config.queue.as_str().into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                &delivery.data,
                properties,
            )
            .await
        {
            Ok(confirm) => match tokio::time::timeout(CONFIRM_TIMEOUT, confirm).await {
                Ok(Ok(Confirmation::Ack(None) | Confirmation::NotRequested)) => Ok(()),
                Ok(Ok(_)) => Err("RabbitMQ refused the copy".to_owned()),
                Ok(Err(e)) => Err(cloudmart_amqp::describe(&e)),
                Err(_) => Err("RabbitMQ did not confirm the copy in time".to_owned()),
            },
            Err(e) => Err(cloudmart_amqp::describe(&e)),
        };
        match copied {
            Ok(()) => {
                tracing::warn!(
                    attempt,
                    max_attempts = max,
                    error = %failure,
                    "message {message_id} failed (attempt {attempt} of {max}): {failure}; queued again"
                );
                if let Err(e) = delivery.ack(BasicAckOptions::default()).await {
                    tracing::warn!(error = %cloudmart_amqp::describe(&e), "ack of message {message_id} failed after queueing its retry: {}", cloudmart_amqp::describe(&e));
                }
            }
            Err(why) => {
                tracing::warn!(
                    attempt,
                    error = %failure,
                    "message {message_id} failed (attempt {attempt} of {max}): {failure}; could not queue a retry ({why}), returning it to the queue"
                );
                let requeue = BasicNackOptions {
                    requeue: true,
                    ..BasicNackOptions::default()
                };
                let _ = delivery.nack(requeue).await;
            }
        }
    }

    /// Refreshes the depth gauges until the connection goes (the task is
    /// aborted then). Uses its own channel: a passive declare of a queue
    /// someone deleted closes the channel it ran on.
    async fn watch_depth(self: Arc<Self>, channel: Option<Channel>) {
        let Some(channel) = channel else {
            return;
        };
        let dlq = self.config.dead_letter_queue();
        loop {
            let depths = async {
                let ready = cloudmart_amqp::queue_depth(&channel, &self.config.queue).await?;
                let dead = cloudmart_amqp::queue_depth(&channel, &dlq).await?;
                Ok::<_, lapin::Error>((ready, dead))
            };
            match depths.await {
                Ok((ready, dead)) => {
                    self.metrics.depth.set(i64::from(ready));
                    self.metrics.dead_depth.set(i64::from(dead));
                }
                Err(e) => {
                    tracing::warn!(error = %cloudmart_amqp::describe(&e), "cannot read the queue depth: {}", cloudmart_amqp::describe(&e));
                    return;
                }
            }
            tokio::time::sleep(DEPTH_INTERVAL).await;
        }
    }
}

/// Whether a failure on `attempt` (1 for the first delivery) is the last
/// one `max_attempts` allows, so the message goes to the dead-letter queue.
fn is_last_attempt(attempt: u32, max_attempts: u32) -> bool {
    attempt >= max_attempts
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::FieldTable;

    /// The attempt number a delivery carrying `headers` is on.
    fn attempt_of(headers: Option<&FieldTable>) -> u32 {
        cloudmart_amqp::attempts(headers).saturating_add(1)
    }

    #[test]
    fn a_message_is_tried_max_attempts_times_then_dead_lettered() {
        // A fresh message (x-attempts 0 or absent) is on attempt 1.
        let mut headers = FieldTable::default();
        assert_eq!(attempt_of(None), 1);
        cloudmart_amqp::set_attempts(&mut headers, 0);
        assert_eq!(attempt_of(Some(&headers)), 1);

        // With 3 attempts allowed, failures 1 and 2 are retried, 3 is final.
        let outcomes: Vec<bool> = (1..=3).map(|a| is_last_attempt(a, 3)).collect();
        assert_eq!(outcomes, [false, false, true]);
        // The retry copy after attempt 2 carries x-attempts 2, so it is attempt 3.
        cloudmart_amqp::set_attempts(&mut headers, 2);
        assert!(is_last_attempt(attempt_of(Some(&headers)), 3));
        // One attempt allowed: the first failure dead-letters.
        assert!(is_last_attempt(1, 1));
    }
}
