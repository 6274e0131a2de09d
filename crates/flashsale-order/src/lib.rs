//! Orders: the durable record that a buyer holds units and must pay within a window.
//!
//! PostgreSQL is the source of truth for orders; Redis only holds the reservations behind them
//! (the inventory crate), and is rebuilt from these rows when it loses its state.
//!
//! # Layout
//! - [`status`]: [`OrderId`] and [`OrderStatus`], the lifecycle and the transitions it allows.
//! - [`order`]: [`Order`], [`NewOrder`], the buyer's [`IdempotencyKey`] and request
//!   [`Fingerprint`].
//! - [`book`]: [`OrderBook`], storage: exactly-once creation (claim, place, replay) with group
//!   commit, cancellation, payments, the expiry worker's step, the Redis settlement outbox, and
//!   what a rebuild or an audit of a batch needs.
//! - [`payment`]: the provider's signed notices and what each does to an order.
//! - [`error`]: [`OrderError`], what can go wrong.

mod batcher;
pub mod book;
pub mod error;
pub mod order;
pub mod payment;
pub mod status;

pub use book::{
    BatchOrder, BatchTotals, CLAIM_TTL_MS, Cancelled, Claim, OrderBook, Outcome, PaymentApplied, PendingSettlement,
    Placed, RedisSettle, Refusal, StoredResponse, WriterTuning, creation_body, load_scripts,
};
pub use error::{OrderError, database_unavailable};
pub use order::{Fingerprint, IdempotencyKey, InvalidIdempotencyKey, NewOrder, Order};
pub use payment::{InvalidPaymentRef, PaymentNotice, PaymentOutcome, PaymentReceipt, PaymentRef, PaymentStatus};
pub use status::{OrderId, OrderStatus};
