//! What a log line looks like: one JSON object for machines (containers,
//! pipes, files, log shippers) or one line of text for a person at a
//! terminal. Both carry the same fields, the trace id included, so a
//! `traceparent` copied from a response finds its lines either way.

use std::fmt::Write as _;

use serde_json::{Map, Value};

use cloudmart_config::{EnvVar, Setting};

pub const LOG_FORMAT: Setting<LogFormat> = Setting::with(
    EnvVar::optional(
        "LOG_FORMAT",
        "json or text",
        "Log line format, json or text; unset means text on a terminal and JSON anywhere else (containers, pipes, files)",
    ),
    LogFormat::parse,
);

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line: what containers, `kubectl logs` and
    /// log shippers get.
    Json,
    /// `13:32:24.123  INFO api-service: message  field=value trace_id=…`,
    /// for reading at a terminal.
    Text,
}

impl LogFormat {
    /// The format for a `LOG_FORMAT` of `value` (`None` or blank: unset)
    /// when the logs go to a terminal or not.
    ///
    /// A set variable always wins, so `LOG_FORMAT=json` gives JSON on a
    /// terminal too. Unset, a terminal gets text and everything else JSON:
    /// a container's stdout is no terminal, so images log JSON without
    /// being told to.
    pub fn choose(value: Option<&str>, is_terminal: bool) -> Result<Self, String> {
        match value.map(str::trim).filter(|v| !v.is_empty()) {
            None => Ok(Self::when_unset(is_terminal)),
            Some(v) => Self::parse(v).map_err(|_| {
                format!(
                    "invalid configuration: {}={v:?} is invalid (expected {})",
                    LOG_FORMAT.var.name, LOG_FORMAT.var.expected
                )
            }),
        }
    }

    /// The format when `LOG_FORMAT` is unset.
    pub fn when_unset(is_terminal: bool) -> Self {
        if is_terminal { Self::Text } else { Self::Json }
    }

    /// A set `LOG_FORMAT`: `json` or `text`, in any case.
    fn parse(value: &str) -> Result<Self, String> {
        if value.eq_ignore_ascii_case("json") {
            Ok(Self::Json)
        } else if value.eq_ignore_ascii_case("text") {
            Ok(Self::Text)
        } else {
            Err(String::new())
        }
    }

    /// `line` (the fields of one event, in order) as one line without the
    /// newline.
    pub(super) fn render(self, line: &Map<String, Value>) -> Result<String, std::fmt::Error> {
        match self {
            Self::Json => serde_json::to_string(line).map_err(|_| std::fmt::Error),
            Self::Text => Ok(text(line)),
        }
    }
}

/// Fields the text line shows in fixed places, or leaves out as noise for
/// a reader (`target`, `span`, `span_id` stay in the JSON).
const PLACED: [&str; 8] = [
    "timestamp",
    "level",
    "service",
    "message",
    "target",
    "span",
    "span_id",
    "trace_id",
];

/// Time, level, service and message first; then the event's own fields;
/// the trace id last, where the eye finds it.
fn text(line: &Map<String, Value>) -> String {
    let field = |k: &str| line.get(k).and_then(Value::as_str).unwrap_or_default();
    let mut out = format!(
        "{} {:>5} {}: {}",
        clock(field("timestamp")),
        field("level"),
        field("service"),
        field("message")
    );
    let mut extra = line
        .iter()
        .filter(|(k, _)| !PLACED.contains(&k.as_str()))
        .peekable();
    if extra.peek().is_some() {
        out.push(' ');
    }
    for (k, v) in extra {
        let _ = write!(out, " {k}={}", value(v));
    }
    if let Some(id) = line.get("trace_id").and_then(Value::as_str) {
        let _ = write!(out, "  trace_id={id}");
    }
    out
}

/// `HH:MM:SS.mmm` of an RFC 3339 timestamp (the date is noise at a
/// terminal); anything else as it is.
fn clock(timestamp: &str) -> &str {
    timestamp
        .split_once('T')
        .and_then(|(_, time)| time.get(..12))
        .unwrap_or(timestamp)
}

/// A field's value, quoted only when it would not read as one word.
fn value(v: &Value) -> String {
    match v {
        Value::String(s)
            if !s.is_empty()
                && !s.contains(|c: char| c.is_whitespace() || c == '"' || c == '=') =>
        {
            s.clone()
        }
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_log_format_wins_and_unset_follows_the_terminal() {
        use LogFormat::{Json, Text};
        // Unset (or blank): text on a terminal, JSON anywhere else.
        assert_eq!(LogFormat::choose(None, true), Ok(Text));
        assert_eq!(LogFormat::choose(None, false), Ok(Json));
        assert_eq!(LogFormat::choose(Some("  "), true), Ok(Text));
        assert_eq!(LogFormat::choose(Some(""), false), Ok(Json));
        // Set: obeyed whatever the output is.
        assert_eq!(LogFormat::choose(Some("json"), true), Ok(Json));
        assert_eq!(LogFormat::choose(Some("json"), false), Ok(Json));
        assert_eq!(LogFormat::choose(Some("text"), false), Ok(Text));
        assert_eq!(LogFormat::choose(Some(" TEXT "), true), Ok(Text));
        assert_eq!(LogFormat::choose(Some("Json"), true), Ok(Json));
        // Anything else names the variable, the value and what is allowed.
        let err = LogFormat::choose(Some("pretty"), true).unwrap_err();
        assert_eq!(
            err,
            "invalid configuration: LOG_FORMAT=\"pretty\" is invalid (expected json or text)"
        );
    }

    #[test]
    fn a_text_line_reads_left_to_right_and_ends_with_the_trace_id() {
        let line = serde_json::json!({
            "timestamp": "2026-12-02T13:32:24.123456Z",
            "level": "INFO",
            "service": "api-service",
            "target": "cloudmart_api",
            "message": "order 01a1 placed by alice",
            "order_id": "01a1",
            "customer": "alice",
            "attempt": 2,
            "error": "connection refused",
            "span": "POST /api/orders",
            "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
            "span_id": "00f067aa0ba902b7",
        });
        let line = line.as_object().unwrap();

        let text = LogFormat::Text.render(line).unwrap();

        assert_eq!(
            text,
            "13:32:24.123  INFO api-service: order 01a1 placed by alice  \
             order_id=01a1 customer=alice attempt=2 error=\"connection refused\"  \
             trace_id=4bf92f3577b34da6a3ce929d0e0e4736"
        );
    }

    #[test]
    fn a_line_outside_any_request_has_no_trace_id_and_json_keeps_every_field() {
        let line = serde_json::json!({
            "timestamp": "2026-12-02T13:32:24.123456Z",
            "level": "WARN",
            "service": "cloudmart",
            "message": "starting",
        });
        let line = line.as_object().unwrap();

        assert_eq!(
            LogFormat::Text.render(line).unwrap(),
            "13:32:24.123  WARN cloudmart: starting"
        );
        let json: Value = serde_json::from_str(&LogFormat::Json.render(line).unwrap()).unwrap();
        assert_eq!(&json, &Value::Object(line.clone()));
    }
}
