//! Rules on container probes: each one present, and aimed at the port the
//! app listens on.

use super::{Finding, container_ports, finding, listening_port};
use crate::model::{Manifests, containers};

pub(super) fn probe_ports(m: &Manifests, out: &mut Vec<Finding>) {
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

/// A container that serves a port has startup, readiness and liveness
/// probes: without them Kubernetes sends traffic to pods that are not ready
/// and never restarts one that hangs.
pub(super) fn probes_present(m: &Manifests, out: &mut Vec<Finding>) {
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
