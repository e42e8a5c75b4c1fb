//! Request headers: content types near and far from JSON, junk and forged
//! Authorization values, idempotency keys of odd sizes and alphabets, and
//! the headers proxies and tracers read, some of them huge or repeated.
//! Values keep to what HTTP/1.1 allows (tab, visible ASCII, obs-text).

use fastrand::Rng;

use super::generate::{Known, Route, UNICODE, alnum, alnum_in, chance, one_of, pick};

const CONTENT_TYPES: &[&str] = &[
    "application/json; charset=utf-8",
    "application/json;charset=UTF-8",
    "Application/JSON",
    "application/json; charset=latin1",
    "application/json; charset=\"utf-8\"",
    "application/vnd.api+json",
    "application/problem+json",
    "application/jsonx",
    "application/json5",
    "text/json",
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=xyz",
    "application/octet-stream",
    "",
    ";",
    "application/",
    "/json",
    "*/*",
    "application/json, text/plain",
    "application/json;;;;",
    "application/json; é=ü",
];

fn authorization(rng: &mut Rng, route: Route, known: &Known) -> Vec<u8> {
    let valid_share = if matches!(route, Route::ListOrders | Route::GetOrder) {
        60
    } else {
        25
    };
    let token = one_of(rng, &known.tokens);
    if chance(rng, valid_share) {
        return format!("Bearer {token}").into_bytes();
    }
    match rng.u8(0..16) {
        0 => format!("bearer {token}").into_bytes(),
        1 => format!("Bearer  {token}  ").into_bytes(),
        2 => format!("Bearer {token} extra").into_bytes(),
        3 => {
            let mut t = token.as_bytes().to_vec();
            let i = rng.usize(..t.len());
            t[i] = if t[i] == b'A' { b'B' } else { b'A' };
            [b"Bearer ".as_slice(), &t].concat()
        }
        4 | 5 => format!("Bearer {}", one_of(rng, &known.forged)).into_bytes(),
        6 => format!("Basic {token}").into_bytes(),
        7 => format!("Bearer {}", "x".repeat(rng.usize(1_000..32_000))).into_bytes(),
        8 => [b"Bearer ".as_slice(), pick(rng, UNICODE).as_bytes()].concat(),
        9 => format!(
            "Bearer {}.{}.{}",
            alnum(rng, 20),
            alnum(rng, 40),
            alnum(rng, 43)
        )
        .into_bytes(),
        _ => pick(
            rng,
            &[
                "",
                "Bearer",
                "Bearer ",
                "Bearer \t",
                "Token abc",
                "Bearer a.b.c",
                "Bearer ...",
                "Bearer eyJ",
                "Basic YWxpY2U6YWxpY2Utc2VjcmV0",
                "Negotiate",
                "Bearer null",
            ],
        )
        .as_bytes()
        .to_vec(),
    }
}

/// Keys of many sizes and alphabets; a few shared across cases, so that
/// concurrent cases race on the same key with different bodies.
fn idempotency_key(rng: &mut Rng) -> Vec<u8> {
    if chance(rng, 15) {
        return format!("fuzz-shared-{}", rng.u8(0..6)).into_bytes();
    }
    let len = pick(
        rng,
        &[
            0, 1, 2, 16, 36, 64, 127, 128, 129, 255, 256, 257, 1024, 4096, 16_384,
        ],
    );
    match rng.u8(0..4) {
        0 => alnum(rng, len).into_bytes(),
        1 => pick(rng, UNICODE).repeat(len / 4 + 1).into_bytes(),
        2 => (0..len).map(|_| rng.u8(0x20..0x7f)).collect(),
        _ => format!("  {}\t", alnum(rng, len)).into_bytes(),
    }
}

fn extra_header(rng: &mut Rng, known: &Known) -> (String, Vec<u8>) {
    let (name, value): (&str, Vec<u8>) = match rng.u8(0..20) {
        0 => (
            "x-request-id",
            "r".repeat(pick(rng, &[0, 1, 200, 201, 8_000])).into_bytes(),
        ),
        1 => ("x-request-id", pick(rng, UNICODE).as_bytes().to_vec()),
        2 => (
            "traceparent",
            format!("00-{:032x}-{:016x}-01", rng.u128(..), rng.u64(..)).into_bytes(),
        ),
        3 => (
            "traceparent",
            pick(
                rng,
                &[
                    "00-00000000000000000000000000000000-0000000000000000-01",
                    "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                    "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",
                    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
                    "00-xyz",
                    "",
                    "garbage",
                ],
            )
            .as_bytes()
            .to_vec(),
        ),
        4 => ("tracestate", alnum_in(rng, 0..600).into_bytes()),
        5 => (
            "x-forwarded-for",
            pick(
                rng,
                &[
                    "1.2.3.4",
                    "::1",
                    "not-an-ip",
                    "1.2.3.4, 5.6.7.8",
                    "",
                    ",,,",
                    "999.999.999.999",
                ],
            )
            .as_bytes()
            .to_vec(),
        ),
        6 => (
            "x-forwarded-for",
            "10.0.0.1, ".repeat(rng.usize(10..300)).into_bytes(),
        ),
        7 => (
            "accept",
            pick(
                rng,
                &[
                    "application/json",
                    "text/html",
                    "*/*",
                    "",
                    "application/xml;q=0",
                ],
            )
            .as_bytes()
            .to_vec(),
        ),
        8 => ("expect", b"100-continue".to_vec()),
        9 => (
            "connection",
            pick(rng, &["close", "keep-alive", "upgrade", "x-junk, close"])
                .as_bytes()
                .to_vec(),
        ),
        10 => (
            "content-encoding",
            pick(rng, &["gzip", "br", "identity", "junk"])
                .as_bytes()
                .to_vec(),
        ),
        11 => ("cookie", format!("session={}", alnum(rng, 64)).into_bytes()),
        12 => (
            "x-fuzz-padding",
            "p".repeat(rng.usize(1_000..32_000)).into_bytes(),
        ),
        13 => ("content-type", pick(rng, CONTENT_TYPES).as_bytes().to_vec()),
        14 => ("idempotency-key", idempotency_key(rng)),
        15 => (
            "authorization",
            authorization(rng, Route::PlaceOrder, known),
        ),
        16 => ("x-http-method-override", b"DELETE".to_vec()),
        17 => ("accept-encoding", b"gzip, br".to_vec()),
        18 => ("upgrade", b"websocket".to_vec()),
        _ => {
            let name = format!("x-{}", alnum_in(rng, 1..40).to_lowercase());
            return (name, pick(rng, UNICODE).as_bytes().to_vec());
        }
    };
    (name.to_owned(), value)
}

pub(super) fn headers(rng: &mut Rng, route: Route, known: &Known) -> Vec<(String, Vec<u8>)> {
    let mut h: Vec<(String, Vec<u8>)> = Vec::new();
    let post = matches!(route, Route::PlaceOrder | Route::Login);
    if chance(rng, if post { 92 } else { 10 }) {
        let ct = if chance(rng, 75) {
            "application/json"
        } else {
            pick(rng, CONTENT_TYPES)
        };
        h.push(("content-type".to_owned(), ct.as_bytes().to_vec()));
    }
    let auth_share = if matches!(route, Route::ListOrders | Route::GetOrder) {
        80
    } else {
        35
    };
    if chance(rng, auth_share) {
        h.push(("authorization".to_owned(), authorization(rng, route, known)));
    }
    if route == Route::PlaceOrder && chance(rng, 30) {
        h.push(("idempotency-key".to_owned(), idempotency_key(rng)));
    }
    for _ in 0..rng.usize(0..4) {
        h.push(extra_header(rng, known));
    }
    for (name, value) in &mut h {
        if chance(rng, 15) {
            *name = name
                .chars()
                .map(|c| {
                    if rng.bool() {
                        c.to_ascii_uppercase()
                    } else {
                        c
                    }
                })
                .collect();
        }
        // What HTTP/1.1 allows in a value: tab, visible ASCII, obs-text.
        for b in value.iter_mut() {
            if !(*b == b'\t' || (0x20..0x7f).contains(b) || *b >= 0x80) {
                *b = b'?';
            }
        }
    }
    rng.shuffle(&mut h);
    h
}
