//! The generic rules. None of them knows the workshop's faults: each checks
//! one kind of contract between objects (a selector and the pods it should
//! find, a probe and the port the app listens on, a URL and the Service it
//! names) or between a container and the service it runs.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::contracts::{self, Contract};
use crate::model::{
    EnvSource, EnvVarAt, Manifests, Object, containers, image_name_tag, labels, memory_bytes,
};
use crate::yaml::Node;

/// One problem found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The rule that found it, e.g. `service-selector`.
    pub rule: &'static str,
    /// File of the line to fix.
    pub file: String,
    /// Line to fix.
    pub line: usize,
    /// `Kind/name` of the object at fault.
    pub object: String,
    /// What is wrong, in one sentence.
    pub message: String,
    /// The catalogued fault this is, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fault: Option<String>,
}

/// What the rules need besides the manifests.
#[derive(Debug, Clone)]
pub struct Context {
    /// `(name, tag)` of every image the build script produces.
    pub built_images: Vec<(String, String)>,
    /// Storage classes the target cluster has (k3d ships `local-path`).
    pub storage_classes: Vec<String>,
}

impl Default for Context {
    fn default() -> Self {
        Self {
            built_images: contracts::all()
                .iter()
                .map(|c| (c.service.to_owned(), "latest".to_owned()))
                .chain(std::iter::once((
                    "cloudmart".to_owned(),
                    "latest".to_owned(),
                )))
                .collect(),
            storage_classes: vec!["local-path".to_owned()],
        }
    }
}

impl Context {
    /// Reads the images a build script produces from its `images=(...)`
    /// line and the tag it passes to `docker build -t`.
    pub fn from_build_script(text: &str) -> Self {
        let names: Vec<String> = text
            .lines()
            .find_map(|l| {
                l.trim()
                    .strip_prefix("images=(")?
                    .strip_suffix(')')
                    .map(str::to_owned)
            })
            .map(|list| list.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default();
        let tag = text
            .split("-t ")
            .skip(1)
            .find_map(|rest| {
                let word = rest.split_whitespace().next()?.trim_matches('"');
                word.rsplit_once(':').map(|(_, t)| t.to_owned())
            })
            .unwrap_or_else(|| "latest".to_owned());
        Self {
            built_images: names.into_iter().map(|n| (n, tag.clone())).collect(),
            ..Self::default()
        }
    }
}

/// Every rule, by the name its findings carry.
pub const RULES: &[&str] = &[
    "service-selector",
    "service-target-port",
    "probe-port",
    "probe-missing",
    "env-url",
    "image-not-built",
    "config-reference",
    "service-config",
    "chaos-enabled",
    "retry-without-backoff",
    "memory-below-peak",
    "memory-limit",
    "storage-class",
];

/// Rules that check the same contract in different ways. Making one of
/// them quiet by tripping another (removing the probe whose port was wrong,
/// lifting the memory limit that was too low) is not a fix; the live
/// scoreboard says "NOT ACCEPTED" for it.
pub const RELATED: &[&[&str]] = &[
    &["probe-port", "probe-missing"],
    &["memory-below-peak", "memory-limit"],
    &["service-config", "config-reference"],
    &["service-selector", "service-target-port"],
];

/// The rules related to `rule` (itself included).
pub fn related(rule: &str) -> &'static [&'static str] {
    RELATED
        .iter()
        .find(|family| family.contains(&rule))
        .copied()
        .unwrap_or(&[])
}

/// The largest memory limit one container may have. Above it a limit no
/// longer bounds anything on a workshop laptop (the whole healthy system
/// allows 1.8 GiB), so raising a limit past it hides a peak instead of
/// sizing for it.
pub const MEMORY_LIMIT_CEILING: &str = "1Gi";

/// Runs every rule; findings sorted by file and line.
pub fn check(m: &Manifests, ctx: &Context) -> Vec<Finding> {
    let mut out = Vec::new();
    service_selector(m, &mut out);
    service_target_port(m, &mut out);
    probe_ports(m, &mut out);
    env_urls(m, &mut out);
    images(m, ctx, &mut out);
    service_config(m, &mut out);
    memory(m, &mut out);
    memory_limit(m, &mut out);
    probes_present(m, &mut out);
    storage_classes(m, ctx, &mut out);
    out.sort_by(|a, b| (&a.file, a.line, a.rule).cmp(&(&b.file, b.line, b.rule)));
    out.dedup();
    out
}

fn finding(
    rule: &'static str,
    obj: &Object<'_>,
    file: &str,
    line: usize,
    message: String,
) -> Finding {
    Finding {
        rule,
        file: file.to_owned(),
        line,
        object: obj.id(),
        message,
        fault: None,
    }
}

/// Pod templates in `namespace` whose labels include every selector pair.
fn selected<'a>(
    m: &'a Manifests,
    namespace: &str,
    selector: &BTreeMap<&str, &str>,
) -> Vec<(Object<'a>, &'a Node)> {
    m.workloads()
        .into_iter()
        .filter(|(o, t)| {
            let l = labels(t);
            o.namespace == namespace
                && !selector.is_empty()
                && selector.iter().all(|(k, v)| l.get(k) == Some(v))
        })
        .collect()
}

fn selector_of(node: &Node) -> BTreeMap<&str, &str> {
    node.path(&["spec", "selector"])
        .map(Node::entries)
        .unwrap_or_default()
        .iter()
        .filter_map(|(k, v)| Some((k.as_str(), v.str()?)))
        .collect()
}

fn show(pairs: &BTreeMap<&str, &str>) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn service_selector(m: &Manifests, out: &mut Vec<Finding>) {
    for svc in m.of_kind("Service") {
        let selector = selector_of(&svc.doc.root);
        if selector.is_empty() || !selected(m, svc.namespace, &selector).is_empty() {
            continue;
        }
        let line = svc
            .doc
            .root
            .path(&["spec", "selector"])
            .map_or(svc.doc.root.line, |n| n.line);
        let similar: Vec<String> = m
            .workloads()
            .iter()
            .filter(|(o, _)| o.namespace == svc.namespace)
            .filter_map(|(_, t)| labels(t).get("app").map(|a| format!("app={a}")))
            .collect();
        out.push(finding(
            "service-selector",
            &svc,
            svc.file(),
            line,
            format!(
                "Service {} selects {} but no pod template in {} has those labels (pods have {}); it will have no endpoints",
                svc.name,
                show(&selector),
                svc.namespace,
                if similar.is_empty() { "none".to_owned() } else { similar.join(", ") }
            ),
        ));
    }
}

/// Container ports as `(name, number)`.
fn container_ports(container: &Node) -> Vec<(Option<&str>, u16)> {
    container
        .get("ports")
        .map(Node::items)
        .unwrap_or_default()
        .iter()
        .filter_map(|p| {
            Some((
                p.str_at(&["name"]),
                p.str_at(&["containerPort"])?.parse().ok()?,
            ))
        })
        .collect()
}

/// The port the container's process listens on: `PORT` from its
/// environment, else the service's default.
fn listening_port(m: &Manifests, obj: &Object<'_>, c: &crate::model::Container<'_>) -> Option<u16> {
    let env = m.environment(obj, c);
    if let Some(port) = env
        .get("PORT")
        .and_then(EnvVarAt::value)
        .and_then(|p| p.parse().ok())
    {
        return Some(port);
    }
    contracts::for_image(image_name_tag(c.image).0).map(|k| k.default_port)
}

fn service_target_port(m: &Manifests, out: &mut Vec<Finding>) {
    for svc in m.of_kind("Service") {
        let selector = selector_of(&svc.doc.root);
        let pods = selected(m, svc.namespace, &selector);
        if pods.is_empty() {
            continue;
        }
        for port in svc
            .doc
            .root
            .path(&["spec", "ports"])
            .map(Node::items)
            .unwrap_or_default()
        {
            let target = port.get("targetPort").or_else(|| port.get("port"));
            let Some(target_node) = target else { continue };
            let Some(target) = target_node.str() else {
                continue;
            };
            let matches = pods.iter().any(|(o, t)| {
                containers(t).iter().any(|c| {
                    let declared = container_ports(c.node);
                    match target.parse::<u16>() {
                        Ok(n) => {
                            declared.iter().any(|(_, p)| *p == n)
                                || listening_port(m, o, c) == Some(n)
                        }
                        Err(_) => declared.iter().any(|(name, _)| *name == Some(target)),
                    }
                })
            });
            if !matches {
                out.push(finding(
                    "service-target-port",
                    &svc,
                    svc.file(),
                    target_node.line,
                    format!(
                        "Service {} sends traffic to port {target}, which no container of its pods declares or listens on",
                        svc.name
                    ),
                ));
            }
        }
    }
}

fn probe_ports(m: &Manifests, out: &mut Vec<Finding>) {
    for (obj, template) in m.workloads() {
        for c in containers(template) {
            let declared = container_ports(c.node);
            let listening = listening_port(m, &obj, &c);
            for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
                let Some(p) = c.node.get(probe) else { continue };
                let port_node = ["httpGet", "tcpSocket", "grpc"]
                    .iter()
                    .find_map(|k| p.path(&[k, "port"]));
                let Some(port_node) = port_node else { continue };
                let Some(port) = port_node.str() else {
                    continue;
                };
                let ok = match port.parse::<u16>() {
                    Ok(n) => {
                        listening == Some(n)
                            || (listening.is_none() && declared.iter().any(|(_, d)| *d == n))
                    }
                    Err(_) => declared
                        .iter()
                        .any(|(name, d)| *name == Some(port) && listening.is_none_or(|l| l == *d)),
                };
                if !ok {
                    let expected = listening.map_or_else(
                        || {
                            declared
                                .iter()
                                .map(|(_, d)| d.to_string())
                                .collect::<Vec<_>>()
                                .join(", ")
                        },
                        |l| l.to_string(),
                    );
                    out.push(finding(
                        "probe-port",
                        &obj,
                        obj.file(),
                        port_node.line,
                        format!(
                            "{probe} of container {} checks port {port}, but the app listens on {expected}; the probe will fail",
                            c.name
                        ),
                    ));
                }
            }
        }
    }
}

/// `(scheme, host, port)` of a URL-looking value.
fn parse_url(value: &str) -> Option<(&str, &str, Option<u16>)> {
    let (scheme, rest) = value.split_once("://")?;
    let authority = rest.split(['/', '?']).next()?;
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    let host_port = host_port.split(',').next()?;
    let (host, port) = match host_port.rsplit_once(':') {
        Some((h, p)) => (h, Some(p.parse().ok()?)),
        None => (host_port, None),
    };
    Some((scheme, host, port))
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        "amqp" => Some(5672),
        "amqps" => Some(5671),
        "mongodb" => Some(27017),
        "redis" => Some(6379),
        _ => None,
    }
}

/// The Service a host names from `namespace`, if it is cluster-local.
fn service_name<'a>(host: &'a str, namespace: &str) -> Option<(&'a str, String)> {
    let parts: Vec<&str> = host.split('.').collect();
    match parts.as_slice() {
        [name] => Some((name, namespace.to_owned())),
        [name, ns] | [name, ns, "svc"] | [name, ns, "svc", "cluster", "local"] => {
            Some((name, (*ns).to_owned()))
        }
        _ => None,
    }
}

fn env_urls(m: &Manifests, out: &mut Vec<Finding>) {
    for (obj, template) in m.workloads() {
        for c in containers(template) {
            for var in m.environment(&obj, &c).values() {
                let Some(value) = var.value() else { continue };
                let Some((scheme, host, port)) = parse_url(value) else {
                    continue;
                };
                if matches!(host, "localhost" | "127.0.0.1" | "0.0.0.0") {
                    continue;
                }
                let Some((name, ns)) = service_name(host, obj.namespace) else {
                    continue;
                };
                let port = port.or_else(|| default_port(scheme));
                let message = match m.find("Service", name, &ns) {
                    None => Some(format!(
                        "{} of container {} points at {host}, but there is no Service {name} in namespace {ns}; the name will not resolve",
                        var.name, c.name
                    )),
                    Some(svc) => {
                        let ports: Vec<u16> = svc
                            .doc
                            .root
                            .path(&["spec", "ports"])
                            .map(Node::items)
                            .unwrap_or_default()
                            .iter()
                            .filter_map(|p| p.str_at(&["port"])?.parse().ok())
                            .collect();
                        match port {
                            Some(p) if !ports.contains(&p) => Some(format!(
                                "{} of container {} uses port {p} of Service {name}, which only serves {}",
                                var.name,
                                c.name,
                                ports
                                    .iter()
                                    .map(u16::to_string)
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            )),
                            _ => None,
                        }
                    }
                };
                if let Some(message) = message {
                    out.push(finding("env-url", &obj, &var.file, var.line, message));
                }
            }
        }
    }
}

fn images(m: &Manifests, ctx: &Context, out: &mut Vec<Finding>) {
    let ours: Vec<&str> = ctx.built_images.iter().map(|(n, _)| n.as_str()).collect();
    for (obj, template) in m.workloads() {
        for c in containers(template) {
            let (name, tag) = image_name_tag(c.image);
            let is_ours = ours.contains(&name) && !c.image.contains('/');
            if !is_ours {
                continue;
            }
            if !ctx.built_images.iter().any(|(n, t)| n == name && t == tag) {
                let built: Vec<String> = ctx
                    .built_images
                    .iter()
                    .filter(|(n, _)| n == name)
                    .map(|(n, t)| format!("{n}:{t}"))
                    .collect();
                let line = c.node.get("image").map_or(c.node.line, |n| n.line);
                out.push(finding(
                    "image-not-built",
                    &obj,
                    obj.file(),
                    line,
                    format!(
                        "image {} is not one the build script produces (it builds {}); the pull will fail",
                        c.image,
                        built.join(", ")
                    ),
                ));
            }
        }
    }
}

/// The contract checks on each CloudMart container's environment: the
/// service's own config parsing, dangling references, chaos and retries.
fn service_config(m: &Manifests, out: &mut Vec<Finding>) {
    for (obj, template) in m.workloads() {
        for c in containers(template) {
            let env = m.environment(&obj, &c);
            let env_line = c
                .node
                .get("env")
                .or_else(|| c.node.get("envFrom"))
                .map_or(c.node.line, |n| n.line);
            for var in env.values() {
                if let EnvSource::Dangling(why) = &var.source {
                    out.push(finding(
                        "config-reference",
                        &obj,
                        &var.file,
                        var.line,
                        format!("{} of container {} refers to a missing value: {why}; the pod cannot start", var.name, c.name),
                    ));
                }
            }
            let Some(contract) = contracts::for_image(image_name_tag(c.image).0) else {
                continue;
            };
            contract_findings(&obj, &c, &contract, &env, env_line, out);
        }
    }
}

fn contract_findings(
    obj: &Object<'_>,
    c: &crate::model::Container<'_>,
    contract: &Contract,
    env: &BTreeMap<String, EnvVarAt>,
    env_line: usize,
    out: &mut Vec<Finding>,
) {
    let values: HashMap<String, String> = env
        .values()
        .filter_map(|v| Some((v.name.clone(), v.value()?.to_owned())))
        .collect();
    if let Err(e) = contract.check(&values) {
        for problem in e.problems() {
            let var = problem.split(['=', ' ']).next().unwrap_or_default();
            let (file, line) = env.get(var).map_or((obj.file().to_owned(), env_line), |v| {
                (v.file.clone(), v.line)
            });
            out.push(finding(
                "service-config",
                obj,
                &file,
                line,
                format!("{} would refuse to start: {problem}", contract.service),
            ));
        }
    }
    let number = |name: &str| values.get(name).and_then(|v| v.parse::<f64>().ok());
    for var in ["CHAOS_FAILURE_RATE", "CHAOS_LATENCY_MS"] {
        if number(var).is_some_and(|v| v > 0.0) {
            let at = &env[var];
            out.push(finding(
                "chaos-enabled",
                obj,
                &at.file,
                at.line,
                format!(
                    "{var}={} injects failures into {}; it must be 0 outside a fault-injection exercise",
                    values[var], c.name
                ),
            ));
        }
    }
    let attempts = number("RETRY_MAX_ATTEMPTS").unwrap_or(3.0);
    let base = number("RETRY_BASE_DELAY_MS").unwrap_or(100.0);
    let max = number("RETRY_MAX_DELAY_MS").unwrap_or(2000.0);
    if attempts > 1.0 && (base <= 0.0 || max <= 0.0) {
        let var = if env.contains_key("RETRY_BASE_DELAY_MS") {
            "RETRY_BASE_DELAY_MS"
        } else {
            "RETRY_MAX_DELAY_MS"
        };
        let (file, line) = env.get(var).map_or((obj.file().to_owned(), env_line), |v| {
            (v.file.clone(), v.line)
        });
        out.push(finding(
            "retry-without-backoff",
            obj,
            &file,
            line,
            format!(
                "{} retries up to {attempts} times with no delay (base {base} ms, max {max} ms): every failure becomes a burst of retries",
                c.name
            ),
        ));
    }
}

fn memory(m: &Manifests, out: &mut Vec<Finding>) {
    for (obj, template) in m.workloads() {
        for c in containers(template) {
            let service = image_name_tag(c.image).0;
            let Some(peak) = contracts::measured_peak_bytes(service) else {
                continue;
            };
            let Some(limit_node) = c.node.path(&["resources", "limits", "memory"]) else {
                continue;
            };
            let Some(limit) = limit_node.str().and_then(memory_bytes) else {
                continue;
            };
            if limit < peak {
                out.push(finding(
                    "memory-below-peak",
                    &obj,
                    obj.file(),
                    limit_node.line,
                    format!(
                        "memory limit {} of container {} is below the {} MiB measured at peak for {service}; it will be OOMKilled under load",
                        limit_node.str().unwrap_or_default(),
                        c.name,
                        peak / 1024 / 1024
                    ),
                ));
            }
        }
    }
}

/// Every container has a memory limit, and none above
/// [`MEMORY_LIMIT_CEILING`].
fn memory_limit(m: &Manifests, out: &mut Vec<Finding>) {
    let ceiling = memory_bytes(MEMORY_LIMIT_CEILING).unwrap_or(u64::MAX);
    for (obj, template) in m.workloads() {
        for c in containers(template) {
            match c.node.path(&["resources", "limits", "memory"]) {
                None => {
                    let line = c
                        .node
                        .get("resources")
                        .map_or_else(|| c.node.line_of("name"), |n| n.line);
                    out.push(finding(
                        "memory-limit",
                        &obj,
                        obj.file(),
                        line,
                        format!(
                            "container {} has no memory limit: a leak or a peak takes memory from every other pod on the node instead of restarting this one",
                            c.name
                        ),
                    ));
                }
                Some(node) => {
                    let Some(limit) = node.str().and_then(memory_bytes) else {
                        continue;
                    };
                    if limit > ceiling {
                        out.push(finding(
                            "memory-limit",
                            &obj,
                            obj.file(),
                            node.line,
                            format!(
                                "memory limit {} of container {} is above {MEMORY_LIMIT_CEILING}: a limit that large bounds nothing; size it from the measured peak",
                                node.str().unwrap_or_default(),
                                c.name
                            ),
                        ));
                    }
                }
            }
        }
    }
}

/// A container that serves a port has startup, readiness and liveness
/// probes: without them Kubernetes sends traffic to pods that are not ready
/// and never restarts one that hangs.
fn probes_present(m: &Manifests, out: &mut Vec<Finding>) {
    for (obj, template) in m.workloads() {
        for c in containers(template) {
            let ports = container_ports(c.node);
            if ports.is_empty() {
                continue;
            }
            let missing: Vec<String> = [
                (
                    "startupProbe",
                    "its liveness probe can kill it while it starts",
                ),
                ("readinessProbe", "traffic reaches it before it is ready"),
                ("livenessProbe", "a hung process is never restarted"),
            ]
            .into_iter()
            .filter(|(p, _)| c.node.get(p).is_none())
            .map(|(p, why)| format!("{p} ({why})"))
            .collect();
            if missing.is_empty() {
                continue;
            }
            let served: Vec<String> = ports.iter().map(|(_, p)| p.to_string()).collect();
            out.push(finding(
                "probe-missing",
                &obj,
                obj.file(),
                c.node.line_of("name"),
                format!(
                    "container {} serves port {} but has no {}",
                    c.name,
                    served.join(", "),
                    missing.join(", no ")
                ),
            ));
        }
    }
}

fn storage_classes(m: &Manifests, ctx: &Context, out: &mut Vec<Finding>) {
    let mut claims: Vec<(Object<'_>, &Node)> = m
        .of_kind("PersistentVolumeClaim")
        .into_iter()
        .map(|o| (o, &o.doc.root))
        .collect();
    for sts in m.of_kind("StatefulSet") {
        for t in sts
            .doc
            .root
            .path(&["spec", "volumeClaimTemplates"])
            .map(Node::items)
            .unwrap_or_default()
        {
            claims.push((sts, t));
        }
    }
    for (obj, claim) in claims {
        let Some(class) = claim.path(&["spec", "storageClassName"]) else {
            continue;
        };
        let Some(name) = class.str() else { continue };
        if !ctx.storage_classes.iter().any(|s| s == name) {
            out.push(finding(
                "storage-class",
                &obj,
                obj.file(),
                class.line,
                format!(
                    "storageClassName {name} does not exist in the cluster (it has {}); the claim stays Pending",
                    ctx.storage_classes.join(", ")
                ),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_service_names() {
        assert_eq!(
            parse_url("http://database:8080"),
            Some(("http", "database", Some(8080)))
        );
        assert_eq!(
            parse_url("amqp://guest:guest@rabbitmq:5672/%2f"),
            Some(("amqp", "rabbitmq", Some(5672)))
        );
        assert_eq!(
            parse_url("mongodb://mongodb:27017/?x=1"),
            Some(("mongodb", "mongodb", Some(27017)))
        );
        assert_eq!(parse_url("plain"), None);
        assert_eq!(
            service_name("gateway.production.svc.cluster.local", "x"),
            Some(("gateway", "production".to_owned()))
        );
        assert_eq!(
            service_name("api-service", "production"),
            Some(("api-service", "production".to_owned()))
        );
        assert_eq!(service_name("example.com.evil.org", "p"), None);
    }
}
