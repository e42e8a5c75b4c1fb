//! Mutation tests: start from the healthy `k8s/`, inject one fault the
//! catalogue does not list, and check the analyser reports it, at the right
//! file and line, with the right rule. This is what shows the rules are
//! generic checks rather than a lookup of the workshop's eight faults.

use cloudmart_doctor::model::Manifests;
use cloudmart_doctor::rules::{Finding, check};

use crate::{context, repo};

/// Applies `from -> to` once in `file` of a copy of k8s/ and runs the rules.
fn mutate(file: &str, from: &str, to: &str) -> (Vec<Finding>, usize) {
    mutate_all(file, &[(from, to)])
}

/// Applies each `from -> to` once, in order, in `file` of a copy of k8s/
/// and runs the rules; the line is that of the last `from`.
fn mutate_all(file: &str, changes: &[(&str, &str)]) -> (Vec<Finding>, usize) {
    let dir = repo().join("k8s");
    let mut docs = Vec::new();
    let mut line = 0;
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    for path in files {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let mut text = std::fs::read_to_string(&path).unwrap();
        if name == file {
            for (from, to) in changes {
                let at = text
                    .find(from)
                    .unwrap_or_else(|| panic!("{from:?} not in {file}"));
                line = text[..at].matches('\n').count() + 1;
                text = text.replacen(from, to, 1);
            }
        }
        docs.extend(Manifests::from_text(&name, &text).unwrap().docs);
    }
    (check(&Manifests { docs }, &context()), line)
}

fn assert_found(findings: &[Finding], rule: &str, file: &str, line: usize) {
    assert!(
        findings
            .iter()
            .any(|f| f.rule == rule && f.file == file && f.line == line),
        "expected [{rule}] at {file}:{line}, got {findings:#?}"
    );
}

#[test]
fn a_service_targeting_a_port_nobody_declares() {
    let (f, line) = mutate(
        "03-api-service.yaml",
        "      targetPort: http",
        "      targetPort: metrics",
    );
    assert_found(&f, "service-target-port", "03-api-service.yaml", line);
}

#[test]
fn a_readiness_probe_on_a_missing_named_port() {
    let (f, line) = mutate(
        "03-api-service.yaml",
        "              path: /ready\n              port: http",
        "              path: /ready\n              port: admin",
    );
    assert_found(&f, "probe-port", "03-api-service.yaml", line + 1);
}

#[test]
fn a_typo_in_a_service_name_inside_a_url() {
    let (f, line) = mutate(
        "03-api-service.yaml",
        "AUTH_SERVICE_URL: \"http://auth-service:3000\"",
        "AUTH_SERVICE_URL: \"http://auth-servce:3000\"",
    );
    assert_found(&f, "env-url", "03-api-service.yaml", line);
}

#[test]
fn a_url_with_the_wrong_port_of_an_existing_service() {
    let (f, line) = mutate(
        "03-api-service.yaml",
        "ORDER_SERVICE_URL: \"http://order-service:3000\"",
        "ORDER_SERVICE_URL: \"http://order-service:8080\"",
    );
    assert_found(&f, "env-url", "03-api-service.yaml", line);
}

#[test]
fn a_missing_secret_key() {
    let (f, line) = mutate(
        "04-auth-service.yaml",
        "                  key: JWT_SECRET",
        "                  key: JWT_KEY",
    );
    assert_found(&f, "config-reference", "04-auth-service.yaml", line);
}

#[test]
fn a_selector_that_matches_nothing() {
    let (f, _) = mutate(
        "03-api-service.yaml",
        "  selector:\n    app: api-service\n  ports:",
        "  selector:\n    app: api\n  ports:",
    );
    assert!(
        f.iter()
            .any(|f| f.rule == "service-selector" && f.object == "Service/api-service"),
        "{f:#?}"
    );
}

#[test]
fn an_image_tag_the_build_script_never_makes() {
    let (f, line) = mutate(
        "03-api-service.yaml",
        "image: api-service:latest",
        "image: api-service:1.4.2",
    );
    assert_found(&f, "image-not-built", "03-api-service.yaml", line);
}

#[test]
fn a_storage_class_k3d_does_not_have() {
    let (f, line) = mutate(
        "08-mongodb.yaml",
        "        accessModes:",
        "        storageClassName: gp3\n        accessModes:",
    );
    assert_found(&f, "storage-class", "08-mongodb.yaml", line);
}

#[test]
fn a_value_the_service_itself_rejects() {
    let (f, _) = mutate(
        "05-order-service.yaml",
        "RETRY_MAX_ATTEMPTS: \"3\"",
        "RETRY_MAX_ATTEMPTS: \"three\"",
    );
    assert!(
        f.iter()
            .any(|f| f.rule == "service-config" && f.message.contains("RETRY_MAX_ATTEMPTS")),
        "{f:#?}"
    );
}

#[test]
fn latency_injection_is_chaos_too() {
    let (f, _) = mutate(
        "06-database-service.yaml",
        "CHAOS_FAILURE_RATE\n              value: \"0\"",
        "CHAOS_LATENCY_MS\n              value: \"250\"",
    );
    assert!(
        f.iter()
            .any(|f| f.rule == "chaos-enabled" && f.message.contains("CHAOS_LATENCY_MS")),
        "{f:#?}"
    );
}

#[test]
fn a_memory_limit_under_the_measured_peak_of_another_service() {
    let (f, _) = mutate("03-api-service.yaml", "memory: 64Mi", "memory: 8Mi");
    assert!(
        f.iter()
            .any(|f| f.rule == "memory-below-peak" && f.object == "Deployment/api-service"),
        "{f:#?}"
    );
}

#[test]
fn a_removed_liveness_probe() {
    let (f, line) = mutate(
        "03-api-service.yaml",
        "          livenessProbe:\n            httpGet:\n              path: /health\n              port: 3000\n            periodSeconds: 10\n            timeoutSeconds: 2\n            failureThreshold: 3\n",
        "",
    );
    assert!(line > 0);
    let name_line = std::fs::read_to_string(repo().join("k8s/03-api-service.yaml"))
        .unwrap()
        .lines()
        .position(|l| l == "        - name: api-service")
        .unwrap()
        + 1;
    assert_found(&f, "probe-missing", "03-api-service.yaml", name_line);
    assert!(
        f.iter()
            .any(|f| f.rule == "probe-missing" && f.message.contains("no livenessProbe")),
        "{f:#?}"
    );
}

#[test]
fn a_memory_limit_above_the_ceiling() {
    let (f, line) = mutate("04-auth-service.yaml", "memory: 128Mi", "memory: 2Gi");
    assert_found(&f, "memory-limit", "04-auth-service.yaml", line);
}

#[test]
fn a_container_without_a_memory_limit() {
    let (f, _) = mutate(
        "02-gateway.yaml",
        "            limits:\n              memory: 64Mi\n",
        "            limits:\n",
    );
    assert!(
        f.iter().any(|f| f.rule == "memory-limit"
            && f.object == "Deployment/gateway"
            && f.message.contains("no memory limit")),
        "{f:#?}"
    );
}

#[test]
fn chaos_behind_a_variable_reference() {
    let (f, line) = mutate_all(
        "06-database-service.yaml",
        &[
            ("  MONGODB_URI:", "  DB_SHED_RATIO: \"0.5\"\n  MONGODB_URI:"),
            (
                "CHAOS_FAILURE_RATE\n              value: \"0\"",
                "CHAOS_FAILURE_RATE\n              value: \"$(DB_SHED_RATIO)\"",
            ),
        ],
    );
    assert_found(&f, "chaos-enabled", "06-database-service.yaml", line + 1);
    assert!(
        f.iter()
            .any(|f| f.message.contains("CHAOS_FAILURE_RATE=0.5")),
        "{f:#?}"
    );
}

#[test]
fn chaos_moved_into_a_configmap_the_container_reads_whole() {
    let (f, line) = mutate_all(
        "06-database-service.yaml",
        &[
            (
                "            - name: CHAOS_FAILURE_RATE\n              value: \"0\"\n",
                "",
            ),
            (
                "  MONGODB_URI:",
                "  CHAOS_FAILURE_RATE: \"0.5\"\n  MONGODB_URI:",
            ),
        ],
    );
    assert_found(&f, "chaos-enabled", "06-database-service.yaml", line);
}
