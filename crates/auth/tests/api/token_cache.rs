//! The validated-token cache: repeated validations are hits, counted in
//! `auth_token_cache_lookups_total`; a tampered token never matches a cached one.

use serde_json::Value;

use crate::helpers::{Backend, spawn_app};

const HIT: &str = r#"auth_token_cache_lookups_total{result="hit"}"#;
const MISS: &str = r#"auth_token_cache_lookups_total{result="miss"}"#;

async fn repeated_validations_hit_the_cache(backend: Backend) {
    // Arrange
    let app = spawn_app(&backend, &[]).await;
    let token = app.token("bob").await;

    // Act
    let mut bodies = Vec::new();
    for _ in 0..3 {
        let r = app.validate(&token).await;
        assert_eq!(r.status(), 200);
        bodies.push(r.json::<Value>().await.unwrap());
    }

    // Assert: the first is a miss that fills the cache, then hits with the same answer.
    assert_eq!(app.metric(MISS).await, 1.0);
    assert_eq!(app.metric(HIT).await, 2.0);
    assert_eq!(bodies[0]["subject"], "bob");
    assert_eq!(bodies[0], bodies[2], "a hit answers like a miss");
    app.stop().await;
}

#[tokio::test]
async fn repeated_validations_hit_the_cache_in_memory() {
    repeated_validations_hit_the_cache(Backend::Memory).await;
}

#[tokio::test]
async fn repeated_validations_hit_the_cache_in_redis() {
    let Some(redis) = Backend::redis("repeated_validations_hit_the_cache_in_redis") else {
        return;
    };
    repeated_validations_hit_the_cache(redis).await;
}

async fn a_tampered_token_never_hits(backend: Backend) {
    // Arrange: the genuine token is cached.
    let app = spawn_app(&backend, &[]).await;
    let token = app.token("alice").await;
    assert_eq!(app.validate(&token).await.status(), 200);
    // Change the signature's first character (the last one is partly padding bits).
    let (signed, signature) = token.rsplit_once('.').unwrap();
    let first = if signature.starts_with('A') { 'B' } else { 'A' };
    let tampered = format!("{signed}.{first}{}", &signature[1..]);

    // Act
    let r = app.validate(&tampered).await;

    // Assert
    assert_eq!(r.status(), 401);
    assert_eq!(app.metric(HIT).await, 0.0);
    app.stop().await;
}

#[tokio::test]
async fn a_tampered_token_never_hits_in_memory() {
    a_tampered_token_never_hits(Backend::Memory).await;
}

#[tokio::test]
async fn a_tampered_token_never_hits_in_redis() {
    let Some(redis) = Backend::redis("a_tampered_token_never_hits_in_redis") else {
        return;
    };
    a_tampered_token_never_hits(redis).await;
}

#[tokio::test]
async fn a_zero_cache_time_turns_the_cache_off() {
    // Arrange
    let app = spawn_app(&Backend::Memory, &[("TOKEN_CACHE_SECS", "0")]).await;
    let token = app.token("alice").await;

    // Act
    for _ in 0..2 {
        assert_eq!(app.validate(&token).await.status(), 200);
    }

    // Assert
    assert_eq!(app.metric(HIT).await + app.metric(MISS).await, 0.0);
    app.stop().await;
}
