//! Rules on container memory limits: set, at least the measured peak, and
//! not so large that they bound nothing.

use super::{Finding, MEMORY_LIMIT_CEILING, finding};
use crate::contracts;
use crate::model::{Manifests, containers, image_name_tag, memory_bytes};

pub(super) fn memory(m: &Manifests, out: &mut Vec<Finding>) {
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
/// [`MEMORY_LIMIT_CEILING`](super::MEMORY_LIMIT_CEILING).
pub(super) fn memory_limit(m: &Manifests, out: &mut Vec<Finding>) {
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
