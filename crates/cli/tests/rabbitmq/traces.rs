//! Spans as a trace UI gets them: everything the services export goes to the
//! in-test OTLP collector (`cloudmart_testkit::otlp`), and these tests look
//! traces up by the trace id of a response's `traceparent`.
//!
//! - One order is one trace with spans of all six services, MongoDB, the
//!   publish and the consume, every parent link intact.
//! - A retried call is one client span per attempt, and the injected
//!   failures that caused the retries are on the server spans.
//! - A request shed by database-service says so in its span.
//!
//! A failed check prints the tree of span names.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use cloudmart_cli::stack::Single;
use cloudmart_run::Service;
use cloudmart_testkit::otlp::{Collector, SpanRecord, trace_id_of, tree};
use cloudmart_testkit::{TempDir, closed_port, servers};
use serde_json::{Value, json};

use cloudmart_cli::stack::SERVICE_NAMES as SERVICES;

use crate::helpers::{Broker, logs, spawn_app, traces};

/// How long spans may take to arrive (the exporter sends every second).
const ARRIVAL: Duration = Duration::from_secs(15);

/// A name no other test or run uses.
fn unique(what: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "traces_{what}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// Panics with `why` and the tree of `spans`.
fn fail(why: &str, spans: &[SpanRecord]) -> ! {
    panic!("{why}\nspans received:\n{}", tree(spans))
}

/// Checks `ok`, failing with the tree of `spans` otherwise.
fn check(ok: bool, why: &str, spans: &[SpanRecord]) {
    if !ok {
        fail(why, spans);
    }
}

/// The spans of `service` of `kind` named `name`.
fn find<'a>(spans: &'a [SpanRecord], service: &str, kind: &str, name: &str) -> Vec<&'a SpanRecord> {
    spans
        .iter()
        .filter(|s| s.service == service && s.kind == kind && s.name == name)
        .collect()
}

/// The trace id in a response's `traceparent`.
fn trace_of(response: &reqwest::Response) -> String {
    let tp = response
        .headers()
        .get("traceparent")
        .expect("every response carries traceparent")
        .to_str()
        .unwrap();
    trace_id_of(tp)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_order_is_one_trace_from_the_gateway_through_mongodb_and_rabbitmq() {
    let test = "rabbitmq_traces_one_order";
    let Some(broker) = Broker::start(test).await else {
        return;
    };
    let Some(mongodb) = servers::require_mongodb(test) else {
        return;
    };
    let collector = traces();
    let db_name = unique("db");
    let app = spawn_app(&broker, &[("MONGODB_URI", &mongodb), ("DB_NAME", &db_name)]).await;

    // Act: register (one argon2 hash), then place an order, as a user would.
    let user = unique("user");
    let register = app
        .client
        .post(format!("{}/api/auth/register", app.url))
        .json(&json!({"username": user, "password": "correct horse battery"}))
        .send()
        .await
        .unwrap();
    assert_eq!(register.status(), 201, "register");
    let register_trace = trace_of(&register);
    let response = app
        .client
        .post(format!("{}/api/orders", app.url))
        .json(&json!({"item": "traced-laptop", "quantity": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let trace_id = trace_of(&response);
    let order: Value = response.json().await.unwrap();
    let order_id = order["id"].as_str().unwrap().to_owned();

    // Assert: the whole trace arrives, consumer included.
    let arrived = collector
        .wait_for_trace(&trace_id, ARRIVAL, |spans| {
            let services: BTreeSet<&str> = spans.iter().map(|s| s.service.as_str()).collect();
            SERVICES.iter().all(|s| services.contains(s))
                && spans.iter().any(|s| s.kind == "consumer")
                && spans
                    .iter()
                    .any(|s| s.str_attr("db.operation.name") == Some("insert"))
        })
        .await;
    let spans = arrived.unwrap_or_else(|partial| {
        fail(
            &format!("trace {trace_id} did not reach all six services, MongoDB and the consumer"),
            &partial,
        )
    });
    // Shown with --nocapture; docs/workshop/traces.md quotes it.
    println!("trace {trace_id}:\n{}", tree(&spans));

    // The gateway's server span is the one root; every other parent is in the trace.
    let ids: BTreeSet<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
    let roots: Vec<&SpanRecord> = spans
        .iter()
        .filter(|s| s.parent_span_id.is_empty())
        .collect();
    check(roots.len() == 1, "exactly one root span", &spans);
    let root = roots[0];
    check(
        root.service == "gateway" && root.kind == "server" && root.name == "POST /api/{*rest}",
        "the root is the gateway's server span POST /api/{*rest}",
        &spans,
    );
    check(
        spans
            .iter()
            .all(|s| s.parent_span_id.is_empty() || ids.contains(s.parent_span_id.as_str())),
        "every parent_span_id is a span of the trace",
        &spans,
    );
    let by_id: HashMap<&str, &SpanRecord> = spans.iter().map(|s| (s.span_id.as_str(), s)).collect();
    let parent = |s: &SpanRecord| by_id.get(s.parent_span_id.as_str()).copied();

    // HTTP: each hop's server span hangs under the caller's client span.
    for server in spans.iter().filter(|s| s.kind == "server") {
        check(
            server.str_attr("http.request.method").is_some()
                && server.str_attr("url.path").is_some()
                && server.int_attr("http.response.status_code").is_some()
                && server.str_attr("http.route").is_some()
                && server.name
                    == format!(
                        "{} {}",
                        server.str_attr("http.request.method").unwrap_or_default(),
                        server.str_attr("http.route").unwrap_or_default()
                    ),
            &format!("server span {} follows the HTTP conventions", server.name),
            &spans,
        );
        if server.span_id != root.span_id {
            let caller = parent(server);
            check(
                caller.is_some_and(|c| c.kind == "client" && c.service != server.service),
                &format!(
                    "{}'s server span {} is the child of another service's client span",
                    server.service, server.name
                ),
                &spans,
            );
        }
    }
    for client in spans
        .iter()
        .filter(|s| s.kind == "client" && s.attr("http.request.method").is_some())
    {
        check(
            client.str_attr("server.address").is_some()
                && client.int_attr("server.port").is_some()
                && client.str_attr("url.full").is_some()
                && client.int_attr("http.response.status_code").is_some()
                && client.int_attr("attempt") == Some(1)
                && client.attr("http.request.resend_count").is_none(),
            &format!(
                "client span {} of {} follows the HTTP conventions",
                client.name, client.service
            ),
            &spans,
        );
    }
    let hops: BTreeSet<(&str, &str)> = spans
        .iter()
        .filter(|s| s.kind == "server")
        .map(|s| (s.service.as_str(), s.name.as_str()))
        .collect();
    for hop in [
        ("gateway", "POST /api/{*rest}"),
        ("api-service", "POST /api/orders"),
        ("auth-service", "POST /auth/validate"),
        ("order-service", "POST /orders"),
        ("database-service", "POST /orders"),
    ] {
        check(
            hops.contains(&hop),
            &format!("a server span {hop:?}"),
            &spans,
        );
    }

    // MongoDB: an insert client span under database-service's POST /orders.
    let insert = spans
        .iter()
        .find(|s| s.str_attr("db.operation.name") == Some("insert"))
        .unwrap();
    check(
        insert.service == "database-service"
            && insert.kind == "client"
            && insert.name == "insert orders"
            && insert.str_attr("db.system.name") == Some("mongodb")
            && insert.str_attr("db.collection.name") == Some("orders")
            && insert.str_attr("db.namespace") == Some(db_name.as_str())
            && insert.str_attr("server.address").is_some()
            && parent(insert).is_some_and(|p| p.kind == "server" && p.name == "POST /orders"),
        "a MongoDB client span \"insert orders\" under database-service's server span",
        &spans,
    );

    // RabbitMQ: the publish span of order-service is the consumer span's parent.
    let publish_name = format!("publish {}", broker.direct.exchange);
    let publishes = find(&spans, "order-service", "producer", &publish_name);
    check(
        publishes.len() == 1,
        &format!("one producer span {publish_name}"),
        &spans,
    );
    let publish = publishes[0];
    check(
        publish.str_attr("messaging.system") == Some("rabbitmq")
            && publish.str_attr("messaging.operation.type") == Some("send")
            && publish.str_attr("messaging.destination.name")
                == Some(broker.direct.exchange.as_str())
            && publish.str_attr("messaging.message.id") == Some(order_id.as_str()),
        "the producer span follows the messaging conventions",
        &spans,
    );
    let process_name = format!("process {}", broker.direct.queue);
    let processes = find(&spans, "notification-service", "consumer", &process_name);
    check(
        !processes.is_empty(),
        &format!("a consumer span {process_name}"),
        &spans,
    );
    for process in &processes {
        check(
            process.parent_span_id == publish.span_id
                && process.str_attr("messaging.system") == Some("rabbitmq")
                && process.str_attr("messaging.operation.type") == Some("process")
                && process.str_attr("messaging.destination.subscription.name")
                    == Some(broker.direct.queue.as_str())
                && process.str_attr("order_id") == Some(order_id.as_str()),
            "the consumer span is the child of the publish span, through the message headers",
            &spans,
        );
    }

    // Logs: every line written inside a span names its trace and span.
    let lines = logs().lines();
    let untraced: Vec<&Value> = lines
        .iter()
        .filter(|l| l.get("span").is_some())
        .filter(|l| {
            !(l["trace_id"].as_str().is_some_and(|t| t.len() == 32)
                && l["span_id"].as_str().is_some_and(|s| s.len() == 16))
        })
        .collect();
    assert!(
        untraced.is_empty(),
        "log lines inside spans without ids: {untraced:#?}"
    );
    let order_lines: BTreeSet<String> = lines
        .iter()
        .filter(|l| l["trace_id"] == trace_id.as_str())
        .filter_map(|l| l["service"].as_str().map(str::to_owned))
        .collect();
    assert!(
        order_lines.contains("order-service") && order_lines.contains("notification-service"),
        "the order's log lines carry its trace id: {order_lines:?}"
    );

    // argon2: registering hashed once, and the span says what it cost.
    let registered = collector
        .wait_for_trace(&register_trace, ARRIVAL, |spans| {
            spans.iter().any(|s| s.name == "argon2 hash")
        })
        .await
        .unwrap_or_else(|partial| fail("the register trace has an argon2 hash span", &partial));
    let hash = registered.iter().find(|s| s.name == "argon2 hash").unwrap();
    check(
        hash.service == "auth-service"
            && hash.int_attr("argon2.memory_kib") == Some(19_456)
            && hash.int_attr("argon2.iterations") == Some(2)
            && hash.int_attr("auth.hash.inflight").is_some_and(|n| n >= 1)
            && hash.int_attr("auth.hash.wait_ms").is_some(),
        "the argon2 hash span carries its memory cost and the hashes in flight",
        &registered,
    );

    app.stop().await;
    broker.cleanup().await;
}

/// Starts `S` alone with `env` on a free port.
async fn start<S: Service>(env: &[(&str, &str)]) -> Single {
    let mut vars: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    vars.entry("PORT".to_owned())
        .or_insert_with(|| "0".to_owned());
    Single::start::<S>(&vars)
        .await
        .unwrap_or_else(|e| panic!("{} starts: {e}", S::NAME))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_call_is_one_client_span_per_attempt_and_the_injected_failures_show() {
    let collector: &Collector = traces();
    let dir = TempDir::new("traces");
    let data = dir.to_env();
    let database = start::<cloudmart_database::Application>(&[
        ("DB_NAME", "traces"),
        ("DATA_DIR", &data),
        ("CHAOS_FAILURE_RATE", "1"),
    ])
    .await;
    let notification = format!("http://127.0.0.1:{}", closed_port());
    let order = start::<cloudmart_order::Application>(&[
        ("DATABASE_URL", &database.url()),
        ("NOTIFICATION_URL", &notification),
        ("RETRY_MAX_ATTEMPTS", "3"),
        ("RETRY_BASE_DELAY_MS", "1"),
        ("RETRY_MAX_DELAY_MS", "5"),
        ("RELAY_INTERVAL_MS", "60000"),
    ])
    .await;

    // Act: every write to database-service fails, three times.
    let response = reqwest::Client::new()
        .post(format!("{}/orders", order.url()))
        .json(&json!({"items": [{"item": "retried-laptop", "quantity": 1}]}))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_server_error(), "{}", response.status());
    let trace_id = trace_of(&response);

    // Assert: three sibling client spans, attempts 1 to 3, each answered by
    // a database-service server span that says the failure was injected.
    let arrived = collector
        .wait_for_trace(&trace_id, ARRIVAL, |spans| {
            find(spans, "order-service", "client", "POST /orders").len() >= 3
                && find(spans, "database-service", "server", "POST /orders").len() >= 3
                && !find(spans, "order-service", "server", "POST /orders").is_empty()
        })
        .await;
    let spans =
        arrived.unwrap_or_else(|partial| fail("three attempts did not arrive as spans", &partial));
    println!("trace {trace_id}:\n{}", tree(&spans));
    let caller = find(&spans, "order-service", "server", "POST /orders");
    check(
        caller.len() == 1 && caller[0].error,
        "one failed order-service server span",
        &spans,
    );
    let caller = caller[0];
    let attempts = find(&spans, "order-service", "client", "POST /orders");
    check(attempts.len() == 3, "exactly three client spans", &spans);
    let by_attempt: BTreeMap<i64, &SpanRecord> = attempts
        .iter()
        .map(|s| (s.int_attr("attempt").unwrap_or(0), *s))
        .collect();
    check(
        by_attempt.keys().copied().eq([1, 2, 3]),
        "the client spans carry attempts 1, 2 and 3",
        &spans,
    );
    for (attempt, span) in &by_attempt {
        let resend = span.int_attr("http.request.resend_count");
        check(
            resend == (*attempt > 1).then_some(attempt - 1),
            &format!(
                "attempt {attempt} has http.request.resend_count {:?}",
                (*attempt > 1).then_some(attempt - 1)
            ),
            &spans,
        );
        check(
            span.parent_span_id == caller.span_id
                && span.error
                && span.int_attr("http.response.status_code") == Some(500)
                && span.str_attr("error.type") == Some("500")
                && span.str_attr("server.address") == Some("127.0.0.1"),
            &format!("attempt {attempt} is a failed sibling under the order-service server span"),
            &spans,
        );
        let answered: Vec<&SpanRecord> = spans
            .iter()
            .filter(|s| s.parent_span_id == span.span_id)
            .collect();
        check(
            answered.len() == 1
                && answered[0].service == "database-service"
                && answered[0].kind == "server"
                && answered[0].error
                && answered[0].attr("chaos.injected") == Some(&Value::Bool(true))
                && answered[0].has_event_with("chaos.injected", &Value::Bool(true)),
            &format!(
                "attempt {attempt} was answered by a database-service span marked chaos.injected"
            ),
            &spans,
        );
    }
    check(
        caller.events.iter().any(|e| {
            e.name
                .contains("retrying POST database-service /orders: attempt 2 of 3")
                && e.name.contains("database-service answered 500")
        }),
        "the order-service span has the retry log line naming the downstream as an event",
        &spans,
    );

    order.stop().await;
    database.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_shed_by_database_service_says_so_in_its_span() {
    let collector = traces();
    let dir = TempDir::new("traces");
    let data = dir.to_env();
    // One slot, no waiting for it, and each request holds it for 400 ms.
    let database = start::<cloudmart_database::Application>(&[
        ("DB_NAME", "traces"),
        ("DATA_DIR", &data),
        ("DB_MAX_INFLIGHT", "1"),
        ("DB_QUEUE_TIMEOUT_MS", "0"),
        ("CHAOS_LATENCY_MS", "400"),
    ])
    .await;
    let client = reqwest::Client::new();

    // Act: four requests at once; only one fits.
    let url = format!("{}/orders", database.url());
    let responses = futures::future::join_all((0..4).map(|_| client.get(&url).send())).await;
    let (shed, served): (Vec<_>, Vec<_>) = responses
        .into_iter()
        .map(|r| r.expect("database-service answers"))
        .partition(|r| r.status() == 503);

    // Assert
    assert!(
        !shed.is_empty() && !served.is_empty(),
        "one served, the rest shed"
    );
    let shed_trace = trace_of(&shed[0]);
    let spans = collector
        .wait_for_trace(&shed_trace, ARRIVAL, |spans| !spans.is_empty())
        .await
        .unwrap_or_else(|partial| fail("the shed request's span arrives", &partial));
    let span = &spans[0];
    check(
        span.name == "GET /orders"
            && span.error
            && span.str_attr("error.type") == Some("503")
            && span.has_event_with("load.shed", &Value::Bool(true)),
        "the shed request's server span has a load.shed event",
        &spans,
    );
    let served_trace = trace_of(&served[0]);
    let spans = collector
        .wait_for_trace(&served_trace, ARRIVAL, |spans| !spans.is_empty())
        .await
        .unwrap_or_else(|partial| fail("the served request's span arrives", &partial));
    check(
        spans[0].int_attr("chaos.latency_ms") == Some(400),
        "the served request's span says it was slowed on purpose",
        &spans,
    );

    database.stop().await;
}
