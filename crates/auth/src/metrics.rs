//! auth-service's own metrics, registered next to the shared RED metrics:
//! how logins end, how often the token cache answers, and how often Redis
//! fails. Together they tell "users are locked out" from "Redis is down".

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// How one login ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LoginOutcome {
    /// A token was issued.
    Success,
    /// Wrong user name or password (401).
    Failure,
    /// Refused by a rate limit (429).
    RateLimited,
    /// Redis could not be asked (503).
    Unavailable,
}

impl LoginOutcome {
    fn label(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
            Self::RateLimited => "rate_limited",
            Self::Unavailable => "unavailable",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: String,
}

/// The counters, cheap to clone into the handlers' state.
#[derive(Clone)]
pub(crate) struct AuthMetrics {
    logins: Family<OutcomeLabels, Counter>,
    cache: Family<ResultLabels, Counter>,
    redis_errors: Counter,
}

impl AuthMetrics {
    /// Registers `auth_logins_total`, `auth_token_cache_lookups_total` and
    /// `auth_redis_errors_total` in the service's registry.
    pub(crate) fn new(registry: &mut Registry) -> Self {
        let logins = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "auth_logins",
            "Logins by outcome: success, failure, rate_limited, unavailable",
            logins.clone(),
        );
        let cache = Family::<ResultLabels, Counter>::default();
        registry.register(
            "auth_token_cache_lookups",
            "Token validations answered from the cache (hit) or by checking the signature (miss)",
            cache.clone(),
        );
        let redis_errors = Counter::default();
        registry.register(
            "auth_redis_errors",
            "Redis operations that failed or timed out",
            redis_errors.clone(),
        );
        let m = Self {
            logins,
            cache,
            redis_errors,
        };
        // Every series exists from the start at 0, so that rate() sees the
        // first increment and a dashboard shows 0 rather than no data.
        for outcome in [
            LoginOutcome::Success,
            LoginOutcome::Failure,
            LoginOutcome::RateLimited,
            LoginOutcome::Unavailable,
        ] {
            let _ = m.logins.get_or_create(&OutcomeLabels {
                outcome: outcome.label().to_owned(),
            });
        }
        for result in ["hit", "miss"] {
            let _ = m.cache.get_or_create(&ResultLabels {
                result: result.to_owned(),
            });
        }
        m
    }

    /// Counts one login.
    pub(crate) fn login(&self, outcome: LoginOutcome) {
        self.logins
            .get_or_create(&OutcomeLabels {
                outcome: outcome.label().to_owned(),
            })
            .inc();
    }

    /// Counts one cache lookup.
    pub(crate) fn cache(&self, hit: bool) {
        let result = if hit { "hit" } else { "miss" };
        self.cache
            .get_or_create(&ResultLabels {
                result: result.to_owned(),
            })
            .inc();
    }

    /// The Redis error counter, for the Redis store to increment.
    pub(crate) fn redis_errors(&self) -> Counter {
        self.redis_errors.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_with_the_documented_names() {
        let mut registry = Registry::default();
        let m = AuthMetrics::new(&mut registry);
        m.login(LoginOutcome::RateLimited);
        m.cache(true);
        m.redis_errors().inc();
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains(r#"auth_logins_total{outcome="rate_limited"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"auth_token_cache_lookups_total{result="hit"} 1"#),
            "{text}"
        );
        assert!(text.contains("auth_redis_errors_total 1"), "{text}");
        assert!(
            text.contains(r#"auth_logins_total{outcome="success"} 0"#),
            "{text}"
        );
        assert!(
            text.contains(r#"auth_token_cache_lookups_total{result="miss"} 0"#),
            "{text}"
        );
    }
}
