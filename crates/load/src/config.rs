//! What a load run is asked to do, and the checks that keep a bad request
//! from ever starting one.
//!
//! Every limit is checked before the first request is scheduled, and each
//! broken one comes back as a [`LoadError`] whose message names the setting,
//! the bad value and what is allowed, so the CLI can print it as it is.

use std::fmt;
use std::time::Duration;

use crate::profile::{Endpoints, Profile};

/// Highest accepted rate. One generator process cannot send more than this
/// on one core anyway; above it the schedule would only measure the client.
pub const MAX_RATE_PER_SEC: f64 = 100_000.0;

/// Longest accepted request timeout: the latency histograms stop at 60 s,
/// so a longer timeout could not be recorded as what it is.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(60);

/// Highest accepted in-flight cap (what a tokio semaphore can hold).
pub const MAX_INFLIGHT_LIMIT: usize = tokio::sync::Semaphore::MAX_PERMITS;

/// One load run: where to send, how fast, for how long, and what.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadConfig {
    /// Where CloudMart's gateway answers, e.g. `http://localhost:8080`.
    /// The API paths are appended to it, so a path prefix is kept.
    pub base_url: String,
    /// Requests scheduled per second, whatever the server does.
    pub rate_per_sec: f64,
    /// How long requests keep being scheduled. The run then waits for the
    /// ones in flight, at most `timeout` longer.
    pub duration: Duration,
    /// Which requests make up the traffic.
    pub profile: Profile,
    /// Longest a request may take, counted from when it was meant to be
    /// sent. A request that takes longer is recorded as `timeout` at exactly
    /// this latency.
    pub timeout: Duration,
    /// Most requests in flight at once, so a dead server cannot make the
    /// generator open connections without bound. A request scheduled while
    /// the cap is reached is not sent; it is counted as `dropped` and
    /// recorded at `timeout` latency.
    pub max_inflight: usize,
    /// Whether to keep a live progress line on stderr.
    pub progress: bool,
}

impl LoadConfig {
    /// A run against `base_url` with the defaults the workshop uses:
    /// 200 requests/s for 10 s of the `orders` profile, 10 s timeout,
    /// 1000 in flight at most, no progress line.
    pub fn new(base_url: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            rate_per_sec: 200.0,
            duration: Duration::from_secs(10),
            profile: Profile::Orders,
            timeout: Duration::from_secs(10),
            max_inflight: 1000,
            progress: false,
        }
    }

    /// Checks every setting, so a caller can reject a bad config before
    /// it prints anything else. [`crate::run`] does the same checks.
    pub fn validate(&self) -> Result<(), LoadError> {
        self.endpoints().map(|_| ())
    }

    /// Checks every setting and resolves the URLs the profile calls.
    pub(crate) fn endpoints(&self) -> Result<Endpoints, LoadError> {
        let rate = self.rate_per_sec;
        if !rate.is_finite() || rate <= 0.0 || rate > MAX_RATE_PER_SEC {
            return Err(LoadError::InvalidRate(rate));
        }
        if self.duration.is_zero() {
            return Err(LoadError::ZeroDuration);
        }
        if self.timeout < Duration::from_millis(1) || self.timeout > MAX_TIMEOUT {
            return Err(LoadError::InvalidTimeout(self.timeout));
        }
        if self.max_inflight == 0 || self.max_inflight > MAX_INFLIGHT_LIMIT {
            return Err(LoadError::InvalidMaxInflight(self.max_inflight));
        }
        Endpoints::new(&self.base_url)
    }

    /// How many requests the schedule holds: one every `1 / rate` seconds
    /// from time zero, while the time is below `duration`.
    pub(crate) fn scheduled_total(&self) -> u64 {
        let exact = self.rate_per_sec * self.duration.as_secs_f64();
        // The small slack keeps 0.1/s for 30 s at 3 requests, not 4.
        // The cast saturates, so an enormous product cannot wrap.
        (exact - 1e-9).ceil().max(1.0) as u64
    }
}

/// Why a load run could not start.
#[derive(Debug)]
pub enum LoadError {
    /// The rate is not a finite number in `(0, MAX_RATE_PER_SEC]`.
    InvalidRate(f64),
    /// A zero duration would schedule nothing.
    ZeroDuration,
    /// The timeout is below 1 ms or above [`MAX_TIMEOUT`].
    InvalidTimeout(Duration),
    /// The in-flight cap is zero or above [`MAX_INFLIGHT_LIMIT`].
    InvalidMaxInflight(usize),
    /// The base URL cannot be used; `reason` says why.
    InvalidBaseUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it, in words.
        reason: String,
    },
    /// The profile name is not one of [`Profile::ALL`].
    UnknownProfile(String),
    /// The HTTP client could not be built.
    Client(reqwest::Error),
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidRate(rate) => write!(
                f,
                "rate must be a number of requests per second above 0 and at most \
                 {MAX_RATE_PER_SEC}, got {rate}"
            ),
            Self::ZeroDuration => write!(f, "duration must be above 0, got 0s"),
            Self::InvalidTimeout(timeout) => write!(
                f,
                "timeout must be from 1ms to {}s, got {timeout:?}",
                MAX_TIMEOUT.as_secs()
            ),
            Self::InvalidMaxInflight(n) => write!(
                f,
                "max in-flight must be from 1 to {MAX_INFLIGHT_LIMIT}, got {n}"
            ),
            Self::InvalidBaseUrl { url, reason } => write!(f, "base URL {url:?} {reason}"),
            Self::UnknownProfile(name) => {
                let names: Vec<&str> = Profile::ALL.iter().map(|p| p.as_str()).collect();
                write!(
                    f,
                    "unknown profile {name:?}; expected one of: {}",
                    names.join(", ")
                )
            }
            Self::Client(e) => write!(f, "could not build the HTTP client: {e}"),
        }
    }
}

impl std::error::Error for LoadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Client(e) => Some(e),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> LoadConfig {
        LoadConfig::new("http://127.0.0.1:8080")
    }

    fn message(config: &LoadConfig) -> String {
        config.validate().unwrap_err().to_string()
    }

    #[test]
    fn the_defaults_are_valid() {
        assert!(config().validate().is_ok());
    }

    #[test]
    fn a_rate_that_is_not_above_zero_or_not_finite_is_rejected() {
        for rate in [0.0, -5.0, f64::NAN, f64::INFINITY, MAX_RATE_PER_SEC * 2.0] {
            let cfg = LoadConfig {
                rate_per_sec: rate,
                ..config()
            };
            assert!(
                matches!(cfg.validate(), Err(LoadError::InvalidRate(_))),
                "{rate}"
            );
        }
        let cfg = LoadConfig {
            rate_per_sec: 0.0,
            ..config()
        };
        assert_eq!(
            message(&cfg),
            "rate must be a number of requests per second above 0 and at most 100000, got 0"
        );
    }

    #[test]
    fn a_zero_duration_is_rejected() {
        let cfg = LoadConfig {
            duration: Duration::ZERO,
            ..config()
        };
        assert_eq!(message(&cfg), "duration must be above 0, got 0s");
    }

    #[test]
    fn timeouts_outside_the_histogram_range_are_rejected() {
        for timeout in [Duration::ZERO, Duration::from_secs(61)] {
            let cfg = LoadConfig {
                timeout,
                ..config()
            };
            assert!(matches!(cfg.validate(), Err(LoadError::InvalidTimeout(_))));
        }
        let cfg = LoadConfig {
            timeout: Duration::ZERO,
            ..config()
        };
        assert_eq!(message(&cfg), "timeout must be from 1ms to 60s, got 0ns");
    }

    #[test]
    fn a_zero_inflight_cap_is_rejected() {
        let cfg = LoadConfig {
            max_inflight: 0,
            ..config()
        };
        assert!(message(&cfg).starts_with("max in-flight must be from 1 to "));
    }

    #[test]
    fn base_urls_that_are_not_plain_http_are_rejected_with_the_reason() {
        let cases = [
            ("localhost:8080", "has no scheme"),
            ("", "has no scheme"),
            ("http://", "is not a URL"),
            ("http://exa mple.com", "is not a URL"),
            ("ftp://example.com", "has scheme \"ftp\""),
            ("https://example.com", "uses https"),
            ("http://example.com/?a=1", "has a query"),
            ("http://example.com/#top", "has a fragment"),
        ];
        for (url, expected) in cases {
            let cfg = LoadConfig::new(url);
            let msg = message(&cfg);
            assert!(msg.starts_with(&format!("base URL {url:?} ")), "{msg}");
            assert!(msg.contains(expected), "{url}: {msg}");
        }
    }

    #[test]
    fn the_schedule_holds_rate_times_duration_requests() {
        let cases = [
            (200.0, 2_000, 400),
            (0.1, 30_000, 3),
            (3.0, 1_000, 3),
            (2.5, 1_000, 3),
            (0.5, 1_000, 1),
        ];
        for (rate, millis, expected) in cases {
            let cfg = LoadConfig {
                rate_per_sec: rate,
                duration: Duration::from_millis(millis),
                ..config()
            };
            assert_eq!(cfg.scheduled_total(), expected, "{rate}/s for {millis} ms");
        }
    }
}
