//! HS256 tokens: issuing one at login and checking one at validation or
//! logout.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, Validation};
use serde::{Deserialize, Serialize};

use crate::config::MAX_TTL_SECS;
use crate::handlers::AuthError;
use crate::{AppState, ROLE_ADMIN};

/// Clock skew tolerated on `exp`.
pub(crate) const LEEWAY_SECS: u64 = 5;

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

pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Signs a token for `username`, carrying the admin role for seeded admins.
pub(crate) fn issue(s: &AppState, username: &str) -> Result<String, AuthError> {
    let iat = now_secs();
    let claims = Claims {
        sub: username.to_owned(),
        iat,
        exp: iat + s.ttl.as_secs(),
        jti: uuid::Uuid::new_v4().to_string(),
        role: s
            .admins
            .iter()
            .any(|a| a == username)
            .then(|| ROLE_ADMIN.to_owned()),
    };
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(Algorithm::HS256),
        &claims,
        &s.encoding,
    )
    .map_err(|e| AuthError::Internal(format!("signing a token failed: {e}")))
}

/// Checks the signature and expiry: the claims, or why the token is refused.
pub(crate) fn verify(s: &AppState, token: &str) -> Result<Claims, AuthError> {
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
