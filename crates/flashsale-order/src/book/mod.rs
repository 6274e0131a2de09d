//! [`OrderBook`]: orders in PostgreSQL, created exactly once per idempotency key.
//!
//! # Creating an order (the server drives these steps around the Redis reservation)
//! 1. Claim the buyer's `Idempotency-Key` in Redis, in the batch's hash slot, inside the
//!    reservation script (one round trip per order: [`OrderBook::claim_key`] and
//!    [`OrderBook::claim_value`] name and fill it; [`OrderBook::resolve_held`] answers when it was
//!    held; `lua/take_over_claim.lua` when a claim went stale). The first claims it; a
//!    retry gets the stored answer ([`Claim::Replay`]), 409 while the first still runs
//!    ([`Claim::InProgress`]), or 422 when the key comes back with another request
//!    ([`Claim::KeyReused`]). A claim is a Redis write, not a PostgreSQL transaction: on sale day
//!    PostgreSQL's time goes to the one write that matters, the order.
//! 2. The reservation itself (the inventory crate), in the same script.
//! 3. [`OrderBook::place`] writes the order durably; the order row is the answer a retry gets
//!    (the order as created, byte for byte: [`creation_body`]). [`OrderBook::record_outcome`]
//!    stores a refusal (sold out, limit reached) to replay. [`OrderBook::abandon_claim`] frees
//!    the key when the request failed in a way worth retrying.
//!
//! PostgreSQL's unique `(user_id, idempotency_key)` backs the claim: should Redis lose a claim,
//! a second order with the key is still refused ([`Placed::KeyReused`]).
//!
//! Orders go through group commit (the crate's `batcher` module): the requests queued at one moment share
//! one transaction, and each is answered only after that transaction committed.
//!
//! # The epoch fence
//! A reservation carries the epoch of the batch's Redis state it was made in. `place` share-locks
//! the batch row and writes an order only if that epoch is still current; a rebuild of the
//! batch's Redis state bumps the epoch under an exclusive lock of the same row first. So an order
//! is either written before the rebuild reads the orders (and is rebuilt), or refused
//! ([`Placed::Fenced`]): a reservation from a Redis state that was lost never becomes an order.
//!
//! # Files, by job
//! - `claims`: the idempotency claim in Redis and the stored answer a retry gets.
//! - `writer`: the group-commit writers (orders; stored refusals), the epoch fence and the
//!   orphan check under the batch rows' lock.
//! - `payments`: cancellation and payment notices.
//! - `outbox`: expiry of unpaid orders, the Redis settlements owed, orphans released.
//! - `rows`: reading orders back (a buyer's, a batch's for a rebuild, a batch's totals).

mod claims;
mod outbox;
mod payments;
mod rows;
mod writer;

use std::time::Duration;

use chrono::{DateTime, Utc};
use flashsale_core::{BatchNo, KeySpace, ReservationId, SaleId, Ticket, Units, UserId};
use sqlx::PgPool;

use crate::batcher::Batcher;
use crate::payment::PaymentReceipt;
use crate::{NewOrder, Order, OrderError, OrderId, OrderStatus};
pub use claims::{CLAIM_TTL_MS, load_scripts};
pub use rows::Outcome;
use writer::StoredOutcome;

/// How the order writers run.
#[derive(Debug, Clone, Copy)]
pub struct WriterTuning {
    /// Writer tasks: how many order transactions may be committing at once. Fewer writers make
    /// bigger batches, which cost PostgreSQL less per order.
    pub workers: usize,
    /// Most requests in one transaction.
    pub max_batch: usize,
    /// A claim whose request has run this long without an answer is taken to be abandoned (its
    /// instance crashed) and may be taken over by a retry.
    pub stale_claim: Duration,
}

impl Default for WriterTuning {
    fn default() -> Self {
        WriterTuning { workers: 2, max_batch: 256, stale_claim: Duration::from_secs(60) }
    }
}

/// A stored answer, replayed to retries: the HTTP status and the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    pub status: u16,
    /// The JSON body, byte for byte as first sent.
    pub body: String,
}

/// Outcome of [`OrderBook::resolve_held`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This request owns the key: go on.
    Acquired,
    /// The key was used before for this same request: answer what it got.
    Replay(StoredResponse),
    /// The first request with this key is still running.
    InProgress,
    /// The key was used before for a different request.
    KeyReused,
}

/// Outcome of [`OrderBook::place`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placed {
    /// Written and durable.
    Created(Order),
    /// The batch's Redis state was rebuilt since the reservation was made: no order.
    Fenced,
    /// The buyer already has an order under this idempotency key (for another request): no order.
    KeyReused,
    /// PostgreSQL, the last guard, refused the order although Redis reserved it: no order. Redis's
    /// state of the batch is wrong (stale, restored, edited) and must be rebuilt.
    Refused(Refusal),
    /// The order came so late that upkeep had released its reservation as an orphan: no order
    /// (the units may be someone else's by now); the buyer may retry.
    Orphaned,
}

/// Why the database refused an order Redis had reserved. Each is a sign of a Redis anomaly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The batch's pending + paid units would exceed its stock (`sale_batches_no_oversell`).
    SoldOut,
    /// The buyer's units in the batch would exceed the per-user limit
    /// (`batch_holdings_per_user_limit`).
    LimitReached,
    /// Another order of the batch already has this reservation id: Redis handed an id out twice,
    /// so it went back to an older copy of its state.
    ReservationReused,
}

impl Refusal {
    /// The refusal a failed order write stands for, if it is one (a constraint of the guard).
    fn of(error: &OrderError) -> Option<Refusal> {
        let OrderError::Database(e) = error else { return None };
        let sqlx::Error::Database(db) = &**e else { return None };
        match db.constraint() {
            Some("sale_batches_no_oversell") => Some(Refusal::SoldOut),
            Some("batch_holdings_per_user_limit") => Some(Refusal::LimitReached),
            Some("orders_sale_id_batch_no_reservation_id_key") => Some(Refusal::ReservationReused),
            _ => None,
        }
    }

    /// How it is named in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::SoldOut => "sold_out",
            Refusal::LimitReached => "limit_reached",
            Refusal::ReservationReused => "reservation_reused",
        }
    }
}

/// What Redis still has to do for an order whose status changed here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisSettle {
    /// The order is paid: the reservation's units become sold.
    Commit,
    /// The order no longer holds units: they go back to stock.
    Release,
}

impl RedisSettle {
    fn as_str(self) -> &'static str {
        match self {
            RedisSettle::Commit => "commit",
            RedisSettle::Release => "release",
        }
    }

    fn parse(s: &str) -> Option<RedisSettle> {
        match s {
            "commit" => Some(RedisSettle::Commit),
            "release" => Some(RedisSettle::Release),
            _ => None,
        }
    }
}

/// A settlement Redis owes an order (the outbox row).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingSettlement {
    pub order: OrderId,
    pub sale: SaleId,
    pub batch: BatchNo,
    pub reservation_id: ReservationId,
    pub how: RedisSettle,
}

/// Outcome of [`OrderBook::cancel`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cancelled {
    /// Cancelled by this call: Redis must release the units.
    Now(Order, PendingSettlement),
    /// It was cancelled before (a retried cancel).
    Before(Order),
}

/// Outcome of [`OrderBook::apply_payment`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaymentApplied {
    /// The first time this `payment_ref` was seen: what it did, and what Redis must do.
    Applied { status: u16, receipt: PaymentReceipt, settle: Option<PendingSettlement> },
    /// The same notice again: the stored answer.
    Replayed(StoredResponse),
    /// The same `payment_ref` with a different notice.
    RefReused,
}

/// An order as a batch rebuild needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchOrder {
    pub reservation_id: ReservationId,
    pub user: UserId,
    pub quantity: Units,
    pub status: OrderStatus,
    pub expires_at: DateTime<Utc>,
    pub ticket: Ticket,
}

/// Units a batch's orders hold, as Redis should see them once every owed settlement is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BatchTotals {
    /// Units of pending orders, plus orders whose settlement Redis still owes (Redis still counts
    /// them as reserved).
    pub reserved: i64,
    /// Units of paid orders Redis has committed.
    pub sold: i64,
}

/// Orders in PostgreSQL, idempotency claims in Redis. Cheap to share behind an `Arc`; its writer
/// tasks stop when it is dropped.
#[derive(Debug)]
pub struct OrderBook {
    db: PgPool,
    redis: flashsale_redis::Redis,
    /// Redis's clock: claims are stamped and aged by it, not by this instance's.
    clock: flashsale_redis::Clock,
    keys: KeySpace,
    stale_claim: Duration,
    /// Order writes, in group commit.
    orders: Batcher<NewOrder, Placed>,
    /// Refusals stored for replay, in group commit of their own.
    outcomes: Batcher<StoredOutcome, ()>,
}

/// The order as its creation answered it: status `pending_payment`, not paid. A replay renders
/// the stored row the same way, so it is the first answer byte for byte even after the order
/// moved on (the buyer reads the current state at `GET /orders/{id}`).
pub fn creation_body(order: &Order) -> String {
    let created = Order { status: OrderStatus::PendingPayment, paid_at: None, payment_ref: None, ..order.clone() };
    serde_json::to_string(&created).expect("an order serialises")
}

fn settlement_of(order: &Order, how: RedisSettle) -> PendingSettlement {
    PendingSettlement {
        order: order.id,
        sale: order.sale_id,
        batch: order.batch_no,
        reservation_id: order.reservation_id,
        how,
    }
}

impl OrderBook {
    /// An order book over `db`, with idempotency claims in `redis` under `keys`, starting its
    /// writer tasks on the current tokio runtime.
    pub fn new(
        db: PgPool,
        redis: flashsale_redis::Redis,
        clock: flashsale_redis::Clock,
        keys: KeySpace,
        tuning: WriterTuning,
    ) -> OrderBook {
        let (orders, outcomes) = writer::spawn(&db, tuning);
        OrderBook { db, redis, clock, keys, stale_claim: tuning.stale_claim, orders, outcomes }
    }
}
