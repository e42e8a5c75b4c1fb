//! Login rate limits: failed attempts per account, all attempts per client
//! address, both answering 429 with `Retry-After` until the window ends.

use std::time::Duration;

use cloudmart_testkit::wait_until;

use crate::helpers::{Backend, error_of, retry_after, spawn_app};

async fn failed_logins_lock_only_that_account(backend: Backend) {
    // Arrange
    let app = spawn_app(&backend, &[("LOGIN_MAX_PER_ACCOUNT", "3")]).await;
    for _ in 0..3 {
        let r = app.login("alice", "wrong-password", None).await;
        assert_eq!(r.status(), 401);
    }

    // Act
    let locked = app.login("alice", "alice-secret", None).await;
    let other = app.login("bob", "bob-secret", None).await;

    // Assert
    assert_eq!(
        locked.status(),
        429,
        "even the right password waits for the window"
    );
    let wait = retry_after(&locked).expect("429 carries Retry-After");
    assert!((1..=60).contains(&wait), "Retry-After {wait}");
    let (code, message) = error_of(locked).await;
    assert_eq!(code, "rate_limited");
    assert!(message.contains("account"), "{message}");
    assert_eq!(other.status(), 200, "other accounts are unaffected");
    assert_eq!(
        app.metric(r#"auth_logins_total{outcome="failure"}"#).await,
        3.0
    );
    assert_eq!(
        app.metric(r#"auth_logins_total{outcome="rate_limited"}"#)
            .await,
        1.0
    );
    assert_eq!(
        app.metric(r#"auth_logins_total{outcome="success"}"#).await,
        1.0
    );
    app.stop().await;
}

#[tokio::test]
async fn failed_logins_lock_only_that_account_in_memory() {
    failed_logins_lock_only_that_account(Backend::Memory).await;
}

#[tokio::test]
async fn failed_logins_lock_only_that_account_in_redis() {
    let Some(redis) = Backend::redis("failed_logins_lock_only_that_account_in_redis") else {
        return;
    };
    failed_logins_lock_only_that_account(redis).await;
}

async fn an_account_lock_lifts_when_the_window_ends(backend: Backend) {
    // Arrange
    let app = spawn_app(
        &backend,
        &[("LOGIN_MAX_PER_ACCOUNT", "1"), ("LOGIN_WINDOW_SECS", "1")],
    )
    .await;
    assert_eq!(app.login("alice", "nope-nope", None).await.status(), 401);
    assert_eq!(app.login("alice", "alice-secret", None).await.status(), 429);

    // Act
    let unlocked = wait_until(Duration::from_secs(5), || async {
        (app.login("alice", "alice-secret", None).await.status() == 200).then_some(())
    })
    .await;

    // Assert
    assert!(unlocked.is_some(), "the lock lifts after the 1 s window");
    app.stop().await;
}

#[tokio::test]
async fn an_account_lock_lifts_when_the_window_ends_in_memory() {
    an_account_lock_lifts_when_the_window_ends(Backend::Memory).await;
}

#[tokio::test]
async fn an_account_lock_lifts_when_the_window_ends_in_redis() {
    let Some(redis) = Backend::redis("an_account_lock_lifts_when_the_window_ends_in_redis") else {
        return;
    };
    an_account_lock_lifts_when_the_window_ends(redis).await;
}

async fn each_client_address_has_its_own_limit(backend: Backend) {
    // Arrange: the limit counts successful logins too.
    let app = spawn_app(&backend, &[("LOGIN_MAX_PER_CLIENT", "3")]).await;
    for user in ["alice", "bob", "alice"] {
        let r = app
            .login(user, &format!("{user}-secret"), Some("198.51.100.1"))
            .await;
        assert_eq!(r.status(), 200);
    }

    // Act
    let limited = app.login("bob", "bob-secret", Some("198.51.100.1")).await;
    let forged = app
        .login("bob", "bob-secret", Some("203.0.113.99, 198.51.100.1"))
        .await;
    let other = app.login("bob", "bob-secret", Some("198.51.100.2")).await;

    // Assert
    assert_eq!(limited.status(), 429);
    let wait = retry_after(&limited).expect("429 carries Retry-After");
    assert!((1..=60).contains(&wait), "Retry-After {wait}");
    let (code, message) = error_of(limited).await;
    assert_eq!(code, "rate_limited");
    assert!(message.contains("address"), "{message}");
    assert_eq!(
        forged.status(),
        429,
        "an entry the client put in front of the gateway's does not change who it is"
    );
    assert_eq!(other.status(), 200, "another address has its own window");
    app.stop().await;
}

#[tokio::test]
async fn each_client_address_has_its_own_limit_in_memory() {
    each_client_address_has_its_own_limit(Backend::Memory).await;
}

#[tokio::test]
async fn each_client_address_has_its_own_limit_in_redis() {
    let Some(redis) = Backend::redis("each_client_address_has_its_own_limit_in_redis") else {
        return;
    };
    each_client_address_has_its_own_limit(redis).await;
}

#[tokio::test]
async fn redis_counters_live_under_the_prefix_and_expire() {
    // Arrange
    let Some(redis) = Backend::redis("redis_counters_live_under_the_prefix_and_expire") else {
        return;
    };
    let app = spawn_app(&redis, &[("LOGIN_WINDOW_SECS", "30")]).await;

    // Act
    let r = app
        .login("alice", "wrong-password", Some("192.0.2.10"))
        .await;

    // Assert
    assert_eq!(r.status(), 401);
    let prefix = app.prefix.clone().unwrap();
    let mut keys = app.keys("login:").await;
    keys.sort();
    assert_eq!(
        keys,
        [
            format!("{prefix}login:account:alice"),
            format!("{prefix}login:client:192.0.2.10"),
        ]
    );
    let mut conn = app.redis().await;
    for key in &keys {
        let ttl: i64 = redis::cmd("PTTL")
            .arg(key)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!((1..=30_000).contains(&ttl), "{key} expires: {ttl} ms");
    }
    app.stop().await;
}
