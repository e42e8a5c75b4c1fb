//! Redis going away: validation fails open (signed tokens still pass, with
//! one warning per request), login and logout fail closed with a fast 503
//! naming Redis, readiness says `degraded` without going unready, and
//! everything works again once Redis is back, with no restart.

use std::time::{Duration, Instant};

use cloudmart_auth::Claims;
use cloudmart_testkit::proxy::TcpProxy;
use cloudmart_testkit::servers::{address, authority};
use cloudmart_testkit::{closed_port, wait_until};
use serde_json::Value;

use crate::helpers::{Backend, JWT_SECRET, TestApp, error_of, logs, retry_after, spawn_with_redis};

/// How long a failing Redis may hold a request: well under the 2 s SLA.
const FAST: Duration = Duration::from_secs(2);
const FAIL_OPEN_WARNING: &str = "Redis unavailable, validating token without revocation check";

/// `url` with its host and port replaced by the proxy's.
fn through(proxy: &TcpProxy, url: &str) -> String {
    let real = authority(url).expect("REDIS_URL has a host");
    url.replacen(&real, &proxy.host_port(), 1)
}

/// A token signed with the test key, as auth-service would issue it.
fn signed_token(sub: &str) -> String {
    let iat = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = Claims {
        sub: sub.to_owned(),
        iat,
        exp: iat + 600,
        jti: format!("test-{iat}-{sub}"),
        role: None,
    };
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap()
}

/// Login while Redis is down: a fast 503 naming Redis, with `Retry-After`.
async fn assert_login_fails_fast_naming_redis(app: &TestApp) {
    let started = Instant::now();
    let r = app.login("alice", "alice-secret", None).await;
    let took = started.elapsed();
    assert_eq!(r.status(), 503);
    assert!(took < FAST, "a login with Redis down took {took:?}");
    assert!(retry_after(&r).is_some(), "503 carries Retry-After");
    let (code, message) = error_of(r).await;
    assert_eq!(code, "dependency_unavailable");
    assert_eq!(
        message,
        "Redis is unavailable; login is disabled until it returns"
    );
}

/// Validation while Redis is down: 200 for a signed token, fast, with
/// exactly one warning naming Redis in that request's log lines.
async fn assert_validation_fails_open(app: &TestApp, token: &str, subject: &str) {
    let started = Instant::now();
    let r = app.validate(token).await;
    let took = started.elapsed();
    assert_eq!(r.status(), 200, "a signed token passes while Redis is down");
    assert!(took < FAST, "a validation with Redis down took {took:?}");
    let traceparent = r.headers()["traceparent"].to_str().unwrap().to_owned();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["subject"], subject);
    let warnings: Vec<Value> = logs()
        .of_trace(&traceparent)
        .into_iter()
        .filter(|l| {
            l["level"] == "WARN"
                && l["message"]
                    .as_str()
                    .is_some_and(|m| m.contains(FAIL_OPEN_WARNING))
        })
        .collect();
    assert_eq!(warnings.len(), 1, "one warning per request: {warnings:?}");
}

/// Readiness while Redis is down: still 200, `degraded`, naming Redis.
async fn assert_degraded(app: &TestApp) {
    let (status, body) = app.get("/ready").await;
    assert_eq!(status, 200, "auth stays in the load balancer: {body}");
    assert_eq!(body["status"], "degraded", "{body}");
    assert_ne!(body["checks"]["Redis"], "ok", "{body}");
}

/// Polls until a login works again.
async fn assert_login_recovers(app: &TestApp) {
    let recovered = wait_until(Duration::from_secs(10), || async {
        (app.login("alice", "alice-secret", None).await.status() == 200).then_some(())
    })
    .await;
    assert!(recovered.is_some(), "login works again once Redis is back");
    let (status, body) = app.get("/ready").await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ready")));
}

#[tokio::test]
async fn a_redis_cut_keeps_validation_open_and_login_closed_until_redis_returns() {
    // Arrange: auth talks to Redis through a proxy the test can cut.
    let Some(Backend::Redis(url)) =
        Backend::redis("a_redis_cut_keeps_validation_open_and_login_closed_until_redis_returns")
    else {
        return;
    };
    let proxy = TcpProxy::start(address(&url).expect("REDIS_URL resolves"))
        .await
        .unwrap();
    let app = spawn_with_redis(Some(&through(&proxy, &url)), Some(&url), &[]).await;
    let alice = app.token("alice").await;
    let bob = app.token("bob").await;
    assert_eq!(app.validate(&alice).await.status(), 200, "alice is cached");
    let (status, body) = app.get("/ready").await;
    assert_eq!(
        (status, body["checks"]["Redis"].as_str()),
        (200, Some("ok"))
    );

    // Act
    proxy.cut();

    // Assert: validation fails open, cached or not; a bad token is still refused.
    assert_validation_fails_open(&app, &alice, "alice").await;
    assert_validation_fails_open(&app, &bob, "bob").await;
    assert_eq!(app.validate("not.a.token").await.status(), 401);
    // Login and logout fail closed, fast, naming Redis.
    assert_login_fails_fast_naming_redis(&app).await;
    let r = app.logout(Some(&bob)).await;
    assert_eq!(r.status(), 503);
    let (_, message) = error_of(r).await;
    assert!(message.contains("Redis"), "{message}");
    assert_degraded(&app).await;
    assert!(app.metric("auth_redis_errors_total").await >= 3.0);
    assert!(
        app.metric(r#"auth_logins_total{outcome="unavailable"}"#)
            .await
            >= 1.0
    );

    // After the cut: the same process serves again by itself.
    proxy.restore();
    assert_login_recovers(&app).await;
    assert_eq!(app.logout(Some(&bob)).await.status(), 200);
    assert_eq!(app.validate(&bob).await.status(), 401);
    app.stop().await;
}

#[tokio::test]
async fn auth_starts_while_redis_is_down_and_recovers_by_itself() {
    // Arrange: Redis is unreachable before auth starts.
    let Some(Backend::Redis(url)) =
        Backend::redis("auth_starts_while_redis_is_down_and_recovers_by_itself")
    else {
        return;
    };
    let proxy = TcpProxy::start(address(&url).expect("REDIS_URL resolves"))
        .await
        .unwrap();
    proxy.cut();

    // Act
    let app = spawn_with_redis(Some(&through(&proxy, &url)), Some(&url), &[]).await;

    // Assert
    assert_eq!(app.get("/health").await.0, 200);
    assert_login_fails_fast_naming_redis(&app).await;
    assert_degraded(&app).await;
    proxy.restore();
    assert_login_recovers(&app).await;
    app.stop().await;
}

#[tokio::test]
async fn an_unreachable_redis_fails_login_fast_and_validation_open() {
    // Arrange: nothing listens at REDIS_URL (no real Redis needed).
    let url = format!("redis://127.0.0.1:{}", closed_port());
    let app = spawn_with_redis(Some(&url), None, &[]).await;

    // Act and assert
    assert_login_fails_fast_naming_redis(&app).await;
    assert_validation_fails_open(&app, &signed_token("carol"), "carol").await;
    assert_degraded(&app).await;
    app.stop().await;
}

#[tokio::test]
async fn a_redis_that_never_answers_fails_login_fast_and_validation_open() {
    // Arrange: a server that accepts connections and never replies, like a
    // Redis behind a network partition or stuck in a long command.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("redis://{}", listener.local_addr().unwrap());
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let app = spawn_with_redis(Some(&url), None, &[("REDIS_TIMEOUT_MS", "300")]).await;

    // Act and assert
    assert_login_fails_fast_naming_redis(&app).await;
    assert_validation_fails_open(&app, &signed_token("dave"), "dave").await;
    app.stop().await;
    silent.abort();
}
