//! Reservations: an admitted buyer's units held until they pay, give up, or the deadline passes.
//!
//! Three operations, each one Lua script and so one atomic step:
//! - [`Inventory::reserve`]: consume the admission ticket, check the buyer's holdings against the
//!   per-user limit and the stock, take the units, record the reservation with its deadline.
//! - [`Inventory::settle`]: commit (paid), release (cancelled, expired) or abort (order not
//!   written) one reservation, exactly once.
//! - [`Inventory::expire_due`]: the sweeper's step, releasing reservations past their deadline;
//!   safe on every instance at once.

use flashsale_core::{AdmissionStep, BatchNo, Epoch, SaleId, Ticket, Units, UserId};
use redis::Value;

use flashsale_redis::reply_text;

use crate::ledger::malformed;
use crate::{Inventory, InventoryError, scripts};

pub use flashsale_core::ReservationId;

/// What a buyer asks to reserve, with the admission that entitles them.
#[derive(Debug, Clone, Copy)]
pub struct ReserveRequest<'a> {
    pub user: &'a UserId,
    /// Units wanted (≥ 1).
    pub units: Units,
    /// The admission token's unique id (its ticket); consumed on success.
    pub ticket: Ticket,
    /// The admission step the ticket belongs to.
    pub step: AdmissionStep,
    /// How long the reservation holds the units: the payment window, in ms.
    pub window_ms: i64,
    /// The request's idempotency claim, made in the same step (see [`RequestClaim`]).
    pub claim: Option<RequestClaim<'a>>,
}

/// A key the reservation claims in the same step, unless it is already held: the order's
/// idempotency claim (the order crate names and fills it; the key must be in the batch's hash
/// slot). One Redis round trip per order instead of two.
#[derive(Debug, Clone, Copy)]
pub struct RequestClaim<'a> {
    pub key: &'a str,
    pub value: &'a str,
    /// How long the claim is kept.
    pub ttl_ms: i64,
}

/// Outcome of [`Inventory::reserve`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reserved {
    /// Held until `deadline_ms` (Unix ms, Redis's clock), made in the ledger's `epoch` (the order
    /// must be written with it: see the rebuild).
    Reserved { id: ReservationId, deadline_ms: i64, epoch: Epoch },
    /// Not enough units left; `available` is what there is.
    SoldOut { available: Units },
    /// The buyer already holds or bought `held` units; more would exceed the limit.
    LimitReached { held: Units },
    /// The admission ticket was already used to reserve.
    TokenUsed,
    /// The batch has not opened.
    NotOpen,
    /// Operations paused the batch.
    Paused,
    /// The batch is closed.
    Closed,
    /// No ledger in Redis (lost state: the batch must be rebuilt first).
    Missing,
    /// The request's claim is already held (by this claim's value): nothing was reserved.
    Claimed { held: String },
}

/// How a reservation ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settlement {
    /// Paid: the units are sold.
    Commit,
    /// Not paid: the units go back to stock.
    Release,
    /// The order could not be written: the units go back to stock and the admission ticket
    /// becomes usable again, so the buyer can retry with the same token. `step` is the admission
    /// step the reservation was made in (the token's): the buyer counts as in flight again there.
    Abort { step: AdmissionStep },
}

/// Outcome of [`Inventory::settle`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// This call settled it, moving `units`.
    Done { units: Units },
    /// It was committed before.
    AlreadyCommitted,
    /// It was released before (a commit now is too late: the units may be someone else's).
    AlreadyReleased,
    /// No such reservation.
    Unknown,
    /// The batch has no ledger (fenced or lost, being rebuilt): nothing was done; try again
    /// after the rebuild, which will know how PostgreSQL settled it.
    Missing,
}

/// Outcome of [`Inventory::expire_due`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Expired {
    /// Reservations released by this call.
    pub reservations: u64,
    /// Their units, back in stock.
    pub units: u64,
}

/// A reservation whose order is not yet known to be in PostgreSQL (see
/// [`Inventory::unconfirmed`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unconfirmed {
    pub id: ReservationId,
    /// The admission step it was made in (0: none), given back if it is released.
    pub step: AdmissionStep,
    /// The request's idempotency claim key, if it made one: freed when the reservation is
    /// released as an orphan, so the buyer's retry with the same key runs at once.
    pub claim: Option<String>,
}

/// A reply integer as units, if it is one.
pub(crate) fn units(v: &Value) -> Option<Units> {
    match v {
        Value::Int(n) => Units::try_from(*n).ok(),
        _ => None,
    }
}

impl Inventory {
    /// Reserves units for an admitted buyer (see [`Reserved`] for the outcomes).
    pub async fn reserve(
        &self,
        sale: SaleId,
        batch: BatchNo,
        request: ReserveRequest<'_>,
    ) -> Result<Reserved, InventoryError> {
        if request.units == Units::ZERO {
            return Err(InventoryError::ZeroUnits);
        }
        let keys = self.keys().batch(sale, batch);
        let mut invocation = scripts::RESERVE.prepare_invoke();
        invocation
            .key(keys.ledger())
            .key(keys.holdings())
            .key(keys.reservations())
            .key(keys.reservation_deadlines())
            .key(keys.used_tickets())
            .key(keys.queue_step_info())
            .key(keys.queue_ticker())
            .key(keys.unconfirmed())
            .key(keys.unconfirmed_info())
            .arg(request.user.as_str())
            .arg(request.units.get())
            .arg(request.ticket.get())
            .arg(request.step.get())
            .arg(request.window_ms);
        if let Some(claim) = request.claim {
            invocation.key(claim.key).arg(claim.value).arg(claim.ttl_ms);
        }
        let mut conn = self.redis().conn().await?;
        let reply: Value = invocation.invoke_async(&mut conn).await?;
        let bad = || malformed("reserve", &reply);
        let Some(tagged) = flashsale_redis::tagged(&reply) else { return Err(bad()) };
        Ok(match tagged {
            ("reserved", [Value::Int(id), Value::Int(deadline), Value::Int(epoch)]) => Reserved::Reserved {
                id: ReservationId(u64::try_from(*id).map_err(|_| bad())?),
                deadline_ms: *deadline,
                epoch: Epoch::try_from(*epoch).map_err(|_| bad())?,
            },
            ("sold_out", [available]) => Reserved::SoldOut { available: units(available).ok_or_else(bad)? },
            ("limit_reached", [held]) => Reserved::LimitReached { held: units(held).ok_or_else(bad)? },
            ("token_used", []) => Reserved::TokenUsed,
            ("not_open", []) => Reserved::NotOpen,
            ("paused", []) => Reserved::Paused,
            ("closed", []) => Reserved::Closed,
            ("missing", []) => Reserved::Missing,
            ("claimed", [held]) => Reserved::Claimed { held: reply_text(held).ok_or_else(bad)?.to_owned() },
            _ => return Err(bad()),
        })
    }

    /// Commits or releases a reservation, exactly once.
    pub async fn settle(
        &self,
        sale: SaleId,
        batch: BatchNo,
        id: ReservationId,
        how: Settlement,
    ) -> Result<Settled, InventoryError> {
        let keys = self.keys().batch(sale, batch);
        let mut conn = self.redis().conn().await?;
        let reply: Value = scripts::SETTLE
            .key(keys.ledger())
            .key(keys.holdings())
            .key(keys.reservations())
            .key(keys.reservation_deadlines())
            .key(keys.settled())
            .key(keys.used_tickets())
            .key(keys.queue_step_info())
            .key(keys.queue_ticker())
            .arg(id.0)
            .arg(match how {
                Settlement::Commit => "commit",
                Settlement::Release => "release",
                Settlement::Abort { .. } => "abort",
            })
            .arg(match how {
                Settlement::Abort { step } => step.get(),
                Settlement::Commit | Settlement::Release => 0,
            })
            .invoke_async(&mut conn)
            .await?;
        let bad = || malformed("settle", &reply);
        let Some(tagged) = flashsale_redis::tagged(&reply) else { return Err(bad()) };
        Ok(match tagged {
            ("done", [n]) => Settled::Done { units: units(n).ok_or_else(bad)? },
            ("already", [how]) => match reply_text(how) {
                Some("committed") => Settled::AlreadyCommitted,
                Some("released") => Settled::AlreadyReleased,
                _ => return Err(bad()),
            },
            ("unknown", []) => Settled::Unknown,
            ("missing", []) => Settled::Missing,
            _ => return Err(bad()),
        })
    }

    /// Up to `limit` reservations made at least `age_ms` ago (Redis's clock) whose order is not
    /// yet known to be written, oldest first.
    pub async fn unconfirmed(
        &self,
        sale: SaleId,
        batch: BatchNo,
        age_ms: i64,
        limit: u32,
    ) -> Result<Vec<Unconfirmed>, InventoryError> {
        let keys = self.keys().batch(sale, batch);
        let mut conn = self.redis().conn().await?;
        let reply: Value = scripts::UNCONFIRMED
            .key(keys.unconfirmed())
            .key(keys.unconfirmed_info())
            .arg(age_ms.max(0))
            .arg(limit.max(1))
            .invoke_async(&mut conn)
            .await?;
        let Some(("unconfirmed", found)) = flashsale_redis::tagged(&reply) else {
            return Err(malformed("unconfirmed", &reply));
        };
        found
            .chunks(2)
            .map(|pair| {
                let bad = || malformed("unconfirmed", &pair);
                let [Some(id), Some(info)] = [pair.first().and_then(reply_text), pair.get(1).and_then(reply_text)]
                else {
                    return Err(bad());
                };
                let (step, claim) = info.split_once(' ').ok_or_else(bad)?;
                Ok(Unconfirmed {
                    id: ReservationId(id.parse().map_err(|_| bad())?),
                    step: AdmissionStep(step.parse().map_err(|_| bad())?),
                    claim: (!claim.is_empty()).then(|| claim.to_owned()),
                })
            })
            .collect()
    }

    /// Takes reservations out of the unconfirmed set: PostgreSQL has their orders, or they were
    /// released as orphans.
    pub async fn confirm(&self, sale: SaleId, batch: BatchNo, ids: &[ReservationId]) -> Result<(), InventoryError> {
        if ids.is_empty() {
            return Ok(());
        }
        let keys = self.keys().batch(sale, batch);
        let mut invocation = scripts::CONFIRM.prepare_invoke();
        invocation.key(keys.unconfirmed()).key(keys.unconfirmed_info());
        for id in ids {
            invocation.arg(id.0);
        }
        let mut conn = self.redis().conn().await?;
        let reply: Value = invocation.invoke_async(&mut conn).await?;
        match flashsale_redis::tagged(&reply) {
            Some(("confirmed", [Value::Int(_)])) => Ok(()),
            _ => Err(malformed("confirm", &reply)),
        }
    }

    /// Releases up to `limit` reservations of the batch whose deadline passed more than `grace_ms`
    /// ago.
    pub async fn expire_due(
        &self,
        sale: SaleId,
        batch: BatchNo,
        limit: u32,
        grace_ms: i64,
    ) -> Result<Expired, InventoryError> {
        let keys = self.keys().batch(sale, batch);
        let mut conn = self.redis().conn().await?;
        let reply: Value = scripts::EXPIRE
            .key(keys.ledger())
            .key(keys.holdings())
            .key(keys.reservations())
            .key(keys.reservation_deadlines())
            .key(keys.settled())
            .arg(limit.max(1))
            .arg(grace_ms.max(0))
            .invoke_async(&mut conn)
            .await?;
        match flashsale_redis::tagged(&reply) {
            Some(("expired", [Value::Int(n), Value::Int(u)])) => Ok(Expired {
                reservations: u64::try_from(*n).unwrap_or_default(),
                units: u64::try_from(*u).unwrap_or_default(),
            }),
            // No ledger: the batch is being rebuilt; nothing was released.
            Some(("missing", [])) => Ok(Expired { reservations: 0, units: 0 }),
            _ => Err(malformed("expire", &reply)),
        }
    }
}
