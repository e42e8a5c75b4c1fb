//! RabbitMQ plumbing shared by order-service (publisher) and
//! notification-service (consumer): the `AMQP_*` contract, connecting with
//! the common backoff, the topology both sides declare, and the message
//! headers that carry the W3C trace context and the attempt count.
//!
//! lapin does not reconnect by itself, so each side runs a loop:
//! [`connect_with_retry`] until connected, work until [`until_lost`] says
//! the connection is gone, and start over. Every attempt is logged with its
//! number (`connecting to RabbitMQ (attempt 3) at amqp://guest@rabbitmq:5672/%2f`)
//! so an outage is plain in the logs; [`LinkState`] keeps the state for the
//! `amqp_connected` gauge and, where it is right for the service, `/ready`.
//!
//! The topology is declared by both sides, idempotently, so either may start
//! first and no message is published into a void:
//!
//! | what | name | shape |
//! |---|---|---|
//! | exchange | `AMQP_EXCHANGE` | durable, direct; routing key `order.created` |
//! | queue | `AMQP_QUEUE` | durable, bound with `order.created`; rejects go to the dead-letter exchange |
//! | dead-letter exchange | `<AMQP_EXCHANGE>.dlx` | durable, fanout |
//! | dead-letter queue | `<AMQP_QUEUE>.dead` | durable; what failed `NOTIFY_MAX_ATTEMPTS` times |
//!
//! Messages are persistent JSON with `message_id` set to the order id, and
//! their headers hold `traceparent` (and `tracestate`) plus `x-attempts`, the
//! number of failed processing attempts so far.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::uri::AMQPUri;
use lapin::{
    BasicProperties, Channel, Connection, ConnectionProperties, ErrorKind, Event, ExchangeKind,
};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::watch;

use cloudmart_config::{EnvReader, EnvVar, Setting};
use cloudmart_http::health::Check;
use cloudmart_http::metrics::Registry;
use cloudmart_retry::{Backoff, Jitter};
use cloudmart_run::stopped;

/// `AMQP_URL`: the URL to connect to and the same without its password.
pub const AMQP_URL: Setting<(String, String)> = Setting::with(
    EnvVar::optional(
        "AMQP_URL",
        "an amqp:// or amqps:// URL such as amqp://guest:guest@rabbitmq:5672/%2f",
        "RabbitMQ for order.created messages; unset means order-service calls notification-service over HTTP",
    )
    .secret(),
    parse_url,
);
pub const AMQP_EXCHANGE: Setting<String> = Setting::with(
    EnvVar::with_default(
        "AMQP_EXCHANGE",
        "cloudmart.orders",
        "1 to 200 letters, digits, '-', '_', '.' or ':', not starting with amq.",
        "Durable exchange order.created is published to; its dead-letter exchange is <name>.dlx",
    ),
    validate_name,
);
pub const AMQP_QUEUE: Setting<String> = Setting::with(
    EnvVar::with_default(
        "AMQP_QUEUE",
        "notifications",
        "1 to 200 letters, digits, '-', '_', '.' or ':', not starting with amq.",
        "Durable queue notification-service consumes; its dead-letter queue is <name>.dead",
    ),
    validate_name,
);

/// The routing key (and AMQP `type`) of the one event CloudMart publishes.
pub const ROUTING_KEY: &str = "order.created";
/// Header counting failed processing attempts; absent means none yet.
pub const ATTEMPTS_HEADER: &str = "x-attempts";
/// Content type of every message body.
pub const CONTENT_TYPE: &str = "application/json";
/// AMQP `delivery_mode` that makes the broker write the message to disk.
const PERSISTENT: u8 = 2;
/// Longest wait for a TCP connect plus the AMQP handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// First reconnect delay cap; doubles per attempt up to [`RECONNECT_MAX`].
const RECONNECT_BASE: Duration = Duration::from_millis(200);
/// Largest delay between two connection attempts.
const RECONNECT_MAX: Duration = Duration::from_secs(5);
/// How often [`until_lost`] looks at the connection status between events.
const WATCH_INTERVAL: Duration = Duration::from_millis(250);
/// Longest exchange or queue name, so the `.dlx`/`.dead` names stay legal.
const MAX_NAME_LEN: usize = 200;

/// Where RabbitMQ is and what to call things there.
#[derive(Clone, PartialEq, Eq)]
pub struct AmqpConfig {
    url: String,
    redacted: String,
    /// The exchange `order.created` is published to.
    pub exchange: String,
    /// The queue notification-service consumes.
    pub queue: String,
}

impl fmt::Debug for AmqpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AmqpConfig")
            .field("url", &self.redacted)
            .field("exchange", &self.exchange)
            .field("queue", &self.queue)
            .finish()
    }
}

impl AmqpConfig {
    /// Reads `AMQP_*`; `None` when `AMQP_URL` is unset (HTTP mode) or invalid.
    ///
    /// The names are checked even when the URL is unset, so a typo shows up
    /// before someone switches RabbitMQ on.
    pub fn from_env(reader: &mut EnvReader<'_>) -> Option<Self> {
        let url = reader.optional(&AMQP_URL);
        let exchange = reader.get(&AMQP_EXCHANGE);
        let queue = reader.get(&AMQP_QUEUE);
        let (url, redacted) = url?;
        Some(Self {
            url,
            redacted,
            exchange,
            queue,
        })
    }

    /// A config for tests and tools that already hold a URL.
    pub fn new(url: &str, exchange: &str, queue: &str) -> Result<Self, String> {
        let (url, redacted) = parse_url(url)?;
        Ok(Self {
            url,
            redacted,
            exchange: validate_name(exchange)?,
            queue: validate_name(queue)?,
        })
    }

    /// The URL without its password, for logs and readiness.
    pub fn redacted_url(&self) -> &str {
        &self.redacted
    }

    /// `<exchange>.dlx`: where the queue sends what it rejects.
    pub fn dead_letter_exchange(&self) -> String {
        format!("{}.dlx", self.exchange)
    }

    /// `<queue>.dead`: what failed too often, kept for a human to look at.
    pub fn dead_letter_queue(&self) -> String {
        format!("{}.dead", self.queue)
    }
}

/// Checks an AMQP URL and returns it with a password-free copy for logs.
fn parse_url(value: &str) -> Result<(String, String), String> {
    let uri = AMQPUri::from_str(value).map_err(|e| {
        // Some parse errors quote the input, which holds the password.
        if e.contains(value) {
            "it is not a URL".to_owned()
        } else {
            e
        }
    })?;
    if uri.authority.host.is_empty() {
        return Err("it has no host".to_owned());
    }
    let vhost = if uri.vhost == "/" {
        "%2f"
    } else {
        uri.vhost.as_str()
    };
    let redacted = format!(
        "{}://{}@{}:{}/{vhost}",
        uri.scheme, uri.authority.userinfo.username, uri.authority.host, uri.authority.port
    );
    Ok((value.to_owned(), redacted))
}

/// Checks an exchange or queue name.
fn validate_name(value: &str) -> Result<String, String> {
    if value.len() > MAX_NAME_LEN {
        return Err(format!("it is longer than {MAX_NAME_LEN} characters"));
    }
    if value.starts_with("amq.") {
        return Err("names starting with amq. are reserved by RabbitMQ".to_owned());
    }
    if let Some(c) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':')))
    {
        return Err(format!("{c:?} is not allowed"));
    }
    Ok(value.to_owned())
}

/// Describes a lapin error in the words a trainee greps for.
pub fn describe(e: &lapin::Error) -> String {
    match e.kind() {
        ErrorKind::IOError(io) => match io.kind() {
            std::io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
            std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::BrokenPipe => "connection reset".to_owned(),
            std::io::ErrorKind::UnexpectedEof => "connection closed by the broker".to_owned(),
            _ => io.to_string(),
        },
        ErrorKind::ProtocolError(amqp) => amqp.to_string(),
        ErrorKind::MissingHeartbeatError => "no heartbeat from the broker".to_owned(),
        _ => e.to_string(),
    }
}

/// Opens one connection named after `service`, within a time limit.
pub async fn connect(config: &AmqpConfig, service: &str) -> Result<Connection, String> {
    let props = ConnectionProperties::default().with_connection_name(service.into());
    match tokio::time::timeout(CONNECT_TIMEOUT, Connection::connect(&config.url, props)).await {
        Ok(Ok(connection)) => Ok(connection),
        Ok(Err(e)) => Err(describe(&e)),
        Err(_) => Err(format!(
            "no answer within {} ms",
            CONNECT_TIMEOUT.as_millis()
        )),
    }
}

/// Closes `connection` politely, giving up after a second (it may be dead).
pub async fn close(connection: &Connection, why: &str) {
    let _ = tokio::time::timeout(
        Duration::from_secs(1),
        connection.close(200, ShortString::from(why)),
    )
    .await;
}

/// Declares the exchange, queue, dead-letter exchange and dead-letter queue,
/// and binds them. Safe to repeat; both services do it on every connect.
pub async fn declare_topology(channel: &Channel, config: &AmqpConfig) -> lapin::Result<()> {
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    let dlx = config.dead_letter_exchange();
    let dlq = config.dead_letter_queue();
    channel
        .exchange_declare(
            config.exchange.as_str().into(),
            ExchangeKind::Direct,
            durable,
            FieldTable::default(),
        )
        .await?;
    channel
        .exchange_declare(
            dlx.as_str().into(),
            ExchangeKind::Fanout,
            durable,
            FieldTable::default(),
        )
        .await?;
    channel
        .queue_declare(
            dlq.as_str().into(),
            QueueDeclareOptions::durable(),
            FieldTable::default(),
        )
        .await?;
    channel
        .queue_bind(
            dlq.as_str().into(),
            dlx.as_str().into(),
            ROUTING_KEY.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let mut args = FieldTable::default();
    args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(dlx.as_str().into()),
    );
    channel
        .queue_declare(
            config.queue.as_str().into(),
            QueueDeclareOptions::durable(),
            args,
        )
        .await?;
    channel
        .queue_bind(
            config.queue.as_str().into(),
            config.exchange.as_str().into(),
            ROUTING_KEY.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok(())
}

/// Ready messages in `queue`, by a passive declare (which creates nothing).
///
/// A missing queue closes the channel, so use a channel kept for this.
pub async fn queue_depth(channel: &Channel, queue: &str) -> lapin::Result<u32> {
    let options = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let queue = channel
        .queue_declare(queue.into(), options, FieldTable::default())
        .await?;
    Ok(queue.message_count())
}

/// Properties of an `order.created` message: persistent JSON whose
/// `message_id` is the order id, so consumers can spot redeliveries.
pub fn message_properties(message_id: &str, headers: FieldTable) -> BasicProperties {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    BasicProperties::default()
        .with_content_type(CONTENT_TYPE.into())
        .with_delivery_mode(PERSISTENT)
        .with_message_id(message_id.into())
        .with_type(ROUTING_KEY.into())
        .with_timestamp(now)
        .with_headers(headers)
}

/// Headers for a new message: the trace context of `span` and `x-attempts: 0`.
pub fn trace_headers(span: &tracing::Span) -> FieldTable {
    let mut headers = FieldTable::default();
    insert_strings(&mut headers, cloudmart_telemetry::inject_map(span));
    set_attempts(&mut headers, 0);
    headers
}

/// Adds string headers (the trace context) as AMQP long strings.
pub fn insert_strings(headers: &mut FieldTable, pairs: HashMap<String, String>) {
    for (k, v) in pairs {
        headers.insert(k.into(), AMQPValue::LongString(LongString::from(v)));
    }
}

/// The string-valued headers of a message, for trace extraction and logs.
pub fn string_headers(headers: Option<&FieldTable>) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for (k, v) in headers.map(FieldTable::inner).into_iter().flatten() {
        let text = match v {
            AMQPValue::LongString(s) => String::from_utf8(s.as_bytes().to_vec()).ok(),
            AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
            _ => None,
        };
        if let Some(text) = text {
            out.insert(k.as_str().to_owned(), text);
        }
    }
    out
}

/// The publisher's trace context carried by a message, as a remote parent.
pub fn trace_context(headers: Option<&FieldTable>) -> opentelemetry::Context {
    cloudmart_telemetry::extract_map(&string_headers(headers))
}

/// Makes `span` (a consumer span of `service`) a child of the publisher's
/// span carried in `headers`, so the order's trace goes on through the
/// broker. A message without a trace context starts its own trace.
pub fn set_remote_parent(
    span: &tracing::Span,
    headers: Option<&FieldTable>,
    service: &'static str,
) {
    cloudmart_telemetry::set_parent(
        span,
        cloudmart_telemetry::in_service(trace_context(headers), service),
    );
}

/// Failed attempts recorded in `x-attempts`; absent or unreadable is 0.
///
/// Any integer type is accepted, and digits in a string, because other
/// tools (the management UI, scripts) write headers with their own types.
pub fn attempts(headers: Option<&FieldTable>) -> u32 {
    let Some(value) = headers.and_then(|h| h.inner().get(ATTEMPTS_HEADER)) else {
        return 0;
    };
    let n: Option<i64> = match value {
        AMQPValue::ShortShortInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortShortUInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortUInt(n) => Some(i64::from(*n)),
        AMQPValue::LongInt(n) => Some(i64::from(*n)),
        AMQPValue::LongUInt(n) => Some(i64::from(*n)),
        AMQPValue::LongLongInt(n) => Some(*n),
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes())
            .ok()
            .and_then(|s| s.trim().parse().ok()),
        AMQPValue::ShortString(s) => s.as_str().trim().parse().ok(),
        _ => None,
    };
    n.map_or(0, |n| u32::try_from(n.max(0)).unwrap_or(u32::MAX))
}

/// Sets `x-attempts` to `n`.
pub fn set_attempts(headers: &mut FieldTable, n: u32) {
    headers.insert(
        ATTEMPTS_HEADER.into(),
        AMQPValue::LongInt(i32::try_from(n).unwrap_or(i32::MAX)),
    );
}

/// The reconnect policy: 200 ms doubling to 5 s, full jitter, never giving up.
pub fn reconnect_backoff() -> Backoff {
    Backoff::try_new(RECONNECT_BASE, RECONNECT_MAX, 100, Jitter::Full).unwrap_or_default()
}

/// Runs `attempt` until it succeeds, waiting per `backoff` in between and
/// never giving up; `None` once `stop` fires.
///
/// Each attempt is logged with its number, and each failure with its cause
/// and the delay before the next one, so an outage reads like a diary.
/// `attempt` should connect and set up everything the caller needs, so a
/// setup failure (a missing permission, a conflicting queue) backs off too.
pub async fn connect_with_retry<T, F, Fut>(
    backoff: &Backoff,
    link: &LinkState,
    stop: &mut watch::Receiver<bool>,
    mut attempt: F,
) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let mut rng = fastrand::Rng::new();
    let target = link.target().to_owned();
    let mut n: u32 = 1;
    loop {
        tracing::info!(
            attempt = n,
            amqp.url = %target,
            "connecting to RabbitMQ (attempt {n}) at {target}"
        );
        let outcome = tokio::select! {
            outcome = attempt() => outcome,
            () = stopped(stop) => return None,
        };
        match outcome {
            Ok(value) => {
                tracing::info!(
                    attempt = n,
                    amqp.url = %target,
                    "connected to RabbitMQ at {target} (attempt {n})"
                );
                link.set_connected();
                return Some(value);
            }
            Err(e) => {
                let delay = backoff.delay(n.min(31), None, &mut rng);
                let delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
                tracing::warn!(
                    attempt = n,
                    delay_ms,
                    error = %e,
                    "connecting to RabbitMQ failed (attempt {n}): {e}; next attempt in {delay_ms} ms"
                );
                link.set_down(format!("{e} (attempt {n})"));
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = stopped(stop) => return None,
                }
                n = n.saturating_add(1);
            }
        }
    }
}

/// Waits until `connection` or one of `channels` stops being usable, and
/// says why; `None` when `stop` fires first.
pub async fn until_lost(
    connection: &Connection,
    channels: &[&Channel],
    stop: &mut watch::Receiver<bool>,
) -> Option<String> {
    let mut events = connection.events_listener();
    let mut tick = tokio::time::interval(WATCH_INTERVAL);
    loop {
        tokio::select! {
            () = stopped(stop) => return None,
            event = events.next() => match event {
                Some(Event::Error(e)) => return Some(describe(&e)),
                Some(_) => {}
                None => return Some("the connection was dropped".to_owned()),
            },
            _ = tick.tick() => {
                if !connection.status().connected() {
                    return Some("the connection is closed".to_owned());
                }
                if channels.iter().any(|c| !c.status().connected()) {
                    return Some("the channel was closed".to_owned());
                }
            }
        }
    }
}

/// Whether a service is connected to RabbitMQ, and if not, why.
///
/// The reconnect loop writes it; `/ready` ([`RabbitCheck`]), the
/// `amqp_connected` gauge and the publisher read it.
#[derive(Clone)]
pub struct LinkState {
    inner: Arc<Mutex<Link>>,
    target: Arc<str>,
    gauge: Gauge,
}

struct Link {
    connected: bool,
    last_error: Option<String>,
}

impl fmt::Debug for LinkState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LinkState")
            .field("target", &self.target)
            .field("connected", &self.is_connected())
            .finish()
    }
}

impl LinkState {
    /// A link to `config`'s broker, down until connected; registers
    /// `amqp_connected`.
    pub fn new(config: &AmqpConfig, registry: &mut Registry) -> Self {
        let gauge = Gauge::default();
        registry.register(
            "amqp_connected",
            "1 while connected to RabbitMQ, 0 while reconnecting",
            gauge.clone(),
        );
        Self {
            inner: Arc::new(Mutex::new(Link {
                connected: false,
                last_error: None,
            })),
            target: Arc::from(config.redacted_url()),
            gauge,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Link> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The broker's URL without a password.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Whether the connection is up.
    pub fn is_connected(&self) -> bool {
        self.lock().connected
    }

    /// Records that the connection is up.
    pub fn set_connected(&self) {
        let mut link = self.lock();
        link.connected = true;
        link.last_error = None;
        self.gauge.set(1);
    }

    /// Records that the connection is down, and why.
    pub fn set_down(&self, why: impl Into<String>) {
        let mut link = self.lock();
        link.connected = false;
        link.last_error = Some(why.into());
        self.gauge.set(0);
    }

    /// `Ok` when connected, or a sentence saying why not.
    pub fn status(&self) -> Result<(), String> {
        let link = self.lock();
        if link.connected {
            return Ok(());
        }
        let why = link.last_error.as_deref().unwrap_or("not connected yet");
        Err(format!("not connected to {}: {why}", self.target))
    }
}

/// Readiness check named `RabbitMQ`.
///
/// notification-service cannot work without the broker, so there the check
/// is [`RabbitCheck::required`]. order-service keeps taking orders (they
/// stay `pending` for the relay), so there it is [`RabbitCheck::optional`]:
/// a lost broker shows as `degraded` instead of taking every replica out
/// of the load balancer.
pub struct RabbitCheck {
    link: LinkState,
    required: bool,
}

impl RabbitCheck {
    /// A failure makes the service unready.
    pub fn required(link: LinkState) -> Self {
        Self {
            link,
            required: true,
        }
    }

    /// A failure only marks the service degraded.
    pub fn optional(link: LinkState) -> Self {
        Self {
            link,
            required: false,
        }
    }
}

impl Check for RabbitCheck {
    fn name(&self) -> &str {
        "RabbitMQ"
    }

    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move { self.link.status() })
    }

    fn required(&self) -> bool {
        self.required
    }
}

/// Label naming why a message operation failed, for `*_failures_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// A short stable word such as `not_connected`, `timeout` or `invalid_payload`.
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloudmart_config::env_of;
    use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
    use std::sync::atomic::{AtomicU32, Ordering};
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn unset_url_means_http_mode_and_names_derive_from_the_defaults() {
        let e = env_of(&[]);
        let mut r = EnvReader::new(&e);
        assert_eq!(AmqpConfig::from_env(&mut r), None);
        r.finish().unwrap();

        let e = env_of(&[("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")]);
        let mut r = EnvReader::new(&e);
        let c = AmqpConfig::from_env(&mut r).unwrap();
        r.finish().unwrap();
        assert_eq!(c.exchange, "cloudmart.orders");
        assert_eq!(c.queue, "notifications");
        assert_eq!(c.dead_letter_exchange(), "cloudmart.orders.dlx");
        assert_eq!(c.dead_letter_queue(), "notifications.dead");
        assert_eq!(c.redacted_url(), "amqp://guest@127.0.0.1:5672/%2f");
        assert!(!format!("{c:?}").contains("guest:guest"), "{c:?}");
    }

    #[test]
    fn config_errors_name_every_variable_and_never_the_password() {
        let e = env_of(&[
            ("AMQP_URL", "http://user:hunter2@rabbitmq:5672/"),
            ("AMQP_EXCHANGE", "amq.orders"),
            ("AMQP_QUEUE", "no spaces"),
        ]);
        let mut r = EnvReader::new(&e);
        assert_eq!(AmqpConfig::from_env(&mut r), None);
        let err = r.finish().unwrap_err();
        let line = err.to_string();
        assert_eq!(err.problems().len(), 3, "{line}");
        assert!(line.contains("AMQP_URL=<redacted> is invalid"), "{line}");
        assert!(!line.contains("hunter2"), "{line}");
        assert!(line.contains("AMQP_EXCHANGE=\"amq.orders\""), "{line}");
        assert!(line.contains("AMQP_QUEUE=\"no spaces\""), "{line}");
    }

    #[test]
    fn attempts_are_read_from_any_integer_type_and_default_to_zero() {
        assert_eq!(attempts(None), 0);
        let mut h = FieldTable::default();
        assert_eq!(attempts(Some(&h)), 0);
        set_attempts(&mut h, 3);
        assert_eq!(attempts(Some(&h)), 3);
        for (value, want) in [
            (AMQPValue::ShortShortUInt(2), 2),
            (AMQPValue::LongLongInt(7), 7),
            (AMQPValue::LongInt(-4), 0),
            (AMQPValue::LongString(" 5 ".into()), 5),
            (AMQPValue::LongString("five".into()), 0),
            (AMQPValue::Boolean(true), 0),
        ] {
            h.insert(ATTEMPTS_HEADER.into(), value);
            assert_eq!(attempts(Some(&h)), want);
        }
    }

    #[test]
    fn message_properties_are_persistent_json_keyed_by_order_id() {
        let p = message_properties("order-1", trace_headers(&tracing::Span::none()));
        assert_eq!(*p.delivery_mode(), Some(2));
        assert_eq!(
            p.content_type().as_ref().map(ShortString::as_str),
            Some(CONTENT_TYPE)
        );
        assert_eq!(
            p.message_id().as_ref().map(ShortString::as_str),
            Some("order-1")
        );
        assert_eq!(attempts(p.headers().as_ref()), 0);
    }

    #[test]
    fn trace_context_survives_the_trip_through_message_headers() {
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, || {
            let publisher = tracing::info_span!("publish");
            let headers = trace_headers(&publisher);
            let sent = cloudmart_telemetry::trace_id(&publisher).expect("a valid span");

            assert!(string_headers(Some(&headers)).contains_key("traceparent"));
            let received = trace_context(Some(&headers));
            let got = received.span().span_context().trace_id().to_string();
            assert_eq!(got, sent);
            assert!(received.span().span_context().is_remote());
        });
    }

    #[test]
    fn a_message_without_trace_headers_has_no_parent() {
        let cx = trace_context(None);
        assert!(!cx.span().span_context().is_valid());
    }

    fn link() -> LinkState {
        let config = AmqpConfig::new("amqp://u:secret@h:1/%2f", "x", "q").unwrap();
        LinkState::new(&config, &mut Registry::default())
    }

    #[tokio::test(start_paused = true)]
    async fn reconnects_with_backoff_until_it_succeeds() {
        let link = link();
        let (_tx, mut stop) = watch::channel(false);
        let calls = Arc::new(AtomicU32::new(0));
        let c = calls.clone();
        let started = tokio::time::Instant::now();

        let got = connect_with_retry(&reconnect_backoff(), &link, &mut stop, || {
            let n = c.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                if n < 4 {
                    Err("connection refused".to_owned())
                } else {
                    Ok(n)
                }
            }
        })
        .await;

        assert_eq!(got, Some(4));
        assert!(link.is_connected());
        // Three waits with caps 200 + 400 + 800 ms.
        assert!(started.elapsed() <= Duration::from_millis(1400));
    }

    #[tokio::test(start_paused = true)]
    async fn keeps_trying_past_the_cap_and_stops_when_told() {
        let link = link();
        let (tx, mut stop) = watch::channel(false);
        let calls = Arc::new(AtomicU32::new(0));
        let c = calls.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(120)).await;
            let _ = tx.send(true);
        });

        let got: Option<()> = connect_with_retry(&reconnect_backoff(), &link, &mut stop, || {
            c.fetch_add(1, Ordering::SeqCst);
            async { Err("connection refused".to_owned()) }
        })
        .await;

        assert_eq!(got, None);
        // Delays are capped at 5 s, so two minutes hold many attempts.
        assert!(calls.load(Ordering::SeqCst) > 20);
        let why = link.status().unwrap_err();
        assert!(why.contains("connection refused"), "{why}");
        assert!(why.contains("amqp://u@h:1/%2f"), "{why}");
        assert!(!why.contains("secret"), "{why}");
    }
}
