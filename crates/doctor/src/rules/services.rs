//! Rules on Services: a selector that finds no pods, a target port no
//! container of those pods serves.

use std::collections::BTreeMap;

use super::{Finding, container_ports, finding, listening_port};
use crate::model::{Manifests, Object, containers, labels};
use crate::yaml::Node;

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

pub(super) fn service_selector(m: &Manifests, out: &mut Vec<Finding>) {
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

pub(super) fn service_target_port(m: &Manifests, out: &mut Vec<Finding>) {
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
