//! The real `order-service` binary with the workshop's wrong database URL.

use cloudmart_testkit::ServiceProcess;

/// Workshop fault 3: `DATABASE_URL=http://database:8080` names a host that
/// does not exist. The pod stays Running and Ready, every order fails with a
/// 502 naming database-service and the host that did not resolve, and the
/// logs say `dns error` in words a trainee can grep.
#[tokio::test]
async fn a_database_url_with_an_unknown_host_fails_orders_with_dns_errors_in_the_logs() {
    let (order, port) = ServiceProcess::start_healthy(
        env!("CARGO_BIN_EXE_order-service"),
        &[
            ("DATABASE_URL", "http://database.invalid:8080"),
            ("NOTIFICATION_URL", "http://127.0.0.1:9"),
            ("RETRY_BASE_DELAY_MS", "10"),
            ("RETRY_MAX_DELAY_MS", "50"),
        ],
    )
    .await;
    let client = reqwest::Client::new();

    let r = client
        .post(format!("http://127.0.0.1:{port}/orders"))
        .json(&serde_json::json!({"items": [{"item": "laptop", "quantity": 1}]}))
        .send()
        .await
        .unwrap();
    let ready = client
        .get(format!("http://127.0.0.1:{port}/ready"))
        .send()
        .await
        .unwrap();

    assert_eq!(r.status(), 502);
    let body: serde_json::Value = r.json().await.unwrap();
    let message = body["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        message.contains("database-service")
            && message.contains("dns error: cannot resolve database.invalid"),
        "{message}"
    );
    // Readiness reports the failure but stays 200, as in the cluster.
    assert_eq!(ready.status(), 200);
    let output = order.output();
    let logged = output.lines().any(|l| {
        l.contains("\"level\":\"ERROR\"")
            && l.contains("dns error")
            && l.contains("database-service")
    });
    assert!(
        logged,
        "no ERROR line naming database-service and the dns error:\n{output}"
    );
}
