//! Placing, reading and listing orders through the gateway.

use serde_json::{Value, json};

use crate::helpers::spawn_app;

#[tokio::test]
async fn create_then_get_then_list_newest_first() {
    // Arrange
    let app = spawn_app().await;

    // Act
    let mut ids = Vec::new();
    for i in 0..3 {
        let r = app
            .post_order(&json!({"item": format!("item-{i}"), "quantity": 1}))
            .await;
        assert_eq!(r.status(), 201);
        let order: Value = r.json().await.unwrap();
        ids.push(order["id"].as_str().unwrap().to_owned());
    }
    let got: Value = app.get_json(&format!("/api/orders/{}", ids[0])).await;
    let operator = app.operator().await;
    let (_, page1) = app.get_as("/api/orders?limit=2", &operator).await;
    let cursor = page1["next_cursor"].as_str().expect("a second page exists");
    let (_, page2) = app
        .get_as(&format!("/api/orders?limit=2&cursor={cursor}"), &operator)
        .await;

    // Assert
    assert_eq!(got["id"], ids[0].as_str());
    assert_eq!(got["items"][0]["item"], "item-0");
    assert_eq!(got["customer"], "guest");
    let listed: Vec<&str> = page1["orders"]
        .as_array()
        .unwrap()
        .iter()
        .chain(page2["orders"].as_array().unwrap())
        .map(|o| o["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, [ids[2].as_str(), ids[1].as_str(), ids[0].as_str()]);
    assert!(page2.get("next_cursor").is_none());
    app.stop().await;
}

#[tokio::test]
async fn multi_item_orders_are_stored_whole() {
    let app = spawn_app().await;

    let r = app
        .post_order(&json!({"items": [{"item": "laptop", "quantity": 1}, {"item": "mouse", "quantity": 2}]}))
        .await;

    assert_eq!(r.status(), 201);
    let order: Value = r.json().await.unwrap();
    assert_eq!(order["items"].as_array().unwrap().len(), 2);
    assert_eq!(order["items"][1]["quantity"], 2);
    app.stop().await;
}

#[tokio::test]
async fn a_retried_post_with_the_same_idempotency_key_returns_the_same_order() {
    let app = spawn_app().await;
    let send = || {
        app.client
            .post(format!("{}/api/orders", app.url))
            .header("Idempotency-Key", "checkout-42")
            .json(&json!({"item": "laptop", "quantity": 1}))
            .send()
    };

    let first = send().await.unwrap();
    let second = send().await.unwrap();

    assert_eq!(first.status(), 201);
    assert_eq!(second.status(), 200);
    assert_eq!(second.headers()["idempotent-replayed"], "true");
    let a: Value = first.json().await.unwrap();
    let b: Value = second.json().await.unwrap();
    assert_eq!(a["id"], b["id"]);
    let (_, page) = app.get_as("/api/orders", &app.operator().await).await;
    assert_eq!(
        page["orders"].as_array().unwrap().len(),
        1,
        "only one order is stored"
    );
    app.stop().await;
}

#[tokio::test]
async fn gateway_adds_a_request_id_and_keeps_a_given_one() {
    let app = spawn_app().await;

    let fresh = app.post_order(&json!({"item": "x"})).await;
    let given = app
        .client
        .get(format!("{}/api/orders?limit=1", app.url))
        .bearer_auth(app.operator().await)
        .header("X-Request-Id", "trainee-123")
        .send()
        .await
        .unwrap();

    assert_eq!(fresh.headers()["x-request-id"].len(), 36);
    assert_eq!(given.headers()["x-request-id"], "trainee-123");
    let page: Value = given.json().await.unwrap();
    assert_eq!(
        page["orders"].as_array().unwrap().len(),
        1,
        "the query reached api-service intact"
    );
    app.stop().await;
}

#[tokio::test]
async fn api_health_reports_every_downstream() {
    let app = spawn_app().await;

    let r = app
        .client
        .get(format!("{}/api/health", app.url))
        .send()
        .await
        .unwrap();

    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["downstreams"]["api-service"]["ready"], true);
    assert_eq!(body["downstreams"]["auth-service"]["ready"], true);
    assert_eq!(
        body["downstreams"]["api-service"]["detail"]["checks"]["order-service"],
        "ok"
    );
    app.stop().await;
}

#[tokio::test]
async fn every_order_is_notified() {
    let app = spawn_app().await;
    let order: Value = app
        .post_order(&json!({"item": "laptop"}))
        .await
        .json()
        .await
        .unwrap();
    let id = order["id"].as_str().unwrap().to_owned();

    let notification = app.stack.service("notification-service").unwrap().url();
    let mut notified = false;
    for _ in 0..100 {
        let list: Value = app
            .client
            .get(format!("{notification}/notifications"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if list["recent"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["order_id"] == id.as_str())
        {
            notified = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    assert!(notified, "order {id} was not notified within 2 s");
    app.stop().await;
}

#[tokio::test]
async fn ten_concurrent_posts_with_one_idempotency_key_store_one_order() {
    let app = spawn_app().await;
    let send = || {
        app.client
            .post(format!("{}/api/orders", app.url))
            .header("Idempotency-Key", "double-click-7")
            .json(&json!({"item": "laptop", "quantity": 1}))
            .send()
    };

    let answers = futures::future::join_all((0..10).map(|_| send())).await;

    let mut ids = Vec::new();
    for r in answers {
        let r = r.unwrap();
        assert!(r.status().is_success(), "status {}", r.status());
        let order: Value = r.json().await.unwrap();
        ids.push(order["id"].as_str().unwrap().to_owned());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "every answer carries the same order");
    let (_, page) = app.get_as("/api/orders", &app.operator().await).await;
    assert_eq!(
        page["orders"].as_array().unwrap().len(),
        1,
        "one order is stored"
    );
    app.stop().await;
}
