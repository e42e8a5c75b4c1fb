//! The generic rules. None of them knows the workshop's faults: each checks
//! one kind of contract between objects (a selector and the pods it should
//! find, a probe and the port the app listens on, a URL and the Service it
//! names) or between a container and the service it runs.
//!
//! This module holds what every rule shares ([`Finding`], [`Context`],
//! [`check`], which runs them all); the rules themselves are grouped by the
//! kind of object they check: `services`, `probes`, `env`, `images`,
//! `memory` and `storage`.

use serde::Serialize;

use crate::contracts;
use crate::model::{EnvVarAt, Manifests, Object, image_name_tag};
use crate::yaml::Node;

mod env;
mod images;
mod memory;
mod probes;
mod services;
mod storage;

use env::{env_urls, service_config};
use images::images;
use memory::{memory, memory_limit};
use probes::{probe_ports, probes_present};
use services::{service_selector, service_target_port};
use storage::storage_classes;

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
