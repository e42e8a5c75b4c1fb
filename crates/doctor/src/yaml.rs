//! YAML documents as trees that remember their line numbers.
//!
//! Findings must point a trainee at the exact line to fix, and serde-based
//! YAML loaders drop positions. This module builds its own small tree from
//! yaml-rust2's marked events. Every scalar stays a string: Kubernetes YAML
//! writes ports and numbers both quoted and bare, and the rules compare
//! values as text.

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// A YAML value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A scalar, as written (without quotes).
    Scalar(String),
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, keys in document order.
    Map(Vec<(String, Node)>),
    /// An empty value (`key:` with nothing, or `~`/`null`).
    Null,
}

/// A value and the 1-based line it starts on.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// The value.
    pub value: Value,
    /// Line in the source file.
    pub line: usize,
}

impl Node {
    /// The child under `key`, for mappings.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// Follows a path of mapping keys.
    pub fn path(&self, keys: &[&str]) -> Option<&Node> {
        keys.iter().try_fold(self, |node, key| node.get(key))
    }

    /// The scalar text, if this is a scalar.
    pub fn str(&self) -> Option<&str> {
        match &self.value {
            Value::Scalar(s) => Some(s),
            _ => None,
        }
    }

    /// The string at `keys`.
    pub fn str_at(&self, keys: &[&str]) -> Option<&str> {
        self.path(keys).and_then(Node::str)
    }

    /// Sequence items (empty for anything else).
    pub fn items(&self) -> &[Node] {
        match &self.value {
            Value::Seq(items) => items,
            _ => &[],
        }
    }

    /// Mapping entries (empty for anything else).
    pub fn entries(&self) -> &[(String, Node)] {
        match &self.value {
            Value::Map(entries) => entries,
            _ => &[],
        }
    }

    /// The line of the entry `key` in this mapping (the key's own line).
    pub fn line_of(&self, key: &str) -> usize {
        self.get(key).map_or(self.line, |n| n.line)
    }
}

/// One document of a multi-document file.
#[derive(Debug, Clone)]
pub struct Document {
    /// The file it came from.
    pub file: String,
    /// Its root node.
    pub root: Node,
}

enum Frame {
    Seq(Vec<Node>, usize),
    Map(Vec<(String, Node)>, Option<String>, usize),
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    docs: Vec<Node>,
}

impl Builder {
    fn push(&mut self, node: Node) {
        match self.stack.last_mut() {
            Some(Frame::Seq(items, _)) => items.push(node),
            Some(Frame::Map(entries, key, _)) => match key.take() {
                Some(k) => entries.push((k, node)),
                None => {
                    *key = Some(match node.value {
                        Value::Scalar(s) => s,
                        _ => String::new(),
                    });
                }
            },
            None => self.docs.push(node),
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let line = mark.line();
        match ev {
            Event::Scalar(s, style, _, _) => {
                let plain = matches!(style, yaml_rust2::scanner::TScalarStyle::Plain);
                let is_null = plain && matches!(s.as_str(), "" | "~" | "null" | "Null" | "NULL");
                let value = if is_null {
                    Value::Null
                } else {
                    Value::Scalar(s)
                };
                // A key waiting for its value is a scalar too; `push` decides.
                self.push(Node { value, line });
            }
            Event::SequenceStart(..) => self.stack.push(Frame::Seq(Vec::new(), line)),
            Event::MappingStart(..) => self.stack.push(Frame::Map(Vec::new(), None, line)),
            Event::SequenceEnd => {
                if let Some(Frame::Seq(items, start)) = self.stack.pop() {
                    self.push(Node {
                        value: Value::Seq(items),
                        line: start,
                    });
                }
            }
            Event::MappingEnd => {
                if let Some(Frame::Map(entries, _, start)) = self.stack.pop() {
                    self.push(Node {
                        value: Value::Map(entries),
                        line: start,
                    });
                }
            }
            Event::Alias(_) => self.push(Node {
                value: Value::Null,
                line,
            }),
            _ => {}
        }
    }
}

/// Parses every document in `text`; empty documents are skipped.
pub fn parse(file: &str, text: &str) -> Result<Vec<Document>, String> {
    let mut builder = Builder::default();
    Parser::new_from_str(text)
        .load(&mut builder, true)
        .map_err(|e| format!("{file}: {e}"))?;
    Ok(builder
        .docs
        .into_iter()
        .filter(|n| !matches!(n.value, Value::Null))
        .map(|root| Document {
            file: file.to_owned(),
            root,
        })
        .collect())
}

/// Keys of a mapping: keys are recorded with the line of their value's
/// start, so rules report the line where the key is written.
#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
apiVersion: v1
kind: Service
metadata:
  name: gateway
spec:
  selector:
    app: nginx-gateway
  ports:
    - port: 80
      targetPort: 8080
---
# comment only
---
kind: ConfigMap
data:
  DATABASE_URL: \"http://database:8080\"
  EMPTY:
";

    #[test]
    fn documents_keep_lines_and_values() {
        let docs = parse("x.yaml", TEXT).unwrap();
        assert_eq!(docs.len(), 2);
        let svc = &docs[0].root;
        assert_eq!(
            svc.str_at(&["spec", "selector", "app"]),
            Some("nginx-gateway")
        );
        assert_eq!(svc.path(&["spec", "selector", "app"]).unwrap().line, 7);
        let port = &svc.path(&["spec", "ports"]).unwrap().items()[0];
        assert_eq!(port.str_at(&["targetPort"]), Some("8080"));
        assert_eq!(port.get("targetPort").unwrap().line, 10);
        let cm = &docs[1].root;
        assert_eq!(
            cm.str_at(&["data", "DATABASE_URL"]),
            Some("http://database:8080")
        );
        assert_eq!(cm.path(&["data", "DATABASE_URL"]).unwrap().line, 16);
        assert_eq!(cm.path(&["data", "EMPTY"]).unwrap().value, Value::Null);
    }

    #[test]
    fn a_syntax_error_names_the_file() {
        let err = parse("bad.yaml", "a: [1, 2\nb: c").unwrap_err();
        assert!(err.starts_with("bad.yaml"), "{err}");
    }
}
