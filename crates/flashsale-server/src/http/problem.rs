//! How errors leave the server: [`ApiError`] (the service's refusals and the HTTP layer's own
//! failures) sent as RFC 9457 `application/problem+json`, and the extractors ([`Json`], [`Path`],
//! [`Query`], [`RawBody`]) that wrap axum's so that a malformed body, an unknown field, a wrong
//! content type or an oversized body come back as a problem too, never as axum's plain-text
//! rejection.
//!
//! Internal errors answer with a fixed message; their cause is attached to the response as an
//! extension ([`InternalCause`]) and logged once, by the request middleware, with the route.

use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::problem::{PROBLEM_JSON, Problem, ProblemCode};
use crate::service;

/// Why a request failed: the service refused it, or it never reached the service. Each
/// variant's doc names its `code`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// What the service said (sold out, paused, rebuilding, not found …).
    #[error(transparent)]
    Service(#[from] service::Error),
    /// `malformed_json`: the body is not valid JSON.
    #[error("{0}")]
    MalformedJson(String),
    /// `bad_request`: a query string or header that cannot be read.
    #[error("{0}")]
    BadRequest(String),
    /// `idempotency_key_invalid`: `Idempotency-Key` missing or not 1–255 visible ASCII characters.
    #[error("send an Idempotency-Key header of 1 to 255 visible ASCII characters")]
    InvalidIdempotencyKey,
    /// `unauthorized`: missing or wrong credentials.
    #[error("missing or invalid credentials")]
    Unauthorized,
    /// `not_found`: nothing at this path.
    #[error("{0}")]
    NotFound(String),
    /// `method_not_allowed`.
    #[error("method not allowed on this resource")]
    MethodNotAllowed,
    /// `rate_limited`: too many requests from this buyer or address; `Retry-After` says when.
    #[error("too many requests; retry in {} s", retry_after_secs(.retry_after))]
    RateLimited { retry_after: std::time::Duration },
    /// `payload_too_large`.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// `unsupported_media_type`: the body is not `application/json`.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// `validation_failed` without field detail (a JSON document of the wrong shape).
    #[error("{0}")]
    InvalidBody(String),
    /// `too_many_streams`: the buyer already holds `max` event streams open on this instance.
    #[error("you already have {max} event streams open; close one or poll GET /sales/{{id}}/queue instead")]
    TooManyStreams { max: u32 },
}

impl From<crate::limits::Limited> for ApiError {
    fn from(limited: crate::limits::Limited) -> ApiError {
        match limited {
            crate::limits::Limited::Rate { retry_after } => ApiError::RateLimited { retry_after },
            crate::limits::Limited::Streams { max } => ApiError::TooManyStreams { max },
        }
    }
}

/// Whole seconds for `Retry-After`, rounded up, at least one.
fn retry_after_secs(wait: &std::time::Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

/// The cause of a 500, carried to the logging middleware in the response's extensions.
#[derive(Debug, Clone)]
pub struct InternalCause(pub Arc<String>);

impl ApiError {
    /// The code of this error (its status is the code's).
    pub fn code(&self) -> ProblemCode {
        use ProblemCode as C;
        match self {
            ApiError::Service(e) => e.code(),
            ApiError::MalformedJson(_) => C::MalformedJson,
            ApiError::BadRequest(_) => C::BadRequest,
            ApiError::InvalidIdempotencyKey => C::IdempotencyKeyInvalid,
            ApiError::Unauthorized => C::Unauthorized,
            ApiError::NotFound(_) => C::NotFound,
            ApiError::MethodNotAllowed => C::MethodNotAllowed,
            ApiError::RateLimited { .. } => C::RateLimited,
            ApiError::TooManyStreams { .. } => C::TooManyStreams,
            ApiError::PayloadTooLarge(_) => C::PayloadTooLarge,
            ApiError::UnsupportedMediaType(_) => C::UnsupportedMediaType,
            ApiError::InvalidBody(_) => C::ValidationFailed,
        }
    }

    /// The problem document this error is sent as.
    pub fn problem(&self) -> Problem {
        match self {
            ApiError::Service(e) => e.problem(),
            other => Problem::new(other.code(), other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.code().status(), Json(self.problem())).into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        match self {
            ApiError::Unauthorized => {
                response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::RateLimited { retry_after } => {
                let secs = HeaderValue::from(retry_after_secs(&retry_after));
                response.headers_mut().insert(header::RETRY_AFTER, secs);
            }
            ApiError::Service(e) if e.is_transient() => {
                response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(1));
            }
            ApiError::Service(service::Error::Internal(cause)) => {
                response.extensions_mut().insert(InternalCause(Arc::new(format!("{cause:#}"))));
            }
            _ => {}
        }
        response
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> ApiError {
        let text = rejection.body_text();
        match rejection {
            JsonRejection::JsonDataError(_) => ApiError::InvalidBody(text),
            JsonRejection::JsonSyntaxError(_) => ApiError::MalformedJson(text),
            JsonRejection::MissingJsonContentType(_) => {
                ApiError::UnsupportedMediaType("send the body as Content-Type: application/json".to_owned())
            }
            other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge(text),
            _ => ApiError::MalformedJson(text),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(_: PathRejection) -> ApiError {
        // A path segment that cannot be an id names nothing: 404, like an id that does not exist.
        ApiError::NotFound("no resource at this path".to_owned())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> ApiError {
        ApiError::BadRequest(rejection.body_text())
    }
}

/// `axum::Json` whose rejections are problems.
#[derive(Debug, Clone, Copy, Default, FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct Json<T>(pub T);

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        // One kilobyte up front fits a queue answer (the hottest response) without the buffer
        // growing and copying itself three times, as axum's 128-byte start would.
        let mut body = Vec::with_capacity(1024);
        match serde_json::to_writer(&mut body, &self.0) {
            Ok(()) => ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response(),
            Err(e) => ApiError::Service(service::Error::Internal(e.into())).into_response(),
        }
    }
}

/// The raw request body (for signatures over its exact bytes), whose rejections are problems:
/// 413 `payload_too_large` over the body limit, 400 `bad_request` when it cannot be read.
#[derive(Debug, Clone)]
pub struct RawBody(pub axum::body::Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(request: axum::extract::Request, state: &S) -> Result<RawBody, ApiError> {
        match axum::body::Bytes::from_request(request, state).await {
            Ok(bytes) => Ok(RawBody(bytes)),
            Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Err(ApiError::PayloadTooLarge(rejection.body_text()))
            }
            Err(rejection) => Err(ApiError::BadRequest(rejection.body_text())),
        }
    }
}

/// `axum::extract::Path` whose rejections are problems.
#[derive(Debug, Clone, Copy, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct Path<T>(pub T);

/// `axum::extract::Query` whose rejections are problems.
#[derive(Debug, Clone, Copy, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct Query<T>(pub T);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_problem_is_sent_with_its_codes_status_and_retry_after_when_retrying_helps() {
        let refused = ApiError::from(service::Error::refused(ProblemCode::SoldOut, "gone"));
        let response = refused.into_response();
        assert_eq!(response.status(), StatusCode::CONFLICT);
        assert_eq!(response.headers()[header::CONTENT_TYPE], PROBLEM_JSON);
        let rebuilding = ApiError::from(service::Error::Rebuilding).into_response();
        assert_eq!(rebuilding.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(rebuilding.headers()[header::RETRY_AFTER], "1");
        let limited = ApiError::RateLimited { retry_after: std::time::Duration::from_millis(1500) }.into_response();
        assert_eq!(limited.headers()[header::RETRY_AFTER], "2");
    }
}
