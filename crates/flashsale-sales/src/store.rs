//! PostgreSQL storage for sales, batches and the admin audit trail.
//!
//! Functions take a `&mut PgConnection` so that callers compose them inside one transaction
//! (a pool connection and a transaction both deref to it). Queries are checked at run time
//! (`sqlx::query_as`, not the `query!` macros) so the workspace builds without a database.

use chrono::{DateTime, NaiveTime, Utc};
use flashsale_core::{BatchNo, Cents, Currency, EntrantKey, Epoch, PrequeueSeed, SaleId, Units};
use sqlx::PgConnection;

use crate::batch::{Batch, Sale};
use crate::config::{AdaptivePow, JoinPow, PriorityAllotment, SaleConfig, Schedule};
use crate::error::SalesError;
use crate::schedule::{WeekdayName, WeeklySchedule};

#[derive(sqlx::FromRow)]
struct SaleRow {
    id: i64,
    name: String,
    sku: String,
    price_cents: i64,
    currency: String,
    stock: i64,
    per_user_limit: i64,
    schedule_kind: String,
    opens_at: Option<DateTime<Utc>>,
    weekly_weekday: Option<String>,
    weekly_time: Option<NaiveTime>,
    weekly_timezone: Option<String>,
    prequeue_secs: i32,
    admission_rate: i32,
    admission_ttl_secs: i32,
    payment_window_secs: i32,
    duration_secs: Option<i32>,
    join_pow_bits: i16,
    join_pow_adaptive_rate: Option<i32>,
    join_pow_max_bits: Option<i16>,
    priority_units: i64,
    priority_hold_secs: i32,
    ended_at: Option<DateTime<Utc>>,
    version: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

const SALE_COLUMNS: &str = "id, name, sku, price_cents, currency, stock, per_user_limit, schedule_kind, \
    opens_at, weekly_weekday, weekly_time, weekly_timezone, prequeue_secs, admission_rate, \
    admission_ttl_secs, payment_window_secs, duration_secs, join_pow_bits, join_pow_adaptive_rate, join_pow_max_bits, \
    priority_units, priority_hold_secs, ended_at, version, created_at, updated_at";

impl TryFrom<SaleRow> for Sale {
    type Error = SalesError;
    fn try_from(row: SaleRow) -> Result<Sale, SalesError> {
        let corrupt = |reason: &str| SalesError::CorruptRow { sale_id: row.id, reason: reason.to_owned() };
        let units = |v: i64| Units::try_from(v).map_err(|e| corrupt(&e.to_string()));
        let secs = |v: i32| u32::try_from(v).map_err(|_| corrupt("negative duration"));
        let schedule = match row.schedule_kind.as_str() {
            "once" => Schedule::Once { opens_at: row.opens_at.ok_or_else(|| corrupt("once without opens_at"))? },
            "weekly" => {
                let weekday: WeekdayName =
                    row.weekly_weekday.as_deref().and_then(|d| d.parse().ok()).ok_or_else(|| corrupt("bad weekday"))?;
                let timezone = row
                    .weekly_timezone
                    .as_deref()
                    .and_then(|tz| tz.parse().ok())
                    .ok_or_else(|| corrupt("unknown time zone"))?;
                Schedule::Weekly(WeeklySchedule {
                    weekday: weekday.into(),
                    time: row.weekly_time.ok_or_else(|| corrupt("weekly without time"))?,
                    timezone,
                })
            }
            _ => return Err(corrupt("unknown schedule kind")),
        };
        Ok(Sale {
            id: SaleId::try_from(row.id).map_err(|_| corrupt("non-positive id"))?,
            config: SaleConfig {
                stock: units(row.stock)?,
                per_user_limit: units(row.per_user_limit)?,
                prequeue_secs: secs(row.prequeue_secs)?,
                admission_rate: secs(row.admission_rate)?,
                admission_ttl_secs: secs(row.admission_ttl_secs)?,
                payment_window_secs: secs(row.payment_window_secs)?,
                duration_secs: row.duration_secs.map(secs).transpose()?,
                join_pow: {
                    let bits = |v: i16| u8::try_from(v).map_err(|_| corrupt("proof-of-work bits"));
                    JoinPow {
                        bits: bits(row.join_pow_bits)?,
                        adaptive: match (row.join_pow_adaptive_rate, row.join_pow_max_bits) {
                            (Some(rate), Some(max)) => Some(AdaptivePow {
                                joins_per_sec: u32::try_from(rate).map_err(|_| corrupt("proof-of-work rate"))?,
                                max_bits: bits(max)?,
                            }),
                            _ => None,
                        },
                    }
                },
                priority: PriorityAllotment {
                    units: units(row.priority_units)?,
                    hold_secs: secs(row.priority_hold_secs)?,
                },
                name: row.name,
                sku: row.sku,
                price_cents: Cents(row.price_cents),
                currency: Currency::try_from(row.currency).map_err(|_| corrupt("currency"))?,
                schedule,
            },
            ended_at: row.ended_at,
            version: row.version,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct BatchRow {
    sale_id: i64,
    batch_no: i64,
    opens_at: DateTime<Utc>,
    closes_at: Option<DateTime<Utc>>,
    stock: i64,
    paused: bool,
    closed_at: Option<DateTime<Utc>>,
    prequeue_seed: Vec<u8>,
    entrant_key: Vec<u8>,
    epoch: i64,
}

pub(crate) const BATCH_COLUMNS: &str =
    "sale_id, batch_no, opens_at, closes_at, stock, paused, closed_at, prequeue_seed, entrant_key, epoch";

impl TryFrom<BatchRow> for Batch {
    type Error = SalesError;
    fn try_from(row: BatchRow) -> Result<Batch, SalesError> {
        let corrupt = |reason: String| SalesError::CorruptRow { sale_id: row.sale_id, reason };
        Ok(Batch {
            sale_id: SaleId::try_from(row.sale_id).map_err(|e| corrupt(e.to_string()))?,
            batch_no: BatchNo::try_from(row.batch_no).map_err(|e| corrupt(e.to_string()))?,
            opens_at: row.opens_at,
            closes_at: row.closes_at,
            stock: Units::try_from(row.stock).map_err(|e| corrupt(e.to_string()))?,
            paused: row.paused,
            closed_at: row.closed_at,
            prequeue_seed: PrequeueSeed::new(row.prequeue_seed),
            entrant_key: EntrantKey::new(row.entrant_key),
            epoch: Epoch::try_from(row.epoch).map_err(|e| corrupt(e.to_string()))?,
        })
    }
}

fn to_i32(v: u32) -> i32 {
    // Validation bounds every duration and rate far below i32::MAX.
    i32::try_from(v).expect("validated configuration fits INTEGER")
}

/// Stores a new sale and returns it with its id.
pub async fn insert_sale(conn: &mut PgConnection, config: &SaleConfig) -> Result<Sale, SalesError> {
    let (kind, opens_at, weekday, time, timezone) = match config.schedule {
        Schedule::Once { opens_at } => ("once", Some(opens_at), None, None, None),
        Schedule::Weekly(w) => {
            ("weekly", None, Some(WeekdayName::from(w.weekday).as_str()), Some(w.time), Some(w.timezone.name()))
        }
    };
    let row: SaleRow = sqlx::query_as(&format!(
        "INSERT INTO sales (name, sku, price_cents, currency, stock, per_user_limit, schedule_kind, opens_at, \
         weekly_weekday, weekly_time, weekly_timezone, prequeue_secs, admission_rate, admission_ttl_secs, \
         payment_window_secs, duration_secs, join_pow_bits, join_pow_adaptive_rate, join_pow_max_bits, \
         priority_units, priority_hold_secs) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21) \
         RETURNING {SALE_COLUMNS}"
    ))
    .bind(&config.name)
    .bind(&config.sku)
    .bind(config.price_cents.get())
    .bind(config.currency.as_str())
    .bind(config.stock.to_i64())
    .bind(config.per_user_limit.to_i64())
    .bind(kind)
    .bind(opens_at)
    .bind(weekday)
    .bind(time)
    .bind(timezone)
    .bind(to_i32(config.prequeue_secs))
    .bind(to_i32(config.admission_rate))
    .bind(to_i32(config.admission_ttl_secs))
    .bind(to_i32(config.payment_window_secs))
    .bind(config.duration_secs.map(to_i32))
    .bind(i16::from(config.join_pow.bits))
    .bind(config.join_pow.adaptive.map(|a| to_i32(a.joins_per_sec)))
    .bind(config.join_pow.adaptive.map(|a| i16::from(a.max_bits)))
    .bind(config.priority.units.to_i64())
    .bind(to_i32(config.priority.hold_secs))
    .fetch_one(conn)
    .await?;
    row.try_into()
}

/// Replaces the changeable part of a sale's configuration and bumps its version.
pub async fn update_sale_config(conn: &mut PgConnection, id: SaleId, config: &SaleConfig) -> Result<Sale, SalesError> {
    let row: SaleRow = sqlx::query_as(&format!(
        "UPDATE sales SET name = $2, stock = $3, per_user_limit = $4, prequeue_secs = $5, admission_rate = $6, \
         admission_ttl_secs = $7, payment_window_secs = $8, duration_secs = $9, join_pow_bits = $10, \
         join_pow_adaptive_rate = $11, join_pow_max_bits = $12, priority_units = $13, priority_hold_secs = $14, \
         version = version + 1, \
         updated_at = now() WHERE id = $1 RETURNING {SALE_COLUMNS}"
    ))
    .bind(id.get())
    .bind(&config.name)
    .bind(config.stock.to_i64())
    .bind(config.per_user_limit.to_i64())
    .bind(to_i32(config.prequeue_secs))
    .bind(to_i32(config.admission_rate))
    .bind(to_i32(config.admission_ttl_secs))
    .bind(to_i32(config.payment_window_secs))
    .bind(config.duration_secs.map(to_i32))
    .bind(i16::from(config.join_pow.bits))
    .bind(config.join_pow.adaptive.map(|a| to_i32(a.joins_per_sec)))
    .bind(config.join_pow.adaptive.map(|a| i16::from(a.max_bits)))
    .bind(config.priority.units.to_i64())
    .bind(to_i32(config.priority.hold_secs))
    .fetch_one(conn)
    .await?;
    row.try_into()
}

/// Bumps a sale's version (for changes stored elsewhere, such as pausing its batch); with
/// `ended_at`, also marks the sale ended.
pub async fn touch_sale(
    conn: &mut PgConnection,
    id: SaleId,
    ended_at: Option<DateTime<Utc>>,
) -> Result<Sale, SalesError> {
    let row: SaleRow = sqlx::query_as(&format!(
        "UPDATE sales SET version = version + 1, updated_at = now(), ended_at = COALESCE(ended_at, $2) \
         WHERE id = $1 RETURNING {SALE_COLUMNS}"
    ))
    .bind(id.get())
    .bind(ended_at)
    .fetch_one(conn)
    .await?;
    row.try_into()
}

/// Loads a sale. With `for_update`, locks its row until the transaction ends, which serialises
/// concurrent admin changes to one sale.
pub async fn get_sale(conn: &mut PgConnection, id: SaleId, for_update: bool) -> Result<Option<Sale>, SalesError> {
    let lock = if for_update { " FOR UPDATE" } else { "" };
    let row: Option<SaleRow> = sqlx::query_as(&format!("SELECT {SALE_COLUMNS} FROM sales WHERE id = $1{lock}"))
        .bind(id.get())
        .fetch_optional(conn)
        .await?;
    row.map(Sale::try_from).transpose()
}

/// Sales, newest first, `limit` at a time after skipping `offset`. Without `include_ended`,
/// only sales that are not ended.
pub async fn list_sales(
    conn: &mut PgConnection,
    include_ended: bool,
    limit: i64,
    offset: i64,
) -> Result<Vec<Sale>, SalesError> {
    let rows: Vec<SaleRow> = sqlx::query_as(&format!(
        "SELECT {SALE_COLUMNS} FROM sales WHERE $1 OR ended_at IS NULL ORDER BY id DESC LIMIT $2 OFFSET $3"
    ))
    .bind(include_ended)
    .bind(limit)
    .bind(offset)
    .fetch_all(conn)
    .await?;
    rows.into_iter().map(Sale::try_from).collect()
}

/// Stores a batch unless one with its number or opening already exists (another instance rolled
/// the sale over first). Returns whether this call inserted it.
pub async fn insert_batch(conn: &mut PgConnection, batch: &Batch) -> Result<bool, SalesError> {
    let done = sqlx::query(
        "INSERT INTO sale_batches (sale_id, batch_no, opens_at, closes_at, stock, paused, closed_at, prequeue_seed, \
                                   entrant_key) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING",
    )
    .bind(batch.sale_id.get())
    .bind(batch.batch_no.get())
    .bind(batch.opens_at)
    .bind(batch.closes_at)
    .bind(batch.stock.to_i64())
    .bind(batch.paused)
    .bind(batch.closed_at)
    .bind(batch.prequeue_seed.as_bytes())
    .bind(batch.entrant_key.as_bytes())
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Writes a batch's changeable fields (window end, stock, pause, close).
pub async fn update_batch(conn: &mut PgConnection, batch: &Batch) -> Result<(), SalesError> {
    sqlx::query(
        "UPDATE sale_batches SET closes_at = $3, stock = $4, paused = $5, closed_at = $6 \
         WHERE sale_id = $1 AND batch_no = $2",
    )
    .bind(batch.sale_id.get())
    .bind(batch.batch_no.get())
    .bind(batch.closes_at)
    .bind(batch.stock.to_i64())
    .bind(batch.paused)
    .bind(batch.closed_at)
    .execute(conn)
    .await
    .map_err(|e| match &e {
        sqlx::Error::Database(db) if db.constraint() == Some("sale_batches_no_oversell") => {
            SalesError::StockBelowCommitted { stock: batch.stock.to_i64() }
        }
        _ => SalesError::Database(e),
    })?;
    Ok(())
}

/// The sale's current batch: its latest one.
pub async fn current_batch(conn: &mut PgConnection, sale: SaleId) -> Result<Option<Batch>, SalesError> {
    let row: Option<BatchRow> = sqlx::query_as(&format!(
        "SELECT {BATCH_COLUMNS} FROM sale_batches WHERE sale_id = $1 ORDER BY batch_no DESC LIMIT 1"
    ))
    .bind(sale.get())
    .fetch_optional(conn)
    .await?;
    row.map(Batch::try_from).transpose()
}

/// One batch of a sale.
pub async fn get_batch(conn: &mut PgConnection, sale: SaleId, batch: BatchNo) -> Result<Option<Batch>, SalesError> {
    let row: Option<BatchRow> =
        sqlx::query_as(&format!("SELECT {BATCH_COLUMNS} FROM sale_batches WHERE sale_id = $1 AND batch_no = $2"))
            .bind(sale.get())
            .bind(batch.get())
            .fetch_optional(conn)
            .await?;
    row.map(Batch::try_from).transpose()
}

/// Locks one batch's row (`FOR UPDATE`, until the transaction ends) and returns it. Order writes
/// share-lock the row, so they wait; so does a second rebuild of the same batch.
pub async fn lock_batch(conn: &mut PgConnection, sale: SaleId, batch: BatchNo) -> Result<Option<Batch>, SalesError> {
    let row: Option<BatchRow> = sqlx::query_as(&format!(
        "SELECT {BATCH_COLUMNS} FROM sale_batches WHERE sale_id = $1 AND batch_no = $2 FOR UPDATE"
    ))
    .bind(sale.get())
    .bind(batch.get())
    .fetch_optional(conn)
    .await?;
    row.map(Batch::try_from).transpose()
}

/// Gives a batch a new epoch, from a sequence so no value is ever handed out twice, and returns it.
pub async fn new_epoch(conn: &mut PgConnection, sale: SaleId, batch: BatchNo) -> Result<Epoch, SalesError> {
    let epoch: i64 = sqlx::query_scalar(
        "UPDATE sale_batches SET epoch = nextval('batch_epochs') WHERE sale_id = $1 AND batch_no = $2 RETURNING epoch",
    )
    .bind(sale.get())
    .bind(batch.get())
    .fetch_one(conn)
    .await?;
    Epoch::try_from(epoch).map_err(|e| SalesError::CorruptRow { sale_id: sale.get(), reason: e.to_string() })
}

/// The current batch of each of `sales`, in one query.
pub async fn current_batches(conn: &mut PgConnection, sales: &[SaleId]) -> Result<Vec<Batch>, SalesError> {
    let ids: Vec<i64> = sales.iter().map(|s| s.get()).collect();
    let rows: Vec<BatchRow> = sqlx::query_as(&format!(
        "SELECT DISTINCT ON (sale_id) {BATCH_COLUMNS} FROM sale_batches WHERE sale_id = ANY($1) \
         ORDER BY sale_id, batch_no DESC"
    ))
    .bind(&ids)
    .fetch_all(conn)
    .await?;
    rows.into_iter().map(Batch::try_from).collect()
}

/// Every sale that is not ended, with its current batch: the set background upkeep looks at.
pub async fn live_sales(conn: &mut PgConnection) -> Result<Vec<(Sale, Batch)>, SalesError> {
    let sales = list_sales(conn, false, i64::MAX, 0).await?;
    let ids: Vec<SaleId> = sales.iter().map(|s| s.id).collect();
    let mut batches = current_batches(conn, &ids).await?;
    Ok(sales
        .into_iter()
        .filter_map(|sale| {
            let at = batches.iter().position(|b| b.sale_id == sale.id)?;
            Some((sale, batches.swap_remove(at)))
        })
        .collect())
}

/// Appends an entry to the admin audit trail.
pub async fn record_audit(
    conn: &mut PgConnection,
    actor: &str,
    action: &str,
    sale: Option<SaleId>,
    details: &serde_json::Value,
) -> Result<(), SalesError> {
    sqlx::query("INSERT INTO admin_audit (actor, action, sale_id, details) VALUES ($1, $2, $3, $4)")
        .bind(actor)
        .bind(action)
        .bind(sale.map(SaleId::get))
        .bind(details)
        .execute(conn)
        .await?;
    Ok(())
}

/// One entry of the admin audit trail.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize, utoipa::ToSchema)]
pub struct AuditEntry {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub sale_id: Option<i64>,
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
}

/// The audit trail of one sale, oldest first.
pub async fn audit_trail(conn: &mut PgConnection, sale: SaleId) -> Result<Vec<AuditEntry>, SalesError> {
    Ok(sqlx::query_as("SELECT id, at, actor, action, sale_id, details FROM admin_audit WHERE sale_id = $1 ORDER BY id")
        .bind(sale.get())
        .fetch_all(conn)
        .await?)
}

/// What a retired batch keeps in PostgreSQL once its Redis keys are gone: the numbers its views
/// show from then on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FinalStats {
    /// Units paid for.
    pub sold: Units,
    /// Buyers who joined its queue.
    pub queued: u64,
    /// Buyers admitted.
    pub admitted: u64,
}

/// Finished batches (closed, or past their window, at `now`) whose Redis keys have not been given
/// an end of life yet, oldest first.
pub async fn batches_to_retire(conn: &mut PgConnection, now: DateTime<Utc>) -> Result<Vec<Batch>, SalesError> {
    let rows: Vec<BatchRow> = sqlx::query_as(&format!(
        "SELECT {BATCH_COLUMNS} FROM sale_batches \
         WHERE retired_at IS NULL AND (closed_at IS NOT NULL OR closes_at <= $1) \
           AND (opens_at > $1 OR EXISTS (SELECT 1 FROM batch_draws d \
                                          WHERE d.sale_id = sale_batches.sale_id AND d.batch_no = sale_batches.batch_no)) \
         ORDER BY sale_id, batch_no LIMIT 100"
    ))
    .bind(now)
    .fetch_all(conn)
    .await?;
    rows.into_iter().map(Batch::try_from).collect()
}

/// Records that a batch is retired, with its final numbers: units sold from the record (its
/// orders' held units: none is pending by then), the queue's from Redis. Returns whether this call
/// did it.
pub async fn retire_batch(
    conn: &mut PgConnection,
    sale: SaleId,
    batch: BatchNo,
    queued: u64,
    admitted: u64,
) -> Result<bool, SalesError> {
    let done = sqlx::query(
        "UPDATE sale_batches SET retired_at = now(), final_sold = committed_units, final_queued = $3, \
                final_admitted = $4 \
         WHERE sale_id = $1 AND batch_no = $2 AND retired_at IS NULL",
    )
    .bind(sale.get())
    .bind(batch.get())
    .bind(i64::try_from(queued).unwrap_or(i64::MAX))
    .bind(i64::try_from(admitted).unwrap_or(i64::MAX))
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The final numbers of the retired ones among `batches`.
pub async fn final_stats(
    conn: &mut PgConnection,
    batches: &[(SaleId, BatchNo)],
) -> Result<Vec<((SaleId, BatchNo), FinalStats)>, SalesError> {
    let rows: Vec<(i64, i64, i64, i64, i64)> = sqlx::query_as(
        "SELECT sale_id, batch_no, final_sold, final_queued, final_admitted FROM sale_batches \
         WHERE retired_at IS NOT NULL \
           AND (sale_id, batch_no) IN (SELECT * FROM UNNEST($1::bigint[], $2::bigint[]))",
    )
    .bind(batches.iter().map(|b| b.0.get()).collect::<Vec<_>>())
    .bind(batches.iter().map(|b| b.1.get()).collect::<Vec<_>>())
    .fetch_all(conn)
    .await?;
    rows.into_iter()
        .map(|(s, b, sold, queued, admitted)| {
            let corrupt = |reason: String| SalesError::CorruptRow { sale_id: s, reason };
            let key = (
                SaleId::try_from(s).map_err(|e| corrupt(e.to_string()))?,
                BatchNo::try_from(b).map_err(|e| corrupt(e.to_string()))?,
            );
            let stats = FinalStats {
                sold: Units::try_from(sold).map_err(|e| corrupt(e.to_string()))?,
                queued: u64::try_from(queued).unwrap_or_default(),
                admitted: u64::try_from(admitted).unwrap_or_default(),
            };
            Ok((key, stats))
        })
        .collect()
}

/// How far a batch's queue had gone, as upkeep last recorded it (`batch_queue_marks`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueMark {
    /// Tickets handed out.
    pub tail: u64,
    /// The "now serving" counter.
    pub serving: u64,
    /// The first ticket whose admission window may still be running (0: none).
    pub window_from: u64,
    /// The fastest joining seen between two marks, tickets per second.
    pub peak_join_rate: u64,
}

/// Records a batch's queue counters (only ever moving them forward) and the joining rate since
/// the last mark. Several instances write it every second; a mark that moves nothing writes
/// nothing.
pub async fn record_queue_mark(
    conn: &mut PgConnection,
    sale: SaleId,
    batch: BatchNo,
    tail: u64,
    serving: u64,
    window_from: u64,
) -> Result<(), SalesError> {
    let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    sqlx::query(
        "INSERT INTO batch_queue_marks AS m (sale_id, batch_no, tail_hwm, serving_hwm, window_from) \
         VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (sale_id, batch_no) DO UPDATE SET \
             peak_join_rate = GREATEST(m.peak_join_rate, ceil((EXCLUDED.tail_hwm - m.tail_hwm) \
                 / GREATEST(extract(epoch FROM now() - m.updated_at), 0.5))::bigint), \
             tail_hwm = GREATEST(m.tail_hwm, EXCLUDED.tail_hwm), \
             serving_hwm = GREATEST(m.serving_hwm, EXCLUDED.serving_hwm), \
             window_from = GREATEST(m.window_from, EXCLUDED.window_from), \
             updated_at = now() \
         WHERE EXCLUDED.tail_hwm > m.tail_hwm OR EXCLUDED.serving_hwm > m.serving_hwm \
            OR EXCLUDED.window_from > m.window_from",
    )
    .bind(sale.get())
    .bind(batch.get())
    .bind(n(tail))
    .bind(n(serving))
    .bind(n(window_from))
    .execute(conn)
    .await?;
    Ok(())
}

/// A batch's last queue mark (all zero when none was recorded).
pub async fn queue_mark(conn: &mut PgConnection, sale: SaleId, batch: BatchNo) -> Result<QueueMark, SalesError> {
    let row: Option<(i64, i64, i64, i64)> = sqlx::query_as(
        "SELECT tail_hwm, serving_hwm, window_from, peak_join_rate FROM batch_queue_marks \
         WHERE sale_id = $1 AND batch_no = $2",
    )
    .bind(sale.get())
    .bind(batch.get())
    .fetch_optional(conn)
    .await?;
    let n = |v: i64| u64::try_from(v).unwrap_or_default();
    Ok(row.map_or_else(QueueMark::default, |(tail, serving, window_from, rate)| QueueMark {
        tail: n(tail),
        serving: n(serving),
        window_from: n(window_from),
        peak_join_rate: n(rate),
    }))
}
