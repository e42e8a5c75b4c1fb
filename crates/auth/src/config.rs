//! auth-service configuration: the variables it reads and the typed
//! [`Config`] they become.

use std::sync::Arc;
use std::time::Duration;

use cloudmart_config::{EnvReader, EnvVar, FromEnv, Setting, port};
use cloudmart_http::server::ServerConfig;

use crate::redis_store::RedisConfig;

pub const PORT: Setting<u16> = port("3000");
pub const JWT_SECRET: Setting<Secret> = Setting::with(
    EnvVar::optional(
        "JWT_SECRET",
        "at least 32 bytes",
        "HS256 signing key; unset means a random key per process (tokens die with it)",
    )
    .secret(),
    |v| {
        if v.len() >= 32 {
            Ok(Secret(Arc::new(v.as_bytes().to_vec())))
        } else {
            Err(format!("too short ({} bytes)", v.len()))
        }
    },
);
pub const JWT_TTL_SECS: Setting<Duration> = Setting::secs(
    EnvVar::with_default(
        "JWT_TTL_SECS",
        "3600",
        "seconds from 60 to 604800",
        "Lifetime of issued tokens",
    ),
    60,
    MAX_TTL_SECS,
);
pub const AUTH_HASH_CONCURRENCY: Setting<usize> = Setting::<usize>::whole(
    EnvVar::with_default(
        "AUTH_HASH_CONCURRENCY",
        "4",
        "a whole number from 1 to 64",
        "Password hashes computed at once; each holds 19 MiB while it runs",
    ),
    1,
    64,
);
pub const AUTH_SEED_USERS: Setting<bool> = Setting::parsed(EnvVar::with_default(
    "AUTH_SEED_USERS",
    "true",
    "true or false",
    "Create the demo users alice/alice-secret, bob/bob-secret and the admin operator/operator-secret at start-up",
));

pub const LOGIN_MAX_PER_ACCOUNT: Setting<u64> = Setting::<u64>::whole(
    EnvVar::with_default(
        "LOGIN_MAX_PER_ACCOUNT",
        "5",
        "a whole number from 0 to 1000000 (0: no limit)",
        "Failed logins allowed per account in one window; further attempts answer 429 until it ends",
    ),
    0,
    1_000_000,
);
pub const LOGIN_MAX_PER_CLIENT: Setting<u64> = Setting::<u64>::whole(
    EnvVar::with_default(
        "LOGIN_MAX_PER_CLIENT",
        "10000",
        "a whole number from 0 to 1000000 (0: no limit)",
        "Login attempts allowed per client address in one window, successful ones included; high enough for the load generator",
    ),
    0,
    1_000_000,
);
pub const LOGIN_WINDOW_SECS: Setting<Duration> = Setting::secs(
    EnvVar::with_default(
        "LOGIN_WINDOW_SECS",
        "60",
        "seconds from 1 to 86400",
        "Length of the fixed window both login limits count in",
    ),
    1,
    86_400,
);
pub const TOKEN_CACHE_SECS: Setting<Duration> = Setting::secs(
    EnvVar::with_default(
        "TOKEN_CACHE_SECS",
        "60",
        "seconds from 0 to 86400 (0: no cache)",
        "How long a validated token is remembered (never past its expiry)",
    ),
    0,
    86_400,
);
pub const TRUSTED_PROXY_HOPS: Setting<usize> = Setting::<usize>::whole(
    EnvVar::with_default(
        "TRUSTED_PROXY_HOPS",
        "1",
        "a whole number from 0 to 10",
        "Proxies of ours that append to X-Forwarded-For (1: the gateway); the client is that many entries from the right, 0 uses the TCP peer",
    ),
    0,
    10,
);

/// The longest `JWT_TTL_SECS` allowed, so the longest a token of ours lives.
pub(crate) const MAX_TTL_SECS: u64 = 604_800;

/// A signing key that never shows up in Debug output or logs.
#[derive(Clone)]
pub struct Secret(pub(crate) Arc<Vec<u8>>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// The two login rate limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginLimits {
    /// Failed logins per account per window; 0 means no limit.
    pub max_failures_per_account: u64,
    /// Attempts per client address per window; 0 means no limit.
    pub max_per_client: u64,
    /// The fixed window both count in.
    pub window: Duration,
}

/// Everything this service reads from its environment, once, at startup.
#[derive(Debug, Clone)]
pub struct Config {
    /// Listener and timeouts.
    pub server: ServerConfig,
    /// Signing key; `None` means generate one.
    pub jwt_secret: Option<Secret>,
    /// Token lifetime.
    pub token_ttl: Duration,
    /// Concurrent hashes.
    pub hash_concurrency: usize,
    /// Whether to create the demo users.
    pub seed_users: bool,
    /// Redis, or `None` for the in-memory store.
    pub redis: Option<RedisConfig>,
    /// Login rate limits.
    pub limits: LoginLimits,
    /// How long a validated token is cached; zero turns the cache off.
    pub token_cache: Duration,
    /// Proxies of ours in front of this service that append to `X-Forwarded-For`.
    pub trusted_proxy_hops: usize,
}

impl FromEnv for Config {
    fn read(r: &mut EnvReader<'_>) -> Self {
        let port = r.get(&PORT);
        let jwt_secret = r.optional(&JWT_SECRET);
        let token_ttl = r.get(&JWT_TTL_SECS);
        let hash_concurrency = r.get(&AUTH_HASH_CONCURRENCY);
        let seed_users = r.get(&AUTH_SEED_USERS);
        let limits = LoginLimits {
            max_failures_per_account: r.get(&LOGIN_MAX_PER_ACCOUNT),
            max_per_client: r.get(&LOGIN_MAX_PER_CLIENT),
            window: r.get(&LOGIN_WINDOW_SECS),
        };
        let token_cache = r.get(&TOKEN_CACHE_SECS);
        let trusted_proxy_hops = r.get(&TRUSTED_PROXY_HOPS);
        let redis = RedisConfig::from_env(r);
        Self {
            server: ServerConfig::from_env(r, port),
            jwt_secret,
            token_ttl,
            hash_concurrency,
            seed_users,
            redis,
            limits,
            token_cache,
            trusted_proxy_hops,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn config(pairs: &[(&str, &str)]) -> Result<Config, String> {
        let env: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::from_env(&env).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_leave_room_for_the_load_generator() {
        let c = config(&[]).unwrap();
        assert!(c.redis.is_none());
        assert_eq!(c.limits.max_failures_per_account, 5);
        assert_eq!(c.limits.max_per_client, 10_000);
        assert_eq!(c.limits.window, Duration::from_secs(60));
        assert_eq!(c.token_cache, Duration::from_secs(60));
        assert_eq!(c.trusted_proxy_hops, 1);
    }

    #[test]
    fn every_bad_variable_is_named_at_once() {
        let line = config(&[
            ("LOGIN_MAX_PER_ACCOUNT", "-1"),
            ("LOGIN_MAX_PER_CLIENT", "many"),
            ("LOGIN_WINDOW_SECS", "0"),
            ("TOKEN_CACHE_SECS", "1.5"),
            ("TRUSTED_PROXY_HOPS", "11"),
            ("REDIS_URL", "localhost:6379"),
        ])
        .unwrap_err();
        for name in [
            "LOGIN_MAX_PER_ACCOUNT",
            "LOGIN_MAX_PER_CLIENT",
            "LOGIN_WINDOW_SECS=\"0\"",
            "TOKEN_CACHE_SECS",
            "TRUSTED_PROXY_HOPS=\"11\"",
            "REDIS_URL=<redacted>",
        ] {
            assert!(line.contains(name), "{name} missing from: {line}");
        }
    }

    #[test]
    fn reads_only_the_settings_it_declares() {
        cloudmart_run::check_settings::<crate::Application>();
    }
}
