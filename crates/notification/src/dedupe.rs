//! Which orders were already notified, in Redis, so that a message
//! redelivered after a crash or a restart is not notified twice.
//!
//! Why Redis and not the order's own state in database-service: the claim
//! is one atomic `SET key 1 NX EX ttl`, one round trip with no read-modify-
//! write, and it keeps notification-service free of a dependency on
//! database-service, whose outage would otherwise stop notifications too.
//! Redis is already in every deployment for auth-service. The expiry
//! (`NOTIFY_DEDUPE_TTL_SECS`, a week by default) bounds its memory and is
//! far longer than any redelivery: RabbitMQ redelivers within seconds of
//! a lost consumer, and the relay re-publishes only pending orders.
//!
//! The claim is taken before the customer is told. A crash between the
//! two would lose that one notification rather than send it twice; both
//! steps are in-process and take microseconds, and the ack only follows
//! both.
//!
//! When Redis cannot be reached, delivery falls back to the in-memory
//! window of [`crate::Outbox`] (fail open, as auth-service's token check
//! does): notifications keep flowing, and only a restart during the outage
//! could repeat one. Without `REDIS_URL` the in-memory window is all there is.

use std::time::Duration;

use cloudmart_common::config::{EnvReader, EnvVar};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// `REDIS_URL`.
pub const REDIS_URL: EnvVar = EnvVar::optional(
    "REDIS_URL",
    "a redis://[user:password@]host:port[/db] URL",
    "Redis that remembers notified orders across restarts; unset means in memory, per process",
)
// It may hold a password.
.secret();
/// `REDIS_TIMEOUT_MS`.
pub const REDIS_TIMEOUT_MS: EnvVar = EnvVar::with_default(
    "REDIS_TIMEOUT_MS",
    "500",
    "milliseconds from 1 to 5000",
    "Longest wait to connect to Redis and for each answer before falling back to memory",
);
/// `NOTIFY_DEDUPE_TTL_SECS`.
pub const NOTIFY_DEDUPE_TTL_SECS: EnvVar = EnvVar::with_default(
    "NOTIFY_DEDUPE_TTL_SECS",
    "604800",
    "seconds from 60 to 31536000",
    "How long Redis remembers that an order was notified",
);
/// The variables of the durable de-duplication.
pub const ENV: &[EnvVar] = &[REDIS_URL, REDIS_TIMEOUT_MS, NOTIFY_DEDUPE_TTL_SECS];

/// Key of one notified order.
const KEY_PREFIX: &str = "cloudmart:notified:";

/// Settings of the durable de-duplication.
#[derive(Clone)]
pub struct DedupeConfig {
    url: String,
    timeout: Duration,
    ttl: Duration,
}

impl std::fmt::Debug for DedupeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password.
        f.debug_struct("DedupeConfig")
            .field("timeout", &self.timeout)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl DedupeConfig {
    /// Reads the variables; `None` when `REDIS_URL` is unset.
    pub fn from_env(reader: &mut EnvReader<'_>) -> Option<Self> {
        let url = reader.parse_with(&REDIS_URL, |v| match redis::Client::open(v) {
            Ok(_) => Ok(v.to_owned()),
            // The driver's message can quote the URL, which may hold a password.
            Err(_) => Err("not a usable Redis URL".to_owned()),
        });
        let timeout = reader
            .int_in::<u64>(&REDIS_TIMEOUT_MS, 1, 5000)
            .map(Duration::from_millis);
        let ttl = reader
            .int_in::<u64>(&NOTIFY_DEDUPE_TTL_SECS, 60, 31_536_000)
            .map(Duration::from_secs);
        Some(Self {
            url: url?,
            timeout: timeout.unwrap_or(Duration::from_millis(500)),
            ttl: ttl.unwrap_or(Duration::from_secs(604_800)),
        })
    }
}

/// The durable record of notified orders.
pub struct Durable {
    conn: ConnectionManager,
    ttl_secs: u64,
    op_timeout: Duration,
    target: String,
}

/// What Redis says about an order about to be notified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// Nobody notified it before: go ahead.
    First,
    /// It was notified already (by this process or an earlier one).
    Repeat,
}

impl Durable {
    /// Prepares the connection without opening it, so the service starts
    /// while Redis is down.
    pub fn new(config: &DedupeConfig) -> Result<Self, String> {
        let client = redis::Client::open(config.url.as_str())
            .map_err(|_| "REDIS_URL is not a usable Redis URL".to_owned())?;
        let target = client.get_connection_info().addr().to_string();
        let manager = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.timeout))
            .set_response_timeout(Some(config.timeout))
            .set_number_of_retries(0);
        let conn = ConnectionManager::new_lazy_with_config(client, manager)
            .map_err(|e| format!("cannot set up the Redis connection: {e}"))?;
        Ok(Self {
            conn,
            ttl_secs: config.ttl.as_secs().max(1),
            op_timeout: config.timeout * 2,
            target,
        })
    }

    /// `host:port` of Redis, for logs.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Claims `order_id` for notification; the error names Redis.
    pub async fn claim(&self, order_id: &str) -> Result<Claim, String> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(format!("{KEY_PREFIX}{order_id}"))
            .arg(1)
            .arg("NX")
            .arg("EX")
            .arg(self.ttl_secs);
        let attempt = |mut conn: ConnectionManager| {
            let cmd = &cmd;
            async move { cmd.query_async::<Option<String>>(&mut conn).await }
        };
        let tries = async {
            match attempt(self.conn.clone()).await {
                // The manager has started a fresh connection; use it once.
                Err(e) if e.is_io_error() || e.is_connection_dropped() => {
                    attempt(self.conn.clone()).await
                }
                other => other,
            }
        };
        match tokio::time::timeout(self.op_timeout, tries).await {
            Ok(Ok(Some(_))) => Ok(Claim::First),
            Ok(Ok(None)) => Ok(Claim::Repeat),
            Ok(Err(e)) => Err(format!("Redis at {} failed: {e}", self.target)),
            Err(_) => Err(format!(
                "Redis at {} did not answer within {} ms",
                self.target,
                self.op_timeout.as_millis()
            )),
        }
    }
}
