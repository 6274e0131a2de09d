//! The sale report of one batch: who entered, how the draw went, how admission ran second by
//! second, when it sold out and how soon everyone waiting was told, how the orders ended, and the
//! fairness figures, all from PostgreSQL's records (`batch_draws`, `batch_activity`, `orders`,
//! `sale_batches`), so the report of any past batch reads the same after Redis let it go.
//!
//! One report, two audiences: operations get everything ([`OperatorFigures`]: money, refusals);
//! the public view leaves those out. Nothing in either names a buyer.

use chrono::{DateTime, Utc};
use flashsale_core::{BatchNo, Cents, Currency, SaleId, Units};
use flashsale_order::OrderStatus;
use flashsale_queue::draw::PublishedDraw;
use flashsale_sales::activity::{self, SecondCounts};
use flashsale_sales::{draws, store};
use serde::Serialize;

use super::Error;
use crate::state::AppState;

/// Adds per-second batch counts to PostgreSQL (the `activity` job's write).
pub async fn record_activity(state: &AppState, rows: &[(SaleId, BatchNo, i64, SecondCounts)]) -> Result<(), Error> {
    let mut conn = state.db.acquire().await?;
    activity::add_activity(&mut conn, rows).await?;
    Ok(())
}

/// A batch's sale report.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SaleReport {
    pub sale_id: SaleId,
    pub batch_no: BatchNo,
    pub sale_name: String,
    pub stock: Units,
    pub opens_at: DateTime<Utc>,
    /// The end of the batch's window, if it has one.
    pub closes_at: Option<DateTime<Utc>>,
    /// When operations closed it, if they did.
    pub closed_at: Option<DateTime<Utc>>,
    /// Whether the batch is over (its figures are final once its last order is settled).
    pub finished: bool,
    pub entrants: Entrants,
    /// The draw as published (commitments, the seed once revealed).
    pub draw: PublishedDraw,
    pub admission: AdmissionFigures,
    pub sell_out: SellOut,
    /// Orders by how they ended.
    pub orders: Vec<OrderOutcome>,
    pub fairness: Fairness,
    /// Per second (Redis's clock), summed over instances; seconds with nothing to count are left
    /// out.
    pub timeline: Vec<Second>,
    /// Operations only: money and refusals. Absent from the public report.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operator: Option<OperatorFigures>,
}

/// Who entered the batch's queue.
#[derive(Debug, Clone, Copy, Serialize, utoipa::ToSchema)]
pub struct Entrants {
    /// Buyers in the pre-queue cohort (drawn at the opening); `null` before the opening's record.
    pub prequeue_cohort: Option<u64>,
    /// Buyers who joined after the opening, in arrival order (places joins that took a place
    /// after the cohort).
    pub later_joiners: Option<u64>,
    /// Every buyer who took a place (from Redis while the batch lives, from its final numbers
    /// once retired); `null` when neither can be read.
    pub queued: Option<u64>,
}

/// Admission over the batch's life.
#[derive(Debug, Clone, Copy, Serialize, utoipa::ToSchema)]
pub struct AdmissionFigures {
    /// Turns given.
    pub admitted: u64,
    /// Turns that ran out unused.
    pub lapsed: u64,
    /// Turns given to units that came back (beyond the first wave the stock could serve).
    pub reoffered: u64,
    /// Buyers whose turn came (the highest ticket admitted).
    pub last_ticket: Option<u64>,
}

/// When the stock ran out and when the waiting crowd knew it.
#[derive(Debug, Clone, Copy, Serialize, utoipa::ToSchema)]
pub struct SellOut {
    /// The payment that brought the units paid to the stock; `null` if it never sold out.
    pub sold_out_at: Option<DateTime<Utc>>,
    /// Seconds from the opening to it.
    pub secs_after_opening: Option<f64>,
    /// Buyers told their final answer (sold out or closed), each counted once.
    pub told_final: u64,
    /// The last second a buyer was first told.
    pub last_told_at: Option<DateTime<Utc>>,
    /// Seconds from the sell-out to that last telling: how long until every waiting buyer who
    /// kept asking knew.
    pub all_told_secs_after_sell_out: Option<f64>,
}

/// Orders of one status.
#[derive(Debug, Clone, Copy, Serialize, utoipa::ToSchema)]
pub struct OrderOutcome {
    #[schema(value_type = String, example = "paid")]
    pub status: &'static str,
    pub orders: u64,
    pub units: u64,
}

/// Whether the queue was fair, from the server's own records.
#[derive(Debug, Clone, Copy, Serialize, utoipa::ToSchema)]
pub struct Fairness {
    /// Admission steps that admitted a ticket at or below one admitted before (must be 0).
    pub admissions_out_of_order: u64,
    /// Spearman's rho of arrival time against drawn place over the pre-queue cohort: near 0 when
    /// arriving early bought nothing. `null` below three entrants or before the opening.
    pub arrival_rho: Option<f64>,
}

/// One second of the batch.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Second {
    pub at: DateTime<Utc>,
    #[serde(flatten)]
    pub counts: SecondCounts,
}

/// What only operations see.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct OperatorFigures {
    #[schema(value_type = String)]
    pub currency: Currency,
    /// Paid orders' amount.
    #[schema(value_type = i64)]
    pub revenue_cents: Cents,
    /// Owed back (paid after the window).
    #[schema(value_type = i64)]
    pub refund_due_cents: Cents,
    /// Joins refused (sold out, closed, not open yet).
    pub joins_refused: u64,
    /// Queue requests answered 429.
    pub rate_limited: u64,
    /// Joins refused for a failed proof of work (wrong, expired, reused, foreign or forged; a
    /// join sent without one is asked for it and not counted).
    pub pow_failed: u64,
    /// Priority codes redeemed in this batch, and the units they sold.
    pub priority_codes: flashsale_sales::codes::PriorityCodeStats,
}

/// The report of batch `batch_no` of sale `id`; `operator` adds what only operations see.
pub async fn report(state: &AppState, id: SaleId, batch_no: BatchNo, operator: bool) -> Result<SaleReport, Error> {
    let mut conn = state.db.acquire().await?;
    let sale = store::get_sale(&mut conn, id, false).await?.ok_or_else(Error::sale_not_found)?;
    let batch =
        store::get_batch(&mut conn, id, batch_no).await?.ok_or_else(|| Error::NotFound("no such batch".to_owned()))?;
    let record = draws::draw_record(&mut conn, id, batch_no).await?;
    let seconds = activity::activity(&mut conn, id, batch_no).await?;
    let final_stats = store::final_stats(&mut conn, &[(id, batch_no)]).await?.pop().map(|(_, f)| f);
    drop(conn);
    let draw = super::draws::published(state, id, batch_no).await?;
    let outcomes = state.orders.outcomes(id, batch_no).await?;
    let sold_out_at = state.orders.sold_out_at(id, batch_no, batch.stock).await?;
    let priority = if operator { Some(super::codes::stats(state, id, Some(batch_no)).await?) } else { None };
    let queued = match final_stats {
        Some(stats) => Some(stats.queued),
        // A live batch: from Redis, if it answers (the report does not fail for it).
        None => state.queue.stats(&[(id, batch_no)]).await.ok().and_then(|mut s| s.pop()).map(|s| s.queued),
    };

    let mut total = SecondCounts::default();
    let mut last_told_at = None;
    for (at, counts) in &seconds {
        total.add(counts);
        if counts.told_final > 0 {
            last_told_at = Some(*at);
        }
    }
    let secs = |from: DateTime<Utc>, to: DateTime<Utc>| (to - from).num_milliseconds() as f64 / 1000.0;
    let cohort = record.as_ref().map(|r| r.cohort_size);
    let amount =
        |status: OrderStatus| outcomes.iter().filter(|o| o.status == status).map(|o| o.amount_cents.0).sum::<i64>();
    Ok(SaleReport {
        sale_id: id,
        batch_no,
        sale_name: sale.config.name.clone(),
        stock: batch.stock,
        opens_at: batch.opens_at,
        closes_at: batch.closes_at,
        closed_at: batch.closed_at,
        finished: batch.is_finished(state.clock.now()),
        entrants: Entrants {
            prequeue_cohort: cohort,
            later_joiners: queued.zip(cohort).map(|(q, c)| q.saturating_sub(c)),
            queued,
        },
        draw,
        admission: AdmissionFigures {
            admitted: total.admitted,
            lapsed: total.lapsed,
            reoffered: total.reoffered,
            last_ticket: total.last_ticket,
        },
        sell_out: SellOut {
            sold_out_at,
            secs_after_opening: sold_out_at.map(|at| secs(batch.opens_at, at)),
            told_final: total.told_final,
            last_told_at,
            all_told_secs_after_sell_out: sold_out_at
                .zip(last_told_at)
                .map(|(sold, told)| secs(sold, told + chrono::TimeDelta::seconds(1)).max(0.0)),
        },
        orders: OrderStatus::ALL
            .iter()
            .map(|status| {
                let found = outcomes.iter().find(|o| o.status == *status);
                OrderOutcome {
                    status: status.as_str(),
                    orders: found.map_or(0, |o| o.orders),
                    units: found.map_or(0, |o| o.units),
                }
            })
            .collect(),
        fairness: Fairness {
            admissions_out_of_order: total.out_of_order,
            arrival_rho: record.as_ref().and_then(|r| r.arrival_rho),
        },
        timeline: seconds.into_iter().map(|(at, counts)| Second { at, counts }).collect(),
        operator: priority.map(|priority_codes| OperatorFigures {
            currency: sale.config.currency.clone(),
            revenue_cents: Cents(amount(OrderStatus::Paid)),
            refund_due_cents: Cents(amount(OrderStatus::RefundDue)),
            joins_refused: total.joins_refused,
            rate_limited: total.rate_limited,
            pow_failed: total.pow_failed,
            priority_codes,
        }),
    })
}
