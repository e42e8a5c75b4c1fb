//! MongoDB cut: while the connection to MongoDB is down, requests get 503
//! naming MongoDB; afterwards the same process serves again by itself, and
//! no order it acknowledged is missing.

use std::time::Duration;

use cloudmart_testkit::proxy::TcpProxy;
use cloudmart_testkit::servers::{address, require_mongodb};
use cloudmart_testkit::wait_until;
use serde_json::{Value, json};

use crate::helpers::spawn_db;

fn order(n: usize, tag: &str) -> Value {
    json!({
        "id": format!("{tag}-{n}"),
        "customer": "guest",
        "items": [{"item": format!("item-{n}"), "quantity": 1}],
        "idempotency_key": format!("{tag}-key-{n}"),
    })
}

#[tokio::test]
async fn a_mongodb_cut_gives_503s_naming_mongodb_then_recovers_without_losing_acknowledged_orders()
{
    let Some(uri) = require_mongodb("mongo_cut") else {
        return;
    };
    let proxy = TcpProxy::start(address(&uri).expect("MONGODB_URI resolves"))
        .await
        .unwrap();
    let db_name = format!("cut_{}_{}", std::process::id(), fastrand_suffix());
    let proxied = proxy.mongodb_uri();
    let db = spawn_db(&[
        ("DB_NAME", db_name.as_str()),
        ("MONGODB_URI", proxied.as_str()),
        ("MONGO_SERVER_SELECTION_TIMEOUT_MS", "500"),
        ("MONGO_CONNECT_TIMEOUT_MS", "500"),
    ])
    .await;
    let client = reqwest::Client::new();
    let create = |n: usize, tag: &'static str| {
        client
            .post(format!("{}/orders", db.url))
            .json(&order(n, tag))
            .timeout(Duration::from_secs(10))
            .send()
    };
    let mut acknowledged = Vec::new();

    // Before the cut every order is stored.
    for n in 0..20 {
        let r = create(n, "before").await.unwrap();
        assert_eq!(r.status(), 201);
        acknowledged.push(format!("before-{n}"));
    }

    // During the cut: 503 naming MongoDB, and readiness says so too. The
    // first few wait out server selection; then the breaker answers at once.
    proxy.cut();
    for n in 0..10 {
        let started = std::time::Instant::now();
        let r = create(n, "during").await.unwrap();
        let took = started.elapsed();
        assert!(took < Duration::from_secs(1), "503 {n} took {took:?}");
        if n >= 3 {
            assert!(
                took < Duration::from_millis(100),
                "the breaker is open after 3 failures, yet 503 {n} took {took:?}"
            );
        }
        assert_eq!(
            r.status(),
            503,
            "a write during the cut must not look stored"
        );
        assert!(r.headers().contains_key("retry-after"));
        let body: Value = r.json().await.unwrap();
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("MongoDB"), "{message}");
    }
    let ready = client
        .get(format!("{}/ready", db.url))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    let body: Value = ready.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("MongoDB"),
        "{body}"
    );

    // After the cut the same process recovers by itself.
    proxy.restore();
    let recovered = wait_until(Duration::from_secs(20), || async {
        let r = create(0, "after").await.ok()?;
        (r.status() == 201).then_some(())
    })
    .await;
    assert!(
        recovered.is_some(),
        "database-service did not recover within 20 s"
    );
    acknowledged.push("after-0".to_owned());
    for n in 1..20 {
        let r = create(n, "after").await.unwrap();
        assert_eq!(r.status(), 201);
        acknowledged.push(format!("after-{n}"));
    }

    // No acknowledged order is missing.
    for id in &acknowledged {
        let r = client
            .get(format!("{}/orders/{id}", db.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "acknowledged order {id} is missing");
    }
    let ready = client
        .get(format!("{}/ready", db.url))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    db.stop().await;
    drop_database(&uri, &db_name).await;
}

fn fastrand_suffix() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
}

async fn drop_database(uri: &str, name: &str) {
    if let Ok(client) = mongodb::Client::with_uri_str(uri).await {
        let _ = client.database(name).drop().await;
    }
}
