//! Retries with exponential backoff and full jitter.
//!
//! A [`Backoff`] is validated when it is built, so a policy that cannot work
//! (zero attempts, a base above the cap) never reaches a running service.
//! The "immediate" policy (both delays zero) is still allowed on purpose:
//! it is what a naive retry loop does, and the broken manifests use it to
//! cause a retry storm that trainees find in the logs and metrics.
//!
//! The delay before retry `n` (1 for the first retry) is drawn uniformly from
//! `0..=min(max, base * 2^(n-1))` ("full jitter"), so many clients retrying at
//! once spread out instead of hitting a recovering server together. A
//! `Retry-After` from the server raises the delay, never above the cap.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use cloudmart_config::{EnvReader, EnvVar, Setting};

/// Upper bound for any configured delay.
const MAX_DELAY_LIMIT: Duration = Duration::from_secs(60);
/// Upper bound for `RETRY_MAX_ATTEMPTS`.
const MAX_ATTEMPTS_LIMIT: u32 = 100;

/// How the computed delay is randomised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Jitter {
    /// Uniform in `0..=cap`.
    Full,
    /// Exactly the cap; only for tests and diagnosis.
    None,
}

/// A validated retry policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    max_attempts: u32,
    jitter: Jitter,
}

/// One broken invariant of a retry policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackoffError {
    /// Zero attempts would never send the request.
    NoAttempts,
    /// More attempts than [`MAX_ATTEMPTS_LIMIT`].
    TooManyAttempts(u32),
    /// The base delay is above the maximum delay.
    BaseAboveMax { base: Duration, max: Duration },
    /// A zero base with a non-zero cap never backs off.
    ZeroBaseWithCap(Duration),
    /// The maximum delay is above [`MAX_DELAY_LIMIT`].
    MaxTooLarge(Duration),
}

impl fmt::Display for BackoffError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoAttempts => write!(f, "RETRY_MAX_ATTEMPTS must be at least 1"),
            Self::TooManyAttempts(n) => write!(
                f,
                "RETRY_MAX_ATTEMPTS={n} is above the limit of {MAX_ATTEMPTS_LIMIT}"
            ),
            Self::BaseAboveMax { base, max } => write!(
                f,
                "RETRY_BASE_DELAY_MS={} is above RETRY_MAX_DELAY_MS={}",
                base.as_millis(),
                max.as_millis()
            ),
            Self::ZeroBaseWithCap(max) => write!(
                f,
                "RETRY_BASE_DELAY_MS=0 with RETRY_MAX_DELAY_MS={} never backs off; \
                 set a base above 0, or both to 0 for an immediate policy",
                max.as_millis()
            ),
            Self::MaxTooLarge(max) => write!(
                f,
                "RETRY_MAX_DELAY_MS={} is above the limit of {}",
                max.as_millis(),
                MAX_DELAY_LIMIT.as_millis()
            ),
        }
    }
}

impl std::error::Error for BackoffError {}

impl Default for Backoff {
    /// Three attempts, 100 ms base, 2 s cap, full jitter.
    fn default() -> Self {
        Self {
            base: Duration::from_millis(100),
            max: Duration::from_secs(2),
            max_attempts: 3,
            jitter: Jitter::Full,
        }
    }
}

impl Backoff {
    /// Builds a policy, returning every broken invariant.
    pub fn try_new(
        base: Duration,
        max: Duration,
        max_attempts: u32,
        jitter: Jitter,
    ) -> Result<Self, Vec<BackoffError>> {
        let mut errors = Vec::new();
        if max_attempts == 0 {
            errors.push(BackoffError::NoAttempts);
        }
        if max_attempts > MAX_ATTEMPTS_LIMIT {
            errors.push(BackoffError::TooManyAttempts(max_attempts));
        }
        if base > max {
            errors.push(BackoffError::BaseAboveMax { base, max });
        }
        if base.is_zero() && !max.is_zero() {
            errors.push(BackoffError::ZeroBaseWithCap(max));
        }
        if max > MAX_DELAY_LIMIT {
            errors.push(BackoffError::MaxTooLarge(max));
        }
        if errors.is_empty() {
            Ok(Self {
                base,
                max,
                max_attempts,
                jitter,
            })
        } else {
            Err(errors)
        }
    }

    /// Retries with no delay at all: the policy behind a retry storm.
    pub fn immediate(max_attempts: u32) -> Self {
        Self {
            base: Duration::ZERO,
            max: Duration::ZERO,
            max_attempts: max_attempts.clamp(1, MAX_ATTEMPTS_LIMIT),
            jitter: Jitter::Full,
        }
    }

    /// A single attempt and no retries.
    pub fn none() -> Self {
        Self::immediate(1)
    }

    /// Total attempts, the first one included.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// Whether the policy never waits between attempts.
    pub fn is_immediate(&self) -> bool {
        self.max.is_zero()
    }

    /// The upper bound of the delay before retry `retry` (1-based), before jitter.
    pub fn cap(&self, retry: u32) -> Duration {
        let exp = retry.saturating_sub(1).min(31);
        let factor = 1u32 << exp;
        self.base.saturating_mul(factor).min(self.max)
    }

    /// The delay before retry `retry` (1-based), honouring `retry_after`
    /// from the server without going above the cap.
    pub fn delay(
        &self,
        retry: u32,
        retry_after: Option<Duration>,
        rng: &mut fastrand::Rng,
    ) -> Duration {
        let cap = self.cap(retry);
        let drawn = match self.jitter {
            Jitter::None => cap,
            Jitter::Full => {
                let nanos = u64::try_from(cap.as_nanos()).unwrap_or(u64::MAX);
                Duration::from_nanos(rng.u64(0..=nanos))
            }
        };
        match retry_after {
            Some(wait) => drawn.max(wait).min(self.max),
            None => drawn,
        }
    }
}

/// What one attempt of an operation came to.
#[derive(Debug)]
pub enum Attempt<T, E> {
    /// It worked.
    Success(T),
    /// It failed in a way that may pass if tried again.
    Retryable {
        /// What went wrong.
        error: E,
        /// How long the server asked us to wait, if it said.
        retry_after: Option<Duration>,
    },
    /// It failed in a way that another try cannot fix.
    Fatal(E),
}

/// Runs `op` until it succeeds, fails fatally, or runs out of attempts.
///
/// `op` receives the attempt number (1 for the first try). Each retry is
/// logged at WARN with the attempt number, the delay and the error, so a
/// retry storm is plain to see in the logs. `what` names the operation.
pub async fn retry<T, E, F, Fut>(policy: &Backoff, what: &str, mut op: F) -> Result<T, E>
where
    E: fmt::Display,
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Attempt<T, E>>,
{
    let mut rng = fastrand::Rng::new();
    let mut attempt = 1;
    loop {
        match op(attempt).await {
            Attempt::Success(value) => return Ok(value),
            Attempt::Fatal(error) => return Err(error),
            Attempt::Retryable { error, retry_after } => {
                if attempt >= policy.max_attempts {
                    if policy.max_attempts > 1 {
                        tracing::warn!(
                            operation = what,
                            attempts = attempt,
                            error = %error,
                            "giving up on {what} after {attempt} attempts: {error}"
                        );
                    }
                    return Err(error);
                }
                let delay = policy.delay(attempt, retry_after, &mut rng);
                let next = attempt + 1;
                tracing::warn!(
                    operation = what,
                    attempt = next,
                    max_attempts = policy.max_attempts,
                    delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                    error = %error,
                    "retrying {what}: attempt {next} of {} in {} ms after: {error}",
                    policy.max_attempts,
                    delay.as_millis()
                );
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                attempt = next;
            }
        }
    }
}

/// Parses a `Retry-After` value: delay-seconds or an HTTP date.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// `RETRY_MAX_ATTEMPTS`. Only its syntax is checked here; the range is
/// [`Backoff::try_new`]'s, which reports it with the other invariants.
pub const RETRY_MAX_ATTEMPTS: Setting<u32> = Setting::<u32>::whole(
    EnvVar::with_default(
        "RETRY_MAX_ATTEMPTS",
        "3",
        "a whole number from 1 to 100",
        "Attempts per downstream call, the first one included",
    ),
    0,
    u32::MAX,
);
pub const RETRY_BASE_DELAY_MS: Setting<Duration> = Setting::millis(
    EnvVar::with_default(
        "RETRY_BASE_DELAY_MS",
        "100",
        "milliseconds from 0 to 60000",
        "Delay cap before the first retry; doubles for each retry after it",
    ),
    0,
    u64::MAX,
);
pub const RETRY_MAX_DELAY_MS: Setting<Duration> = Setting::millis(
    EnvVar::with_default(
        "RETRY_MAX_DELAY_MS",
        "2000",
        "milliseconds from 0 to 60000",
        "Largest delay between two attempts, Retry-After included (0 with a 0 base retries at once)",
    ),
    0,
    u64::MAX,
);

impl Backoff {
    /// Reads the policy from `RETRY_*`, recording problems in `reader`.
    /// While a problem stands, the default policy stands in for this one.
    pub fn from_env(reader: &mut EnvReader<'_>) -> Self {
        let before = reader.problem_count();
        let attempts = reader.get(&RETRY_MAX_ATTEMPTS);
        let base = reader.get(&RETRY_BASE_DELAY_MS);
        let max = reader.get(&RETRY_MAX_DELAY_MS);
        if reader.problem_count() > before {
            // A value that did not parse is reported already; checking the
            // default that stands in for it would report a problem nobody set.
            return Self::default();
        }
        match Self::try_new(base, max, attempts, Jitter::Full) {
            Ok(policy) => policy,
            Err(errors) => {
                for e in errors {
                    reader.problem(e.to_string());
                }
                Self::default()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn caps_double_per_retry_up_to_the_max() {
        let b = Backoff::try_new(ms(100), ms(1000), 10, Jitter::None).unwrap();
        let caps: Vec<_> = (1..=6).map(|n| b.cap(n).as_millis()).collect();
        assert_eq!(caps, vec![100, 200, 400, 800, 1000, 1000]);
        // A huge retry number must not overflow.
        assert_eq!(b.cap(u32::MAX), ms(1000));
    }

    #[test]
    fn full_jitter_stays_within_zero_and_the_cap_and_spreads() {
        let b = Backoff::try_new(ms(100), ms(1000), 10, Jitter::Full).unwrap();
        let mut rng = fastrand::Rng::with_seed(7);
        for retry in 1..=5 {
            let cap = b.cap(retry);
            let samples: Vec<_> = (0..500).map(|_| b.delay(retry, None, &mut rng)).collect();
            assert!(samples.iter().all(|d| *d <= cap));
            let low = samples.iter().filter(|d| **d < cap / 4).count();
            let high = samples.iter().filter(|d| **d > cap * 3 / 4).count();
            // Uniform draws land in each outer quarter about 125 times in 500.
            assert!(
                low > 60 && high > 60,
                "retry {retry}: low {low}, high {high}"
            );
        }
    }

    #[test]
    fn retry_after_raises_the_delay_but_not_above_the_max() {
        let b = Backoff::try_new(ms(10), ms(500), 5, Jitter::None).unwrap();
        let mut rng = fastrand::Rng::with_seed(1);
        assert_eq!(b.delay(1, Some(ms(300)), &mut rng), ms(300));
        assert_eq!(b.delay(1, Some(Duration::from_secs(30)), &mut rng), ms(500));
        assert_eq!(b.delay(1, Some(ms(1)), &mut rng), ms(10));
    }

    #[test]
    fn immediate_policy_never_waits_even_when_asked_to() {
        let b = Backoff::try_new(Duration::ZERO, Duration::ZERO, 20, Jitter::Full).unwrap();
        assert!(b.is_immediate());
        let mut rng = fastrand::Rng::with_seed(3);
        for retry in 1..20 {
            assert_eq!(b.delay(retry, Some(ms(1000)), &mut rng), Duration::ZERO);
        }
    }

    #[test]
    fn every_broken_invariant_is_reported() {
        let errs = Backoff::try_new(ms(500), ms(100), 0, Jitter::Full).unwrap_err();
        assert!(errs.contains(&BackoffError::NoAttempts));
        assert!(errs.contains(&BackoffError::BaseAboveMax {
            base: ms(500),
            max: ms(100)
        }));
        let errs = Backoff::try_new(Duration::ZERO, ms(100), 3, Jitter::Full).unwrap_err();
        assert_eq!(errs, vec![BackoffError::ZeroBaseWithCap(ms(100))]);
        let errs = Backoff::try_new(ms(1), Duration::from_secs(61), 101, Jitter::Full).unwrap_err();
        assert_eq!(errs.len(), 2);
    }

    #[test]
    fn env_problems_name_the_variables() {
        let env: std::collections::HashMap<String, String> =
            [("RETRY_MAX_ATTEMPTS", "0"), ("RETRY_BASE_DELAY_MS", "abc")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
        let mut r = EnvReader::new(&env);
        let _stand_in = Backoff::from_env(&mut r);
        let err = r.finish().unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("RETRY_BASE_DELAY_MS=\"abc\""), "{msg}");
        // The zero attempts are not checked against a base nobody set.
        assert_eq!(err.problems().len(), 1, "{msg}");
    }

    #[test]
    fn a_policy_that_cannot_work_is_reported_and_the_default_stands_in() {
        let env: std::collections::HashMap<String, String> = [
            ("RETRY_MAX_ATTEMPTS", "0"),
            ("RETRY_BASE_DELAY_MS", "500"),
            ("RETRY_MAX_DELAY_MS", "100"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let mut r = EnvReader::new(&env);
        let policy = Backoff::from_env(&mut r);
        let msg = r.finish().unwrap_err().to_string();
        assert!(
            msg.contains("RETRY_MAX_ATTEMPTS must be at least 1"),
            "{msg}"
        );
        assert_eq!(policy.max_attempts(), Backoff::default().max_attempts());
    }

    #[test]
    fn retry_after_header_forms() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(
            parse_retry_after("Thu, 01 Jan 1970 00:00:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    /// Runs `retry` with an operation that fails `failures` times.
    async fn run(
        policy: Backoff,
        failures: u32,
        retry_after: Option<Duration>,
    ) -> (Result<u32, String>, u32) {
        let calls = Arc::new(AtomicU32::new(0));
        let c = calls.clone();
        let result = retry(&policy, "test op", move |attempt| {
            let c = c.clone();
            async move {
                c.fetch_add(1, Ordering::SeqCst);
                if attempt <= failures {
                    Attempt::Retryable {
                        error: format!("fail {attempt}"),
                        retry_after,
                    }
                } else {
                    Attempt::Success(attempt)
                }
            }
        })
        .await;
        (result, calls.load(Ordering::SeqCst))
    }

    #[tokio::test(start_paused = true)]
    async fn stops_after_max_attempts_with_the_last_error() {
        let policy = Backoff::try_new(ms(100), ms(1000), 4, Jitter::Full).unwrap();
        let (result, calls) = run(policy, 10, None).await;
        assert_eq!(result, Err("fail 4".to_owned()));
        assert_eq!(calls, 4);
    }

    #[tokio::test(start_paused = true)]
    async fn waits_no_longer_than_the_sum_of_caps() {
        let policy = Backoff::try_new(ms(100), ms(1000), 4, Jitter::Full).unwrap();
        let start = tokio::time::Instant::now();
        let (result, _) = run(policy, 3, None).await;
        assert_eq!(result, Ok(4));
        // Three retries with caps 100 + 200 + 400 ms.
        assert!(start.elapsed() <= ms(700), "{:?}", start.elapsed());
    }

    #[tokio::test(start_paused = true)]
    async fn honours_retry_after_in_virtual_time() {
        let policy = Backoff::try_new(ms(10), ms(5000), 3, Jitter::Full).unwrap();
        let start = tokio::time::Instant::now();
        let (result, _) = run(policy, 2, Some(Duration::from_secs(2))).await;
        assert_eq!(result, Ok(3));
        // Two retries, each waiting the 2 s the server asked for.
        assert_eq!(start.elapsed(), Duration::from_secs(4));
    }

    #[tokio::test(start_paused = true)]
    async fn immediate_policy_retries_without_any_time_passing() {
        let start = tokio::time::Instant::now();
        let (result, calls) = run(Backoff::immediate(20), 100, Some(ms(500))).await;
        assert!(result.is_err());
        assert_eq!(calls, 20);
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn fatal_errors_are_not_retried() {
        let calls = Arc::new(AtomicU32::new(0));
        let c = calls.clone();
        let result: Result<(), String> = retry(&Backoff::default(), "op", move |_| {
            c.fetch_add(1, Ordering::SeqCst);
            async { Attempt::Fatal("bad request".to_owned()) }
        })
        .await;
        assert_eq!(result, Err("bad request".to_owned()));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
