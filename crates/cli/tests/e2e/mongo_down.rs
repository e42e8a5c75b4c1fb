//! MongoDB cut behind the whole shop: with the retry policy as shipped, an
//! order gets a 503 naming database-service and MongoDB, with
//! `Retry-After`, well inside 1.5 s, instead of a 504 after 5 s; once
//! MongoDB is back, orders go through again with no restart.

use std::time::{Duration, Instant};

use cloudmart_testkit::proxy::TcpProxy;
use cloudmart_testkit::servers::{address, require_mongodb};
use cloudmart_testkit::wait_until;
use serde_json::{Value, json};

use crate::helpers::spawn_app_with;

/// Orders sent while MongoDB is cut.
const DURING: usize = 20;

#[tokio::test]
async fn with_mongodb_cut_an_order_fails_fast_with_a_503_naming_database_service() {
    let test = "with_mongodb_cut_an_order_fails_fast_with_a_503_naming_database_service";
    let Some(uri) = require_mongodb(test) else {
        return;
    };
    // Arrange: the shop on MongoDB through a proxy that can cut it, with
    // the shipped retry policy (the e2e default shortens its delays).
    let proxy = TcpProxy::start(address(&uri).expect("MONGODB_URI resolves"))
        .await
        .unwrap();
    let proxied = proxy.mongodb_uri();
    let db_name = format!("e2e_down_{}", std::process::id());
    let app = spawn_app_with(&[
        ("MONGODB_URI", proxied.as_str()),
        ("DB_NAME", db_name.as_str()),
        ("RETRY_BASE_DELAY_MS", "100"),
        ("RETRY_MAX_DELAY_MS", "2000"),
    ])
    .await;
    let order = |n: usize| {
        app.client
            .post(format!("{}/api/orders", app.url))
            .header("Idempotency-Key", format!("down-{n}"))
            .json(&json!({"item": "laptop"}))
            .timeout(Duration::from_secs(10))
            .send()
    };
    assert_eq!(
        order(0).await.unwrap().status(),
        201,
        "MongoDB answers first"
    );

    // Act
    proxy.cut();
    let mut latencies = Vec::new();
    for n in 1..=DURING {
        let started = Instant::now();
        let r = order(n).await.unwrap();
        latencies.push(started.elapsed());

        // Assert: every one a 503 that says where and for how long.
        assert_eq!(r.status(), 503, "order {n}");
        assert!(r.headers().contains_key("retry-after"), "order {n}");
        let body: Value = r.json().await.unwrap();
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("database-service") && message.contains("MongoDB"),
            "order {n}: {message}"
        );
    }
    latencies.sort();
    let p50 = latencies[DURING / 2];
    let max = latencies[DURING - 1];
    eprintln!(
        "MongoDB cut: {DURING} orders answered 503; p50 {} ms, max {} ms",
        p50.as_millis(),
        max.as_millis()
    );
    assert!(max < Duration::from_millis(1500), "max {max:?}");

    // Recovery needs nobody.
    proxy.restore();
    let back = wait_until(Duration::from_secs(20), || async {
        let r = order(DURING + 1).await.ok()?;
        r.status().is_success().then_some(())
    })
    .await;
    assert!(
        back.is_some(),
        "orders did not go through again within 20 s"
    );
    app.stop().await;
    if let Ok(client) = mongodb::Client::with_uri_str(&uri).await {
        let _ = client.database(&db_name).drop().await;
    }
}
