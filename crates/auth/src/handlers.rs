//! The HTTP handlers: register, login, validate and logout, and the one
//! error type they answer with.

use std::time::Duration;

use axum::Extension;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cloudmart_http::error::{ApiError, Json};
use cloudmart_model::Identity;
use serde::Deserialize;

use crate::client_addr::client_addr;
use crate::metrics::LoginOutcome;
use crate::store::{CacheEntry, CachedToken, StoreError, token_key};
use crate::tokens::{LEEWAY_SECS, issue, now_secs, verify};
use crate::{AppState, GUEST, ROLE_CUSTOMER};

/// Seconds a client should wait after a 503 because Redis is down.
const UNAVAILABLE_RETRY_AFTER_SECS: u64 = 1;

/// Error enum of this service.
#[derive(Debug)]
pub(crate) enum AuthError {
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
pub(crate) struct Credentials {
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

pub(crate) async fn register(
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

pub(crate) async fn login(
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
    let token = issue(&s, &c.username)?;
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

fn valid(subject: &str, role: Option<&str>, expires_at: u64) -> Json<Identity> {
    Json(Identity {
        valid: true,
        guest: false,
        subject: subject.to_owned(),
        role: role.unwrap_or(ROLE_CUSTOMER).to_owned(),
        expires_at: Some(expires_at),
    })
}

/// Redis failed during validation: say so once, and carry on without it.
fn warn_fail_open(cause: &StoreError) {
    tracing::warn!(error = %cause, "Redis unavailable, validating token without revocation check: {cause}");
}

pub(crate) async fn validate(
    State(s): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Identity>, AuthError> {
    let Some(token) = bearer(&headers)? else {
        return Ok(Json(Identity::guest()));
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
pub(crate) async fn logout(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_ids_are_names_or_hashes() {
        assert_eq!(account_id("alice"), "alice");
        let long = "x".repeat(1000);
        let id = account_id(&long);
        assert!(id.starts_with("sha256:") && id.len() == 71, "{id}");
        assert!(account_id("a b").starts_with("sha256:"));
    }
}
