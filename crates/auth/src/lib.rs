//! auth-service: accounts, logins and token validation.
//!
//! Passwords are hashed with argon2id at OWASP's parameters (19 MiB of
//! memory, 2 passes, 1 lane). Each hash runs on the blocking pool, never on
//! the async workers, and `AUTH_HASH_CONCURRENCY` bounds how many run at
//! once. That bound is also the service's memory profile: every concurrent
//! hash holds 19 MiB, which is why a 64 MiB limit is not enough under a
//! burst of logins.
//!
//! Tokens are HS256 JWTs signed with `JWT_SECRET`. A request with no token is
//! a guest (the workshop's curl loop sends none); a bad, expired or tampered
//! token is a 401.
//!
//! Logins are rate-limited twice: failed attempts per account (brute-force
//! protection) and all attempts per client address (one source hammering
//! many accounts); both answer 429 with `Retry-After`. Logout revokes a token
//! until it expires, and validated tokens are cached, so repeated
//! validations skip the signature check. Counters, revocations and the cache
//! live in Redis when `REDIS_URL` is set ([`redis_store`]), otherwise in this
//! process ([`store::MemoryStore`]).
//!
//! A Redis outage is handled differently per route. Validation fails open:
//! a correctly signed, unexpired token is accepted without the revocation
//! check, with a warning, because refusing every token would stop all
//! traffic. Login and logout fail closed with a 503 naming Redis, because
//! without Redis the rate limits and revocations cannot be kept.
//!
//! `config` reads the variables, `tokens` signs and checks JWTs,
//! `handlers` answers the four routes, and this file wires them into the
//! [`Service`] that `cloudmart_run` starts.

mod client_addr;
mod config;
mod handlers;
mod metrics;
mod password;
pub mod redis_store;
pub mod store;
mod tokens;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use axum::routing::post;
use cloudmart_config::Setting;
use cloudmart_http::health::{Check, Health};
use cloudmart_http::metrics::MetricsBuilder;
use cloudmart_http::server::{self, Server};
use cloudmart_run::{App, Service, StartupError};
use futures::future::BoxFuture;
use jsonwebtoken::{DecodingKey, EncodingKey};

pub use crate::config::{
    AUTH_HASH_CONCURRENCY, AUTH_SEED_USERS, Config, JWT_SECRET, JWT_TTL_SECS,
    LOGIN_MAX_PER_ACCOUNT, LOGIN_MAX_PER_CLIENT, LOGIN_WINDOW_SECS, LoginLimits, PORT, Secret,
    TOKEN_CACHE_SECS, TRUSTED_PROXY_HOPS,
};
use crate::handlers::{login, logout, register, validate};
use crate::metrics::AuthMetrics;
pub use crate::password::Hasher;
use crate::redis_store::RedisStore;
use crate::store::{AuthStore, MemoryStore};
pub use crate::tokens::Claims;

/// The binary and image name.
pub const NAME: &str = "auth-service";

/// The demo accounts created at start-up: name, password, and the argon2id
/// hash of that password. The hashes are precomputed so that start-up does
/// no hashing: each hash would hold 19 MiB that the allocator keeps, and an
/// idle auth-service should stay small.
pub const DEMO_USERS: &[(&str, &str, &str)] = &[
    (
        "alice",
        "alice-secret",
        "$argon2id$v=19$m=19456,t=2,p=1$GBFaZFMwDdm+BhUsKWKZDg$dXrMlJ9M3axSehjliuEANq5E2pcvX3SKh9BitYzrvzs",
    ),
    (
        "bob",
        "bob-secret",
        "$argon2id$v=19$m=19456,t=2,p=1$8GIGwkhrQwQbWWGqu3iang$PZ69SInfZrEw0PNPRdGu8kwXNQvxvxw8ehLdyReb3X4",
    ),
    (
        "operator",
        "operator-secret",
        "$argon2id$v=19$m=19456,t=2,p=1$7EJhFqXaerKLOGGiHRR3YA$2gECSg08ms13Gh8kqRjcV0AZo4EmLW7fSfmQ0qZqi60",
    ),
];

/// Seeded accounts whose tokens carry [`ROLE_ADMIN`]: the instructor's view
/// of every customer's orders. The role belongs to the seeded account, not
/// to the name, so with `AUTH_SEED_USERS=false` nobody can register it.
pub const DEMO_ADMINS: &[&str] = &["operator"];
pub use cloudmart_model::{GUEST, ROLE_ADMIN, ROLE_CUSTOMER};

#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) users: Arc<RwLock<HashMap<String, String>>>,
    /// Seeded accounts with the admin role.
    pub(crate) admins: Arc<Vec<String>>,
    pub(crate) hasher: Hasher,
    pub(crate) encoding: Arc<EncodingKey>,
    pub(crate) decoding: Arc<DecodingKey>,
    pub(crate) ttl: Duration,
    pub(crate) store: Arc<dyn AuthStore>,
    pub(crate) limits: LoginLimits,
    pub(crate) token_cache: Duration,
    pub(crate) trusted_proxy_hops: usize,
    pub(crate) metrics: AuthMetrics,
}

/// The routes, served under both `/auth` and `/api/auth` so the gateway can
/// forward paths untouched.
fn routes(state: AppState) -> Router {
    let auth = Router::new()
        .route("/register", post(register))
        .route("/login", post(login))
        .route("/validate", post(validate))
        .route("/logout", post(logout))
        .with_state(state);
    Router::new()
        .nest("/auth", auth.clone())
        .nest("/api/auth", auth)
}

/// Readiness: Redis answers `PING`. Not required: while Redis is down,
/// validation still works (fail open) and only logins fail, so taking every
/// replica out of the Service would turn a partial outage into a full one.
struct RedisCheck(Arc<dyn AuthStore>);

impl Check for RedisCheck {
    fn name(&self) -> &str {
        self.0.backend()
    }
    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move { self.0.ping().await.map_err(|e| e.to_string()) })
    }
    fn required(&self) -> bool {
        false
    }
}

/// The service, as `cloudmart_run` builds and runs it.
pub struct Application;

impl Service for Application {
    const NAME: &'static str = NAME;
    const PORT: Setting<u16> = PORT;
    type Config = Config;

    async fn build(config: Config) -> Result<App, StartupError> {
        let mut metrics = MetricsBuilder::new();
        let hasher = Hasher::new(config.hash_concurrency, metrics.registry());
        let auth_metrics = AuthMetrics::new(metrics.registry());
        let metrics = metrics.build();
        let (store, checks): (Arc<dyn AuthStore>, Vec<Box<dyn Check>>) = match &config.redis {
            Some(redis) => {
                let store = Arc::new(RedisStore::new(redis, auth_metrics.redis_errors())?);
                tracing::info!(redis = store.target(), prefix = %redis.key_prefix, "using Redis at {} for login limits, revocations and the token cache", store.target());
                tokio::spawn(announce(store.clone()));
                let store: Arc<dyn AuthStore> = store;
                (store.clone(), vec![Box::new(RedisCheck(store))])
            }
            None => {
                tracing::info!(
                    "REDIS_URL is not set; login limits, revocations and the token cache are in memory, per process"
                );
                (Arc::new(MemoryStore::new()), Vec::new())
            }
        };
        let secret = match config.jwt_secret {
            Some(s) => s,
            None => {
                tracing::info!("JWT_SECRET is not set; signing with a random key for this process");
                let mut key = vec![0u8; 32];
                fastrand::fill(&mut key);
                Secret(Arc::new(key))
            }
        };
        let mut users = HashMap::new();
        let mut admins = Vec::new();
        if config.seed_users {
            for (name, _, hash) in DEMO_USERS {
                users.insert((*name).to_owned(), (*hash).to_owned());
            }
            admins.extend(DEMO_ADMINS.iter().map(|a| (*a).to_owned()));
            tracing::info!(users = DEMO_USERS.len(), "demo users created");
        }
        let state = AppState {
            users: Arc::new(RwLock::new(users)),
            admins: Arc::new(admins),
            hasher,
            encoding: Arc::new(EncodingKey::from_secret(&secret.0)),
            decoding: Arc::new(DecodingKey::from_secret(&secret.0)),
            ttl: config.token_ttl,
            store,
            limits: config.limits,
            token_cache: config.token_cache,
            trusted_proxy_hops: config.trusted_proxy_hops,
            metrics: auth_metrics,
        };
        let health = Health::new(NAME, checks, metrics.clone());
        let router = server::standard(NAME, routes(state), health, metrics, &config.server);
        Ok(App::new(Server::bind(&config.server, router).await?))
    }
}

/// Says at start-up whether Redis answers, without holding start-up back:
/// a trainee sees at once why logins answer 503.
async fn announce(store: Arc<RedisStore>) {
    match store.ping().await {
        Ok(()) => tracing::info!(
            redis = store.target(),
            "Redis at {} answers",
            store.target()
        ),
        Err(e) => tracing::warn!(
            redis = store.target(),
            error = %e,
            "Redis does not answer yet; logins answer 503 until it does, tokens are still validated: {e}"
        ),
    }
}
