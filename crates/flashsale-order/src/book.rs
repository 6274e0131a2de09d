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
//! Orders go through group commit ([`crate::batcher`]): the requests queued at one moment share
//! one transaction, and each is answered only after that transaction committed.
//!
//! # The epoch fence
//! A reservation carries the epoch of the batch's Redis state it was made in. `place` share-locks
//! the batch row and writes an order only if that epoch is still current; a rebuild of the
//! batch's Redis state bumps the epoch under an exclusive lock of the same row first. So an order
//! is either written before the rebuild reads the orders (and is rebuilt), or refused
//! ([`Placed::Fenced`]): a reservation from a Redis state that was lost never becomes an order.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use flashsale_core::{BatchNo, KeySpace, SaleId, Units, UserId};
use sqlx::{FromRow, PgPool, Postgres, Transaction};

use crate::batcher::Batcher;
use crate::payment::{PaymentNotice, PaymentOutcome, PaymentReceipt, decide, receipt};
use crate::{Fingerprint, IdempotencyKey, NewOrder, Order, OrderError, OrderId, OrderStatus};

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
        WriterTuning { workers: 1, max_batch: 256, stale_claim: Duration::from_secs(60) }
    }
}

/// A stored answer, replayed to retries: the HTTP status and the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    pub status: u16,
    /// The JSON body, byte for byte as first sent.
    pub body: String,
}

/// Outcome of [`OrderBook::claim`].
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
    pub reservation_id: u64,
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
    pub reservation_id: u64,
    pub user: UserId,
    pub quantity: Units,
    pub status: OrderStatus,
    pub expires_at: DateTime<Utc>,
    pub ticket: u64,
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

enum RecordJob {
    Order(Box<NewOrder>),
    Outcome { user: UserId, key: IdempotencyKey, fingerprint: Fingerprint, response: StoredResponse },
}

enum Recorded {
    Placed(Placed),
    Stored,
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
    records: Batcher<RecordJob, Recorded>,
}

/// How long a claim (and so the promise to replay) is kept in Redis, ms: a day.
pub const CLAIM_TTL_MS: i64 = 24 * 3600 * 1000;

static TAKE_OVER_CLAIM: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(include_str!("../lua/take_over_claim.lua")));

/// Loads the order crate's script into Redis's script cache (an early check that Redis accepts
/// it; a flushed cache is reloaded transparently anyway).
pub async fn load_scripts(pool: &deadpool_redis::Pool) -> Result<(), OrderError> {
    let mut conn = pool.get().await.map_err(|e| OrderError::NoRedisConnection(Arc::new(e)))?;
    TAKE_OVER_CLAIM.load_async(&mut conn).await?;
    Ok(())
}

/// The order as its creation answered it: status `pending_payment`, not paid. A replay renders
/// the stored row the same way, so it is the first answer byte for byte even after the order
/// moved on (the buyer reads the current state at `GET /orders/{id}`).
pub fn creation_body(order: &Order) -> String {
    let created = Order { status: OrderStatus::PendingPayment, paid_at: None, payment_ref: None, ..order.clone() };
    serde_json::to_string(&created).expect("an order serialises")
}

const ORDER_COLUMNS: &str = "id, sale_id, batch_no, user_id, status, quantity, amount_cents, currency, created_at, \
     expires_at, paid_at, payment_ref, reservation_id";

#[derive(FromRow)]
struct OrderRow {
    id: i64,
    sale_id: i64,
    batch_no: i64,
    user_id: String,
    status: String,
    quantity: i32,
    amount_cents: i64,
    currency: String,
    created_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    paid_at: Option<DateTime<Utc>>,
    payment_ref: Option<String>,
    reservation_id: i64,
}

impl TryFrom<OrderRow> for Order {
    type Error = OrderError;
    fn try_from(row: OrderRow) -> Result<Order, OrderError> {
        let corrupt = |reason: String| OrderError::CorruptRow { id: row.id, reason };
        Ok(Order {
            id: OrderId::new(row.id),
            sale_id: SaleId::try_from(row.sale_id).map_err(|e| corrupt(e.to_string()))?,
            batch_no: BatchNo::try_from(row.batch_no).map_err(|e| corrupt(e.to_string()))?,
            status: OrderStatus::parse(&row.status).ok_or_else(|| corrupt(format!("status {}", row.status)))?,
            quantity: Units::try_from(i64::from(row.quantity)).map_err(|e| corrupt(e.to_string()))?,
            amount_cents: row.amount_cents,
            currency: row.currency,
            created_at: row.created_at,
            expires_at: row.expires_at,
            paid_at: row.paid_at,
            payment_ref: row.payment_ref,
            user: UserId::try_from(row.user_id).map_err(|_| corrupt("user id".to_owned()))?,
            reservation_id: u64::try_from(row.reservation_id).map_err(|e| corrupt(e.to_string()))?,
        })
    }
}

fn to_i64(v: u64) -> i64 {
    // Reservation ids and tickets are Redis counters: far below 2^63.
    i64::try_from(v).unwrap_or(i64::MAX)
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
        let record_db = db.clone();
        let records = Batcher::spawn("orders", tuning.workers, tuning.max_batch, move |jobs: Vec<RecordJob>| {
            let db = record_db.clone();
            async move { record_isolated(&db, jobs).await }
        });
        OrderBook { db, redis, clock, keys, stale_claim: tuning.stale_claim, records }
    }

    /// The Redis key of `user`'s claim of `key` for an order in `sale`'s `batch` (in the batch's
    /// hash slot, so the reservation script can make the claim in the same step).
    pub fn claim_key(&self, sale: SaleId, batch: BatchNo, user: &UserId, key: &IdempotencyKey) -> String {
        self.keys.batch(sale, batch).idempotency(user.as_str(), key.as_str())
    }

    /// The claim of a request with `fingerprint`, made now (Redis's clock): `fingerprint
    /// claimed_at_ms`.
    pub fn claim_value(&self, fingerprint: &Fingerprint) -> String {
        format!("{} {}", fingerprint.hex(), self.clock.now_ms())
    }

    /// What to answer when `user`'s claim of `key` was already `held`: another request's
    /// ([`Claim::KeyReused`]); this request's finished answer ([`Claim::Replay`]); still running
    /// ([`Claim::InProgress`]); or, when the claim went stale without an answer (its instance
    /// died), taken over by this retry ([`Claim::Acquired`]).
    pub async fn resolve_held(
        &self,
        sale: SaleId,
        batch: BatchNo,
        user: &UserId,
        key: &IdempotencyKey,
        fingerprint: &Fingerprint,
        held: &str,
    ) -> Result<Claim, OrderError> {
        let (claimed, at) = held.split_once(' ').unwrap_or((held, "0"));
        if claimed != fingerprint.hex() {
            return Ok(Claim::KeyReused);
        }
        if let Some(answer) = self.stored_answer(user, key, fingerprint).await? {
            return Ok(answer);
        }
        let age = self.clock.now_ms() - at.parse::<i64>().unwrap_or(0);
        if age < i64::try_from(self.stale_claim.as_millis()).unwrap_or(i64::MAX) {
            return Ok(Claim::InProgress);
        }
        let mut conn = self.redis.conn().await.map_err(|e| OrderError::NoRedisConnection(Arc::new(e)))?;
        let taken: i64 = TAKE_OVER_CLAIM
            .key(self.claim_key(sale, batch, user, key))
            .arg(held)
            .arg(self.claim_value(fingerprint))
            .arg(CLAIM_TTL_MS)
            .invoke_async(&mut conn)
            .await?;
        Ok(if taken == 1 { Claim::Acquired } else { Claim::InProgress })
    }

    /// The stored answer to an earlier request with this key, if it finished: the order it
    /// created (as created), or the refusal it got; [`Claim::KeyReused`] if that request was a
    /// different one.
    pub async fn stored_answer(
        &self,
        user: &UserId,
        key: &IdempotencyKey,
        fingerprint: &Fingerprint,
    ) -> Result<Option<Claim>, OrderError> {
        #[derive(FromRow)]
        struct Stored {
            #[sqlx(flatten)]
            order: OrderRow,
            fingerprint: Vec<u8>,
        }
        let order: Option<Stored> = sqlx::query_as(&format!(
            "SELECT {ORDER_COLUMNS}, fingerprint FROM orders WHERE user_id = $1 AND idempotency_key = $2"
        ))
        .bind(user.as_str())
        .bind(key.as_str())
        .fetch_optional(&self.db)
        .await?;
        if let Some(stored) = order {
            if stored.fingerprint != fingerprint.0 {
                return Ok(Some(Claim::KeyReused));
            }
            let body = creation_body(&Order::try_from(stored.order)?);
            return Ok(Some(Claim::Replay(StoredResponse { status: 201, body })));
        }
        let refusal: Option<(Vec<u8>, i16, String)> = sqlx::query_as(
            "SELECT fingerprint, status_code, response FROM idempotency_keys WHERE user_id = $1 AND key = $2",
        )
        .bind(user.as_str())
        .bind(key.as_str())
        .fetch_optional(&self.db)
        .await?;
        Ok(refusal.map(|(stored, status, body)| {
            if stored == fingerprint.0 {
                Claim::Replay(StoredResponse { status: u16::try_from(status).unwrap_or(500), body })
            } else {
                Claim::KeyReused
            }
        }))
    }

    /// Gives a claimed key up without an answer, so that a retry runs the request again (after a
    /// failure worth retrying: Redis or PostgreSQL unavailable, a batch being rebuilt).
    pub async fn abandon_claim(
        &self,
        sale: SaleId,
        batch: BatchNo,
        user: &UserId,
        key: &IdempotencyKey,
    ) -> Result<(), OrderError> {
        self.abandon_claim_key(&self.claim_key(sale, batch, user, key)).await
    }

    /// Deletes an idempotency claim by its key (as [`Self::claim_key`] named it), so that a
    /// retry runs the request again.
    pub async fn abandon_claim_key(&self, claim_key: &str) -> Result<(), OrderError> {
        let mut conn = self.redis.conn().await.map_err(|e| OrderError::NoRedisConnection(Arc::new(e)))?;
        let _: i64 = redis::cmd("DEL").arg(claim_key).query_async(&mut conn).await?;
        Ok(())
    }

    /// Writes the order for a reservation, durably (group commit).
    pub async fn place(&self, order: NewOrder) -> Result<Placed, OrderError> {
        match self.records.submit(RecordJob::Order(Box::new(order))).await? {
            Recorded::Placed(placed) => Ok(placed),
            Recorded::Stored => unreachable!("an order job answers Placed"),
        }
    }

    /// Stores the answer of a claimed request that made no order (sold out, limit reached, ...).
    pub async fn record_outcome(
        &self,
        user: &UserId,
        key: &IdempotencyKey,
        fingerprint: Fingerprint,
        response: StoredResponse,
    ) -> Result<(), OrderError> {
        let job = RecordJob::Outcome { user: user.clone(), key: key.clone(), fingerprint, response };
        self.records.submit(job).await.map(|_| ())
    }

    /// The buyer's order, if it is theirs.
    pub async fn get(&self, user: &UserId, id: OrderId) -> Result<Option<Order>, OrderError> {
        let row: Option<OrderRow> =
            sqlx::query_as(&format!("SELECT {ORDER_COLUMNS} FROM orders WHERE id = $1 AND user_id = $2"))
                .bind(id.get())
                .bind(user.as_str())
                .fetch_optional(&self.db)
                .await?;
        row.map(Order::try_from).transpose()
    }

    /// The buyer's orders, newest first, `limit` at most, older than `before` if given.
    pub async fn list(&self, user: &UserId, before: Option<OrderId>, limit: i64) -> Result<Vec<Order>, OrderError> {
        let rows: Vec<OrderRow> = sqlx::query_as(&format!(
            "SELECT {ORDER_COLUMNS} FROM orders WHERE user_id = $1 AND ($2::bigint IS NULL OR id < $2) \
             ORDER BY id DESC LIMIT $3"
        ))
        .bind(user.as_str())
        .bind(before.map(OrderId::get))
        .bind(limit)
        .fetch_all(&self.db)
        .await?;
        rows.into_iter().map(Order::try_from).collect()
    }

    /// Cancels the buyer's pending order. One statement, so it cannot interleave with a payment
    /// or the expiry worker (both lock the row): whichever comes first decides.
    pub async fn cancel(&self, user: &UserId, id: OrderId) -> Result<Cancelled, OrderError> {
        let row: Option<OrderRow> = sqlx::query_as(&format!(
            "UPDATE orders SET status = 'cancelled', updated_at = now(), redis_settle = 'release' \
             WHERE id = $1 AND user_id = $2 AND status = 'pending_payment' RETURNING {ORDER_COLUMNS}"
        ))
        .bind(id.get())
        .bind(user.as_str())
        .fetch_optional(&self.db)
        .await?;
        if let Some(row) = row {
            let order = Order::try_from(row)?;
            let settle = settlement_of(&order, RedisSettle::Release);
            return Ok(Cancelled::Now(order, settle));
        }
        let order = self.get(user, id).await?.ok_or(OrderError::NotFound)?;
        match order.status {
            OrderStatus::Cancelled => Ok(Cancelled::Before(order)),
            from => Err(OrderError::InvalidTransition { from, to: OrderStatus::Cancelled }),
        }
    }

    /// Applies a payment notice, exactly once per `payment_ref`. The order's row is locked and
    /// the deadline read from PostgreSQL's clock under that lock, so a payment and the expiry
    /// worker racing at the deadline give exactly one outcome.
    pub async fn apply_payment(
        &self,
        notice: &PaymentNotice,
        fingerprint: &Fingerprint,
    ) -> Result<PaymentApplied, OrderError> {
        // Two notices with the same reference at once: the second insert fails on the primary
        // key after the first committed; running again finds the stored answer.
        for _ in 0..3 {
            match self.try_apply_payment(notice, fingerprint).await {
                Err(OrderError::Database(e)) if is_unique_violation(&e) => continue,
                other => return other,
            }
        }
        Err(OrderError::CorruptRow { id: notice.order_id, reason: "payment reference keeps conflicting".to_owned() })
    }

    async fn try_apply_payment(
        &self,
        notice: &PaymentNotice,
        fingerprint: &Fingerprint,
    ) -> Result<PaymentApplied, OrderError> {
        let mut tx = self.db.begin().await?;
        let seen: Option<(Vec<u8>, i16, String)> =
            sqlx::query_as("SELECT fingerprint, status_code, response FROM payments WHERE payment_ref = $1")
                .bind(&notice.payment_ref)
                .fetch_optional(&mut *tx)
                .await?;
        if let Some((stored, status, body)) = seen {
            if stored != fingerprint.0 {
                return Ok(PaymentApplied::RefReused);
            }
            let status = u16::try_from(status).unwrap_or(500);
            return Ok(PaymentApplied::Replayed(StoredResponse { status, body }));
        }
        #[derive(FromRow)]
        struct Locked {
            #[sqlx(flatten)]
            order: OrderRow,
            late: bool,
        }
        let locked: Option<Locked> = sqlx::query_as(&format!(
            "SELECT {ORDER_COLUMNS}, clock_timestamp() > expires_at AS late FROM orders WHERE id = $1 FOR UPDATE"
        ))
        .bind(notice.order_id)
        .fetch_optional(&mut *tx)
        .await?;
        let (outcome, status_after, settle) = match locked {
            None => (PaymentOutcome::UnknownOrder, None, None),
            Some(Locked { order, late }) => {
                let order = Order::try_from(order)?;
                let (outcome, next) =
                    decide(notice.status, order.status, late, notice.amount_cents == order.amount_cents);
                let settle = match (order.status, next) {
                    (_, Some(OrderStatus::Paid)) => Some(RedisSettle::Commit),
                    (OrderStatus::PendingPayment, Some(_)) => Some(RedisSettle::Release),
                    _ => None,
                };
                if let Some(next) = next {
                    sqlx::query(
                        "UPDATE orders SET status = $2, updated_at = now(), \
                         paid_at = CASE WHEN $2 = 'paid' THEN now() ELSE paid_at END, \
                         payment_ref = CASE WHEN $2 = 'paid' THEN $3 ELSE payment_ref END, \
                         redis_settle = COALESCE($4, redis_settle) WHERE id = $1",
                    )
                    .bind(order.id.get())
                    .bind(next.as_str())
                    .bind(&notice.payment_ref)
                    .bind(settle.map(RedisSettle::as_str))
                    .execute(&mut *tx)
                    .await?;
                }
                let settle = settle.map(|how| settlement_of(&order, how));
                (outcome, Some(next.unwrap_or(order.status)), settle)
            }
        };
        let status: u16 = match outcome {
            PaymentOutcome::UnknownOrder => 404,
            PaymentOutcome::AmountMismatch => 422,
            _ => 200,
        };
        let receipt = receipt(notice, outcome, status_after);
        sqlx::query(
            "INSERT INTO payments (payment_ref, order_id, amount_cents, status, fingerprint, outcome, status_code, response) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&notice.payment_ref)
        .bind(notice.order_id)
        .bind(notice.amount_cents)
        .bind(notice.status.as_str())
        .bind(&fingerprint.0[..])
        .bind(outcome.as_str())
        .bind(i16::try_from(status).unwrap_or(500))
        .bind(serde_json::to_string(&receipt).map_err(|e| OrderError::CorruptRow { id: notice.order_id, reason: e.to_string() })?)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(PaymentApplied::Applied { status, receipt, settle })
    }

    /// Moves up to `limit` pending orders past their deadline to `expired` and returns the
    /// releases Redis owes them. Safe on every instance at once: rows another instance is
    /// expiring (or a payment is deciding) are skipped, not waited for.
    pub async fn expire_due(&self, limit: i64) -> Result<Vec<PendingSettlement>, OrderError> {
        let rows: Vec<OrderRow> = sqlx::query_as(&format!(
            "WITH due AS (SELECT id FROM orders WHERE status = 'pending_payment' AND expires_at < clock_timestamp() \
                          ORDER BY expires_at LIMIT $1 FOR UPDATE SKIP LOCKED) \
             UPDATE orders o SET status = 'expired', updated_at = now(), redis_settle = 'release' \
             FROM due WHERE o.id = due.id RETURNING {}",
            ORDER_COLUMNS.split(", ").map(|c| format!("o.{c}")).collect::<Vec<_>>().join(", ")
        ))
        .bind(limit)
        .fetch_all(&self.db)
        .await?;
        rows.into_iter().map(|row| Order::try_from(row).map(|o| settlement_of(&o, RedisSettle::Release))).collect()
    }

    /// Settlements Redis still owes, changed more than `older_than` ago (younger ones are being
    /// applied by the request that made them).
    pub async fn unsettled(&self, older_than: Duration, limit: i64) -> Result<Vec<PendingSettlement>, OrderError> {
        let rows: Vec<(i64, i64, i64, i64, String)> = sqlx::query_as(
            "SELECT id, sale_id, batch_no, reservation_id, redis_settle FROM orders \
             WHERE redis_settle IS NOT NULL AND updated_at < now() - make_interval(secs => $1) \
             ORDER BY updated_at LIMIT $2",
        )
        .bind(older_than.as_secs_f64())
        .bind(limit)
        .fetch_all(&self.db)
        .await?;
        rows.into_iter()
            .map(|(id, sale, batch, reservation, how)| {
                let corrupt = |reason: &str| OrderError::CorruptRow { id, reason: reason.to_owned() };
                Ok(PendingSettlement {
                    order: OrderId::new(id),
                    sale: SaleId::try_from(sale).map_err(|_| corrupt("sale id"))?,
                    batch: BatchNo::try_from(batch).map_err(|_| corrupt("batch no"))?,
                    reservation_id: u64::try_from(reservation).map_err(|_| corrupt("reservation id"))?,
                    how: RedisSettle::parse(&how).ok_or_else(|| corrupt("redis_settle"))?,
                })
            })
            .collect()
    }

    /// Records that Redis applied these orders' settlements.
    pub async fn mark_settled(&self, orders: &[OrderId]) -> Result<(), OrderError> {
        if orders.is_empty() {
            return Ok(());
        }
        let ids: Vec<i64> = orders.iter().map(|o| o.get()).collect();
        sqlx::query("UPDATE orders SET redis_settle = NULL WHERE id = ANY($1)").bind(&ids).execute(&self.db).await?;
        Ok(())
    }

    /// Every order of a batch, for a rebuild of its Redis state.
    pub async fn batch_orders(
        conn: &mut sqlx::PgConnection,
        sale: SaleId,
        batch: BatchNo,
    ) -> Result<Vec<BatchOrder>, OrderError> {
        let rows: Vec<(i64, String, i32, String, DateTime<Utc>, i64)> = sqlx::query_as(
            "SELECT reservation_id, user_id, quantity, status, expires_at, ticket FROM orders \
             WHERE sale_id = $1 AND batch_no = $2 ORDER BY reservation_id",
        )
        .bind(sale.get())
        .bind(batch.get())
        .fetch_all(conn)
        .await?;
        rows.into_iter()
            .map(|(reservation, user, quantity, status, expires_at, ticket)| {
                let corrupt = |reason: &str| OrderError::CorruptRow { id: reservation, reason: reason.to_owned() };
                Ok(BatchOrder {
                    reservation_id: u64::try_from(reservation).map_err(|_| corrupt("reservation id"))?,
                    user: UserId::try_from(user).map_err(|_| corrupt("user id"))?,
                    quantity: Units::try_from(i64::from(quantity)).map_err(|_| corrupt("quantity"))?,
                    status: OrderStatus::parse(&status).ok_or_else(|| corrupt("status"))?,
                    expires_at,
                    ticket: u64::try_from(ticket).map_err(|_| corrupt("ticket"))?,
                })
            })
            .collect()
    }

    /// Decides the fate of reservations Redis made a while ago without knowing of an order:
    /// those with an order are confirmed; the others are recorded as released (so a late order
    /// for one is refused, [`Placed::Orphaned`]) and returned, for Redis to give back. Under the
    /// batch row's lock, which the order writer holds while it inserts: an order is either
    /// committed before (and found here) or refused after.
    pub async fn release_orphans(&self, sale: SaleId, batch: BatchNo, ids: &[u64]) -> Result<Vec<u64>, OrderError> {
        let mut tx = self.db.begin().await?;
        lock_epochs(&mut tx, std::iter::once((sale, batch))).await?;
        let wanted: Vec<i64> = ids.iter().map(|id| to_i64(*id)).collect();
        let written: Vec<i64> = sqlx::query_scalar(
            "SELECT reservation_id FROM orders WHERE sale_id = $1 AND batch_no = $2 AND reservation_id = ANY($3)",
        )
        .bind(sale.get())
        .bind(batch.get())
        .bind(&wanted)
        .fetch_all(&mut *tx)
        .await?;
        let written: std::collections::HashSet<i64> = written.into_iter().collect();
        let orphans: Vec<i64> = wanted.into_iter().filter(|id| !written.contains(id)).collect();
        sqlx::query(
            "INSERT INTO released_reservations (sale_id, batch_no, reservation_id)              SELECT $1, $2, UNNEST($3::bigint[]) ON CONFLICT DO NOTHING",
        )
        .bind(sale.get())
        .bind(batch.get())
        .bind(&orphans)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(orphans.into_iter().filter_map(|id| u64::try_from(id).ok()).collect())
    }

    /// Whether an order of the batch still holds units unpaid, or has a settlement Redis owes:
    /// the batch's Redis state is still needed.
    pub async fn has_unsettled_orders(&self, sale: SaleId, batch: BatchNo) -> Result<bool, OrderError> {
        Ok(sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM orders WHERE sale_id = $1 AND batch_no = $2 \
                            AND (status = 'pending_payment' OR redis_settle IS NOT NULL))",
        )
        .bind(sale.get())
        .bind(batch.get())
        .fetch_one(&self.db)
        .await?)
    }

    /// The largest reservation id the batch's orders use (0 when it has none). Redis hands ids
    /// out before their orders are written, so its own counter is never below this unless it
    /// went back to an older state.
    pub async fn last_reservation_id(&self, sale: SaleId, batch: BatchNo) -> Result<u64, OrderError> {
        let last: Option<i64> =
            sqlx::query_scalar("SELECT max(reservation_id) FROM orders WHERE sale_id = $1 AND batch_no = $2")
                .bind(sale.get())
                .bind(batch.get())
                .fetch_one(&self.db)
                .await?;
        Ok(last.and_then(|id| u64::try_from(id).ok()).unwrap_or(0))
    }

    /// What a batch's orders hold, as Redis should see it (see [`BatchTotals`]).
    pub async fn batch_totals(&self, sale: SaleId, batch: BatchNo) -> Result<BatchTotals, OrderError> {
        let (reserved, sold): (i64, i64) = sqlx::query_as(
            "SELECT COALESCE(SUM(quantity) FILTER (WHERE status = 'pending_payment' OR redis_settle IS NOT NULL), 0)::bigint, \
                    COALESCE(SUM(quantity) FILTER (WHERE status = 'paid' AND redis_settle IS NULL), 0)::bigint \
             FROM orders WHERE sale_id = $1 AND batch_no = $2",
        )
        .bind(sale.get())
        .bind(batch.get())
        .fetch_one(&self.db)
        .await?;
        Ok(BatchTotals { reserved, sold })
    }
}

fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(e) if e.is_unique_violation())
}

/// Runs a batch of records in one transaction; if it fails, runs each job alone, so that one bad
/// job (a constraint it breaks) fails only its own request. An order the database guard refuses
/// (stock, per-user limit, a reservation id used twice) is answered [`Placed::Refused`].
async fn record_isolated(db: &PgPool, jobs: Vec<RecordJob>) -> Vec<Result<Recorded, OrderError>> {
    let alone = |result: Result<Vec<Recorded>, OrderError>| match result {
        Ok(mut r) => Ok(r.remove(0)),
        Err(e) => match Refusal::of(&e) {
            Some(refusal) => Ok(Recorded::Placed(Placed::Refused(refusal))),
            None => Err(e),
        },
    };
    match record_batch(db, &jobs).await {
        Ok(results) => results.into_iter().map(Ok).collect(),
        Err(e) if jobs.len() == 1 => vec![alone(Err(e))],
        Err(_) => {
            let mut results = Vec::with_capacity(jobs.len());
            for job in &jobs {
                results.push(alone(record_batch(db, std::slice::from_ref(job)).await));
            }
            results
        }
    }
}

/// One transaction of orders and stored refusals (see [`OrderBook::place`]).
async fn record_batch(db: &PgPool, jobs: &[RecordJob]) -> Result<Vec<Recorded>, OrderError> {
    let mut tx = db.begin().await?;
    let mut placed: HashMap<usize, Placed> = HashMap::new();
    let orders: Vec<(usize, &NewOrder)> = jobs
        .iter()
        .enumerate()
        .filter_map(|(i, j)| match j {
            RecordJob::Order(o) => Some((i, &**o)),
            RecordJob::Outcome { .. } => None,
        })
        .collect();
    if !orders.is_empty() {
        let current = lock_epochs(&mut tx, orders.iter().map(|(_, o)| (o.sale_id, o.batch_no))).await?;
        let released = released_among(&mut tx, orders.iter().map(|(_, o)| *o)).await?;
        // Why an order cannot be written, if it cannot.
        let refused = |o: &NewOrder| {
            if current.get(&(o.sale_id.get(), o.batch_no.get())).is_none_or(|e| o.epoch < *e) {
                Some(Placed::Fenced)
            } else if released.contains(&(o.sale_id.get(), o.batch_no.get(), to_i64(o.reservation_id))) {
                Some(Placed::Orphaned)
            } else {
                None
            }
        };
        let mut valid = Vec::with_capacity(orders.len());
        for (i, o) in &orders {
            match refused(o) {
                Some(answer) => {
                    placed.insert(*i, answer);
                }
                None => valid.push((*i, *o)),
            }
        }
        let created = insert_orders(&mut tx, valid.iter().map(|(_, o)| *o)).await?;
        for (i, o) in valid {
            let Some((id, created_at)) = created.get(&(o.sale_id.get(), o.batch_no.get(), to_i64(o.reservation_id)))
            else {
                // Not inserted: the buyer's key already names another order.
                placed.insert(i, Placed::KeyReused);
                continue;
            };
            let order = Order {
                id: OrderId::new(*id),
                sale_id: o.sale_id,
                batch_no: o.batch_no,
                status: OrderStatus::PendingPayment,
                quantity: o.quantity,
                amount_cents: o.amount_cents,
                currency: o.currency.clone(),
                created_at: *created_at,
                expires_at: o.expires_at,
                paid_at: None,
                payment_ref: None,
                user: o.user.clone(),
                reservation_id: o.reservation_id,
            };
            placed.insert(i, Placed::Created(order));
        }
    }
    let refusals: Vec<(&UserId, &IdempotencyKey, &Fingerprint, &StoredResponse)> = jobs
        .iter()
        .filter_map(|j| match j {
            RecordJob::Outcome { user, key, fingerprint, response } => Some((user, key, fingerprint, response)),
            RecordJob::Order(_) => None,
        })
        .collect();
    if !refusals.is_empty() {
        sqlx::query(
            "INSERT INTO idempotency_keys (user_id, key, fingerprint, status_code, response) \
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::bytea[], $4::int2[], $5::text[]) ON CONFLICT DO NOTHING",
        )
        .bind(refusals.iter().map(|r| r.0.as_str()).collect::<Vec<_>>())
        .bind(refusals.iter().map(|r| r.1.as_str()).collect::<Vec<_>>())
        .bind(refusals.iter().map(|r| &r.2.0[..]).collect::<Vec<_>>())
        .bind(refusals.iter().map(|r| i16::try_from(r.3.status).unwrap_or(500)).collect::<Vec<_>>())
        .bind(refusals.iter().map(|r| r.3.body.as_str()).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok((0..jobs.len()).map(|i| placed.remove(&i).map_or(Recorded::Stored, Recorded::Placed)).collect())
}

/// Locks the batches' rows (a rebuild's epoch bump waits for this transaction; the guard's
/// trigger updates them, so the lock is taken at that strength now rather than upgraded later,
/// which two writers could deadlock on) and returns their current epochs.
async fn lock_epochs(
    tx: &mut Transaction<'_, Postgres>,
    batches: impl Iterator<Item = (SaleId, BatchNo)>,
) -> Result<HashMap<(i64, i64), i64>, OrderError> {
    let mut unique: Vec<(i64, i64)> = batches.map(|(s, b)| (s.get(), b.get())).collect();
    unique.sort_unstable();
    unique.dedup();
    let rows: Vec<(i64, i64, i64)> = sqlx::query_as(
        "SELECT sale_id, batch_no, epoch FROM sale_batches \
         WHERE (sale_id, batch_no) IN (SELECT * FROM UNNEST($1::bigint[], $2::bigint[])) \
         ORDER BY sale_id, batch_no FOR NO KEY UPDATE",
    )
    .bind(unique.iter().map(|u| u.0).collect::<Vec<_>>())
    .bind(unique.iter().map(|u| u.1).collect::<Vec<_>>())
    .fetch_all(&mut **tx)
    .await?;
    Ok(rows.into_iter().map(|(s, b, e)| ((s, b), e)).collect())
}

/// Which of these orders' reservations upkeep released as orphans (read under the batch rows'
/// lock, which the release takes too).
async fn released_among(
    tx: &mut Transaction<'_, Postgres>,
    orders: impl Iterator<Item = &NewOrder>,
) -> Result<std::collections::HashSet<(i64, i64, i64)>, OrderError> {
    let orders: Vec<&NewOrder> = orders.collect();
    let rows: Vec<(i64, i64, i64)> = sqlx::query_as(
        "SELECT sale_id, batch_no, reservation_id FROM released_reservations          WHERE (sale_id, batch_no, reservation_id) IN (SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::bigint[]))",
    )
    .bind(orders.iter().map(|o| o.sale_id.get()).collect::<Vec<_>>())
    .bind(orders.iter().map(|o| o.batch_no.get()).collect::<Vec<_>>())
    .bind(orders.iter().map(|o| to_i64(o.reservation_id)).collect::<Vec<_>>())
    .fetch_all(&mut **tx)
    .await?;
    Ok(rows.into_iter().collect())
}

/// Inserts orders; returns each one's id and creation time by (sale, batch, reservation).
async fn insert_orders(
    tx: &mut Transaction<'_, Postgres>,
    orders: impl Iterator<Item = &NewOrder>,
) -> Result<HashMap<(i64, i64, i64), (i64, DateTime<Utc>)>, OrderError> {
    let orders: Vec<&NewOrder> = orders.collect();
    if orders.is_empty() {
        return Ok(HashMap::new());
    }
    let quantity = |o: &NewOrder| i32::try_from(o.quantity.get()).unwrap_or(i32::MAX);
    let rows: Vec<(i64, i64, i64, i64, DateTime<Utc>)> = sqlx::query_as(
        "INSERT INTO orders (sale_id, batch_no, user_id, quantity, amount_cents, currency, reservation_id, ticket, \
                             epoch, idempotency_key, fingerprint, expires_at) \
         SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::text[], $4::int[], $5::bigint[], $6::text[], \
                              $7::bigint[], $8::bigint[], $9::bigint[], $10::text[], $11::bytea[], $12::timestamptz[]) \
         ON CONFLICT (user_id, idempotency_key) DO NOTHING \
         RETURNING id, sale_id, batch_no, reservation_id, created_at",
    )
    .bind(orders.iter().map(|o| o.sale_id.get()).collect::<Vec<_>>())
    .bind(orders.iter().map(|o| o.batch_no.get()).collect::<Vec<_>>())
    .bind(orders.iter().map(|o| o.user.as_str()).collect::<Vec<_>>())
    .bind(orders.iter().map(|o| quantity(o)).collect::<Vec<_>>())
    .bind(orders.iter().map(|o| o.amount_cents).collect::<Vec<_>>())
    .bind(orders.iter().map(|o| o.currency.as_str()).collect::<Vec<_>>())
    .bind(orders.iter().map(|o| to_i64(o.reservation_id)).collect::<Vec<_>>())
    .bind(orders.iter().map(|o| to_i64(o.ticket)).collect::<Vec<_>>())
    .bind(orders.iter().map(|o| o.epoch).collect::<Vec<_>>())
    .bind(orders.iter().map(|o| o.idempotency_key.as_str()).collect::<Vec<_>>())
    .bind(orders.iter().map(|o| &o.fingerprint.0[..]).collect::<Vec<_>>())
    .bind(orders.iter().map(|o| o.expires_at).collect::<Vec<_>>())
    .fetch_all(&mut **tx)
    .await?;
    Ok(rows.into_iter().map(|(id, s, b, r, at)| ((s, b, r), (id, at))).collect())
}
