//! Putting Redis right from PostgreSQL, the record: fencing a batch whose Redis state is known
//! to be wrong (every reservation answers `rebuilding` until it is rebuilt) and rebuilding it.
//!
//! Called by the order path (a reservation the record refuses, a settlement that contradicts it,
//! an order of a state that was never committed) and by upkeep's pass (a ledger missing or of
//! another epoch, a Redis that restarted or went back in time). A rebuild runs under the batch
//! row's lock: its epoch is bumped, its orders are read, and the whole hot state (stock minus
//! pending and paid units, holdings, live reservations, used tickets) is written in one script,
//! ledger last; reservations from before the loss are fenced off by the epoch (see
//! `flashsale_order::book`).

use flashsale_core::{BatchNo, Epoch, SaleId};
use flashsale_inventory::{Allotment, LedgerSpec};
use flashsale_inventory::{BatchState, OpenReservation, QueueMarks, Rebuilt, SettledReservation};
use flashsale_order::{OrderBook, OrderStatus};
use flashsale_sales::{Batch, Sale, SaleConfig, store};

use super::Error;
use crate::state::AppState;

/// Tickets left unused after the queue's last mark when Redis lost the queue, at the least (see
/// [`rebuild`]): covers the joins of the second after the mark while a batch is quiet.
pub const QUEUE_MARGIN_FLOOR: u64 = 100;

/// The ledger a batch should have, from its row and its sale's configuration.
pub fn ledger_spec(config: &SaleConfig, batch: &Batch) -> LedgerSpec {
    LedgerSpec {
        total: batch.stock,
        per_user_limit: config.per_user_limit,
        opens_at_ms: batch.opens_at.timestamp_millis(),
        closes_at_ms: batch.closes_at.map(|t| t.timestamp_millis()),
        paused: batch.paused,
        closed: batch.closed_at.is_some(),
        epoch: batch.epoch,
        allotment: Allotment {
            units: config.priority.units,
            // Never past the batch's end: held units would never reach anyone after it.
            until_ms: batch
                .closes_at
                .map_or(config.priority.released_at(batch.opens_at), |closes| {
                    closes.min(config.priority.released_at(batch.opens_at))
                })
                .timestamp_millis(),
        },
    }
}

/// Rebuilds a batch's Redis state from PostgreSQL, unless its ledger exists with the batch's
/// committed epoch (checked again under the batch row's lock, so two instances never rebuild the
/// same loss twice). Returns whether this call rebuilt it.
///
/// A ledger of another epoch was written by a rebuild that never committed: its instance froze,
/// or lost PostgreSQL, between its Redis write and its commit, so the epoch it wrote is not the
/// record's. Left alone, a ledger behind the record makes every order `Fenced` forever, and one
/// ahead of it lets orders of the lost state through; it is fenced and rebuilt here.
pub async fn rebuild(state: &AppState, sale: &Sale, batch_no: BatchNo) -> Result<bool, Error> {
    let mut tx = state.db.begin().await?;
    let Some(batch) = store::lock_batch(&mut tx, sale.id, batch_no).await? else {
        return Ok(false);
    };
    if let Some(ledger) = state.inventory.snapshot(sale.id, batch_no).await? {
        if ledger.epoch == batch.epoch {
            return Ok(false);
        }
        metrics::counter!("inventory_fences_total", "reason" => "epoch_mismatch").increment(1);
        tracing::error!(
            sale.id = %sale.id, batch.no = %batch_no, redis_epoch = ledger.epoch.get(), epoch = batch.epoch.get(),
            "Redis's state of the batch is of another epoch than the record's (a rebuild that never committed); rebuilding it"
        );
        state.inventory.fence(sale.id, batch_no).await?;
        state.counters.remove(&(sale.id, batch_no));
    }
    // Order writes committed before this lock are read below; later ones wait for it and then
    // find the epoch moved on.
    let epoch = store::new_epoch(&mut tx, sale.id, batch_no).await?;
    let orders = OrderBook::batch_orders(&mut tx, sale.id, batch_no).await?;
    let mark = store::queue_mark(&mut tx, sale.id, batch_no).await?;
    let mut rebuilt = BatchState {
        spec: flashsale_inventory::LedgerSpec { epoch, ..ledger_spec(&sale.config, &batch) },
        queue: QueueMarks {
            tail: mark.tail,
            // Marks are written every second: two seconds of the fastest joining seen, and a
            // floor for a batch that has barely started.
            margin: mark.peak_join_rate.saturating_mul(2).saturating_add(QUEUE_MARGIN_FLOOR),
            serving: mark.serving,
            window_from: mark.window_from,
            window_ms: i64::from(sale.config.admission_ttl_secs) * 1000,
        },
        last_reservation: orders.iter().map(|o| o.reservation_id.get()).max().unwrap_or(0),
        open: Vec::new(),
        settled: Vec::new(),
    };
    for o in orders {
        let id = o.reservation_id;
        if o.status == OrderStatus::PendingPayment {
            let deadline_ms = o.expires_at.timestamp_millis();
            rebuilt.open.push(OpenReservation { id, user: o.user, units: o.quantity, deadline_ms, ticket: o.ticket });
        } else {
            let committed = o.status == OrderStatus::Paid;
            rebuilt.settled.push(SettledReservation {
                id,
                user: o.user,
                units: o.quantity,
                committed,
                ticket: o.ticket,
            });
        }
    }
    let outcome = state.inventory.rebuild(sale.id, batch_no, &rebuilt).await?;
    tx.commit().await?;
    state.public_cache.invalidate(sale.id);
    match outcome {
        Rebuilt::Rebuilt { available, reserved, sold } => {
            metrics::counter!("inventory_rebuilds_total").increment(1);
            tracing::warn!(
                sale.id = %sale.id, batch.no = %batch_no, epoch = epoch.get(), %available, %reserved, %sold,
                "batch had no state in Redis; rebuilt it from PostgreSQL"
            );
            Ok(true)
        }
        Rebuilt::AlreadyPresent => Ok(false),
    }
}

/// Fences a batch whose Redis state is known to be wrong ([`Inventory::fence`]: every
/// reservation answers 503 `rebuilding` from now on) and rebuilds it from PostgreSQL at once, in
/// the background; if that rebuild fails, upkeep's next pass retries it. `reason` labels
/// `inventory_fences_total`.
///
/// [`Inventory::fence`]: flashsale_inventory::Inventory::fence
pub async fn fence(state: &AppState, sale: SaleId, batch: BatchNo, reason: &'static str) {
    if !fence_only(state, sale, batch, reason).await {
        return;
    }
    rebuild_in_background(state, sale, batch);
}

/// [`rebuild`] spawned (tracked in `state.background`); if it fails, upkeep's next pass
/// retries it.
fn rebuild_in_background(state: &AppState, sale: SaleId, batch: BatchNo) {
    let (state, metrics) = (state.clone(), state.metrics.clone());
    state.background.clone().spawn(metrics.scope(async move {
        if let Err(e) = rebuild_by_id(&state, sale, batch).await {
            tracing::warn!(sale.id = %sale, batch.no = %batch, error = %e, "background rebuild failed; upkeep retries it");
        }
    }));
}

/// After PostgreSQL fenced an order made at `epoch`: if Redis's state of the batch is still of
/// that epoch, it is behind the record (a rebuild wrote it and never committed) and every order
/// it reserves will be fenced too, so it is rebuilt at once, in the background, rather than at
/// upkeep's next pass. A reservation of a state already rebuilt (the usual fenced order) costs
/// one read.
pub async fn repair_if_fenced_epoch(state: &AppState, sale: SaleId, batch: BatchNo, epoch: Epoch) {
    match state.inventory.snapshot(sale, batch).await {
        Ok(Some(ledger)) if ledger.epoch == epoch => rebuild_in_background(state, sale, batch),
        Ok(_) => {}
        Err(e) => tracing::warn!(sale.id = %sale, batch.no = %batch, error = %e, "could not read the ledger's epoch"),
    }
}

/// [`fence`] without the rebuild, for upkeep, whose pass rebuilds every batch without a ledger
/// itself. Returns whether the batch was fenced.
pub async fn fence_only(state: &AppState, sale: SaleId, batch: BatchNo, reason: &'static str) -> bool {
    metrics::counter!("inventory_fences_total", "reason" => reason).increment(1);
    tracing::error!(sale.id = %sale, batch.no = %batch, reason, "Redis's state of the batch is wrong; fencing it and rebuilding it from PostgreSQL");
    if let Err(e) = state.inventory.fence(sale, batch).await {
        // Redis is unreachable: nothing can be sold through it meanwhile, and the checks run
        // again when it is back.
        tracing::error!(sale.id = %sale, batch.no = %batch, error = %e, "could not fence the batch");
        return false;
    }
    state.counters.remove(&(sale, batch));
    state.public_cache.invalidate(sale);
    true
}

/// [`rebuild`] for a batch known by its ids.
pub async fn rebuild_by_id(state: &AppState, sale: SaleId, batch: BatchNo) -> Result<bool, Error> {
    let mut conn = state.db.acquire().await?;
    let Some(found) = store::get_sale(&mut conn, sale, false).await? else { return Ok(false) };
    drop(conn);
    rebuild(state, &found, batch).await
}
