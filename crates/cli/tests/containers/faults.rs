//! Every fault of the Friday incident that a container can show, shown with
//! the real images. The fault's values are read from `k8s-broken/` and the
//! healthy ones from `k8s/`, so these runs cannot drift from the manifests
//! trainees apply. F5 (a Service selector) exists only in Kubernetes.
//!
//! The containers share one network on which each is reachable by its
//! Kubernetes Service name (`database-service`, `redis`, ...), so the
//! manifests' URLs resolve, or fail to, as they do in the cluster.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use cloudmart_doctor::model::{Manifests, containers};
use cloudmart_testkit::metric;
use serde_json::{Value, json};

use crate::docker::{self, Container, Network, mib};

const NETWORK: &str = "cloudmart-faults";

/// One service's container as a manifest set describes it.
struct Spec {
    env: BTreeMap<String, String>,
    image: String,
    memory_limit: String,
    liveness_port: String,
}

/// `service`'s Deployment in the manifest directory `dir` (`k8s` or
/// `k8s-broken`), with its environment resolved through ConfigMaps and
/// Secrets.
fn spec(dir: &str, service: &str) -> Spec {
    let manifests =
        Manifests::load(&docker::repo_root().join(dir)).unwrap_or_else(|e| panic!("{dir}: {e}"));
    let obj = manifests
        .find("Deployment", service, "production")
        .unwrap_or_else(|| panic!("{dir} has Deployment/{service}"));
    let template = obj
        .doc
        .root
        .path(&["spec", "template"])
        .expect("a pod template");
    let container = containers(template)
        .into_iter()
        .find(|c| c.name == service)
        .unwrap_or_else(|| panic!("{dir}: a container named {service}"));
    let env = manifests
        .environment(&obj, &container)
        .into_iter()
        .filter_map(|(k, v)| Some((k, v.value()?.to_owned())))
        .collect();
    Spec {
        env,
        image: container.image.to_owned(),
        memory_limit: container
            .node
            .str_at(&["resources", "limits", "memory"])
            .unwrap_or_default()
            .to_owned(),
        liveness_port: container
            .node
            .str_at(&["livenessProbe", "httpGet", "port"])
            .unwrap_or_default()
            .to_owned(),
    }
}

/// `docker run` arguments: on the faults network under `alias`, with `env`.
fn run_args<'a>(alias: &'a str, env: &'a [String], extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["--network", NETWORK, "--network-alias", alias];
    for e in env {
        args.extend(["-e", e.as_str()]);
    }
    args.extend_from_slice(extra);
    args
}

fn env_list(env: &BTreeMap<String, String>) -> Vec<String> {
    env.iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// A Kubernetes memory quantity as `docker run --memory` takes it (`64Mi` → `64m`).
fn docker_memory(quantity: &str) -> String {
    let bytes = cloudmart_doctor::model::memory_bytes(quantity)
        .unwrap_or_else(|| panic!("a memory quantity, got {quantity}"));
    format!("{}b", bytes)
}

/// Starts `image` as `alias` and waits until its own health check passes.
fn start_healthy(
    name: &str,
    alias: &str,
    image: &str,
    env: &BTreeMap<String, String>,
    extra: &[&str],
) -> Container {
    let env = env_list(env);
    let mut args = run_args(
        alias,
        &env,
        &["--health-interval", "1s", "--health-start-period", "1s"],
    );
    args.extend_from_slice(extra);
    args.push(image);
    let c = Container::run(name, &args).unwrap_or_else(|e| panic!("{e}"));
    let state = c.wait_health("healthy", Duration::from_secs(60));
    assert!(
        state.ends_with("/ healthy"),
        "{alias} did not turn healthy ({state}); its log:\n{}",
        c.logs()
    );
    c
}

fn database_post_count(client: &reqwest::Client, db: &str) -> impl Future<Output = f64> {
    let (client, db) = (client.clone(), db.to_owned());
    async move {
        metric(
            &client,
            &db,
            "http_server_requests_total",
            &[("method", "POST"), ("route", "/orders")],
        )
        .await
        .unwrap_or(0.0)
    }
}

/// Sends `n` orders to order-service at `base`, `concurrency` at a time,
/// and returns how many were answered 201.
async fn orders_to(client: &reqwest::Client, base: &str, n: usize, concurrency: usize) -> usize {
    let mut ok = 0;
    for chunk in (0..n).collect::<Vec<_>>().chunks(concurrency) {
        let calls = chunk.iter().map(|_| {
            client
                .post(format!("{base}/orders"))
                .json(&json!({"items": [{"item": "laptop", "quantity": 1}]}))
                .send()
        });
        for r in futures::future::join_all(calls).await {
            if r.is_ok_and(|r| r.status() == 201) {
                ok += 1;
            }
        }
    }
    ok
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Docker engine and the images: make test-containers"]
async fn every_container_fault_shows_its_symptom() {
    println!("engine: Docker {}", docker::engine().expect("an engine"));
    docker::require_images(&[
        "gateway:latest",
        "api-service:latest",
        "auth-service:latest",
        "order-service:latest",
        "database-service:latest",
        "cloudmart:latest",
        "cloudmart-standin/mongodb:local",
        "cloudmart-standin/redis:local",
    ]);
    let network = Network::create(NETWORK).unwrap_or_else(|e| panic!("{e}"));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("a client");

    // The stores the manifests' URLs name.
    let _mongodb = healthy_store(
        "cm-fault-mongodb",
        "mongodb",
        "cloudmart-standin/mongodb:local",
    );
    let _redis = healthy_store("cm-fault-redis", "redis", "cloudmart-standin/redis:local");

    f1_database_without_db_name();
    f2_image_that_was_never_built();
    f3_order_service_names_the_host_it_cannot_resolve(&client).await;
    f4_health_check_on_the_wrong_port();
    f6_auth_service_out_of_memory();
    f7_f8_retries_against_a_failing_database(&client).await;
    drop(network);
}

/// MongoDB and Redis stand-ins with their compose health checks.
fn healthy_store(name: &str, alias: &str, image: &str) -> Container {
    let check: &[&str] = match alias {
        "mongodb" => &[
            "--health-cmd",
            "mongosh --quiet --eval 'db.adminCommand(\"ping\").ok'",
        ],
        _ => &["--health-cmd", "redis-cli ping"],
    };
    let mut extra = check.to_vec();
    extra.extend([
        "--health-interval",
        "1s",
        "--health-start-period",
        "1s",
        image,
    ]);
    let c = Container::run(name, &run_args(alias, &[], &extra)).unwrap_or_else(|e| panic!("{e}"));
    let state = c.wait_health("healthy", Duration::from_secs(60));
    assert!(
        state.ends_with("/ healthy"),
        "{alias}: {state}\n{}",
        c.logs()
    );
    c
}

fn f1_database_without_db_name() {
    let broken = spec("k8s-broken", "database-service");
    assert!(
        !broken.env.contains_key("DB_NAME"),
        "k8s-broken still lacks DB_NAME"
    );
    let env = env_list(&broken.env);

    // As the kubelet runs it: restarted whenever it exits.
    let restarting = Container::run(
        "cm-f1-database",
        &run_args(
            "database-service",
            &env,
            &["--restart", "always", &broken.image],
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let started = Instant::now();
    let restarts = docker::poll(Duration::from_secs(60), || {
        let i = restarting.inspect();
        (i.restart_count() >= 3).then_some(i)
    })
    .expect("the restart count climbs to 3 within 60 s");
    let climbed_in = started.elapsed();
    drop(restarting);

    // One run on its own, to read its exit code and lifetime from a state
    // the restart manager is not rewriting underneath.
    let c = Container::run(
        "cm-f1-database-once",
        &run_args("database-service-once", &env, &[&broken.image]),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let last = docker::poll(Duration::from_secs(30), || {
        let i = c.inspect();
        (i.status() == "exited").then_some(i)
    })
    .expect("it exits by itself");
    let lived = last.last_run().unwrap_or_else(|| {
        panic!(
            "run times: started {} finished {}",
            last.0["State"]["StartedAt"], last.0["State"]["FinishedAt"]
        )
    });
    let logs = c.logs();
    let last_line = logs.lines().last().unwrap_or_default();

    assert_eq!(last.exit_code(), 1, "exit code");
    assert!(
        lived < Duration::from_secs(2),
        "it ran {lived:?} before exiting"
    );
    assert!(last_line.contains("DB_NAME"), "its last line: {last_line}");
    println!(
        "F1 database-service from k8s-broken (no DB_NAME): exit code {}, after {:.0} ms; \
         restart count {} after {:.1} s (policy always)\n  last log line: {last_line}",
        last.exit_code(),
        lived.as_secs_f64() * 1000.0,
        restarts.restart_count(),
        climbed_in.as_secs_f64()
    );
}

fn f2_image_that_was_never_built() {
    let broken = spec("k8s-broken", "notification-service");
    let healthy = spec("k8s", "notification-service");
    assert!(
        docker::docker(&["image", "inspect", &healthy.image]).is_ok(),
        "{} is built",
        healthy.image
    );
    let inspect = docker::docker(&["image", "inspect", &broken.image]);
    assert!(
        inspect.is_err(),
        "{} must not exist after make images",
        broken.image
    );

    let out = docker::output("docker", &["run", "--rm", &broken.image]).expect("docker run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(125),
        "docker run's own failure: {stderr}"
    );
    assert!(
        stderr.contains(&format!("Unable to find image '{}' locally", broken.image)),
        "{stderr}"
    );
    println!(
        "F2 {} is not among the images; `docker run {}` exits 125 after trying to pull it:",
        broken.image, broken.image
    );
    for line in stderr.lines().filter(|l| !l.contains("IPv4 forwarding")) {
        println!("  {line}");
    }
}

async fn f3_order_service_names_the_host_it_cannot_resolve(client: &reqwest::Client) {
    let healthy_db = spec("k8s", "database-service");
    let broken_order = spec("k8s-broken", "order-service");
    let healthy_order = spec("k8s", "order-service");
    let broken_url = &broken_order.env["DATABASE_URL"];
    let host = broken_url
        .trim_start_matches("http://")
        .split(':')
        .next()
        .unwrap_or_default()
        .to_owned();

    let _db = start_healthy(
        "cm-f3-database",
        "database-service",
        &healthy_db.image,
        &healthy_db.env,
        &[],
    );
    // Only F3's value is broken; the rest (retries, AMQP) is the healthy
    // configuration, without RabbitMQ: notifications go over HTTP.
    let mut env = healthy_order.env.clone();
    env.remove("AMQP_URL");
    env.insert("DATABASE_URL".to_owned(), broken_url.clone());
    let order = start_healthy(
        "cm-f3-order",
        "order-service",
        &healthy_order.image,
        &env,
        &[],
    );

    let res = client
        .post(format!("http://{}:3000/orders", order.ip()))
        .json(&json!({"items": [{"item": "laptop", "quantity": 1}]}))
        .send()
        .await
        .expect("order-service answers");
    let status = res.status().as_u16();
    let body: Value = res.json().await.unwrap_or_default();
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert_eq!(status, 502, "{body}");
    assert!(
        message.contains(&format!("cannot resolve {host}:")),
        "{body}"
    );
    let log_line = order
        .logs()
        .lines()
        .rfind(|l| l.contains("dns error"))
        .unwrap_or_default()
        .to_owned();
    assert!(
        log_line.contains(&format!("cannot resolve {host}:")),
        "order-service's log names {host}: {log_line}"
    );
    println!(
        "F3 order-service with DATABASE_URL={broken_url} (k8s-broken), database-service running as database-service:\n  \
         POST /orders -> {status} {body}\n  its log: {log_line}"
    );
}

fn f4_health_check_on_the_wrong_port() {
    let broken = spec("k8s-broken", "api-service");
    let healthy = spec("k8s", "api-service");
    let mut results = Vec::new();
    for (label, spec) in [("k8s-broken", &broken), ("k8s", &healthy)] {
        // The liveness probe's port, asked the way the image's own
        // HEALTHCHECK asks: the binary's healthcheck mode.
        let port = match spec.liveness_port.as_str() {
            "http" => "3000".to_owned(),
            p => p.to_owned(),
        };
        let check = format!("PORT={port} /usr/local/bin/api-service healthcheck");
        let env = env_list(&spec.env);
        let name = format!("cm-f4-api-{label}");
        let c = Container::run(
            &name,
            &run_args(
                "api-service",
                &env,
                &[
                    "--health-cmd",
                    &check,
                    "--health-interval",
                    "1s",
                    "--health-retries",
                    "3",
                    "--health-timeout",
                    "2s",
                    &spec.image,
                ],
            ),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let want = if label == "k8s" {
            "healthy"
        } else {
            "unhealthy"
        };
        let state = c.wait_health(want, Duration::from_secs(30));
        let i = c.inspect();
        assert_eq!(
            i.health(),
            want,
            "{label}: liveness on port {port}: {state}"
        );
        assert_eq!(i.status(), "running", "the process itself keeps running");
        results.push((
            label,
            port,
            want,
            i.health_log().last().cloned().unwrap_or_default(),
        ));
    }
    println!("F4 api-service with a health check on its liveness probe's port:");
    for (label, port, state, last) in results {
        println!("  {label:<10} port {port}: {state}; last check: {last}");
    }
}

fn f6_auth_service_out_of_memory() {
    let broken = spec("k8s-broken", "auth-service");
    let healthy = spec("k8s", "auth-service");
    let gateway = spec("k8s", "gateway");
    let _gw = start_healthy(
        "cm-f6-gateway",
        "gateway",
        &gateway.image,
        &gateway.env,
        &[],
    );
    println!(
        "F6 auth-service under a login burst from the load generator (login-heavy, 100/s for 4 s; \
         its orders fail here, as no api-service runs):"
    );
    for (label, spec) in [("k8s-broken", &broken), ("k8s", &healthy)] {
        let memory = docker_memory(&spec.memory_limit);
        let name = format!("cm-f6-auth-{label}");
        let auth = start_healthy(
            &name,
            "auth-service",
            &spec.image,
            &spec.env,
            &["--memory", &memory, "--memory-swap", &memory],
        );
        let load = docker::output(
            "docker",
            &[
                "run",
                "--rm",
                "--network",
                NETWORK,
                "cloudmart:latest",
                "load",
                "--url",
                "http://gateway:8080",
                "--profile",
                "login-heavy",
                "--rate",
                "100",
                "--duration-secs",
                "4",
                "--quiet",
            ],
        )
        .expect("the load generator runs");
        let report = String::from_utf8_lossy(&load.stdout).into_owned();
        let i = auth.inspect();
        let peak = docker::memory_peak(&auth.name);
        let peak_text = peak.map_or("not readable".to_owned(), |p| format!("{:.1} MiB", mib(p)));
        if label == "k8s-broken" {
            let killed = docker::poll(Duration::from_secs(30), || {
                let i = auth.inspect();
                (i.status() == "exited").then_some(i)
            })
            .unwrap_or(i);
            assert!(
                killed.oom_killed(),
                "OOMKilled with a {} limit",
                spec.memory_limit
            );
            assert_eq!(killed.exit_code(), 137);
            let logs = auth.logs();
            println!(
                "  limit {} (k8s-broken): OOMKilled, exit code {}; its log stops with no shutdown line:\n    {}",
                spec.memory_limit,
                killed.exit_code(),
                logs.lines().last().unwrap_or_default()
            );
        } else {
            assert!(!i.oom_killed() && i.status() == "running", "{}", i.status());
            println!(
                "  limit {} (k8s): no OOM kill, still running; cgroup peak {peak_text}",
                spec.memory_limit
            );
        }
        // The load generator's own words: the logins' latency and the
        // answers by status.
        let mut in_statuses = false;
        for line in report.lines() {
            in_statuses = (in_statuses || line.starts_with("status ")) && !line.trim().is_empty();
            if line.starts_with("login ") || line.starts_with("operation ") || in_statuses {
                println!("    | {line}");
            }
        }
    }
}

async fn f7_f8_retries_against_a_failing_database(client: &reqwest::Client) {
    let broken_db = spec("k8s-broken", "database-service");
    let healthy_db = spec("k8s", "database-service");
    let broken_order = spec("k8s-broken", "order-service");
    let healthy_order = spec("k8s", "order-service");
    let mut db_env = healthy_db.env.clone();

    // F8: chaos from k8s-broken against chaos from k8s, straight at
    // database-service.
    println!("F8 database-service, 400 POST /orders straight to it:");
    for (label, rate) in [
        ("k8s-broken", &broken_db.env["CHAOS_FAILURE_RATE"]),
        ("k8s", &healthy_db.env["CHAOS_FAILURE_RATE"]),
    ] {
        db_env.insert("CHAOS_FAILURE_RATE".to_owned(), rate.clone());
        let db = start_healthy(
            &format!("cm-f8-database-{label}"),
            "database-service",
            &healthy_db.image,
            &db_env,
            &[],
        );
        let base = format!("http://{}:8080", db.ip());
        let mut failed = 0;
        for i in 0..400 {
            let r = client
                .post(format!("{base}/orders"))
                .json(&json!({
                    "id": format!("f8-{label}-{i}"),
                    "customer": "guest",
                    "items": [{"item": "laptop", "quantity": 1}],
                    "idempotency_key": format!("f8-{label}-{i}"),
                }))
                .send()
                .await
                .expect("database-service answers");
            if r.status() == 500 {
                failed += 1;
            }
        }
        let rate: f64 = rate.parse().expect("a rate");
        if rate == 0.0 {
            assert_eq!(failed, 0, "no chaos, no failures");
        } else {
            let share = failed as f64 / 400.0;
            assert!(
                (share - rate).abs() < 0.15,
                "{failed} of 400 failed at rate {rate}"
            );
        }
        println!("  CHAOS_FAILURE_RATE={rate} ({label}): {failed} of 400 answered 500");
    }

    // F7: the retry policies against a failing database-service: F8's rate
    // as in the incident, and one that fails every write.
    let storm = [
        "RETRY_MAX_ATTEMPTS",
        "RETRY_BASE_DELAY_MS",
        "RETRY_MAX_DELAY_MS",
    ];
    let policy = |spec: &crate::faults::Spec| {
        storm
            .iter()
            .map(|k| spec.env[*k].clone())
            .collect::<Vec<_>>()
            .join("/")
    };
    println!(
        "F7 order-service's retries, 200 orders straight to order-service, 8 at a time \
         (policy = attempts/base ms/max ms):"
    );
    let mut per_order = BTreeMap::new();
    for rate in [broken_db.env["CHAOS_FAILURE_RATE"].as_str(), "1"] {
        db_env.insert("CHAOS_FAILURE_RATE".to_owned(), rate.to_owned());
        let db = start_healthy(
            &format!("cm-f7-database-{rate}"),
            "database-service",
            &healthy_db.image,
            &db_env,
            &[],
        );
        let db_url = format!("http://{}:8080", db.ip());
        for (label, spec) in [("k8s-broken", &broken_order), ("k8s", &healthy_order)] {
            let mut env = healthy_order.env.clone();
            env.remove("AMQP_URL");
            for k in storm {
                env.insert(k.to_owned(), spec.env[k].clone());
            }
            let order = start_healthy(
                &format!("cm-f7-order-{label}"),
                "order-service",
                &healthy_order.image,
                &env,
                &[],
            );
            let before = database_post_count(client, &db_url).await;
            let ok = orders_to(client, &format!("http://{}:3000", order.ip()), 200, 8).await;
            // order-service answers only after its last attempt, so every
            // POST of these orders has been counted by now.
            let after = database_post_count(client, &db_url).await;
            let ratio = (after - before) / 200.0;
            per_order.insert((rate.to_owned(), label), ratio);
            println!(
                "  failure rate {rate:<4} policy {:<9} ({label}): {ratio:.2} database POSTs per order, {ok}/200 orders stored",
                policy(spec)
            );
            drop(order);
        }
    }
    let fail_all_storm = per_order[&("1".to_owned(), "k8s-broken")];
    let fail_all_healthy = per_order[&("1".to_owned(), "k8s")];
    assert!(
        fail_all_storm >= 2.0,
        "the storm costs {fail_all_storm} POSTs per order"
    );
    assert!(fail_all_healthy < fail_all_storm, "backoff costs fewer");
    let half = broken_db.env["CHAOS_FAILURE_RATE"].clone();
    assert!(
        per_order[&(half.clone(), "k8s-broken")] > 1.5,
        "the storm retries at rate {half}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_values_come_from_the_manifests() {
        // The values the container run depends on, read the way it reads them.
        assert!(Path::new(&docker::repo_root().join("k8s-broken")).is_dir());
        let db = spec("k8s-broken", "database-service");
        assert!(!db.env.contains_key("DB_NAME"));
        assert_eq!(
            spec("k8s", "database-service").env["DB_NAME"],
            "cloudmart-db"
        );
        assert_eq!(
            spec("k8s-broken", "notification-service").image,
            "notification-service:v2.0"
        );
        assert_eq!(
            spec("k8s-broken", "order-service").env["DATABASE_URL"],
            "http://database:8080"
        );
        assert_eq!(spec("k8s-broken", "api-service").liveness_port, "8080");
        assert_eq!(spec("k8s-broken", "auth-service").memory_limit, "64Mi");
        assert_eq!(spec("k8s", "auth-service").memory_limit, "128Mi");
        assert_eq!(docker_memory("64Mi"), "67108864b");
        assert_eq!(
            spec("k8s-broken", "database-service").env["CHAOS_FAILURE_RATE"],
            "0.5"
        );
        assert_eq!(
            spec("k8s-broken", "order-service").env["RETRY_BASE_DELAY_MS"],
            "0"
        );
    }
}
