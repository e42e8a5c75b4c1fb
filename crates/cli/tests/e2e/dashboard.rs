//! The observability configuration against what the services really export
//! and how they are really deployed: the Grafana dashboard queries only
//! metrics some service exports (or a few named ones from Kubernetes), the
//! Prometheus configurations scrape all six services where they listen, and
//! the collector and Grafana are wired to what compose and k8s/ run.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use yaml_rust2::{Yaml, YamlLoader};

use crate::helpers::{Broker, SERVICES, repo_file, spawn_app_with_broker};

/// Metrics the dashboard may query that no CloudMart service exports: they
/// come from the kubelet's cAdvisor and from kube-state-metrics, and their
/// panels say what they show when those are not scraped.
const EXTERNAL: &[&str] = &[
    "container_memory_working_set_bytes",
    "container_spec_memory_limit_bytes",
    "kube_pod_container_resource_limits",
    "kube_pod_container_status_restarts_total",
];

const DASHBOARD: &str = "observability/grafana/dashboards/cloudmart.json";

/// Each service and the port it listens on by default (compose and k8s/
/// leave `PORT` unset).
fn ports() -> BTreeMap<&'static str, u16> {
    [
        (cloudmart_gateway::NAME, cloudmart_gateway::PORT),
        (cloudmart_api::NAME, cloudmart_api::PORT),
        (cloudmart_auth::NAME, cloudmart_auth::PORT),
        (cloudmart_order::NAME, cloudmart_order::PORT),
        (cloudmart_database::NAME, cloudmart_database::PORT),
        (cloudmart_notification::NAME, cloudmart_notification::PORT),
    ]
    .into_iter()
    .map(|(name, var)| {
        let port = var.default_value().and_then(Result::ok);
        (name, port.expect("PORT has a numeric default"))
    })
    .collect()
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo_file(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn yaml(path: &str) -> Vec<Yaml> {
    YamlLoader::load_from_str(&read(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn dashboard() -> Value {
    serde_json::from_str(&read(DASHBOARD)).unwrap_or_else(|e| panic!("{DASHBOARD}: {e}"))
}

/// PromQL words that are not metric names: aggregations, keywords and the
/// operators spelled as words.
const KEYWORDS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "atan2",
    "inf",
    "nan",
];

/// The metric names a PromQL expression selects. Label matchers (`{...}`),
/// ranges (`[...]`), strings, numbers, Grafana variables (`$service`,
/// `${x}`), function names and the label lists of `by (...)` and friends
/// are skipped.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    let skip_string = |i: &mut usize| {
        let quote = chars[*i];
        *i += 1;
        while *i < chars.len() && chars[*i] != quote {
            if chars[*i] == '\\' {
                *i += 1;
            }
            *i += 1;
        }
        *i += 1;
    };
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' | '\'' | '`' => skip_string(&mut i),
            '{' | '[' => {
                let close = if c == '{' { '}' } else { ']' };
                while i < chars.len() && chars[i] != close {
                    if matches!(chars[i], '"' | '\'' | '`') {
                        skip_string(&mut i);
                    } else {
                        i += 1;
                    }
                }
                i += 1;
            }
            '$' => {
                i += 1;
                if chars.get(i) == Some(&'{') {
                    while i < chars.len() && chars[i] != '}' {
                        i += 1;
                    }
                    i += 1;
                } else {
                    while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                        i += 1;
                    }
                }
            }
            c if c.is_ascii_digit()
                || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit)) =>
            {
                // A number or a duration (5m, 1.5e3, 0x1f).
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || matches!(chars[i], '_' | ':'))
                {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let mut next = i;
                while next < chars.len() && chars[next].is_whitespace() {
                    next += 1;
                }
                let is_call = chars.get(next) == Some(&'(');
                if matches!(
                    word.as_str(),
                    "by" | "without" | "on" | "ignoring" | "group_left" | "group_right"
                ) && is_call
                {
                    // A label list, not an argument list.
                    while next < chars.len() && chars[next] != ')' {
                        next += 1;
                    }
                    i = next + 1;
                } else if !is_call && !KEYWORDS.contains(&word.as_str()) {
                    names.insert(word);
                }
            }
            _ => i += 1,
        }
    }
    names
}

/// Every PromQL expression in the dashboard: panel targets (rows' panels
/// too) and query variables.
fn expressions(dashboard: &Value) -> Vec<(String, String)> {
    fn panels(list: &Value, out: &mut Vec<(String, String)>) {
        for panel in list.as_array().into_iter().flatten() {
            let title = panel["title"].as_str().unwrap_or("?").to_owned();
            for target in panel["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = target["expr"].as_str() {
                    out.push((title.clone(), expr.to_owned()));
                }
            }
            panels(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    panels(&dashboard["panels"], &mut out);
    for var in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let query = var["query"]["query"].as_str().or(var["query"].as_str());
        if let Some(q) = query {
            let name = format!("${}", var["name"].as_str().unwrap_or("?"));
            // label_values(<selector>, <label>): only the selector names metrics.
            let selector = q
                .strip_prefix("label_values(")
                .and_then(|rest| rest.rsplit_once(','))
                .map_or(q, |(selector, _)| selector);
            out.push((name, selector.to_owned()));
        }
    }
    out
}

/// The README's metrics table, as the metric names each service exports.
fn readme_metrics() -> BTreeMap<&'static str, BTreeSet<String>> {
    let readme = read("README.md");
    let section = readme
        .split("\n### Metrics\n")
        .nth(1)
        .and_then(|rest| rest.split("\n#").next())
        .expect("README.md has a ### Metrics section");
    let mut by_service: BTreeMap<&'static str, BTreeSet<String>> =
        SERVICES.iter().map(|s| (*s, BTreeSet::new())).collect();
    for row in section.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let name = cells[1].trim_matches('`').to_owned();
        let services: Vec<&'static str> = if cells[4] == "all six" {
            SERVICES.to_vec()
        } else {
            cells[4]
                .split(", ")
                .map(|s| {
                    *SERVICES
                        .iter()
                        .find(|known| **known == s)
                        .unwrap_or_else(|| panic!("README.md: {name}: unknown service {s}"))
                })
                .collect()
        };
        for service in services {
            by_service.get_mut(service).unwrap().insert(name.clone());
        }
    }
    by_service
}

#[test]
fn metric_names_are_found_and_everything_else_is_skipped() {
    let expr = r#"histogram_quantile(0.95, sum by (service, le) (rate(http_server_request_duration_seconds_bucket{job="cloudmart", service=~"$service", route!~"/health|/metrics"}[$__rate_interval])))"#;
    assert_eq!(
        metric_names(expr),
        BTreeSet::from(["http_server_request_duration_seconds_bucket".to_owned()])
    );
    let expr = r#"round(sum by (service) (label_replace(increase(kube_pod_container_status_restarts_total{container=~"$service"}[1h]), "service", "$1", "container", "(.*)")) or sum without (pod) (changes(process_start_time_seconds[1h]))) > bool 0 unless on() vector(1) * up offset 5m"#;
    assert_eq!(
        metric_names(expr),
        BTreeSet::from([
            "kube_pod_container_status_restarts_total".to_owned(),
            "process_start_time_seconds".to_owned(),
            "up".to_owned(),
        ])
    );
    assert_eq!(
        metric_names("a_total / ignoring(x) group_left (y) b:rate5m + 1.5e3 - ${x}"),
        BTreeSet::from(["a_total".to_owned(), "b:rate5m".to_owned()])
    );
}

#[tokio::test]
async fn every_metric_the_dashboard_queries_is_exported_by_a_service() {
    // Arrange: the AMQP-mode stack, so the queue metrics are registered too,
    // and one order and one login, so that every labelled family has a
    // series (prometheus-client leaves a family out until it has one).
    let Some(broker) = Broker::require("every_metric_the_dashboard_queries_is_exported") else {
        return;
    };
    let app = spawn_app_with_broker(&broker).await;
    let r = app
        .post_order(&serde_json::json!({"item": "dashboard"}))
        .await;
    assert_eq!(r.status(), 201);
    let _ = app.login("alice", "alice-secret").await;
    let mut exported = BTreeSet::new();
    let mut documented_as_exported = BTreeMap::new();
    for service in SERVICES {
        let page = app.scrape(service).await;
        exported.extend(page.series_names());
        documented_as_exported.insert(service, page.metric_names());
    }
    app.stop().await;
    broker.cleanup().await;

    // Act
    let dashboard = dashboard();
    let exprs = expressions(&dashboard);

    // Assert
    assert!(exprs.len() >= 12, "{exprs:?}");
    let mut queried = BTreeSet::new();
    let mut unknown = Vec::new();
    for (panel, expr) in &exprs {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "{panel}: no metric in {expr}");
        for name in names {
            let external = EXTERNAL.contains(&name.as_str());
            assert!(
                !(external && exported.contains(&name)),
                "{name} is both external and exported"
            );
            if !external && !exported.contains(&name) {
                unknown.push(format!("{panel}: {name}"));
            }
            queried.insert(name);
        }
    }
    assert!(
        unknown.is_empty(),
        "the dashboard queries metrics no service exports: {unknown:#?}\nexported: {exported:#?}"
    );
    for name in EXTERNAL {
        assert!(queried.contains(*name), "{name} is allowed but unused");
    }
    // What the issue asks the one screen to show.
    for needed in [
        "http_server_requests_total",
        "http_server_request_duration_seconds_bucket",
        "http_client_retries_total",
        "notification_queue_depth",
        "process_resident_memory_bytes",
        "container_memory_working_set_bytes",
        "auth_hash_inflight",
        "db_inflight_requests",
        "db_shed_requests_total",
        "chaos_injected_failures_total",
        "kube_pod_container_status_restarts_total",
        "process_start_time_seconds",
    ] {
        assert!(queried.contains(needed), "no panel shows {needed}");
    }
    assert_eq!(
        readme_metrics(),
        documented_as_exported,
        "README.md's metrics table (left) against what each service exports (right)"
    );
}

#[test]
fn the_dashboard_fits_one_screen_and_uses_the_provisioned_data_source() {
    let dashboard = dashboard();
    let datasources = yaml("observability/grafana/provisioning/datasources/datasources.yaml");
    let prometheus_uid = datasources[0]["datasources"]
        .as_vec()
        .into_iter()
        .flatten()
        .find(|d| d["type"].as_str() == Some("prometheus"))
        .and_then(|d| d["uid"].as_str())
        .expect("a provisioned Prometheus data source with a uid")
        .to_owned();

    assert_eq!(dashboard["uid"], "cloudmart");
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut bottom = 0;
    for panel in panels {
        let title = panel["title"].as_str().expect("every panel has a title");
        assert!(
            panel["description"].as_str().is_some_and(|d| !d.is_empty()),
            "{title} has no description"
        );
        let grid = &panel["gridPos"];
        let (x, y, w, h) = (
            grid["x"].as_u64().unwrap(),
            grid["y"].as_u64().unwrap(),
            grid["w"].as_u64().unwrap(),
            grid["h"].as_u64().unwrap(),
        );
        assert!(x + w <= 24, "{title} is wider than the screen");
        bottom = bottom.max(y + h);
        assert_eq!(
            panel["datasource"]["uid"],
            prometheus_uid.as_str(),
            "{title}"
        );
        for target in panel["targets"].as_array().expect("targets") {
            assert_eq!(
                target["datasource"]["uid"],
                prometheus_uid.as_str(),
                "{title}"
            );
        }
        assert!(
            panel["fieldConfig"]["defaults"]["unit"].is_string(),
            "{title} has no unit"
        );
    }
    // About 30 grid rows fit a 1080p screen under Grafana's header.
    assert!(bottom <= 26, "the dashboard is {bottom} rows tall");
    assert!(
        panels
            .iter()
            .any(|p| p["title"] == "Retries per second, by downstream"),
        "docs/instructor/README.md names this panel"
    );
    let vars = dashboard["templating"]["list"]
        .as_array()
        .expect("variables");
    assert!(
        vars.iter().any(|v| v["name"] == "service"),
        "a $service variable"
    );
    assert!(
        read(DASHBOARD) == read("k8s/observability/config/cloudmart.json"),
        "the k8s copy is stale: cp {DASHBOARD} k8s/observability/config/cloudmart.json"
    );
}

#[test]
fn grafana_is_provisioned_with_the_dashboard_in_compose_and_kubernetes() {
    let provider = &yaml("observability/grafana/provisioning/dashboards/dashboards.yaml")[0];
    let path = provider["providers"][0]["options"]["path"]
        .as_str()
        .expect("a file provider path")
        .to_owned();
    let home = format!("{path}/cloudmart.json");

    // compose: the directories are mounted where the provider looks.
    let compose = &yaml("docker-compose.yml")[0];
    let grafana = &compose["services"]["grafana"];
    let volumes: Vec<&str> = grafana["volumes"]
        .as_vec()
        .expect("grafana volumes")
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    for mount in [
        format!("./observability/grafana/dashboards:{path}:ro"),
        "./observability/grafana/provisioning/dashboards:/etc/grafana/provisioning/dashboards:ro"
            .to_owned(),
        "./observability/grafana/provisioning/datasources:/etc/grafana/provisioning/datasources:ro"
            .to_owned(),
    ] {
        assert!(
            volumes.contains(&mount.as_str()),
            "compose grafana lacks {mount}"
        );
    }
    assert_eq!(
        grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"].as_str(),
        Some(home.as_str())
    );
    assert!(repo_file(DASHBOARD).is_file());

    // Kubernetes: the generated ConfigMap holds the copy, mounted at the path.
    let kustomization = &yaml("k8s/observability/kustomization.yaml")[0];
    let generated: BTreeMap<String, Vec<String>> = kustomization["configMapGenerator"]
        .as_vec()
        .expect("a configMapGenerator")
        .iter()
        .map(|g| {
            let files = g["files"].as_vec().into_iter().flatten();
            let files = files.filter_map(Yaml::as_str).map(str::to_owned).collect();
            (g["name"].as_str().unwrap_or_default().to_owned(), files)
        })
        .collect();
    assert_eq!(
        generated["grafana-dashboards"],
        ["cloudmart.json=config/cloudmart.json"]
    );
    assert_eq!(
        generated["prometheus-config"],
        ["prometheus.yml=config/prometheus.yml"]
    );
    let deployment = yaml("k8s/observability/04-grafana.yaml")
        .into_iter()
        .find(|d| d["kind"].as_str() == Some("Deployment"))
        .expect("the grafana Deployment");
    let spec = &deployment["spec"]["template"]["spec"];
    let volume = spec["volumes"]
        .as_vec()
        .into_iter()
        .flatten()
        .find(|v| v["configMap"]["name"].as_str() == Some("grafana-dashboards"))
        .and_then(|v| v["name"].as_str())
        .expect("a volume from the grafana-dashboards ConfigMap");
    let container = &spec["containers"][0];
    let mounted = container["volumeMounts"]
        .as_vec()
        .into_iter()
        .flatten()
        .any(|m| m["name"].as_str() == Some(volume) && m["mountPath"].as_str() == Some(&path));
    assert!(mounted, "grafana-dashboards is not mounted at {path}");
    let env_home = container["env"]
        .as_vec()
        .into_iter()
        .flatten()
        .find(|e| e["name"].as_str() == Some("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"))
        .and_then(|e| e["value"].as_str());
    assert_eq!(env_home, Some(home.as_str()));
}

/// The targets of `job` in a Prometheus configuration.
fn job<'a>(config: &'a Yaml, name: &str) -> &'a Yaml {
    config["scrape_configs"]
        .as_vec()
        .expect("scrape_configs")
        .iter()
        .find(|j| j["job_name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no job {name}"))
}

#[test]
fn compose_prometheus_scrapes_every_service_on_its_port() {
    let config = &yaml("observability/prometheus.yml")[0];
    let compose = &yaml("docker-compose.yml")[0];

    let cloudmart = job(config, "cloudmart");
    let mut scraped = BTreeMap::new();
    for group in cloudmart["static_configs"]
        .as_vec()
        .expect("static_configs")
    {
        let service = group["labels"]["service"]
            .as_str()
            .expect("a service label");
        for target in group["targets"].as_vec().expect("targets") {
            scraped.insert(service.to_owned(), target.as_str().unwrap().to_owned());
        }
    }

    let metrics_path = cloudmart["metrics_path"].as_str().unwrap_or("/metrics");
    assert_eq!(metrics_path, "/metrics");
    for (service, port) in ports() {
        assert_eq!(
            scraped.get(service).map(String::as_str),
            Some(format!("{service}:{port}").as_str()),
            "observability/prometheus.yml scrapes {service}"
        );
        assert!(
            !compose["services"][service].is_badvalue(),
            "docker-compose.yml runs {service}"
        );
        assert!(
            compose["services"][service]["environment"]["PORT"].is_badvalue(),
            "{service} keeps its default port in compose"
        );
    }
    assert_eq!(scraped.len(), 6, "{scraped:?}");
    let volumes = compose["services"]["prometheus"]["volumes"]
        .as_vec()
        .unwrap();
    assert!(
        volumes.iter().any(|v| v.as_str()
            == Some("./observability/prometheus.yml:/etc/prometheus/prometheus.yml:ro")),
        "compose mounts observability/prometheus.yml"
    );
}

#[test]
fn kubernetes_prometheus_finds_every_service_pod_by_its_annotations() {
    let config = &yaml("k8s/observability/config/prometheus.yml")[0];
    let cloudmart = job(config, "cloudmart");
    let sd = &cloudmart["kubernetes_sd_configs"][0];
    assert_eq!(sd["role"].as_str(), Some("pod"));
    assert_eq!(sd["namespaces"]["names"][0].as_str(), Some("production"));
    let relabel = cloudmart["relabel_configs"]
        .as_vec()
        .expect("relabel_configs");
    let rule = |source: &str| {
        relabel
            .iter()
            .find(|r| {
                r["source_labels"]
                    .as_vec()
                    .is_some_and(|s| s.iter().any(|l| l.as_str() == Some(source)))
            })
            .unwrap_or_else(|| panic!("no relabel rule reads {source}"))
    };
    let keep = rule("__meta_kubernetes_pod_annotation_prometheus_io_scrape");
    assert_eq!(
        (keep["action"].as_str(), keep["regex"].as_str()),
        (Some("keep"), Some("true"))
    );
    assert_eq!(
        rule("__meta_kubernetes_pod_annotation_prometheus_io_path")["target_label"].as_str(),
        Some("__metrics_path__")
    );
    assert_eq!(
        rule("__meta_kubernetes_pod_annotation_prometheus_io_port")["target_label"].as_str(),
        Some("__address__")
    );
    assert_eq!(
        rule("__meta_kubernetes_pod_label_app")["target_label"].as_str(),
        Some("service")
    );

    // What the rules rely on, in both trees: k8s-broken/ must differ from
    // k8s/ only by its faults, none of which is about scraping.
    for tree in ["k8s", "k8s-broken"] {
        let mut seen = BTreeSet::new();
        for entry in std::fs::read_dir(repo_file(tree)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
                continue;
            }
            let file = format!("{tree}/{}", path.file_name().unwrap().to_str().unwrap());
            for doc in yaml(&file) {
                if doc["kind"].as_str() != Some("Deployment") {
                    continue;
                }
                let name = doc["metadata"]["name"].as_str().unwrap_or_default();
                let Some(port) = ports().get(name).copied() else {
                    continue;
                };
                let template = &doc["spec"]["template"];
                let annotations = &template["metadata"]["annotations"];
                let annotation = |key: &str| annotations[key].as_str().map(str::to_owned);
                assert_eq!(
                    annotation("prometheus.io/scrape").as_deref(),
                    Some("true"),
                    "{file}"
                );
                assert_eq!(
                    annotation("prometheus.io/path").as_deref(),
                    Some("/metrics"),
                    "{file}"
                );
                assert_eq!(
                    annotation("prometheus.io/port"),
                    Some(port.to_string()),
                    "{file}"
                );
                assert_eq!(
                    template["metadata"]["labels"]["app"].as_str(),
                    Some(name),
                    "{file}: the `service` label comes from the pod's app label"
                );
                let listens = template["spec"]["containers"]
                    .as_vec()
                    .into_iter()
                    .flatten()
                    .flat_map(|c| c["ports"].as_vec().into_iter().flatten())
                    .any(|p| p["containerPort"].as_i64() == Some(i64::from(port)));
                assert!(listens, "{file}: no containerPort {port}");
                seen.insert(name.to_owned());
            }
        }
        assert_eq!(seen.len(), 6, "{tree}: {seen:?}");

        // The default-deny policy lets Prometheus in on those ports.
        let policies = yaml(&format!("{tree}/15-networkpolicies.yaml"));
        let scrape = policies
            .iter()
            .find(|p| p["metadata"]["name"].as_str() == Some("prometheus-scrape"))
            .expect("a prometheus-scrape NetworkPolicy");
        let selected: BTreeSet<&str> =
            scrape["spec"]["podSelector"]["matchExpressions"][0]["values"]
                .as_vec()
                .into_iter()
                .flatten()
                .filter_map(Yaml::as_str)
                .collect();
        let allowed: BTreeSet<i64> = scrape["spec"]["ingress"][0]["ports"]
            .as_vec()
            .into_iter()
            .flatten()
            .filter_map(|p| p["port"].as_i64())
            .collect();
        for (service, port) in ports() {
            assert!(selected.contains(service), "{tree}: {service} not selected");
            assert!(
                allowed.contains(&i64::from(port)),
                "{tree}: port {port} closed"
            );
        }
        let from = &scrape["spec"]["ingress"][0]["from"][0];
        assert_eq!(
            from["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"].as_str(),
            Some("observability")
        );
        assert_eq!(
            from["podSelector"]["matchLabels"]["app"].as_str(),
            Some("prometheus")
        );
    }
}

#[test]
fn the_collector_takes_otlp_http_batches_and_exports_to_jaeger_in_both_setups() {
    let config = &yaml("observability/otel-collector.yaml")[0];
    assert!(
        read("observability/otel-collector.yaml")
            == read("k8s/observability/config/otel-collector.yaml"),
        "the k8s copy is stale: cp observability/otel-collector.yaml k8s/observability/config/"
    );
    let http = config["receivers"]["otlp"]["protocols"]["http"]["endpoint"]
        .as_str()
        .expect("an OTLP/HTTP receiver");
    assert!(http.ends_with(":4318"), "{http}");
    let traces = &config["service"]["pipelines"]["traces"];
    let list = |key: &str| -> Vec<String> {
        traces[key]
            .as_vec()
            .into_iter()
            .flatten()
            .filter_map(Yaml::as_str)
            .map(str::to_owned)
            .collect()
    };
    assert!(list("receivers").contains(&"otlp".to_owned()));
    let processors = list("processors");
    assert!(processors.contains(&"batch".to_owned()), "{processors:?}");
    assert!(!config["processors"]["batch"].is_badvalue());
    let exporters = list("exporters");
    let jaeger = exporters
        .iter()
        .find(|e| e.starts_with("otlp"))
        .expect("an OTLP exporter in the traces pipeline");
    let exporter = &config["exporters"][jaeger.as_str()];
    assert_eq!(exporter["endpoint"].as_str(), Some("jaeger:4317"));
    assert_eq!(exporter["tls"]["insecure"].as_bool(), Some(true));

    // compose: every service sends to the collector, Jaeger takes OTLP.
    let compose = &yaml("docker-compose.yml")[0];
    for service in SERVICES {
        assert_eq!(
            compose["services"][service]["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"].as_str(),
            Some("http://otel-collector:4318"),
            "{service}"
        );
    }
    let jaeger_env = &compose["services"]["jaeger"]["environment"];
    assert_eq!(jaeger_env["COLLECTOR_OTLP_ENABLED"].as_str(), Some("true"));
    assert!(
        compose["services"]["otel-collector"]["volumes"]
            .as_vec()
            .into_iter()
            .flatten()
            .any(|v| v.as_str()
                == Some("./observability/otel-collector.yaml:/etc/otelcol-contrib/config.yaml:ro"))
    );

    // Kubernetes: Services of those names and ports beside the collector.
    let service_ports = |file: &str, name: &str| -> BTreeSet<i64> {
        yaml(file)
            .iter()
            .find(|d| {
                d["kind"].as_str() == Some("Service")
                    && d["metadata"]["name"].as_str() == Some(name)
            })
            .map(|d| {
                assert_eq!(d["metadata"]["namespace"].as_str(), Some("observability"));
                d["spec"]["ports"]
                    .as_vec()
                    .into_iter()
                    .flatten()
                    .filter_map(|p| p["port"].as_i64())
                    .collect()
            })
            .unwrap_or_else(|| panic!("{file}: no Service {name}"))
    };
    assert!(
        service_ports("k8s/observability/01-otel-collector.yaml", "otel-collector").contains(&4318)
    );
    assert!(service_ports("k8s/observability/02-jaeger.yaml", "jaeger").contains(&4317));
}
