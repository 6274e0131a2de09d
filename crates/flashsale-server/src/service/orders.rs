//! Orders on the server: the steps around the Redis reservation, payments, and the workers that
//! expire unpaid orders and finish settlements Redis still owes.
//!
//! # Creating an order, exactly once
//! 1. Check what needs no storage: the quantity against the sale's per-user limit, the admission
//!    token's signature, buyer, sale, batch and expiry (403 `token_invalid`).
//! 2. Reserve in Redis, one script: the `Idempotency-Key` claim, ticket, per-user limit, stock.
//! 3. If the key was already claimed: the first answer replayed byte for byte, 409 `in_progress`
//!    while the first runs, 422 `idempotency_key_reused` for another body.
//! 4. Write the order, durably (group commit with other requests); the order row is the answer a
//!    retry replays.
//!    A refusal (sold out, limit reached, token used) is stored as the answer instead.
//!
//! If the order cannot be written after the reservation, the reservation is aborted (units back,
//! ticket usable again) and the key freed, so the retry can run. If the process dies in between,
//! the reservation outlives its deadline and the Redis sweep returns the units
//! (`RESERVATION_GRACE_MS` in `crate::jobs::upkeep` after it).
//!
//! # Settling in Redis
//! A status change that moves units (paid, cancelled, failed, expired) is committed in PostgreSQL
//! with a note of what Redis owes (`orders.redis_settle`), then applied to Redis and the note
//! cleared. [`sweep`] applies notes left by requests that died in between, so Redis always ends
//! up agreeing with PostgreSQL.

use std::time::Duration;

use flashsale_core::{AdmissionStep, Quantity, SaleId, Units, UserId};
use flashsale_inventory::{RequestClaim, ReserveRequest, Reserved, Settled, Settlement};
use flashsale_order::{
    CLAIM_TTL_MS, Cancelled, Claim, Fingerprint, IdempotencyKey, NewOrder, Order, PaymentApplied, PaymentNotice,
    PaymentOutcome, PaymentReceipt, PendingSettlement, Placed, RedisSettle, Refusal, StoredResponse,
};
use flashsale_queue::tokens::TokenError;
use flashsale_queue::{Admission, AdmissionClaims};
use flashsale_sales::FieldError;

use super::Error;
use super::queue::{millis_to_time, sale_snapshot};
use crate::problem::ProblemCode;
use crate::state::AppState;

/// The answer to an order request, as first given: a retry with the same key gets the same
/// status and body bytes again (`replayed`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderAnswer {
    /// The status and body.
    pub stored: StoredResponse,
    /// Whether this is the answer stored for an earlier request.
    pub replayed: bool,
}

impl OrderAnswer {
    fn first(stored: StoredResponse) -> OrderAnswer {
        OrderAnswer { stored, replayed: false }
    }

    /// The answer stored for an earlier request, counted as a replay (`order_requests_total`).
    fn replay(stored: StoredResponse) -> OrderAnswer {
        metrics::counter!("order_requests_total", "outcome" => "replayed").increment(1);
        OrderAnswer { stored, replayed: true }
    }
}

/// The answer to a payment notice, the same for the first delivery and every replay:
/// `status` 200 (applied), 404 (no such order) or 422 (the amount is not the order's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentAnswer {
    /// What the notice did.
    pub receipt: PaymentReceipt,
    /// 200, 404 or 422.
    pub status: u16,
    /// Whether this is the answer stored for an earlier delivery.
    pub replayed: bool,
}

fn quantity_error(limit: Units) -> Error {
    Error::Invalid(flashsale_sales::ValidationErrors(vec![FieldError {
        field: "quantity".to_owned(),
        message: format!("must be a whole number from 1 to the per-user limit, {limit}"),
    }]))
}

/// Creates an order of `quantity` units with the admission token `admission_token` (see the
/// module docs for the steps).
pub async fn create(
    state: &AppState,
    user: &UserId,
    sale_id: SaleId,
    key: IdempotencyKey,
    admission_token: &str,
    quantity: i64,
) -> Result<OrderAnswer, Error> {
    // Nothing is reserved for an order that cannot be written: fail at once, not after a wait
    // for a connection (admission is held meanwhile, so the buyer's turn is not running out).
    if state.database.is_down() {
        return Err(Error::Unavailable("PostgreSQL is unavailable; orders resume when it answers again".to_owned()));
    }
    let snapshot = sale_snapshot(state, sale_id).await?;
    let (sale, batch) = (&snapshot[0].0, &snapshot[0].1.batch);
    let config = &sale.config;
    let quantity =
        Quantity::within(quantity, config.per_user_limit).ok_or_else(|| quantity_error(config.per_user_limit))?;
    let units = quantity.units();
    let fingerprint =
        Fingerprint::of(&[&sale_id.get().to_be_bytes(), admission_token.as_bytes(), &units.get().to_be_bytes()]);
    let now_ms = state.clock.now_ms();
    let refused = |e: TokenError| Error::Refused {
        code: ProblemCode::TokenInvalid,
        detail: format!("admission token refused: {e}"),
    };
    let claims = state.tokens.open_admission(admission_token, user, sale.id, batch.batch_no).map_err(refused)?;
    if now_ms >= claims.expires_at_ms {
        // A retry of a request that got its answer while the token was good must get that
        // answer again, even after the token's time is up (a client retrying after a timeout
        // near the end of its turn). Only an expired token can have one: it is the one refusal
        // of a token that once passed.
        if let Some(Claim::Replay(stored)) = state.orders.stored_answer(user, &key, &fingerprint).await? {
            return Ok(OrderAnswer::replay(stored));
        }
        // A pause or an outage since the token was signed extends the turn: the queue knows
        // its end now.
        if !turn_extended(state, &claims, now_ms).await? {
            return Err(refused(TokenError::Expired));
        }
    }
    let (sale_id, batch_no) = (sale.id, batch.batch_no);
    // The key is claimed inside the reservation script: one Redis round trip per order.
    let claim_key = state.orders.claim_key(sale_id, batch_no, user, &key);
    let claim_value = state.orders.claim_value(&fingerprint);
    let mut reserve = ReserveRequest {
        user,
        units,
        ticket: claims.ticket,
        step: claims.step,
        window_ms: i64::from(config.payment_window_secs) * 1000,
        claim: Some(RequestClaim { key: &claim_key, value: &claim_value, ttl_ms: CLAIM_TTL_MS }),
    };
    let mut reserved = match state.inventory.reserve(sale_id, batch_no, reserve).await {
        Ok(reserved) => reserved,
        Err(e) => return Err(give_up(state, (sale_id, batch_no), user, &key, e.into()).await),
    };
    if let Reserved::Claimed { held } = &reserved {
        match state.orders.resolve_held(sale_id, batch_no, user, &key, &fingerprint, held).await? {
            // A retry that took over a claim its dead first attempt left: reserve under it.
            Claim::Acquired => {
                reserve.claim = None;
                reserved = match state.inventory.reserve(sale_id, batch_no, reserve).await {
                    Ok(reserved) => reserved,
                    Err(e) => return Err(give_up(state, (sale_id, batch_no), user, &key, e.into()).await),
                };
            }
            Claim::Replay(stored) => {
                return Ok(OrderAnswer::replay(stored));
            }
            Claim::InProgress => return Err(in_progress()),
            Claim::KeyReused => return Err(key_reused()),
        }
    }
    let refusal = match reserved {
        Reserved::Reserved { id, deadline_ms, epoch } => {
            #[cfg(feature = "failpoints")]
            if state.failpoints.crash_after_reserve.load(std::sync::atomic::Ordering::SeqCst) {
                // The process "dies" here: no order, no release, the claim left in progress.
                return Err(Error::Internal(anyhow::anyhow!("failpoint: crashed after reserve")));
            }
            let order = NewOrder {
                sale_id: sale.id,
                batch_no: batch.batch_no,
                user: user.clone(),
                quantity,
                amount_cents: config.price_cents.times(quantity),
                currency: config.currency.clone(),
                reservation_id: id,
                ticket: claims.ticket,
                epoch,
                idempotency_key: key.clone(),
                fingerprint,
                expires_at: millis_to_time(deadline_ms),
            };
            return place(state, order, claims.step, config.per_user_limit).await;
        }
        Reserved::SoldOut { .. } => sold_out(),
        Reserved::LimitReached { held } => limit_reached(held, config.per_user_limit),
        Reserved::TokenUsed => {
            // Usually a second use of the token. But if Redis lost this key's claim (and was
            // rebuilt), this may be a retry of the request that used it: its order answers.
            if let Some(Claim::Replay(stored)) = state.orders.stored_answer(user, &key, &fingerprint).await? {
                return Ok(OrderAnswer::replay(stored));
            }
            Error::Refused {
                code: ProblemCode::TokenUsed,
                detail: "this admission token was already used to reserve".to_owned(),
            }
        }
        Reserved::NotOpen => Error::NotOpen { opens_at: batch.opens_at },
        Reserved::Paused => {
            Error::Refused { code: ProblemCode::Paused, detail: "operations paused the sale".to_owned() }
        }
        Reserved::Closed => Error::Refused { code: ProblemCode::Closed, detail: "the batch is closed".to_owned() },
        Reserved::Missing => return Err(give_up(state, (sale_id, batch_no), user, &key, Error::Rebuilding).await),
        // Only after a take-over, when another retry took the claim over first.
        Reserved::Claimed { .. } => return Err(in_progress()),
    };
    refuse(state, (sale_id, batch_no), user, &key, fingerprint, refusal).await
}

/// Whether the turn behind an expired token still runs: a pause or an outage froze it, and the
/// queue moved its end past `now_ms` or has not thawed it yet (see `admit.lua`).
async fn turn_extended(state: &AppState, claims: &AdmissionClaims, now_ms: i64) -> Result<bool, Error> {
    let admission = state.queue.admission(claims.sale, claims.batch, claims.ticket).await?;
    let Admission::Admitted { window, .. } = admission else { return Ok(false) };
    if window.step != claims.step {
        return Ok(false);
    }
    if now_ms < window.expires_at_ms {
        return Ok(true);
    }
    // Frozen and not thawed yet: the turn runs if it was running when the freeze began.
    let counters = state.queue.counters(&[(claims.sale, claims.batch)]).await?;
    Ok(counters.first().is_some_and(|c| c.freeze_holds(window.expires_at_ms)))
}

/// Answers a refusal and stores it as the key's answer, replayed to every retry.
async fn refuse(
    state: &AppState,
    batch: (SaleId, flashsale_core::BatchNo),
    user: &UserId,
    key: &IdempotencyKey,
    fingerprint: Fingerprint,
    refusal: Error,
) -> Result<OrderAnswer, Error> {
    let problem = refusal.problem();
    metrics::counter!("order_requests_total", "outcome" => refusal.code().as_str()).increment(1);
    let body = serde_json::to_string(&problem).map_err(|e| Error::Internal(e.into()))?;
    let stored = StoredResponse { status: problem.status, body };
    if let Err(e) = state.orders.record_outcome(user, key, fingerprint, stored.clone()).await {
        return Err(give_up(state, batch, user, key, e.into()).await);
    }
    Ok(OrderAnswer::first(stored))
}

fn sold_out() -> Error {
    Error::Refused { code: ProblemCode::SoldOut, detail: "every unit of this batch is taken".to_owned() }
}

fn limit_reached(held: impl std::fmt::Display, limit: Units) -> Error {
    Error::Refused {
        code: ProblemCode::LimitReached,
        detail: format!("you already hold or bought {held} of at most {limit} units"),
    }
}

fn key_reused() -> Error {
    Error::Refused {
        code: ProblemCode::IdempotencyKeyReused,
        detail: "this Idempotency-Key was used for a different request; use a new key".to_owned(),
    }
}

fn in_progress() -> Error {
    Error::Refused {
        code: ProblemCode::InProgress,
        detail: "a request with this Idempotency-Key is still running; retry shortly".to_owned(),
    }
}

/// Writes the order for a reservation just made in admission step `step`; on failure gives the
/// reservation back (and the buyer's turn in that step).
async fn place(state: &AppState, order: NewOrder, step: AdmissionStep, limit: Units) -> Result<OrderAnswer, Error> {
    let (sale, batch, reservation) = (order.sale_id, order.batch_no, order.reservation_id);
    let (user, key, fingerprint) = (order.user.clone(), order.idempotency_key.clone(), order.fingerprint.clone());
    let epoch = order.epoch;
    let failure = match state.orders.place(order).await {
        Ok(Placed::Created(order)) => {
            metrics::counter!("order_requests_total", "outcome" => "created").increment(1);
            metrics::counter!("orders_created_units_total").increment(u64::from(order.quantity.get()));
            let body = flashsale_order::creation_body(&order);
            return Ok(OrderAnswer::first(StoredResponse { status: 201, body }));
        }
        Ok(Placed::Fenced) => {
            // The Redis state this reservation lived in was lost and rebuilt without it: there is
            // nothing to give back.
            metrics::counter!("order_requests_total", "outcome" => "fenced").increment(1);
            super::recovery::repair_if_fenced_epoch(state, sale, batch, epoch).await;
            return Err(give_up(state, (sale, batch), &user, &key, Error::Rebuilding).await);
        }
        Ok(Placed::Orphaned) => {
            // Upkeep already gave the reservation back, the ticket and the claim too (which by
            // now may be a retry's: it is left alone): the retry reserves anew.
            metrics::counter!("order_requests_total", "outcome" => "orphaned").increment(1);
            return Err(Error::Unavailable("the order took too long to write; retry with the same key".to_owned()));
        }
        Ok(Placed::KeyReused) => key_reused(),
        Ok(Placed::Refused(refusal)) => {
            // Redis reserved what PostgreSQL, the record, says cannot be sold: Redis's state of the
            // batch is wrong (stale after a crash, an old copy restored, a bug). The order is not
            // written; the batch is fenced and rebuilt from PostgreSQL.
            metrics::counter!("orders_refused_by_database_total", "reason" => refusal.as_str()).increment(1);
            tracing::error!(
                sale.id = %sale, batch.no = %batch, reservation.id = reservation.0, reason = refusal.as_str(),
                "the database refused an order Redis had reserved: Redis's state of the batch is wrong; rebuilding it"
            );
            if let Err(e) = state.inventory.settle(sale, batch, reservation, Settlement::Abort { step }).await {
                tracing::warn!(error = %e, "could not abort the refused reservation; the rebuild drops it");
            }
            super::recovery::fence(state, sale, batch, refusal.as_str()).await;
            let answer = match refusal {
                Refusal::SoldOut => sold_out(),
                Refusal::LimitReached => Error::Refused {
                    code: ProblemCode::LimitReached,
                    detail: format!("this order would take you above the limit of {limit} units"),
                },
                // The reservation was never this buyer's to keep: their ticket is free again
                // after the rebuild, so the retry may work.
                Refusal::ReservationReused => {
                    return Err(give_up(state, (sale, batch), &user, &key, Error::Rebuilding).await);
                }
            };
            return refuse(state, (sale, batch), &user, &key, fingerprint, answer).await;
        }
        Err(e) => {
            tracing::warn!(error = %e, sale.id = %sale, batch.no = %batch, "order not written; aborting its reservation");
            e.into()
        }
    };
    if let Err(abort) = state.inventory.settle(sale, batch, reservation, Settlement::Abort { step }).await {
        // The sweep returns the units after the deadline.
        tracing::error!(error = %abort, "could not abort the reservation; it will expire");
    }
    Err(give_up(state, (sale, batch), &user, &key, failure).await)
}

/// Frees the claim so that a retry runs again, and returns `error`.
async fn give_up(
    state: &AppState,
    (sale, batch): (SaleId, flashsale_core::BatchNo),
    user: &UserId,
    key: &IdempotencyKey,
    error: Error,
) -> Error {
    if let Err(e) = state.orders.abandon_claim(sale, batch, user, key).await {
        // The claim goes stale and a retry takes it over after a while.
        tracing::warn!(error = %e, "could not free an idempotency key");
    }
    error
}

/// The buyer's orders, newest first, older than `before` when given, at most `limit`.
pub async fn list(
    state: &AppState,
    user: &UserId,
    before: Option<flashsale_order::OrderId>,
    limit: i64,
) -> Result<Vec<Order>, Error> {
    Ok(state.orders.list(user, before, limit).await?)
}

/// One of the buyer's orders; another buyer's is `not_found`, exactly like one that does not
/// exist.
pub async fn get(state: &AppState, user: &UserId, id: flashsale_order::OrderId) -> Result<Order, Error> {
    state.orders.get(user, id).await?.ok_or_else(|| Error::NotFound("no such order".to_owned()))
}

/// Cancels the buyer's pending order and releases its units at once.
pub async fn cancel(state: &AppState, user: &UserId, id: flashsale_order::OrderId) -> Result<Order, Error> {
    match state.orders.cancel(user, id).await {
        Ok(Cancelled::Now(order, settle)) => {
            metrics::counter!("orders_cancelled_total").increment(1);
            settle_now(state, settle).await;
            Ok(order)
        }
        Ok(Cancelled::Before(order)) => Ok(order),
        Err(flashsale_order::OrderError::InvalidTransition { from, .. }) => Err(Error::Refused {
            code: ProblemCode::InvalidTransition,
            detail: format!("the order is {}; only a pending order can be cancelled", from.as_str()),
        }),
        Err(e) => Err(e.into()),
    }
}

/// Applies a verified payment notice.
pub async fn apply_payment(state: &AppState, notice: PaymentNotice) -> Result<PaymentAnswer, Error> {
    let fingerprint = Fingerprint::of(&[
        &notice.order_id.to_be_bytes(),
        &notice.amount_cents.get().to_be_bytes(),
        notice.status.as_str().as_bytes(),
    ]);
    match state.orders.apply_payment(&notice, &fingerprint).await? {
        PaymentApplied::Applied { status, receipt, settle } => {
            metrics::counter!("payments_total", "outcome" => receipt.outcome.as_str()).increment(1);
            if receipt.outcome == PaymentOutcome::RefundDue {
                tracing::warn!(order.id = notice.order_id, payment_ref = %notice.payment_ref, "payment for an order that no longer holds units: refund due");
            }
            if let Some(settle) = settle {
                settle_now(state, settle).await;
            }
            Ok(PaymentAnswer { receipt, status, replayed: false })
        }
        PaymentApplied::Replayed(stored) => {
            metrics::counter!("payments_total", "outcome" => "replayed").increment(1);
            let receipt: PaymentReceipt = serde_json::from_str(&stored.body).map_err(|e| Error::Internal(e.into()))?;
            Ok(PaymentAnswer { receipt, status: stored.status, replayed: true })
        }
        PaymentApplied::RefReused => Err(Error::Refused {
            code: ProblemCode::PaymentRefReused,
            detail: "this payment_ref was sent before with a different order, amount or status".to_owned(),
        }),
    }
}

/// Applies a settlement to Redis now and clears its note; a failure leaves the note for
/// [`sweep`], so it is logged and not returned (the buyer's request already succeeded).
async fn settle_now(state: &AppState, settle: PendingSettlement) {
    if let Err(e) = apply_settlements(state, vec![settle]).await {
        tracing::warn!(error = %e, order.id = %settle.order, "settlement left for the sweep");
    }
}

/// Applies settlements to Redis (concurrently, over the shared connection) and clears the notes
/// of those applied.
async fn apply_settlements(state: &AppState, owed: Vec<PendingSettlement>) -> Result<usize, Error> {
    let results = futures::future::join_all(owed.iter().map(|s| {
        let how = match s.how {
            RedisSettle::Commit => Settlement::Commit,
            RedisSettle::Release => Settlement::Release,
        };
        state.inventory.settle(s.sale, s.batch, s.reservation_id, how)
    }))
    .await;
    let mut done = Vec::with_capacity(owed.len());
    let mut failure = None;
    for (s, result) in owed.iter().zip(results) {
        match result {
            Ok(settled) => {
                if check_settled(s, settled) {
                    super::recovery::fence(state, s.sale, s.batch, "settlement_conflict").await;
                }
                done.push(s.order);
            }
            Err(e) => failure = Some(e),
        }
    }
    state.orders.mark_settled(&done).await?;
    match failure {
        Some(e) => Err(e.into()),
        None => Ok(done.len()),
    }
}

/// Checks a settlement against PostgreSQL and returns whether it contradicts it. A paid order
/// whose units Redis had already given back (possible only if the payment was applied to Redis
/// more than the grace period after its deadline, or Redis went back to an older state) means
/// Redis counts fewer units held than the record: the direction that can oversell, so the batch
/// is fenced and rebuilt (the database guard refuses any order past the stock meanwhile).
fn check_settled(s: &PendingSettlement, settled: Settled) -> bool {
    match (s.how, settled) {
        (RedisSettle::Commit, Settled::AlreadyReleased) => {
            metrics::counter!("settlement_conflicts_total").increment(1);
            tracing::error!(order.id = %s.order, sale.id = %s.sale, "paid order's reservation had already been released in Redis");
            true
        }
        (RedisSettle::Release, Settled::AlreadyCommitted) => {
            metrics::counter!("settlement_conflicts_total").increment(1);
            tracing::error!(order.id = %s.order, sale.id = %s.sale, "released order's reservation had been committed in Redis");
            true
        }
        // Redis lost the reservation, or the batch is being rebuilt: the rebuild reads this
        // order's status from PostgreSQL.
        (_, Settled::Unknown | Settled::Missing) => {
            tracing::info!(order.id = %s.order, "reservation unknown to Redis; the rebuild accounts for it");
            false
        }
        _ => false,
    }
}

/// What one [`sweep`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Sweep {
    /// Pending orders past their deadline, now expired.
    pub expired: usize,
    /// Settlements applied that requests had left behind.
    pub settled: usize,
}

/// Orders expired per statement.
const SWEEP_BATCH: i64 = 500;

/// Expires unpaid orders past their deadline (releasing their units) and applies settlements
/// that requests left behind. Run every second by every instance: safe concurrently.
pub async fn sweep(state: &AppState) -> Result<Sweep, Error> {
    let mut done = Sweep::default();
    loop {
        let due = state.orders.expire_due(SWEEP_BATCH).await?;
        let n = due.len();
        done.expired += n;
        metrics::counter!("orders_expired_total").increment(n as u64);
        apply_settlements(state, due).await?;
        if i64::try_from(n).unwrap_or(i64::MAX) < SWEEP_BATCH {
            break;
        }
    }
    let owed = state.orders.unsettled(Duration::from_secs(5), SWEEP_BATCH).await?;
    done.settled = apply_settlements(state, owed).await?;
    Ok(done)
}
