//! The order crate's error enum.

use std::sync::Arc;

use crate::OrderStatus;

/// What can go wrong with an order, in the domain's words.
#[derive(Debug, Clone, thiserror::Error)]
pub enum OrderError {
    /// No order with this id belongs to the buyer.
    #[error("order not found")]
    NotFound,
    /// The order's state does not allow the change.
    #[error("an order that is {} cannot become {}", from.as_str(), to.as_str())]
    InvalidTransition { from: OrderStatus, to: OrderStatus },
    /// PostgreSQL failed or could not be reached. Shared, because one failed group commit fails
    /// every request in it.
    #[error("order storage failed: {0}")]
    Database(#[source] Arc<sqlx::Error>),
    /// Redis (where idempotency claims live) failed or could not be reached.
    #[error("idempotency claim failed: {0}")]
    Redis(#[source] Arc<redis::RedisError>),
    /// No connection to Redis could be had.
    #[error("no Redis connection: {0}")]
    NoRedisConnection(#[source] Arc<deadpool_redis::PoolError>),
    /// A stored row breaks a rule the code relies on. Never expected; reported, not guessed around.
    #[error("stored order {id} is invalid: {reason}")]
    CorruptRow { id: i64, reason: String },
    /// A script answered outside its contract (a script and its caller out of step). Never
    /// expected.
    #[error("Redis answered {operation} with {reply}")]
    MalformedReply { operation: &'static str, reply: String },
    /// The order writer's tasks are gone (the server is shutting down).
    #[error("the order writer has stopped")]
    WriterStopped,
}

impl From<sqlx::Error> for OrderError {
    fn from(error: sqlx::Error) -> OrderError {
        OrderError::Database(Arc::new(error))
    }
}

impl From<redis::RedisError> for OrderError {
    fn from(error: redis::RedisError) -> OrderError {
        OrderError::Redis(Arc::new(error))
    }
}

impl OrderError {
    /// Whether PostgreSQL or Redis could not serve right now (as opposed to refusing a statement
    /// for what it said): the request may be retried as it is.
    pub fn is_unavailable(&self) -> bool {
        match self {
            OrderError::Database(e) => database_unavailable(e),
            OrderError::Redis(e) => flashsale_redis::is_transient(e),
            OrderError::WriterStopped | OrderError::NoRedisConnection(_) => true,
            _ => false,
        }
    }
}

/// Whether a database error means PostgreSQL cannot serve right now, rather than a bug or a
/// refusal: no connection, a connection that broke, a lock or statement timeout, a server shutting
/// down or out of connections, a transaction ended for idling, a deadlock. Retrying later is safe.
pub fn database_unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) | sqlx::Error::Tls(_) => true,
        sqlx::Error::Database(e) => e.code().is_some_and(|code| {
            // 08: connection exception; 57: operator intervention (57014 statement timeout,
            // 57P01 shutdown); 53: insufficient resources; 55P03: lock timeout; 25P03: idle in
            // transaction timeout; 40001/40P01: serialization failure, deadlock.
            ["08", "57", "53"].iter().any(|class| code.starts_with(class))
                || ["55P03", "25P03", "40001", "40P01"].contains(&code.as_ref())
        }),
        _ => false,
    }
}
