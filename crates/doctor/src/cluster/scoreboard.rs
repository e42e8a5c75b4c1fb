//! The scoreboard: one line per catalogued fault (FIXED, PRESENT or NOT
//! ACCEPTED, with the finding or observation that decides it), the gateway
//! smoke check, anything else wrong, and one verdict.
//!
//! A fault counts as fixed only when nothing on the cluster still shows it
//! *and* it was not hidden: its object still exists, is not scaled to zero,
//! and no related rule fires on it (a removed probe, a lifted memory limit).
//! The system is healthy only when every fault is fixed, nothing else is
//! wrong and orders go through the gateway.

use serde::Serialize;

use super::observe::Observation;
use crate::catalogue::Catalogue;
use crate::rules::{Finding, related};

/// A fault's state on the live cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    /// Nothing shows it, and it was not hidden.
    Fixed,
    /// A finding or a live observation still shows it.
    Present,
    /// Its symptoms are gone because it was hidden, not fixed.
    NotAccepted,
}

impl Status {
    /// As printed on the scoreboard.
    pub fn label(self) -> &'static str {
        match self {
            Self::Fixed => "FIXED",
            Self::Present => "PRESENT",
            Self::NotAccepted => "NOT ACCEPTED",
        }
    }
}

/// One rule's finding on a live object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LiveFinding {
    /// The rule.
    pub rule: &'static str,
    /// `Kind/name` of the object at fault.
    pub object: String,
    /// `Kind/name` of the object that holds the value to change (a
    /// ConfigMap for a URL read from it).
    pub source: String,
    /// What is wrong.
    pub message: String,
    /// The catalogued fault it is, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fault: Option<String>,
}

impl From<Finding> for LiveFinding {
    fn from(f: Finding) -> Self {
        Self {
            rule: f.rule,
            object: f.object,
            source: f.file,
            message: f.message,
            fault: f.fault,
        }
    }
}

impl LiveFinding {
    fn reason(&self) -> String {
        format!("{} [{}] {}", self.source, self.rule, self.message)
    }
}

impl Observation {
    fn reason(&self) -> String {
        format!("{} [{}] {}", self.seen_on, self.check, self.message)
    }
}

/// What the gateway smoke check found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SmokeOutcome {
    /// The gateway base URL.
    pub url: String,
    /// Orders it meant to place.
    pub orders: u32,
    /// Orders that succeeded within the SLA before the first failure.
    pub passed: u32,
    /// The slowest successful answer, in milliseconds.
    pub slowest_ms: f64,
    /// Why it failed, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}

impl SmokeOutcome {
    /// Every order went through in time.
    pub fn ok(&self) -> bool {
        self.failure.is_none() && self.orders > 0 && self.passed == self.orders
    }
}

/// One catalogued fault's line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FaultLine {
    /// `F1`…
    pub id: String,
    /// The fault's title.
    pub title: String,
    /// Its state.
    pub status: Status,
    /// What keeps it from being FIXED, one line each.
    pub reasons: Vec<String>,
}

/// The whole verdict of one check.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Scoreboard {
    /// Scenario id.
    pub scenario: String,
    /// The namespace checked.
    pub namespace: String,
    /// When, RFC 3339.
    pub checked_at: String,
    /// One line per catalogued fault, in catalogue order.
    pub faults: Vec<FaultLine>,
    /// The gateway smoke check.
    pub smoke: SmokeOutcome,
    /// Problems that are not a catalogued fault.
    pub other: Vec<String>,
    /// What could not be read (the check went on without it).
    pub notes: Vec<String>,
    /// Every rule finding on the live objects.
    pub findings: Vec<LiveFinding>,
    /// Every live observation.
    pub observations: Vec<Observation>,
    /// Every fault fixed, nothing else wrong, smoke passed.
    pub healthy: bool,
}

/// What the scoreboard is built from.
#[derive(Debug, Clone)]
pub struct Inputs {
    /// Namespace checked.
    pub namespace: String,
    /// When, RFC 3339.
    pub checked_at: String,
    /// `Kind/name` of every object the rules saw.
    pub objects: Vec<String>,
    /// Rule findings on the live objects.
    pub findings: Vec<Finding>,
    /// Live observations.
    pub observations: Vec<Observation>,
    /// The smoke check.
    pub smoke: SmokeOutcome,
    /// What could not be read.
    pub notes: Vec<String>,
}

impl Scoreboard {
    /// Matches findings and observations to the catalogue's faults and
    /// decides each fault's state.
    pub fn build(catalogue: &Catalogue, inputs: Inputs) -> Self {
        let findings: Vec<LiveFinding> = inputs
            .findings
            .into_iter()
            .map(|mut f| {
                f.fault = catalogue
                    .fault_for(f.rule, &f.object)
                    .map(|fault| fault.id.clone());
                LiveFinding::from(f)
            })
            .collect();
        let observations: Vec<Observation> = inputs
            .observations
            .into_iter()
            .map(|mut o| {
                o.faults = catalogue
                    .faults
                    .iter()
                    .filter(|f| f.object == o.object && o.explained_by.contains(&f.rule.as_str()))
                    .map(|f| f.id.clone())
                    .collect();
                o
            })
            .collect();
        let mut used = vec![false; findings.len()];
        let mut faults = Vec::new();
        for fault in &catalogue.faults {
            let mut present = Vec::new();
            let mut hidden = Vec::new();
            let missing = !inputs.objects.contains(&fault.object);
            if missing {
                hidden.push(format!(
                    "{} does not exist in namespace {}: deleting it is not a fix",
                    fault.object, inputs.namespace
                ));
            }
            for (i, f) in findings.iter().enumerate() {
                if f.fault.as_deref() == Some(fault.id.as_str()) {
                    present.push(f.reason());
                    used[i] = true;
                } else if f.object == fault.object && related(&fault.rule).contains(&f.rule) {
                    hidden.push(f.reason());
                    used[i] = true;
                }
            }
            for o in observations.iter().filter(|o| o.faults.contains(&fault.id)) {
                if o.workaround {
                    hidden.push(o.reason());
                } else {
                    present.push(o.reason());
                }
            }
            let (status, reasons) = if missing {
                (Status::NotAccepted, hidden)
            } else if !present.is_empty() {
                (Status::Present, present)
            } else if !hidden.is_empty() {
                (Status::NotAccepted, hidden)
            } else {
                (Status::Fixed, Vec::new())
            };
            faults.push(FaultLine {
                id: fault.id.clone(),
                title: fault.title.clone(),
                status,
                reasons,
            });
        }
        let mut other: Vec<String> = findings
            .iter()
            .zip(&used)
            .filter(|(_, used)| !**used)
            .map(|(f, _)| f.reason())
            .collect();
        other.extend(
            observations
                .iter()
                .filter(|o| o.faults.is_empty() && !o.workaround)
                .map(Observation::reason),
        );
        let healthy = faults.iter().all(|f| f.status == Status::Fixed)
            && other.is_empty()
            && inputs.smoke.ok();
        Self {
            scenario: catalogue.scenario.clone(),
            namespace: inputs.namespace,
            checked_at: inputs.checked_at,
            faults,
            smoke: inputs.smoke,
            other,
            notes: inputs.notes,
            findings,
            observations,
            healthy,
        }
    }

    /// The process exit code: 0 healthy, 1 not.
    pub fn exit_code(&self) -> u8 {
        u8::from(!self.healthy)
    }

    /// The scoreboard as text, for a terminal.
    pub fn render_text(&self) -> String {
        self.render(true)
    }

    /// The scoreboard as text without the answers: each fault's state, but
    /// not its title or what keeps it present, and only the number of other
    /// problems. For a projector while groups are still hunting.
    pub fn render_text_without_answers(&self) -> String {
        self.render(false)
    }

    fn render(&self, answers: bool) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "cloudmart doctor cluster: namespace {}, scenario {}, {}",
            self.namespace, self.scenario, self.checked_at
        );
        let _ = writeln!(out);
        for f in &self.faults {
            if !answers {
                let _ = writeln!(out, "{:<4}{}", f.id, f.status.label());
                continue;
            }
            let _ = writeln!(out, "{:<4}{:<14}{}", f.id, f.status.label(), f.title);
            for r in &f.reasons {
                let _ = writeln!(out, "      - {r}");
            }
        }
        let _ = writeln!(out);
        let smoke = &self.smoke;
        if smoke.ok() {
            let _ = writeln!(
                out,
                "smoke  PASSED  {}/{} orders through {}, slowest {:.1} ms",
                smoke.passed, smoke.orders, smoke.url, smoke.slowest_ms
            );
        } else {
            let failure = smoke.failure.as_deref().unwrap_or("no orders placed");
            // The error body can name the fault ("dns error: database").
            let failure = if answers {
                failure
            } else {
                failure.split(": ").next().unwrap_or(failure)
            };
            let _ = writeln!(
                out,
                "smoke  FAILED  {}/{} orders through {}: {failure}",
                smoke.passed, smoke.orders, smoke.url,
            );
        }
        if !answers && !self.other.is_empty() {
            let _ = writeln!(out, "other problems: {}", self.other.len());
        } else if !self.other.is_empty() {
            let _ = writeln!(out, "other problems:");
            for o in &self.other {
                let _ = writeln!(out, "      - {o}");
            }
        }
        for n in &self.notes {
            let _ = writeln!(out, "note: {n}");
        }
        let _ = writeln!(out);
        let fixed = self
            .faults
            .iter()
            .filter(|f| f.status == Status::Fixed)
            .count();
        if self.healthy {
            let _ = writeln!(
                out,
                "HEALTHY: {fixed} of {} faults fixed, smoke passed, nothing else found",
                self.faults.len()
            );
        } else {
            let mut why = vec![format!("{fixed} of {} faults fixed", self.faults.len())];
            if !smoke.ok() {
                why.push("smoke failed".to_owned());
            }
            if !self.other.is_empty() {
                why.push(format!("{} other problem(s)", self.other.len()));
            }
            let _ = writeln!(out, "NOT HEALTHY: {}", why.join(", "));
        }
        out
    }

    /// The scoreboard as one JSON document, for graders.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| {
            serde_json::json!({"error": format!("cannot serialise the scoreboard: {e}")})
                .to_string()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(rule: &'static str, object: &str) -> Finding {
        Finding {
            rule,
            file: object.to_owned(),
            line: 1,
            object: object.to_owned(),
            message: format!("{rule} on {object}"),
            fault: None,
        }
    }

    fn inputs(findings: Vec<Finding>, objects: &[&str]) -> Inputs {
        Inputs {
            namespace: "production".to_owned(),
            checked_at: "2026-11-21T15:00:00Z".to_owned(),
            objects: objects.iter().map(|o| (*o).to_owned()).collect(),
            findings,
            observations: Vec::new(),
            smoke: SmokeOutcome {
                url: "http://gw".to_owned(),
                orders: 1,
                passed: 1,
                slowest_ms: 1.0,
                failure: None,
            },
            notes: Vec::new(),
        }
    }

    fn f4(board: &Scoreboard) -> &FaultLine {
        board.faults.iter().find(|f| f.id == "F4").unwrap()
    }

    #[test]
    fn a_fault_is_present_hidden_or_fixed() {
        let catalogue = Catalogue::built_in().unwrap();
        let objects: Vec<&str> = catalogue.faults.iter().map(|f| f.object.as_str()).collect();

        let fixed = Scoreboard::build(&catalogue, inputs(Vec::new(), &objects));
        assert!(fixed.healthy, "{}", fixed.render_text());

        let present = Scoreboard::build(
            &catalogue,
            inputs(
                vec![finding("probe-port", "Deployment/api-service")],
                &objects,
            ),
        );
        assert_eq!(f4(&present).status, Status::Present);
        assert!(present.other.is_empty());

        let hidden = Scoreboard::build(
            &catalogue,
            inputs(
                vec![finding("probe-missing", "Deployment/api-service")],
                &objects,
            ),
        );
        assert_eq!(f4(&hidden).status, Status::NotAccepted);
        assert!(hidden.other.is_empty(), "{:?}", hidden.other);

        // The same rule on another object is another problem, not F4.
        let elsewhere = Scoreboard::build(
            &catalogue,
            inputs(
                vec![finding("probe-missing", "Deployment/gateway")],
                &objects,
            ),
        );
        assert_eq!(f4(&elsewhere).status, Status::Fixed);
        assert_eq!(elsewhere.other.len(), 1);
        assert!(!elsewhere.healthy);

        let gone: Vec<&str> = objects
            .iter()
            .copied()
            .filter(|o| *o != "Deployment/api-service")
            .collect();
        let deleted = Scoreboard::build(&catalogue, inputs(Vec::new(), &gone));
        assert_eq!(f4(&deleted).status, Status::NotAccepted);
        assert!(!deleted.healthy);
    }
}
