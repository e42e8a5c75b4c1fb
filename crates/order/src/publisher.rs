//! Publishing `order.created` to RabbitMQ with publisher confirms.
//!
//! One connection and one confirm-mode channel, kept by [`Publisher::maintain`],
//! a loop that reconnects with the common backoff because lapin does not.
//! Publishing never waits for a connection: without one it fails at once
//! and the order stays `pending` for the relay. A publish counts only once
//! the broker has confirmed it, so `published` in the database means the
//! message is in a durable queue as a persistent message.
//!
//! [`Publisher::publish`] takes a slice: it sends every message first and
//! then awaits all the confirms, so a relay batch costs one round trip
//! instead of one per message.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cloudmart_amqp::{AmqpConfig, LinkState, ReasonLabels};
use cloudmart_http::metrics::MetricsBuilder;
use cloudmart_model::{Order, OrderCreated};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{Channel, Confirmation, Connection};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio::sync::watch;
use tracing::Instrument;

use crate::NAME;

/// Longest wait for the broker to confirm a publish (or a whole batch).
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a message was not published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PublishError {
    /// No connection to RabbitMQ right now.
    NotConnected,
    /// The broker answered with a nack.
    Nacked,
    /// The broker could not route it to any queue.
    Unroutable,
    /// No confirm within [`CONFIRM_TIMEOUT`].
    Timeout,
    /// The channel or connection failed while publishing.
    Broker(String),
}

impl PublishError {
    /// The `reason` label of `amqp_publish_failures_total`.
    fn reason(&self) -> &'static str {
        match self {
            Self::NotConnected => "not_connected",
            Self::Nacked => "nack",
            Self::Unroutable => "unroutable",
            Self::Timeout => "timeout",
            Self::Broker(_) => "broker_error",
        }
    }
}

impl std::fmt::Display for PublishError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotConnected => f.write_str("RabbitMQ is not connected"),
            Self::Nacked => f.write_str("RabbitMQ refused the message (nack)"),
            Self::Unroutable => f.write_str("RabbitMQ could not route the message to a queue"),
            Self::Timeout => write!(
                f,
                "RabbitMQ did not confirm within {} ms",
                CONFIRM_TIMEOUT.as_millis()
            ),
            Self::Broker(e) => write!(f, "publishing failed: {e}"),
        }
    }
}

/// The RabbitMQ side of order-service; cheap to clone.
#[derive(Clone)]
pub(crate) struct Publisher {
    inner: Arc<Inner>,
}

struct Inner {
    config: AmqpConfig,
    channel: Mutex<Option<Channel>>,
    link: LinkState,
    published: Counter,
    failures: Family<ReasonLabels, Counter>,
}

impl Publisher {
    /// A publisher for `config`, not connected yet; registers its metrics.
    pub(crate) fn new(config: AmqpConfig, metrics: &mut MetricsBuilder) -> Self {
        let link = LinkState::new(&config, metrics.registry());
        let published = Counter::default();
        metrics.registry().register(
            "amqp_messages_published",
            "order.created messages RabbitMQ confirmed",
            published.clone(),
        );
        let failures = Family::<ReasonLabels, Counter>::default();
        metrics.registry().register(
            "amqp_publish_failures",
            "order.created messages not published, by reason; the order stays pending for the relay",
            failures.clone(),
        );
        // Every reason at 0 from the start, so rate() sees the first failure.
        for reason in [
            "not_connected",
            "nack",
            "unroutable",
            "timeout",
            "broker_error",
        ] {
            let _ = failures.get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            });
        }
        Self {
            inner: Arc::new(Inner {
                config,
                channel: Mutex::new(None),
                link,
                published,
                failures,
            }),
        }
    }

    /// The connection state, for `/ready`.
    pub(crate) fn link(&self) -> LinkState {
        self.inner.link.clone()
    }

    /// Whether a channel is ready to publish on.
    pub(crate) fn is_connected(&self) -> bool {
        self.current().is_some()
    }

    fn current(&self) -> Option<Channel> {
        self.inner
            .channel
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn set_channel(&self, channel: Option<Channel>) {
        *self
            .inner
            .channel
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = channel;
    }

    /// Keeps a confirm-mode channel open until `stop` fires: connects (with
    /// backoff, logging each attempt), declares the topology, and starts
    /// over whenever the connection is lost.
    pub(crate) async fn maintain(self, mut stop: watch::Receiver<bool>) {
        let backoff = cloudmart_amqp::reconnect_backoff();
        let config = self.inner.config.clone();
        loop {
            let connected =
                cloudmart_amqp::connect_with_retry(&backoff, &self.inner.link, &mut stop, || {
                    let config = config.clone();
                    async move {
                        let connection = cloudmart_amqp::connect(&config, NAME).await?;
                        match open_channel(&connection, &config).await {
                            Ok(channel) => Ok((connection, channel)),
                            Err(e) => {
                                cloudmart_amqp::close(&connection, "setup failed").await;
                                Err(cloudmart_amqp::describe(&e))
                            }
                        }
                    }
                })
                .await;
            let Some((connection, channel)) = connected else {
                return;
            };
            self.set_channel(Some(channel.clone()));
            let lost = cloudmart_amqp::until_lost(&connection, &[&channel], &mut stop).await;
            self.set_channel(None);
            match lost {
                None => {
                    self.inner.link.set_down("order-service is stopping");
                    cloudmart_amqp::close(&connection, "order-service is stopping").await;
                    tracing::info!("closed the RabbitMQ connection");
                    return;
                }
                Some(why) => {
                    self.inner.link.set_down(why.clone());
                    tracing::warn!(
                        error = %why,
                        "lost the RabbitMQ connection: {why}; new orders stay pending until it is back"
                    );
                    cloudmart_amqp::close(&connection, "reconnecting").await;
                }
            }
        }
    }

    /// Publishes one `order.created` per order and awaits every confirm.
    ///
    /// Each message gets its own producer span, a child of the current one,
    /// whose context travels in the headers. The results are in `orders`'
    /// order; a failed one leaves its order `pending`.
    pub(crate) async fn publish(&self, orders: &[Order]) -> Vec<Result<(), PublishError>> {
        let results = match self.current() {
            None => vec![Err(PublishError::NotConnected); orders.len()],
            Some(channel) => self.publish_on(&channel, orders).await,
        };
        let ok = results.iter().filter(|r| r.is_ok()).count();
        self.inner
            .published
            .inc_by(u64::try_from(ok).unwrap_or(u64::MAX));
        for e in results.iter().filter_map(|r| r.as_ref().err()) {
            self.inner
                .failures
                .get_or_create(&ReasonLabels {
                    reason: e.reason().to_owned(),
                })
                .inc();
        }
        results
    }

    async fn publish_on(
        &self,
        channel: &Channel,
        orders: &[Order],
    ) -> Vec<Result<(), PublishError>> {
        let exchange = self.inner.config.exchange.as_str();
        let options = BasicPublishOptions {
            mandatory: true,
            ..BasicPublishOptions::default()
        };
        let mut bodies = Vec::with_capacity(orders.len());
        let mut spans = Vec::with_capacity(orders.len());
        // OpenTelemetry messaging semantic conventions: one producer span
        // per message, "publish {exchange}". `messaging.operation.type` is
        // "send", the value that replaced "publish" in semconv 1.27.
        let span_name = format!("publish {exchange}");
        for order in orders {
            let span = tracing::info_span!(
                "order.created publish",
                otel.name = %span_name,
                otel.kind = "producer",
                otel.status_code = tracing::field::Empty,
                error.type = tracing::field::Empty,
                messaging.system = "rabbitmq",
                messaging.operation.type = "send",
                messaging.operation.name = "publish",
                messaging.destination.name = %exchange,
                messaging.rabbitmq.destination.routing_key = cloudmart_amqp::ROUTING_KEY,
                messaging.message.id = %order.id,
                order_id = %order.id,
            );
            let body = OrderCreated::from(order);
            bodies.push(serde_json::to_vec(&body).unwrap_or_default());
            spans.push(span);
        }
        // Polled together, every message is queued before the I/O loop
        // writes any, so a batch goes out in a few writes instead of one
        // round trip through the I/O loop per message.
        let sent = futures::future::join_all(orders.iter().zip(&bodies).zip(&spans).map(
            |((order, body), span)| {
                let properties = cloudmart_amqp::message_properties(
                    &order.id,
                    cloudmart_amqp::trace_headers(span),
                );
                channel
                    .basic_publish(
                        exchange.into(),
                        cloudmart_amqp::ROUTING_KEY.into(),
                        options,
                        body,
                        properties,
                    )
                    .instrument(span.clone())
            },
        ))
        .await;
        let sent: Vec<_> = sent.into_iter().zip(spans).collect();
        let deadline = tokio::time::Instant::now() + CONFIRM_TIMEOUT;
        futures::future::join_all(sent.into_iter().map(|(confirm, span)| async move {
            let result = match confirm {
                Err(e) => Err(PublishError::Broker(cloudmart_amqp::describe(&e))),
                Ok(confirm) => match tokio::time::timeout_at(deadline, confirm).await {
                    Err(_) => Err(PublishError::Timeout),
                    Ok(Err(e)) => Err(PublishError::Broker(cloudmart_amqp::describe(&e))),
                    Ok(Ok(Confirmation::Ack(None) | Confirmation::NotRequested)) => Ok(()),
                    Ok(Ok(Confirmation::Ack(Some(_)))) => Err(PublishError::Unroutable),
                    Ok(Ok(Confirmation::Nack(_))) => Err(PublishError::Nacked),
                },
            };
            if let Err(e) = &result {
                span.record("otel.status_code", "ERROR");
                span.record("error.type", e.reason());
                span.in_scope(|| tracing::debug!(error = %e, "publish failed: {e}"));
            }
            result
        }))
        .await
    }
}

/// A channel with publisher confirms on, after declaring the topology.
async fn open_channel(connection: &Connection, config: &AmqpConfig) -> lapin::Result<Channel> {
    let channel = connection.create_channel().await?;
    cloudmart_amqp::declare_topology(&channel, config).await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    Ok(channel)
}
