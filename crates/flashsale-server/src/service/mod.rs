//! What the server does, in the domain's words: sales and their batches ([`sales`]), the
//! buyer's side of the queue ([`queue`]) and its draw ([`draws`]), each batch's sale report
//! ([`report`]), priority codes ([`codes`]), orders and payments ([`orders`]), and putting Redis
//! right from PostgreSQL ([`recovery`]).
//!
//! The rule of this layer: no `axum`, no HTTP. Functions take the shared state and typed
//! arguments, return views (plain serialisable structs) or an [`Error`] that says why in the
//! domain's terms (sold out, paused, the batch being rebuilt); `crate::http` decides how that
//! is sent, and `crate::jobs` logs it. A handler or a job calls in here; nothing in here calls
//! out to either.

pub mod codes;
pub mod draws;
pub mod orders;
pub mod queue;
pub mod recovery;
pub mod report;
pub mod sales;

use std::net::IpAddr;

use flashsale_sales::{SalesError, ValidationErrors};

use crate::problem::{Problem, ProblemCode};

/// Who made an operator's change, for the audit trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// The operator's name as the console sent it (`X-Actor`), or `admin`.
    pub name: String,
    /// The peer address, when the server knows it.
    pub client_ip: Option<IpAddr>,
}

/// Why the service refused or failed. Each variant's doc names its problem code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `not_found`: no such sale, order or batch (another buyer's order included).
    #[error("{0}")]
    NotFound(String),
    /// A refusal by the state of the sale, the batch, the queue or the order, named by `code`
    /// (`sold_out`, `paused`, `limit_reached`, `token_invalid`, `idempotency_key_reused` …).
    #[error("{detail}")]
    Refused { code: ProblemCode, detail: String },
    /// `not_open`: the batch's queue does not accept buyers yet; `opens_at` says when.
    #[error("the queue opens at {opens_at}")]
    NotOpen { opens_at: chrono::DateTime<chrono::Utc> },
    /// `precondition_failed`: the operator edited another version than the current one.
    #[error("the sale is at version {current}; reload it and retry")]
    VersionMismatch { current: i64 },
    /// `validation_failed`: well-formed, but breaks the rules; each field says which.
    #[error("{0}")]
    Invalid(ValidationErrors),
    /// `pow_required` (none sent) or `pow_invalid` (refused, `reason` says why): the join's proof
    /// of work; `fresh` is a new challenge to solve.
    #[error("{reason}")]
    Pow { reason: flashsale_queue::pow::PowError, fresh: flashsale_queue::pow::IssuedChallenge },
    /// `rebuilding`: the batch's Redis state is being rebuilt from PostgreSQL; retry in a second.
    #[error("the sale's stock is being restored after a storage failure; retry in a second")]
    Rebuilding,
    /// `unavailable`: Redis or PostgreSQL cannot be reached right now; retrying is safe.
    #[error("{0}")]
    Unavailable(String),
    /// `internal`: a bug or an unexpected state; the cause is logged, not sent.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl Error {
    /// A `not_found` for a sale that does not exist.
    pub fn sale_not_found() -> Error {
        Error::NotFound("no sale with this id".to_owned())
    }

    /// A refusal named by `code`.
    pub fn refused(code: ProblemCode, detail: impl Into<String>) -> Error {
        Error::Refused { code, detail: detail.into() }
    }

    /// The problem code of this error (its status is the code's).
    pub fn code(&self) -> ProblemCode {
        match self {
            Error::NotFound(_) => ProblemCode::NotFound,
            Error::Refused { code, .. } => *code,
            Error::NotOpen { .. } => ProblemCode::NotOpen,
            Error::Pow { reason: flashsale_queue::pow::PowError::Missing, .. } => ProblemCode::PowRequired,
            Error::Pow { .. } => ProblemCode::PowInvalid,
            Error::VersionMismatch { .. } => ProblemCode::PreconditionFailed,
            Error::Invalid(_) => ProblemCode::ValidationFailed,
            Error::Rebuilding => ProblemCode::Rebuilding,
            Error::Unavailable(_) => ProblemCode::Unavailable,
            Error::Internal(_) => ProblemCode::Internal,
        }
    }

    /// The problem document this error is sent (or stored) as.
    pub fn problem(&self) -> Problem {
        let detail = match self {
            Error::Invalid(errors) => {
                errors.0.iter().map(|e| format!("{}: {}", e.field, e.message)).collect::<Vec<_>>().join("; ")
            }
            Error::Internal(_) => "the server failed to handle the request; it has been logged".to_owned(),
            other => other.to_string(),
        };
        let mut problem = Problem::new(self.code(), detail);
        match self {
            Error::Invalid(errors) => problem.errors = Some(errors.0.clone()),
            Error::VersionMismatch { current } => problem.current_version = Some(*current),
            Error::NotOpen { opens_at } => problem.opens_at = Some(*opens_at),
            Error::Pow { fresh, .. } => problem.pow = Some(fresh.clone()),
            _ => {}
        }
        problem
    }

    /// Whether retrying later may succeed (`Retry-After: 1` is sent with it).
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Rebuilding | Error::Unavailable(_))
    }
}

impl From<ValidationErrors> for Error {
    fn from(errors: ValidationErrors) -> Error {
        Error::Invalid(errors)
    }
}

impl From<SalesError> for Error {
    fn from(error: SalesError) -> Error {
        match error {
            SalesError::Database(e) => Error::from(e),
            corrupt @ SalesError::CorruptRow { .. } => Error::Internal(corrupt.into()),
            SalesError::StockBelowCommitted { stock } => Error::refused(
                ProblemCode::StockBelowCommitted,
                format!("buyers hold more units of the batch (pending + paid) than a stock of {stock}"),
            ),
        }
    }
}

impl From<sqlx::Error> for Error {
    fn from(error: sqlx::Error) -> Error {
        if flashsale_order::database_unavailable(&error) {
            Error::Unavailable("PostgreSQL is unavailable; retry shortly".to_owned())
        } else {
            Error::Internal(error.into())
        }
    }
}

impl From<redis::RedisError> for Error {
    /// What [`flashsale_redis::is_transient`] calls transient is 503 (retrying is safe); anything
    /// else (a script error, a wrong type) is a bug.
    fn from(error: redis::RedisError) -> Error {
        if flashsale_redis::is_transient(&error) {
            Error::Unavailable("Redis is unavailable; retry shortly".to_owned())
        } else {
            Error::Internal(error.into())
        }
    }
}

impl From<deadpool_redis::PoolError> for Error {
    fn from(_: deadpool_redis::PoolError) -> Error {
        Error::Unavailable("Redis is unavailable; retry shortly".to_owned())
    }
}

impl From<flashsale_inventory::InventoryError> for Error {
    fn from(error: flashsale_inventory::InventoryError) -> Error {
        use flashsale_inventory::InventoryError as E;
        match error {
            E::NoConnection(e) => e.into(),
            E::Redis(e) => e.into(),
            // Quantities are validated before the inventory is asked: a zero here is a bug.
            other @ (E::MalformedReply { .. } | E::ZeroUnits) => Error::Internal(other.into()),
        }
    }
}

impl From<flashsale_order::OrderError> for Error {
    fn from(error: flashsale_order::OrderError) -> Error {
        use flashsale_order::OrderError as E;
        match error {
            E::NotFound => Error::NotFound("no such order".to_owned()),
            E::InvalidTransition { from, to } => Error::refused(
                ProblemCode::InvalidTransition,
                format!("an order that is {} cannot become {}", from.as_str(), to.as_str()),
            ),
            e if e.is_unavailable() => Error::Unavailable("PostgreSQL is unavailable; retry shortly".to_owned()),
            other => Error::Internal(other.into()),
        }
    }
}

impl From<flashsale_queue::QueueError> for Error {
    fn from(error: flashsale_queue::QueueError) -> Error {
        use flashsale_queue::QueueError as E;
        match error {
            E::NoConnection(e) => e.into(),
            E::Redis(e) => e.into(),
            other @ E::MalformedReply { .. } => Error::Internal(other.into()),
        }
    }
}
