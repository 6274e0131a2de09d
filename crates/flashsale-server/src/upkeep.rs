//! Background upkeep, run by every instance once a second.
//!
//! - **Rollover**: when a weekly sale's batch window ends, its next batch is created (with its
//!   ledger). Instances race harmlessly: each locks the sale's row and re-checks, and the batch
//!   insert is idempotent.
//! - **Ledgers**: every live batch must have a ledger in Redis; one is created where missing (a
//!   sale created while its ledger write was lost, or a Redis that lost its data). Until orders
//!   exist this recreates the full stock, which is then exact; the inventory issue replaces it with
//!   a rebuild from PostgreSQL's orders behind an epoch fence.
//! - **Metrics**: the Prometheus recorder's housekeeping.

use std::time::Duration;

use chrono::{DateTime, Utc};
use flashsale_core::SaleId;
use flashsale_inventory::Opened;
use flashsale_sales::store;
use tokio_util::sync::CancellationToken;

use crate::problem::ApiError;
use crate::sales::ledger_spec;
use crate::state::AppState;

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    /// Weekly batches created.
    pub rolled_over: usize,
    /// Ledgers created where Redis had none.
    pub ledgers_opened: usize,
    /// Units of reservations released after their deadline (and the grace period).
    pub units_expired: u64,
    /// Batches whose ledger does not balance (available + reserved + sold ≠ total).
    pub unbalanced: usize,
}

/// How long after a reservation's deadline the Redis sweep releases it. The order's own expiry
/// (PostgreSQL, where a payment racing the deadline is decided) acts first; the sweep returns
/// units whose order was never written (the process died between reserve and insert).
pub const RESERVATION_GRACE_MS: i64 = 30_000;

/// Runs `work` every `period` until `shutdown` is cancelled. A tick that finds the previous one
/// still running is skipped, not queued: background work never piles up behind a slow store.
pub async fn every<F, Fut>(period: Duration, shutdown: CancellationToken, mut work: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticker.tick() => work().await,
        }
    }
}

/// Runs upkeep every second until `shutdown` is cancelled.
pub async fn run(state: AppState, shutdown: CancellationToken) {
    every(Duration::from_secs(1), shutdown, || async {
        if let Err(e) = pass(&state, Utc::now()).await {
            tracing::warn!(error = %e, "upkeep pass failed; retrying next second");
        }
        state.metrics.run_upkeep();
        state.limits.housekeeping();
    })
    .await;
}

/// One upkeep pass as of `now`.
pub async fn pass(state: &AppState, now: DateTime<Utc>) -> Result<Pass, ApiError> {
    let mut done = Pass::default();
    let mut conn = state.db.acquire().await?;
    let live = store::live_sales(&mut conn).await?;
    drop(conn);
    for (sale, batch) in live {
        let expired = state.inventory.expire_due(sale.id, batch.batch_no, 1_000, RESERVATION_GRACE_MS).await?;
        if expired.units > 0 {
            tracing::info!(sale.id = %sale.id, batch.no = %batch.batch_no, units = expired.units, "expired reservations released");
            metrics::counter!("reservations_expired_total").increment(expired.reservations);
            done.units_expired += expired.units;
        }
        // One read serves both the audit and the check that the ledger exists.
        let ledger = state.inventory.snapshot(sale.id, batch.batch_no).await?;
        if let Some(ledger) = &ledger {
            if audit_ledger(state, sale.id, batch.batch_no, ledger) != 0 {
                done.unbalanced += 1;
            }
        }
        if batch.is_finished(now) {
            if roll_over(state, sale.id, now).await? {
                done.rolled_over += 1;
            }
        } else if ledger.is_none()
            && state.inventory.open_batch(sale.id, batch.batch_no, ledger_spec(&sale.config, &batch)).await?
                == Opened::Created
        {
            tracing::warn!(sale.id = %sale.id, batch.no = %batch.batch_no, "batch had no ledger in Redis; created it");
            state.public_cache.invalidate(sale.id);
            done.ledgers_opened += 1;
        }
    }
    Ok(done)
}

/// The Redis half of the inventory audit: exports `inventory_drift_units` (total − available −
/// reserved − sold, expected 0) per sale and logs a drift once, when it appears, not every second.
/// Returns the drift. (Comparing with PostgreSQL's orders comes with the orders.)
fn audit_ledger(
    state: &AppState,
    sale: SaleId,
    batch: flashsale_core::BatchNo,
    ledger: &flashsale_inventory::LedgerSnapshot,
) -> i64 {
    let drift = ledger.total.to_i64() - ledger.available.to_i64() - ledger.reserved.to_i64() - ledger.sold.to_i64();
    metrics::gauge!("inventory_drift_units", "sale" => sale.to_string()).set(drift as f64);
    let mut drifting = state.drifting.lock().expect("never poisoned");
    if drift != 0 && drifting.insert((sale, batch)) {
        tracing::error!(sale.id = %sale, batch.no = %batch, drift, ?ledger, "inventory ledger does not balance");
    } else if drift == 0 && drifting.remove(&(sale, batch)) {
        tracing::info!(sale.id = %sale, batch.no = %batch, "inventory ledger balances again");
    }
    drift
}

/// Creates the next batch of a weekly sale whose current batch is finished. Returns whether this
/// call created it.
async fn roll_over(state: &AppState, id: SaleId, now: DateTime<Utc>) -> Result<bool, ApiError> {
    let mut tx = state.db.begin().await?;
    let Some(sale) = store::get_sale(&mut tx, id, true).await? else {
        return Ok(false);
    };
    let Some(current) = store::current_batch(&mut tx, id).await? else {
        return Ok(false);
    };
    if sale.ended_at.is_some() || !current.is_finished(now) {
        return Ok(false);
    }
    let Some(next) = current.successor(&sale.config, now) else {
        return Ok(false);
    };
    if !store::insert_batch(&mut tx, &next).await? {
        return Ok(false);
    }
    state.inventory.open_batch(id, next.batch_no, ledger_spec(&sale.config, &next)).await?;
    tx.commit().await?;
    state.public_cache.invalidate(id);
    tracing::info!(sale.id = %id, batch.no = %next.batch_no, batch.opens_at = %next.opens_at, "weekly batch scheduled");
    Ok(true)
}
