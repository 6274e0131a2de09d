//! Background upkeep, run by every instance once a second.
//!
//! - **Rollover**: when a weekly sale's batch window ends, its next batch is created (with its
//!   ledger). Instances race harmlessly: each locks the sale's row and re-checks, and the batch
//!   insert is idempotent.
//! - **Rebuilds**: every live batch must have a ledger in Redis of the record's epoch. A batch
//!   without one (Redis restarted without persistence, failed over to a stale replica, was
//!   flushed; or a new sale whose ledger write failed), or whose Redis went back in time, is
//!   rebuilt from PostgreSQL ([`crate::service::recovery`]). Meanwhile reservations answer 503
//!   `rebuilding`.
//! - **Audit**: `available + allotted + reserved + sold = total` in Redis every second
//!   (`inventory_drift_units`), and every five seconds Redis against PostgreSQL's orders
//!   (`inventory_pg_drift_units`, by `kind`: `sold` must be 0; `reserved` is 0 or briefly
//!   positive while an order is being written). Drift is logged once, when it persists.
//! - **Sweeps**: reservations past deadline + grace in Redis (units whose order was never
//!   written); the order sweep (`super::order_sweep`) expires unpaid orders in PostgreSQL.
//! - **Metrics**: the Prometheus recorder's housekeeping.

use std::time::Duration;

use chrono::{DateTime, Utc};
use flashsale_core::{BatchNo, SaleId};
use flashsale_inventory::{ReservationId, Settlement};
use flashsale_sales::store;
use tokio_util::sync::CancellationToken;

use crate::service::Error;
use crate::service::recovery::{fence_only, ledger_spec, rebuild};
use crate::state::AppState;

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    /// Weekly batches created.
    pub rolled_over: usize,
    /// Batches whose Redis state was rebuilt from PostgreSQL (or created, for a new batch whose
    /// ledger was never written).
    pub ledgers_rebuilt: usize,
    /// Units of reservations released after their deadline (and the grace period).
    pub units_expired: u64,
    /// Batches whose ledger does not balance (available + allotted + reserved + sold ≠ total).
    pub unbalanced: usize,
    /// Finished batches whose Redis keys were given an end of life.
    pub retired: usize,
}

/// How long after a reservation's deadline the Redis sweep releases it. The order's own expiry
/// (PostgreSQL, where a payment racing the deadline is decided) acts first; the sweep returns
/// units whose order was never written (the process died between reserve and insert).
pub const RESERVATION_GRACE_MS: i64 = 30_000;

/// Runs upkeep every second until `shutdown` is cancelled.
pub async fn run(state: AppState, shutdown: CancellationToken) {
    super::every("upkeep", Duration::from_secs(1), shutdown, || async {
        sync_clock(&state).await;
        if let Err(e) = pass(&state, state.clock.now()).await {
            tracing::warn!(error = %e, "upkeep pass failed; retrying next second");
        }
        state.metrics.run_upkeep();
        state.limits.housekeeping();
    })
    .await;
}

/// Measures this instance's offset from Redis's clock ([`flashsale_redis::Clock`]); a failure
/// keeps the last offset (Redis is unreachable then, and nothing it decides can happen anyway).
pub async fn sync_clock(state: &AppState) {
    let result = match state.redis.conn().await {
        Ok(mut conn) => state.clock.sync(&mut conn).await.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    match result {
        Ok(()) => metrics::gauge!("clock_offset_ms").set(state.clock.offset_ms() as f64),
        Err(e) => tracing::warn!(error = %e, "could not read Redis's clock; keeping the last offset"),
    }
}

/// One upkeep pass as of `now`.
pub async fn pass(state: &AppState, now: DateTime<Utc>) -> Result<Pass, Error> {
    let mut done = Pass::default();
    let mut conn = state.db.acquire().await?;
    let live = store::live_sales(&mut conn).await?;
    drop(conn);
    if redis_restarted(state).await? {
        // Rebuilt below, in this pass, as every batch without a ledger is.
        for (sale, batch) in live.iter().filter(|(_, b)| !b.is_finished(now)) {
            fence_only(state, sale.id, batch.batch_no, "redis_restarted").await;
        }
    }
    for (sale, batch) in live {
        // A finished batch's leftovers are swept by `retire_finished`, once.
        if !batch.is_finished(now) {
            release_orphans(state, sale.id, batch.batch_no).await?;
            if now >= batch.opens_at {
                mark_queue(state, sale.id, batch.batch_no).await?;
            }
            done.units_expired += expire_reservations(state, sale.id, batch.batch_no).await?;
        }
        // One read serves both the audit and the check that the ledger exists.
        let mut ledger = state.inventory.snapshot(sale.id, batch.batch_no).await?;
        if let Some(snapshot) = &ledger {
            let stale = if audit_ledger(state, sale.id, batch.batch_no, snapshot) != 0 {
                done.unbalanced += 1;
                Some("ledger_unbalanced")
            } else if reservation_ids_went_back(state, sale.id, batch.batch_no).await? {
                Some("reservation_ids_went_back")
            } else if now.timestamp() % 5 == 0 {
                audit_against_orders(state, sale.id, batch.batch_no).await?
            } else {
                None
            };
            if let Some(reason) = stale.filter(|_| !batch.is_finished(now)) {
                if fence_only(state, sale.id, batch.batch_no, reason).await {
                    // Rebuilt just below.
                    ledger = None;
                }
            }
        }
        if batch.is_finished(now) {
            if roll_over(state, sale.id, now).await? {
                done.rolled_over += 1;
            }
        } else if ledger.is_none_or(|l| l.epoch != batch.epoch) && rebuild(state, &sale, batch.batch_no).await? {
            // A ledger of another epoch than the record's is checked again under the batch's
            // lock (a rebuild committing between the two reads is not a mismatch).
            done.ledgers_rebuilt += 1;
        }
    }
    retire_finished(state, now, &mut done).await?;
    Ok(done)
}

/// Records how far the batch's queue has gone (PostgreSQL's `batch_queue_marks`), so that a
/// queue Redis loses restarts past every ticket handed out (see [`rebuild`]).
async fn mark_queue(state: &AppState, sale: SaleId, batch: BatchNo) -> Result<(), Error> {
    let counters = state.queue.counters(&[(sale, batch)]).await?.pop().unwrap_or_default();
    if counters.tail == 0 && counters.serving == 0 {
        // Lost (or nobody joined yet): a mark must never be taken from an empty queue.
        return Ok(());
    }
    let window_from = state.queue.window_from(sale, batch).await?;
    let mut conn = state.db.acquire().await?;
    store::record_queue_mark(&mut conn, sale, batch, counters.tail, counters.serving, window_from).await?;
    Ok(())
}

/// Gives finished batches an end of life in Redis: once a batch is closed or past its window and
/// nothing of it is pending (in PostgreSQL) or reserved (in Redis), its final numbers go to
/// PostgreSQL and every one of its keys expires after the grace period. Until then its leftover
/// reservations are swept here (upkeep's main loop only visits each sale's current batch).
async fn retire_finished(state: &AppState, now: DateTime<Utc>, done: &mut Pass) -> Result<(), Error> {
    let mut conn = state.db.acquire().await?;
    let finished = store::batches_to_retire(&mut conn, now).await?;
    drop(conn);
    for batch in finished {
        let (sale, no) = (batch.sale_id, batch.batch_no);
        release_orphans(state, sale, no).await?;
        done.units_expired += expire_reservations(state, sale, no).await?;
        if state.orders.has_unsettled_orders(sale, no).await? || state.inventory.open_reservations(sale, no).await? > 0
        {
            continue;
        }
        let queue = state.queue.stats(&[(sale, no)]).await?.pop().unwrap_or_default();
        let grace_ms = i64::try_from(state.retire_grace.as_millis()).unwrap_or(i64::MAX);
        let keys = state.inventory.retire(sale, no, grace_ms).await?;
        let mut conn = state.db.acquire().await?;
        if store::retire_batch(&mut conn, sale, no, queue.queued, queue.admitted).await? {
            done.retired += 1;
            tracing::info!(sale.id = %sale, batch.no = %no, keys, grace_ms, "finished batch retired; its Redis keys expire");
        }
    }
    Ok(())
}

/// Releases the batch's reservations past their deadline and the grace period (units whose order
/// was never written); returns their units.
async fn expire_reservations(state: &AppState, sale: SaleId, batch: BatchNo) -> Result<u64, Error> {
    let expired = state.inventory.expire_due(sale, batch, 1_000, RESERVATION_GRACE_MS).await?;
    if expired.units > 0 {
        tracing::info!(sale.id = %sale, batch.no = %batch, units = expired.units, "expired reservations released");
        metrics::counter!("reservations_expired_total").increment(expired.reservations);
    }
    Ok(expired.units)
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
    let drift = ledger.total.to_i64()
        - ledger.available.to_i64()
        - ledger.allotted.to_i64()
        - ledger.reserved.to_i64()
        - ledger.sold.to_i64();
    metrics::gauge!("inventory_drift_units", "sale" => sale.to_string()).set(drift as f64);
    let mut drifting = state.drifting.lock().expect("never poisoned");
    if drift != 0 && drifting.insert((sale, batch)) {
        tracing::error!(sale.id = %sale, batch.no = %batch, drift, ?ledger, "inventory ledger does not balance");
    } else if drift == 0 && drifting.remove(&(sale, batch)) {
        tracing::info!(sale.id = %sale, batch.no = %batch, "inventory ledger balances again");
    }
    drift
}

/// The PostgreSQL half of the audit: Redis's reserved and sold units against what the batch's
/// orders hold. Exports `inventory_pg_drift_units{kind}` and logs a drift that is still there at
/// the next audit (one audit may catch an order between its reservation and its write).
///
/// Returns why Redis must be rebuilt when it holds fewer units than the record, the direction
/// that can oversell:
/// - fewer units sold than PostgreSQL's paid orders already settled: always wrong (PostgreSQL is
///   read first, and Redis's `sold` only grows after a payment is applied);
/// - fewer units reserved + sold than pending + paid (+ settlements owed) at two audits in a
///   row: one audit can catch a release applied between the two reads, two in a row cannot.
async fn audit_against_orders(state: &AppState, sale: SaleId, batch: BatchNo) -> Result<Option<&'static str>, Error> {
    let expected = state.orders.batch_totals(sale, batch).await?;
    let Some(ledger) = state.inventory.snapshot(sale, batch).await? else { return Ok(None) };
    let drift = (ledger.reserved.to_i64() - expected.reserved, ledger.sold.to_i64() - expected.sold);
    let label = sale.to_string();
    metrics::gauge!("inventory_pg_drift_units", "sale" => label.clone(), "kind" => "reserved").set(drift.0 as f64);
    metrics::gauge!("inventory_pg_drift_units", "sale" => label, "kind" => "sold").set(drift.1 as f64);
    let previous = state.pg_drift.lock().expect("never poisoned").insert((sale, batch), drift);
    if drift != (0, 0) && previous == Some(drift) {
        tracing::error!(
            sale.id = %sale, batch.no = %batch, reserved_drift = drift.0, sold_drift = drift.1, ?ledger, ?expected,
            "Redis and PostgreSQL disagree about the batch's units"
        );
    }
    let short = |d: (i64, i64)| d.0 + d.1 < 0;
    Ok(if drift.1 < 0 {
        Some("redis_sold_below_paid")
    } else if short(drift) && previous.is_some_and(short) {
        Some("redis_holds_fewer_units")
    } else {
        None
    })
}

/// Whether Redis's last reservation id is below one PostgreSQL's orders already use: Redis went
/// back to an older copy of its state (restarted from a file missing its last second, failed over
/// to a lagging replica, restored) and would hand those ids, and the units behind them, out
/// again. PostgreSQL is read first: an id is taken in Redis before its order is written, so a
/// healthy Redis is always at or past it.
async fn reservation_ids_went_back(state: &AppState, sale: SaleId, batch: BatchNo) -> Result<bool, Error> {
    let Some(written) = state.orders.last_reservation_id(sale, batch).await? else { return Ok(false) };
    let handed_out = state.inventory.last_reservation_id(sale, batch).await?;
    Ok(handed_out.is_some_and(|seq| seq < written.get()))
}

/// Releases the batch's orphan reservations: made more than [`ORPHAN_AFTER`](crate::config::ORPHAN_AFTER) ago with no
/// order in PostgreSQL (the instance died between the reservation and the write). Their units go
/// back to stock, the admission ticket and turn back to the buyer, and the idempotency claim is
/// freed, so the buyer's retry with the same key runs at once (instead of 60 s of `in_progress`
/// and then `token_used` for good). PostgreSQL records the release first, under the lock the
/// order writer holds: an order that arrives later still is refused, never written for units
/// given back.
async fn release_orphans(state: &AppState, sale: SaleId, batch: BatchNo) -> Result<(), Error> {
    // Every reservation passes through here once; at a sale's peak that is thousands a second,
    // checked in chunks (each one PostgreSQL query by index and one Redis call).
    for _ in 0..ORPHAN_CHUNKS_PER_PASS {
        if release_orphan_chunk(state, sale, batch).await? < ORPHAN_CHUNK {
            break;
        }
    }
    Ok(())
}

/// Reservations looked at per chunk, and chunks per upkeep pass (per batch and instance).
const ORPHAN_CHUNK: u32 = 1_000;
const ORPHAN_CHUNKS_PER_PASS: usize = 20;

/// One chunk of [`release_orphans`]; returns how many reservations it looked at.
async fn release_orphan_chunk(state: &AppState, sale: SaleId, batch: BatchNo) -> Result<u32, Error> {
    let age_ms = i64::try_from(state.orphan_after.as_millis()).unwrap_or(i64::MAX);
    let candidates = state.inventory.unconfirmed(sale, batch, age_ms, ORPHAN_CHUNK).await?;
    if candidates.is_empty() {
        return Ok(0);
    }
    let ids: Vec<ReservationId> = candidates.iter().map(|c| c.id).collect();
    let orphans = state.orders.release_orphans(sale, batch, &ids).await?;
    for orphan in candidates.iter().filter(|c| orphans.contains(&c.id)) {
        state.inventory.settle(sale, batch, orphan.id, Settlement::Abort { step: orphan.step }).await?;
        if let Some(claim) = &orphan.claim {
            state.orders.abandon_claim_key(claim).await?;
        }
        metrics::counter!("reservations_orphaned_total").increment(1);
        tracing::warn!(sale.id = %sale, batch.no = %batch, reservation.id = orphan.id.0, "reservation without an order released");
    }
    // Every candidate is decided now: orphans released above, the rest have their order.
    state.inventory.confirm(sale, batch, &ids).await?;
    Ok(u32::try_from(candidates.len()).unwrap_or(u32::MAX))
}

/// The `run_id` of the Redis server in an `INFO server` reply; on a cluster (whose reply maps each
/// master to its own), every master's, sorted and joined, so that a restart or failover of any of
/// them changes it. `None` when a reply hides it.
fn run_ids(info: &redis::Value) -> Option<String> {
    let run_id = |text: &str| text.lines().find_map(|l| l.strip_prefix("run_id:")).map(|id| id.trim().to_owned());
    match info {
        redis::Value::Map(nodes) => {
            let mut ids: Vec<String> = nodes
                .iter()
                .map(|(_, reply)| flashsale_redis::reply_text(reply).and_then(run_id))
                .collect::<Option<_>>()?;
            ids.sort();
            Some(ids.join(","))
        }
        reply => flashsale_redis::reply_text(reply).and_then(run_id),
    }
}

/// Whether the Redis server changed since any instance last looked: its `run_id` is new after
/// every restart and differs on a replica promoted by a failover. Either may have lost the last
/// writes (an append-only file fsynced every second, a lagging replica) while keeping the ledgers,
/// so no ledger is missing and nothing else would notice; every live batch is then fenced and
/// rebuilt from PostgreSQL. The `run_id` last seen is kept in PostgreSQL (shared by every
/// instance, surviving their restarts); the instance that moves it on does the fencing.
async fn redis_restarted(state: &AppState) -> Result<bool, Error> {
    let mut conn = state.redis.conn().await?;
    let info: redis::Value = redis::cmd("INFO").arg("server").query_async(&mut conn).await.map_err(Error::from)?;
    drop(conn);
    let Some(run_id) = run_ids(&info) else {
        // A managed Redis may hide it: the other checks still run.
        return Ok(false);
    };
    let run_id = run_id.as_str();
    let moved: Option<Option<String>> = sqlx::query_scalar(
        "INSERT INTO redis_incarnation (run_id) VALUES ($1)          ON CONFLICT (only_row) DO UPDATE SET run_id = EXCLUDED.run_id, seen_at = now()          WHERE redis_incarnation.run_id <> EXCLUDED.run_id          RETURNING (SELECT run_id FROM redis_incarnation)",
    )
    .bind(run_id)
    .fetch_optional(&state.db)
    .await?;
    // No row returned: unchanged. A row: inserted for the first time (its subquery sees no
    // earlier row: NULL) or moved on from the previous run_id by this instance.
    let Some(Some(previous)) = moved else { return Ok(false) };
    metrics::counter!("redis_restarts_detected_total").increment(1);
    tracing::error!(redis.run_id = run_id, redis.previous_run_id = %previous, "Redis restarted or failed over; rebuilding every live batch from PostgreSQL");
    Ok(true)
}

/// Creates the next batch of a weekly sale whose current batch is finished. Returns whether this
/// call created it.
async fn roll_over(state: &AppState, id: SaleId, now: DateTime<Utc>) -> Result<bool, Error> {
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
