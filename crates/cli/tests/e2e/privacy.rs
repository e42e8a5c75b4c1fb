//! Order reads are private: a customer lists and reads only their own
//! orders, another customer's order looks exactly like a missing one, a
//! guest's order is readable by its id (the receipt) but guests cannot
//! list, the operator sees everyone's, and a bad token is a 401 everywhere.

use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app};

/// Places an order as the holder of `token` (a guest when `None`); its id.
async fn order_as(app: &TestApp, token: Option<&str>, item: &str) -> String {
    let mut r = app
        .client
        .post(format!("{}/api/orders", app.url))
        .json(&json!({"item": item}));
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    let r = r.send().await.unwrap();
    assert_eq!(r.status(), 201);
    let order: Value = r.json().await.unwrap();
    order["id"].as_str().unwrap().to_owned()
}

/// The ids of a listing, in order.
fn ids(page: &Value) -> Vec<String> {
    page["orders"]
        .as_array()
        .unwrap_or_else(|| panic!("not a page: {page}"))
        .iter()
        .map(|o| o["id"].as_str().unwrap().to_owned())
        .collect()
}

/// An anonymous `GET {path}`: status and body.
async fn anonymous(app: &TestApp, path: &str) -> (u16, Value) {
    let r = app
        .client
        .get(format!("{}{path}", app.url))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test]
async fn each_customer_lists_only_their_own_orders_and_the_operator_lists_all() {
    // Arrange
    let app = spawn_app().await;
    let alice = app.login("alice", "alice-secret").await;
    let bob = app.login("bob", "bob-secret").await;
    let a1 = order_as(&app, Some(&alice), "laptop").await;
    let b1 = order_as(&app, Some(&bob), "mouse").await;
    let g1 = order_as(&app, None, "cable").await;
    let a2 = order_as(&app, Some(&alice), "screen").await;

    // Act
    let (alice_status, alice_page) = app.get_as("/api/orders", &alice).await;
    let (_, bob_page) = app.get_as("/api/orders", &bob).await;
    // Asking for someone else's list changes nothing for a customer.
    let (_, sneaky) = app.get_as("/api/orders?customer=bob", &alice).await;
    let operator = app.operator().await;
    let (_, all) = app.get_as("/api/orders", &operator).await;
    let (_, only_bob) = app.get_as("/api/orders?customer=bob", &operator).await;
    let (guest_status, guest_body) = anonymous(&app, "/api/orders").await;

    // Assert
    assert_eq!(alice_status, 200);
    assert_eq!(ids(&alice_page), [a2.as_str(), a1.as_str()]);
    assert_eq!(ids(&bob_page), [b1.as_str()]);
    assert_eq!(ids(&sneaky), [a2.as_str(), a1.as_str()]);
    assert_eq!(
        ids(&all),
        [a2.as_str(), g1.as_str(), b1.as_str(), a1.as_str()]
    );
    assert_eq!(ids(&only_bob), [b1.as_str()]);
    assert_eq!(guest_status, 401, "{guest_body}");
    let message = guest_body["error"]["message"].as_str().unwrap();
    assert!(message.contains("login"), "{message}");
    app.stop().await;
}

#[tokio::test]
async fn another_customers_order_answers_the_same_404_as_a_missing_one() {
    let app = spawn_app().await;
    let alice = app.login("alice", "alice-secret").await;
    let bob = app.login("bob", "bob-secret").await;
    let mine = order_as(&app, Some(&alice), "laptop").await;
    let receipt = order_as(&app, None, "cable").await;
    let missing = "0193a7f2-7c1e-7d4e-9b1a-3f5c2d1e0a9b";

    let (owner, body) = app.get_as(&format!("/api/orders/{mine}"), &alice).await;
    let (other, other_body) = app.get_as(&format!("/api/orders/{mine}"), &bob).await;
    let (nobody, nobody_body) = anonymous(&app, &format!("/api/orders/{mine}")).await;
    let (absent, absent_body) = app.get_as(&format!("/api/orders/{missing}"), &bob).await;
    let (guest_read, guest_order) = anonymous(&app, &format!("/api/orders/{receipt}")).await;
    let (admin, _) = app
        .get_as(&format!("/api/orders/{mine}"), &app.operator().await)
        .await;

    assert_eq!(owner, 200);
    assert_eq!(body["customer"], "alice");
    assert_eq!((other, nobody, absent), (404, 404, 404));
    // Only the id differs: nothing tells "not yours" from "not there".
    let shape = |b: &Value, id: &str| b.to_string().replace(id, "{id}");
    assert_eq!(shape(&other_body, &mine), shape(&absent_body, missing));
    assert_eq!(shape(&nobody_body, &mine), shape(&absent_body, missing));
    assert_eq!(guest_read, 200, "a guest's id is its receipt");
    assert_eq!(guest_order["customer"], "guest");
    assert_eq!(admin, 200);
    app.stop().await;
}

#[tokio::test]
async fn an_invalid_token_is_a_401_on_every_route() {
    let app = spawn_app().await;
    let receipt = order_as(&app, None, "cable").await;

    for path in ["/api/orders".to_owned(), format!("/api/orders/{receipt}")] {
        let (status, body) = app.get_as(&path, "not-a-token").await;
        assert_eq!(status, 401, "GET {path}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("malformed"), "GET {path}: {message}");
    }
    let r = app
        .client
        .post(format!("{}/api/orders", app.url))
        .bearer_auth("not-a-token")
        .json(&json!({"item": "laptop"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    app.stop().await;
}

#[tokio::test]
async fn bad_listing_parameters_are_400s_that_name_the_parameter() {
    let app = spawn_app().await;
    let alice = app.login("alice", "alice-secret").await;
    let bob = app.login("bob", "bob-secret").await;
    let bobs = order_as(&app, Some(&bob), "mouse").await;

    let (limit, limit_body) = app.get_as("/api/orders?limit=abc", &alice).await;
    let (junk, junk_body) = app.get_as("/api/orders?cursor=nonsense", &alice).await;
    // Another customer's order is no cursor of alice's listing either.
    let (foreign, _) = app
        .get_as(&format!("/api/orders?cursor={bobs}"), &alice)
        .await;

    assert_eq!(limit, 400, "{limit_body}");
    let message = limit_body["error"]["message"].as_str().unwrap();
    assert!(message.contains("limit"), "{message}");
    assert_eq!(junk, 400, "{junk_body}");
    let message = junk_body["error"]["message"].as_str().unwrap();
    assert!(message.contains("cursor nonsense"), "{message}");
    assert_eq!(foreign, 400);
    app.stop().await;
}

#[tokio::test]
async fn nobody_can_register_as_guest() {
    let app = spawn_app().await;

    let r = app
        .client
        .post(format!("{}/api/auth/register", app.url))
        .json(&json!({"username": "guest", "password": "guest-password"}))
        .send()
        .await
        .unwrap();

    assert_eq!(r.status(), 422);
    app.stop().await;
}

#[tokio::test]
async fn a_token_that_never_expires_is_refused_every_time_not_a_crash() {
    // Signed with the stack's key, so only its expiry is wrong: a forged
    // u64::MAX once overflowed the token cache's leeway check.
    let app = spawn_app().await;
    let claims = json!({"sub": "alice", "iat": 1, "exp": u64::MAX, "jti": "forever"});
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(crate::helpers::JWT_SECRET.as_bytes()),
    )
    .unwrap();

    for attempt in 0..2 {
        let (status, body) = app.get_as("/api/orders", &token).await;
        assert_eq!(status, 401, "attempt {attempt}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("expiry"), "{message}");
    }
    app.stop().await;
}
