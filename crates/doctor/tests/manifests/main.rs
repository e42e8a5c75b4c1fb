//! The shipped manifests and compose file, checked against the services'
//! own contracts. There is no cluster or Docker engine here: these are the
//! static cross-checks, plus `doctor cluster` against recorded API objects
//! (`cluster`); each fault's runtime symptom is proven elsewhere by running
//! the real binaries.

mod cluster;
mod mutations;

use std::path::{Path, PathBuf};

use cloudmart_doctor::diff::diff;
use cloudmart_doctor::model::Manifests;
use cloudmart_doctor::rules::{Context, check};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn context() -> Context {
    let script =
        std::fs::read_to_string(repo().join("scripts/images.sh")).expect("the build script exists");
    Context::from_build_script(&script)
}

fn load(dir: &str) -> Manifests {
    Manifests::load(&repo().join(dir)).unwrap_or_else(|e| panic!("{dir}: {e}"))
}

#[test]
fn the_build_script_builds_every_service_image_at_latest() {
    let ctx = context();
    for name in [
        "gateway",
        "api-service",
        "auth-service",
        "order-service",
        "database-service",
        "notification-service",
        "cloudmart",
    ] {
        assert!(
            ctx.built_images
                .contains(&(name.to_owned(), "latest".to_owned())),
            "{name}: {:?}",
            ctx.built_images
        );
    }
    assert!(!ctx.built_images.iter().any(|(_, t)| t == "v2.0"));
}

/// Selectors match pods, probes and target ports match what the apps
/// listen on, every URL names a Service and one of its ports, every image
/// is built, every service's own config accepts its environment, every
/// ConfigMap/Secret reference resolves, limits cover measured peaks.
#[test]
fn the_healthy_manifests_have_no_findings() {
    let findings = check(&load("k8s"), &context());
    assert!(findings.is_empty(), "{findings:#?}");
}

#[test]
fn the_observability_manifests_have_no_findings() {
    let findings = check(&load("k8s/observability"), &context());
    assert!(findings.is_empty(), "{findings:#?}");
}

#[test]
fn the_incident_manifests_show_eight_findings_each_of_its_own_kind() {
    let findings = check(&load("k8s-broken"), &context());
    let mut rules: Vec<&str> = findings.iter().map(|f| f.rule).collect();
    rules.sort_unstable();
    assert_eq!(
        rules,
        [
            "chaos-enabled",
            "env-url",
            "image-not-built",
            "memory-below-peak",
            "probe-port",
            "retry-without-backoff",
            "service-config",
            "service-selector",
        ],
        "{findings:#?}"
    );
}

#[test]
fn the_incident_differs_from_the_healthy_system_in_exactly_the_fault_fields() {
    let changes = diff(&load("k8s"), &load("k8s-broken"));
    let got: Vec<cloudmart_doctor::catalogue::ChangeKey> = changes
        .into_iter()
        .map(|c| (c.file, c.object, c.path, c.left, c.right))
        .collect();
    let expected =
        cloudmart_doctor::catalogue::Catalogue::load(&repo().join("docs/instructor/faults.yaml"))
            .expect("the fault catalogue parses")
            .expected_changes();
    assert_eq!(got, expected);
}

#[test]
fn compose_gives_every_service_a_valid_environment_and_reachable_urls() {
    let file = repo().join("docker-compose.yml");
    let text = std::fs::read_to_string(&file).unwrap();
    let findings = cloudmart_doctor::compose::check("docker-compose.yml", &text).unwrap();
    assert!(findings.is_empty(), "{findings:#?}");
}

#[test]
fn compose_checks_can_fail() {
    let text = "services:\n  database-service:\n    build: {target: database-service}\n    environment:\n      MONGODB_URI: mongodb://mongo:27018\n";
    let findings = cloudmart_doctor::compose::check("x.yml", text).unwrap();
    let rules: Vec<&str> = findings.iter().map(|f| f.rule).collect();
    assert!(rules.contains(&"service-config"), "{findings:#?}");
    assert!(rules.contains(&"env-url"), "{findings:#?}");
}
