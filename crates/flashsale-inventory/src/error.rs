//! The inventory crate's error enum.

/// What can go wrong talking to the ledger.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    /// No connection could be taken from the pool (Redis down, pool exhausted past its timeout).
    #[error("no Redis connection for the inventory ledger: {0}")]
    NoConnection(#[from] deadpool_redis::PoolError),
    /// Redis answered with an error or the connection broke mid-call.
    #[error("Redis failed during an inventory operation: {0}")]
    Redis(#[from] redis::RedisError),
    /// A reservation of zero units was asked for; quantities are checked before Redis is.
    #[error("a reservation needs at least one unit")]
    ZeroUnits,
    /// A script or command replied with something its contract does not allow; a sign of a
    /// script/wrapper version mismatch or a ledger written by something else.
    #[error("unexpected reply from {operation}: {reply}")]
    MalformedReply { operation: &'static str, reply: String },
}
