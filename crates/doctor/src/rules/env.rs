//! Rules on a container's environment: URLs that name a Service, and what
//! the service itself would make of its configuration (refusal to start,
//! chaos switched on, retries without backoff).

use std::collections::{BTreeMap, HashMap};

use super::{Finding, finding};
use crate::contracts::{self, Contract};
use crate::model::{EnvSource, EnvVarAt, Manifests, Object, containers, image_name_tag};
use crate::yaml::Node;

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

pub(super) fn env_urls(m: &Manifests, out: &mut Vec<Finding>) {
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

/// The contract checks on each CloudMart container's environment: the
/// service's own config parsing, dangling references, chaos and retries.
pub(super) fn service_config(m: &Manifests, out: &mut Vec<Finding>) {
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
