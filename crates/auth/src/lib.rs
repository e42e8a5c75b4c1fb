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

mod client_addr;
mod metrics;
mod password;
pub mod redis_store;
pub mod store;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Router};
use cloudmart_config::{ConfigError, Env, EnvReader, EnvVar, port_var};
use cloudmart_http::error::{ApiError, Json};
use cloudmart_http::health::{Check, Health};
use cloudmart_http::metrics::MetricsBuilder;
use cloudmart_http::server::{self, Server, ServerConfig};
use cloudmart_run::{App, Service, StartupError};
use futures::future::BoxFuture;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Validation};
use serde::{Deserialize, Serialize};

use crate::client_addr::client_addr;
use crate::metrics::{AuthMetrics, LoginOutcome};
pub use crate::password::Hasher;
use crate::redis_store::{RedisConfig, RedisStore};
use crate::store::{AuthStore, CacheEntry, CachedToken, MemoryStore, StoreError, token_key};

/// The binary and image name.
pub const NAME: &str = "auth-service";
/// `PORT`.
pub const PORT: EnvVar = port_var("3000");
/// `JWT_SECRET`.
pub const JWT_SECRET: EnvVar = EnvVar::optional(
    "JWT_SECRET",
    "at least 32 bytes",
    "HS256 signing key; unset means a random key per process (tokens die with it)",
)
.secret();
/// `JWT_TTL_SECS`.
pub const JWT_TTL_SECS: EnvVar = EnvVar::with_default(
    "JWT_TTL_SECS",
    "3600",
    "seconds from 60 to 604800",
    "Lifetime of issued tokens",
);
/// `AUTH_HASH_CONCURRENCY`.
pub const AUTH_HASH_CONCURRENCY: EnvVar = EnvVar::with_default(
    "AUTH_HASH_CONCURRENCY",
    "4",
    "a whole number from 1 to 64",
    "Password hashes computed at once; each holds 19 MiB while it runs",
);
/// `AUTH_SEED_USERS`.
pub const AUTH_SEED_USERS: EnvVar = EnvVar::with_default(
    "AUTH_SEED_USERS",
    "true",
    "true or false",
    "Create the demo users alice/alice-secret, bob/bob-secret and the admin operator/operator-secret at start-up",
);

/// `LOGIN_MAX_PER_ACCOUNT`.
pub const LOGIN_MAX_PER_ACCOUNT: EnvVar = EnvVar::with_default(
    "LOGIN_MAX_PER_ACCOUNT",
    "5",
    "a whole number from 0 to 1000000 (0: no limit)",
    "Failed logins allowed per account in one window; further attempts answer 429 until it ends",
);
/// `LOGIN_MAX_PER_CLIENT`.
pub const LOGIN_MAX_PER_CLIENT: EnvVar = EnvVar::with_default(
    "LOGIN_MAX_PER_CLIENT",
    "10000",
    "a whole number from 0 to 1000000 (0: no limit)",
    "Login attempts allowed per client address in one window, successful ones included; high enough for the load generator",
);
/// `LOGIN_WINDOW_SECS`.
pub const LOGIN_WINDOW_SECS: EnvVar = EnvVar::with_default(
    "LOGIN_WINDOW_SECS",
    "60",
    "seconds from 1 to 86400",
    "Length of the fixed window both login limits count in",
);
/// `TOKEN_CACHE_SECS`.
pub const TOKEN_CACHE_SECS: EnvVar = EnvVar::with_default(
    "TOKEN_CACHE_SECS",
    "60",
    "seconds from 0 to 86400 (0: no cache)",
    "How long a validated token is remembered (never past its expiry)",
);
/// `TRUSTED_PROXY_HOPS`.
pub const TRUSTED_PROXY_HOPS: EnvVar = EnvVar::with_default(
    "TRUSTED_PROXY_HOPS",
    "1",
    "a whole number from 0 to 10",
    "Proxies of ours that append to X-Forwarded-For (1: the gateway); the client is that many entries from the right, 0 uses the TCP peer",
);

/// Seconds a client should wait after a 503 because Redis is down.
const UNAVAILABLE_RETRY_AFTER_SECS: u64 = 1;
/// Clock skew tolerated on `exp`.
const LEEWAY_SECS: u64 = 5;
/// The longest `JWT_TTL_SECS` allowed, so the longest a token of ours lives.
const MAX_TTL_SECS: u64 = 604_800;

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

/// A signing key that never shows up in Debug output or logs.
#[derive(Clone)]
pub struct Secret(Arc<Vec<u8>>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// The two login rate limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginLimits {
    /// Failed logins per account per window; 0 means no limit.
    pub max_failures_per_account: u64,
    /// Attempts per client address per window; 0 means no limit.
    pub max_per_client: u64,
    /// The fixed window both count in.
    pub window: Duration,
}

/// Configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Listener and timeouts.
    pub server: ServerConfig,
    /// Signing key; `None` means generate one.
    pub jwt_secret: Option<Secret>,
    /// Token lifetime.
    pub token_ttl: Duration,
    /// Concurrent hashes.
    pub hash_concurrency: usize,
    /// Whether to create the demo users.
    pub seed_users: bool,
    /// Redis, or `None` for the in-memory store.
    pub redis: Option<RedisConfig>,
    /// Login rate limits.
    pub limits: LoginLimits,
    /// How long a validated token is cached; zero turns the cache off.
    pub token_cache: Duration,
    /// Proxies of ours in front of this service that append to `X-Forwarded-For`.
    pub trusted_proxy_hops: usize,
}

impl Config {
    /// Reads every variable, reporting all problems at once.
    pub fn from_env(env: &dyn Env) -> Result<Self, ConfigError> {
        let mut r = EnvReader::new(env);
        let server = ServerConfig::from_env(&mut r, &PORT);
        let jwt_secret = r.parse_with(&JWT_SECRET, |v| {
            if v.len() >= 32 {
                Ok(Secret(Arc::new(v.as_bytes().to_vec())))
            } else {
                Err(format!("too short ({} bytes)", v.len()))
            }
        });
        let ttl = r.int_in::<u64>(&JWT_TTL_SECS, 60, MAX_TTL_SECS);
        let hash_concurrency = r.int_in::<usize>(&AUTH_HASH_CONCURRENCY, 1, 64);
        let seed_users = r.parse::<bool>(&AUTH_SEED_USERS);
        let redis = RedisConfig::from_env(&mut r);
        let per_account = r.int_in::<u64>(&LOGIN_MAX_PER_ACCOUNT, 0, 1_000_000);
        let per_client = r.int_in::<u64>(&LOGIN_MAX_PER_CLIENT, 0, 1_000_000);
        let window = r.int_in::<u64>(&LOGIN_WINDOW_SECS, 1, 86_400);
        let token_cache = r.int_in::<u64>(&TOKEN_CACHE_SECS, 0, 86_400);
        let hops = r.int_in::<usize>(&TRUSTED_PROXY_HOPS, 0, 10);
        r.finish()?;
        Ok(Self {
            server,
            jwt_secret,
            token_ttl: Duration::from_secs(ttl.unwrap_or(3600)),
            hash_concurrency: hash_concurrency.unwrap_or(4),
            seed_users: seed_users.unwrap_or(true),
            redis,
            limits: LoginLimits {
                max_failures_per_account: per_account.unwrap_or(5),
                max_per_client: per_client.unwrap_or(10_000),
                window: Duration::from_secs(window.unwrap_or(60)),
            },
            token_cache: Duration::from_secs(token_cache.unwrap_or(60)),
            trusted_proxy_hops: hops.unwrap_or(1),
        })
    }
}

/// Token claims.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// The user name.
    pub sub: String,
    /// Issued at, seconds since the epoch.
    pub iat: u64,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// Token id, so one token can be revoked.
    pub jti: String,
    /// `admin` for the operator; absent for customers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

#[derive(Clone)]
struct AppState {
    users: Arc<RwLock<HashMap<String, String>>>,
    /// Seeded accounts with the admin role.
    admins: Arc<Vec<String>>,
    hasher: Hasher,
    encoding: Arc<EncodingKey>,
    decoding: Arc<DecodingKey>,
    ttl: Duration,
    store: Arc<dyn AuthStore>,
    limits: LoginLimits,
    token_cache: Duration,
    trusted_proxy_hops: usize,
    metrics: AuthMetrics,
}

/// Error enum of this service.
#[derive(Debug)]
enum AuthError {
    /// 422: bad user name or password shape.
    Invalid(String),
    /// 409: the user name is taken.
    Taken(String),
    /// 401: wrong credentials or a bad token.
    Unauthorized(&'static str),
    /// 429: a login limit was reached; `Retry-After` is the rest of the window.
    RateLimited {
        /// Which limit, for the client.
        message: String,
        /// Seconds until the window ends.
        retry_after: u64,
    },
    /// 503: Redis cannot be reached; the message names it, the cause is logged.
    Unavailable {
        /// What the client is told.
        message: &'static str,
        /// Why, for the log only.
        cause: StoreError,
    },
    /// 500: hashing failed; logged, not sent.
    Internal(String),
}

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        match self {
            Self::Invalid(m) => ApiError::validation(m),
            Self::Taken(u) => ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                format!("user {u} already exists"),
            ),
            Self::Unauthorized(m) => ApiError::unauthorized(m),
            Self::RateLimited {
                message,
                retry_after,
            } => ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message)
                .with_retry_after(retry_after),
            Self::Unavailable { message, cause } => {
                tracing::warn!(error = %cause, "{message}: {cause}");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    cloudmart_http::error::DEPENDENCY_UNAVAILABLE,
                    message,
                )
                .with_retry_after(UNAVAILABLE_RETRY_AFTER_SECS)
            }
            Self::Internal(m) => {
                tracing::error!(error = %m, "auth failure: {m}");
                ApiError::internal()
            }
        }
        .into_response()
    }
}

#[derive(Debug, Deserialize)]
struct Credentials {
    username: String,
    password: String,
}

fn validate_credentials(c: &Credentials) -> Result<(), AuthError> {
    let name_ok = (3..=64).contains(&c.username.len())
        && c.username
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || "._-@".contains(ch));
    if !name_ok {
        return Err(AuthError::Invalid(
            "username must be 3 to 64 characters of letters, digits, '.', '_', '-' or '@'"
                .to_owned(),
        ));
    }
    if c.username.eq_ignore_ascii_case(GUEST) {
        // Guest orders are readable by id alone; an account named guest
        // would see them all in its list.
        return Err(AuthError::Invalid(format!(
            "username {GUEST} is reserved for callers without a token"
        )));
    }
    if !(8..=128).contains(&c.password.chars().count()) {
        return Err(AuthError::Invalid(
            "password must be 8 to 128 characters".to_owned(),
        ));
    }
    Ok(())
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

async fn register(
    State(s): State<AppState>,
    Json(c): Json<Credentials>,
) -> Result<Response, AuthError> {
    validate_credentials(&c)?;
    if s.users
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .contains_key(&c.username)
    {
        return Err(AuthError::Taken(c.username));
    }
    let hash = s
        .hasher
        .hash(c.password)
        .await
        .map_err(AuthError::Internal)?;
    let mut users = s
        .users
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if users.contains_key(&c.username) {
        return Err(AuthError::Taken(c.username));
    }
    users.insert(c.username.clone(), hash);
    drop(users);
    tracing::info!(user = %c.username, "registered user {}", c.username);
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({"username": c.username})),
    )
        .into_response())
}

/// The rate-limit key of an account: the name itself when it could be a
/// user name (readable in `redis-cli`), otherwise its hash, so a 64 KiB
/// "name" cannot become a 64 KiB key.
fn account_id(username: &str) -> String {
    let plausible = (1..=64).contains(&username.len())
        && username
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || "._-@".contains(ch));
    if plausible {
        username.to_owned()
    } else {
        format!("sha256:{}", token_key(username))
    }
}

/// Login when Redis is down: refuse, since the limits cannot be kept.
fn login_unavailable(s: &AppState, cause: StoreError) -> AuthError {
    s.metrics.login(LoginOutcome::Unavailable);
    AuthError::Unavailable {
        message: "Redis is unavailable; login is disabled until it returns",
        cause,
    }
}

async fn login(
    State(s): State<AppState>,
    peer: Option<Extension<ConnectInfo<std::net::SocketAddr>>>,
    headers: HeaderMap,
    Json(c): Json<Credentials>,
) -> Result<Json<serde_json::Value>, AuthError> {
    let client = client_addr(
        &headers,
        peer.map(|Extension(ConnectInfo(addr))| addr),
        s.trusted_proxy_hops,
    );
    let account = account_id(&c.username);
    let limits = s.limits;
    let counts = s
        .store
        .count_attempt(&client, &account, limits.window)
        .await
        .map_err(|e| login_unavailable(&s, e))?;
    if limits.max_per_client > 0 && counts.client.count > limits.max_per_client {
        let retry_after = counts.client.retry_after_secs();
        tracing::info!(client = %client, "login rate limit reached for client {client}");
        s.metrics.login(LoginOutcome::RateLimited);
        return Err(AuthError::RateLimited {
            message: format!(
                "too many login attempts from this address; try again in {retry_after} s"
            ),
            retry_after,
        });
    }
    if limits.max_failures_per_account > 0
        && counts.account_failures.count >= limits.max_failures_per_account
    {
        let retry_after = counts.account_failures.retry_after_secs();
        tracing::info!(user = %c.username, client = %client, "login rate limit reached for user {}", c.username);
        s.metrics.login(LoginOutcome::RateLimited);
        return Err(AuthError::RateLimited {
            message: format!(
                "too many failed logins for this account; try again in {retry_after} s"
            ),
            retry_after,
        });
    }
    let stored = s
        .users
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(&c.username)
        .cloned();
    // Unknown users cost a hash too, so response time does not reveal which names exist.
    let known = stored.is_some();
    let ok = s
        .hasher
        .verify(c.password, stored)
        .await
        .map_err(AuthError::Internal)?;
    if !(ok && known) {
        s.store
            .count_failure(&account, limits.window)
            .await
            .map_err(|e| login_unavailable(&s, e))?;
        tracing::info!(user = %c.username, client = %client, "failed login for {}", c.username);
        s.metrics.login(LoginOutcome::Failure);
        return Err(AuthError::Unauthorized("invalid username or password"));
    }
    let iat = now_secs();
    let claims = Claims {
        sub: c.username.clone(),
        iat,
        exp: iat + s.ttl.as_secs(),
        jti: uuid::Uuid::new_v4().to_string(),
        role: s
            .admins
            .contains(&c.username)
            .then(|| ROLE_ADMIN.to_owned()),
    };
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(Algorithm::HS256),
        &claims,
        &s.encoding,
    )
    .map_err(|e| AuthError::Internal(format!("signing a token failed: {e}")))?;
    tracing::info!(user = %c.username, "user {} logged in", c.username);
    s.metrics.login(LoginOutcome::Success);
    Ok(Json(serde_json::json!({
        "token": token,
        "token_type": "Bearer",
        "expires_in": s.ttl.as_secs(),
    })))
}

/// The bearer token in `Authorization`, `Ok(None)` when there is none.
fn bearer(headers: &HeaderMap) -> Result<Option<&str>, AuthError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| AuthError::Unauthorized("the Authorization header is not valid text"))?;
    match value.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(Some(token.trim()))
        }
        _ => Err(AuthError::Unauthorized(
            "expected Authorization: Bearer <token>",
        )),
    }
}

/// Checks the signature and expiry: the claims, or why the token is refused.
fn verify(s: &AppState, token: &str) -> Result<Claims, AuthError> {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = LEEWAY_SECS;
    let claims = jsonwebtoken::decode::<Claims>(token, &s.decoding, &validation)
        .map(|data| data.claims)
        .map_err(|e| {
            let why = match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => "the token has expired",
                jsonwebtoken::errors::ErrorKind::InvalidSignature => {
                    "the token signature is invalid"
                }
                _ => "the token is malformed",
            };
            tracing::info!(reason = why, "rejected token: {why}");
            AuthError::Unauthorized(why)
        })?;
    // No token of ours lives longer than the longest JWT_TTL_SECS; a later
    // expiry would outlive any revocation of it.
    if claims.exp > now_secs().saturating_add(MAX_TTL_SECS + LEEWAY_SECS) {
        tracing::info!(
            reason = "expiry too far",
            "rejected token: its expiry is further away than any token this service issues"
        );
        return Err(AuthError::Unauthorized(
            "the token's expiry is further away than any token this service issues",
        ));
    }
    Ok(claims)
}

fn valid(subject: &str, role: Option<&str>, expires_at: u64) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "valid": true,
        "guest": false,
        "subject": subject,
        "role": role.unwrap_or(ROLE_CUSTOMER),
        "expires_at": expires_at,
    }))
}

/// Redis failed during validation: say so once, and carry on without it.
fn warn_fail_open(cause: &StoreError) {
    tracing::warn!(error = %cause, "Redis unavailable, validating token without revocation check: {cause}");
}

async fn validate(
    State(s): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, AuthError> {
    let Some(token) = bearer(&headers)? else {
        return Ok(Json(
            serde_json::json!({"valid": true, "guest": true, "subject": GUEST, "role": GUEST}),
        ));
    };
    let key = token_key(token);
    let caching = !s.token_cache.is_zero();
    if caching {
        match s.store.cached(&key).await {
            // The entry never outlives the token; the check guards a clock jump.
            Ok(Some(hit)) if hit.exp.saturating_add(LEEWAY_SECS) >= now_secs() => {
                s.metrics.cache(true);
                return Ok(valid(&hit.sub, hit.role.as_deref(), hit.exp));
            }
            Ok(_) => s.metrics.cache(false),
            Err(e) => {
                warn_fail_open(&e);
                let claims = verify(&s, token)?;
                return Ok(valid(&claims.sub, claims.role.as_deref(), claims.exp));
            }
        }
    }
    let claims = verify(&s, token)?;
    let remaining = Duration::from_secs(claims.exp.saturating_sub(now_secs()));
    let cached = CachedToken {
        sub: claims.sub.clone(),
        exp: claims.exp,
        role: claims.role.clone(),
    };
    let ttl = s.token_cache.min(remaining);
    let entry = (!ttl.is_zero()).then_some(CacheEntry {
        key: &key,
        token: &cached,
        ttl,
    });
    match s.store.is_revoked_else_cache(&claims.jti, entry).await {
        Ok(true) => {
            tracing::info!(user = %claims.sub, reason = "revoked", "rejected token: the token has been revoked");
            Err(AuthError::Unauthorized("the token has been revoked"))
        }
        Ok(false) => Ok(valid(&claims.sub, claims.role.as_deref(), claims.exp)),
        Err(e) => {
            warn_fail_open(&e);
            Ok(valid(&claims.sub, claims.role.as_deref(), claims.exp))
        }
    }
}

/// Revokes the caller's token until it expires.
async fn logout(
    State(s): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, AuthError> {
    let token = bearer(&headers)?.ok_or(AuthError::Unauthorized(
        "logout needs Authorization: Bearer <token>",
    ))?;
    let claims = verify(&s, token)?;
    // Revoked until the last second validation could still accept it.
    let ttl = Duration::from_secs(
        claims
            .exp
            .saturating_add(LEEWAY_SECS)
            .saturating_sub(now_secs())
            .max(1),
    );
    s.store
        .revoke(&claims.jti, &token_key(token), ttl)
        .await
        .map_err(|cause| AuthError::Unavailable {
            message: "Redis is unavailable; logout is disabled until it returns",
            cause,
        })?;
    tracing::info!(user = %claims.sub, jti = %claims.jti, "user {} logged out", claims.sub);
    Ok(Json(serde_json::json!({"revoked": true})))
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
    const PORT: EnvVar = PORT;
    type Config = Config;

    fn service_env_vars() -> Vec<EnvVar> {
        let mut v = vec![
            PORT,
            JWT_SECRET,
            JWT_TTL_SECS,
            AUTH_HASH_CONCURRENCY,
            AUTH_SEED_USERS,
            LOGIN_MAX_PER_ACCOUNT,
            LOGIN_MAX_PER_CLIENT,
            LOGIN_WINDOW_SECS,
            TOKEN_CACHE_SECS,
            TRUSTED_PROXY_HOPS,
        ];
        v.extend_from_slice(redis_store::ENV);
        v
    }

    fn config(env: &dyn Env) -> Result<Config, ConfigError> {
        Config::from_env(env)
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> Result<Config, String> {
        let env: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::from_env(&env).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_leave_room_for_the_load_generator() {
        let c = config(&[]).unwrap();
        assert!(c.redis.is_none());
        assert_eq!(c.limits.max_failures_per_account, 5);
        assert_eq!(c.limits.max_per_client, 10_000);
        assert_eq!(c.limits.window, Duration::from_secs(60));
        assert_eq!(c.token_cache, Duration::from_secs(60));
        assert_eq!(c.trusted_proxy_hops, 1);
    }

    #[test]
    fn every_bad_variable_is_named_at_once() {
        let line = config(&[
            ("LOGIN_MAX_PER_ACCOUNT", "-1"),
            ("LOGIN_MAX_PER_CLIENT", "many"),
            ("LOGIN_WINDOW_SECS", "0"),
            ("TOKEN_CACHE_SECS", "1.5"),
            ("TRUSTED_PROXY_HOPS", "11"),
            ("REDIS_URL", "localhost:6379"),
        ])
        .unwrap_err();
        for name in [
            "LOGIN_MAX_PER_ACCOUNT",
            "LOGIN_MAX_PER_CLIENT",
            "LOGIN_WINDOW_SECS=\"0\"",
            "TOKEN_CACHE_SECS",
            "TRUSTED_PROXY_HOPS=\"11\"",
            "REDIS_URL=<redacted>",
        ] {
            assert!(line.contains(name), "{name} missing from: {line}");
        }
    }

    #[test]
    fn every_variable_read_is_listed() {
        let listed: Vec<&str> = Application::env_vars().iter().map(|v| v.name).collect();
        for name in [
            "REDIS_URL",
            "REDIS_KEY_PREFIX",
            "REDIS_TIMEOUT_MS",
            "LOGIN_MAX_PER_ACCOUNT",
            "LOGIN_MAX_PER_CLIENT",
            "LOGIN_WINDOW_SECS",
            "TOKEN_CACHE_SECS",
            "TRUSTED_PROXY_HOPS",
        ] {
            assert!(listed.contains(&name), "{name} is not in env_vars()");
        }
    }

    #[test]
    fn account_ids_are_names_or_hashes() {
        assert_eq!(account_id("alice"), "alice");
        let long = "x".repeat(1000);
        let id = account_id(&long);
        assert!(id.starts_with("sha256:") && id.len() == 71, "{id}");
        assert!(account_id("a b").starts_with("sha256:"));
    }
}
