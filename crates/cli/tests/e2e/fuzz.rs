//! Fuzzing the public edge: at least 10 000 generated requests through the
//! gateway to `POST /api/orders`, `POST /api/auth/login`, `GET /api/orders`
//! and `GET /api/orders/{id}`, with random paths ([`generate`]), JSON
//! ([`body`]) and headers ([`headers`]), sent as raw bytes so nothing tidies
//! them on the way ([`wire`]).
//!
//! The property, for every case: the gateway answers; the answer is not a
//! 5xx; an error is served as JSON in the one standard body,
//! `{"error":{"code":"...","message":"..."}}`; and a 2xx only comes back
//! for a path that names a public route (not, say, a `..` that climbed out
//! of `/api`). Afterwards every service still answers `/health`.
//!
//! Each case is generated from the seed and its own number alone, so one
//! case replays without the others:
//! `FUZZ_SEED=<seed> FUZZ_CASE=<n> cargo test -p cloudmart-cli --test e2e fuzz -- --nocapture`.
//! `FUZZ_SEED` fixes the seed (each run picks a new one otherwise), and
//! `FUZZ_CASES` sets how many cases run (10 000 by default).

mod body;
mod generate;
mod headers;
mod pinned;
mod wire;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};

use self::generate::{Case, Known, Route};
use self::wire::{Answer, exchange};
use crate::helpers::{JWT_SECRET, TestApp, spawn_app};

/// Cases per run unless `FUZZ_CASES` says otherwise.
const DEFAULT_CASES: usize = 10_000;
/// Requests in flight at once.
const IN_FLIGHT: usize = 16;
/// Longer than any answer should take; the services' own limit is 30 s.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(20);
/// Failures described in full in the panic message.
const MAX_REPORTED: usize = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_requests_never_get_a_5xx_or_a_nonstandard_error() {
    // Arrange
    let settings = Settings::from_env();
    let app = spawn_app().await;
    let known = Arc::new(prepare(&app).await);
    let addr = gateway_addr(&app);
    // A replayed case goes twice: some failures need what the first send
    // leaves behind (a cached token, a stored idempotency key).
    let indices: Vec<usize> = match settings.only {
        Some(i) => vec![i, i],
        None => (0..settings.cases).collect(),
    };
    eprintln!(
        "fuzz: {} case(s), seed {} (replay: FUZZ_SEED={} FUZZ_CASE=<n>)",
        indices.len(),
        settings.seed,
        settings.seed
    );

    // Act
    let started = Instant::now();
    let tally = run(addr, known, settings, indices).await;
    let elapsed = started.elapsed();
    let unhealthy = unhealthy_services(&app).await;
    app.stop().await;

    // Assert
    let summary = tally.summary(settings.seed, elapsed);
    // Straight to stderr, past the test harness's capture, so that the count
    // shows in a plain `cargo test` run too.
    let _ = writeln!(std::io::stderr(), "{summary}");
    assert!(
        unhealthy.is_empty(),
        "after fuzzing, /health failed on: {unhealthy:?}\n{summary}"
    );
    assert!(
        tally.failures.is_empty(),
        "{} of {} fuzz cases broke the property (seed {}); the first {}:\n\n{}\n\n{summary}",
        tally.failures.len(),
        tally.cases,
        settings.seed,
        tally.failures.len().min(MAX_REPORTED),
        tally.failures[..tally.failures.len().min(MAX_REPORTED)].join("\n\n"),
    );
    if settings.only.is_none() && settings.cases >= DEFAULT_CASES / 2 {
        for route in Route::ALL {
            assert!(
                tally.statuses.range((route, 200)..(route, 300)).count() > 0,
                "no case of {} succeeded: the generator only reached the error paths\n{summary}",
                route.label()
            );
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Settings {
    seed: u64,
    cases: usize,
    only: Option<usize>,
}

impl Settings {
    fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let number = |name: &str, v: String| {
            let v = v.trim();
            let parsed = match v.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16).ok(),
                None => v.parse::<u64>().ok(),
            };
            parsed.unwrap_or_else(|| panic!("{name}={v:?} is not a whole number"))
        };
        let seed = var("FUZZ_SEED").map_or_else(|| fastrand::u64(..), |v| number("FUZZ_SEED", v));
        let cases = var("FUZZ_CASES").map_or(DEFAULT_CASES as u64, |v| number("FUZZ_CASES", v));
        let only = var("FUZZ_CASE").map(|v| number("FUZZ_CASE", v) as usize);
        Self {
            seed,
            cases: cases as usize,
            only,
        }
    }
}

/// Real tokens, forged ones and real order ids for the generator to use.
async fn prepare(app: &TestApp) -> Known {
    let alice = app.login("alice", "alice-secret").await;
    let bob = app.login("bob", "bob-secret").await;
    let mut ids = Vec::new();
    for token in [Some(&alice), Some(&bob), None] {
        let mut request = app
            .client
            .post(format!("{}/api/orders", app.url))
            .json(&json!({"item": "fuzz-fixture", "quantity": 1}));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let order: Value = request
            .send()
            .await
            .expect("the gateway answers")
            .json()
            .await
            .expect("an order");
        ids.push(order["id"].as_str().expect("an order id").to_owned());
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    let later = json!(now + 3600);
    let claims =
        |sub: Value, exp: Value| json!({"sub": sub, "iat": now, "exp": exp, "jti": "fuzz"});
    let sign = |key: &str, alg: Algorithm, claims: &Value| {
        encode(
            &Header::new(alg),
            claims,
            &EncodingKey::from_secret(key.as_bytes()),
        )
        .expect("a token")
    };
    let ours = |sub: Value, exp: Value| sign(JWT_SECRET, Algorithm::HS256, &claims(sub, exp));
    let alice_later = || claims(json!("alice"), later.clone());
    // `{"alg":"none","typ":"JWT"}` over a real payload, with no signature.
    let payload = ours(json!("alice"), later.clone())
        .split('.')
        .nth(1)
        .expect("a payload segment")
        .to_owned();
    // Tokens signed with the stack's own key but odd claims reach code no
    // outsider can; they are here because a caller with a token of any
    // shape must still get a 4xx, never a crash.
    let forged = vec![
        ours(json!("alice"), json!(now - 3600)),
        sign(
            "some-other-secret-that-is-long-enough!!",
            Algorithm::HS256,
            &alice_later(),
        ),
        sign(JWT_SECRET, Algorithm::HS512, &alice_later()),
        format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}."),
        sign(JWT_SECRET, Algorithm::HS256, &json!({"sub": "alice"})),
        ours(json!(42), later.clone()),
        ours(json!(""), later.clone()),
        ours(json!("é\u{0}\u{202e}🛒"), later.clone()),
        ours(json!("x".repeat(5_000)), later.clone()),
        ours(json!("alice"), json!(u64::MAX)),
        ours(json!("alice"), json!(1e30)),
        ours(json!("alice"), json!(-1)),
    ];
    Known {
        tokens: vec![alice, bob],
        forged,
        ids,
    }
}

/// What the run saw.
#[derive(Default)]
struct Tally {
    cases: usize,
    /// Cases per route and status.
    statuses: BTreeMap<(Route, u16), usize>,
    /// Answer times per route, in milliseconds.
    latencies: BTreeMap<Route, Vec<u64>>,
    /// Oversize bodies whose connection was reset before the answer could
    /// be read: the server may answer 413 and close without reading the rest.
    oversize_resets: usize,
    /// One description per failing case.
    failures: Vec<String>,
}

impl Tally {
    fn summary(&self, seed: u64, elapsed: Duration) -> String {
        let mut out = format!(
            "fuzz: {} cases through the gateway in {:.1} s, {} failing (seed {seed})",
            self.cases,
            elapsed.as_secs_f64(),
            self.failures.len()
        );
        for route in Route::ALL {
            let counts: Vec<String> = self
                .statuses
                .range((route, 0)..(route, u16::MAX))
                .map(|((_, status), n)| format!("{status}x{n}"))
                .collect();
            let mut ms = self.latencies.get(&route).cloned().unwrap_or_default();
            ms.sort_unstable();
            let at = |q: f64| {
                ms.get(((ms.len() as f64 - 1.0) * q) as usize)
                    .copied()
                    .unwrap_or(0)
            };
            out.push_str(&format!(
                "\n  {:<22} {} (p50 {} ms, p99 {} ms, max {} ms)",
                route.label(),
                counts.join(" "),
                at(0.5),
                at(0.99),
                at(1.0)
            ));
        }
        if self.oversize_resets > 0 {
            out.push_str(&format!(
                "\n  {} oversize bodies were cut off by a reset after the 413",
                self.oversize_resets
            ));
        }
        out
    }
}

/// Runs `indices` with [`IN_FLIGHT`] requests at a time (one for a replay).
async fn run(
    addr: SocketAddr,
    known: Arc<Known>,
    settings: Settings,
    indices: Vec<usize>,
) -> Tally {
    let next = Arc::new(AtomicUsize::new(0));
    let indices = Arc::new(indices);
    let tally = Arc::new(Mutex::new(Tally::default()));
    let verbose = settings.only.is_some();
    // A replay sends its two copies one after the other.
    let in_flight = if verbose { 1 } else { IN_FLIGHT };
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..in_flight {
        let (next, indices, tally, known) =
            (next.clone(), indices.clone(), tally.clone(), known.clone());
        workers.spawn(async move {
            while let Some(&index) = indices.get(next.fetch_add(1, Ordering::Relaxed)) {
                let case = generate::case(settings.seed, index, &known);
                let wire = case.wire(&addr.to_string());
                let sent = Instant::now();
                let outcome = tokio::time::timeout(
                    ANSWER_TIMEOUT,
                    exchange(addr, &wire, case.method == "HEAD"),
                )
                .await
                .unwrap_or_else(|_| Err(format!("no answer within {ANSWER_TIMEOUT:?}")));
                if verbose {
                    eprintln!(
                        "{}",
                        describe(
                            settings.seed,
                            &case,
                            &wire,
                            "replayed",
                            outcome.as_ref().ok(),
                            true
                        )
                    );
                }
                let mut t = tally
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                t.cases += 1;
                let ms = u64::try_from(sent.elapsed().as_millis()).unwrap_or(u64::MAX);
                t.latencies.entry(case.route).or_default().push(ms);
                match outcome {
                    Ok(answer) => {
                        *t.statuses.entry((case.route, answer.status)).or_default() += 1;
                        if let Err(problem) = check(&case, &answer) {
                            let d = describe(
                                settings.seed,
                                &case,
                                &wire,
                                &problem,
                                Some(&answer),
                                verbose,
                            );
                            t.failures.push(d);
                        }
                    }
                    Err(_) if case.body.len() > cloudmart_http::error::BODY_LIMIT_BYTES => {
                        t.oversize_resets += 1;
                    }
                    Err(problem) => {
                        let d = describe(settings.seed, &case, &wire, &problem, None, verbose);
                        t.failures.push(d);
                    }
                }
            }
        });
    }
    while let Some(joined) = workers.join_next().await {
        joined.expect("a fuzz worker panicked");
    }
    Arc::try_unwrap(tally)
        .ok()
        .expect("every worker has finished")
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The property one answer must hold.
fn check(case: &Case, answer: &Answer) -> Result<(), String> {
    let status = answer.status;
    if status >= 500 {
        return Err(format!("answered {status}, a server error"));
    }
    if !(200..300).contains(&status) && !(400..500).contains(&status) {
        return Err(format!("answered {status}, neither a 2xx nor a 4xx"));
    }
    let content_type = answer.header("content-type");
    if !content_type.starts_with("application/json") {
        return Err(format!(
            "answered {status} as {content_type:?}, not application/json"
        ));
    }
    if (200..300).contains(&status) && !names_a_route(&case.path) {
        return Err(format!(
            "answered {status} for a path that names no public route, so the request reached something the gateway should not expose"
        ));
    }
    if case.method == "HEAD" || status == 204 {
        return Ok(());
    }
    if status >= 400 {
        return check_error(answer);
    }
    serde_json::from_slice::<Value>(&answer.body)
        .map_err(|e| format!("answered {status} with a body that is not JSON: {e}"))?;
    Ok(())
}

/// An error answer in the standard body, served as JSON.
fn check_error(answer: &Answer) -> Result<(), String> {
    let status = answer.status;
    let content_type = answer.header("content-type");
    if !content_type.starts_with("application/json") {
        return Err(format!(
            "answered {status} as {content_type:?}, not application/json"
        ));
    }
    let body: Value = serde_json::from_slice(&answer.body)
        .map_err(|e| format!("answered {status} with a body that is not JSON: {e}"))?;
    standard_error(&body)
        .map_err(|why| format!("answered {status} without the standard error body: {why}"))
}

/// `{"error":{"code":"snake_case","message":"..."}}` and nothing else.
fn standard_error(body: &Value) -> Result<(), String> {
    let top = body.as_object().ok_or("the body is not an object")?;
    if top.len() != 1 {
        return Err(format!(
            "top-level keys {:?}, expected only \"error\"",
            top.keys().collect::<Vec<_>>()
        ));
    }
    let error = top
        .get("error")
        .and_then(Value::as_object)
        .ok_or("no \"error\" object")?;
    let code = error
        .get("code")
        .and_then(Value::as_str)
        .ok_or("error.code is not a string")?;
    if code.is_empty() || !code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
        return Err(format!("error.code {code:?} is not snake_case"));
    }
    let message = error
        .get("message")
        .and_then(Value::as_str)
        .ok_or("error.message is not a string")?;
    if message.trim().is_empty() {
        return Err("error.message is empty".to_owned());
    }
    if error.len() != 2 {
        return Err(format!(
            "error has keys {:?}, expected code and message",
            error.keys().collect::<Vec<_>>()
        ));
    }
    Ok(())
}

/// Whether `path` (as sent, before any resolution) is one of the routes a
/// client may reach through the gateway.
fn names_a_route(path: &str) -> bool {
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let segments: Vec<&str> = path.split('/').collect();
    let plain = |s: &str| !s.is_empty() && !s.contains('\\') && !is_dot_segment(s);
    match segments.as_slice() {
        ["", "api", "orders"] | ["", "api", "health"] => true,
        ["", "api", "orders", id] => plain(id),
        [
            "",
            "api",
            "auth",
            "login" | "register" | "validate" | "logout",
        ] => true,
        _ => false,
    }
}

/// `.` or `..` in any spelling a URL parser resolves.
fn is_dot_segment(s: &str) -> bool {
    let s = s.to_ascii_lowercase().replace("%2e", ".");
    s == "." || s == ".."
}

/// The case, the exact request and the answer, with the command that
/// replays it. Long requests are shortened unless `full`.
fn describe(
    seed: u64,
    case: &Case,
    wire: &[u8],
    problem: &str,
    answer: Option<&Answer>,
    full: bool,
) -> String {
    let shown = |bytes: &[u8]| {
        if full || bytes.len() <= 2_000 {
            bytes.escape_ascii().to_string()
        } else {
            format!(
                "{}…[{} bytes]…{}",
                bytes[..1_500].escape_ascii(),
                bytes.len() - 1_800,
                bytes[bytes.len() - 300..].escape_ascii()
            )
        }
    };
    let answer = answer.map_or_else(
        || "no answer".to_owned(),
        |a| {
            format!(
                "{} content-type {:?} body {}",
                a.status,
                a.header("content-type"),
                shown(&a.body)
            )
        },
    );
    format!(
        "case {} ({}) of seed {seed}: {problem}\n  request ({} bytes): {}\n  answer: {answer}\n  replay: FUZZ_SEED={seed} FUZZ_CASE={} cargo test -p cloudmart-cli --test e2e fuzz -- --nocapture",
        case.index,
        case.route.label(),
        wire.len(),
        shown(wire),
        case.index,
    )
}

/// The gateway's socket address, for raw connections.
fn gateway_addr(app: &TestApp) -> SocketAddr {
    app.url
        .trim_start_matches("http://")
        .parse()
        .expect("the gateway's address")
}

/// Services whose `/health` does not answer 200.
async fn unhealthy_services(app: &TestApp) -> Vec<String> {
    let mut failing = Vec::new();
    for service in &app.stack.services {
        let ok = app
            .client
            .get(format!("{}/health", service.url()))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200);
        if !ok {
            failing.push(service.name.to_owned());
        }
    }
    failing
}
