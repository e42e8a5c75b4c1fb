//! What a run measured: every scheduled request as one latency sample and
//! one status, summed up as a [`Report`] for people (text) and for
//! scripts (JSON).
//!
//! Latency is counted from the moment a request was *meant* to be sent, so
//! a server that stalls shows as the latency every waiting user would have
//! seen, not as a gap in the samples. Nothing scheduled goes missing: a
//! timeout is recorded at the timeout, and a request the generator could
//! not send because too many were in flight is recorded at the timeout
//! too, the worst it could have been, and counted as `dropped`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::config::{LoadConfig, MAX_TIMEOUT};
use crate::profile::{Operation, Profile};

/// Histograms keep 3 significant digits: 0.1% error at any latency.
const SIGNIFICANT_DIGITS: u8 = 3;

/// How one scheduled request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Outcome {
    /// The server answered, with this status code.
    Status(u16),
    /// No full answer before the timeout.
    Timeout,
    /// The connection could not be opened.
    ConnectError,
    /// Anything else that broke the exchange.
    Error,
    /// Never sent: the in-flight cap was reached.
    Dropped,
}

impl Outcome {
    /// The name in the status table.
    fn key(self) -> String {
        match self {
            Self::Status(code) => code.to_string(),
            Self::Timeout => "timeout".to_owned(),
            Self::ConnectError => "connect_error".to_owned(),
            Self::Error => "error".to_owned(),
            Self::Dropped => "dropped".to_owned(),
        }
    }

    fn is_success(self) -> bool {
        matches!(self, Self::Status(200..=299))
    }
}

/// One scheduled request, as the collector receives it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sample {
    pub(crate) operation: Operation,
    pub(crate) outcome: Outcome,
    /// From the intended send time to the end of the response.
    pub(crate) latency: Duration,
    /// From the intended send time to the moment the request task started;
    /// `None` for a dropped request.
    pub(crate) send_lag: Option<Duration>,
}

/// A histogram of microseconds from 1 µs to 60 s.
fn new_histogram() -> Histogram<u64> {
    let high = u64::try_from(MAX_TIMEOUT.as_micros()).unwrap_or(u64::MAX);
    // The bounds are constants that satisfy every precondition
    // (1 <= low, high >= 2 * low, sigfig <= 5), and a unit test builds one.
    Histogram::new_with_bounds(1, high, SIGNIFICANT_DIGITS)
        .expect("constant histogram bounds are valid")
}

fn record(histogram: &mut Histogram<u64>, value: Duration) {
    let micros = u64::try_from(value.as_micros()).unwrap_or(u64::MAX);
    histogram.saturating_record(micros.max(1));
}

/// Samples of one operation.
#[derive(Debug, Clone)]
struct OperationRecorder {
    latency: Histogram<u64>,
    statuses: BTreeMap<Outcome, u64>,
}

/// Everything a run has measured so far.
#[derive(Debug, Clone)]
pub(crate) struct Recorder {
    latency: Histogram<u64>,
    send_lag: Histogram<u64>,
    statuses: BTreeMap<Outcome, u64>,
    operations: BTreeMap<Operation, OperationRecorder>,
    succeeded: u64,
    dropped: u64,
}

impl Recorder {
    pub(crate) fn new() -> Self {
        Self {
            latency: new_histogram(),
            send_lag: new_histogram(),
            statuses: BTreeMap::new(),
            operations: BTreeMap::new(),
            succeeded: 0,
            dropped: 0,
        }
    }

    pub(crate) fn record(&mut self, sample: Sample) {
        record(&mut self.latency, sample.latency);
        if let Some(lag) = sample.send_lag {
            record(&mut self.send_lag, lag);
        }
        *self.statuses.entry(sample.outcome).or_default() += 1;
        let operation =
            self.operations
                .entry(sample.operation)
                .or_insert_with(|| OperationRecorder {
                    latency: new_histogram(),
                    statuses: BTreeMap::new(),
                });
        record(&mut operation.latency, sample.latency);
        *operation.statuses.entry(sample.outcome).or_default() += 1;
        if sample.outcome.is_success() {
            self.succeeded += 1;
        }
        if sample.outcome == Outcome::Dropped {
            self.dropped += 1;
        }
    }

    /// Samples recorded, dropped requests included.
    pub(crate) fn samples(&self) -> u64 {
        self.latency.len()
    }

    /// Requests that were sent and have ended.
    pub(crate) fn completed(&self) -> u64 {
        self.samples() - self.dropped
    }

    pub(crate) fn succeeded(&self) -> u64 {
        self.succeeded
    }

    pub(crate) fn dropped(&self) -> u64 {
        self.dropped
    }

    /// The p99 so far, in milliseconds.
    pub(crate) fn p99_ms(&self) -> f64 {
        LatencySummary::of(&self.latency).p99
    }

    /// The final report. `elapsed` runs from the start to the last sample.
    pub(crate) fn into_report(self, config: &LoadConfig, elapsed: Duration, sent: u64) -> Report {
        let elapsed_secs = elapsed.as_secs_f64();
        let completed = self.completed();
        Report {
            base_url: config.base_url.clone(),
            profile: config.profile,
            requested_rate: config.rate_per_sec,
            achieved_rate: if elapsed_secs > 0.0 {
                completed as f64 / elapsed_secs
            } else {
                0.0
            },
            duration_secs: config.duration.as_secs_f64(),
            elapsed_secs,
            timeout_secs: config.timeout.as_secs_f64(),
            max_inflight: config.max_inflight,
            scheduled: self.samples(),
            sent,
            completed,
            dropped: self.dropped,
            statuses: status_table(&self.statuses),
            latency_ms: LatencySummary::of(&self.latency),
            operations: self
                .operations
                .iter()
                .map(|(op, rec)| {
                    let report = OperationReport {
                        latency_ms: LatencySummary::of(&rec.latency),
                        statuses: status_table(&rec.statuses),
                    };
                    (*op, report)
                })
                .collect(),
            send_lag_ms: LatencySummary::of(&self.send_lag),
        }
    }
}

fn status_table(statuses: &BTreeMap<Outcome, u64>) -> BTreeMap<String, u64> {
    statuses.iter().map(|(o, n)| (o.key(), *n)).collect()
}

/// Percentiles of one latency histogram, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct LatencySummary {
    /// Samples in the histogram.
    pub count: u64,
    /// 50th percentile.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p99_9: f64,
    /// Largest sample.
    pub max: f64,
    /// Arithmetic mean.
    pub mean: f64,
}

impl LatencySummary {
    fn of(histogram: &Histogram<u64>) -> Self {
        if histogram.is_empty() {
            return Self::default();
        }
        let ms = |micros: u64| micros as f64 / 1000.0;
        Self {
            count: histogram.len(),
            p50: ms(histogram.value_at_quantile(0.50)),
            p90: ms(histogram.value_at_quantile(0.90)),
            p99: ms(histogram.value_at_quantile(0.99)),
            p99_9: ms(histogram.value_at_quantile(0.999)),
            max: ms(histogram.max()),
            mean: histogram.mean() / 1000.0,
        }
    }
}

/// Latency and statuses of one operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OperationReport {
    /// Latency from the intended send time, dropped requests included.
    pub latency_ms: LatencySummary,
    /// Requests per status: a code such as `"200"`, or `"timeout"`,
    /// `"connect_error"`, `"error"`, `"dropped"`.
    pub statuses: BTreeMap<String, u64>,
}

/// The outcome of a load run.
///
/// Every scheduled request is exactly one latency sample:
/// `latency_ms.count == scheduled == completed + dropped`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Where the requests went.
    pub base_url: String,
    /// The traffic mix.
    pub profile: Profile,
    /// Requests per second the schedule asked for.
    pub requested_rate: f64,
    /// Completed requests per second of `elapsed_secs`.
    pub achieved_rate: f64,
    /// How long requests were scheduled, in seconds.
    pub duration_secs: f64,
    /// From the first intended send to the last answer, in seconds.
    pub elapsed_secs: f64,
    /// The per-request timeout, in seconds.
    pub timeout_secs: f64,
    /// The in-flight cap.
    pub max_inflight: usize,
    /// Requests in the schedule that came due.
    pub scheduled: u64,
    /// Requests actually sent.
    pub sent: u64,
    /// Requests sent that have ended, whatever the outcome.
    pub completed: u64,
    /// Requests not sent because the in-flight cap was reached.
    pub dropped: u64,
    /// Requests per status: a code such as `"200"`, or `"timeout"`,
    /// `"connect_error"`, `"error"`, `"dropped"`.
    pub statuses: BTreeMap<String, u64>,
    /// Latency of every scheduled request, from its intended send time.
    pub latency_ms: LatencySummary,
    /// The same, per operation.
    pub operations: BTreeMap<Operation, OperationReport>,
    /// How late the generator itself started each request. High values
    /// mean the client, not the server, is the bottleneck.
    pub send_lag_ms: LatencySummary,
}

impl Report {
    /// Share of scheduled requests answered with a 2xx, from 0 to 1.
    pub fn success_ratio(&self) -> f64 {
        if self.scheduled == 0 {
            return 0.0;
        }
        let ok: u64 = self
            .statuses
            .iter()
            .filter(|(status, _)| status.starts_with('2') && status.len() == 3)
            .map(|(_, n)| n)
            .sum();
        ok as f64 / self.scheduled as f64
    }

    /// The report as pretty-printed JSON, for `--json` and for comparing
    /// runs in scripts.
    pub fn to_json(&self) -> String {
        // String map keys, unit-variant enum keys and plain numbers only:
        // serialisation cannot fail (serde_json writes NaN as null).
        serde_json::to_string_pretty(self).expect("a Report always serialises to JSON")
    }

    /// The report for a terminal: the run, a percentile table and a
    /// status table.
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail; the results are ignored.
        // A run until stopped (`--duration-secs 0`) has a duration of years;
        // say so instead of printing the number.
        let planned = if self.duration_secs > 86_400.0 * 365.0 {
            "until stopped".to_owned()
        } else {
            format!("for {:.1}s", self.duration_secs)
        };
        let _ = writeln!(
            out,
            "profile {} against {}: {:.1}/s requested {planned}, {:.1}/s achieved over {:.2}s",
            self.profile, self.base_url, self.requested_rate, self.achieved_rate, self.elapsed_secs,
        );
        let _ = writeln!(
            out,
            "requests: {} scheduled, {} sent, {} completed, {} dropped; {:.2}% 2xx",
            self.scheduled,
            self.sent,
            self.completed,
            self.dropped,
            self.success_ratio() * 100.0,
        );
        if self.dropped > 0 {
            let _ = writeln!(
                out,
                "warning: {} requests were not sent because {} were already in flight \
                 (client saturated); each is recorded at the {:.1}s timeout",
                self.dropped, self.max_inflight, self.timeout_secs,
            );
        }

        let _ = writeln!(out, "\nlatency in ms, from the intended send time");
        let _ = writeln!(
            out,
            "{:<10} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "operation", "count", "p50", "p90", "p99", "p99.9", "max", "mean"
        );
        let rows = std::iter::once(("all", &self.latency_ms)).chain(
            self.operations
                .iter()
                .map(|(op, report)| (op.as_str(), &report.latency_ms)),
        );
        for (name, l) in rows {
            let _ = writeln!(
                out,
                "{name:<10} {:>8} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
                l.count, l.p50, l.p90, l.p99, l.p99_9, l.max, l.mean
            );
        }

        let _ = writeln!(out, "\n{:<14} {:>8} {:>8}", "status", "count", "share");
        for (status, count) in &self.statuses {
            let share = if self.scheduled == 0 {
                0.0
            } else {
                *count as f64 * 100.0 / self.scheduled as f64
            };
            let _ = writeln!(out, "{status:<14} {count:>8} {share:>7.2}%");
        }

        let lag = &self.send_lag_ms;
        let _ = writeln!(
            out,
            "\nclient send lag in ms: p50 {:.2}, p99 {:.2}, max {:.2} \
             (high values mean the generator, not the server, fell behind)",
            lag.p50, lag.p99, lag.max
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(operation: Operation, outcome: Outcome, millis: u64) -> Sample {
        Sample {
            operation,
            outcome,
            latency: Duration::from_millis(millis),
            send_lag: (outcome != Outcome::Dropped).then_some(Duration::from_micros(50)),
        }
    }

    fn report() -> Report {
        let mut rec = Recorder::new();
        for i in 0..100 {
            rec.record(sample(Operation::Order, Outcome::Status(201), 10 + i % 3));
        }
        rec.record(sample(Operation::Browse, Outcome::Status(500), 40));
        rec.record(sample(Operation::Login, Outcome::Timeout, 10_000));
        rec.record(sample(Operation::Order, Outcome::ConnectError, 1));
        rec.record(sample(Operation::Order, Outcome::Error, 2));
        rec.record(sample(Operation::Order, Outcome::Dropped, 10_000));
        let config = LoadConfig::new("http://gw:8080");
        rec.into_report(&config, Duration::from_secs(2), 104)
    }

    #[test]
    fn every_outcome_is_one_sample_and_one_status() {
        let r = report();
        assert_eq!(r.scheduled, 105);
        assert_eq!(r.latency_ms.count, 105);
        assert_eq!(r.completed, 104);
        assert_eq!(r.dropped, 1);
        let expected: BTreeMap<String, u64> = [
            ("201", 100),
            ("500", 1),
            ("timeout", 1),
            ("connect_error", 1),
            ("error", 1),
            ("dropped", 1),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        assert_eq!(r.statuses, expected);
        assert_eq!(r.operations[&Operation::Order].latency_ms.count, 103);
        assert_eq!(r.operations[&Operation::Order].statuses["dropped"], 1);
        assert_eq!(r.operations[&Operation::Browse].statuses["500"], 1);
        assert!((r.achieved_rate - 52.0).abs() < 1e-9);
    }

    #[test]
    fn success_ratio_counts_only_2xx_against_everything_scheduled() {
        let r = report();
        assert!((r.success_ratio() - 100.0 / 105.0).abs() < 1e-9);
    }

    #[test]
    fn percentiles_are_in_milliseconds_within_a_tenth_of_a_percent() {
        let mut rec = Recorder::new();
        for i in 1..=1000 {
            rec.record(sample(Operation::Order, Outcome::Status(200), i));
        }
        let l = LatencySummary::of(&rec.latency);
        let near = |got: f64, want: f64| (got - want).abs() <= want * 0.001 + 0.001;
        assert!(near(l.p50, 500.0), "{l:?}");
        assert!(near(l.p90, 900.0), "{l:?}");
        assert!(near(l.p99, 990.0), "{l:?}");
        assert!(near(l.p99_9, 999.0), "{l:?}");
        assert!(near(l.max, 1000.0), "{l:?}");
        assert!(near(l.mean, 500.5), "{l:?}");
    }

    #[test]
    fn latencies_beyond_the_histogram_are_clamped_not_lost() {
        let mut rec = Recorder::new();
        rec.record(sample(Operation::Order, Outcome::Status(200), 3_600_000));
        rec.record(sample(Operation::Order, Outcome::Status(200), 0));
        assert_eq!(rec.samples(), 2);
    }

    #[test]
    fn an_empty_report_has_zeros_not_garbage() {
        let r = Recorder::new().into_report(&LoadConfig::new("http://gw"), Duration::ZERO, 0);
        assert_eq!(r.latency_ms, LatencySummary::default());
        assert_eq!(r.success_ratio(), 0.0);
        assert_eq!(r.achieved_rate, 0.0);
    }

    #[test]
    fn json_round_trips_and_uses_plain_names() {
        let r = report();
        let json = r.to_json();
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["profile"], "orders");
        assert_eq!(value["statuses"]["timeout"], 1);
        assert_eq!(value["operations"]["order"]["statuses"]["201"], 100);
        assert!(value["latency_ms"]["p99_9"].is_number());
        let back: Report = serde_json::from_str(&json).unwrap();
        assert_eq!(back.statuses, r.statuses);
        assert_eq!(back.latency_ms.count, r.latency_ms.count);
        assert_eq!(back.operations.len(), 3);
    }

    #[test]
    fn text_has_a_percentile_row_per_operation_and_a_status_row_per_status() {
        let text = report().render_text();
        for needle in ["p99.9", "\nall ", "\norder ", "\nbrowse ", "\nlogin "] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
        for status in ["201", "500", "timeout", "connect_error", "error", "dropped"] {
            assert!(
                text.lines().any(|l| l.starts_with(&format!("{status} "))),
                "missing status {status} in\n{text}"
            );
        }
        assert!(text.contains("1 requests were not sent"), "{text}");
    }
}
