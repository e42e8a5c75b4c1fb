//! Rate-limited warnings about a collector that cannot be reached.

use std::io::{self};
use std::sync::Mutex;
use std::time::Duration;

use crate::{MAX_QUEUED_SPANS, WARN_INTERVAL};

/// Export failures and drops since the last warning, and when that was.
#[derive(Debug, Default)]
pub(crate) struct Warnings {
    pub(crate) state: Mutex<WarnState>,
}

#[derive(Debug, Default)]
pub(crate) struct WarnState {
    pub(crate) last: Option<tokio::time::Instant>,
    pub(crate) failed_batches: u64,
    pub(crate) lost: u64,
    pub(crate) dropped_reported: u64,
    pub(crate) failing: bool,
}

/// What one export's outcome calls for.
#[derive(Debug, PartialEq)]
pub(crate) enum Report {
    /// Nothing new, or the last warning is too recent.
    Quiet,
    /// Warn now about what went wrong since the last warning.
    Warn {
        cause: Option<String>,
        batches: u64,
        lost: u64,
        dropped: u64,
    },
    /// Export works again after a warning.
    Recovered { lost: u64 },
}

impl Warnings {
    /// Records one export's outcome; says to warn when there is news and
    /// the last warning is at least [`WARN_INTERVAL`] old, and once when
    /// export works again after a warning.
    pub(crate) fn report(
        &self,
        cause: Option<String>,
        lost: usize,
        dropped_total: u64,
        now: tokio::time::Instant,
    ) -> Report {
        let mut st = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let dropped = dropped_total.saturating_sub(st.dropped_reported);
        if cause.is_some() {
            st.failed_batches += 1;
            st.lost += u64::try_from(lost).unwrap_or(u64::MAX);
        } else if st.failing && dropped == 0 {
            let lost = st.lost;
            st.failing = false;
            st.failed_batches = 0;
            st.lost = 0;
            return Report::Recovered { lost };
        }
        if st.failed_batches == 0 && dropped == 0 {
            return Report::Quiet;
        }
        if st
            .last
            .is_some_and(|t| now.duration_since(t) < WARN_INTERVAL)
        {
            return Report::Quiet;
        }
        let report = Report::Warn {
            cause,
            batches: st.failed_batches,
            lost: st.lost,
            dropped,
        };
        st.last = Some(now);
        st.failed_batches = 0;
        st.lost = 0;
        st.dropped_reported += dropped;
        st.failing = true;
        report
    }
}

/// Longest wait for each step of [`probe`].
pub(crate) const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Why the collector at `endpoint` cannot be reached, in the words a
/// trainee greps for ("dns error", "connection refused", "timeout"), by
/// trying what the exporter tried; `None` when a connection opens.
///
/// The OTLP exporter only says "network error"; this runs at most once per
/// warning.
pub(crate) async fn probe(endpoint: &str) -> Option<String> {
    let url = reqwest::Url::parse(endpoint).ok()?;
    let host = url.host_str()?.to_owned();
    let port = url.port_or_known_default()?;
    let lookup = tokio::net::lookup_host((host.as_str(), port));
    let addr = match tokio::time::timeout(PROBE_TIMEOUT, lookup).await {
        Err(_) => return Some(format!("dns error: no answer for {host} in time")),
        Ok(Err(e)) => return Some(format!("dns error: cannot resolve {host}: {e}")),
        Ok(Ok(mut addrs)) => addrs.next()?,
    };
    match tokio::time::timeout(PROBE_TIMEOUT, tokio::net::TcpStream::connect(addr)).await {
        Err(_) => Some(format!("timeout connecting to {addr}")),
        Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
            Some("connection refused".to_owned())
        }
        Ok(Err(e)) => Some(format!("cannot connect to {addr}: {e}")),
        Ok(Ok(_)) => None,
    }
}

/// Logs what [`Warnings::report`] asked for.
pub(crate) async fn announce(endpoint: &str, report: Report, probing: bool) {
    match report {
        Report::Quiet => {}
        Report::Recovered { lost } => tracing::info!(
            otel.endpoint = endpoint,
            spans_lost = lost,
            "exporting spans to {endpoint} works again; {lost} span(s) were lost since the last warning"
        ),
        Report::Warn {
            cause,
            batches,
            lost,
            dropped,
        } => {
            let why = match cause {
                None => "the collector is too slow".to_owned(),
                Some(c) => {
                    let seen = if probing { probe(endpoint).await } else { None };
                    match seen {
                        Some(seen) => format!("{seen} ({c})"),
                        None => format!("{c} (is the collector at {endpoint} up?)"),
                    }
                }
            };
            let mut losses = Vec::new();
            if batches > 0 {
                losses.push(format!("{lost} span(s) lost in {batches} failed export(s)"));
            }
            if dropped > 0 {
                losses.push(format!(
                    "{dropped} span(s) dropped because the queue of {MAX_QUEUED_SPANS} was full"
                ));
            }
            tracing::warn!(
                otel.endpoint = endpoint,
                spans_lost = lost,
                spans_dropped = dropped,
                failed_exports = batches,
                "cannot export spans to {endpoint}: {why}; {} since the last warning; \
                 requests are not affected; the next warning comes in {} s at the earliest",
                losses.join(" and "),
                WARN_INTERVAL.as_secs()
            );
        }
    }
}
