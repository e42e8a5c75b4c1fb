//! `doctor cluster` against recorded Kubernetes API objects (there is no
//! cluster here). The kube client talks to a tower service that answers
//! each list request with a fixture from `tests/fixtures/cluster/`
//! (see its README), and the gateway smoke check is the real one, pointed
//! at a tiny in-test shop or at a closed port.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cloudmart_doctor::catalogue::Catalogue;
use cloudmart_doctor::cluster::scoreboard::{Scoreboard, SmokeOutcome, Status};
use cloudmart_doctor::cluster::{Checker, Cluster, Options, Timestamp};
use cloudmart_doctor::yaml::{Node, Value as YamlValue};
use serde_json::Value;

use crate::{context, repo};

/// The instant the fixtures were recorded for (see generate.py).
const NOW: &str = "2026-11-21T15:00:00Z";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cluster")
}

/// Changes a list response before it is served: `(resource, list)`.
type Patch = Arc<dyn Fn(&str, &mut Value) + Send + Sync>;

/// What the fake API server serves: layers of fixture directories (an
/// overlay first, `healthy/` or `broken/` last) and an optional patch.
#[derive(Clone)]
struct Recorded {
    layers: Arc<Mutex<Vec<PathBuf>>>,
    patch: Arc<Mutex<Option<Patch>>>,
    requests: Arc<Mutex<Vec<String>>>,
}

impl Recorded {
    fn new(layers: &[&str]) -> Self {
        Self {
            layers: Arc::new(Mutex::new(
                layers.iter().map(|l| fixtures().join(l)).collect(),
            )),
            patch: Arc::default(),
            requests: Arc::default(),
        }
    }

    fn set_patch(&self, patch: impl Fn(&str, &mut Value) + Send + Sync + 'static) {
        *self.patch.lock().unwrap() = Some(Arc::new(patch));
    }

    /// The list response for `resource` in `namespace` (`None`: cluster
    /// scoped): the base layer's items, overlaid by name.
    fn list(&self, resource: &str, namespace: Option<&str>) -> Value {
        let mut list = serde_json::json!({
            "kind": "List", "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": []
        });
        if namespace.is_some_and(|ns| ns != "production") {
            return list;
        }
        let layers = self.layers.lock().unwrap().clone();
        for layer in layers.iter().rev() {
            let Ok(text) = std::fs::read_to_string(layer.join(format!("{resource}.json"))) else {
                continue;
            };
            let overlay: Value = serde_json::from_str(&text).expect("fixture is JSON");
            if list["items"].as_array().is_some_and(Vec::is_empty) {
                list = overlay;
                continue;
            }
            let items = list["items"].as_array_mut().unwrap();
            for item in overlay["items"].as_array().unwrap() {
                let name = &item["metadata"]["name"];
                match items.iter_mut().find(|i| &i["metadata"]["name"] == name) {
                    Some(old) => *old = item.clone(),
                    None => items.push(item.clone()),
                }
            }
        }
        if let Some(patch) = self.patch.lock().unwrap().as_ref() {
            patch(resource, &mut list);
        }
        list
    }

    /// A client whose API server is this recording.
    fn cluster(&self) -> Cluster {
        let recorded = self.clone();
        let service = tower::service_fn(move |req: http::Request<kube::client::Body>| {
            let recorded = recorded.clone();
            async move {
                let path = req.uri().path().to_owned();
                recorded.requests.lock().unwrap().push(path.clone());
                let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
                let namespace = segments
                    .iter()
                    .position(|s| *s == "namespaces")
                    .and_then(|i| segments.get(i + 1))
                    .copied();
                let resource = segments.last().copied().unwrap_or_default();
                let body = serde_json::to_vec(&recorded.list(resource, namespace)).unwrap();
                Ok::<_, std::convert::Infallible>(
                    http::Response::builder()
                        .status(200)
                        .header("content-type", "application/json")
                        .body(kube::client::Body::from(body))
                        .unwrap(),
                )
            }
        });
        Cluster::new(
            kube::Client::new(service, "production"),
            "recorded API objects",
        )
    }
}

fn checker(recorded: &Recorded, namespace: &str) -> Checker {
    let catalogue = Catalogue::load(&repo().join("docs/instructor/faults.yaml")).unwrap();
    let options = Options {
        namespace: namespace.to_owned(),
        window: Duration::from_secs(300),
    };
    Checker::new(recorded.cluster(), catalogue, context(), options)
}

fn now() -> Timestamp {
    NOW.parse().unwrap()
}

/// A shop that accepts every order: what a healthy gateway answers.
async fn working_gateway() -> String {
    use axum::{Json, Router, http::StatusCode, routing::post};
    let app = Router::new().route(
        "/api/orders",
        post(|| async {
            (
                StatusCode::CREATED,
                Json(serde_json::json!({"id": "0193a4b2-0000-7000-8000-000000000001"})),
            )
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// A port nothing listens on: what the gateway looks like with F5 (or
/// with no cluster at all).
async fn closed_gateway() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    url
}

async fn smoke(url: &str) -> SmokeOutcome {
    cloudmart_cli::smoke::gateway_check(url, 3, Duration::from_secs(2)).await
}

async fn check(layers: &[&str], gateway: &str) -> Scoreboard {
    let recorded = Recorded::new(layers);
    checker(&recorded, "production")
        .check(now(), smoke(gateway))
        .await
        .expect("the recorded API answers")
}

fn status(board: &Scoreboard, id: &str) -> Status {
    fault(board, id).status
}

fn fault<'a>(
    board: &'a Scoreboard,
    id: &str,
) -> &'a cloudmart_doctor::cluster::scoreboard::FaultLine {
    board
        .faults
        .iter()
        .find(|f| f.id == id)
        .unwrap_or_else(|| panic!("{id} not on the scoreboard:\n{}", board.render_text()))
}

fn reasons(board: &Scoreboard, id: &str) -> String {
    fault(board, id).reasons.join("\n")
}

#[tokio::test]
async fn the_incident_shows_all_eight_faults_present() {
    let board = check(&["broken"], &closed_gateway().await).await;
    let text = board.render_text();
    let ids: Vec<&str> = board.faults.iter().map(|f| f.id.as_str()).collect();
    assert_eq!(
        ids,
        ["F1", "F2", "F3", "F4", "F5", "F6", "F7", "F8"],
        "{text}"
    );
    assert!(
        board.faults.iter().all(|f| f.status == Status::Present),
        "{text}"
    );
    assert!(!board.healthy);
    assert_eq!(board.exit_code(), 1);
    assert!(text.contains("NOT HEALTHY"), "{text}");
    assert!(!board.smoke.ok());
    assert!(
        board
            .smoke
            .failure
            .as_deref()
            .is_some_and(|f| f.contains("connection refused")),
        "{:?}",
        board.smoke
    );
}

#[tokio::test]
async fn the_projector_view_hides_the_answers() {
    let board = check(&["broken"], &closed_gateway().await).await;
    let text = board.render_text_without_answers();
    assert!(text.contains("F3  PRESENT\n"), "{text}");
    for answer in [
        "order-service",
        "DATABASE_URL",
        "liveness",
        "[env-url]",
        "nginx-gateway",
    ] {
        assert!(!text.contains(answer), "{answer} in\n{text}");
    }
    assert!(text.contains("NOT HEALTHY: 0 of 8 faults fixed"), "{text}");
}

#[tokio::test]
async fn each_fault_of_the_incident_is_also_seen_live() {
    let board = check(&["broken"], &closed_gateway().await).await;
    let text = board.render_text();
    // The static rule on the live object, for every fault.
    for (id, rule) in [
        ("F1", "[service-config]"),
        ("F2", "[image-not-built]"),
        ("F3", "[env-url]"),
        ("F4", "[probe-port]"),
        ("F5", "[service-selector]"),
        ("F6", "[memory-below-peak]"),
        ("F7", "[retry-without-backoff]"),
        ("F8", "[chaos-enabled]"),
    ] {
        assert!(reasons(&board, id).contains(rule), "{id} {rule}\n{text}");
    }
    // And what only the cluster shows.
    let f1 = reasons(&board, "F1");
    assert!(
        f1.contains("[crash-loop]") && f1.contains("exit code 1"),
        "{f1}"
    );
    let f2 = reasons(&board, "F2");
    assert!(
        f2.contains("[image-pull]") && f2.contains("notification-service:v2.0"),
        "{f2}"
    );
    let f4 = reasons(&board, "F4");
    assert!(f4.contains("[restarts]"), "{f4}");
    assert!(
        f4.contains("[probe-failures]")
            && f4.contains("Liveness probe failed")
            && f4.contains(":8080"),
        "{f4}"
    );
    let f5 = reasons(&board, "F5");
    assert!(
        f5.contains("[no-endpoints]") && f5.contains("app=nginx-gateway"),
        "{f5}"
    );
    let f6 = reasons(&board, "F6");
    assert!(f6.contains("[oom-killed]") && f6.contains("64Mi"), "{f6}");
    // The config value of F3 is in the ConfigMap: the finding says so.
    assert!(
        reasons(&board, "F3").contains("ConfigMap/order-service-config [env-url]"),
        "{text}"
    );
    // Old start-up noise is not a problem: the order-service readiness
    // failures of 14:40 are outside the window and its pods are ready.
    assert!(!text.contains("Readiness probe failed"), "{text}");
}

#[tokio::test]
async fn the_healthy_system_with_a_working_gateway_is_healthy() {
    let board = check(&["healthy"], &working_gateway().await).await;
    let text = board.render_text();
    assert!(
        board.faults.iter().all(|f| f.status == Status::Fixed),
        "{text}"
    );
    assert!(board.findings.is_empty(), "{text}");
    assert!(board.observations.is_empty(), "{text}");
    assert!(board.other.is_empty(), "{text}");
    assert!(board.notes.is_empty(), "{text}");
    assert!(board.smoke.ok(), "{text}");
    assert_eq!(board.smoke.passed, 3);
    assert!(board.healthy, "{text}");
    assert_eq!(board.exit_code(), 0);
    assert!(text.contains("HEALTHY: 8 of 8 faults fixed"), "{text}");
}

#[tokio::test]
async fn a_fixed_cluster_whose_gateway_does_not_answer_is_not_healthy() {
    let board = check(&["healthy"], &closed_gateway().await).await;
    assert!(board.faults.iter().all(|f| f.status == Status::Fixed));
    assert!(!board.healthy);
    assert_eq!(board.exit_code(), 1);
    let text = board.render_text();
    assert!(
        text.contains("smoke  FAILED  0/3 orders") && text.contains("connection refused"),
        "{text}"
    );
    assert!(
        text.contains("NOT HEALTHY: 8 of 8 faults fixed, smoke failed"),
        "{text}"
    );
}

#[tokio::test]
async fn a_removed_liveness_probe_is_not_a_fix() {
    let board = check(
        &["variants/probe-removed", "healthy"],
        &working_gateway().await,
    )
    .await;
    assert_eq!(status(&board, "F4"), Status::NotAccepted);
    assert!(
        reasons(&board, "F4").contains("[probe-missing]")
            && reasons(&board, "F4").contains("livenessProbe"),
        "{}",
        board.render_text()
    );
    assert!(board.render_text().contains("F4  NOT ACCEPTED"));
    assert!(!board.healthy);
    assert_eq!(board.exit_code(), 1);
}

#[tokio::test]
async fn a_memory_limit_of_2gi_is_not_a_fix() {
    let board = check(&["variants/limit-2gi", "healthy"], &working_gateway().await).await;
    assert_eq!(status(&board, "F6"), Status::NotAccepted);
    assert!(
        reasons(&board, "F6").contains("[memory-limit]") && reasons(&board, "F6").contains("2Gi"),
        "{}",
        board.render_text()
    );
    assert!(!board.healthy);
}

#[tokio::test]
async fn chaos_moved_into_another_configmap_is_still_present() {
    let board = check(
        &["variants/chaos-envfrom", "healthy"],
        &working_gateway().await,
    )
    .await;
    assert_eq!(status(&board, "F8"), Status::Present);
    let f8 = reasons(&board, "F8");
    assert!(
        f8.contains("ConfigMap/database-service-tuning [chaos-enabled]")
            && f8.contains("CHAOS_FAILURE_RATE=0.5"),
        "{}",
        board.render_text()
    );
    assert!(!board.healthy);
}

#[tokio::test]
async fn chaos_behind_a_variable_reference_is_still_present() {
    let board = check(
        &["variants/chaos-expansion", "healthy"],
        &working_gateway().await,
    )
    .await;
    assert_eq!(status(&board, "F8"), Status::Present);
    assert!(
        reasons(&board, "F8").contains("CHAOS_FAILURE_RATE=0.5"),
        "{}",
        board.render_text()
    );
}

#[tokio::test]
async fn scaling_the_restarting_service_to_zero_is_not_a_fix() {
    let board = check(
        &["variants/api-scaled-to-zero", "healthy"],
        &working_gateway().await,
    )
    .await;
    assert_eq!(status(&board, "F4"), Status::NotAccepted);
    assert!(
        reasons(&board, "F4").contains("[scaled-to-zero]"),
        "{}",
        board.render_text()
    );
    // Its Service has no endpoints now: an "other" problem.
    assert!(
        board
            .other
            .iter()
            .any(|o| o.contains("Service api-service has no ready endpoints")),
        "{}",
        board.render_text()
    );
    assert!(!board.healthy);
}

#[tokio::test]
async fn a_configmap_fixed_without_a_restart_is_still_present() {
    let board = check(
        &["variants/stale-config", "healthy"],
        &working_gateway().await,
    )
    .await;
    let text = board.render_text();
    for id in ["F3", "F7"] {
        assert_eq!(status(&board, id), Status::Present, "{text}");
        let r = reasons(&board, id);
        assert!(
            r.contains("ConfigMap/order-service-config [stale-config]")
                && r.contains("kubectl rollout restart deployment/order-service -n production"),
            "{text}"
        );
    }
    assert_eq!(status(&board, "F1"), Status::Fixed, "{text}");
    assert!(!board.healthy);
}

#[tokio::test]
async fn deleting_the_faulty_objects_is_not_a_fix() {
    let recorded = Recorded::new(&["healthy"]);
    let board = checker(&recorded, "staging")
        .check(now(), smoke(&working_gateway().await))
        .await
        .unwrap();
    assert!(
        board.faults.iter().all(|f| f.status == Status::NotAccepted),
        "{}",
        board.render_text()
    );
    assert!(reasons(&board, "F5").contains("Service/gateway does not exist in namespace staging"));
    let requests = recorded.requests.lock().unwrap().clone();
    assert!(
        requests.contains(&"/api/v1/namespaces/staging/pods".to_owned()),
        "{requests:?}"
    );
}

#[tokio::test]
async fn restarts_between_watch_rounds_count_even_outside_the_window() {
    let recorded = Recorded::new(&["healthy"]);
    let mut checker = checker(&recorded, "production");
    let gateway = working_gateway().await;
    let first = checker.check(now(), smoke(&gateway)).await.unwrap();
    assert!(first.healthy, "{}", first.render_text());
    // The gateway restarted once, long ago as far as the window goes (its
    // last run ended at 14:41), but after the previous round.
    recorded.set_patch(|resource, list| {
        if resource != "pods" {
            return;
        }
        for pod in list["items"].as_array_mut().unwrap() {
            if pod["metadata"]["labels"]["app"] == "gateway" {
                let cs = &mut pod["status"]["containerStatuses"][0];
                cs["restartCount"] = 1.into();
                cs["lastState"] = serde_json::json!({"terminated": {
                    "exitCode": 0, "reason": "Completed",
                    "startedAt": "2026-11-21T14:40:03Z", "finishedAt": "2026-11-21T14:41:00Z"}});
                break;
            }
        }
    });
    let second = checker.check(now(), smoke(&gateway)).await.unwrap();
    let text = second.render_text();
    assert!(!second.healthy, "{text}");
    assert!(
        second
            .other
            .iter()
            .any(|o| o.contains("[restarts]") && o.contains("1 since the previous check")),
        "{text}"
    );
    // A fresh checker has no previous round, and 14:41 is outside the window.
    let mut fresh = self::checker(&recorded, "production");
    let board = fresh.check(now(), smoke(&gateway)).await.unwrap();
    assert!(board.healthy, "{}", board.render_text());
}

#[tokio::test]
async fn the_json_scoreboard_is_for_graders() {
    let board = check(
        &["variants/probe-removed", "healthy"],
        &working_gateway().await,
    )
    .await;
    let json: Value = serde_json::from_str(&board.to_json()).unwrap();
    assert_eq!(json["healthy"], false);
    assert_eq!(json["scenario"], "friday-incident");
    assert_eq!(json["namespace"], "production");
    assert_eq!(json["checked_at"], NOW);
    let f4 = json["faults"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == "F4")
        .unwrap();
    assert_eq!(f4["status"], "NOT_ACCEPTED");
    assert_eq!(json["faults"][0]["status"], "FIXED");
    assert_eq!(json["smoke"]["passed"], 3);
    assert_eq!(json["findings"][0]["rule"], "probe-missing");
    assert_eq!(json["findings"][0]["object"], "Deployment/api-service");
}

#[tokio::test]
async fn an_unreachable_api_server_is_one_clear_error() {
    let port = closed_gateway().await;
    let cluster = Cluster::from_config(kube::Config::new(port.parse().unwrap())).unwrap();
    let catalogue = Catalogue::built_in().unwrap();
    let options = Options {
        namespace: "production".to_owned(),
        window: Duration::from_secs(300),
    };
    let err = Checker::new(cluster, catalogue, context(), options)
        .check(now(), smoke(&port))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(&format!("cannot reach the Kubernetes API server at {port}")),
        "{err}"
    );
    assert!(err.contains("connection refused"), "{err}");
    assert!(!err.contains('\n'), "{err}");
}

#[tokio::test]
async fn an_unknown_context_is_one_clear_error() {
    let err = Cluster::connect(Some("cloudmart-test-no-such-context"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("cannot use context cloudmart-test-no-such-context"),
        "{err}"
    );
    assert!(!err.contains('\n'), "{err}");
}

/// `path -> scalar` of a JSON value, every scalar as text.
fn flatten_json(v: &Value, path: &str, out: &mut BTreeMap<String, String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                flatten_json(v, &format!("{path}.{k}"), out);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                flatten_json(v, &format!("{path}[{i}]"), out);
            }
        }
        Value::Null => {}
        Value::String(s) => {
            out.insert(path.to_owned(), s.clone());
        }
        other => {
            out.insert(path.to_owned(), other.to_string());
        }
    }
}

/// The same for a parsed manifest.
fn flatten_yaml(n: &Node, path: &str, out: &mut BTreeMap<String, String>) {
    match &n.value {
        YamlValue::Map(entries) => {
            for (k, v) in entries {
                flatten_yaml(v, &format!("{path}.{k}"), out);
            }
        }
        YamlValue::Seq(items) => {
            for (i, v) in items.iter().enumerate() {
                flatten_yaml(v, &format!("{path}[{i}]"), out);
            }
        }
        YamlValue::Null => {}
        YamlValue::Scalar(s) => {
            out.insert(path.to_owned(), s.clone());
        }
    }
}

#[test]
fn the_recorded_objects_were_made_from_the_current_manifests() {
    // Every recorded object that kubectl applied carries the manifest it
    // was made from (the last-applied annotation). It must equal the object
    // in k8s/ or k8s-broken/ as it is now; if not, rerun generate.py.
    for (layer, dir) in [("healthy", "k8s"), ("broken", "k8s-broken")] {
        let manifests = crate::load(dir);
        let mut seen = 0;
        for resource in [
            "deployments",
            "statefulsets",
            "services",
            "configmaps",
            "secrets",
            "ingresses",
        ] {
            let text =
                std::fs::read_to_string(fixtures().join(layer).join(format!("{resource}.json")))
                    .unwrap();
            let list: Value = serde_json::from_str(&text).unwrap();
            for item in list["items"].as_array().unwrap() {
                let applied = &item["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"];
                let Some(applied) = applied.as_str() else {
                    continue;
                };
                let applied: Value = serde_json::from_str(applied).unwrap();
                let kind = applied["kind"].as_str().unwrap();
                let name = applied["metadata"]["name"].as_str().unwrap();
                let object = manifests
                    .find(kind, name, "production")
                    .unwrap_or_else(|| panic!("{dir} has no {kind}/{name}: rerun generate.py"));
                let (mut recorded, mut current) = (BTreeMap::new(), BTreeMap::new());
                flatten_json(&applied, "", &mut recorded);
                flatten_yaml(&object.doc.root, "", &mut current);
                assert_eq!(
                    recorded, current,
                    "{layer}/{resource}.json {kind}/{name} differs from {dir}/: rerun generate.py"
                );
                seen += 1;
            }
        }
        assert!(seen >= 25, "{layer}: only {seen} objects checked");
    }
}
