//! A circuit breaker for the MongoDB store.
//!
//! While MongoDB cannot be reached, every operation would wait out server
//! selection before failing. After a threshold of such failures in a row
//! the breaker opens: operations fail at once with the last cause,
//! so callers get their 503 in microseconds instead of each one waiting.
//! After the cool-down one operation (often the readiness probe) is let
//! through to try again; its success closes the breaker, its failure opens
//! it for another cool-down. Recovery needs nobody.
//!
//! Only "cannot reach MongoDB" counts. A duplicate key or a bad query is an
//! answer from a live server and resets the count.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// What the breaker says about one operation about to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admit {
    /// Go ahead.
    Yes,
    /// Fail now: the breaker is open. Carries the last cause and how long
    /// until the next trial.
    No {
        /// Why the last trial failed.
        cause: String,
        /// Until the next operation is let through.
        retry_in: Duration,
    },
}

#[derive(Debug, Default)]
struct State {
    /// Unreachable failures in a row.
    failures: u32,
    /// Open until then; `None` when closed.
    open_until: Option<Instant>,
    /// When the trial operation of a half-open breaker started. A trial
    /// whose request was cancelled never reports back, so one older than
    /// the cool-down no longer blocks the next.
    trial: Option<Instant>,
    /// The cause of the last failure, for the fast answers.
    cause: String,
}

/// Consecutive-failure circuit breaker; see the module docs.
#[derive(Debug)]
pub struct Breaker {
    threshold: u32,
    cool_down: Duration,
    state: Mutex<State>,
}

impl Breaker {
    /// Opens after `threshold` unreachable failures in a row, for `cool_down`.
    pub fn new(threshold: u32, cool_down: Duration) -> Self {
        Self {
            threshold: threshold.max(1),
            cool_down,
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Every update leaves the state whole, so a poisoned lock is usable.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether an operation may start now.
    pub fn admit(&self) -> Admit {
        let mut s = self.lock();
        let Some(until) = s.open_until else {
            return Admit::Yes;
        };
        let now = Instant::now();
        let trial_running = s.trial.is_some_and(|t| now < t + self.cool_down);
        if now < until || trial_running {
            return Admit::No {
                cause: s.cause.clone(),
                retry_in: until.saturating_duration_since(now),
            };
        }
        // Half-open: this one operation is the trial.
        s.trial = Some(now);
        Admit::Yes
    }

    /// MongoDB answered (successfully or with an error of its own).
    pub fn succeeded(&self) {
        let mut s = self.lock();
        if s.open_until.is_some() {
            tracing::info!("MongoDB answers again; operations go through");
        }
        *s = State::default();
    }

    /// MongoDB could not be reached; `cause` says why.
    pub fn failed(&self, cause: &str) {
        let mut s = self.lock();
        s.failures = s.failures.saturating_add(1);
        s.trial = None;
        s.cause = cause.to_owned();
        if s.failures >= self.threshold {
            if s.open_until.is_none() {
                tracing::warn!(
                    failures = s.failures,
                    cool_down_ms = u64::try_from(self.cool_down.as_millis()).unwrap_or(u64::MAX),
                    "{cause}; {} operations failed in a row, so the next ones fail at once for {} ms before one tries again",
                    s.failures,
                    self.cool_down.as_millis()
                );
            }
            s.open_until = Some(Instant::now() + self.cool_down);
        }
    }

    /// Whether the breaker is open (failing fast) right now.
    #[cfg(test)]
    fn is_open(&self) -> bool {
        self.lock().open_until.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(b: &Breaker) -> bool {
        matches!(b.admit(), Admit::No { .. })
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_the_threshold_and_lets_one_trial_through_after_the_cool_down() {
        let b = Breaker::new(3, Duration::from_millis(500));
        for _ in 0..2 {
            assert_eq!(b.admit(), Admit::Yes);
            b.failed("connection refused");
        }
        assert!(!b.is_open(), "two failures are not yet a pattern");
        b.failed("connection refused");
        let Admit::No { cause, retry_in } = b.admit() else {
            panic!("open after three failures");
        };
        assert_eq!(cause, "connection refused");
        assert_eq!(retry_in, Duration::from_millis(500));

        tokio::time::advance(Duration::from_millis(501)).await;
        assert_eq!(b.admit(), Admit::Yes, "the trial");
        assert!(refused(&b), "only one trial at a time");
        b.failed("connection refused");
        assert!(refused(&b), "a failed trial opens it again");

        tokio::time::advance(Duration::from_millis(501)).await;
        assert_eq!(b.admit(), Admit::Yes);
        b.succeeded();
        assert!(!b.is_open());
        assert_eq!(b.admit(), Admit::Yes);
        assert_eq!(b.admit(), Admit::Yes);
    }

    #[tokio::test(start_paused = true)]
    async fn a_trial_that_never_reports_back_does_not_keep_it_open() {
        let b = Breaker::new(1, Duration::from_millis(100));
        b.failed("timeout");
        tokio::time::advance(Duration::from_millis(101)).await;
        assert_eq!(
            b.admit(),
            Admit::Yes,
            "the trial, then its request is dropped"
        );
        assert!(refused(&b));
        tokio::time::advance(Duration::from_millis(101)).await;
        assert_eq!(b.admit(), Admit::Yes, "a new trial");
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_in_between_resets_the_count() {
        let b = Breaker::new(3, Duration::from_secs(1));
        b.failed("timeout");
        b.failed("timeout");
        b.succeeded();
        b.failed("timeout");
        b.failed("timeout");
        assert_eq!(b.admit(), Admit::Yes);
    }
}
