//! Every kind of bad input gets a precise JSON error, never a 5xx or a hang.

use std::collections::HashMap;

use cloudmart_cli::stack::Single;
use serde_json::json;

use cloudmart_testkit::closed_port;

use crate::helpers::{error_body, spawn_app};

#[tokio::test]
async fn malformed_json_wrong_types_and_missing_fields() {
    let app = spawn_app().await;
    let raw = |body: &'static str| {
        app.client
            .post(format!("{}/api/orders", app.url))
            .header("Content-Type", "application/json")
            .body(body)
            .send()
    };

    let (code, _) = error_body(raw(r#"{"item": "laptop", "#).await.unwrap(), 400).await;
    assert_eq!(code, "malformed_json");
    let (code, message) =
        error_body(raw(r#"{"item": 42, "quantity": 1}"#).await.unwrap(), 422).await;
    assert_eq!(code, "invalid_body");
    assert!(message.contains("item"), "{message}");
    let (_, message) = error_body(
        raw(r#"{"item": "laptop", "quantity": "two"}"#)
            .await
            .unwrap(),
        422,
    )
    .await;
    assert!(message.contains("quantity"), "{message}");
    let (_, message) = error_body(raw(r#"{"quantity": 1}"#).await.unwrap(), 422).await;
    assert!(message.contains("missing field"), "{message}");
    let (_, message) = error_body(raw(r#"{"items": [{"quantity": 1}]}"#).await.unwrap(), 422).await;
    assert!(message.contains("item"), "{message}");
    let no_type = app
        .client
        .post(format!("{}/api/orders", app.url))
        .body(r#"{"item":"laptop"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(error_body(no_type, 415).await.0, "unsupported_media_type");
    app.stop().await;
}

#[tokio::test]
async fn quantities_outside_one_to_a_thousand_are_422() {
    let app = spawn_app().await;
    for q in [0, -1, 1001, 5000] {
        let r = app
            .post_order(&json!({"item": "laptop", "quantity": q}))
            .await;
        let (code, message) = error_body(r, 422).await;
        assert_eq!(code, "validation_failed");
        assert!(message.contains(&format!("got {q}")), "{message}");
    }
    let ok = app
        .post_order(&json!({"item": "laptop", "quantity": 1000}))
        .await;
    assert_eq!(ok.status(), 201);
    app.stop().await;
}

#[tokio::test]
async fn bodies_over_64_kib_are_413_at_every_entry() {
    let app = spawn_app().await;
    let big = format!(r#"{{"item":"{}"}}"#, "a".repeat(70 * 1024));
    let api = app.stack.service("api-service").unwrap().url();

    for base in [app.url.as_str(), api.as_str()] {
        let r = app
            .client
            .post(format!("{base}/api/orders"))
            .header("Content-Type", "application/json")
            .body(big.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(error_body(r, 413).await.0, "payload_too_large", "{base}");
    }
    app.stop().await;
}

#[tokio::test]
async fn unknown_routes_are_404_and_wrong_methods_405() {
    let app = spawn_app().await;

    let outside = app
        .client
        .get(format!("{}/nowhere", app.url))
        .send()
        .await
        .unwrap();
    let inside = app
        .client
        .get(format!("{}/api/nowhere", app.url))
        .send()
        .await
        .unwrap();
    let method = app
        .client
        .delete(format!("{}/api/orders", app.url))
        .send()
        .await
        .unwrap();

    assert_eq!(error_body(outside, 404).await.0, "not_found");
    assert_eq!(error_body(inside, 404).await.0, "not_found");
    let (code, message) = error_body(method, 405).await;
    assert_eq!(code, "method_not_allowed");
    assert!(message.contains("DELETE"), "{message}");
    app.stop().await;
}

#[tokio::test]
async fn an_unreachable_downstream_is_a_502_naming_it() {
    let _ = crate::helpers::logs();
    let dead = format!("http://127.0.0.1:{}", closed_port());
    let api_env: HashMap<String, String> = HashMap::from([
        ("PORT".to_owned(), "0".to_owned()),
        ("AUTH_SERVICE_URL".to_owned(), dead.clone()),
        ("ORDER_SERVICE_URL".to_owned(), dead.clone()),
        ("RETRY_MAX_ATTEMPTS".to_owned(), "2".to_owned()),
        ("RETRY_BASE_DELAY_MS".to_owned(), "1".to_owned()),
        ("RETRY_MAX_DELAY_MS".to_owned(), "5".to_owned()),
    ]);
    let api = Single::start::<cloudmart_api::Application>(&api_env)
        .await
        .unwrap();
    let gw_env: HashMap<String, String> = HashMap::from([
        ("PORT".to_owned(), "0".to_owned()),
        ("API_SERVICE_URL".to_owned(), dead.clone()),
        ("AUTH_SERVICE_URL".to_owned(), dead),
    ]);
    let gateway = Single::start::<cloudmart_gateway::Application>(&gw_env)
        .await
        .unwrap();
    let client = reqwest::Client::new();

    let via_api = client
        .post(format!("{}/api/orders", api.url()))
        .json(&json!({"item": "laptop"}))
        .send()
        .await
        .unwrap();
    let via_gateway = client
        .post(format!("{}/api/orders", gateway.url()))
        .json(&json!({"item": "laptop"}))
        .send()
        .await
        .unwrap();
    let ready = client
        .get(format!("{}/ready", api.url()))
        .send()
        .await
        .unwrap();

    let (code, message) = error_body(via_api, 502).await;
    assert_eq!(code, "upstream_unreachable");
    assert!(
        message.contains("auth-service") && message.contains("connection refused"),
        "{message}"
    );
    let (_, message) = error_body(via_gateway, 502).await;
    assert!(
        message.contains("api-service") && message.contains("connection refused"),
        "{message}"
    );
    // Downstreams being down degrade readiness but never cascade into 503.
    assert_eq!(ready.status(), 200);
    let ready: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(ready["status"], "degraded");
    let checks = ready["checks"].to_string();
    assert!(
        checks.contains("auth-service") && checks.contains("connection refused"),
        "{checks}"
    );
    api.stop().await;
    gateway.stop().await;
}
