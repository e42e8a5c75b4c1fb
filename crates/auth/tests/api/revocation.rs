//! Logout: the token is revoked until it expires, including when it was
//! already in the validation cache; other tokens stay valid.

use serde_json::Value;

use crate::helpers::{Backend, error_of, spawn_app};

async fn logout_revokes_only_that_token(backend: Backend) {
    // Arrange: two sessions of one user; the first is validated (and cached).
    let app = spawn_app(&backend, &[]).await;
    let first = app.token("alice").await;
    let second = app.token("alice").await;
    assert_eq!(app.validate(&first).await.status(), 200);

    // Act
    let r = app.logout(Some(&first)).await;

    // Assert
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body, serde_json::json!({"revoked": true}));

    let revoked = app.validate(&first).await;
    assert_eq!(revoked.status(), 401);
    let (code, message) = error_of(revoked).await;
    assert_eq!(code, "unauthorized");
    assert_eq!(message, "the token has been revoked");

    let still = app.validate(&second).await;
    assert_eq!(still.status(), 200, "other tokens stay valid");
    let body: Value = still.json().await.unwrap();
    assert_eq!(body["subject"], "alice");

    assert_eq!(
        app.logout(Some(&first)).await.status(),
        200,
        "logging out twice is harmless"
    );
    app.stop().await;
}

#[tokio::test]
async fn logout_revokes_only_that_token_in_memory() {
    logout_revokes_only_that_token(Backend::Memory).await;
}

#[tokio::test]
async fn logout_revokes_only_that_token_in_redis() {
    let Some(redis) = Backend::redis("logout_revokes_only_that_token_in_redis") else {
        return;
    };
    logout_revokes_only_that_token(redis).await;
}

#[tokio::test]
async fn logout_needs_a_valid_token() {
    // Arrange
    let app = spawn_app(&Backend::Memory, &[]).await;

    // Act
    let missing = app.logout(None).await;
    let forged = app.logout(Some("not.a.token")).await;

    // Assert
    assert_eq!(missing.status(), 401);
    let (_, message) = error_of(missing).await;
    assert!(message.contains("Bearer"), "{message}");
    assert_eq!(forged.status(), 401);
    app.stop().await;
}

#[tokio::test]
async fn a_redis_revocation_expires_with_the_token() {
    // Arrange
    let Some(redis) = Backend::redis("a_redis_revocation_expires_with_the_token") else {
        return;
    };
    let app = spawn_app(&redis, &[("JWT_TTL_SECS", "120")]).await;
    let token = app.token("bob").await;

    // Act
    assert_eq!(app.logout(Some(&token)).await.status(), 200);

    // Assert: one revocation key, living no longer than the token (plus leeway).
    let keys = app.keys("revoked:").await;
    assert_eq!(keys.len(), 1, "{keys:?}");
    let mut conn = app.redis().await;
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&keys[0])
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!((100_000..=125_000).contains(&ttl), "revoked for {ttl} ms");
    assert!(
        app.keys("token:").await.is_empty(),
        "no cache entry for a revoked token"
    );
    app.stop().await;
}
