//! Kubernetes objects as the rules see them: workloads with their pod
//! templates and containers, Services, ConfigMaps and Secrets, and each
//! container's environment resolved through ConfigMap and Secret references.
//!
//! The same model is built from files (`cloudmart doctor manifests`) and
//! from live objects (`cloudmart doctor cluster`, which renders them to YAML
//! first), so every rule runs through one code path.

use std::collections::BTreeMap;
use std::path::Path;

use crate::yaml::{Document, Node, parse};

/// Kinds that carry a pod template.
const WORKLOAD_KINDS: &[&str] = &[
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "ReplicaSet",
    "Job",
];

/// Every parsed document of a manifest set.
#[derive(Debug, Clone, Default)]
pub struct Manifests {
    /// Documents in file order.
    pub docs: Vec<Document>,
}

/// An object: a document with its identity.
#[derive(Debug, Clone, Copy)]
pub struct Object<'a> {
    /// The document.
    pub doc: &'a Document,
    pub kind: &'a str,
    /// `metadata.name`.
    pub name: &'a str,
    /// `metadata.namespace`, or `default`.
    pub namespace: &'a str,
}

impl Object<'_> {
    /// `Kind/name`, as kubectl writes it.
    pub fn id(&self) -> String {
        format!("{}/{}", self.kind, self.name)
    }

    /// The file the object came from.
    pub fn file(&self) -> &str {
        &self.doc.file
    }
}

/// One container of a workload.
#[derive(Debug, Clone)]
pub struct Container<'a> {
    /// Its node in the pod spec.
    pub node: &'a Node,
    pub name: &'a str,
    pub image: &'a str,
}

/// Where an environment variable's value comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum EnvSource {
    /// Written in the pod spec (or a ConfigMap/Secret value that was found).
    Value(String),
    /// A reference whose ConfigMap/Secret or key does not exist.
    Dangling(String),
    /// A value only known at run time (fieldRef, resourceFieldRef).
    Runtime,
}

/// One resolved environment variable.
#[derive(Debug, Clone, PartialEq)]
pub struct EnvVarAt {
    /// The variable name.
    pub name: String,
    /// Its value or why it has none.
    pub source: EnvSource,
    /// The file where the value is written (a ConfigMap's file for references).
    pub file: String,
    /// The line there.
    pub line: usize,
}

impl EnvVarAt {
    /// The value, when it is known.
    pub fn value(&self) -> Option<&str> {
        match &self.source {
            EnvSource::Value(v) => Some(v),
            _ => None,
        }
    }
}

impl Manifests {
    /// Parses every `*.yaml`/`*.yml` file directly in `dir` (not its
    /// subdirectories, and not `kustomization.yaml`), or one file.
    pub fn load(path: &Path) -> Result<Self, String> {
        let mut files = Vec::new();
        if path.is_dir() {
            let entries =
                std::fs::read_dir(path).map_err(|e| format!("{}: {e}", path.display()))?;
            for entry in entries.flatten() {
                let p = entry.path();
                let name = p
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or_default()
                    .to_owned();
                let yaml = name.ends_with(".yaml") || name.ends_with(".yml");
                if p.is_file() && yaml && !name.starts_with("kustomization") {
                    files.push(p);
                }
            }
            files.sort();
        } else {
            files.push(path.to_path_buf());
        }
        let mut docs = Vec::new();
        for file in files {
            let text =
                std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
            docs.extend(parse(&file.display().to_string(), &text)?);
        }
        Ok(Self { docs })
    }

    /// Parses documents already in memory (live objects, tests).
    pub fn from_text(file: &str, text: &str) -> Result<Self, String> {
        Ok(Self {
            docs: parse(file, text)?,
        })
    }

    /// One document per live object, each named `Kind/name` where a file
    /// name would be: findings on live objects point at the object that
    /// holds the value to fix.
    pub fn from_objects<'a>(
        objects: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, String> {
        let mut docs = Vec::new();
        for (id, text) in objects {
            docs.extend(parse(id, text)?);
        }
        Ok(Self { docs })
    }

    /// Every object with a kind and a name.
    pub fn objects(&self) -> Vec<Object<'_>> {
        self.docs
            .iter()
            .filter_map(|doc| {
                let kind = doc.root.str_at(&["kind"])?;
                let name = doc.root.str_at(&["metadata", "name"])?;
                let namespace = doc
                    .root
                    .str_at(&["metadata", "namespace"])
                    .unwrap_or("default");
                Some(Object {
                    doc,
                    kind,
                    name,
                    namespace,
                })
            })
            .collect()
    }

    /// Objects of one kind.
    pub fn of_kind(&self, kind: &str) -> Vec<Object<'_>> {
        self.objects()
            .into_iter()
            .filter(|o| o.kind == kind)
            .collect()
    }

    /// The object `kind/name` in `namespace`.
    pub fn find(&self, kind: &str, name: &str, namespace: &str) -> Option<Object<'_>> {
        self.objects()
            .into_iter()
            .find(|o| o.kind == kind && o.name == name && o.namespace == namespace)
    }

    /// Objects that carry a pod template, with the template.
    pub fn workloads(&self) -> Vec<(Object<'_>, &Node)> {
        self.objects()
            .into_iter()
            .filter_map(|o| {
                if o.kind == "Pod" {
                    return Some((o, &o.doc.root));
                }
                if !WORKLOAD_KINDS.contains(&o.kind) {
                    return None;
                }
                o.doc.root.path(&["spec", "template"]).map(|t| (o, t))
            })
            .collect()
    }

    /// A ConfigMap's or Secret's value for `key`, with where it is written.
    fn lookup(
        &self,
        kind: &str,
        name: &str,
        key: &str,
        namespace: &str,
    ) -> Option<(String, String, usize)> {
        let obj = self.find(kind, name, namespace)?;
        for section in ["data", "stringData"] {
            if let Some(node) = obj.doc.root.path(&[section, key]) {
                let value = node.str().unwrap_or_default().to_owned();
                let value = if kind == "Secret" && section == "data" {
                    decode_base64(&value).unwrap_or(value)
                } else {
                    value
                };
                return Some((value, obj.doc.file.clone(), node.line));
            }
        }
        None
    }

    /// Every key a ConfigMap or Secret defines.
    fn keys(&self, kind: &str, name: &str, namespace: &str) -> Option<Vec<String>> {
        let obj = self.find(kind, name, namespace)?;
        let mut keys = Vec::new();
        for section in ["data", "stringData"] {
            if let Some(node) = obj.doc.root.get(section) {
                keys.extend(node.entries().iter().map(|(k, _)| k.clone()));
            }
        }
        Some(keys)
    }

    /// The environment of `container`, with references resolved. Later
    /// entries win over earlier ones, and `env` wins over `envFrom`, as in
    /// Kubernetes.
    pub fn environment(
        &self,
        obj: &Object<'_>,
        container: &Container<'_>,
    ) -> BTreeMap<String, EnvVarAt> {
        let mut env = BTreeMap::new();
        let file = obj.doc.file.clone();
        for from in container
            .node
            .get("envFrom")
            .map(Node::items)
            .unwrap_or_default()
        {
            for (kind, key) in [("ConfigMap", "configMapRef"), ("Secret", "secretRef")] {
                let Some(name) = from.str_at(&[key, "name"]) else {
                    continue;
                };
                let prefix = from.str_at(&["prefix"]).unwrap_or_default();
                match self.keys(kind, name, obj.namespace) {
                    Some(keys) => {
                        for k in keys {
                            if let Some((value, f, line)) =
                                self.lookup(kind, name, &k, obj.namespace)
                            {
                                let var = format!("{prefix}{k}");
                                env.insert(
                                    var.clone(),
                                    EnvVarAt {
                                        name: var,
                                        source: EnvSource::Value(value),
                                        file: f,
                                        line,
                                    },
                                );
                            }
                        }
                    }
                    None => {
                        let optional = from.str_at(&[key, "optional"]) == Some("true");
                        if !optional {
                            let var = format!("envFrom {kind} {name}");
                            env.insert(
                                var.clone(),
                                EnvVarAt {
                                    name: var,
                                    source: EnvSource::Dangling(format!(
                                        "{kind} {name} does not exist"
                                    )),
                                    file: file.clone(),
                                    line: from.line,
                                },
                            );
                        }
                    }
                }
            }
        }
        for entry in container
            .node
            .get("env")
            .map(Node::items)
            .unwrap_or_default()
        {
            let Some(name) = entry.str_at(&["name"]) else {
                continue;
            };
            let at = |source, file: String, line| EnvVarAt {
                name: name.to_owned(),
                source,
                file,
                line,
            };
            let resolved = if let Some(value) = entry.get("value") {
                at(
                    expand(value.str().unwrap_or_default(), &env),
                    file.clone(),
                    value.line,
                )
            } else if let Some(from) = entry.get("valueFrom") {
                let refs = [("ConfigMap", "configMapKeyRef"), ("Secret", "secretKeyRef")];
                match refs
                    .iter()
                    .find_map(|(kind, key)| from.get(key).map(|r| (*kind, r)))
                {
                    Some((kind, r)) => {
                        let ref_name = r.str_at(&["name"]).unwrap_or_default();
                        let key = r.str_at(&["key"]).unwrap_or_default();
                        let optional = r.str_at(&["optional"]) == Some("true");
                        match self.lookup(kind, ref_name, key, obj.namespace) {
                            Some((value, f, line)) => at(EnvSource::Value(value), f, line),
                            None if optional => continue,
                            None => {
                                // Point at the key when the object exists, else at its name.
                                let (why, line) =
                                    if self.find(kind, ref_name, obj.namespace).is_some() {
                                        (
                                            format!("{kind} {ref_name} has no key {key}"),
                                            r.line_of("key"),
                                        )
                                    } else {
                                        (
                                            format!("{kind} {ref_name} does not exist"),
                                            r.line_of("name"),
                                        )
                                    };
                                at(EnvSource::Dangling(why), file.clone(), line)
                            }
                        }
                    }
                    None => at(EnvSource::Runtime, file.clone(), from.line),
                }
            } else {
                at(EnvSource::Value(String::new()), file.clone(), entry.line)
            };
            env.insert(name.to_owned(), resolved);
        }
        env
    }
}

/// A `value` with its `$(VAR)` references expanded the way the kubelet
/// does: against the variables defined before it (`envFrom` and earlier
/// `env` entries); `$$` is a literal `$`, and a reference to an undefined
/// variable stays as written. A reference to a value only known at run time
/// makes the whole value run-time.
fn expand(value: &str, env: &BTreeMap<String, EnvVarAt>) -> EnvSource {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some((name, tail)) = after
            .strip_prefix('(')
            .and_then(|r| r.split_once(')'))
            .filter(|(name, _)| !name.is_empty())
        {
            match env.get(name).map(|v| &v.source) {
                Some(EnvSource::Value(v)) => out.push_str(v),
                Some(_) => return EnvSource::Runtime,
                None => {
                    out.push_str("$(");
                    out.push_str(name);
                    out.push(')');
                }
            }
            rest = tail;
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    EnvSource::Value(out)
}

/// The containers (not init containers) of a pod template.
pub fn containers(template: &Node) -> Vec<Container<'_>> {
    template
        .path(&["spec", "containers"])
        .map(Node::items)
        .unwrap_or_default()
        .iter()
        .map(|node| Container {
            node,
            name: node.str_at(&["name"]).unwrap_or_default(),
            image: node.str_at(&["image"]).unwrap_or_default(),
        })
        .collect()
}

/// `metadata.labels` of a template or object.
pub fn labels(node: &Node) -> BTreeMap<&str, &str> {
    node.path(&["metadata", "labels"])
        .map(Node::entries)
        .unwrap_or_default()
        .iter()
        .filter_map(|(k, v)| Some((k.as_str(), v.str()?)))
        .collect()
}

/// Splits an image into repository name (last path segment) and tag.
pub fn image_name_tag(image: &str) -> (&str, &str) {
    let without_digest = image.split('@').next().unwrap_or(image);
    let last = without_digest.rsplit('/').next().unwrap_or(without_digest);
    match last.split_once(':') {
        Some((name, tag)) => (name, tag),
        None => (last, "latest"),
    }
}

/// A Kubernetes memory quantity in bytes (`64Mi`, `1Gi`, `128M`, `1e6`).
pub fn memory_bytes(q: &str) -> Option<u64> {
    let q = q.trim();
    let units: [(&str, f64); 12] = [
        ("Ki", 1024.0),
        ("Mi", 1024.0 * 1024.0),
        ("Gi", 1024.0 * 1024.0 * 1024.0),
        ("Ti", 1024.0_f64.powi(4)),
        ("Pi", 1024.0_f64.powi(5)),
        ("Ei", 1024.0_f64.powi(6)),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
    ];
    for (suffix, factor) in units {
        if let Some(n) = q.strip_suffix(suffix) {
            return n.parse::<f64>().ok().map(|n| (n * factor) as u64);
        }
    }
    q.parse::<f64>().ok().map(|n| n as u64)
}

fn decode_base64(s: &str) -> Option<String> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut count = 0;
    let mut out = Vec::new();
    for c in s.bytes().filter(|c| !c.is_ascii_whitespace() && *c != b'=') {
        let v = u32::try_from(ALPHABET.iter().position(|a| *a == c)?).ok()?;
        bits = (bits << 6) | v;
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push(u8::try_from((bits >> count) & 0xff).ok()?);
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_and_images() {
        assert_eq!(memory_bytes("64Mi"), Some(64 * 1024 * 1024));
        assert_eq!(memory_bytes("1Gi"), Some(1024 * 1024 * 1024));
        assert_eq!(memory_bytes("128M"), Some(128_000_000));
        assert_eq!(
            image_name_tag("notification-service:v2.0"),
            ("notification-service", "v2.0")
        );
        assert_eq!(
            image_name_tag("docker.io/library/redis:7-alpine"),
            ("redis", "7-alpine")
        );
        assert_eq!(image_name_tag("gateway"), ("gateway", "latest"));
        assert_eq!(decode_base64("Y2xvdWRtYXJ0").as_deref(), Some("cloudmart"));
    }

    #[test]
    fn values_expand_earlier_variables_like_the_kubelet() {
        let var = |v: &str| EnvVarAt {
            name: String::new(),
            source: EnvSource::Value(v.to_owned()),
            file: String::new(),
            line: 0,
        };
        let env: BTreeMap<String, EnvVarAt> = [
            ("RATE".to_owned(), var("0.5")),
            (
                "NODE".to_owned(),
                EnvVarAt {
                    source: EnvSource::Runtime,
                    ..var("")
                },
            ),
        ]
        .into();
        let value = |s: &str| match expand(s, &env) {
            EnvSource::Value(v) => v,
            other => format!("{other:?}"),
        };
        assert_eq!(value("$(RATE)"), "0.5");
        assert_eq!(value("x-$(RATE)-y"), "x-0.5-y");
        assert_eq!(value("$$(RATE)"), "$(RATE)");
        assert_eq!(value("$(NOPE)"), "$(NOPE)");
        assert_eq!(value("$(RATE"), "$(RATE");
        assert_eq!(value("a$b$"), "a$b$");
        assert_eq!(value("$(NODE)"), "Runtime");
    }

    #[test]
    fn env_resolves_through_configmaps_and_reports_dangling_refs() {
        let m = Manifests::from_text(
            "t.yaml",
            "\
kind: ConfigMap
metadata: {name: cfg, namespace: p}
data:
  DATABASE_URL: http://database-service:8080
---
kind: Deployment
metadata: {name: order, namespace: p}
spec:
  template:
    metadata: {labels: {app: order}}
    spec:
      containers:
        - name: order
          image: order-service:latest
          envFrom:
            - configMapRef: {name: cfg}
          env:
            - name: A
              value: \"1\"
            - name: B
              valueFrom: {configMapKeyRef: {name: cfg, key: NOPE}}
",
        )
        .unwrap();
        let (obj, template) = m.workloads()[0];
        let c = &containers(template)[0];
        let env = m.environment(&obj, c);
        assert_eq!(
            env["DATABASE_URL"].value(),
            Some("http://database-service:8080")
        );
        assert_eq!(env["DATABASE_URL"].line, 4);
        assert_eq!(env["A"].value(), Some("1"));
        assert_eq!(
            env["B"].source,
            EnvSource::Dangling("ConfigMap cfg has no key NOPE".to_owned())
        );
    }
}
