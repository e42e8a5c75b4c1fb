//! The fault catalogue (`docs/instructor/faults.yaml`): what each
//! catalogued fault is, its hints, the rule that detects it, and exactly
//! how the incident manifests differ from the healthy ones for it.
//!
//! Scenarios are data: a new incident is new entries in a catalogue file,
//! not new code.

use std::path::Path;

use serde::Serialize;

use crate::rules::Finding;
use crate::yaml::{Node, Value, parse};

/// `(file, object, path, healthy, broken)` of one changed field.
pub type ChangeKey = (String, String, String, Option<String>, Option<String>);

/// One field a fault changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ManifestChange {
    /// File name in the manifest directory.
    pub file: String,
    /// `Kind/name`.
    pub object: String,
    /// Dotted path (see [`crate::diff`]).
    pub path: String,
    /// Value in the healthy manifests (`None`: absent).
    pub healthy: Option<String>,
    /// Value in the incident manifests (`None`: absent).
    pub broken: Option<String>,
}

/// One catalogued fault.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Fault {
    /// `F1`…
    pub id: String,
    /// Scenario id.
    pub scenario: String,
    /// The service it hurts.
    pub service: String,
    /// manifest, config or code.
    pub layer: String,
    /// Short title.
    pub title: String,
    /// What kubectl shows.
    pub symptom: String,
    /// The command that shows it.
    pub evidence: String,
    /// Why it happens.
    pub root_cause: String,
    /// What to change.
    pub fix: String,
    /// Three hints, vaguest first.
    pub hints: Vec<String>,
    /// The static rule that finds it.
    pub rule: String,
    /// `Kind/name` the rule reports.
    pub object: String,
    /// The file the rule reports.
    pub file: String,
    /// What a live check looks for.
    pub live_check: String,
    /// Every field the fault changes.
    pub changes: Vec<ManifestChange>,
}

/// A scenario and its faults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Catalogue {
    /// Scenario id.
    pub scenario: String,
    /// Scenario title.
    pub title: String,
    /// Directory of the incident manifests.
    pub manifests: String,
    /// Directory of the healthy manifests.
    pub healthy: String,
    /// The faults.
    pub faults: Vec<Fault>,
}

fn text(node: &Node, key: &str) -> String {
    node.str_at(&[key]).unwrap_or_default().trim().to_owned()
}

fn optional(node: &Node, key: &str) -> Option<String> {
    match node.get(key).map(|n| &n.value) {
        Some(Value::Scalar(s)) => Some(s.clone()),
        _ => None,
    }
}

/// The catalogue shipped inside the binary, so `cloudmart scenario` and
/// the doctor work in a container with no repository checkout.
pub const BUILT_IN: &str = include_str!("../../../docs/instructor/faults.yaml");

impl Catalogue {
    /// The built-in catalogue.
    pub fn built_in() -> Result<Self, String> {
        Self::parse("faults.yaml (built in)", BUILT_IN)
    }

    /// Reads a catalogue file.
    pub fn load(path: &Path) -> Result<Self, String> {
        let body = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::parse(&path.display().to_string(), &body)
    }

    /// Parses catalogue text.
    pub fn parse(file: &str, body: &str) -> Result<Self, String> {
        let docs = parse(file, body)?;
        let root = &docs.first().ok_or_else(|| format!("{file}: empty"))?.root;
        let scenario = root
            .get("scenario")
            .ok_or_else(|| format!("{file}: no scenario"))?;
        let mut faults = Vec::new();
        for f in root.get("faults").map(Node::items).unwrap_or_default() {
            let changes = f
                .get("manifest_changes")
                .map(Node::items)
                .unwrap_or_default()
                .iter()
                .map(|c| ManifestChange {
                    file: text(c, "file"),
                    object: text(c, "object"),
                    path: text(c, "path"),
                    healthy: optional(c, "healthy"),
                    broken: optional(c, "broken"),
                })
                .collect();
            let detect = f.get("detect");
            let id = text(f, "id");
            if id.is_empty() {
                return Err(format!("{file}:{}: a fault has no id", f.line));
            }
            faults.push(Fault {
                id,
                scenario: text(f, "scenario"),
                service: text(f, "service"),
                layer: text(f, "layer"),
                title: text(f, "title"),
                symptom: text(f, "symptom"),
                evidence: text(f, "evidence"),
                root_cause: text(f, "root_cause"),
                fix: text(f, "fix"),
                hints: f
                    .get("hints")
                    .map(Node::items)
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|h| h.str().map(|s| s.trim().to_owned()))
                    .collect(),
                rule: detect.map(|d| text(d, "rule")).unwrap_or_default(),
                object: detect.map(|d| text(d, "object")).unwrap_or_default(),
                file: detect.map(|d| text(d, "file")).unwrap_or_default(),
                live_check: text(f, "live_check"),
                changes,
            });
        }
        Ok(Self {
            scenario: text(scenario, "id"),
            title: text(scenario, "title"),
            manifests: text(scenario, "manifests"),
            healthy: text(scenario, "healthy"),
            faults,
        })
    }

    /// The differences the faults account for, in the order
    /// [`crate::diff::diff`] reports them: `(file, object, path, healthy, broken)`.
    pub fn expected_changes(&self) -> Vec<ChangeKey> {
        let mut all: Vec<_> = self
            .faults
            .iter()
            .flat_map(|f| f.changes.iter())
            .map(|c| {
                (
                    c.file.clone(),
                    c.object.clone(),
                    c.path.clone(),
                    c.healthy.clone(),
                    c.broken.clone(),
                )
            })
            .collect();
        all.sort();
        all
    }

    /// The fault with this id.
    pub fn fault(&self, id: &str) -> Option<&Fault> {
        self.faults.iter().find(|f| f.id.eq_ignore_ascii_case(id))
    }

    /// The fault a rule reports on an object, whatever file (or live
    /// object) holds the value: what a finding on a live cluster is matched by.
    pub fn fault_for(&self, rule: &str, object: &str) -> Option<&Fault> {
        self.faults
            .iter()
            .find(|f| f.rule == rule && f.object == object)
    }

    /// Tags each finding with the catalogued fault it is (same rule, object
    /// and file), if any.
    pub fn tag(&self, findings: &mut [Finding]) {
        for finding in findings {
            let file = Path::new(&finding.file)
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default();
            finding.fault = self
                .faults
                .iter()
                .find(|f| f.rule == finding.rule && f.object == finding.object && f.file == file)
                .map(|f| f.id.clone());
        }
    }
}
