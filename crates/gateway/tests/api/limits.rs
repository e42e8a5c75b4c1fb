//! The 64 KiB body limit: a body of exactly the limit is forwarded whole,
//! one byte more is refused by the gateway with the JSON 413.

use cloudmart_http::error::BODY_LIMIT_BYTES;

use crate::helpers::{Upstream, error_of, gateway_to, parts, raw};

#[tokio::test]
async fn a_body_of_exactly_the_limit_is_forwarded_whole() {
    // Arrange
    let api = Upstream::start("api").await;
    let gateway = gateway_to(&api.url(), &[]).await;
    let body: Vec<u8> = (0..BODY_LIMIT_BYTES)
        .map(|i| b'a' + (i % 26) as u8)
        .collect();

    // Act
    let response = gateway
        .client
        .post(format!("{}/api/orders", gateway.url))
        .body(body.clone())
        .send()
        .await
        .unwrap();

    // Assert
    let (status, _, answer) = parts(response).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(api.only().body, body);
}

#[tokio::test]
async fn a_body_over_the_limit_is_a_json_413_and_never_forwarded() {
    // Arrange
    let api = Upstream::start("api").await;
    let gateway = gateway_to(&api.url(), &[]).await;

    // Act: announce one byte over the limit and wait for the verdict
    // before sending it (`Expect: 100-continue`), so the answer is never
    // lost to a reset from a server that closes with the body unread.
    let response = raw(
        gateway.addr,
        &format!(
            "POST /api/orders HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue",
            BODY_LIMIT_BYTES + 1
        ),
        b"",
    )
    .await;

    // Assert
    assert_eq!(response.status, 413, "{response:?}");
    assert_eq!(
        response.headers.get("content-type").map(String::as_str),
        Some("application/json")
    );
    let (code, message) = error_of(&response.body);
    assert_eq!(code, "payload_too_large");
    assert_eq!(message, "the request body is larger than 64 KiB");
    assert!(api.received().is_empty(), "nothing was forwarded");
}
