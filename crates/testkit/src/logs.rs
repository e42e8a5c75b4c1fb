//! One capture of every JSON log line written in a test binary, so tests can
//! assert on what the services logged (a trace id in every hop, a warning
//! naming Redis). `TEST_LOG=1` also echoes the lines to stdout.
//! [`logs_and_traces`] also exports the spans to an in-test OTLP collector.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use cloudmart_telemetry::TelemetryGuard;
use serde_json::Value;

use crate::otlp::{self, Collector};

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

/// What [`logs`] or [`logs_and_traces`] installed, once per test binary.
struct Capture {
    logs: Logs,
    traces: Option<&'static Collector>,
    _guard: Option<TelemetryGuard>,
}

static CAPTURE: OnceLock<Capture> = OnceLock::new();

/// The capture, installed as the process's subscriber on first use.
pub fn logs() -> Logs {
    capture(false).logs.clone()
}

/// The capture plus span export to the binary's [`otlp::global`]
/// collector, installed on first use.
///
/// The subscriber is installed once per process, so in a binary that uses
/// this, every test must call it before anything calls [`logs`]; otherwise
/// this panics saying so.
pub fn logs_and_traces() -> (Logs, &'static Collector) {
    let capture = capture(true);
    let traces = capture.traces.unwrap_or_else(|| {
        panic!(
            "the log capture was installed by logs(), without span export; \
             call logs_and_traces() first in every test of this binary"
        )
    });
    (capture.logs.clone(), traces)
}

fn capture(export: bool) -> &'static Capture {
    CAPTURE.get_or_init(|| {
        let logs = Logs::default();
        let echo = std::env::var("TEST_LOG").is_ok_and(|v| v == "1");
        let mut env = HashMap::from([("RUST_LOG".to_owned(), "info".to_owned())]);
        let traces = export.then(otlp::global);
        if let Some(collector) = traces {
            env.insert(
                cloudmart_telemetry::OTEL_EXPORTER_OTLP_ENDPOINT
                    .var
                    .name
                    .to_owned(),
                collector.endpoint().to_owned(),
            );
        }
        let sink_logs = logs.clone();
        let writer = move || Sink {
            logs: sink_logs.clone(),
            echo,
        };
        // The batch exporter runs on the runtime current at init; the
        // collector's outlives every test's, so export keeps working after
        // the test that happened to come first has ended.
        let guard = if export {
            let _entered = otlp::global_handle().enter();
            cloudmart_telemetry::init_with_writer("tests", &env, writer)
        } else {
            cloudmart_telemetry::init_with_writer("tests", &env, writer)
        }
        .ok();
        Capture {
            logs,
            traces,
            _guard: guard,
        }
    })
}
