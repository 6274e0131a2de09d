//! The sales crate's error enum.

/// What can go wrong storing or loading sales.
#[derive(Debug, thiserror::Error)]
pub enum SalesError {
    /// PostgreSQL failed or could not be reached.
    #[error("sales storage failed: {0}")]
    Database(#[from] sqlx::Error),
    /// A stored row breaks a rule the code relies on (an unknown time zone after a tz database
    /// downgrade, say). Never expected; reported instead of guessed around.
    #[error("stored sale {sale_id} is invalid: {reason}")]
    CorruptRow { sale_id: i64, reason: String },
    /// The batch's orders hold (pending + paid) more units than the stock asked for: refused by
    /// the database's guard (`sale_batches_no_oversell`), whatever Redis said.
    #[error("the batch's orders hold more units than a stock of {stock}")]
    StockBelowCommitted { stock: i64 },
}
