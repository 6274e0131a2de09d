//! The vocabulary of failure every layer shares: the stable problem codes ([`ProblemCode`]) and
//! the RFC 9457 document ([`Problem`]) an error leaves the server as.
//!
//! Every error leaves the server as `application/problem+json` with a stable, machine-readable
//! `code` that clients switch on (the `title` and `detail` are for people and may change). The
//! service layer refuses in these codes (`crate::service::Error`); the HTTP layer adds its own
//! (a malformed body, a missing credential) and sends them (`crate::http::problem`). Nothing here
//! knows about handlers, so a stored refusal (an order's replayed answer) is rendered the same way
//! by whichever layer stores it.

use axum::http::StatusCode;
use flashsale_sales::FieldError;
use serde::Serialize;

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
    /// A fresh challenge to solve and join with (`pow_required`, `pow_invalid` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pow: Option<flashsale_queue::pow::IssuedChallenge>,
}

impl Problem {
    /// The document for `code`, with `detail` for people; the code-specific members unset.
    pub fn new(code: ProblemCode, detail: String) -> Problem {
        let status = code.status();
        let title = match status {
            StatusCode::UNPROCESSABLE_ENTITY => "Validation failed",
            other => other.canonical_reason().unwrap_or("Error"),
        };
        Problem {
            problem_type: format!("urn:problem:flashsale:{}", code.as_str()),
            title: title.to_owned(),
            status: status.as_u16(),
            detail,
            code: code.as_str().to_owned(),
            errors: None,
            current_version: None,
            opens_at: None,
            pow: None,
        }
    }
}

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
    PowInvalid = "pow_invalid", 403, "The join's proof of work is wrong, expired, already used, or not this buyer's; pow carries a fresh challenge.";
    NotFound = "not_found", 404, "No such resource (also: another buyer's resource).";
    CodeInvalid = "code_invalid", 404, "No such priority code for this sale (a typo, a guess, another sale's code).";
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
    NotDrawn = "not_drawn", 409, "The pre-queue is drawn and recorded at the batch's opening, not yet.";
    CodeUsed = "code_used", 409, "The priority code was already used by another buyer.";
    InProgress = "in_progress", 409, "A request with this Idempotency-Key is still running; retry shortly.";
    InvalidTransition = "invalid_transition", 409, "The order's status does not allow this (cancelling a paid order).";
    PreconditionFailed = "precondition_failed", 412, "If-Match names another version; the body carries current_version.";
    PowRequired = "pow_required", 428, "This sale asks for a proof of work with each join; pow carries a challenge to solve.";
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
        let sold_out = Problem::new(ProblemCode::SoldOut, String::new());
        assert_eq!((sold_out.status, sold_out.code.as_str(), sold_out.title.as_str()), (409, "sold_out", "Conflict"));
        assert_eq!(Problem::new(ProblemCode::ValidationFailed, String::new()).title, "Validation failed");
    }
}
