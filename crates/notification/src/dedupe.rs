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
//! window of [`crate::DeliveryLog`] (fail open, as auth-service's token check
//! does): notifications keep flowing, and only a restart during the outage
//! could repeat one. Without `REDIS_URL` the in-memory window is all there is.

use std::time::Duration;

use cloudmart_config::{EnvReader, EnvVar, Setting};
use cloudmart_redis::{Redis, RedisUrl};

pub const REDIS_URL: Setting<RedisUrl> = Setting::with(
    EnvVar::optional(
        "REDIS_URL",
        "a redis://[user:password@]host:port[/db] URL",
        "Redis that remembers notified orders across restarts; unset means in memory, per process",
    )
    // It may hold a password.
    .secret(),
    RedisUrl::parse,
);
pub const REDIS_TIMEOUT_MS: Setting<Duration> = Setting::millis(
    EnvVar::with_default(
        "REDIS_TIMEOUT_MS",
        "500",
        "milliseconds from 1 to 5000",
        "Longest wait to connect to Redis and for each answer before falling back to memory",
    ),
    1,
    5000,
);
pub const NOTIFY_DEDUPE_TTL_SECS: Setting<Duration> = Setting::secs(
    EnvVar::with_default(
        "NOTIFY_DEDUPE_TTL_SECS",
        "604800",
        "seconds from 60 to 31536000",
        "How long Redis remembers that an order was notified",
    ),
    60,
    31_536_000,
);
/// Key of one notified order.
const KEY_PREFIX: &str = "cloudmart:notified:";

/// Settings of the durable de-duplication.
#[derive(Debug, Clone)]
pub struct DedupeConfig {
    url: RedisUrl,
    timeout: Duration,
    ttl: Duration,
}

impl DedupeConfig {
    /// Reads the variables; `None` when `REDIS_URL` is unset.
    pub fn from_env(reader: &mut EnvReader<'_>) -> Option<Self> {
        let url = reader.optional(&REDIS_URL);
        let timeout = reader.get(&REDIS_TIMEOUT_MS);
        let ttl = reader.get(&NOTIFY_DEDUPE_TTL_SECS);
        Some(Self {
            url: url?,
            timeout,
            ttl,
        })
    }
}

/// The durable record of notified orders.
pub struct Durable {
    redis: Redis,
    ttl_secs: u64,
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
        Ok(Self {
            redis: Redis::new(&config.url, config.timeout)?,
            ttl_secs: config.ttl.as_secs().max(1),
        })
    }

    /// `host:port` of Redis, for logs.
    pub fn target(&self) -> &str {
        self.redis.target()
    }

    /// Claims `order_id` for notification; the error names Redis.
    pub async fn claim(&self, order_id: &str) -> Result<Claim, String> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(format!("{KEY_PREFIX}{order_id}"))
            .arg(1)
            .arg("NX")
            .arg("EX")
            .arg(self.ttl_secs);
        let claimed = self
            .redis
            .run("remember a notified order", |mut conn| {
                let cmd = &cmd;
                async move { cmd.query_async::<Option<String>>(&mut conn).await }
            })
            .await?;
        Ok(if claimed.is_some() {
            Claim::First
        } else {
            Claim::Repeat
        })
    }
}
