//! What a MongoDB driver error means for the store: [`classify`] is the one
//! place that decides "MongoDB cannot be reached" (503 with `Retry-After`)
//! from anything else (500), and [`record_error`] puts the same facts on
//! the operation's span.

use mongodb::error::{Error as DriverError, ErrorKind, WriteFailure};

use crate::store::StoreError;

/// Server error code of a unique-index violation (E11000).
const DUPLICATE_KEY: i32 = 11000;
/// Server error codes that mean "this node cannot serve now" (shutting down,
/// stepping down, recovering): retrying later helps, so they are 503s.
const NOT_SERVING_CODES: [i32; 8] = [91, 189, 10058, 10107, 11600, 11602, 13435, 13436];

/// Records a failed operation on its span: the server's error code when
/// there is one, and, when `failed`, the error status and a short
/// `error.type` (`timeout`, `connection`, `server_selection`, the code).
pub(super) fn record_error(span: &tracing::Span, e: &DriverError, failed: bool) {
    let code = match e.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(w)) => Some(w.code),
        ErrorKind::Command(c) => Some(c.code),
        _ => None,
    };
    if let Some(code) = code {
        span.record("db.response.status_code", code.to_string().as_str());
    }
    if !failed {
        return;
    }
    let kind = match (e.kind.as_ref(), code) {
        (_, Some(code)) => code.to_string(),
        (ErrorKind::Io(io), _) if io.kind() == std::io::ErrorKind::TimedOut => "timeout".to_owned(),
        (ErrorKind::Io(_) | ErrorKind::ConnectionPoolCleared { .. }, _) => "connection".to_owned(),
        (ErrorKind::ServerSelection { .. }, _) => "server_selection".to_owned(),
        (ErrorKind::DnsResolve { .. }, _) => "dns".to_owned(),
        _ => "_OTHER".to_owned(),
    };
    span.record("otel.status_code", "ERROR");
    span.record("error.type", kind.as_str());
}

/// Whether `e` is a unique-index violation (E11000).
pub(super) fn is_duplicate_key(e: &DriverError) -> bool {
    match e.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(w)) => w.code == DUPLICATE_KEY,
        ErrorKind::Command(c) => c.code == DUPLICATE_KEY,
        ErrorKind::InsertMany(m) => m
            .write_errors
            .iter()
            .flatten()
            .any(|w| w.code == DUPLICATE_KEY),
        _ => false,
    }
}

/// Maps a driver error to a [`StoreError`]: the one place that decides what
/// "MongoDB cannot be reached" means. `what` names the failed operation.
pub(super) fn classify(what: &str, e: &DriverError) -> StoreError {
    let unreachable =
        |cause: &str| StoreError::Unavailable(format!("MongoDB is unreachable: {cause}"));
    match e.kind.as_ref() {
        ErrorKind::ServerSelection { message, .. } => unreachable(&format!(
            "{} (no server answered in time)",
            short_cause(message)
        )),
        ErrorKind::Io(io) => unreachable(io_cause(io.kind())),
        ErrorKind::ConnectionPoolCleared { .. } => {
            unreachable("connection pool cleared after a network error")
        }
        ErrorKind::DnsResolve { .. } => unreachable("cannot resolve the host name"),
        ErrorKind::Command(c) if NOT_SERVING_CODES.contains(&c.code) => {
            unreachable(&format!("the server is not serving ({})", c.code_name))
        }
        kind => StoreError::Internal(format!("MongoDB {what} failed: {kind}")),
    }
}

/// A few words for an I/O error kind.
fn io_cause(kind: std::io::ErrorKind) -> &'static str {
    use std::io::ErrorKind as K;
    match kind {
        K::ConnectionRefused => "connection refused",
        K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe | K::UnexpectedEof => {
            "connection lost"
        }
        K::TimedOut => "network timeout",
        K::NotConnected | K::AddrNotAvailable => "not connected",
        _ => "network error",
    }
}

/// A few words for the cause inside a server-selection error, whose message
/// describes the whole topology.
fn short_cause(message: &str) -> &'static str {
    let m = message.to_ascii_lowercase();
    if m.contains("connection refused") {
        "connection refused"
    } else if m.contains("connection reset") || m.contains("broken pipe") {
        "connection lost"
    } else if m.contains("timed out") || m.contains("timedout") {
        "connection timed out"
    } else if m.contains("dns")
        || m.contains("lookup")
        || m.contains("name or service not known")
        || m.contains("nodename nor servname")
    {
        "cannot resolve the host name"
    } else if m.contains("authentication") {
        "authentication failed"
    } else {
        "server selection timed out"
    }
}

#[cfg(test)]
mod tests {
    use mongodb::bson::doc;

    use super::*;

    fn command_error(code: i32, name: &str) -> DriverError {
        let e: mongodb::error::CommandError = mongodb::bson::from_document(doc! {
            "code": code, "codeName": name, "errmsg": "test",
        })
        .unwrap();
        ErrorKind::Command(e).into()
    }

    #[test]
    fn network_errors_are_unavailable_and_the_rest_internal() {
        let io = |k: std::io::ErrorKind| DriverError::from(std::io::Error::from(k));
        let refused = classify("find", &io(std::io::ErrorKind::ConnectionRefused));
        let reset = classify("find", &io(std::io::ErrorKind::ConnectionReset));
        let timeout = classify("find", &io(std::io::ErrorKind::TimedOut));
        let shutting_down = classify("find", &command_error(91, "ShutdownInProgress"));
        let bad_query = classify("find", &command_error(2, "BadValue"));

        assert_eq!(
            refused,
            StoreError::Unavailable("MongoDB is unreachable: connection refused".into())
        );
        assert_eq!(
            reset,
            StoreError::Unavailable("MongoDB is unreachable: connection lost".into())
        );
        assert_eq!(
            timeout,
            StoreError::Unavailable("MongoDB is unreachable: network timeout".into())
        );
        assert!(
            matches!(&shutting_down, StoreError::Unavailable(m) if m.contains("ShutdownInProgress")),
            "{shutting_down:?}"
        );
        assert!(
            matches!(&bad_query, StoreError::Internal(m) if m.starts_with("MongoDB find failed")),
            "{bad_query:?}"
        );
    }

    #[test]
    fn server_selection_messages_shrink_to_a_cause() {
        let topology = "Server selection timeout: No available servers. Topology: { Type: \
                        Unknown, Servers: [ { Address: 127.0.0.1:1, Type: Unknown, Error: \
                        Kind: I/O error: Connection refused (os error 111), labels: {} } ] }";
        assert_eq!(short_cause(topology), "connection refused");
        assert_eq!(
            short_cause("... I/O error: timed out ..."),
            "connection timed out"
        );
        assert_eq!(
            short_cause("failed to lookup address information: Name or service not known"),
            "cannot resolve the host name"
        );
        assert_eq!(
            short_cause("No available servers"),
            "server selection timed out"
        );
    }

    #[test]
    fn duplicate_key_is_recognised_in_command_errors() {
        assert!(is_duplicate_key(&command_error(11000, "DuplicateKey")));
        assert!(!is_duplicate_key(&command_error(2, "BadValue")));
        assert!(!is_duplicate_key(&DriverError::from(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused
        ))));
    }
}
