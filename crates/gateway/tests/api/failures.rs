//! What the caller gets when an upstream fails: the gateway's own JSON
//! error naming the hop (502 unreachable, 504 too slow, 502 cut off
//! mid-answer), or the upstream's own 503 passed on as it came. Every one
//! carries the request id.

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use cloudmart_testkit::closed_port;
use cloudmart_testkit::proxy::TcpProxy;
use serde_json::json;

use crate::helpers::{
    DEADLINE, Reply, Upstream, breaks_off_its_answer, error_of, gateway_to, parts, spawn_gateway,
};

/// The outbound timeout the gateway gets in these tests.
const HTTP_TIMEOUT_MS: u64 = 300;

#[tokio::test]
async fn a_refused_connection_is_a_502_naming_the_hop() {
    // Arrange
    let closed = format!("http://127.0.0.1:{}", closed_port());
    let gateway = spawn_gateway(&closed, &closed, &[]).await;

    for (path, hop) in [
        ("/api/orders", "api-service"),
        ("/api/auth/login", "auth-service"),
    ] {
        // Act
        let response = gateway
            .client
            .post(format!("{}{path}", gateway.url))
            .header("x-request-id", "refused-1")
            .body("{}")
            .send()
            .await
            .unwrap();

        // Assert
        let (status, headers, body) = parts(response).await;
        assert_eq!(status, 502, "{path}: {body}");
        assert_eq!(headers["x-request-id"], "refused-1");
        let (code, message) = error_of(&body);
        assert_eq!(code, "upstream_unreachable");
        assert_eq!(message, format!("{hop} is unreachable: connection refused"));
    }
}

#[tokio::test]
async fn an_upstream_that_never_answers_is_a_504_after_the_client_timeout() {
    // Arrange: the proxy accepts the connection and keeps the request back.
    let api = Upstream::start("api").await;
    let proxy = TcpProxy::start(api.addr).await.unwrap();
    proxy.hold();
    let timeout = HTTP_TIMEOUT_MS.to_string();
    let gateway = gateway_to(
        &format!("http://{}", proxy.host_port()),
        &[("HTTP_TIMEOUT_MS", &timeout)],
    )
    .await;

    // Act
    let started = Instant::now();
    let response = gateway
        .client
        .post(format!("{}/api/orders", gateway.url))
        .header("x-request-id", "slow-1")
        .body(r#"{"item":"laptop"}"#)
        .send()
        .await
        .unwrap();
    let elapsed = started.elapsed();

    // Assert
    let (status, headers, body) = parts(response).await;
    assert_eq!(status, 504, "{body}");
    assert_eq!(headers["x-request-id"], "slow-1");
    let (code, message) = error_of(&body);
    assert_eq!(code, "upstream_timeout");
    assert_eq!(message, "api-service did not answer in time");
    assert!(
        elapsed >= Duration::from_millis(HTTP_TIMEOUT_MS) && elapsed < DEADLINE,
        "answered after {elapsed:?}"
    );
    assert!(api.received().is_empty(), "the request never got through");
}

#[tokio::test]
async fn a_connection_dropped_by_the_network_is_a_502_naming_the_hop() {
    // Arrange: the proxy accepts connections and closes them at once.
    let auth = Upstream::start("auth").await;
    let proxy = TcpProxy::start(auth.addr).await.unwrap();
    proxy.cut();
    let api = Upstream::start("api").await;
    let gateway = spawn_gateway(&api.url(), &format!("http://{}", proxy.host_port()), &[]).await;

    // Act
    let response = gateway.get("/api/auth/me").await;

    // Assert
    let (status, _, body) = parts(response).await;
    assert_eq!(status, 502, "{body}");
    let (code, message) = error_of(&body);
    assert_eq!(code, "upstream_unreachable");
    assert!(
        message.starts_with("auth-service is unreachable: "),
        "{message}"
    );
    assert!(auth.received().is_empty() && api.received().is_empty());
}

#[tokio::test]
async fn an_upstream_503_is_passed_on_as_it_came_and_not_retried() {
    // Arrange
    let sent = json!({"error": {"code": "store_unavailable", "message": "database-service cannot reach MongoDB"}});
    let api = Upstream::answering(Reply {
        status: StatusCode::SERVICE_UNAVAILABLE,
        headers: vec![("retry-after", "5")],
        body: sent.to_string(),
    })
    .await;
    let gateway = gateway_to(&api.url(), &[]).await;

    // Act
    let response = gateway
        .client
        .get(format!("{}/api/orders", gateway.url))
        .header("x-request-id", "down-1")
        .send()
        .await
        .unwrap();

    // Assert
    let (status, headers, body) = parts(response).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body, sent, "the upstream's own error body");
    assert_eq!(error_of(&body).0, "store_unavailable");
    assert_eq!(headers["retry-after"], "5");
    assert_eq!(headers["x-request-id"], "down-1");
    assert_eq!(api.only().header("x-request-id"), Some("down-1"));
}

#[tokio::test]
async fn an_upstream_5xx_without_a_json_body_is_answered_naming_the_hop() {
    // Arrange: what a proxy in front of a hop, or a URL naming the wrong
    // port, answers instead of CloudMart's error body.
    for (sent, expected, code) in [
        (StatusCode::SERVICE_UNAVAILABLE, 503, "upstream_unavailable"),
        (StatusCode::INTERNAL_SERVER_ERROR, 502, "upstream_error"),
    ] {
        let api = Upstream::answering(Reply {
            status: sent,
            headers: vec![("content-type", "text/plain"), ("retry-after", "7")],
            body: "no healthy upstream".to_owned(),
        })
        .await;
        let gateway = gateway_to(&api.url(), &[]).await;

        // Act
        let response = gateway
            .client
            .get(format!("{}/api/orders", gateway.url))
            .header("x-request-id", "plain-1")
            .send()
            .await
            .unwrap();

        // Assert
        let (status, headers, body) = parts(response).await;
        assert_eq!(status, expected, "{sent}: {body}");
        let (got_code, message) = error_of(&body);
        assert_eq!(got_code, code, "{sent}");
        assert_eq!(
            message,
            format!("api-service failed: api-service answered {}", sent.as_u16())
        );
        assert_eq!(headers["retry-after"], "7");
        assert_eq!(headers["x-request-id"], "plain-1");
        assert_eq!(api.only().method, "GET", "not retried");
    }
}

#[tokio::test]
async fn an_upstream_that_breaks_off_its_answer_is_a_502_naming_the_hop() {
    // Arrange
    let api = breaks_off_its_answer().await;
    let gateway = gateway_to(&format!("http://{api}"), &[]).await;

    // Act
    let response = gateway
        .client
        .get(format!("{}/api/orders", gateway.url))
        .header("x-request-id", "cut-1")
        .send()
        .await
        .unwrap();

    // Assert
    let (status, headers, body) = parts(response).await;
    assert_eq!(status, 502, "{body}");
    let (code, message) = error_of(&body);
    assert_eq!(code, "upstream_error");
    assert!(
        message.starts_with("api-service broke off its answer: "),
        "{message}"
    );
    assert_eq!(
        headers.get("x-request-id").and_then(|v| v.to_str().ok()),
        Some("cut-1")
    );
}

#[tokio::test]
async fn system_health_names_the_downstream_that_is_not_ready() {
    // Arrange
    let api = Upstream::start("api").await;
    let closed = format!("http://127.0.0.1:{}", closed_port());
    let healthy = gateway_to(&api.url(), &[]).await;
    let degraded = spawn_gateway(&api.url(), &closed, &[]).await;

    // Act
    let (ok_status, _, ok_body) = parts(healthy.get("/api/health").await).await;
    let (status, _, body) = parts(degraded.get("/api/health").await).await;

    // Assert
    assert_eq!(ok_status, 200, "{ok_body}");
    assert_eq!(ok_body["status"], "ok");
    assert_eq!(ok_body["downstreams"]["api-service"]["ready"], true);
    assert_eq!(ok_body["downstreams"]["auth-service"]["ready"], true);
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "degraded");
    assert_eq!(body["error"]["message"], "not ready: auth-service");
    assert_eq!(body["downstreams"]["api-service"]["ready"], true);
    assert_eq!(body["downstreams"]["auth-service"]["ready"], false);
    assert_eq!(
        body["downstreams"]["auth-service"]["error"],
        "connection refused"
    );
    assert!(
        api.received().iter().all(|r| r.target == "/ready"),
        "only readiness was asked"
    );
}
