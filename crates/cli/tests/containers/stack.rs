//! The compose stack as users run it: `docker-compose.yml`, with the
//! third-party services from `docker-compose.offline.yml` where no registry
//! can be reached. Orders go in through the published gateway port, and
//! everything is checked from outside the services.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use cloudmart_testkit::wait_until;

use crate::docker::{self, Compose, mib};
use crate::shop::{self, Orders, Rabbit, Shop, SteadyLoad};

/// CloudMart's own services.
const CLOUDMART: [&str; 6] = [
    "gateway",
    "api-service",
    "auth-service",
    "order-service",
    "database-service",
    "notification-service",
];

/// Everything started: Jaeger and Grafana have no stand-in, and nothing
/// depends on Grafana; the collector's dependency on Jaeger is skipped by
/// naming the services with `--no-deps`.
const STARTED: [&str; 11] = [
    "gateway",
    "api-service",
    "auth-service",
    "order-service",
    "database-service",
    "notification-service",
    "mongodb",
    "rabbitmq",
    "redis",
    "otel-collector",
    "prometheus",
];

/// The database-service compose gives to MongoDB (`DB_NAME`).
const DB_NAME: &str = "cloudmart-db";

/// The compose project the test owns.
const PROJECT: &str = "cloudmart-ci";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Docker engine and the images: make test-containers"]
async fn compose_stack_stores_and_notifies_every_order_through_outages() {
    println!("engine: Docker {}", docker::engine().expect("an engine"));
    docker::require_images(&[
        "gateway:latest",
        "api-service:latest",
        "auth-service:latest",
        "order-service:latest",
        "database-service:latest",
        "notification-service:latest",
        "cloudmart:latest",
    ]);
    let compose = Compose::new(
        PROJECT,
        &["docker-compose.yml", "docker-compose.offline.yml"],
    );
    // What an aborted run may have left.
    let _ = compose.down();

    // Arrange: the stack, healthy by its own health checks.
    let start = Instant::now();
    let mut up = vec!["up", "-d", "--no-build", "--no-deps"];
    up.extend_from_slice(&STARTED);
    let healthy = compose
        .up_healthy(&up, &STARTED, Duration::from_secs(300))
        .unwrap_or_else(|e| panic!("{e}"));
    let last = healthy.last().map_or(0.0, |(_, at)| at.as_secs_f64());
    println!(
        "all {} containers healthy {last:.1} s after `docker-compose up` (each by its own health check; \
         compose starts a service once those it depends on are healthy):",
        STARTED.len(),
    );
    for (service, at) in &healthy {
        println!("  {service:<22} {:>5.1} s", at.as_secs_f64());
    }
    println!("  (jaeger and grafana are not started: they have no local stand-in)");

    let outside = Outside {
        shop: Shop::new("http://127.0.0.1:8080"),
        mongo: Orders::connect(&format!("{}:27017", compose.ip("mongodb")), DB_NAME).await,
        rabbit: Rabbit::new("http://127.0.0.1:15672"),
    };

    fifty_orders_are_stored_and_notified_once(&compose, &outside).await;
    prometheus_scrapes_every_service(&outside.shop.client).await;
    rabbitmq_stopped_for_ten_seconds(&compose, &outside).await;
    notification_service_restarted(&compose, &outside).await;
    spans_reach_the_collector(&compose, &outside.shop.client).await;
    containers_are_hardened_as_declared(&compose);
    peak_memory_under_the_load_generator(&compose);

    // Down, and nothing of the project is left.
    compose.down().expect("compose down");
    let left = compose.leftovers();
    assert!(left.is_empty(), "left behind after down -v: {left:?}");
    println!(
        "stack down with its volumes; no container, network or volume of project {PROJECT} left ({:.0} s in all)",
        start.elapsed().as_secs_f64()
    );
}

/// The shop as the test sees it from outside: a customer at the published
/// gateway port, MongoDB read directly, RabbitMQ's management API.
struct Outside {
    shop: Shop,
    mongo: Orders,
    rabbit: Rabbit,
}

/// notification-service's address now (a restart may change it).
fn notifier(compose: &Compose) -> String {
    format!("http://{}:3000", compose.ip("notification-service"))
}

async fn fifty_orders_are_stored_and_notified_once(compose: &Compose, outside: &Outside) {
    let Outside {
        shop,
        mongo,
        rabbit,
    } = outside;
    let notifier = notifier(compose);
    // Act: 25 guest orders and 25 by logged-in customers.
    let alice = shop.login("alice", "alice-secret").await;
    let bob = shop.login("bob", "bob-secret").await;
    let mut placed = Vec::new();
    for i in 0..50 {
        let who = match i % 4 {
            0 | 2 => None,
            1 => Some(("alice", alice.as_str())),
            _ => Some(("bob", bob.as_str())),
        };
        placed.push(shop.order(who).await);
    }

    // Assert: 50 answered 201 and stored under the right customer...
    let ids = shop::created(&placed);
    assert_eq!(ids.len(), 50, "answers: {:?}", shop::by_status(&placed));
    let guests = placed.iter().filter(|p| p.customer == "guest").count();
    let waited = mongo
        .wait_all(&ids, "published", Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let stored = mongo.find(&ids).await;
    for p in &placed {
        let id = p.id.as_deref().unwrap_or_default();
        assert_eq!(stored[id].0, p.customer, "order {id}'s customer");
    }

    // ...and each notified once: the queue is drained, nothing was
    // dead-lettered, and notification-service delivered exactly these 50.
    let drained = wait_until(Duration::from_secs(30), || async {
        let q = rabbit.queue("notifications").await?;
        let n = shop::notifications(&shop.client, &notifier).await?;
        (q.ready == 0 && q.unacked == 0 && n.0 >= 50).then_some(n)
    })
    .await;
    let (sent, duplicates, recent) = drained.expect("the notifications queue drains");
    let dead = rabbit
        .queue("notifications.dead")
        .await
        .expect("the dead-letter queue");
    assert_eq!(sent, 50, "notification-service's sent count");
    assert_eq!(dead.ready, 0, "messages dead-lettered");
    let recent: BTreeSet<String> = recent.into_iter().collect();
    let ids_set: BTreeSet<String> = ids.iter().cloned().collect();
    assert_eq!(recent, ids_set, "the orders notification-service delivered");
    println!(
        "50/50 orders answered 201 ({guests} as guest, {} logged in); 50/50 stored in MongoDB \
         and published ({:.1} s); 50/50 notified once (sent {sent}, duplicates skipped {duplicates}, \
         dead-lettered 0)",
        50 - guests,
        waited.as_secs_f64()
    );
}

async fn prometheus_scrapes_every_service(client: &reqwest::Client) {
    let start = Instant::now();
    let targets = wait_until(Duration::from_secs(60), || async {
        let v: serde_json::Value = client
            .get("http://127.0.0.1:9090/api/v1/targets")
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let up: Vec<String> = v["data"]["activeTargets"]
            .as_array()?
            .iter()
            .filter(|t| t["labels"]["job"] == "cloudmart" && t["health"] == "up")
            .filter_map(|t| t["labels"]["service"].as_str().map(str::to_owned))
            .collect();
        (up.len() == CLOUDMART.len()).then_some(up)
    })
    .await;
    let up = targets.expect("Prometheus reports every CloudMart target up within 60 s");
    let mut up_sorted = up.clone();
    up_sorted.sort();
    let mut want: Vec<String> = CLOUDMART.iter().map(|s| (*s).to_owned()).collect();
    want.sort();
    assert_eq!(up_sorted, want);
    println!(
        "Prometheus (observability/prometheus.yml): {}/6 CloudMart targets up ({:.1} s after the orders)",
        up.len(),
        start.elapsed().as_secs_f64()
    );
}

/// What an outage phase ends with: every order answered 201 is stored and
/// published, the queues are empty, and notification-service's count grew
/// by exactly the number of orders stored meanwhile.
async fn settle(
    label: &str,
    placed: &[shop::Placed],
    stored_before: u64,
    sent_before: Option<u64>,
    outside: &Outside,
    notifier: &str,
) {
    let Outside {
        shop,
        mongo,
        rabbit,
    } = outside;
    let client = &shop.client;
    let ids = shop::created(placed);
    let waited = mongo
        .wait_all(&ids, "published", Duration::from_secs(120))
        .await
        .unwrap_or_else(|e| panic!("{label}: {e}"));
    let stored = mongo.count().await - stored_before;
    let drained = wait_until(Duration::from_secs(60), || async {
        let q = rabbit.queue("notifications").await?;
        let (sent, duplicates, _) = shop::notifications(client, notifier).await?;
        let done = q.ready == 0 && q.unacked == 0 && q.consumers > 0;
        match sent_before {
            Some(before) => {
                (done && sent - before >= stored).then_some((sent - before, duplicates))
            }
            None => done.then_some((sent, duplicates)),
        }
    })
    .await;
    let (sent, duplicates) =
        drained.unwrap_or_else(|| panic!("{label}: the notifications queue did not drain"));
    let dead = rabbit
        .queue("notifications.dead")
        .await
        .expect("the dead-letter queue");
    assert_eq!(dead.ready, 0, "{label}: messages dead-lettered");
    if sent_before.is_some() {
        assert_eq!(
            sent, stored,
            "{label}: notifications sent for {stored} orders stored"
        );
    }
    println!(
        "  answers {:?}; {} answered 201, all stored and published {:.1} s after the load; \
         {stored} stored in all; notifications sent {sent} (duplicates skipped {duplicates}); \
         queue and dead-letter queue empty",
        shop::by_status(placed),
        ids.len(),
        waited.as_secs_f64()
    );
}

async fn rabbitmq_stopped_for_ten_seconds(compose: &Compose, outside: &Outside) {
    let Outside {
        shop,
        mongo,
        rabbit,
    } = outside;
    let notifier = notifier(compose);
    let stored_before = mongo.count().await;
    let (sent_before, _, _) = shop::notifications(&shop.client, &notifier)
        .await
        .expect("notification-service answers");
    let rabbitmq = compose.container("rabbitmq");

    // Act: 20 orders/s; RabbitMQ stops for 10 s in the middle.
    let load = SteadyLoad::start(shop, 20);
    tokio::time::sleep(Duration::from_secs(3)).await;
    docker::docker(&["stop", "-t", "10", &rabbitmq]).expect("docker stop rabbitmq");
    let stopped = Instant::now();
    tokio::time::sleep(Duration::from_secs(10)).await;
    docker::docker(&["start", &rabbitmq]).expect("docker start rabbitmq");
    let down_for = stopped.elapsed();
    let back = wait_until(Duration::from_secs(60), || async {
        rabbit.queue("notifications").await.map(|_| ())
    })
    .await;
    assert!(
        back.is_some(),
        "RabbitMQ's API did not come back within 60 s"
    );
    let back_after = stopped.elapsed();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let placed = load.stop().await;

    // Assert
    println!(
        "RabbitMQ stopped for {:.1} s (its API back {:.1} s after the stop) under 20 orders/s:",
        down_for.as_secs_f64(),
        back_after.as_secs_f64()
    );
    settle(
        "RabbitMQ stop",
        &placed,
        stored_before,
        Some(sent_before),
        outside,
        &notifier,
    )
    .await;
}

async fn notification_service_restarted(compose: &Compose, outside: &Outside) {
    let Outside { shop, mongo, .. } = outside;
    let stored_before = mongo.count().await;
    let notification = compose.container("notification-service");

    // Act: 20 orders/s; notification-service restarts in the middle.
    let load = SteadyLoad::start(shop, 20);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let restart = Instant::now();
    docker::docker(&["restart", "-t", "10", &notification])
        .expect("docker restart notification-service");
    let restarted_in = restart.elapsed();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let placed = load.stop().await;

    // Assert: no order is lost. Its counts start again at 0 with the new
    // process, so delivery is checked by the queue: it drains to empty with
    // a consumer attached and nothing dead-lettered.
    let notifier = notifier(compose);
    println!(
        "notification-service restarted ({:.1} s) under 20 orders/s:",
        restarted_in.as_secs_f64()
    );
    settle(
        "notification-service restart",
        &placed,
        stored_before,
        None,
        outside,
        &notifier,
    )
    .await;
}

async fn spans_reach_the_collector(compose: &Compose, client: &reqwest::Client) {
    let sink = format!("http://{}:4318/stats", compose.ip("otel-collector"));
    let stats = wait_until(Duration::from_secs(10), || async {
        let v: serde_json::Value = client.get(&sink).send().await.ok()?.json().await.ok()?;
        let spans = v["spans"].as_u64()?;
        (spans > 0).then_some((v["requests"].as_u64().unwrap_or(0), spans))
    })
    .await;
    let (requests, spans) = stats.expect("the services export spans to otel-collector");
    println!(
        "otel-collector (the OTLP sink stand-in): {spans} spans in {requests} export requests"
    );
}

/// What a service's `mem_limit` in docker-compose.yml says, in bytes.
fn compose_mem_limit(service: &str) -> i64 {
    let text = std::fs::read_to_string(docker::repo_root().join("docker-compose.yml"))
        .expect("docker-compose.yml");
    let docs = yaml_rust2::YamlLoader::load_from_str(&text).expect("compose YAML");
    let limit = docs[0]["services"][service]["mem_limit"]
        .as_str()
        .unwrap_or_else(|| panic!("{service} has a mem_limit"));
    let (n, unit) = limit.split_at(limit.len() - 1);
    let n: i64 = n.parse().expect("a number");
    match unit {
        "m" => n * 1024 * 1024,
        "g" => n * 1024 * 1024 * 1024,
        other => panic!("unexpected unit {other} in {limit}"),
    }
}

fn compose_read_only(service: &str) -> bool {
    let text = std::fs::read_to_string(docker::repo_root().join("docker-compose.yml"))
        .expect("docker-compose.yml");
    let docs = yaml_rust2::YamlLoader::load_from_str(&text).expect("compose YAML");
    docs[0]["services"][service]["read_only"].as_bool() == Some(true)
}

fn containers_are_hardened_as_declared(compose: &Compose) {
    println!("hardening, as the engine reports it:");
    for service in CLOUDMART {
        let id = compose.container(service);
        let inspect = compose.inspect(service);
        // Every process in the container, as `docker top` lists them.
        let top = docker::docker(&["top", &id, "-eo", "pid,uid"]).expect("docker top");
        let uids: BTreeSet<&str> = top
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().nth(1))
            .collect();
        assert_eq!(uids, BTreeSet::from(["10001"]), "{service}'s process uids");
        let read_only = inspect.read_only();
        assert_eq!(read_only, compose_read_only(service), "{service} read-only");
        let write =
            docker::output("docker", &["exec", &id, "touch", "/probe"]).expect("docker exec");
        assert!(
            !write.status.success()
                && String::from_utf8_lossy(&write.stderr).contains("Read-only file system"),
            "{service}: writing to / must fail"
        );
        let limit = inspect.memory_limit();
        assert_eq!(
            limit,
            compose_mem_limit(service),
            "{service}'s memory limit"
        );
        println!(
            "  {service:<22} uid 10001, read-only root (a write fails: Read-only file system), memory limit {:.0} MiB",
            mib(limit as u64)
        );
    }
}

fn peak_memory_under_the_load_generator(compose: &Compose) {
    let reset = CLOUDMART
        .iter()
        .all(|s| docker::reset_memory_peak(&compose.container(s)));
    compose
        .run(&[
            "--profile",
            "load",
            "up",
            "-d",
            "--no-build",
            "--no-deps",
            "loadgen",
        ])
        .expect("start loadgen");
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(30));
    compose
        .run(&["--profile", "load", "stop", "-t", "10", "loadgen"])
        .expect("stop loadgen");
    // With --quiet, the load generator prints only its report, when it stops.
    let report = docker::output("docker", &["logs", &compose.container("loadgen")])
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    println!(
        "peak memory per container (cgroup{}) under loadgen, profile mixed at 50/s for {:.0} s:",
        if reset {
            ", counted from the start of the load"
        } else {
            ", since the container started"
        },
        started.elapsed().as_secs_f64()
    );
    for service in CLOUDMART {
        let limit = compose.inspect(service).memory_limit() as u64;
        match docker::memory_peak(&compose.container(service)) {
            Some(peak) => {
                println!(
                    "  {service:<22} {:>6.1} MiB of {:.0} MiB",
                    mib(peak),
                    mib(limit)
                );
                assert!(peak < limit, "{service} reached its limit");
            }
            None => println!("  {service:<22} (no cgroup peak readable here)"),
        }
    }
    println!("loadgen's report:\n{}", report.trim_end());
}
