//! One JSON error body for every 4xx and 5xx in every service:
//! `{"error":{"code":"...","message":"..."}}`.
//!
//! Services turn their own error enums into [`ApiError`]. Two pieces make
//! sure nothing escapes the format: the [`Json`] extractor, whose rejections
//! become precise 400/413/415/422 bodies, and [`json_errors`], a middleware
//! that rewrites any error response that is not JSON yet (axum's empty 405,
//! tower-http's plain-text 413 and 408) into the same shape.

use axum::body::Body;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// An error response: status, a stable machine-readable code and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable code such as `validation_failed` or `upstream_unavailable`.
    pub code: &'static str,
    /// A sentence for a human. 5xx messages never carry internals.
    pub message: String,
    /// Seconds for a `Retry-After` header (429 and 503).
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// Builds an error.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// Adds a `Retry-After` header.
    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// 400 `bad_request`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 422 `validation_failed`.
    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            message,
        )
    }

    /// 404 `not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 401 `unauthorized`.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 500 `internal`: the cause is logged by the caller, never sent.
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; see the service logs for this trace id",
        )
    }

    /// The JSON body.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message: self.message.clone(),
            },
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

pub use cloudmart_model::{ErrorBody, ErrorDetail};

/// Error codes of a 503 that means "a dependency of mine is down" rather
/// than "I am busy": database-service without MongoDB, auth-service without
/// Redis, and a hop passing such a 503 on. Callers pass these on at once
/// instead of retrying inside the request.
pub const DEPENDENCY_DOWN_CODES: &[&str] = &[
    STORE_UNAVAILABLE,
    DEPENDENCY_UNAVAILABLE,
    UPSTREAM_UNAVAILABLE,
];
/// database-service cannot reach its store (MongoDB, or a disk that refuses writes).
pub const STORE_UNAVAILABLE: &str = "store_unavailable";
/// A service's own dependency is down (auth-service without Redis).
pub const DEPENDENCY_UNAVAILABLE: &str = "dependency_unavailable";
/// A downstream answered 503, passed on by the hop that called it.
pub const UPSTREAM_UNAVAILABLE: &str = "upstream_unavailable";

/// A JSON body extractor whose rejections use the CloudMart error body.
///
/// Malformed JSON is 400, a wrong type or a missing field is 422, a missing
/// `Content-Type` is 415 and a body over the limit is 413, each with a
/// message that says what was wrong and where.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// A query-string extractor whose rejection is a 400 in the CloudMart error
/// body naming the parameter: `?limit=abc` gives "invalid query parameter
/// limit: invalid digit found in string".
#[derive(Debug, Clone, Copy, Default)]
pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Self(value)),
            // axum's text already names the parameter: "Failed to
            // deserialize query string: limit: invalid digit found in string".
            Err(rejection) => {
                let detail = rejection.body_text();
                let detail = detail
                    .strip_prefix("Failed to deserialize query string: ")
                    .unwrap_or(&detail);
                Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_query",
                    format!("invalid query parameter {detail}"),
                ))
            }
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    let status = rejection.status();
    let detail = rejection.body_text();
    match rejection {
        JsonRejection::JsonDataError(_) => ApiError::new(status, "invalid_body", detail),
        JsonRejection::JsonSyntaxError(_) => ApiError::new(status, "malformed_json", detail),
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            status,
            "unsupported_media_type",
            "expected a request with Content-Type: application/json",
        ),
        _ if status == StatusCode::PAYLOAD_TOO_LARGE => payload_too_large(),
        _ => ApiError::new(status, "bad_request", detail),
    }
}

/// Largest request body any service accepts.
pub const BODY_LIMIT_BYTES: usize = 64 * 1024;

fn payload_too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!(
            "the request body is larger than {} KiB",
            BODY_LIMIT_BYTES / 1024
        ),
    )
}

/// Fallback for unknown routes: 404 with the path in the message.
pub async fn not_found(req: Request) -> ApiError {
    ApiError::not_found(format!(
        "no route for {} {}",
        req.method(),
        req.uri().path()
    ))
}

/// Rewrites non-JSON error responses into the CloudMart error body.
pub async fn json_errors(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let response = next.run(req).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return response;
    }
    let error = match status {
        StatusCode::METHOD_NOT_ALLOWED => ApiError::new(
            status,
            "method_not_allowed",
            format!("{method} is not allowed on this route"),
        ),
        StatusCode::PAYLOAD_TOO_LARGE => payload_too_large(),
        StatusCode::REQUEST_TIMEOUT => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            "the request took longer than this service's time limit",
        ),
        StatusCode::NOT_FOUND => ApiError::not_found("not found"),
        s if s.is_server_error() => ApiError::internal(),
        s => ApiError::new(
            s,
            "bad_request",
            s.canonical_reason().unwrap_or("request rejected"),
        ),
    };
    let (mut parts, _) = response.into_parts();
    let fresh = error.into_response();
    parts.status = fresh.status();
    parts.headers.remove(header::CONTENT_LENGTH);
    let (fresh_parts, body) = fresh.into_parts();
    for (name, value) in fresh_parts.headers.iter() {
        parts.headers.insert(name.clone(), value.clone());
    }
    Response::from_parts(parts, Body::new(body))
}
