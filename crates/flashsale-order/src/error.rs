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
    /// Whether PostgreSQL could not be reached (as opposed to refusing a statement): the request
    /// may be retried as it is.
    pub fn is_unavailable(&self) -> bool {
        match self {
            OrderError::Database(e) => {
                matches!(**e, sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_))
            }
            OrderError::Redis(e) => {
                e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal()
            }
            OrderError::WriterStopped | OrderError::NoRedisConnection(_) => true,
            _ => false,
        }
    }
}
