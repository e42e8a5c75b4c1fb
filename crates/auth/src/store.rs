//! What auth-service remembers between requests: login counters, revoked
//! tokens and the cache of validated tokens, behind the [`AuthStore`] trait.
//!
//! Two implementations: [`crate::redis_store::RedisStore`] when `REDIS_URL` is
//! set, shared by every replica, and [`MemoryStore`] otherwise, so a laptop
//! needs no Redis. The memory store is per process: with several replicas
//! and no Redis, each replica counts and revokes on its own.
//!
//! Rate limits are fixed windows. The first attempt opens a window of
//! `LOGIN_WINDOW_SECS`, every counted attempt inside it adds one, and the
//! counter disappears when the window ends; `Retry-After` is the time left.
//! A fixed window is one `INCR` in Redis and needs no clocks to agree between
//! replicas. Its known weakness, up to twice the limit across a window
//! boundary, does not matter for brute-force protection: 5 or 10 guesses a
//! minute is the same order.
//!
//! Revocation and the cache must never disagree, or a token would stay valid
//! from the cache after logout. Two atomic steps make sure of it: revoking
//! also deletes the token's cache entry, and validation checks revocation and
//! fills the cache in one step ([`AuthStore::is_revoked_else_cache`]), so a
//! logout can never fall between the check and the fill.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::hash::Hash;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::time::Instant;

/// The store cannot answer; the message names the backend and the cause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreError(pub String);

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StoreError {}

/// One fixed-window counter as read after an update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Attempts counted in the current window.
    pub count: u64,
    /// Time until the window ends and the count starts again from zero.
    pub resets_in: Duration,
}

impl Window {
    /// No window open.
    pub const EMPTY: Self = Self {
        count: 0,
        resets_in: Duration::ZERO,
    };

    /// Whole seconds for `Retry-After`, rounded up and at least 1, so a
    /// client that waits exactly that long finds the window over.
    pub fn retry_after_secs(&self) -> u64 {
        let ms = u64::try_from(self.resets_in.as_millis()).unwrap_or(u64::MAX);
        ms.div_ceil(1000).max(1)
    }
}

/// What a login attempt needs to know before the password is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginCounts {
    /// Attempts from this client address, this one included.
    pub client: Window,
    /// Failed attempts on this account so far (not incremented here).
    pub account_failures: Window,
}

/// A validated token as cached: enough to answer `/auth/validate` again
/// without checking the signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedToken {
    /// The user name.
    pub sub: String,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// The role claim, if any; entries written before roles existed have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

/// A cache entry to write once the token is known not to be revoked.
#[derive(Debug, Clone, Copy)]
pub struct CacheEntry<'a> {
    /// [`token_key`] of the token.
    pub key: &'a str,
    /// What to remember.
    pub token: &'a CachedToken,
    /// How long: the shorter of `TOKEN_CACHE_SECS` and the token's remaining life.
    pub ttl: Duration,
}

/// Storage for login counters, revocations and the token cache.
///
/// Every operation is one round trip, and each is atomic on its own, so
/// several replicas sharing one Redis see consistent counts.
pub trait AuthStore: Send + Sync {
    /// Counts one login attempt from `client` and reads the failures of
    /// `account` in the same step.
    fn count_attempt<'a>(
        &'a self,
        client: &'a str,
        account: &'a str,
        window: Duration,
    ) -> BoxFuture<'a, Result<LoginCounts, StoreError>>;

    /// Counts one failed login on `account`.
    fn count_failure<'a>(
        &'a self,
        account: &'a str,
        window: Duration,
    ) -> BoxFuture<'a, Result<Window, StoreError>>;

    /// Revokes the token `jti` for `ttl` (its remaining life) and drops its
    /// cache entry `cache_key`, in one step.
    fn revoke<'a>(
        &'a self,
        jti: &'a str,
        cache_key: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// The cached validation of the token with this [`token_key`].
    fn cached<'a>(
        &'a self,
        cache_key: &'a str,
    ) -> BoxFuture<'a, Result<Option<CachedToken>, StoreError>>;

    /// Whether `jti` is revoked; when it is not, writes `entry` (if any) in
    /// the same atomic step.
    fn is_revoked_else_cache<'a>(
        &'a self,
        jti: &'a str,
        entry: Option<CacheEntry<'a>>,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;

    /// Whether the backend answers.
    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>>;

    /// A short name for logs and readiness (`memory`, `Redis`).
    fn backend(&self) -> &'static str;
}

/// The cache key of a token: its SHA-256 in hex.
///
/// Hashing keeps tokens themselves out of Redis (a `KEYS *` shows no
/// usable credential), and because the whole token is hashed, a tampered
/// token can never hit the entry of a genuine one.
pub fn token_key(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    let mut hex = String::with_capacity(64);
    for byte in digest.iter() {
        // Writing to a String cannot fail.
        let _ = write!(hex, "{byte:02x}");
    }
    hex
}

/// Most counters the memory store keeps (clients plus accounts).
const MAX_COUNTERS: usize = 50_000;
/// Most revoked tokens the memory store keeps.
const MAX_REVOKED: usize = 100_000;
/// Most cached tokens the memory store keeps.
const MAX_CACHED: usize = 10_000;

/// A map whose entries expire, holding at most `capacity` of them.
///
/// When full, expired entries go first; if none has expired, the one closest
/// to expiry goes, because it is the one whose loss matters least.
struct Expiring<K, V> {
    entries: HashMap<K, (V, Instant)>,
    capacity: usize,
}

impl<K: Hash + Eq + Clone, V> Expiring<K, V> {
    fn new(capacity: usize) -> Self {
        Self {
            entries: HashMap::new(),
            capacity,
        }
    }

    /// The live entry for `key`, dropping it if it has expired.
    fn get_mut(&mut self, key: &K, now: Instant) -> Option<&mut (V, Instant)> {
        if self
            .entries
            .get(key)
            .is_some_and(|(_, until)| *until <= now)
        {
            self.entries.remove(key);
        }
        self.entries.get_mut(key)
    }

    fn insert(&mut self, key: K, value: V, until: Instant, now: Instant) {
        if !self.entries.contains_key(&key) && self.entries.len() >= self.capacity {
            self.entries.retain(|_, (_, u)| *u > now);
            if self.entries.len() >= self.capacity
                && let Some(soonest) = self
                    .entries
                    .iter()
                    .min_by_key(|(_, (_, u))| *u)
                    .map(|(k, _)| k.clone())
            {
                self.entries.remove(&soonest);
            }
        }
        self.entries.insert(key, (value, until));
    }

    fn remove(&mut self, key: &K) {
        self.entries.remove(key);
    }
}

/// Which counter: per client address or per account.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum CounterKey {
    Client(String),
    Account(String),
}

struct Inner {
    counters: Expiring<CounterKey, u64>,
    revoked: Expiring<String, ()>,
    cache: Expiring<String, CachedToken>,
}

impl Inner {
    /// Adds one to `key`'s window, opening a new window if none is open.
    fn bump(&mut self, key: CounterKey, window: Duration, now: Instant) -> Window {
        if let Some((count, until)) = self.counters.get_mut(&key, now) {
            *count += 1;
            return Window {
                count: *count,
                resets_in: *until - now,
            };
        }
        self.counters.insert(key, 1, now + window, now);
        Window {
            count: 1,
            resets_in: window,
        }
    }

    fn read(&mut self, key: &CounterKey, now: Instant) -> Window {
        self.counters
            .get_mut(key, now)
            .map_or(Window::EMPTY, |(count, until)| Window {
                count: *count,
                resets_in: *until - now,
            })
    }
}

/// The no-setup store: bounded maps in this process, with expiry.
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::with_capacity(MAX_COUNTERS, MAX_REVOKED, MAX_CACHED)
    }

    fn with_capacity(counters: usize, revoked: usize, cached: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                counters: Expiring::new(counters),
                revoked: Expiring::new(revoked),
                cache: Expiring::new(cached),
            }),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner, Instant) -> T) -> T {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut inner, Instant::now())
    }
}

impl AuthStore for MemoryStore {
    fn count_attempt<'a>(
        &'a self,
        client: &'a str,
        account: &'a str,
        window: Duration,
    ) -> BoxFuture<'a, Result<LoginCounts, StoreError>> {
        let counts = self.with(|inner, now| LoginCounts {
            client: inner.bump(CounterKey::Client(client.to_owned()), window, now),
            account_failures: inner.read(&CounterKey::Account(account.to_owned()), now),
        });
        Box::pin(std::future::ready(Ok(counts)))
    }

    fn count_failure<'a>(
        &'a self,
        account: &'a str,
        window: Duration,
    ) -> BoxFuture<'a, Result<Window, StoreError>> {
        let w = self
            .with(|inner, now| inner.bump(CounterKey::Account(account.to_owned()), window, now));
        Box::pin(std::future::ready(Ok(w)))
    }

    fn revoke<'a>(
        &'a self,
        jti: &'a str,
        cache_key: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.with(|inner, now| {
            inner.revoked.insert(jti.to_owned(), (), now + ttl, now);
            inner.cache.remove(&cache_key.to_owned());
        });
        Box::pin(std::future::ready(Ok(())))
    }

    fn cached<'a>(
        &'a self,
        cache_key: &'a str,
    ) -> BoxFuture<'a, Result<Option<CachedToken>, StoreError>> {
        let hit = self.with(|inner, now| {
            inner
                .cache
                .get_mut(&cache_key.to_owned(), now)
                .map(|(t, _)| t.clone())
        });
        Box::pin(std::future::ready(Ok(hit)))
    }

    fn is_revoked_else_cache<'a>(
        &'a self,
        jti: &'a str,
        entry: Option<CacheEntry<'a>>,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        let revoked = self.with(|inner, now| {
            if inner.revoked.get_mut(&jti.to_owned(), now).is_some() {
                return true;
            }
            if let Some(e) = entry {
                inner
                    .cache
                    .insert(e.key.to_owned(), e.token.clone(), now + e.ttl, now);
            }
            false
        });
        Box::pin(std::future::ready(Ok(revoked)))
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(std::future::ready(Ok(())))
    }

    fn backend(&self) -> &'static str {
        "memory"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    fn token(sub: &str) -> CachedToken {
        CachedToken {
            sub: sub.to_owned(),
            exp: 4_000_000_000,
            role: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn client_window_counts_every_attempt_and_resets() {
        let store = MemoryStore::new();
        for expected in 1..=3 {
            let c = store
                .count_attempt("10.0.0.1", "alice", MINUTE)
                .await
                .unwrap();
            assert_eq!(c.client.count, expected);
        }
        tokio::time::advance(Duration::from_secs(45)).await;
        let c = store
            .count_attempt("10.0.0.1", "alice", MINUTE)
            .await
            .unwrap();
        assert_eq!(c.client.count, 4);
        assert_eq!(c.client.resets_in, Duration::from_secs(15));
        assert_eq!(c.client.retry_after_secs(), 15);
        let other = store
            .count_attempt("10.0.0.2", "alice", MINUTE)
            .await
            .unwrap();
        assert_eq!(other.client.count, 1, "each address has its own window");

        tokio::time::advance(Duration::from_secs(15)).await;
        let c = store
            .count_attempt("10.0.0.1", "alice", MINUTE)
            .await
            .unwrap();
        assert_eq!(c.client.count, 1, "a new window starts from zero");
    }

    #[tokio::test(start_paused = true)]
    async fn account_failures_are_read_by_attempts_and_counted_by_failures() {
        let store = MemoryStore::new();
        assert_eq!(
            store
                .count_attempt("c", "alice", MINUTE)
                .await
                .unwrap()
                .account_failures,
            Window::EMPTY
        );
        store.count_failure("alice", MINUTE).await.unwrap();
        let w = store.count_failure("alice", MINUTE).await.unwrap();
        assert_eq!(w.count, 2);
        let c = store.count_attempt("c", "alice", MINUTE).await.unwrap();
        assert_eq!(c.account_failures.count, 2, "reading does not add");
        let bob = store.count_attempt("c", "bob", MINUTE).await.unwrap();
        assert_eq!(bob.account_failures.count, 0);

        tokio::time::advance(MINUTE).await;
        let c = store.count_attempt("c", "alice", MINUTE).await.unwrap();
        assert_eq!(c.account_failures, Window::EMPTY);
    }

    #[tokio::test(start_paused = true)]
    async fn revocation_lasts_its_ttl_and_drops_the_cache_entry() {
        let store = MemoryStore::new();
        let t = token("alice");
        let entry = CacheEntry {
            key: "k1",
            token: &t,
            ttl: MINUTE,
        };
        assert!(
            !store
                .is_revoked_else_cache("j1", Some(entry))
                .await
                .unwrap()
        );
        assert_eq!(store.cached("k1").await.unwrap(), Some(t.clone()));

        store
            .revoke("j1", "k1", Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(store.cached("k1").await.unwrap(), None);
        assert!(
            store
                .is_revoked_else_cache("j1", Some(entry))
                .await
                .unwrap()
        );
        assert_eq!(
            store.cached("k1").await.unwrap(),
            None,
            "a revoked token is never cached again"
        );
        assert!(!store.is_revoked_else_cache("j2", None).await.unwrap());

        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(!store.is_revoked_else_cache("j1", None).await.unwrap());
    }

    #[tokio::test(start_paused = true)]
    async fn cache_entries_expire() {
        let store = MemoryStore::new();
        let t = token("bob");
        let entry = CacheEntry {
            key: "k",
            token: &t,
            ttl: Duration::from_secs(5),
        };
        store.is_revoked_else_cache("j", Some(entry)).await.unwrap();
        tokio::time::advance(Duration::from_millis(4999)).await;
        assert!(store.cached("k").await.unwrap().is_some());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(store.cached("k").await.unwrap().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn full_maps_drop_expired_then_soonest_entries() {
        let store = MemoryStore::with_capacity(2, 2, 2);
        store
            .revoke("short", "-", Duration::from_secs(1))
            .await
            .unwrap();
        store
            .revoke("long", "-", Duration::from_secs(100))
            .await
            .unwrap();
        store
            .revoke("new", "-", Duration::from_secs(50))
            .await
            .unwrap();
        assert!(!store.is_revoked_else_cache("short", None).await.unwrap());
        assert!(store.is_revoked_else_cache("long", None).await.unwrap());
        assert!(store.is_revoked_else_cache("new", None).await.unwrap());

        tokio::time::advance(Duration::from_secs(60)).await;
        store
            .revoke("later", "-", Duration::from_secs(10))
            .await
            .unwrap();
        let inner = store.inner.lock().unwrap();
        assert_eq!(
            inner.revoked.entries.len(),
            2,
            "the expired entry made room"
        );
    }

    #[test]
    fn token_keys_are_sha256_hex() {
        assert_eq!(
            token_key("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_ne!(token_key("abc"), token_key("abd"));
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        let w = |ms| Window {
            count: 1,
            resets_in: Duration::from_millis(ms),
        };
        assert_eq!(w(0).retry_after_secs(), 1);
        assert_eq!(w(1).retry_after_secs(), 1);
        assert_eq!(w(1000).retry_after_secs(), 1);
        assert_eq!(w(1001).retry_after_secs(), 2);
    }
}
