//! `PATCH /orders/{id}/notification` on the embedded store: the states are
//! the strings order-service sends, and anything else is refused with the
//! answer it always had.

use cloudmart_testkit::TempDir;
use serde_json::{Value, json};

use crate::helpers::spawn_db;

#[tokio::test]
async fn a_known_state_is_recorded_and_an_unknown_one_is_a_422_naming_the_states() {
    let dir = TempDir::new("db-notification-state");
    let db = spawn_db(&[
        ("DB_NAME", "states"),
        ("DATA_DIR", dir.path().to_str().unwrap()),
    ])
    .await;
    let client = reqwest::Client::new();
    let order = json!({"id": "o-1", "customer": "guest", "items": [{"item": "laptop", "quantity": 1}], "idempotency_key": "k-1"});
    let created = client
        .post(format!("{}/orders", db.url))
        .json(&order)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let patch = |body: Value| {
        client
            .patch(format!("{}/orders/o-1/notification", db.url))
            .json(&body)
            .send()
    };

    let published = patch(json!({"notification": "published"})).await.unwrap();
    let unknown = patch(json!({"notification": "sent"})).await.unwrap();
    let missing = patch(json!({})).await.unwrap();

    assert_eq!(published.status(), 200);
    let order: Value = published.json().await.unwrap();
    assert_eq!(order["notification"], "published");
    assert_eq!(unknown.status(), 422);
    let body: Value = unknown.json().await.unwrap();
    assert_eq!(body["error"]["code"], "validation_failed");
    assert_eq!(
        body["error"]["message"],
        r#"notification must be "pending", "published" or "notified""#
    );
    assert_eq!(missing.status(), 422);
    let body: Value = missing.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_body");
    db.stop().await;
}
