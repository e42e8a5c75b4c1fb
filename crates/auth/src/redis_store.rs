//! The Redis store: [`RedisStore`], used when `REDIS_URL` is set, so every
//! replica shares one set of login counters, revocations and cached tokens.
//!
//! One connection serves every request: [`cloudmart_redis::Redis`],
//! opened lazily (auth-service starts while Redis is down) and set up so a
//! down Redis fails a login within about twice `REDIS_TIMEOUT_MS`.
//!
//! Every failure counts in `auth_redis_errors_total` and becomes a
//! [`StoreError`] naming Redis; the handlers decide whether that fails open
//! (validation) or closed (login, logout).
//!
//! Keys, all under `REDIS_KEY_PREFIX` and all with an expiry:
//! `login:client:<address>` and `login:account:<name>` (window counters),
//! `revoked:<jti>` (until the token expires), `token:<sha256>` (cached
//! validation).

use std::future::Future;
use std::sync::LazyLock;
use std::time::Duration;

use cloudmart_config::{EnvReader, EnvVar, Setting};
use cloudmart_redis::{Redis, RedisUrl};
use futures::future::BoxFuture;
use prometheus_client::metrics::counter::Counter;
use redis::aio::ConnectionManager;
use redis::{RedisResult, Script};

use crate::store::{AuthStore, CacheEntry, CachedToken, LoginCounts, StoreError, Window};

pub const REDIS_URL: Setting<RedisUrl> = Setting::with(
    EnvVar::optional(
        "REDIS_URL",
        "a redis://[user:password@]host:port[/db] URL",
        "Redis for login rate limits, revocations and the token cache; unset means in-memory (per process)",
    )
    // It may hold a password.
    .secret(),
    RedisUrl::parse,
);
pub const REDIS_KEY_PREFIX: Setting<String> = Setting::with(
    EnvVar::with_default(
        "REDIS_KEY_PREFIX",
        "cloudmart:auth:",
        "1 to 100 characters without spaces",
        "Prefix of every key auth-service writes, so several stacks can share one Redis",
    ),
    |v| {
        if v.len() > 100 || v.chars().any(char::is_whitespace) {
            Err(String::new())
        } else {
            Ok(v.to_owned())
        }
    },
);
pub const REDIS_TIMEOUT_MS: Setting<Duration> = Setting::millis(
    EnvVar::with_default(
        "REDIS_TIMEOUT_MS",
        "500",
        "milliseconds from 1 to 5000",
        "Longest wait to connect to Redis and for each answer; a down Redis fails a login within about twice this",
    ),
    1,
    5000,
);

/// Checks revocation and fills the cache in one atomic step, so a logout
/// cannot land between the two and leave a revoked token in the cache.
/// KEYS: revoked key, cache key. ARGV: cache value, cache TTL in ms (0: none).
static REVOKED_ELSE_CACHE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 1 end
if ARGV[2] ~= '0' then redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2]) end
return 0
",
    )
});

/// Settings of the Redis store.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// Where Redis is; validated at startup, connected lazily.
    pub url: RedisUrl,
    /// Prefix of every key.
    pub key_prefix: String,
    /// Connect timeout and per-answer timeout.
    pub timeout: Duration,
}

impl RedisConfig {
    /// Reads `REDIS_*`; `None` when `REDIS_URL` is unset. Problems are
    /// recorded in `reader` and reported with every other one.
    pub fn from_env(reader: &mut EnvReader<'_>) -> Option<Self> {
        let url = reader.optional(&REDIS_URL);
        let key_prefix = reader.get(&REDIS_KEY_PREFIX);
        let timeout = reader.get(&REDIS_TIMEOUT_MS);
        Some(Self {
            url: url?,
            key_prefix,
            timeout,
        })
    }
}

/// The Redis-backed [`AuthStore`].
pub struct RedisStore {
    redis: Redis,
    prefix: String,
    errors: Counter,
}

impl RedisStore {
    /// Prepares the connection without opening it; only an unusable URL
    /// fails here. `errors` counts every failed operation.
    pub fn new(config: &RedisConfig, errors: Counter) -> Result<Self, String> {
        Ok(Self {
            redis: Redis::new(&config.url, config.timeout)?,
            prefix: config.key_prefix.clone(),
            errors,
        })
    }

    /// `host:port` of Redis, for logs (never the password).
    pub fn target(&self) -> &str {
        self.redis.target()
    }

    fn key(&self, kind: &str, id: &str) -> String {
        format!("{}{kind}{id}", self.prefix)
    }

    /// Runs `op` on the shared connection; failures are counted and name Redis.
    async fn run<T, F, Fut>(&self, what: &str, op: F) -> Result<T, StoreError>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        self.redis.run(what, op).await.map_err(|e| {
            self.errors.inc();
            StoreError(e)
        })
    }

    /// Adds one to the window counter `key`, opening the window if needed.
    async fn bump(&self, key: &str, window: Duration) -> Result<Window, StoreError> {
        let window_ms = millis(window);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("SET")
            .arg(key)
            .arg(0)
            .arg("PX")
            .arg(window_ms)
            .arg("NX")
            .ignore()
            .cmd("INCR")
            .arg(key)
            .cmd("PTTL")
            .arg(key);
        let (count, pttl): (u64, i64) = self
            .run("count a login attempt", |mut c| {
                let pipe = &pipe;
                async move { pipe.query_async(&mut c).await }
            })
            .await?;
        Ok(Window {
            count,
            resets_in: self.remaining(key, pttl, window).await,
        })
    }

    /// Time left from a `PTTL` answer. A counter without expiry (only a
    /// foreign write can make one) would lock an account forever, so it
    /// gets the window's expiry here.
    async fn remaining(&self, key: &str, pttl: i64, window: Duration) -> Duration {
        if let Ok(ms) = u64::try_from(pttl) {
            return Duration::from_millis(ms);
        }
        let mut cmd = redis::cmd("PEXPIRE");
        cmd.arg(key).arg(millis(window));
        let _ = self
            .run("set a counter's expiry", |mut c| {
                let cmd = &cmd;
                async move { cmd.query_async::<()>(&mut c).await }
            })
            .await;
        window
    }
}

/// Milliseconds for `PX`, at least 1 (Redis rejects 0).
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl AuthStore for RedisStore {
    fn count_attempt<'a>(
        &'a self,
        client: &'a str,
        account: &'a str,
        window: Duration,
    ) -> BoxFuture<'a, Result<LoginCounts, StoreError>> {
        Box::pin(async move {
            let client_key = self.key("login:client:", client);
            let account_key = self.key("login:account:", account);
            let mut pipe = redis::pipe();
            pipe.atomic()
                .cmd("SET")
                .arg(&client_key)
                .arg(0)
                .arg("PX")
                .arg(millis(window))
                .arg("NX")
                .ignore()
                .cmd("INCR")
                .arg(&client_key)
                .cmd("PTTL")
                .arg(&client_key)
                .cmd("GET")
                .arg(&account_key)
                .cmd("PTTL")
                .arg(&account_key);
            let (count, client_ttl, failures, account_ttl): (u64, i64, Option<u64>, i64) = self
                .run("count a login attempt", |mut c| {
                    let pipe = &pipe;
                    async move { pipe.query_async(&mut c).await }
                })
                .await?;
            let client = Window {
                count,
                resets_in: self.remaining(&client_key, client_ttl, window).await,
            };
            let account_failures = match failures {
                Some(count) => Window {
                    count,
                    resets_in: self.remaining(&account_key, account_ttl, window).await,
                },
                None => Window::EMPTY,
            };
            Ok(LoginCounts {
                client,
                account_failures,
            })
        })
    }

    fn count_failure<'a>(
        &'a self,
        account: &'a str,
        window: Duration,
    ) -> BoxFuture<'a, Result<Window, StoreError>> {
        Box::pin(async move {
            self.bump(&self.key("login:account:", account), window)
                .await
        })
    }

    fn revoke<'a>(
        &'a self,
        jti: &'a str,
        cache_key: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let mut pipe = redis::pipe();
            pipe.atomic()
                .cmd("SET")
                .arg(self.key("revoked:", jti))
                .arg(1)
                .arg("PX")
                .arg(millis(ttl))
                .ignore()
                .cmd("DEL")
                .arg(self.key("token:", cache_key))
                .ignore();
            self.run("revoke a token", |mut c| {
                let pipe = &pipe;
                async move { pipe.query_async::<()>(&mut c).await }
            })
            .await
        })
    }

    fn cached<'a>(
        &'a self,
        cache_key: &'a str,
    ) -> BoxFuture<'a, Result<Option<CachedToken>, StoreError>> {
        Box::pin(async move {
            let mut cmd = redis::cmd("GET");
            cmd.arg(self.key("token:", cache_key));
            let raw: Option<String> = self
                .run("read the token cache", |mut c| {
                    let cmd = &cmd;
                    async move { cmd.query_async(&mut c).await }
                })
                .await?;
            // An unreadable entry (another version wrote it) is a miss, and is overwritten.
            Ok(raw.and_then(|r| serde_json::from_str(&r).ok()))
        })
    }

    fn is_revoked_else_cache<'a>(
        &'a self,
        jti: &'a str,
        entry: Option<CacheEntry<'a>>,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            let mut invocation = REVOKED_ELSE_CACHE.prepare_invoke();
            invocation.key(self.key("revoked:", jti));
            match entry {
                Some(e) => {
                    let value = serde_json::to_string(e.token)
                        .map_err(|err| StoreError(format!("cannot encode a cache entry: {err}")))?;
                    invocation
                        .key(self.key("token:", e.key))
                        .arg(value)
                        .arg(millis(e.ttl));
                }
                None => {
                    invocation.key(self.key("token:", "-")).arg("").arg(0);
                }
            }
            let revoked: i64 = self
                .run("check revocation", |mut c| {
                    let invocation = &invocation;
                    async move { invocation.invoke_async(&mut c).await }
                })
                .await?;
            Ok(revoked == 1)
        })
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let cmd = redis::cmd("PING");
            self.run("answer PING", |mut c| {
                let cmd = &cmd;
                async move { cmd.query_async::<String>(&mut c).await }
            })
            .await
            .map(drop)
        })
    }

    fn backend(&self) -> &'static str {
        "Redis"
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn read(pairs: &[(&str, &str)]) -> Result<Option<RedisConfig>, String> {
        let env: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let mut r = EnvReader::new(&env);
        let c = RedisConfig::from_env(&mut r);
        r.finish().map_err(|e| e.to_string())?;
        Ok(c)
    }

    #[test]
    fn unset_url_means_no_redis() {
        assert!(read(&[]).unwrap().is_none());
    }

    #[test]
    fn defaults_apply() {
        let c = read(&[("REDIS_URL", "redis://127.0.0.1:6379")])
            .unwrap()
            .unwrap();
        assert_eq!(c.key_prefix, "cloudmart:auth:");
        assert_eq!(c.timeout, Duration::from_millis(500));
    }

    #[test]
    fn problems_name_the_variables_and_hide_the_password() {
        let line = read(&[
            ("REDIS_URL", "http://user:hunter2@redis:6379"),
            ("REDIS_TIMEOUT_MS", "0"),
            ("REDIS_KEY_PREFIX", "has space"),
        ])
        .unwrap_err();
        assert!(line.contains("REDIS_URL=<redacted> is invalid"), "{line}");
        assert!(!line.contains("hunter2"), "{line}");
        assert!(line.contains("REDIS_TIMEOUT_MS=\"0\""), "{line}");
        assert!(line.contains("REDIS_KEY_PREFIX=\"has space\""), "{line}");
    }

    #[test]
    fn debug_hides_the_url() {
        let c = read(&[("REDIS_URL", "redis://:hunter2@127.0.0.1:6379")])
            .unwrap()
            .unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
