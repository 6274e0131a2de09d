//! RFC 9457 problem details: the one error type every handler returns.
//!
//! Every error leaves the server as `application/problem+json` with a stable, machine-readable
//! `code` that clients switch on (the `title` and `detail` are for people and may change). The
//! extractors at the bottom ([`Json`], [`Path`], [`Query`]) wrap axum's so that a malformed body,
//! an unknown field, a wrong content type or an oversized body come back as a problem too, never
//! as axum's plain-text rejection.
//!
//! Internal errors answer with a fixed message; their cause is attached to the response as an
//! extension ([`InternalCause`]) and logged once, by the request middleware, with the route.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use flashsale_sales::{FieldError, SalesError, ValidationErrors};
use serde::Serialize;
use std::sync::Arc;

/// The media type of problem details.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// An RFC 9457 problem document, as serialised.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// A URI naming the problem type: `urn:problem:flashsale:<code>`.
    #[serde(rename = "type")]
    #[schema(example = "urn:problem:flashsale:validation_failed")]
    pub problem_type: String,
    /// Short summary of the problem type.
    #[schema(example = "Validation failed")]
    pub title: String,
    /// The HTTP status code, repeated for clients that lose it.
    #[schema(example = 422)]
    pub status: u16,
    /// What went wrong this time, for people.
    pub detail: String,
    /// Machine-readable problem code; stable across releases.
    #[schema(example = "validation_failed")]
    pub code: String,
    /// Field-level errors (`validation_failed` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<FieldError>>,
    /// The current version of the resource (`precondition_failed` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_version: Option<i64>,
    /// When the queue opens (`not_open` only): the pre-queue's opening.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub opens_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Why a request failed. Each variant's doc names its status and `code`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400 `malformed_json`: the body is not valid JSON.
    #[error("{0}")]
    MalformedJson(String),
    /// 400 `bad_request`: a query string or header that cannot be read.
    #[error("{0}")]
    BadRequest(String),
    /// 400 `idempotency_key_invalid`: `Idempotency-Key` missing or not 1–255 visible ASCII
    /// characters.
    #[error("send an Idempotency-Key header of 1 to 255 visible ASCII characters")]
    InvalidIdempotencyKey,
    /// 401 `unauthorized`: missing or wrong credentials.
    #[error("missing or invalid credentials")]
    Unauthorized,
    /// 403 with a specific code (`token_invalid`): authenticated, but the credential presented
    /// for this step does not entitle the buyer to it.
    #[error("{detail}")]
    Forbidden { code: ProblemCode, detail: String },
    /// 404 `not_found`.
    #[error("{0}")]
    NotFound(String),
    /// 405 `method_not_allowed`.
    #[error("method not allowed on this resource")]
    MethodNotAllowed,
    /// 409 with a specific code: the request is valid but conflicts with the resource's state
    /// (`stock_below_committed`, `sale_ended`, `batch_finished`).
    #[error("{detail}")]
    Conflict { code: ProblemCode, detail: String },
    /// 409 `not_open`: the batch's queue does not accept buyers yet; `opens_at` says when.
    #[error("the queue opens at {opens_at}")]
    NotOpen { opens_at: chrono::DateTime<chrono::Utc> },
    /// 429 `rate_limited`: too many requests from this buyer or address; `Retry-After` says when
    /// to try again.
    #[error("too many requests; retry in {} s", retry_after_secs(.retry_after))]
    RateLimited { retry_after: std::time::Duration },
    /// 412 `precondition_failed`: `If-Match` names another version than the current one.
    #[error("the sale is at version {current}; reload it and retry")]
    VersionMismatch { current: i64 },
    /// 413 `payload_too_large`.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// 415 `unsupported_media_type`: the body is not `application/json`.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 422 `validation_failed`: well-formed but breaks the rules; `errors` says which fields.
    #[error("{0}")]
    Validation(ValidationErrors),
    /// 422 `validation_failed` without field detail (a JSON document of the wrong shape).
    #[error("{0}")]
    InvalidBody(String),
    /// 422 with a specific code (`idempotency_key_reused`, `amount_mismatch`,
    /// `payment_ref_reused`): understood, but it contradicts what was sent before.
    #[error("{detail}")]
    Unprocessable { code: ProblemCode, detail: String },
    /// 429 `too_many_streams`: the buyer already holds `max` event streams open on this instance.
    #[error("you already have {max} event streams open; close one or poll GET /sales/{{id}}/queue instead")]
    TooManyStreams { max: u32 },
    /// 503 `rebuilding`: the batch's Redis state is being rebuilt from PostgreSQL; `Retry-After`
    /// says when to try again.
    #[error("the sale's stock is being restored after a storage failure; retry in a second")]
    Rebuilding,
    /// 503 `unavailable`: Redis or PostgreSQL cannot be reached right now; retrying after
    /// `Retry-After` is safe.
    #[error("{0}")]
    Unavailable(String),
    /// 500 `internal`: a bug or an unexpected state; the cause is logged, not sent.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
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
            ApiError::MalformedJson(_) => C::MalformedJson,
            ApiError::BadRequest(_) => C::BadRequest,
            ApiError::InvalidIdempotencyKey => C::IdempotencyKeyInvalid,
            ApiError::Unauthorized => C::Unauthorized,
            ApiError::Forbidden { code, .. }
            | ApiError::Conflict { code, .. }
            | ApiError::Unprocessable { code, .. } => *code,
            ApiError::NotFound(_) => C::NotFound,
            ApiError::MethodNotAllowed => C::MethodNotAllowed,
            ApiError::NotOpen { .. } => C::NotOpen,
            ApiError::RateLimited { .. } => C::RateLimited,
            ApiError::TooManyStreams { .. } => C::TooManyStreams,
            ApiError::VersionMismatch { .. } => C::PreconditionFailed,
            ApiError::PayloadTooLarge(_) => C::PayloadTooLarge,
            ApiError::UnsupportedMediaType(_) => C::UnsupportedMediaType,
            ApiError::Validation(_) | ApiError::InvalidBody(_) => C::ValidationFailed,
            ApiError::Rebuilding => C::Rebuilding,
            ApiError::Unavailable(_) => C::Unavailable,
            ApiError::Internal(_) => C::Internal,
        }
    }

    /// The status and code of this error.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        let code = self.code();
        (code.status(), code.as_str())
    }

    /// A 404 for a sale that does not exist.
    pub fn sale_not_found() -> ApiError {
        ApiError::NotFound("no sale with this id".to_owned())
    }
}

fn title(status: StatusCode) -> String {
    match status {
        StatusCode::UNPROCESSABLE_ENTITY => "Validation failed".to_owned(),
        other => other.canonical_reason().unwrap_or("Error").to_owned(),
    }
}

impl ApiError {
    /// The problem document this error is sent as.
    pub fn problem(&self) -> Problem {
        let (status, code) = self.status_and_code();
        let detail = match self {
            ApiError::Validation(errors) => {
                errors.0.iter().map(|e| format!("{}: {}", e.field, e.message)).collect::<Vec<_>>().join("; ")
            }
            ApiError::Internal(_) => "the server failed to handle the request; it has been logged".to_owned(),
            other => other.to_string(),
        };
        Problem {
            problem_type: format!("urn:problem:flashsale:{code}"),
            title: title(status),
            status: status.as_u16(),
            detail,
            code: code.to_owned(),
            errors: match self {
                ApiError::Validation(errors) => Some(errors.0.clone()),
                _ => None,
            },
            current_version: match self {
                ApiError::VersionMismatch { current } => Some(*current),
                _ => None,
            },
            opens_at: match self {
                ApiError::NotOpen { opens_at } => Some(*opens_at),
                _ => None,
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status_and_code().0;
        let problem = self.problem();
        let mut response =
            (status, [(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON))], axum::Json(problem))
                .into_response();
        // `axum::Json` sets application/json; problem details have their own media type.
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        match self {
            ApiError::Unauthorized => {
                response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::RateLimited { retry_after } => {
                let secs = HeaderValue::from(retry_after_secs(&retry_after));
                response.headers_mut().insert(header::RETRY_AFTER, secs);
            }
            ApiError::Rebuilding | ApiError::Unavailable(_) => {
                response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(1));
            }
            ApiError::Internal(cause) => {
                response.extensions_mut().insert(InternalCause(Arc::new(format!("{cause:#}"))));
            }
            _ => {}
        }
        response
    }
}

impl From<ValidationErrors> for ApiError {
    fn from(errors: ValidationErrors) -> ApiError {
        ApiError::Validation(errors)
    }
}

impl From<SalesError> for ApiError {
    fn from(error: SalesError) -> ApiError {
        match error {
            SalesError::Database(e) => ApiError::from(e),
            corrupt @ SalesError::CorruptRow { .. } => ApiError::Internal(corrupt.into()),
            SalesError::StockBelowCommitted { stock } => ApiError::Conflict {
                code: ProblemCode::StockBelowCommitted,
                detail: format!("buyers hold more units of the batch (pending + paid) than a stock of {stock}"),
            },
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> ApiError {
        if flashsale_order::database_unavailable(&error) {
            ApiError::Unavailable("PostgreSQL is unavailable; retry shortly".to_owned())
        } else {
            ApiError::Internal(error.into())
        }
    }
}

/// Redis errors: a connection that broke or timed out is a 503 (retrying is safe); anything
/// else (a script error, a wrong type) is a bug.
pub(crate) fn from_redis(error: redis::RedisError) -> ApiError {
    if error.is_io_error() || error.is_timeout() || error.is_connection_dropped() || error.is_connection_refusal() {
        ApiError::Unavailable("Redis is unavailable; retry shortly".to_owned())
    } else {
        ApiError::Internal(error.into())
    }
}

impl From<deadpool_redis::PoolError> for ApiError {
    fn from(_: deadpool_redis::PoolError) -> ApiError {
        ApiError::Unavailable("Redis is unavailable; retry shortly".to_owned())
    }
}

impl From<flashsale_inventory::InventoryError> for ApiError {
    fn from(error: flashsale_inventory::InventoryError) -> ApiError {
        use flashsale_inventory::InventoryError as E;
        match error {
            E::NoConnection(e) => e.into(),
            E::Redis(e) => from_redis(e),
            // Quantities are validated before the inventory is asked: a zero here is a bug.
            other @ (E::MalformedReply { .. } | E::ZeroUnits) => ApiError::Internal(other.into()),
        }
    }
}

impl From<flashsale_order::OrderError> for ApiError {
    fn from(error: flashsale_order::OrderError) -> ApiError {
        use flashsale_order::OrderError as E;
        match error {
            E::NotFound => ApiError::NotFound("no such order".to_owned()),
            E::InvalidTransition { from, to } => ApiError::Conflict {
                code: ProblemCode::InvalidTransition,
                detail: format!("an order that is {} cannot become {}", from.as_str(), to.as_str()),
            },
            e if e.is_unavailable() => ApiError::Unavailable("PostgreSQL is unavailable; retry shortly".to_owned()),
            other => ApiError::Internal(other.into()),
        }
    }
}

impl From<flashsale_queue::QueueError> for ApiError {
    fn from(error: flashsale_queue::QueueError) -> ApiError {
        use flashsale_queue::QueueError as E;
        match error {
            E::NoConnection(e) => e.into(),
            E::Redis(e) => from_redis(e),
            other @ E::MalformedReply { .. } => ApiError::Internal(other.into()),
        }
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
            Err(e) => ApiError::Internal(e.into()).into_response(),
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

/// Declares [`ProblemCode`] from one table: variant, `code`, status, meaning.
macro_rules! problem_codes {
    ($($variant:ident = $code:literal, $status:literal, $meaning:literal;)*) => {
        /// Every `code` a problem document can carry: stable across releases, what clients switch
        /// on. The README's table and the OpenAPI description's are generated from this one
        /// ([`codes_table`]; a test fails when the README's differs).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ProblemCode {
            $(#[doc = $meaning] $variant,)*
        }

        impl ProblemCode {
            /// Every code, in the table's order.
            pub const ALL: &[ProblemCode] = &[$(ProblemCode::$variant),*];

            /// The code as sent (`sold_out`).
            pub fn as_str(self) -> &'static str {
                match self { $(ProblemCode::$variant => $code,)* }
            }

            /// The HTTP status a problem with this code is sent with.
            pub fn status(self) -> StatusCode {
                match self {
                    $(ProblemCode::$variant => StatusCode::from_u16($status).expect("a valid status"),)*
                }
            }

            /// What the code means, for the table.
            pub fn meaning(self) -> &'static str {
                match self { $(ProblemCode::$variant => $meaning,)* }
            }
        }
    };
}

problem_codes! {
    MalformedJson = "malformed_json", 400, "The body is not valid JSON.";
    BadRequest = "bad_request", 400, "A query parameter or header cannot be read.";
    IdempotencyKeyInvalid = "idempotency_key_invalid", 400, "Idempotency-Key is missing or not 1-255 visible ASCII characters.";
    Unauthorized = "unauthorized", 401, "Missing or invalid bearer token (or payment signature).";
    TokenInvalid = "token_invalid", 403, "The admission token is forged, expired, or not this buyer's, sale's or batch's.";
    NotFound = "not_found", 404, "No such resource (also: another buyer's resource).";
    MethodNotAllowed = "method_not_allowed", 405, "The resource does not support this method.";
    StockBelowCommitted = "stock_below_committed", 409, "New stock would be below the units buyers hold (reserved + sold).";
    SaleEnded = "sale_ended", 409, "The sale was closed by operations; it can no longer change.";
    BatchFinished = "batch_finished", 409, "The current batch's window is over.";
    SoldOut = "sold_out", 409, "No units left to reserve.";
    LimitReached = "limit_reached", 409, "The buyer already holds or bought the per-user limit.";
    TokenUsed = "token_used", 409, "The admission token was already used to reserve.";
    NotOpen = "not_open", 409, "The batch has not opened yet (opens_at says when).";
    Paused = "paused", 409, "Operations paused the batch.";
    Closed = "closed", 409, "The batch is closed.";
    NotClosed = "not_closed", 409, "The batch is still running: its draw is published once it closes.";
    InProgress = "in_progress", 409, "A request with this Idempotency-Key is still running; retry shortly.";
    InvalidTransition = "invalid_transition", 409, "The order's status does not allow this (cancelling a paid order).";
    PreconditionFailed = "precondition_failed", 412, "If-Match names another version; the body carries current_version.";
    PayloadTooLarge = "payload_too_large", 413, "The body exceeds the configured limit.";
    UnsupportedMediaType = "unsupported_media_type", 415, "The body must be application/json.";
    ValidationFailed = "validation_failed", 422, "The body is well-formed but breaks a rule; errors lists each field.";
    IdempotencyKeyReused = "idempotency_key_reused", 422, "This Idempotency-Key was used for a different request.";
    AmountMismatch = "amount_mismatch", 422, "The payment's amount is not the order's; recorded, nothing changed.";
    PaymentRefReused = "payment_ref_reused", 422, "This payment_ref was sent before with different contents.";
    RateLimited = "rate_limited", 429, "Too many requests from this buyer or address; Retry-After says when to try again.";
    TooManyStreams = "too_many_streams", 429, "The buyer holds as many event streams open as allowed; close one or poll.";
    Unavailable = "unavailable", 503, "Redis or PostgreSQL cannot be reached; safe to retry.";
    Rebuilding = "rebuilding", 503, "The batch's stock is being rebuilt after Redis lost it; retry after Retry-After.";
    Internal = "internal", 500, "Unexpected failure; logged on the server.";
}

/// The codes as a Markdown table (`code`, status, meaning): the OpenAPI description's and the
/// README's.
pub fn codes_table() -> String {
    let mut table = String::from("| code | status | meaning |\n|---|---|---|\n");
    for code in ProblemCode::ALL {
        table.push_str(&format!("| `{}` | {} | {} |\n", code.as_str(), code.status().as_u16(), code.meaning()));
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_readme_lists_every_problem_code_as_the_code_does() {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
        let start = readme.find("<!-- problem-codes:").expect("the README marks its codes table");
        let table = &readme[readme[start..].find('\n').unwrap() + start + 1..];
        let table = &table[..table.find("<!-- /problem-codes -->").expect("the table's end is marked")];
        assert_eq!(table, codes_table(), "regenerate the README's table from ProblemCode (codes_table)");
    }

    #[test]
    fn every_code_is_unique_and_sent_with_its_own_status() {
        let mut seen = std::collections::HashSet::new();
        for code in ProblemCode::ALL {
            assert!(seen.insert(code.as_str()), "{} twice", code.as_str());
        }
        let conflict = ApiError::Conflict { code: ProblemCode::SoldOut, detail: String::new() };
        assert_eq!(conflict.status_and_code(), (StatusCode::CONFLICT, "sold_out"));
        assert_eq!(ApiError::Rebuilding.problem().code, "rebuilding");
    }
}
