//! The open loop: a schedule that fires requests at fixed times whatever
//! the server does, and a collector that records how each one ended.
//!
//! Request `n` is due at `start + n / rate`. The scheduler sleeps until
//! then and spawns it as its own task, so a slow answer never delays the
//! next request (a closed loop would wait, and so hide the stall: the
//! "coordinated omission" of wrk and ab). If the scheduler wakes late, the
//! overdue requests go out at once and still count from their due time.
//!
//! The scheduler and the collector run in one task with `join!`; request
//! tasks report through a channel, and the run ends when the schedule is
//! done and the last request task has dropped its sender. Every request
//! task ends by its deadline (`due + timeout`), so that wait is bounded.

use std::future::Future;
use std::io::Write as _;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use reqwest::{Client, RequestBuilder};
use tokio::sync::{Semaphore, mpsc};
use tokio::time::{Instant, MissedTickBehavior};

use crate::config::{LoadConfig, LoadError};
use crate::profile::Endpoints;
use crate::report::{Outcome, Recorder, Report, Sample};

/// How often the progress line is redrawn.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// Runs the load described by `config` to the end and reports on it.
///
/// Must be called inside a tokio runtime. Fails only before the first
/// request, on a bad config or a client that cannot be built; what the
/// server does is in the [`Report`].
pub async fn run(config: &LoadConfig) -> Result<Report, LoadError> {
    run_until(config, std::future::pending()).await
}

/// Like [`run`], but stops scheduling when `stop` completes (e.g. on
/// ctrl-c) and still reports on everything scheduled until then, after
/// waiting for the requests in flight.
pub async fn run_until(
    config: &LoadConfig,
    stop: impl Future<Output = ()>,
) -> Result<Report, LoadError> {
    let mut endpoints = config.endpoints()?;
    let client = Client::builder()
        .connect_timeout(config.timeout)
        .pool_max_idle_per_host(config.max_inflight)
        .user_agent(concat!("cloudmart-load/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(LoadError::Client)?;
    // Listing orders needs a login: the browse share lists one customer's.
    if config.profile.browses()
        && let Err(why) = endpoints.sign_in(&client, config.timeout).await
        && config.progress
    {
        eprintln!("cloudmart load: {why}; every browse will answer 401");
    }
    let inflight = Arc::new(Semaphore::new(config.max_inflight));
    let sent = AtomicU64::new(0);
    let (tx, rx) = mpsc::unbounded_channel();

    let start = Instant::now();
    let schedule = Schedule {
        config,
        endpoints,
        client,
        inflight: Arc::clone(&inflight),
        sent: &sent,
        start,
    };
    let progress = config.progress.then(|| Progress {
        start,
        sent: &sent,
        inflight: &inflight,
        max_inflight: config.max_inflight,
        width: 0,
    });
    let ((), recorder) = tokio::join!(schedule.run(tx, stop), collect(rx, progress));
    let elapsed = start.elapsed();
    Ok(recorder.into_report(config, elapsed, sent.into_inner()))
}

/// What the scheduler needs to fire requests.
struct Schedule<'a> {
    config: &'a LoadConfig,
    endpoints: Endpoints,
    client: Client,
    inflight: Arc<Semaphore>,
    sent: &'a AtomicU64,
    start: Instant,
}

impl Schedule<'_> {
    /// Fires every request of the schedule at its due time, until the
    /// schedule ends or `stop` completes. Drops `tx` on return.
    async fn run(self, tx: mpsc::UnboundedSender<Sample>, stop: impl Future<Output = ()>) {
        let mut stop = pin!(stop);
        let timeout = self.config.timeout;
        for index in 0..self.config.scheduled_total() {
            let offset = Duration::try_from_secs_f64(index as f64 / self.config.rate_per_sec);
            let Some(due) = offset.ok().and_then(|o| self.start.checked_add(o)) else {
                break;
            };
            let Some(deadline) = due.checked_add(timeout) else {
                break;
            };
            tokio::select! {
                biased;
                () = &mut stop => break,
                () = tokio::time::sleep_until(due) => {}
            }
            let operation = self.config.profile.operation(index);
            let Ok(permit) = Arc::clone(&self.inflight).try_acquire_owned() else {
                // The client is saturated. The request still happened for
                // the user who wanted it: record it at the worst latency
                // it could have had, never leave a gap.
                let _ = tx.send(Sample {
                    operation,
                    outcome: Outcome::Dropped,
                    latency: timeout,
                    send_lag: None,
                });
                continue;
            };
            self.sent.fetch_add(1, Ordering::Relaxed);
            let request = operation.request(&self.client, &self.endpoints, index);
            let tx = tx.clone();
            tokio::spawn(async move {
                let send_lag = Instant::now().saturating_duration_since(due);
                let outcome = exchange(request, deadline).await;
                let latency = match outcome {
                    Outcome::Timeout => timeout,
                    _ => Instant::now().saturating_duration_since(due),
                };
                drop(permit);
                // The receiver lives until every sender is gone.
                let _ = tx.send(Sample {
                    operation,
                    outcome,
                    latency,
                    send_lag: Some(send_lag),
                });
            });
        }
    }
}

/// Sends one request and reads the whole answer, giving up at `deadline`.
async fn exchange(request: RequestBuilder, deadline: Instant) -> Outcome {
    let answer = async {
        let response = request.send().await?;
        let status = response.status().as_u16();
        // Latency covers the body too, and reading it frees the connection.
        response.bytes().await?;
        Ok::<_, reqwest::Error>(status)
    };
    match tokio::time::timeout_at(deadline, answer).await {
        Ok(Ok(status)) => Outcome::Status(status),
        Ok(Err(e)) if e.is_timeout() => Outcome::Timeout,
        Ok(Err(e)) if e.is_connect() => Outcome::ConnectError,
        Ok(Err(_)) => Outcome::Error,
        Err(_) => Outcome::Timeout,
    }
}

/// Records every sample until the last sender is gone, redrawing the
/// progress line meanwhile.
async fn collect(
    mut rx: mpsc::UnboundedReceiver<Sample>,
    mut progress: Option<Progress<'_>>,
) -> Recorder {
    let mut recorder = Recorder::new();
    let mut ticker = tokio::time::interval(PROGRESS_EVERY);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            sample = rx.recv() => match sample {
                Some(sample) => recorder.record(sample),
                None => break,
            },
            _ = ticker.tick(), if progress.is_some() => {
                if let Some(progress) = &mut progress {
                    progress.draw(&recorder);
                }
            }
        }
    }
    if let Some(progress) = &mut progress {
        progress.draw(&recorder);
        progress.finish();
    }
    recorder
}

/// The live status line on stderr.
struct Progress<'a> {
    start: Instant,
    sent: &'a AtomicU64,
    inflight: &'a Semaphore,
    max_inflight: usize,
    /// Length of the last line, to blank out what a shorter one leaves.
    width: usize,
}

impl Progress<'_> {
    fn draw(&mut self, recorder: &Recorder) {
        let samples = recorder.samples();
        let ok = if samples == 0 {
            100.0
        } else {
            recorder.succeeded() as f64 * 100.0 / samples as f64
        };
        let mut line = format!(
            "[{:>6.1}s] sent {}  completed {}  in-flight {}  ok {:.1}%  p99 {:.1}ms",
            self.start.elapsed().as_secs_f64(),
            self.sent.load(Ordering::Relaxed),
            recorder.completed(),
            self.max_inflight - self.inflight.available_permits(),
            ok,
            recorder.p99_ms(),
        );
        if recorder.dropped() > 0 {
            line.push_str(&format!("  dropped {}", recorder.dropped()));
        }
        let pad = self.width.saturating_sub(line.len());
        self.width = line.len();
        // A closed stderr must not stop the run; the report still comes back.
        let _ = write!(std::io::stderr().lock(), "\r{line}{:pad$}", "");
    }

    fn finish(&self) {
        let _ = writeln!(std::io::stderr().lock());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send<T: Send>(_: &T) {}

    #[test]
    fn a_run_can_be_spawned_on_a_multi_thread_runtime() {
        let config = LoadConfig::new("http://127.0.0.1:9");
        let run = run(&config);
        assert_send(&run);
        let stopped = run_until(&config, async {});
        assert_send(&stopped);
    }
}
