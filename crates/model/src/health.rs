//! What `/health` and `/ready` answer, and the one error body: read by the
//! gateway's `/api/health`, by probes and by every caller that names a
//! failing hop.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The body of every error answer: `{"error":{"code","message"}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// The inside of [`ErrorBody`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// A stable code a program can match, e.g. `store_unavailable`.
    pub code: String,
    /// What a person reads: the cause, and the hop it came from.
    pub message: String,
}

/// `GET /health`: the process is alive. Never touches a dependency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Liveness {
    /// Always `"ok"`: a process that can answer is alive.
    pub status: String,
    /// The answering service's name.
    pub service: String,
}

/// Whether a service can do its work, from its `/ready`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadyStatus {
    /// Every dependency answers.
    Ready,
    /// An optional dependency is down; requests are still served (200).
    Degraded,
    /// A required dependency is down (503).
    NotReady,
}

/// `GET /ready`: the service and each dependency it checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Readiness {
    /// Set when not ready, naming each failing check, so the 503 reads like
    /// every other error answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorDetail>,
    /// The verdict.
    pub status: ReadyStatus,
    /// The answering service's name.
    pub service: String,
    /// Each check by name: `"ok"` or why it failed.
    #[serde(default)]
    pub checks: BTreeMap<String, String>,
}

/// What a check answers when its dependency is fine.
pub const CHECK_OK: &str = "ok";

/// The gateway's verdict over all its downstreams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SystemStatus {
    /// Every downstream is ready.
    Ok,
    /// A downstream is degraded (200) or not ready (503).
    Degraded,
}

/// `GET /api/health` at the gateway: each downstream's `/ready` in one
/// document, what a status page or a trainee's first curl reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SystemHealth {
    /// Set when a downstream is not ready, naming it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorDetail>,
    /// The verdict.
    pub status: SystemStatus,
    /// By service name.
    pub downstreams: BTreeMap<String, DownstreamReadiness>,
}

/// One downstream in [`SystemHealth`]: its `/ready`, or why it gave none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DownstreamReadiness {
    /// Whether its `/ready` answered 2xx.
    pub ready: bool,
    /// The HTTP status of its `/ready`, when it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Its `/ready` body, when it was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<Readiness>,
    /// Why there was no answer (connection refused, timeout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_reads_and_writes_the_same_json_as_before() {
        let ready: Readiness = serde_json::from_str(
            r#"{"status":"degraded","service":"api-service","checks":{"auth-service":"connection refused"}}"#,
        )
        .unwrap();
        assert_eq!(ready.status, ReadyStatus::Degraded);
        assert_eq!(ready.error, None);
        let back = serde_json::to_value(&ready).unwrap();
        assert_eq!(back["status"], "degraded");
        assert!(back.get("error").is_none(), "{back}");

        let not_ready = Readiness {
            error: Some(ErrorDetail {
                code: "not_ready".into(),
                message: "not ready: MongoDB: down".into(),
            }),
            status: ReadyStatus::NotReady,
            service: "database-service".into(),
            checks: BTreeMap::from([("MongoDB".into(), "down".into())]),
        };
        let json = serde_json::to_value(&not_ready).unwrap();
        assert_eq!(json["status"], "not_ready");
        assert_eq!(json["error"]["code"], "not_ready");
        assert_eq!(json["checks"]["MongoDB"], "down");
    }

    #[test]
    fn an_error_body_is_code_and_message_under_error() {
        let body = ErrorBody {
            error: ErrorDetail {
                code: "not_found".into(),
                message: "no order x".into(),
            },
        };
        assert_eq!(
            serde_json::to_string(&body).unwrap(),
            r#"{"error":{"code":"not_found","message":"no order x"}}"#
        );
    }
}
