//! One capture of every JSON log line written in a test binary, so tests can
//! assert on what the services logged (a trace id in every hop, a warning
//! naming Redis). `TEST_LOG=1` also echoes the lines to stdout.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use cloudmart_common::telemetry::{self, TelemetryGuard};
use serde_json::Value;

/// Every log line written by any service in this test binary.
#[derive(Clone, Default)]
pub struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    /// Every parsed JSON log line so far.
    pub fn lines(&self) -> Vec<Value> {
        self.lines_with("")
    }

    /// Parsed lines whose raw text contains `needle` (cheap to filter
    /// first: the capture holds every line of every test in the binary).
    pub fn lines_with(&self, needle: &str) -> Vec<Value> {
        let bytes = self.0.lock().map(|b| b.clone()).unwrap_or_default();
        String::from_utf8_lossy(&bytes)
            .lines()
            .filter(|l| l.contains(needle))
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The lines of one request, found by the trace id of its `traceparent`.
    pub fn of_trace(&self, traceparent: &str) -> Vec<Value> {
        let trace_id = traceparent
            .split('-')
            .nth(1)
            .unwrap_or(traceparent)
            .to_owned();
        self.lines_with(&trace_id)
            .into_iter()
            .filter(|l| l["trace_id"] == trace_id.as_str())
            .collect()
    }
}

struct Sink {
    logs: Logs,
    echo: bool,
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut b) = self.logs.0.lock() {
            b.extend_from_slice(buf);
        }
        if self.echo {
            std::io::stdout().write_all(buf)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The capture, installed as the process's subscriber on first use.
pub fn logs() -> Logs {
    static LOGS: OnceLock<(Logs, Option<TelemetryGuard>)> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Logs::default();
        let echo = std::env::var("TEST_LOG").is_ok_and(|v| v == "1");
        let env = HashMap::from([("RUST_LOG".to_owned(), "info".to_owned())]);
        let sink_logs = logs.clone();
        let guard = telemetry::init_with_writer("tests", &env, move || Sink {
            logs: sink_logs.clone(),
            echo,
        })
        .ok();
        (logs, guard)
    })
    .0
    .clone()
}
