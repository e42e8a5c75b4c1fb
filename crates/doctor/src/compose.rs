//! The same contract checks for `docker-compose.yml`: every CloudMart
//! service gets an environment its own config accepts, and every URL in it
//! names a compose service and a port that service listens on.

use std::collections::HashMap;

use crate::contracts;
use crate::rules::Finding;
use crate::yaml::{Node, Value, parse};

/// Ports the third-party images listen on.
const KNOWN_PORTS: &[(&str, &[u16])] = &[
    ("mongo", &[27017]),
    ("rabbitmq", &[5672, 15672]),
    ("redis", &[6379]),
    ("opentelemetry-collector", &[4317, 4318]),
    ("jaeger", &[4317, 4318, 16686]),
    ("prometheus", &[9090]),
    ("grafana", &[3000]),
];

fn environment(service: &Node) -> Vec<(String, String, usize)> {
    let Some(env) = service.get("environment") else {
        return Vec::new();
    };
    match &env.value {
        Value::Map(entries) => entries
            .iter()
            .map(|(k, v)| (k.clone(), v.str().unwrap_or_default().to_owned(), v.line))
            .collect(),
        Value::Seq(items) => items
            .iter()
            .filter_map(|i| {
                let (k, v) = i.str()?.split_once('=')?;
                Some((k.to_owned(), v.to_owned(), i.line))
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// The CloudMart service a compose service runs (its build target or image).
fn service_of(node: &Node) -> Option<String> {
    let target = node.str_at(&["build", "target"]).map(str::to_owned);
    let image = node
        .str_at(&["image"])
        .map(|i| crate::model::image_name_tag(i).0.to_owned());
    target
        .or(image)
        .filter(|s| contracts::for_image(s).is_some())
}

/// Checks a compose file's text.
pub fn check(file: &str, text: &str) -> Result<Vec<Finding>, String> {
    let docs = parse(file, text)?;
    let root = docs
        .first()
        .map(|d| d.root.clone())
        .ok_or_else(|| format!("{file}: empty"))?;
    let services = root.get("services").map(Node::entries).unwrap_or_default();
    let mut listens: HashMap<&str, Vec<u16>> = HashMap::new();
    for (name, svc) in services {
        let mut ports = Vec::new();
        if let Some(s) = service_of(svc).and_then(|s| contracts::for_image(&s)) {
            let port = environment(svc)
                .iter()
                .find(|(k, _, _)| k == "PORT")
                .and_then(|(_, v, _)| v.parse().ok())
                .unwrap_or(s.default_port);
            ports.push(port);
        }
        let image = svc.str_at(&["image"]).unwrap_or_default();
        for (needle, known) in KNOWN_PORTS {
            if image.contains(needle) {
                ports.extend_from_slice(known);
            }
        }
        listens.insert(name.as_str(), ports);
    }
    let mut out = Vec::new();
    for (name, svc) in services {
        let env = environment(svc);
        let object = format!("service/{name}");
        let push = |out: &mut Vec<Finding>, rule, line, message| {
            out.push(Finding {
                rule,
                file: file.to_owned(),
                line,
                object: object.clone(),
                message,
                fault: None,
            });
        };
        if let Some(contract) = service_of(svc).and_then(|s| contracts::for_image(&s)) {
            let values: HashMap<String, String> =
                env.iter().map(|(k, v, _)| (k.clone(), v.clone())).collect();
            if let Err(e) = contract.check(&values) {
                for problem in e.problems() {
                    push(
                        &mut out,
                        "service-config",
                        svc.line,
                        format!("{} would refuse to start: {problem}", contract.service),
                    );
                }
            }
        }
        for (key, value, line) in &env {
            let Some((_, rest)) = value.split_once("://") else {
                continue;
            };
            let authority = rest.split(['/', '?']).next().unwrap_or_default();
            let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
            let (host, port) = match host_port.rsplit_once(':') {
                Some((h, p)) => (h, p.parse::<u16>().ok()),
                None => (host_port, None),
            };
            match listens.get(host) {
                None => push(
                    &mut out,
                    "env-url",
                    *line,
                    format!("{key} points at {host}, which is not a service in this file"),
                ),
                Some(ports) => {
                    if let Some(p) = port
                        && !ports.is_empty()
                        && !ports.contains(&p)
                    {
                        push(
                            &mut out,
                            "env-url",
                            *line,
                            format!("{key} uses port {p} of {host}, which listens on {ports:?}"),
                        );
                    }
                }
            }
        }
    }
    Ok(out)
}
