//! What only a running cluster shows: containers that crash, cannot pull
//! their image or were OOM-killed, restarts within the time window, probes
//! the kubelet reports failing, Services with no ready endpoints, pods
//! still running with a ConfigMap's old values, and workloads scaled to
//! zero.
//!
//! Each observation names the object at fault (the workload that owns the
//! pod, or the Service) and the static rules whose findings are its known
//! causes, so the scoreboard can match it to a catalogued fault the same
//! way it matches findings: by rule and object.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Container, ContainerStatus, Event, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use serde::Serialize;

use super::snapshot::Snapshot;
use crate::rules::RULES;

/// A container that exits before it serves: its configuration.
const START: &[&str] = &["service-config", "config-reference"];
/// A container the kubelet stops: its probes.
const PROBES: &[&str] = &["probe-port", "probe-missing"];
/// A container the kernel kills: its memory limit.
const MEMORY: &[&str] = &["memory-below-peak", "memory-limit"];
/// A container that never starts: its image.
const IMAGE: &[&str] = &["image-not-built"];
/// A Service whose selector finds no pods.
const SELECTOR: &[&str] = &["service-selector", "service-target-port"];
/// Pods that exist but are not ready: anything that stops a pod.
const POD: &[&str] = &[
    "service-config",
    "config-reference",
    "probe-port",
    "probe-missing",
    "memory-below-peak",
    "memory-limit",
    "image-not-built",
];
/// Values a process reads once, at start-up.
const STARTUP_ENV: &[&str] = &[
    "service-config",
    "config-reference",
    "env-url",
    "retry-without-backoff",
    "chaos-enabled",
];

/// One thing seen on the live cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Observation {
    /// What kind of thing: `crash-loop`, `image-pull`, `config-error`,
    /// `oom-killed`, `restarts`, `probe-failures`, `no-endpoints`,
    /// `unschedulable`, `stale-config` or `scaled-to-zero`.
    pub check: &'static str,
    /// `Kind/name` of the object at fault: the workload that owns the pod,
    /// or the Service.
    pub object: String,
    /// `Kind/name` of where it was seen (a pod, a Service, a ConfigMap).
    pub seen_on: String,
    /// What was seen, in one sentence.
    pub message: String,
    /// Rules whose findings are known causes of it.
    #[serde(skip)]
    pub explained_by: &'static [&'static str],
    /// A way of making a fault's symptoms disappear without fixing it
    /// (scaling the workload to zero), rather than a symptom.
    #[serde(skip)]
    pub workaround: bool,
    /// The catalogued faults it belongs to.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub faults: Vec<String>,
}

/// Restart counts per `(pod uid, container)`, kept between `--watch`
/// rounds so that a restart shows even when the pod says nothing else.
pub type RestartCounts = BTreeMap<(String, String), i32>;

/// When and over which window to judge time-bound things.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// The time of the check.
    pub now: Timestamp,
    /// How far back restarts and probe failures count, in seconds.
    pub seconds: i64,
}

impl Window {
    fn contains(&self, t: Timestamp) -> bool {
        self.age(t) <= self.seconds
    }

    fn age(&self, t: Timestamp) -> i64 {
        self.now.as_second() - t.as_second()
    }

    fn ago(&self, t: Timestamp) -> String {
        let s = self.age(t).max(0);
        if s < 120 {
            format!("{s} s ago")
        } else {
            format!("{} min ago", s / 60)
        }
    }
}

/// Everything observed in `s`, and the restart counts to pass to the next
/// round.
pub fn observe(
    s: &Snapshot,
    window: Window,
    previous: Option<&RestartCounts>,
) -> (Vec<Observation>, RestartCounts) {
    let mut out = Vec::new();
    let mut counts = RestartCounts::new();
    for pod in s
        .pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
    {
        pod_observations(s, pod, window, previous, &mut counts, &mut out);
    }
    endpoints(s, &mut out);
    stale_config(s, &mut out);
    scaled_to_zero(s, &mut out);
    (out, counts)
}

/// `Kind/name` of the workload that owns `pod` (through its ReplicaSet for
/// a Deployment), or the pod itself.
pub fn owner(s: &Snapshot, pod: &Pod) -> String {
    let Some(owner) = pod
        .owner_references()
        .iter()
        .find(|o| o.controller == Some(true))
    else {
        return format!("Pod/{}", pod.name_any());
    };
    if owner.kind == "ReplicaSet" {
        if let Some(rs) = s.replica_sets.iter().find(|rs| rs.name_any() == owner.name) {
            if let Some(d) = rs
                .owner_references()
                .iter()
                .find(|o| o.controller == Some(true))
            {
                return format!("{}/{}", d.kind, d.name);
            }
        } else if let Some(deployment) = pod
            .labels()
            .get("pod-template-hash")
            .and_then(|hash| owner.name.strip_suffix(&format!("-{hash}")))
        {
            return format!("Deployment/{deployment}");
        }
    }
    format!("{}/{}", owner.kind, owner.name)
}

/// The kinds of container ends that point at probes, memory or config.
fn cause_of_exit(
    exit_code: i32,
    reason: Option<&str>,
    liveness_failed: bool,
) -> &'static [&'static str] {
    match (reason, exit_code) {
        (Some("OOMKilled"), _) => MEMORY,
        _ if liveness_failed => PROBES,
        // A clean exit or death by SIGTERM/SIGKILL: something stopped it.
        (_, 0 | 137 | 143) => PROBES,
        _ => START,
    }
}

fn describe_exit(exit_code: i32, reason: Option<&str>) -> String {
    match reason {
        Some(r) if !r.is_empty() => format!("exit code {exit_code} ({r})"),
        _ => format!("exit code {exit_code}"),
    }
}

fn times(n: i32) -> String {
    if n == 1 {
        "once".to_owned()
    } else {
        format!("{n} times")
    }
}

fn event_time(e: &Event) -> Option<Timestamp> {
    [
        e.last_timestamp.as_ref().map(|t| t.0),
        e.event_time.as_ref().map(|t| t.0),
        e.series
            .as_ref()
            .and_then(|s| s.last_observed_time.as_ref())
            .map(|t| t.0),
        e.first_timestamp.as_ref().map(|t| t.0),
    ]
    .into_iter()
    .flatten()
    .max()
}

fn event_count(e: &Event) -> i32 {
    e.series
        .as_ref()
        .and_then(|s| s.count)
        .or(e.count)
        .unwrap_or(1)
        .max(1)
}

/// One kind of probe failing on one pod, from the kubelet's events.
struct ProbeFailures {
    /// Failures counted by the events (since the first of them).
    count: i32,
    /// The first failure.
    first: Option<Timestamp>,
    /// The newest failure.
    last: Timestamp,
    /// The newest failure's message, without its "X probe failed: ".
    detail: String,
}

/// Probe failures the kubelet reported for `pod`, by probe kind
/// (`Liveness`, `Readiness`, `Startup`), if the newest is within the window.
fn probe_failures(s: &Snapshot, pod: &Pod, window: Window) -> BTreeMap<String, ProbeFailures> {
    let mut by_probe: BTreeMap<String, ProbeFailures> = BTreeMap::new();
    let uid = pod.metadata.uid.as_deref();
    for e in &s.events {
        let o = &e.involved_object;
        let same_pod = o.kind.as_deref() == Some("Pod")
            && o.name.as_deref() == Some(pod.name_any().as_str())
            && (o.uid.is_none() || o.uid.as_deref() == uid);
        if !same_pod || e.reason.as_deref() != Some("Unhealthy") {
            continue;
        }
        let message = e.message.as_deref().unwrap_or_default();
        let Some((probe, detail)) = message.split_once(" probe failed") else {
            continue;
        };
        let detail = detail.trim_start_matches(':').trim().to_owned();
        let Some(at) = event_time(e).filter(|t| window.contains(*t)) else {
            continue;
        };
        let first = e.first_timestamp.as_ref().map(|t| t.0);
        let entry = by_probe
            .entry(probe.to_owned())
            .or_insert_with(|| ProbeFailures {
                count: 0,
                first,
                last: at,
                detail: detail.clone(),
            });
        entry.count += event_count(e);
        entry.first = match (entry.first, first) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if at >= entry.last {
            entry.last = at;
            entry.detail = detail;
        }
    }
    by_probe
}

fn memory_limit(spec: Option<&Container>) -> Option<String> {
    spec?
        .resources
        .as_ref()?
        .limits
        .as_ref()?
        .get("memory")
        .map(|q| q.0.clone())
}

fn pod_observations(
    s: &Snapshot,
    pod: &Pod,
    window: Window,
    previous: Option<&RestartCounts>,
    counts: &mut RestartCounts,
    out: &mut Vec<Observation>,
) {
    let object = owner(s, pod);
    let seen_on = format!("Pod/{}", pod.name_any());
    let uid = pod.metadata.uid.clone().unwrap_or_else(|| pod.name_any());
    let probes = probe_failures(s, pod, window);
    let liveness_failed = probes.contains_key("Liveness");
    let mut push = |check, explained_by, message: String| {
        out.push(Observation {
            check,
            object: object.clone(),
            seen_on: seen_on.clone(),
            message,
            explained_by,
            workaround: false,
            faults: Vec::new(),
        });
    };
    let status = pod.status.as_ref();
    if status.and_then(|st| st.phase.as_deref()) == Some("Pending")
        && let Some(c) = status
            .and_then(|st| st.conditions.as_ref())
            .into_iter()
            .flatten()
            .find(|c| c.type_ == "PodScheduled" && c.status == "False")
    {
        push(
            "unschedulable",
            &[],
            format!(
                "pod cannot be scheduled: {}",
                c.message.as_deref().unwrap_or("no reason given")
            ),
        );
    }
    let statuses: &[ContainerStatus] = status
        .and_then(|st| st.container_statuses.as_deref())
        .unwrap_or_default();
    let mut not_ready = false;
    for cs in statuses {
        not_ready |= !cs.ready;
        let spec = pod
            .spec
            .as_ref()
            .and_then(|sp| sp.containers.iter().find(|c| c.name == cs.name));
        let waiting = cs.state.as_ref().and_then(|st| st.waiting.as_ref());
        let waiting_reason = waiting
            .and_then(|w| w.reason.as_deref())
            .unwrap_or_default();
        let waiting_message = waiting
            .and_then(|w| w.message.as_deref())
            .unwrap_or_default();
        let last = cs.last_state.as_ref().and_then(|st| st.terminated.as_ref());
        let last_reason = last.and_then(|t| t.reason.as_deref());
        let last_exit = last.map(|t| {
            let when = t
                .finished_at
                .as_ref()
                .map(|f| format!(", {}", window.ago(f.0)))
                .unwrap_or_default();
            format!("{}{when}", describe_exit(t.exit_code, last_reason))
        });
        let mut reported = false;
        match waiting_reason {
            "CrashLoopBackOff" => {
                let cause = last.map_or(START, |t| {
                    cause_of_exit(t.exit_code, last_reason, liveness_failed)
                });
                push(
                    "crash-loop",
                    cause,
                    format!(
                        "container {} is in CrashLoopBackOff after restarting {}; its last run ended with {}",
                        cs.name,
                        times(cs.restart_count),
                        last_exit
                            .clone()
                            .unwrap_or_else(|| "an unknown exit".to_owned())
                    ),
                );
                reported = true;
            }
            "ImagePullBackOff" | "ErrImagePull" | "InvalidImageName" | "ErrImageNeverPull" => {
                push(
                    "image-pull",
                    IMAGE,
                    format!(
                        "container {} has never started: {waiting_reason} for image {}: {waiting_message}",
                        cs.name, cs.image
                    ),
                );
                reported = true;
            }
            "CreateContainerConfigError" | "CreateContainerError" => {
                push(
                    "config-error",
                    START,
                    format!(
                        "container {} cannot be created: {waiting_reason}: {waiting_message}",
                        cs.name
                    ),
                );
                reported = true;
            }
            _ => {}
        }
        if last_reason == Some("OOMKilled") {
            let limit = memory_limit(spec)
                .map(|l| format!(" (memory limit {l})"))
                .unwrap_or_default();
            push(
                "oom-killed",
                MEMORY,
                format!(
                    "container {} was killed for using more memory than its limit{limit}: last state {}; restarted {}",
                    cs.name,
                    last_exit.clone().unwrap_or_default(),
                    times(cs.restart_count)
                ),
            );
            reported = true;
        }
        let key = (uid.clone(), cs.name.clone());
        let grew = previous
            .and_then(|p| p.get(&key))
            .map_or(0, |before| cs.restart_count - before);
        counts.insert(key, cs.restart_count);
        let recent = last
            .and_then(|t| t.finished_at.as_ref())
            .is_some_and(|f| window.contains(f.0));
        if !reported && cs.restart_count > 0 && (recent || grew > 0) {
            let since = if grew > 0 {
                format!(", {grew} since the previous check")
            } else {
                String::new()
            };
            let cause = last.map_or(PROBES, |t| {
                cause_of_exit(t.exit_code, last_reason, liveness_failed)
            });
            push(
                "restarts",
                cause,
                format!(
                    "container {} has restarted {}{since}; the last run ended with {}",
                    cs.name,
                    times(cs.restart_count),
                    last_exit.unwrap_or_else(|| "an unknown exit".to_owned())
                ),
            );
        }
    }
    for (probe, failures) in probes {
        // Readiness and startup probes fail for a while on every start;
        // they matter only while the pod is still not ready.
        if probe != "Liveness" && !not_ready {
            continue;
        }
        let since = failures
            .first
            .map(|f| format!(" since {f}"))
            .unwrap_or_default();
        push(
            "probe-failures",
            PROBES,
            format!(
                "{probe} probe failed {}{since}, most recently {}: {}",
                times(failures.count),
                window.ago(failures.last),
                failures.detail
            ),
        );
    }
}

fn show_selector(selector: &BTreeMap<String, String>) -> String {
    selector
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn endpoints(s: &Snapshot, out: &mut Vec<Observation>) {
    let Some(counts) = &s.endpoints else { return };
    for svc in &s.services {
        let Some(spec) = &svc.spec else { continue };
        if spec.type_.as_deref() == Some("ExternalName") {
            continue;
        }
        let name = svc.name_any();
        let count = counts.get(&name).copied().unwrap_or_default();
        if count.ready > 0 {
            continue;
        }
        let service = format!("Service/{name}");
        let selector = spec.selector.clone().unwrap_or_default();
        let live = || {
            s.pods
                .iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
        };
        let matching: Vec<&Pod> = live()
            .filter(|p| {
                !selector.is_empty() && selector.iter().all(|(k, v)| p.labels().get(k) == Some(v))
            })
            .collect();
        if matching.is_empty() {
            let why = if selector.is_empty() {
                "it has no selector and nothing fills its endpoints".to_owned()
            } else {
                let apps: BTreeSet<String> = live()
                    .filter_map(|p| p.labels().get("app").map(|a| format!("app={a}")))
                    .collect();
                format!(
                    "no pod matches its selector {} (pods here have {})",
                    show_selector(&selector),
                    if apps.is_empty() {
                        "none".to_owned()
                    } else {
                        apps.into_iter().collect::<Vec<_>>().join(", ")
                    }
                )
            };
            out.push(Observation {
                check: "no-endpoints",
                object: service.clone(),
                seen_on: service,
                message: format!("Service {name} has no ready endpoints: {why}"),
                explained_by: SELECTOR,
                workaround: false,
                faults: Vec::new(),
            });
            continue;
        }
        let mut by_owner: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for p in matching {
            by_owner.entry(owner(s, p)).or_default().push(p.name_any());
        }
        for (object, pods) in by_owner {
            out.push(Observation {
                check: "no-endpoints",
                object,
                seen_on: service.clone(),
                message: format!(
                    "Service {name} has no ready endpoints: its pod{} {} {} not ready",
                    if pods.len() == 1 { "" } else { "s" },
                    pods.join(", "),
                    if pods.len() == 1 { "is" } else { "are" }
                ),
                explained_by: POD,
                workaround: false,
                faults: Vec::new(),
            });
        }
    }
}

/// ConfigMaps and Secrets a container takes environment variables from.
fn env_sources(c: &Container) -> BTreeSet<(&'static str, String)> {
    let mut refs = BTreeSet::new();
    for from in c.env_from.iter().flatten() {
        if let Some(r) = &from.config_map_ref {
            refs.insert(("ConfigMap", r.name.clone()));
        }
        if let Some(r) = &from.secret_ref {
            refs.insert(("Secret", r.name.clone()));
        }
    }
    for var in c.env.iter().flatten() {
        let Some(from) = &var.value_from else {
            continue;
        };
        if let Some(r) = &from.config_map_key_ref {
            refs.insert(("ConfigMap", r.name.clone()));
        }
        if let Some(r) = &from.secret_key_ref {
            refs.insert(("Secret", r.name.clone()));
        }
    }
    refs
}

/// Running containers that started before a ConfigMap or Secret they take
/// variables from last changed: the process still has the old values.
fn stale_config(s: &Snapshot, out: &mut Vec<Observation>) {
    // (workload, source) -> (changed at, pods started before it)
    let mut stale: BTreeMap<(String, String), (Timestamp, BTreeSet<String>)> = BTreeMap::new();
    for pod in s
        .pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
    {
        let (Some(spec), Some(status)) = (&pod.spec, &pod.status) else {
            continue;
        };
        for cs in status.container_statuses.iter().flatten() {
            let Some(started) = cs
                .state
                .as_ref()
                .and_then(|st| st.running.as_ref())
                .and_then(|r| r.started_at.as_ref())
                .map(|t| t.0)
            else {
                continue;
            };
            let Some(container) = spec.containers.iter().find(|c| c.name == cs.name) else {
                continue;
            };
            for (kind, name) in env_sources(container) {
                let Some(changed) = s.changed_at(kind, &name).filter(|c| *c > started) else {
                    continue;
                };
                stale
                    .entry((owner(s, pod), format!("{kind}/{name}")))
                    .or_insert_with(|| (changed, BTreeSet::new()))
                    .1
                    .insert(pod.name_any());
            }
        }
    }
    for ((object, source), (changed, pods)) in stale {
        let restart = match object.split_once('/') {
            Some((kind, name)) if kind != "Pod" => format!(
                "; kubectl rollout restart {}/{name} -n {}",
                kind.to_lowercase(),
                s.namespace
            ),
            _ => String::new(),
        };
        out.push(Observation {
            check: "stale-config",
            object,
            seen_on: source.clone(),
            message: format!(
                "changed at {changed}, after pod{} {} started: {} still {} with the values from before (read once, at start-up){restart}",
                if pods.len() == 1 { "" } else { "s" },
                pods.iter().cloned().collect::<Vec<_>>().join(" and "),
                if pods.len() == 1 { "it" } else { "they" },
                if pods.len() == 1 { "runs" } else { "run" },
            ),
            explained_by: STARTUP_ENV,
            workaround: false,
            faults: Vec::new(),
        });
    }
}

fn scaled_to_zero(s: &Snapshot, out: &mut Vec<Observation>) {
    let deployments = s
        .deployments
        .iter()
        .map(|d| ("Deployment", d.name_any(), d.spec.replicas));
    let sets = s
        .stateful_sets
        .iter()
        .map(|d| ("StatefulSet", d.name_any(), d.spec.replicas));
    for (kind, name, replicas) in deployments.chain(sets) {
        if replicas == Some(0) {
            let object = format!("{kind}/{name}");
            out.push(Observation {
                check: "scaled-to-zero",
                object: object.clone(),
                seen_on: object,
                message: format!(
                    "{kind} {name} is scaled to 0 replicas: nothing runs, so nothing can fail"
                ),
                explained_by: RULES,
                workaround: true,
                faults: Vec::new(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exits_point_at_their_likely_cause() {
        assert_eq!(cause_of_exit(137, Some("OOMKilled"), true), MEMORY);
        assert_eq!(cause_of_exit(1, Some("Error"), true), PROBES);
        assert_eq!(cause_of_exit(0, Some("Completed"), false), PROBES);
        assert_eq!(cause_of_exit(1, Some("Error"), false), START);
    }

    #[test]
    fn the_window_counts_back_from_now() {
        let now: Timestamp = "2026-11-21T15:00:00Z".parse().unwrap();
        let w = Window { now, seconds: 300 };
        assert!(w.contains("2026-11-21T14:55:00Z".parse().unwrap()));
        assert!(!w.contains("2026-11-21T14:54:59Z".parse().unwrap()));
        assert_eq!(w.ago("2026-11-21T14:59:31Z".parse().unwrap()), "29 s ago");
        assert_eq!(w.ago("2026-11-21T14:52:40Z".parse().unwrap()), "7 min ago");
    }
}
