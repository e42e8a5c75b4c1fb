//! Guests, registered users and tokens.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{EncodingKey, Header, encode};
use serde_json::{Value, json};

use crate::helpers::{JWT_SECRET, error_body, spawn_app};

#[tokio::test]
async fn a_caller_without_a_token_orders_as_guest_and_one_with_a_token_as_themselves() {
    let app = spawn_app().await;
    let token = app.login("alice", "alice-secret").await;

    let guest: Value = app
        .post_order(&json!({"item": "laptop"}))
        .await
        .json()
        .await
        .unwrap();
    let r = app
        .client
        .post(format!("{}/api/orders", app.url))
        .bearer_auth(&token)
        .json(&json!({"item": "laptop"}))
        .send()
        .await
        .unwrap();

    assert_eq!(guest["customer"], "guest");
    assert_eq!(r.status(), 201);
    let alice: Value = r.json().await.unwrap();
    assert_eq!(alice["customer"], "alice");
    app.stop().await;
}

#[tokio::test]
async fn register_then_login_and_refuse_duplicates_and_wrong_passwords() {
    let app = spawn_app().await;
    let register = |name: &str, password: &str| {
        app.client
            .post(format!("{}/api/auth/register", app.url))
            .json(&json!({"username": name, "password": password}))
            .send()
    };

    let created = register("carol", "carol-password").await.unwrap();
    let again = register("carol", "another-password").await.unwrap();
    let short = register("dave", "short").await.unwrap();
    let token = app.login("carol", "carol-password").await;
    let wrong = app
        .client
        .post(format!("{}/api/auth/login", app.url))
        .json(&json!({"username": "carol", "password": "not-her-password"}))
        .send()
        .await
        .unwrap();
    let unknown = app
        .client
        .post(format!("{}/api/auth/login", app.url))
        .json(&json!({"username": "nobody", "password": "whatever-it-is"}))
        .send()
        .await
        .unwrap();

    assert_eq!(created.status(), 201);
    assert_eq!(error_body(again, 409).await.0, "conflict");
    assert!(error_body(short, 422).await.1.contains("password"));
    assert_eq!(token.split('.').count(), 3);
    let (code, wrong_msg) = error_body(wrong, 401).await;
    assert_eq!(code, "unauthorized");
    let (_, unknown_msg) = error_body(unknown, 401).await;
    assert_eq!(
        wrong_msg, unknown_msg,
        "unknown users and wrong passwords look the same"
    );
    app.stop().await;
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn forge(secret: &str, exp: u64) -> String {
    let claims = json!({"sub": "mallory", "iat": now() - 7200, "exp": exp, "jti": "x"});
    encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

#[tokio::test]
async fn bad_expired_and_tampered_tokens_are_401() {
    let app = spawn_app().await;
    let good = app.login("bob", "bob-secret").await;
    let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
    parts[1] = parts[1].chars().rev().collect();
    let tampered = parts.join(".");
    let cases = [
        ("garbage", "Bearer not-a-token".to_owned()),
        (
            "wrong key",
            format!(
                "Bearer {}",
                forge("some-other-secret-that-is-long-enough!!", now() + 3600)
            ),
        ),
        (
            "expired",
            format!("Bearer {}", forge(JWT_SECRET, now() - 3600)),
        ),
        ("tampered", format!("Bearer {tampered}")),
        ("wrong scheme", format!("Basic {good}")),
    ];

    for (what, header) in cases {
        let r = app
            .client
            .post(format!("{}/api/orders", app.url))
            .header("Authorization", header)
            .json(&json!({"item": "laptop"}))
            .send()
            .await
            .unwrap();
        let (code, message) = error_body(r, 401).await;
        assert_eq!(code, "unauthorized", "{what}");
        if what == "expired" {
            assert!(message.contains("expired"), "{what}: {message}");
        }
    }
    app.stop().await;
}
