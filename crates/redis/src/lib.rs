//! One Redis connection for a service, set up to fail fast (feature `redis`:
//! only the services that use Redis compile a Redis client).
//!
//! [`Redis`] holds one `ConnectionManager`, a multiplexed connection that
//! reconnects by itself. It is created lazily, so a service starts and
//! answers while Redis is still down, and the first command after Redis
//! returns reconnects, with no restart.
//!
//! A down Redis must fail a request fast, never hang it:
//! - one timeout bounds both opening a connection and waiting for one answer;
//! - the manager's own reconnect retries are off (its default is 6 attempts
//!   with backoff, several seconds during which every command waits);
//!   instead, an operation that fails on a broken connection is tried once
//!   more, on the fresh connection the manager has just started to open;
//! - the whole operation, retry included, sits under a `tokio` timeout of
//!   twice the timeout, in case anything else stalls.

use std::future::Future;
use std::time::Duration;

use ::redis::RedisResult;
use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// A Redis URL that never shows up in Debug output or logs.
#[derive(Clone)]
pub struct RedisUrl(String);

impl std::fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RedisUrl(<redacted>)")
    }
}

impl RedisUrl {
    /// Checks a `REDIS_URL` value; the error never quotes it, as it may
    /// hold a password.
    pub fn parse(value: &str) -> Result<Self, String> {
        match ::redis::Client::open(value) {
            Ok(_) => Ok(Self(value.to_owned())),
            Err(_) => Err(
                "not a usable Redis URL (TLS needs rediss://, which this build does not support)"
                    .to_owned(),
            ),
        }
    }
}

/// A lazily opened, fail-fast connection to one Redis; see the module docs.
#[derive(Clone)]
pub struct Redis {
    conn: ConnectionManager,
    op_timeout: Duration,
    target: String,
}

impl Redis {
    /// Prepares the connection without opening it; `timeout` bounds the
    /// connect and each answer. Only an unusable URL fails here.
    pub fn new(url: &RedisUrl, timeout: Duration) -> Result<Self, String> {
        let client = ::redis::Client::open(url.0.as_str())
            .map_err(|_| "REDIS_URL is not a usable Redis URL".to_owned())?;
        let target = client.get_connection_info().addr().to_string();
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(0);
        let conn = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| format!("cannot set up the Redis connection: {e}"))?;
        Ok(Self {
            conn,
            op_timeout: timeout * 2,
            target,
        })
    }

    /// `host:port` of Redis, for logs (never the password).
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Runs `op`, once more if the connection was broken, all within the
    /// operation timeout. The error says "Redis at <target> failed to
    /// <what>: <cause>".
    pub async fn run<T, F, Fut>(&self, what: &str, op: F) -> Result<T, String>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let attempts = async {
            match op(self.conn.clone()).await {
                // The manager has started a new connection; the retry waits for it.
                Err(e) if e.is_io_error() || e.is_connection_dropped() => {
                    op(self.conn.clone()).await
                }
                other => other,
            }
        };
        let cause = match tokio::time::timeout(self.op_timeout, attempts).await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {} ms", self.op_timeout.as_millis()),
        };
        Err(format!(
            "Redis at {} failed to {what}: {cause}",
            self.target
        ))
    }
}
