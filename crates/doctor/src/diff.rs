//! Field-level differences between two manifest sets, so a test can prove
//! that the incident manifests differ from the healthy ones by exactly the
//! catalogued faults and nothing else.
//!
//! Objects are matched by file and `Kind/name`. Paths are dotted; list items
//! that have a `name` are addressed by it (`containers[api-service]`), so a
//! reordered list is not a difference, and others by index (`[0]`).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::model::Manifests;
use crate::yaml::{Node, Value};

/// One differing field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// File name (without directory).
    pub file: String,
    /// `Kind/name`.
    pub object: String,
    /// Dotted path inside the object.
    pub path: String,
    /// Value on the left (`None` when absent).
    pub left: Option<String>,
    /// Value on the right (`None` when absent).
    pub right: Option<String>,
}

fn flatten(node: &Node, prefix: &str, out: &mut BTreeMap<String, String>) {
    match &node.value {
        Value::Scalar(s) => {
            out.insert(prefix.to_owned(), s.clone());
        }
        Value::Null => {
            out.insert(prefix.to_owned(), String::new());
        }
        Value::Map(entries) => {
            for (k, v) in entries {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(v, &p, out);
            }
        }
        Value::Seq(items) => {
            for (i, item) in items.iter().enumerate() {
                let key = item
                    .str_at(&["name"])
                    .map_or_else(|| i.to_string(), str::to_owned);
                // A named env entry is addressed by its name alone, the
                // field the entry exists for.
                let p = format!("{prefix}[{key}]");
                if prefix.ends_with(".env")
                    && item.get("value").is_some()
                    && item.entries().len() == 2
                {
                    out.insert(p, item.str_at(&["value"]).unwrap_or_default().to_owned());
                } else {
                    flatten(item, &p, out);
                }
            }
        }
    }
}

fn objects(m: &Manifests) -> BTreeMap<(String, String), BTreeMap<String, String>> {
    m.objects()
        .into_iter()
        .map(|o| {
            let file = std::path::Path::new(o.file())
                .file_name()
                .map_or_else(|| o.file().to_owned(), |f| f.to_string_lossy().into_owned());
            let mut fields = BTreeMap::new();
            flatten(&o.doc.root, "", &mut fields);
            ((file, o.id()), fields)
        })
        .collect()
}

/// Every field that differs between `left` and `right`.
pub fn diff(left: &Manifests, right: &Manifests) -> Vec<Change> {
    let (l, r) = (objects(left), objects(right));
    let mut keys: Vec<&(String, String)> = l.keys().chain(r.keys()).collect();
    keys.sort();
    keys.dedup();
    let empty = BTreeMap::new();
    let mut out = Vec::new();
    for key in keys {
        let (lf, rf) = (l.get(key).unwrap_or(&empty), r.get(key).unwrap_or(&empty));
        let mut paths: Vec<&String> = lf.keys().chain(rf.keys()).collect();
        paths.sort();
        paths.dedup();
        for path in paths {
            let (a, b) = (lf.get(path), rf.get(path));
            if a != b {
                out.push(Change {
                    file: key.0.clone(),
                    object: key.1.clone(),
                    path: path.clone(),
                    left: a.cloned(),
                    right: b.cloned(),
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_items_are_matched_by_name_and_absent_fields_show() {
        let a = Manifests::from_text(
            "a/x.yaml",
            "kind: Deployment\nmetadata: {name: d}\nspec:\n  containers:\n    - name: c\n      env:\n        - {name: A, value: \"1\"}\n        - {name: B, value: \"2\"}\n",
        )
        .unwrap();
        let b = Manifests::from_text(
            "b/x.yaml",
            "kind: Deployment\nmetadata: {name: d}\nspec:\n  containers:\n    - name: c\n      env:\n        - {name: B, value: \"3\"}\n",
        )
        .unwrap();
        let changes = diff(&a, &b);
        let paths: Vec<(&str, Option<&str>, Option<&str>)> = changes
            .iter()
            .map(|c| (c.path.as_str(), c.left.as_deref(), c.right.as_deref()))
            .collect();
        assert_eq!(
            paths,
            vec![
                ("spec.containers[c].env[A]", Some("1"), None),
                ("spec.containers[c].env[B]", Some("2"), Some("3")),
            ]
        );
    }
}
