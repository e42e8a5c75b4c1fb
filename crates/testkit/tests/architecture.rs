//! The invariants `ARCHITECTURE.md` states, checked against the resolved
//! dependency graph that `cargo metadata` reports, so the map and the
//! workspace cannot drift apart.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;

const BASE: [&str; 4] = [
    "cloudmart-config",
    "cloudmart-model",
    "cloudmart-retry",
    "cloudmart-telemetry",
];
const RUNTIME: [&str; 4] = [
    "cloudmart-http",
    "cloudmart-run",
    "cloudmart-amqp",
    "cloudmart-redis",
];
const SERVICES: [&str; 6] = [
    "cloudmart-gateway",
    "cloudmart-api",
    "cloudmart-auth",
    "cloudmart-order",
    "cloudmart-database",
    "cloudmart-notification",
];

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("crates/testkit sits two levels below the root")
        .to_path_buf()
}

/// The workspace as `cargo metadata` resolves it: each workspace crate's
/// name, and for every package id its normal (non-dev) dependencies.
struct Graph {
    /// Package id → name, for every package in the build.
    names: BTreeMap<String, String>,
    /// Package id → ids of its normal and build dependencies.
    normal: BTreeMap<String, Vec<String>>,
    /// Workspace crate name → id.
    members: BTreeMap<String, String>,
    /// Workspace crate name → names of its dev-only CloudMart dependencies.
    dev_only: BTreeMap<String, BTreeSet<String>>,
}

impl Graph {
    /// The graph, read once for all the tests of this file.
    fn load() -> &'static Self {
        static GRAPH: OnceLock<Graph> = OnceLock::new();
        GRAPH.get_or_init(Self::read)
    }

    fn read() -> Self {
        let out = Command::new(env!("CARGO"))
            .args(["metadata", "--format-version", "1", "--locked"])
            .current_dir(workspace_root())
            .output()
            .expect("cargo metadata runs");
        assert!(
            out.status.success(),
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let meta: Value = serde_json::from_slice(&out.stdout).expect("cargo metadata is JSON");

        let names: BTreeMap<String, String> = meta["packages"]
            .as_array()
            .expect("packages")
            .iter()
            .map(|p| {
                (
                    id(&p["id"]),
                    p["name"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        let members: BTreeMap<String, String> = meta["workspace_members"]
            .as_array()
            .expect("workspace_members")
            .iter()
            .map(|m| (names[&id(m)].clone(), id(m)))
            .collect();

        let mut normal = BTreeMap::new();
        let mut dev_only: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for node in meta["resolve"]["nodes"].as_array().expect("resolve.nodes") {
            let from = id(&node["id"]);
            let mut deps = Vec::new();
            for dep in node["deps"].as_array().into_iter().flatten() {
                let kinds: Vec<&str> = dep["dep_kinds"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|k| k["kind"].as_str().unwrap_or("normal"))
                    .collect();
                let to = id(&dep["pkg"]);
                if kinds.iter().any(|k| *k != "dev") {
                    deps.push(to);
                } else if names[&to].starts_with("cloudmart-") {
                    dev_only
                        .entry(names[&from].clone())
                        .or_default()
                        .insert(names[&to].clone());
                }
            }
            normal.insert(from, deps);
        }
        Self {
            names,
            normal,
            members,
            dev_only,
        }
    }

    /// The names of the crates `krate` depends on directly (dev aside).
    fn direct(&self, krate: &str) -> BTreeSet<String> {
        self.normal[&self.members[krate]]
            .iter()
            .map(|d| self.names[d].clone())
            .collect()
    }

    /// The names of every crate compiled into `krate`'s library or binary.
    fn closure(&self, krate: &str) -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut todo = vec![self.members[krate].clone()];
        while let Some(next) = todo.pop() {
            for dep in &self.normal[&next] {
                if seen.insert(self.names[dep].clone()) {
                    todo.push(dep.clone());
                }
            }
        }
        seen
    }

    /// The CloudMart crates among `krate`'s direct dependencies.
    fn cloudmart_deps(&self, krate: &str) -> BTreeSet<String> {
        self.direct(krate)
            .into_iter()
            .filter(|d| d.starts_with("cloudmart-"))
            .collect()
    }
}

fn id(v: &Value) -> String {
    v.as_str().expect("a package id").to_owned()
}

#[test]
fn the_base_and_the_load_generator_import_no_cloudmart_crate() {
    let g = Graph::load();
    for krate in ["cloudmart-config", "cloudmart-model", "cloudmart-load"] {
        assert_eq!(
            g.cloudmart_deps(krate),
            BTreeSet::new(),
            "{krate} must stand alone"
        );
    }
    let model: BTreeSet<String> = g.direct("cloudmart-model");
    assert!(
        model.iter().all(|d| d == "serde"),
        "cloudmart-model needs nothing but serde, got {model:?}"
    );
}

#[test]
fn shared_crates_import_no_service_tool_or_testkit() {
    let g = Graph::load();
    let upper: BTreeSet<&str> = SERVICES
        .iter()
        .copied()
        .chain([
            "cloudmart-cli",
            "cloudmart-doctor",
            "cloudmart-load",
            "cloudmart-testkit",
        ])
        .collect();
    for krate in BASE.iter().chain(&RUNTIME) {
        let closure = g.closure(krate);
        let bad: Vec<&&str> = upper.iter().filter(|u| closure.contains(**u)).collect();
        assert!(bad.is_empty(), "{krate} links {bad:?}");
    }
}

#[test]
fn no_service_imports_another_service_or_a_tool() {
    let g = Graph::load();
    for krate in SERVICES {
        let deps = g.cloudmart_deps(krate);
        let bad: Vec<&String> = deps
            .iter()
            .filter(|d| {
                SERVICES.contains(&d.as_str())
                    || ["cloudmart-cli", "cloudmart-doctor", "cloudmart-testkit"]
                        .contains(&d.as_str())
            })
            .collect();
        assert!(bad.is_empty(), "{krate} imports {bad:?}");
    }
}

#[test]
fn each_service_builds_only_the_clients_of_what_it_talks_to() {
    let g = Graph::load();
    // (crate, infrastructure clients it must not compile)
    let rules: [(&str, &[&str]); 6] = [
        ("cloudmart-gateway", &["lapin", "mongodb", "redis"]),
        ("cloudmart-api", &["lapin", "mongodb", "redis"]),
        ("cloudmart-auth", &["lapin", "mongodb"]),
        ("cloudmart-order", &["mongodb", "redis"]),
        ("cloudmart-database", &["lapin", "redis"]),
        ("cloudmart-notification", &["mongodb"]),
    ];
    for (krate, forbidden) in rules {
        let closure = g.closure(krate);
        let bad: Vec<&&str> = forbidden.iter().filter(|f| closure.contains(**f)).collect();
        assert!(bad.is_empty(), "{krate} compiles {bad:?}");
    }
    // And the graph is really read: the clients are there where they belong.
    for (krate, client) in [
        ("cloudmart-order", "lapin"),
        ("cloudmart-database", "mongodb"),
        ("cloudmart-auth", "redis"),
        ("cloudmart-notification", "lapin"),
    ] {
        assert!(
            g.closure(krate).contains(client),
            "{krate} compiles {client}"
        );
    }
}

#[test]
fn amqp_and_redis_have_only_their_two_users() {
    let g = Graph::load();
    for (shared, users) in [
        (
            "cloudmart-amqp",
            ["cloudmart-order", "cloudmart-notification"],
        ),
        (
            "cloudmart-redis",
            ["cloudmart-auth", "cloudmart-notification"],
        ),
    ] {
        let direct_users: BTreeSet<&str> = g
            .members
            .keys()
            .filter(|m| g.cloudmart_deps(m).contains(shared))
            .map(String::as_str)
            .collect();
        let expected: BTreeSet<&str> = users.into_iter().collect();
        assert_eq!(direct_users, expected, "who imports {shared}");
    }
}

#[test]
fn the_testkit_is_only_ever_a_dev_dependency() {
    let g = Graph::load();
    for krate in g.members.keys() {
        assert!(
            !g.cloudmart_deps(krate).contains("cloudmart-testkit"),
            "{krate} has cloudmart-testkit as a normal dependency"
        );
    }
    let users = g
        .dev_only
        .values()
        .filter(|d| d.contains("cloudmart-testkit"))
        .count();
    assert!(
        users >= 6,
        "the services' tests use the testkit ({users} crates do)"
    );
}

#[test]
fn architecture_md_names_every_crate_and_stays_short() {
    let g = Graph::load();
    let path = workspace_root().join("ARCHITECTURE.md");
    let text = std::fs::read_to_string(&path).expect("ARCHITECTURE.md exists");
    let lines = text.lines().count();
    assert!(lines < 150, "ARCHITECTURE.md has {lines} lines");
    let missing: Vec<&String> = g
        .members
        .keys()
        .filter(|m| !text.contains(&format!("`{m}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md does not name {missing:?}"
    );
}
