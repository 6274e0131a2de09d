//! Sale operations that span PostgreSQL (the truth about sales and batches) and Redis (each
//! batch's live ledger), and the views the API returns.
//!
//! Every admin change runs in one PostgreSQL transaction that first locks the sale's row, so two
//! operators editing one sale are serialised; the Redis step runs inside that transaction, before
//! the commit, so a refusal from Redis (stock below what buyers hold) rolls the whole change back.
//! If the commit itself fails after Redis accepted a stock change, the old ledger values are put
//! back (best effort, logged); the inventory audit reconciles anything left.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use flashsale_core::{BatchNo, Cents, Currency, SaleId, Units};
use flashsale_inventory::{Configured, LedgerSpec, StatusChange, StatusChanged};
use flashsale_sales::{Batch, BatchStatus, NewSale, Sale, SalePatch, Schedule, ValidationErrors, WeekdayName, store};
use serde::Serialize;
use serde_json::json;
use sqlx::PgConnection;

use super::recovery::ledger_spec;
use super::{Actor, Error};
use crate::problem::ProblemCode;
use crate::snapshot::{Live, PublicSnapshot};
use crate::state::AppState;

/// When a sale opens, as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ScheduleView {
    /// One batch, opening at `opens_at`.
    Once { opens_at: DateTime<Utc> },
    /// A batch every week at `time` on `weekday` in `timezone`.
    Weekly {
        weekday: WeekdayName,
        #[schema(example = "12:00")]
        time: String,
        #[schema(example = "Asia/Shanghai")]
        timezone: String,
    },
}

/// Live numbers of a batch, from Redis.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct BatchStats {
    /// Units the batch releases (= available + allotted + reserved + sold).
    pub stock: Units,
    /// Units no buyer holds, for anyone.
    pub available: Units,
    /// Units no buyer holds, held back for priority codes until `priority_hold_secs` after the
    /// opening (then they join `available`).
    pub allotted: Units,
    /// Units held by buyers who have not paid yet.
    pub reserved: Units,
    /// Units paid for.
    pub sold: Units,
    /// Buyers who joined the queue.
    pub queued: u64,
    /// Buyers admitted from the queue.
    pub admitted: u64,
    /// While every unit is in a cart: the last place a returned unit could still reach; buyers
    /// behind it are told `sold_out` and new joiners are turned away. Null otherwise.
    pub reach: Option<u64>,
    /// Times the reach was lifted: more stock, or the line within it ran dry with units free.
    pub reopens: u64,
}

/// A batch as operations see it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AdminBatch {
    pub batch_no: BatchNo,
    pub status: BatchStatus,
    /// When buyers may start to queue.
    pub prequeue_opens_at: DateTime<Utc>,
    pub opens_at: DateTime<Utc>,
    /// End of the window; null: until sold out or closed.
    pub closes_at: Option<DateTime<Utc>>,
    pub paused: bool,
    pub closed_at: Option<DateTime<Utc>>,
    /// Live numbers (from PostgreSQL once the batch is retired); null when Redis holds no ledger
    /// for a batch that is not retired (being rebuilt).
    pub stats: Option<BatchStats>,
}

/// A sale as operations see it: configuration, version, current batch and live numbers.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AdminSale {
    pub id: SaleId,
    pub name: String,
    pub sku: String,
    #[schema(value_type = i64)]
    pub price_cents: Cents,
    #[schema(value_type = String)]
    pub currency: Currency,
    /// Units released by each batch.
    pub stock: Units,
    pub per_user_limit: Units,
    pub schedule: ScheduleView,
    pub prequeue_secs: u32,
    pub admission_rate: u32,
    pub admission_ttl_secs: u32,
    pub payment_window_secs: u32,
    pub duration_secs: Option<u32>,
    /// The proof of work each join costs, in leading zero bits (0: none); the least when adaptive.
    pub join_pow_bits: u8,
    /// Adaptive proof of work: the join rate above which each doubling adds a bit (null: fixed).
    pub join_pow_adaptive_rate: Option<u32>,
    /// Adaptive proof of work: the most bits it rises to (null: fixed).
    pub join_pow_max_bits: Option<u8>,
    /// Units of each batch held back for priority code holders (0: none).
    pub priority_units: Units,
    /// Seconds after the opening they are held; then what is left goes to everyone.
    pub priority_hold_secs: u32,
    /// Bumped by every change; send it back in `If-Match` to change the sale safely.
    pub version: i64,
    /// Set when the sale was closed: no batch opens after it.
    pub ended_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub current_batch: Option<AdminBatch>,
    /// The sale's priority codes (in `GET /admin/sales/{id}` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority_codes: Option<flashsale_sales::codes::PriorityCodeStats>,
}

/// A sale as shoppers see it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PublicSale {
    pub id: SaleId,
    pub name: String,
    #[schema(value_type = i64)]
    pub price_cents: Cents,
    #[schema(value_type = String)]
    pub currency: Currency,
    pub per_user_limit: Units,
    pub batch_no: BatchNo,
    pub status: BatchStatus,
    /// When buyers may start to queue.
    pub prequeue_opens_at: DateTime<Utc>,
    pub opens_at: DateTime<Utc>,
    pub closes_at: Option<DateTime<Utc>>,
    /// Units not yet held by anyone; null when unknown.
    pub units_left: Option<Units>,
    /// Units in buyers' carts, not paid yet: they come back to the queue if a hold lapses or is
    /// cancelled. Null when unknown.
    pub units_held: Option<Units>,
    /// With `status` `all_held`: when the first hold ends (its order expires then unless paid),
    /// the earliest a unit can come back.
    pub next_release_at: Option<DateTime<Utc>>,
    /// The commitment to this batch's draw seed (hex SHA-256, see `GET
    /// /sales/{id}/batches/{batch_no}/draw`), shown from the batch's creation on: record it
    /// before the pre-queue opens, and check the seed against it once it is published.
    pub draw_commitment: String,
    /// The server's clock, so a countdown can correct the client's.
    pub server_time: DateTime<Utc>,
}

/// `GET /sales`: upcoming and open sales.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PublicSaleList {
    pub sales: Vec<PublicSale>,
    pub server_time: DateTime<Utc>,
}

fn schedule_view(schedule: &Schedule) -> ScheduleView {
    match schedule {
        Schedule::Once { opens_at } => ScheduleView::Once { opens_at: *opens_at },
        Schedule::Weekly(w) => ScheduleView::Weekly {
            weekday: w.weekday.into(),
            time: w.time.format("%H:%M").to_string(),
            timezone: w.timezone.name().to_owned(),
        },
    }
}

/// Loads the current batch of each sale and its live state from Redis, in three round trips
/// whatever the number of sales.
async fn live_batches(state: &AppState, sales: &[Sale]) -> Result<Vec<Option<Live>>, Error> {
    let ids: Vec<SaleId> = sales.iter().map(|s| s.id).collect();
    let mut conn = state.db.acquire().await?;
    let batches = store::current_batches(&mut conn, &ids).await?;
    drop(conn);
    let keys: Vec<(SaleId, BatchNo)> = batches.iter().map(|b| (b.sale_id, b.batch_no)).collect();
    let ledgers = state.inventory.snapshots(&keys).await?;
    let queues = state.queue.stats(&keys).await?;
    // Batches without a ledger may be retired: their numbers are in PostgreSQL now.
    let gone: Vec<(SaleId, BatchNo)> =
        keys.iter().zip(&ledgers).filter(|(_, l)| l.is_none()).map(|(k, _)| *k).collect();
    let finals = if gone.is_empty() {
        Vec::new()
    } else {
        let mut conn = state.db.acquire().await?;
        store::final_stats(&mut conn, &gone).await?
    };
    // Batches whose every unit is held: when can the first come back?
    let held: Vec<(SaleId, BatchNo)> =
        keys.iter().zip(&ledgers).filter(|(_, l)| l.is_some_and(|l| l.is_all_held())).map(|(k, _)| *k).collect();
    let releases = state.inventory.next_releases(&held).await?;
    let mut live: Vec<Live> = batches
        .into_iter()
        .zip(ledgers)
        .zip(queues)
        .map(|((batch, ledger), queue)| {
            let key = (batch.sale_id, batch.batch_no);
            let final_stats = finals.iter().find(|(k, _)| *k == key).map(|(_, f)| *f);
            let next_release_ms = held.iter().position(|k| *k == key).and_then(|at| releases[at]);
            let draw_commitment = flashsale_queue::seed_commitment(&batch.prequeue_seed, batch.sale_id, batch.batch_no);
            Live { batch, ledger, queue, final_stats, next_release_ms, draw_commitment }
        })
        .collect();
    Ok(sales
        .iter()
        .map(|sale| live.iter().position(|l| l.batch.sale_id == sale.id).map(|at| live.swap_remove(at)))
        .collect())
}

fn admin_view(sale: Sale, live: Option<Live>, now: DateTime<Utc>) -> AdminSale {
    let current_batch = live.map(|live| AdminBatch {
        batch_no: live.batch.batch_no,
        status: live.status(&sale, now),
        prequeue_opens_at: sale.config.prequeue_opens_at(live.batch.opens_at),
        opens_at: live.batch.opens_at,
        closes_at: live.batch.closes_at,
        paused: live.batch.paused,
        closed_at: live.batch.closed_at,
        stats: live
            .ledger
            .map(|l| BatchStats {
                stock: l.total,
                available: l.available,
                allotted: l.allotted,
                reserved: l.reserved,
                sold: l.sold,
                queued: live.queue.queued,
                admitted: live.queue.admitted,
                reach: live.queue.reach,
                reopens: live.queue.reopens,
            })
            .or_else(|| {
                live.final_stats.map(|f| BatchStats {
                    stock: live.batch.stock,
                    available: live.batch.stock.checked_sub(f.sold).unwrap_or_default(),
                    allotted: Units::ZERO,
                    reserved: Units::ZERO,
                    sold: f.sold,
                    queued: f.queued,
                    admitted: f.admitted,
                    // Live figures: a retired batch's line is gone.
                    reach: None,
                    reopens: 0,
                })
            }),
    });
    let c = sale.config;
    AdminSale {
        id: sale.id,
        schedule: schedule_view(&c.schedule),
        name: c.name,
        sku: c.sku,
        price_cents: c.price_cents,
        currency: c.currency,
        stock: c.stock,
        per_user_limit: c.per_user_limit,
        prequeue_secs: c.prequeue_secs,
        admission_rate: c.admission_rate,
        admission_ttl_secs: c.admission_ttl_secs,
        payment_window_secs: c.payment_window_secs,
        duration_secs: c.duration_secs,
        join_pow_bits: c.join_pow.bits,
        join_pow_adaptive_rate: c.join_pow.adaptive.map(|a| a.joins_per_sec),
        join_pow_max_bits: c.join_pow.adaptive.map(|a| a.max_bits),
        priority_units: c.priority.units,
        priority_hold_secs: c.priority.hold_secs,
        version: sale.version,
        ended_at: sale.ended_at,
        created_at: sale.created_at,
        updated_at: sale.updated_at,
        current_batch,
        priority_codes: None,
    }
}

fn public_view(sale: &Sale, live: &Live, now: DateTime<Utc>) -> PublicSale {
    let status = live.status(sale, now);
    PublicSale {
        id: sale.id,
        batch_no: live.batch.batch_no,
        status,
        prequeue_opens_at: sale.config.prequeue_opens_at(live.batch.opens_at),
        opens_at: live.batch.opens_at,
        closes_at: live.batch.closes_at,
        units_left: live.ledger.map(|l| l.available),
        units_held: live.ledger.map(|l| l.reserved),
        next_release_at: live
            .next_release_ms
            .filter(|_| status == BatchStatus::AllHeld)
            .and_then(DateTime::from_timestamp_millis),
        draw_commitment: live.draw_commitment.clone(),
        server_time: now,
        name: sale.config.name.clone(),
        price_cents: sale.config.price_cents,
        currency: sale.config.currency.clone(),
        per_user_limit: sale.config.per_user_limit,
    }
}

/// Admin views of `sales`.
pub async fn admin_views(state: &AppState, sales: Vec<Sale>) -> Result<Vec<AdminSale>, Error> {
    let live = live_batches(state, &sales).await?;
    let now = state.clock.now();
    Ok(sales.into_iter().zip(live).map(|(sale, live)| admin_view(sale, live, now)).collect())
}

/// A page of the sales, newest first (`include_ended`: closed ones too), as operators see them.
pub async fn admin_list(
    state: &AppState,
    include_ended: bool,
    limit: i64,
    offset: i64,
) -> Result<Vec<AdminSale>, Error> {
    let mut conn = state.db.acquire().await?;
    let found = store::list_sales(&mut conn, include_ended, limit, offset).await?;
    drop(conn);
    admin_views(state, found).await
}

/// Every admin action on the sale, oldest first.
pub async fn audit_trail(state: &AppState, id: SaleId) -> Result<Vec<store::AuditEntry>, Error> {
    let mut conn = state.db.acquire().await?;
    store::get_sale(&mut conn, id, false).await?.ok_or_else(Error::sale_not_found)?;
    Ok(store::audit_trail(&mut conn, id).await?)
}

/// One sale's admin view.
pub async fn admin_sale(state: &AppState, id: SaleId) -> Result<AdminSale, Error> {
    let mut conn = state.db.acquire().await?;
    let sale = store::get_sale(&mut conn, id, false).await?.ok_or_else(Error::sale_not_found)?;
    drop(conn);
    Ok(admin_views(state, vec![sale]).await?.remove(0))
}

/// Public views of the sales that are upcoming or open (not ended, current batch not closed), or
/// of the one sale `only` (whatever its status).
///
/// The underlying data comes from [`crate::snapshot::PublicCache`]: countdown pages poll these endpoints, and on
/// sale day millions of them must not each cost PostgreSQL two queries. Status and `server_time`
/// are still computed per request, so the countdown and the switch to `open` are exact.
pub async fn public_sales(state: &AppState, only: Option<SaleId>) -> Result<Vec<PublicSale>, Error> {
    let snapshot = live_snapshot(state, only).await?;
    let now = state.clock.now();
    Ok(snapshot
        .iter()
        .map(|(sale, live)| public_view(sale, live, now))
        .filter(|view| only.is_some() || view.status != BatchStatus::Closed)
        .collect())
}

/// At most this many live sales are loaded into the shared snapshot that the public list and the
/// admission ticker read. Far above any real catalogue of simultaneous flash sales; a bound so a
/// runaway script creating sales cannot make every instance load them all twice a second.
const LIVE_SALES_CAP: i64 = 10_000;

/// Sales (all live ones, or just `only`) with their current batch and its live state, from the
/// per-instance cache.
pub async fn live_snapshot(state: &AppState, only: Option<SaleId>) -> Result<Arc<PublicSnapshot>, Error> {
    state.public_cache.get_or_load(only, || load_public(state, only)).await
}

async fn load_public(state: &AppState, only: Option<SaleId>) -> Result<Arc<PublicSnapshot>, Error> {
    let mut conn = state.db.acquire().await?;
    let sales = match only {
        Some(id) => store::get_sale(&mut conn, id, false).await?.into_iter().collect(),
        None => store::list_sales(&mut conn, false, LIVE_SALES_CAP, 0).await?,
    };
    drop(conn);
    let live = live_batches(state, &sales).await?;
    Ok(Arc::new(sales.into_iter().zip(live).filter_map(|(sale, live)| Some((sale, live?))).collect()))
}

/// `If-Match` as sent: `None` when absent.
#[derive(Debug, Clone, Default)]
pub struct IfMatch(pub Option<String>);

impl IfMatch {
    /// Refuses the change unless `If-Match` is absent, `*`, or lists the sale's current ETag.
    fn check(&self, sale: &Sale) -> Result<(), Error> {
        let Some(header) = &self.0 else { return Ok(()) };
        let current = etag(sale.version);
        let matches = header.split(',').map(str::trim).any(|tag| tag == "*" || tag == current);
        if matches { Ok(()) } else { Err(Error::VersionMismatch { current: sale.version }) }
    }
}

/// The ETag of a sale version: its number, quoted (a strong validator).
pub fn etag(version: i64) -> String {
    format!("\"{version}\"")
}

pub(crate) fn audit_details(actor: &Actor, details: serde_json::Value) -> serde_json::Value {
    json!({ "client_ip": actor.client_ip.map(|ip| ip.to_string()), "request": details })
}

/// Creates a sale and its first batch, with the batch's ledger in Redis.
pub async fn create(state: &AppState, actor: &Actor, body: NewSale) -> Result<AdminSale, Error> {
    let now = state.clock.now();
    let config = body.validate(now)?;
    let mut tx = state.db.begin().await?;
    let sale = store::insert_sale(&mut tx, &config).await?;
    let batch = Batch::first(sale.id, &config, now);
    store::insert_batch(&mut tx, &batch).await?;
    let details = audit_details(actor, serde_json::to_value(&body).unwrap_or_default());
    store::record_audit(&mut tx, &actor.name, "sale.create", Some(sale.id), &details).await?;
    // Before the commit: if Redis is down the sale is not created at all (503) rather than
    // created without a ledger. A ledger left by a failed commit names a sale id that is never
    // reused (sequences do not roll back), so it is inert.
    state.inventory.open_batch(sale.id, batch.batch_no, ledger_spec(&config, &batch)).await?;
    tx.commit().await?;
    state.public_cache.invalidate(sale.id);
    tracing::info!(sale.id = %sale.id, actor.name = %actor.name, batch.opens_at = %batch.opens_at, "sale created");
    Ok(admin_views(state, vec![sale]).await?.remove(0))
}

/// Locks a sale for a change: 404 if absent, 412 if `If-Match` names another version.
async fn lock_sale(conn: &mut PgConnection, id: SaleId, if_match: &IfMatch) -> Result<Sale, Error> {
    let sale = store::get_sale(conn, id, true).await?.ok_or_else(Error::sale_not_found)?;
    if_match.check(&sale)?;
    Ok(sale)
}

fn sale_ended() -> Error {
    Error::Refused { code: ProblemCode::SaleEnded, detail: "the sale was closed and can no longer change".to_owned() }
}

fn batch_finished(batch: Option<&Batch>) -> Error {
    let detail = match batch {
        Some(b) => format!("batch {} is over; the next one has not been scheduled yet", b.batch_no),
        None => "the sale has no batch".to_owned(),
    };
    Error::Refused { code: ProblemCode::BatchFinished, detail }
}

/// Changes a sale's configuration; a new stock applies to the live batch at once and is refused
/// (409) when buyers already hold more units than it.
pub async fn update(
    state: &AppState,
    actor: &Actor,
    id: SaleId,
    if_match: IfMatch,
    patch: SalePatch,
) -> Result<AdminSale, Error> {
    if patch.is_empty() {
        return Err(ValidationErrors::single("body", "give at least one field to change").into());
    }
    let now = state.clock.now();
    let mut tx = state.db.begin().await?;
    let sale = lock_sale(&mut tx, id, &IfMatch::default()).await?;
    // The body is judged before the precondition: a precondition only decides a request that
    // would otherwise succeed (RFC 9110, 13.2.1), so a bad body is 422 whatever If-Match says.
    let config = sale.config.patched(&patch)?;
    if_match.check(&sale)?;
    if sale.ended_at.is_some() {
        return Err(sale_ended());
    }
    let mut reconfigured = None;
    if let Some(before) = store::current_batch(&mut tx, id).await?.filter(|b| !b.is_finished(now)) {
        let mut batch = before.clone();
        batch.stock = config.stock;
        batch.closes_at = config.batch_closes_at(batch.opens_at);
        match state.inventory.configure(id, batch.batch_no, ledger_spec(&config, &batch)).await? {
            Configured::Applied { .. } => reconfigured = Some((batch.batch_no, ledger_spec(&sale.config, &before))),
            Configured::BelowCommitted { held } => {
                return Err(Error::Refused {
                    code: ProblemCode::StockBelowCommitted,
                    detail: format!(
                        "buyers hold {held} units of batch {} (reserved + sold); stock cannot drop below that",
                        batch.batch_no
                    ),
                });
            }
            Configured::Closed => return Err(batch_finished(Some(&batch))),
            // No ledger in Redis: it was lost and upkeep is rebuilding it from PostgreSQL. Writing
            // one here would create a full-stock ledger behind the rebuild's back (it would then
            // find a ledger and skip, and units already sold would be sold again): wait for it.
            Configured::Missing => return Err(Error::Rebuilding),
        }
        if let Err(e) = store::update_batch(&mut tx, &batch).await {
            if let flashsale_sales::SalesError::StockBelowCommitted { .. } = e {
                // Redis accepted a stock the record refuses: Redis undercounts what buyers hold.
                super::recovery::fence(state, id, batch.batch_no, "stock_below_record").await;
                return Err(e.into());
            }
            revert_ledger(state, id, reconfigured).await;
            return Err(e.into());
        }
    }
    let written: Result<Sale, Error> = async {
        let updated = store::update_sale_config(&mut tx, id, &config).await?;
        let details = audit_details(actor, json!({ "patch": patch, "version": updated.version }));
        store::record_audit(&mut tx, &actor.name, "sale.update", Some(id), &details).await?;
        tx.commit().await?;
        Ok(updated)
    }
    .await;
    let updated = match written {
        Ok(updated) => updated,
        Err(e) => {
            revert_ledger(state, id, reconfigured).await;
            return Err(e);
        }
    };
    state.public_cache.invalidate(id);
    tracing::info!(sale.id = %id, actor.name = %actor.name, sale.version = updated.version, "sale updated");
    Ok(admin_views(state, vec![updated]).await?.remove(0))
}

/// Puts a ledger's old configuration back after the change that applied it was not committed
/// (best effort, logged; the audit reconciles anything left).
async fn revert_ledger(state: &AppState, id: SaleId, reconfigured: Option<(BatchNo, LedgerSpec)>) {
    if let Some((batch_no, old)) = reconfigured {
        if let Err(revert) = state.inventory.configure(id, batch_no, old).await {
            tracing::error!(sale.id = %id, error = %revert, "could not revert ledger after a failed commit");
        }
    }
}

/// Pauses, resumes or closes a sale. Closing ends the sale: its current batch closes and no
/// further batch opens; closing an ended sale again changes nothing.
pub async fn change_status(
    state: &AppState,
    actor: &Actor,
    id: SaleId,
    if_match: IfMatch,
    change: StatusChange,
) -> Result<AdminSale, Error> {
    let now = state.clock.now();
    let mut tx = state.db.begin().await?;
    let sale = lock_sale(&mut tx, id, &if_match).await?;
    if sale.ended_at.is_some() {
        return match change {
            StatusChange::Close => Ok(admin_views(state, vec![sale]).await?.remove(0)),
            StatusChange::Pause | StatusChange::Resume => Err(sale_ended()),
        };
    }
    let current = store::current_batch(&mut tx, id).await?;
    let live = current.clone().filter(|b| !b.is_finished(now));
    let action = match change {
        StatusChange::Pause => "sale.pause",
        StatusChange::Resume => "sale.resume",
        StatusChange::Close => "sale.close",
    };
    match (change, live) {
        (StatusChange::Pause | StatusChange::Resume, None) => {
            return Err(batch_finished(current.as_ref()));
        }
        (_, Some(mut batch)) => {
            match change {
                StatusChange::Close => batch.closed_at = Some(now),
                _ => batch.paused = change == StatusChange::Pause,
            }
            match state.inventory.set_status(id, batch.batch_no, change).await? {
                StatusChanged::Applied => {}
                StatusChanged::Closed if change == StatusChange::Close => {}
                StatusChanged::Closed => return Err(batch_finished(Some(&batch))),
                // Being rebuilt (see `update`): the rebuild reads the batch row, so the change
                // would be safe for a close, but a pause or resume racing it could be lost.
                StatusChanged::Missing => return Err(Error::Rebuilding),
            }
            store::update_batch(&mut tx, &batch).await?;
        }
        (StatusChange::Close, None) => {}
    }
    let ended_at = (change == StatusChange::Close).then_some(now);
    let updated = store::touch_sale(&mut tx, id, ended_at).await?;
    let details = audit_details(actor, json!({ "version": updated.version }));
    store::record_audit(&mut tx, &actor.name, action, Some(id), &details).await?;
    tx.commit().await?;
    state.public_cache.invalidate(id);
    tracing::info!(sale.id = %id, actor.name = %actor.name, action, "sale status changed");
    Ok(admin_views(state, vec![updated]).await?.remove(0))
}
