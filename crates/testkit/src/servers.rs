//! Finding the real servers tests run against.
//!
//! The test scripts export `MONGODB_URI`, `AMQP_URL` and `REDIS_URL`. When one
//! is missing or not accepting connections, a test fails under `CI=true`;
//! elsewhere it prints one `SKIPPED` line saying what to start, and returns
//! `None` so the test can end early.

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::proxy::resolve;

/// The `host:port` part of a URL like `amqp://guest:guest@127.0.0.1:5672/%2f`.
pub fn authority(url: &str) -> Option<String> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.split(['/', '?']).next()?;
    let host_port = rest.rsplit_once('@').map_or(rest, |(_, hp)| hp);
    // A MongoDB URI may list several hosts; take the first.
    let first = host_port.split(',').next()?;
    (!first.is_empty()).then(|| first.to_owned())
}

/// The socket address behind a URL, if it resolves.
pub fn address(url: &str) -> Option<SocketAddr> {
    resolve(&authority(url)?)
}

/// The URL in `var` when its server accepts connections.
///
/// Otherwise: panics under `CI=true`, or prints `SKIPPED: <test>: ...` and
/// returns `None`. `how` says what to start, e.g. `rabbitmq-server -detached`.
pub fn require(var: &str, test: &str, how: &str) -> Option<String> {
    let url = std::env::var(var).ok().filter(|v| !v.trim().is_empty());
    let reachable = url
        .as_deref()
        .and_then(address)
        .is_some_and(|addr| TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok());
    match url {
        Some(url) if reachable => Some(url),
        _ => {
            let why = match std::env::var(var) {
                Ok(v) if !v.trim().is_empty() => format!("{var}={v} is not accepting connections"),
                _ => format!("{var} is not set"),
            };
            let msg = format!("{test}: {why}; start it with: {how}");
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{msg}");
            }
            eprintln!("SKIPPED: {msg}");
            None
        }
    }
}

/// `MONGODB_URI` when its server accepts connections; as [`require`].
pub fn require_mongodb(test: &str) -> Option<String> {
    require(
        "MONGODB_URI",
        test,
        "eval \"$(scripts/mongo-test-server.sh /tmp/mongo.pid)\"; export MONGODB_URI",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authority_of_common_urls() {
        assert_eq!(
            authority("amqp://guest:guest@127.0.0.1:5672/%2f").as_deref(),
            Some("127.0.0.1:5672")
        );
        assert_eq!(
            authority("redis://127.0.0.1:6379/0").as_deref(),
            Some("127.0.0.1:6379")
        );
        assert_eq!(
            authority("mongodb://127.0.0.1:27017,h2:1/?x=1").as_deref(),
            Some("127.0.0.1:27017")
        );
        assert_eq!(authority("mongodb://u:p@h:1").as_deref(), Some("h:1"));
    }
}
