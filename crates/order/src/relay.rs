//! The relay: announces orders whose notification is still `pending`.
//!
//! An order is stored before it is announced, so a broker outage, a
//! notification-service outage or a crash between the two leaves it
//! `pending`. Every `RELAY_INTERVAL_MS` the relay asks database-service for
//! the oldest pending orders (`RELAY_BATCH` of them), skips those younger
//! than `RELAY_MIN_AGE_MS` (the request path is still on them), and
//! announces the rest: in AMQP mode it publishes the whole batch and then
//! awaits the confirms (pipelined), in HTTP mode it posts each to
//! notification-service. Each announced order is then marked `published`
//! (or `notified`). A pass that found a full batch starts the next one at
//! once, so a backlog drains without waiting for the interval; a pass that
//! got nothing through (database-service or notification-service down)
//! backs off, doubling up to 30 s, and tries one order before the rest, so
//! an outage is a few log lines rather than one per pending order.
//!
//! A notification can be announced twice (the request path and the relay
//! racing, or a confirm lost with its connection, or a mark that failed);
//! notification-service delivers once per order, so customers hear once.

use std::time::{Duration, Instant};

use cloudmart_http::client::{Downstream, Retry};
use cloudmart_model::{NotificationState, NotifyReceipt, Order, OrderCreated};
use cloudmart_retry::{Backoff, Jitter};
use futures::StreamExt;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use reqwest::Method;
use tokio::sync::watch;
use tracing::Instrument;

use crate::{NAME, Notifier, mark};

/// How many database or notification calls the relay makes at once; well
/// under database-service's default in-flight limit of 64.
const CONCURRENCY: usize = 16;
/// Longest pause after passes that got nothing through (a dependency down).
const MAX_FAILURE_DELAY: Duration = Duration::from_secs(30);

/// What the relay needs.
#[derive(Clone)]
pub(crate) struct Relay {
    pub(crate) database: Downstream,
    pub(crate) notifier: Notifier,
    pub(crate) interval: Duration,
    pub(crate) min_age: Duration,
    pub(crate) batch: usize,
    pub(crate) relayed: Counter,
    pub(crate) pending: Gauge,
}

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Pass {
    announced: usize,
    failed: usize,
    /// A full batch went out cleanly, so more may be waiting.
    more: bool,
}

impl Relay {
    /// Runs passes until `stop` fires.
    pub(crate) async fn run(self, mut stop: watch::Receiver<bool>) {
        let failure_backoff = Backoff::try_new(
            self.interval.max(Duration::from_millis(1)),
            MAX_FAILURE_DELAY.max(self.interval),
            1,
            Jitter::None,
        )
        .unwrap_or_default();
        let mut failures = 0u32;
        let mut wait = self.interval;
        loop {
            tokio::select! {
                () = cloudmart_run::stopped(&mut stop) => return,
                () = tokio::time::sleep(wait) => {}
            }
            // Looking for pending work is not exported: an idle relay would
            // otherwise add a trace every interval. A pass that announces
            // something starts a trace of its own (see `pass`).
            let span = tracing::info_span!(parent: None, "relay.poll", service = NAME);
            cloudmart_telemetry::begin_untraced(&span, NAME);
            match self.pass().instrument(span).await {
                Ok(pass) => {
                    failures = 0;
                    wait = if pass.more {
                        Duration::ZERO
                    } else {
                        self.interval
                    };
                }
                Err(()) => {
                    failures = failures.saturating_add(1);
                    wait = failure_backoff.cap(failures);
                }
            }
        }
    }

    /// One pass; `Err` when database-service could not be asked or nothing
    /// due could be announced (the caller backs off).
    async fn pass(&self) -> Result<Pass, ()> {
        let path = format!("/notifications/pending?limit={}", self.batch);
        let pending: Vec<Order> = match self
            .database
            .call(Method::GET, &path, Retry::Safe, |r| r)
            .await
        {
            Ok((_, pending)) => pending,
            Err(e) => {
                tracing::warn!(error = %e.message, "relay: cannot list pending notifications: {}", e.message);
                return Err(());
            }
        };
        self.pending
            .set(i64::try_from(pending.len()).unwrap_or(i64::MAX));
        let cutoff = now_ms().saturating_sub(u64::try_from(self.min_age.as_millis()).unwrap_or(0));
        let listed = pending.len();
        // Oldest first: once one is too young, so are the rest.
        let due: Vec<Order> = pending
            .into_iter()
            .take_while(|o| parse_rfc3339_ms(&o.created_at).is_none_or(|t| t <= cutoff))
            .collect();
        if due.is_empty() {
            return Ok(Pass::default());
        }
        let announce = tracing::info_span!(parent: None, "relay", service = NAME, due = due.len());
        cloudmart_telemetry::begin_trace(&announce, NAME);
        self.announce(due, listed).instrument(announce).await
    }

    /// Announces `due` (of `listed` pending) and records what came of it.
    async fn announce(&self, due: Vec<Order>, listed: usize) -> Result<Pass, ()> {
        let started = Instant::now();
        let mut publish_ms = 0;
        let (announced, failed, first_error) = match &self.notifier {
            Notifier::Amqp(publisher) => {
                if !publisher.is_connected() {
                    tracing::debug!(
                        pending = listed,
                        "relay: RabbitMQ is not connected; {listed} notification(s) stay pending"
                    );
                    return Ok(Pass::default());
                }
                let results = publisher.publish(&due).await;
                publish_ms = started.elapsed().as_millis();
                let first_error = results
                    .iter()
                    .find_map(|r| r.as_ref().err())
                    .map(ToString::to_string);
                let published: Vec<String> = due
                    .iter()
                    .zip(&results)
                    .filter(|(_, r)| r.is_ok())
                    .map(|(o, _)| o.id.clone())
                    .collect();
                let (marked, mark_error) = in_chunks(published, |id| {
                    let database = self.database.clone();
                    async move {
                        mark(&database, &id, NotificationState::Published)
                            .await
                            .map_err(|e| e.message)
                    }
                })
                .await;
                (marked, due.len() - marked, first_error.or(mark_error))
            }
            Notifier::Http(notification) => {
                let (ok, first_error) = in_chunks(due.clone(), |order| {
                    let notification = notification.clone();
                    let database = self.database.clone();
                    async move {
                        let body = OrderCreated::from(&order);
                        notification
                            .call::<NotifyReceipt, _>(Method::POST, "/notify", Retry::Keyed, |r| {
                                r.json(&body)
                            })
                            .await
                            .map_err(|e| e.message)?;
                        mark(&database, &order.id, NotificationState::Notified)
                            .await
                            .map_err(|e| e.message)
                    }
                })
                .await;
                (ok, due.len() - ok, first_error)
            }
        };
        self.relayed
            .inc_by(u64::try_from(announced).unwrap_or(u64::MAX));
        let ms = started.elapsed().as_millis();
        if failed == 0 {
            tracing::info!(
                relayed = announced,
                duration_ms = u64::try_from(ms).unwrap_or(u64::MAX),
                publish_ms = u64::try_from(publish_ms).unwrap_or(u64::MAX),
                "relay announced {announced} pending notification(s) in {ms} ms"
            );
        } else {
            let why = first_error.unwrap_or_default();
            tracing::warn!(
                relayed = announced,
                failed,
                error = %why,
                "relay announced {announced} pending notification(s); {failed} stay pending: {why}"
            );
        }
        if announced == 0 {
            // Nothing got through: back off instead of hammering a
            // dependency that is down.
            return Err(());
        }
        Ok(Pass {
            announced,
            failed,
            more: listed == self.batch && due.len() == listed && failed == 0,
        })
    }
}

/// Runs `op` on every item: the first alone, as a probe, then up to
/// [`CONCURRENCY`] at once, starting no new one after a failure. A
/// dependency that is down then costs one error line per pass, not one per
/// order. Returns how many succeeded and the first error.
async fn in_chunks<T, F, Fut>(items: Vec<T>, op: F) -> (usize, Option<String>)
where
    F: Fn(T) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let mut items = items.into_iter();
    let Some(first) = items.next() else {
        return (0, None);
    };
    if let Err(e) = op(first).await {
        return (0, Some(e));
    }
    let mut ok = 1;
    let mut rest = futures::stream::iter(items)
        .map(&op)
        .buffer_unordered(CONCURRENCY);
    while let Some(result) = rest.next().await {
        match result {
            Ok(()) => ok += 1,
            // Dropping the stream abandons the calls in flight; whatever
            // they did not finish stays pending for the next pass.
            Err(e) => return (ok, Some(e)),
        }
    }
    (ok, None)
}

/// Milliseconds since the Unix epoch.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or_default()
}

/// Parses the stores' `YYYY-MM-DDTHH:MM:SS[.fff]Z` into epoch milliseconds.
fn parse_rfc3339_ms(s: &str) -> Option<u64> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (year, month, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.splitn(3, ':').map(|p| p.parse::<u64>().ok());
    let (h, m, sec) = (t.next()??, t.next()??, t.next()??);
    let millis: u64 = format!("{frac:0<3}").get(..3)?.parse().ok()?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || h > 23 || m > 59 || sec > 60 {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = u64::try_from(era * 146_097 + doe - 719_468).ok()?;
    Some(((days * 86_400 + h * 3600 + m * 60 + sec) * 1000) + millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_stores_timestamps() {
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00.000Z"), Some(0));
        assert_eq!(
            parse_rfc3339_ms("2000-02-29T00:00:00.005Z"),
            Some(951_782_400_005)
        );
        assert_eq!(
            parse_rfc3339_ms("2026-11-18T11:06:40.999Z"),
            Some(1_795_000_000_999)
        );
        assert_eq!(
            parse_rfc3339_ms("2026-11-18T11:06:40Z"),
            Some(1_795_000_000_000)
        );
        assert_eq!(parse_rfc3339_ms("2026-11-18 11:06:40"), None);
        assert_eq!(parse_rfc3339_ms("2026-13-18T11:06:40Z"), None);
    }

    /// Runs `in_chunks` over 0..n with `fails` failing; (ok, error, calls).
    async fn chunked(n: usize, fails: &[usize]) -> (usize, Option<String>, usize) {
        let calls = std::sync::atomic::AtomicUsize::new(0);
        let (ok, error) = in_chunks((0..n).collect(), |i| {
            calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let fail = fails.contains(&i);
            async move {
                if fail {
                    Err(format!("order {i} failed"))
                } else {
                    Ok(())
                }
            }
        })
        .await;
        (ok, error, calls.into_inner())
    }

    #[tokio::test]
    async fn a_dependency_that_is_down_costs_one_call_per_pass() {
        assert_eq!(chunked(40, &[]).await, (40, None, 40));
        assert_eq!(
            chunked(40, &[0]).await,
            (0, Some("order 0 failed".to_owned()), 1)
        );
        // The probe passes; once order 3 fails no new call starts, and the
        // rest of the batch is left for the next pass.
        let (ok, error, calls) = chunked(40, &[3]).await;
        assert_eq!(error.as_deref(), Some("order 3 failed"));
        assert!(ok < 40 && calls < 40, "{ok} ok, {calls} calls");
    }

    #[test]
    fn parsing_round_trips_the_current_time() {
        let now = cloudmart_model::now_rfc3339();
        let ms = parse_rfc3339_ms(&now).unwrap();
        assert!(now_ms().abs_diff(ms) < 5_000, "{now} -> {ms}");
    }
}
