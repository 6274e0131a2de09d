//! Background upkeep, run by every instance once a second.
//!
//! - **Rollover**: when a weekly sale's batch window ends, its next batch is created (with its
//!   ledger). Instances race harmlessly: each locks the sale's row and re-checks, and the batch
//!   insert is idempotent.
//! - **Rebuilds**: every live batch must have a ledger in Redis. A batch without one (Redis
//!   restarted without persistence, failed over to a stale replica, was flushed; or a new sale
//!   whose ledger write failed) is rebuilt from PostgreSQL: under the batch row's lock its epoch
//!   is bumped, its orders are read, and the whole hot state (stock minus pending and paid units,
//!   holdings, live reservations, used tickets) is written in one script, ledger last. Meanwhile
//!   reservations answer 503 `rebuilding`; reservations from before the loss are fenced off by
//!   the epoch (see `flashsale_order::book`).
//! - **Audit**: `available + reserved + sold = total` in Redis every second
//!   (`inventory_drift_units`), and every five seconds Redis against PostgreSQL's orders
//!   (`inventory_pg_drift_units`, by `kind`: `sold` must be 0; `reserved` is 0 or briefly
//!   positive while an order is being written). Drift is logged once, when it persists.
//! - **Sweeps**: reservations past deadline + grace in Redis (units whose order was never
//!   written); [`run_order_sweep`] expires unpaid orders in PostgreSQL.
//! - **Metrics**: the Prometheus recorder's housekeeping.

use std::time::Duration;

use chrono::{DateTime, Utc};
use flashsale_core::{BatchNo, SaleId};
use flashsale_inventory::{
    BatchState, OpenReservation, QueueMarks, Rebuilt, ReservationId, SettledReservation, Settlement,
};
use flashsale_order::{OrderBook, OrderStatus};
use flashsale_sales::{Sale, store};
use tokio_util::sync::CancellationToken;

use crate::problem::ApiError;
use crate::sales::ledger_spec;
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
    /// Batches whose ledger does not balance (available + reserved + sold ≠ total).
    pub unbalanced: usize,
    /// Finished batches whose Redis keys were given an end of life.
    pub retired: usize,
}

/// How long a reservation may wait for its order before upkeep releases it as an orphan, unless
/// configured otherwise (tests shorten it). A group commit takes milliseconds; an order not
/// written after this long never will be (its instance died, or stalled past the point where the
/// buyer has retried).
pub const ORPHAN_AFTER: Duration = Duration::from_secs(10);

/// Tickets left unused after the queue's last mark when Redis lost the queue, at the least (see
/// [`rebuild`]): covers the joins of the second after the mark while a batch is quiet.
pub const QUEUE_MARGIN_FLOOR: u64 = 100;

/// How long a retired batch's Redis keys stay readable, unless configured otherwise.
pub const RETIRE_GRACE: Duration = Duration::from_secs(3600);

/// How long after a reservation's deadline the Redis sweep releases it. The order's own expiry
/// (PostgreSQL, where a payment racing the deadline is decided) acts first; the sweep returns
/// units whose order was never written (the process died between reserve and insert).
pub const RESERVATION_GRACE_MS: i64 = 30_000;

/// Runs `work` every `period` until `shutdown` is cancelled, each pass in a `job` span named
/// `job` (what a log line written during the pass is attributed to). A tick that finds the
/// previous one still running is skipped, not queued: background work never piles up behind a
/// slow store.
pub async fn every<F, Fut>(job: &'static str, period: Duration, shutdown: CancellationToken, mut work: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    use tracing::Instrument;
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticker.tick() => work().instrument(tracing::info_span!("job", job)).await,
        }
    }
}

/// Runs upkeep every second until `shutdown` is cancelled.
pub async fn run(state: AppState, shutdown: CancellationToken) {
    every("upkeep", Duration::from_secs(1), shutdown, || async {
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
    let result = match state.redis.get().await {
        Ok(mut conn) => state.clock.sync(&mut conn).await.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    match result {
        Ok(()) => metrics::gauge!("clock_offset_ms").set(state.clock.offset_ms() as f64),
        Err(e) => tracing::warn!(error = %e, "could not read Redis's clock; keeping the last offset"),
    }
}

/// One upkeep pass as of `now`.
pub async fn pass(state: &AppState, now: DateTime<Utc>) -> Result<Pass, ApiError> {
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
async fn mark_queue(state: &AppState, sale: SaleId, batch: BatchNo) -> Result<(), ApiError> {
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
async fn retire_finished(state: &AppState, now: DateTime<Utc>, done: &mut Pass) -> Result<(), ApiError> {
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
async fn expire_reservations(state: &AppState, sale: SaleId, batch: BatchNo) -> Result<u64, ApiError> {
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

/// Rebuilds a batch's Redis state from PostgreSQL, unless its ledger exists with the batch's
/// committed epoch (checked again under the batch row's lock, so two instances never rebuild the
/// same loss twice). Returns whether this call rebuilt it.
///
/// A ledger of another epoch was written by a rebuild that never committed: its instance froze,
/// or lost PostgreSQL, between its Redis write and its commit, so the epoch it wrote is not the
/// record's. Left alone, a ledger behind the record makes every order `Fenced` forever, and one
/// ahead of it lets orders of the lost state through; it is fenced and rebuilt here.
pub async fn rebuild(state: &AppState, sale: &Sale, batch_no: BatchNo) -> Result<bool, ApiError> {
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
            sale.id = %sale.id, batch.no = %batch_no, redis_epoch = ledger.epoch, epoch = batch.epoch,
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
        last_reservation: orders.iter().map(|o| o.reservation_id).max().unwrap_or(0),
        open: Vec::new(),
        settled: Vec::new(),
    };
    for o in orders {
        let id = ReservationId(o.reservation_id);
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
                sale.id = %sale.id, batch.no = %batch_no, epoch, %available, %reserved, %sold,
                "batch had no state in Redis; rebuilt it from PostgreSQL"
            );
            Ok(true)
        }
        Rebuilt::AlreadyPresent => Ok(false),
    }
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
async fn audit_against_orders(
    state: &AppState,
    sale: SaleId,
    batch: BatchNo,
) -> Result<Option<&'static str>, ApiError> {
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
async fn reservation_ids_went_back(state: &AppState, sale: SaleId, batch: BatchNo) -> Result<bool, ApiError> {
    let written = state.orders.last_reservation_id(sale, batch).await?;
    if written == 0 {
        return Ok(false);
    }
    let handed_out = state.inventory.last_reservation_id(sale, batch).await?;
    Ok(handed_out.is_some_and(|seq| seq < written))
}

/// Releases the batch's orphan reservations: made more than [`ORPHAN_AFTER`] ago with no
/// order in PostgreSQL (the instance died between the reservation and the write). Their units go
/// back to stock, the admission ticket and turn back to the buyer, and the idempotency claim is
/// freed, so the buyer's retry with the same key runs at once (instead of 60 s of `in_progress`
/// and then `token_used` for good). PostgreSQL records the release first, under the lock the
/// order writer holds: an order that arrives later still is refused, never written for units
/// given back.
async fn release_orphans(state: &AppState, sale: SaleId, batch: BatchNo) -> Result<(), ApiError> {
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
async fn release_orphan_chunk(state: &AppState, sale: SaleId, batch: BatchNo) -> Result<u32, ApiError> {
    let age_ms = i64::try_from(state.orphan_after.as_millis()).unwrap_or(i64::MAX);
    let candidates = state.inventory.unconfirmed(sale, batch, age_ms, ORPHAN_CHUNK).await?;
    if candidates.is_empty() {
        return Ok(0);
    }
    let ids: Vec<u64> = candidates.iter().map(|c| c.id.0).collect();
    let orphans = state.orders.release_orphans(sale, batch, &ids).await?;
    for orphan in candidates.iter().filter(|c| orphans.contains(&c.id.0)) {
        state.inventory.settle(sale, batch, orphan.id, Settlement::Abort { step: orphan.step }).await?;
        if let Some(claim) = &orphan.claim {
            state.orders.abandon_claim_key(claim).await?;
        }
        metrics::counter!("reservations_orphaned_total").increment(1);
        tracing::warn!(sale.id = %sale, batch.no = %batch, reservation.id = orphan.id.0, "reservation without an order released");
    }
    let settled: Vec<ReservationId> = candidates.iter().map(|c| c.id).collect();
    state.inventory.confirm(sale, batch, &settled).await?;
    Ok(u32::try_from(candidates.len()).unwrap_or(u32::MAX))
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

/// [`rebuild`] spawned; if it fails, upkeep's next pass retries it.
fn rebuild_in_background(state: &AppState, sale: SaleId, batch: BatchNo) {
    let state = state.clone();
    tokio::spawn(async move {
        if let Err(e) = rebuild_by_id(&state, sale, batch).await {
            tracing::warn!(sale.id = %sale, batch.no = %batch, error = %e, "background rebuild failed; upkeep retries it");
        }
    });
}

/// After PostgreSQL fenced an order made at `epoch`: if Redis's state of the batch is still of
/// that epoch, it is behind the record (a rebuild wrote it and never committed) and every order
/// it reserves will be fenced too, so it is rebuilt at once, in the background, rather than at
/// upkeep's next pass. A reservation of a state already rebuilt (the usual fenced order) costs
/// one read.
pub async fn repair_if_fenced_epoch(state: &AppState, sale: SaleId, batch: BatchNo, epoch: i64) {
    match state.inventory.snapshot(sale, batch).await {
        Ok(Some(ledger)) if ledger.epoch == epoch => rebuild_in_background(state, sale, batch),
        Ok(_) => {}
        Err(e) => tracing::warn!(sale.id = %sale, batch.no = %batch, error = %e, "could not read the ledger's epoch"),
    }
}

/// [`fence`] without the rebuild, for upkeep, whose pass rebuilds every batch without a ledger
/// itself. Returns whether the batch was fenced.
async fn fence_only(state: &AppState, sale: SaleId, batch: BatchNo, reason: &'static str) -> bool {
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
async fn rebuild_by_id(state: &AppState, sale: SaleId, batch: BatchNo) -> Result<bool, ApiError> {
    let mut conn = state.db.acquire().await?;
    let Some(found) = store::get_sale(&mut conn, sale, false).await? else { return Ok(false) };
    drop(conn);
    rebuild(state, &found, batch).await
}

/// Whether the Redis server changed since any instance last looked: its `run_id` is new after
/// every restart and differs on a replica promoted by a failover. Either may have lost the last
/// writes (an append-only file fsynced every second, a lagging replica) while keeping the ledgers,
/// so no ledger is missing and nothing else would notice; every live batch is then fenced and
/// rebuilt from PostgreSQL. The `run_id` last seen is kept in PostgreSQL (shared by every
/// instance, surviving their restarts); the instance that moves it on does the fencing.
async fn redis_restarted(state: &AppState) -> Result<bool, ApiError> {
    let mut conn = state.redis.get().await?;
    let info: String =
        redis::cmd("INFO").arg("server").query_async(&mut conn).await.map_err(crate::problem::from_redis)?;
    drop(conn);
    let Some(run_id) = info.lines().find_map(|l| l.strip_prefix("run_id:")).map(str::trim) else {
        // A managed Redis may hide it: the other checks still run.
        return Ok(false);
    };
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

/// Runs the order sweep (expiry of unpaid orders, settlements left behind) every second until
/// `shutdown` is cancelled.
pub async fn run_order_sweep(state: AppState, shutdown: CancellationToken) {
    every("order_sweep", Duration::from_secs(1), shutdown, || async {
        if let Err(e) = crate::orders::sweep(&state).await {
            tracing::warn!(error = %e, "order sweep failed; retrying next second");
        }
    })
    .await;
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
