//! What the fuzzer found, pinned as plain tests: each sends the shape of
//! request that broke the property, without waiting for a seed to find it.

use tokio::net::TcpStream;

use super::wire::{Answer, exchange, exchange_on};
use super::{check_error, gateway_addr};
use crate::helpers::spawn_app;

fn get(path: &str, host: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nhost: {host}\r\n\r\n").into_bytes()
}

#[tokio::test]
async fn a_dot_segment_never_climbs_out_of_the_route_the_gateway_matched() {
    // Arrange
    let app = spawn_app().await;
    let addr = gateway_addr(&app);
    let host = addr.to_string();
    // Each of these matches the gateway's `/api/*` route, and each would
    // reach api-service as `/metrics` or `/health` once a URL parser
    // resolved it.
    let paths = [
        "/api/../metrics",
        "/api/%2e%2e/metrics",
        "/api/.%2E/metrics",
        "/api/..\\metrics",
        "/api/orders/../../health",
        "/api/auth/../../metrics",
    ];

    // Act
    let mut answers: Vec<(&str, Answer)> = Vec::new();
    for path in paths {
        let answer = exchange(addr, &get(path, &host), false)
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        answers.push((path, answer));
    }
    app.stop().await;

    // Assert
    for (path, answer) in answers {
        assert!(
            (400..500).contains(&answer.status),
            "GET {path} answered {} {:?}: it reached a route behind the gateway",
            answer.status,
            String::from_utf8_lossy(&answer.body)
        );
        check_error(&answer).unwrap_or_else(|why| panic!("GET {path}: {why}"));
    }
}

#[tokio::test]
async fn a_service_keeps_its_connection_after_answering_without_reading_the_body() {
    // Arrange: a keep-alive connection straight to api-service, the way the
    // gateway's pooled client holds one.
    let app = spawn_app().await;
    let api = app.service_url("api-service");
    let addr = api.trim_start_matches("http://").to_owned();
    let mut stream = TcpStream::connect(&addr)
        .await
        .expect("api-service accepts");
    let body = format!(r#"{{"item":"{}"}}"#, "a".repeat(60 * 1024));
    let unread = format!(
        "POST /api/nowhere HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );

    // Act: a 404 that no handler reads the body for, then a second request
    // on the same connection.
    let first = exchange_on(&mut stream, unread.as_bytes(), false).await;
    let second = exchange_on(&mut stream, &get("/health", &addr), false).await;
    app.stop().await;

    // Assert
    assert_eq!(first.expect("the 404 arrives").status, 404);
    let second = second.unwrap_or_else(|e| {
        panic!("the connection died after an answer that left the body unread: {e}")
    });
    assert_eq!(second.status, 200);
}
