//! The generator: one request from the run's seed and the case number
//! alone, so any case can be generated again, and sent alone, to replay it.
//!
//! Paths get random segments, escapes, dot segments and great length, but
//! stay inside HTTP/1.1's grammar and hyper's limits, like the headers
//! ([`super::headers`]): a request hyper's parser refuses never reaches our
//! code. Bodies are in [`super::body`].

use fastrand::Rng;

use super::body::{login_body, order_body};
use super::headers::headers;

/// The public routes the fuzzer aims at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Route {
    PlaceOrder,
    Login,
    ListOrders,
    GetOrder,
}

impl Route {
    pub(crate) const ALL: [Route; 4] = [
        Route::PlaceOrder,
        Route::Login,
        Route::ListOrders,
        Route::GetOrder,
    ];

    pub(crate) fn label(self) -> &'static str {
        match self {
            Route::PlaceOrder => "POST /api/orders",
            Route::Login => "POST /api/auth/login",
            Route::ListOrders => "GET /api/orders",
            Route::GetOrder => "GET /api/orders/{id}",
        }
    }
}

/// What exists on the stack before the first case: real tokens and ids, so
/// cases also reach the code behind authentication and lookups.
pub(crate) struct Known {
    /// Valid tokens of the demo users.
    pub(crate) tokens: Vec<String>,
    /// Expired, wrongly signed, unsigned, or signed with odd claims.
    pub(crate) forged: Vec<String>,
    /// Ids of orders placed by alice, bob and a guest.
    pub(crate) ids: Vec<String>,
}

/// One generated request.
pub(crate) struct Case {
    pub(crate) index: usize,
    pub(crate) route: Route,
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) headers: Vec<(String, Vec<u8>)>,
    pub(crate) body: Vec<u8>,
    /// Chunk sizes when the body is sent chunked; `None` for Content-Length.
    pub(crate) chunks: Option<Vec<usize>>,
}

/// Largest request target generated: hyper refuses a URI of 64 KiB or more
/// with an empty 414 before any service sees it.
const MAX_TARGET: usize = 48 * 1024;

/// The request for case `index` of `seed`.
pub(crate) fn case(seed: u64, index: usize, known: &Known) -> Case {
    let mut rng = Rng::with_seed(splitmix(seed ^ splitmix(index as u64)));
    let rng = &mut rng;
    let route = match rng.u8(0..100) {
        0..40 => Route::PlaceOrder,
        40..60 => Route::Login,
        60..82 => Route::ListOrders,
        _ => Route::GetOrder,
    };
    let method = if chance(rng, 3) {
        pick(
            rng,
            &["PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "get", "FUZZ"],
        )
    } else if matches!(route, Route::PlaceOrder | Route::Login) {
        "POST"
    } else {
        "GET"
    };
    let path = match route {
        Route::PlaceOrder => "/api/orders".to_owned(),
        Route::Login => "/api/auth/login".to_owned(),
        Route::ListOrders => format!("/api/orders{}", query(rng)),
        Route::GetOrder => format!("/api/orders/{}", order_id(rng, known)),
    };
    let path = if chance(rng, 25) {
        mutate_path(rng, path)
    } else {
        path
    };
    let mut body = Vec::new();
    match route {
        Route::PlaceOrder => order_body(rng, &mut body),
        Route::Login => login_body(rng, index, &mut body),
        Route::ListOrders | Route::GetOrder if chance(rng, 8) => order_body(rng, &mut body),
        Route::ListOrders | Route::GetOrder => {}
    }
    let headers = headers(rng, route, known);
    let chunks = (!body.is_empty() && chance(rng, 10)).then(|| {
        let mut sizes = Vec::new();
        let mut left = body.len();
        while left > 0 {
            let n = rng.usize(1..=left.min(4096));
            sizes.push(n);
            left -= n;
        }
        sizes
    });
    Case {
        index,
        route,
        method: method.to_owned(),
        path: legal_target(&path),
        headers,
        body,
        chunks,
    }
}

fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

pub(super) fn chance(rng: &mut Rng, percent: u8) -> bool {
    rng.u8(0..100) < percent
}

pub(super) fn pick<T: Copy>(rng: &mut Rng, items: &[T]) -> T {
    items[rng.usize(..items.len())]
}

pub(super) fn one_of<'a>(rng: &mut Rng, items: &'a [String]) -> &'a str {
    &items[rng.usize(..items.len())]
}

pub(super) fn alnum_in(rng: &mut Rng, lengths: std::ops::Range<usize>) -> String {
    let len = rng.usize(lengths);
    alnum(rng, len)
}

pub(super) fn alnum(rng: &mut Rng, len: usize) -> String {
    (0..len).map(|_| rng.alphanumeric()).collect()
}

/// Text that trips naive handling: bidi overrides, zero-width and
/// combining marks, astral planes, case folds that change length.
pub(super) const UNICODE: &[&str] = &[
    "é",
    "日本語",
    "🛒",
    "\u{202E}gnp.exe",
    "\u{200B}",
    "e\u{301}\u{301}\u{301}",
    "\u{FEFF}",
    "Ω≈ç√∫",
    "𝕏𝕐",
    "\u{10FFFF}",
    "ﷺ",
    "🏳️‍🌈",
    "Ⅻ",
    "ß",
    "İ",
];

// Paths.

fn query(rng: &mut Rng) -> String {
    if chance(rng, 40) {
        return String::new();
    }
    if chance(rng, 10) {
        return pick(
            rng,
            &[
                "?",
                "?&&",
                "?=",
                "?limit",
                "?limit=",
                "?%zz=1",
                "?&limit=5&",
            ],
        )
        .to_owned();
    }
    let params: Vec<String> = (0..rng.usize(1..4))
        .map(|_| {
            let key = pick(
                rng,
                &[
                    "limit", "limit", "cursor", "cursor", "customer", "offset", "l%69mit",
                ],
            );
            let value = match key {
                "limit" => match rng.u8(0..4) {
                    0 => rng.u32(1..=100).to_string(),
                    _ => pick(
                        rng,
                        &[
                            "",
                            "0",
                            "100",
                            "101",
                            "-1",
                            "abc",
                            "1e3",
                            "1.5",
                            "+5",
                            " 5",
                            "99999999999999999999",
                            "4294967296",
                            "%FF",
                            "%35",
                            "0x10",
                        ],
                    )
                    .to_owned(),
                },
                "cursor" => match rng.u8(0..4) {
                    0 => format!("{:032x}", rng.u128(..)),
                    1 => alnum_in(rng, 0..200),
                    2 => {
                        pick(rng, &["", "%00", "%FF", "..", "null", "%2F", "a%20b", "~"]).to_owned()
                    }
                    _ => fake_uuid(rng),
                },
                _ => alnum_in(rng, 0..20),
            };
            format!("{key}={value}")
        })
        .collect();
    format!("?{}", params.join("&"))
}

fn fake_uuid(rng: &mut Rng) -> String {
    let hex = format!("{:032x}", rng.u128(..));
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

fn order_id(rng: &mut Rng, known: &Known) -> String {
    match rng.u8(0..20) {
        0..=5 => one_of(rng, &known.ids).to_owned(),
        6..=8 => fake_uuid(rng),
        9..=11 => {
            let len = pick(rng, &[1, 8, 36, 99, 100, 101, 150]);
            alnum(rng, len)
        }
        12 | 13 => UNICODE[rng.usize(..UNICODE.len())]
            .bytes()
            .map(|b| format!("%{b:02X}"))
            .collect(),
        14 | 15 => pick(
            rng,
            &[
                "..", ".", "%2e%2e", "%2E", "%00", "%FF", "%2F", "%20", "-", "null", "{id}", "*",
                "~", "%", "%zz",
            ],
        )
        .to_owned(),
        16 => "a".repeat(rng.usize(1_000..20_000)),
        17 => one_of(rng, &known.ids).to_uppercase(),
        18 => format!("{}x", one_of(rng, &known.ids)),
        _ => format!("{}/extra", one_of(rng, &known.ids)),
    }
}

/// Bytes allowed unescaped in a path segment (http's path table, minus `/`).
const SEGMENT_BYTES: &[u8] =
    b"!$%&'()*+,-.0123456789:;=@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_abcdefghijklmnopqrstuvwxyz|~\"{}";

fn random_segment(rng: &mut Rng) -> String {
    let mut s = String::new();
    for _ in 0..rng.usize(0..16) {
        if chance(rng, 20) {
            s.push_str(&format!("%{:02X}", rng.u8(..)));
        } else {
            s.push(char::from(pick(rng, SEGMENT_BYTES)));
        }
    }
    s
}

/// Dot segments in every spelling a URL parser resolves: literal, escaped,
/// and with the backslash WHATWG treats as a slash in http URLs.
const DOTS: &[&str] = &[
    "./", "../", "%2e/", "%2E%2e/", ".%2e/", "%2e./", "..\\", ".\\", "x/../", "./../", "../../",
    "..%2f",
];

fn mutate_path(rng: &mut Rng, path: String) -> String {
    let (mut p, q) = match path.split_once('?') {
        Some((p, q)) => (p.to_owned(), format!("?{q}")),
        None => (path, String::new()),
    };
    for _ in 0..rng.usize(1..4) {
        let slashes: Vec<usize> = p.match_indices('/').map(|(i, _)| i).collect();
        let at = pick(rng, &slashes) + 1;
        match rng.u8(0..11) {
            0 | 1 => p.insert_str(at, pick(rng, DOTS)),
            2 => p.insert(at, '/'),
            3 => p.push_str(pick(rng, &["/", "/.", "/..", "/%2e%2e", "\\", ";", ";x=1"])),
            4 => {
                // Escape one letter: /api/%6Frders.
                let letters: Vec<usize> = p
                    .char_indices()
                    .filter(|(_, c)| c.is_ascii_alphabetic())
                    .map(|(i, _)| i)
                    .collect();
                if !letters.is_empty() {
                    let i = pick(rng, &letters);
                    let b = p.as_bytes()[i];
                    p.replace_range(i..=i, &format!("%{b:02x}"));
                }
            }
            5 => {
                p = if rng.bool() {
                    p.to_uppercase()
                } else {
                    p.replacen("api", "API", 1)
                }
            }
            6 => p.insert_str(at, &format!("{}/", random_segment(rng))),
            7 => {
                for _ in 0..rng.usize(1..5) {
                    p.push('/');
                    p.push_str(&random_segment(rng));
                }
            }
            8 => {
                let long = "b".repeat(rng.usize(1_000..40_000));
                p.insert_str(at, &format!("{long}/"));
            }
            9 => p.insert_str(at, &format!("{}/", pick(rng, UNICODE))),
            _ => p.push_str(pick(rng, &["#", "#frag", "#/../metrics"])),
        }
    }
    let mut out = p + &q;
    out.truncate(MAX_TARGET.min(out.len()));
    while !out.is_char_boundary(out.len()) {
        out.pop();
    }
    out
}

/// Escapes what http's URI grammar refuses, so the request always reaches
/// the router: the fuzzing is of our code, not of hyper's parser.
fn legal_target(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut in_query = false;
    for c in path.chars() {
        in_query |= c == '?';
        let ok = match c {
            '\u{80}'.. => true,
            '!' | '$'..=';' | '=' | '@'..='_' | 'a'..='z' | '|' | '~' | '"' | '{' | '}' => {
                !(in_query && c == '"')
            }
            '?' | '#' => true,
            '`' => in_query,
            _ => false,
        };
        if ok {
            out.push(c);
        } else {
            let mut buf = [0; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        }
    }
    out
}
