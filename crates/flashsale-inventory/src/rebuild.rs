//! Rebuilding a batch's hot state from PostgreSQL after Redis lost it.
//!
//! The caller (the server's upkeep) notices a live batch without a ledger, bumps the batch's
//! epoch in PostgreSQL under the batch row's lock, reads the batch's orders, and hands them here.
//! [`Inventory::rebuild`] writes the whole state in one script, ledger last; until then every
//! reservation answers [`crate::Reserved::Missing`] (the API's 503 `rebuilding`).

use flashsale_core::{BatchNo, SaleId, Ticket, Units, UserId};
use redis::Value;

use crate::ledger::malformed;
use crate::reservation::units;
use crate::{Inventory, InventoryError, LedgerSpec, ReservationId, scripts};

/// A reservation whose order is still waiting for payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenReservation {
    pub id: ReservationId,
    pub user: UserId,
    pub units: Units,
    /// The order's payment deadline, Unix ms.
    pub deadline_ms: i64,
    /// The admission ticket it consumed.
    pub ticket: Ticket,
}

/// A reservation whose order is paid (`committed`) or gave its units back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettledReservation {
    pub id: ReservationId,
    pub user: UserId,
    pub units: Units,
    pub committed: bool,
    pub ticket: Ticket,
}

/// How far a batch's queue had gone by its last marks in PostgreSQL (written every second), for
/// restarting a queue Redis lost (see `rebuild_batch.lua`). All zero: no marks, nothing to restore.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueMarks {
    /// Tickets handed out.
    pub tail: u64,
    /// Tickets that may have been handed out since the mark (two seconds of the fastest joining).
    pub margin: u64,
    /// The "now serving" counter.
    pub serving: u64,
    /// The first ticket whose admission window may still be running (0: none).
    pub window_from: u64,
    /// The admission window, ms (the reopened step's length).
    pub window_ms: i64,
}

/// Everything a batch's hot state is rebuilt from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchState {
    /// The ledger's settings, with the batch's new epoch.
    pub spec: LedgerSpec,
    /// The queue's last marks.
    pub queue: QueueMarks,
    /// The largest reservation id any order uses.
    pub last_reservation: u64,
    pub open: Vec<OpenReservation>,
    pub settled: Vec<SettledReservation>,
}

/// Outcome of [`Inventory::rebuild`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rebuilt {
    /// The state is back, with these counts.
    Rebuilt { available: Units, reserved: Units, sold: Units },
    /// A ledger exists (another instance rebuilt it first): nothing was written.
    AlreadyPresent,
}

impl Inventory {
    /// Fences a batch whose Redis state is known to be wrong (PostgreSQL refused an order Redis
    /// reserved, Redis handed out a reservation id twice, Redis restarted and may have lost its
    /// last writes): deletes its inventory state in one command, ledger included, so that every
    /// reservation answers [`crate::Reserved::Missing`] (503 `rebuilding`) and upkeep rebuilds
    /// the batch from PostgreSQL. The queue's keys are kept: buyers keep their places.
    pub async fn fence(&self, sale: SaleId, batch: BatchNo) -> Result<(), InventoryError> {
        let keys = self.keys().batch(sale, batch);
        let mut conn = self.redis().conn().await?;
        let _: i64 = redis::cmd("DEL")
            .arg(keys.ledger())
            .arg(keys.holdings())
            .arg(keys.reservations())
            .arg(keys.reservation_deadlines())
            .arg(keys.settled())
            .arg(keys.used_tickets())
            .arg(keys.unconfirmed())
            .arg(keys.unconfirmed_info())
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    /// Gives every key of a finished batch (nothing reserved any more) an expiry `grace_ms`
    /// from now; returns how many keys existed.
    pub async fn retire(&self, sale: SaleId, batch: BatchNo, grace_ms: i64) -> Result<u64, InventoryError> {
        let mut invocation = scripts::RETIRE_BATCH.prepare_invoke();
        for key in self.keys().batch(sale, batch).all() {
            invocation.key(key);
        }
        invocation.arg(grace_ms.max(1));
        let mut conn = self.redis().conn().await?;
        let reply: Value = invocation.invoke_async(&mut conn).await?;
        match flashsale_redis::tagged(&reply) {
            Some(("retired", [Value::Int(n)])) => Ok(u64::try_from(*n).unwrap_or_default()),
            _ => Err(malformed("retire_batch", &reply)),
        }
    }

    /// Open reservations the batch still has (0 when it has no ledger).
    pub async fn open_reservations(&self, sale: SaleId, batch: BatchNo) -> Result<u64, InventoryError> {
        let mut conn = self.redis().conn().await?;
        let n: u64 =
            redis::cmd("HLEN").arg(self.keys().batch(sale, batch).reservations()).query_async(&mut conn).await?;
        Ok(n)
    }

    /// Writes a batch's hot state from `state`, unless its ledger exists.
    pub async fn rebuild(&self, sale: SaleId, batch: BatchNo, state: &BatchState) -> Result<Rebuilt, InventoryError> {
        let keys = self.keys().batch(sale, batch);
        let mut invocation = scripts::REBUILD_BATCH.prepare_invoke();
        invocation
            .key(keys.ledger())
            .key(keys.holdings())
            .key(keys.reservations())
            .key(keys.reservation_deadlines())
            .key(keys.settled())
            .key(keys.used_tickets())
            .key(keys.queue_tail())
            .key(keys.queue_serving())
            .key(keys.unconfirmed())
            .key(keys.unconfirmed_info())
            .key(keys.queue_steps())
            .key(keys.queue_steps_by_ticket())
            .key(keys.queue_step_info())
            .key(keys.queue_ticker())
            .key(keys.queue_prequeue())
            .key(keys.queue_sealed());
        state.spec.push_args(&mut invocation);
        let marks = &state.queue;
        invocation
            .arg(state.last_reservation)
            .arg(marks.tail)
            .arg(marks.margin)
            .arg(marks.serving)
            .arg(marks.window_from)
            .arg(marks.window_ms.max(1))
            .arg(state.open.len());
        for r in &state.open {
            invocation.arg(r.id.0).arg(r.units.get()).arg(r.deadline_ms).arg(r.ticket.get()).arg(r.user.as_str());
        }
        for r in &state.settled {
            let how = if r.committed { "committed" } else { "released" };
            invocation.arg(r.id.0).arg(r.units.get()).arg(how).arg(r.ticket.get()).arg(r.user.as_str());
        }
        // A rebuild grows with the batch: a pooled connection with the long bulk timeout.
        let mut conn = self.redis().bulk_conn().await?;
        let reply: Value = invocation.invoke_async(&mut conn).await?;
        let bad = || malformed("rebuild_batch", &reply);
        match flashsale_redis::tagged(&reply) {
            Some(("exists", [])) => Ok(Rebuilt::AlreadyPresent),
            Some(("rebuilt", [a, r, s])) => Ok(Rebuilt::Rebuilt {
                available: units(a).ok_or_else(bad)?,
                reserved: units(r).ok_or_else(bad)?,
                sold: units(s).ok_or_else(bad)?,
            }),
            _ => Err(bad()),
        }
    }
}
