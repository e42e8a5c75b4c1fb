//! `X-Request-Id`: the caller's is kept, a missing (or empty, or over 200
//! bytes) one is replaced by a fresh UUID, and the same value goes upstream
//! and back to the caller.

use crate::helpers::{Upstream, gateway_to, raw};

/// `8-4-4-4-12` lower-case hex digits, as `Uuid::to_string` writes them.
fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups.iter().all(|g| {
            g.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
}

#[tokio::test]
async fn a_missing_request_id_is_generated_and_sent_both_ways() {
    // Arrange
    let api = Upstream::start("api").await;
    let gateway = gateway_to(&api.url(), &[]).await;

    // Act
    let first = gateway.get("/api/orders").await;
    let second = gateway.get("/api/orders").await;

    // Assert
    assert_eq!(first.status(), 200);
    assert_eq!(second.status(), 200);
    let ids: Vec<String> = [first, second]
        .iter()
        .map(|r| r.headers()["x-request-id"].to_str().unwrap().to_owned())
        .collect();
    assert!(ids.iter().all(|id| is_uuid(id)), "{ids:?}");
    assert_ne!(ids[0], ids[1], "one id per request");
    let upstream: Vec<String> = api
        .received()
        .iter()
        .map(|r| r.header("x-request-id").unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        upstream, ids,
        "the upstream saw the ids the caller got back"
    );
}

#[tokio::test]
async fn the_callers_request_id_is_kept_up_to_200_bytes() {
    // Arrange
    let api = Upstream::start("api").await;
    let gateway = gateway_to(&api.url(), &[]).await;
    let longest = "r".repeat(200);

    for sent in ["req-abc-123", longest.as_str()] {
        // Act
        let response = gateway
            .client
            .get(format!("{}/api/orders", gateway.url))
            .header("x-request-id", sent)
            .send()
            .await
            .unwrap();

        // Assert
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["x-request-id"], sent);
    }
    let upstream: Vec<String> = api
        .received()
        .iter()
        .map(|r| r.header("x-request-id").unwrap_or_default().to_owned())
        .collect();
    assert_eq!(upstream, ["req-abc-123", longest.as_str()]);
}

#[tokio::test]
async fn an_empty_or_overlong_request_id_is_replaced() {
    // Arrange
    let api = Upstream::start("api").await;
    let gateway = gateway_to(&api.url(), &[]).await;
    let overlong = "r".repeat(201);

    for sent in ["", overlong.as_str()] {
        // Act
        let response = raw(
            gateway.addr,
            &format!("GET /api/orders HTTP/1.1\r\nX-Request-Id: {sent}"),
            b"",
        )
        .await;

        // Assert
        assert_eq!(response.status, 200, "{response:?}");
        let returned = response.headers["x-request-id"].as_str();
        assert!(is_uuid(returned), "{sent:?} became {returned:?}");
        let got = api.received().pop().unwrap();
        assert_eq!(got.header("x-request-id"), Some(returned));
    }
}

#[tokio::test]
async fn answers_the_gateway_gives_itself_carry_the_request_id_too() {
    // Arrange
    let api = Upstream::start("api").await;
    let gateway = gateway_to(&api.url(), &[]).await;

    // Act: a 404 from the shared stack's fallback, and a 413 from its body
    // limit, neither of which reaches the proxy.
    let not_found = gateway
        .client
        .get(format!("{}/orders", gateway.url))
        .header("x-request-id", "mine-404")
        .send()
        .await
        .unwrap();
    let too_large = raw(
        gateway.addr,
        &format!(
            "POST /api/orders HTTP/1.1\r\nX-Request-Id: mine-413\r\nContent-Length: {}\r\nExpect: 100-continue",
            cloudmart_http::error::BODY_LIMIT_BYTES + 1
        ),
        b"",
    )
    .await;
    let anonymous = gateway.get("/nowhere").await;

    // Assert
    assert_eq!(not_found.status(), 404);
    assert_eq!(not_found.headers()["x-request-id"], "mine-404");
    assert_eq!(too_large.status, 413, "{too_large:?}");
    assert_eq!(
        too_large.headers.get("x-request-id").map(String::as_str),
        Some("mine-413")
    );
    assert_eq!(anonymous.status(), 404);
    let generated = anonymous.headers()["x-request-id"].to_str().unwrap();
    assert!(is_uuid(generated), "{generated}");
    assert!(api.received().is_empty(), "nothing was forwarded");
}
