//! What reaches which upstream: path, query, method, body and headers as
//! the caller sent them, `/api/auth/*` to auth-service and every other
//! `/api/*` to api-service, and the requests the gateway refuses to forward.

use crate::helpers::{Upstream, error_of, gateway_to, parts, raw, spawn_gateway};

#[tokio::test]
async fn path_query_method_and_body_reach_api_service_untouched() {
    // Arrange
    let api = Upstream::start("api").await;
    let auth = Upstream::start("auth").await;
    let gateway = spawn_gateway(&api.url(), &auth.url(), &[]).await;
    let target = "/api/orders/a%2Fb/caf%C3%A9%20x?q=a%26b&sort=-created&empty=&flag&x=%3D%3F";
    let body = br#"{"qty":3,"note":"a%2Fb"}"#;

    // Act
    let response = raw(
        gateway.addr,
        &format!(
            "PATCH {target} HTTP/1.1\r\nContent-Type: application/json\r\nX-Custom: kept\r\nContent-Length: {}",
            body.len()
        ),
        body,
    )
    .await;

    // Assert
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.body, serde_json::json!({"upstream": "api"}));
    assert_eq!(
        response.headers.get("x-upstream").map(String::as_str),
        Some("api")
    );
    let got = api.only();
    assert_eq!(got.target, target);
    assert_eq!(got.method, "PATCH");
    assert_eq!(got.body, body.to_vec());
    assert_eq!(got.header("content-type"), Some("application/json"));
    assert_eq!(got.header("x-custom"), Some("kept"));
    assert!(auth.received().is_empty(), "auth-service saw nothing");
}

#[tokio::test]
async fn auth_paths_go_to_auth_service_and_everything_else_to_api_service() {
    // Arrange
    let api = Upstream::start("api").await;
    let auth = Upstream::start("auth").await;
    let gateway = spawn_gateway(&api.url(), &auth.url(), &[]).await;
    let cases = [
        ("/api/auth", "auth"),
        ("/api/auth/login", "auth"),
        ("/api/auth/tokens/abc/revoke?all=1", "auth"),
        ("/api/authors", "api"),
        ("/api/orders", "api"),
        ("/api/orders/42/items", "api"),
        ("/api/x/auth/login", "api"),
    ];

    for (path, expected) in cases {
        // Act
        let response = gateway
            .client
            .post(format!("{}{path}", gateway.url))
            .body(format!("body of {path}"))
            .send()
            .await
            .expect("the gateway answers");

        // Assert
        let (status, headers, body) = parts(response).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert_eq!(body["upstream"], expected, "{path}");
        assert_eq!(headers["x-upstream"], expected, "{path}");
    }
    let paths = |u: &Upstream| -> Vec<(String, String, Vec<u8>)> {
        u.received()
            .into_iter()
            .map(|r| (r.method, r.target, r.body))
            .collect()
    };
    let expect = |who: &str| -> Vec<(String, String, Vec<u8>)> {
        cases
            .iter()
            .filter(|(_, to)| *to == who)
            .map(|(p, _)| {
                (
                    "POST".to_owned(),
                    (*p).to_owned(),
                    format!("body of {p}").into_bytes(),
                )
            })
            .collect()
    };
    assert_eq!(paths(&auth), expect("auth"));
    assert_eq!(paths(&api), expect("api"));
}

#[tokio::test]
async fn hop_by_hop_headers_stay_behind_and_the_caller_joins_x_forwarded_for() {
    // Arrange
    let api = Upstream::start("api").await;
    let gateway = gateway_to(&api.url(), &[]).await;

    // Act
    let response = raw(
        gateway.addr,
        "GET /api/orders HTTP/1.1\r\nX-Forwarded-For: 203.0.113.7\r\nTE: trailers\r\nUpgrade: websocket\r\nTraceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\nAuthorization: Bearer t0ken",
        b"",
    )
    .await;

    // Assert
    assert_eq!(response.status, 200, "{response:?}");
    let got = api.only();
    assert_eq!(
        got.header("x-forwarded-for"),
        Some("203.0.113.7, 127.0.0.1")
    );
    assert_eq!(got.header("authorization"), Some("Bearer t0ken"));
    assert_eq!(got.header("te"), None);
    assert_eq!(got.header("upgrade"), None);
    // The gateway's own client span is the parent upstream, never the
    // caller's header copied as it came.
    assert_ne!(
        got.header("traceparent"),
        Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
    );
}

#[tokio::test]
async fn dot_segments_in_any_spelling_are_refused_with_a_400_and_not_forwarded() {
    // Arrange
    let api = Upstream::start("api").await;
    let gateway = gateway_to(&api.url(), &[]).await;

    for target in [
        "/api/../metrics",
        "/api/./orders",
        "/api/%2e%2e/metrics",
        "/api/.%2E/metrics",
        "/api/auth/../../metrics",
        "/api/orders/%2E?limit=1",
    ] {
        // Act
        let response = raw(
            gateway.addr,
            &format!("GET {target} HTTP/1.1\r\nX-Request-Id: dots-1"),
            b"",
        )
        .await;

        // Assert
        assert_eq!(response.status, 400, "{target}: {response:?}");
        let (code, message) = error_of(&response.body);
        assert_eq!(code, "bad_request", "{target}");
        assert!(
            message.contains("'.' or '..' segment"),
            "{target}: {message}"
        );
        assert_eq!(
            response.headers.get("x-request-id").map(String::as_str),
            Some("dots-1"),
            "{target}"
        );
    }
    assert!(api.received().is_empty(), "nothing was forwarded");
}

#[tokio::test]
async fn a_backslash_reaches_the_upstream_escaped_so_it_cannot_act_as_a_slash() {
    // Arrange
    let api = Upstream::start("api").await;
    let gateway = gateway_to(&api.url(), &[]).await;

    // Act
    let response = raw(gateway.addr, "GET /api/..\\metrics?x=\\ HTTP/1.1", b"").await;

    // Assert
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(api.only().target, "/api/..%5Cmetrics?x=\\");
}

#[tokio::test]
async fn paths_outside_api_are_answered_by_the_gateway_itself() {
    // Arrange
    let api = Upstream::start("api").await;
    let gateway = gateway_to(&api.url(), &[]).await;

    // Act
    let (status, _, body) = parts(gateway.get("/orders").await).await;

    // Assert
    assert_eq!(status, 404, "{body}");
    let (code, _) = error_of(&body);
    assert_eq!(code, "not_found");
    let (status, _, body) = parts(gateway.get("/health").await).await;
    assert_eq!(status, 200, "the gateway's own liveness: {body}");
    assert!(api.received().is_empty(), "nothing was forwarded");
}
