//! A batch's activity per second (`batch_activity`): what its sale report's timeline is read
//! from. Instances add their own counts (the server's `activity` module and job); reads sum them.

use chrono::{DateTime, TimeZone, Utc};
use flashsale_core::{BatchNo, SaleId};
use serde::Serialize;
use sqlx::PgConnection;

use crate::error::SalesError;

/// One second's counts of one batch (see the migration for each column's meaning).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct SecondCounts {
    pub admitted: u64,
    pub reoffered: u64,
    pub lapsed: u64,
    pub first_ticket: Option<u64>,
    pub last_ticket: Option<u64>,
    pub out_of_order: u64,
    pub joins: u64,
    pub joins_refused: u64,
    pub rate_limited: u64,
    pub told_final: u64,
    pub pow_failed: u64,
}

impl SecondCounts {
    /// Adds `other`'s counts to these (the ticket range widens).
    pub fn add(&mut self, other: &SecondCounts) {
        self.admitted += other.admitted;
        self.reoffered += other.reoffered;
        self.lapsed += other.lapsed;
        self.out_of_order += other.out_of_order;
        self.joins += other.joins;
        self.joins_refused += other.joins_refused;
        self.rate_limited += other.rate_limited;
        self.told_final += other.told_final;
        self.pow_failed += other.pow_failed;
        self.first_ticket = match (self.first_ticket, other.first_ticket) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.last_ticket = self.last_ticket.max(other.last_ticket);
    }
}

fn int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Adds each row's counts to its batch's second, in one statement.
pub async fn add_activity(
    conn: &mut PgConnection,
    rows: &[(SaleId, BatchNo, i64, SecondCounts)],
) -> Result<(), SalesError> {
    if rows.is_empty() {
        return Ok(());
    }
    let column = |f: fn(&SecondCounts) -> u64| rows.iter().map(|r| int(f(&r.3))).collect::<Vec<i64>>();
    let tickets = |f: fn(&SecondCounts) -> Option<u64>| rows.iter().map(|r| f(&r.3).map(int)).collect::<Vec<_>>();
    let seconds: Vec<DateTime<Utc>> =
        rows.iter().map(|r| Utc.timestamp_opt(r.2, 0).single().unwrap_or_default()).collect();
    sqlx::query(
        "INSERT INTO batch_activity AS a (sale_id, batch_no, second, admitted, reoffered, lapsed, first_ticket, \
                                          last_ticket, out_of_order, joins, joins_refused, rate_limited, told_final, \
                                          pow_failed) \
         SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::timestamptz[], $4::bigint[], $5::bigint[], $6::bigint[], \
                              $7::bigint[], $8::bigint[], $9::bigint[], $10::bigint[], $11::bigint[], $12::bigint[], \
                              $13::bigint[], $14::bigint[]) \
         ON CONFLICT (sale_id, batch_no, second) DO UPDATE SET \
             admitted = a.admitted + EXCLUDED.admitted, reoffered = a.reoffered + EXCLUDED.reoffered, \
             lapsed = a.lapsed + EXCLUDED.lapsed, \
             first_ticket = LEAST(a.first_ticket, EXCLUDED.first_ticket), \
             last_ticket = GREATEST(a.last_ticket, EXCLUDED.last_ticket), \
             out_of_order = a.out_of_order + EXCLUDED.out_of_order, joins = a.joins + EXCLUDED.joins, \
             joins_refused = a.joins_refused + EXCLUDED.joins_refused, \
             rate_limited = a.rate_limited + EXCLUDED.rate_limited, told_final = a.told_final + EXCLUDED.told_final, \
             pow_failed = a.pow_failed + EXCLUDED.pow_failed",
    )
    .bind(rows.iter().map(|r| r.0.get()).collect::<Vec<i64>>())
    .bind(rows.iter().map(|r| r.1.get()).collect::<Vec<i64>>())
    .bind(seconds)
    .bind(column(|c| c.admitted))
    .bind(column(|c| c.reoffered))
    .bind(column(|c| c.lapsed))
    .bind(tickets(|c| c.first_ticket))
    .bind(tickets(|c| c.last_ticket))
    .bind(column(|c| c.out_of_order))
    .bind(column(|c| c.joins))
    .bind(column(|c| c.joins_refused))
    .bind(column(|c| c.rate_limited))
    .bind(column(|c| c.told_final))
    .bind(column(|c| c.pow_failed))
    .execute(conn)
    .await?;
    Ok(())
}

type ActivityRow = (DateTime<Utc>, i64, i64, i64, Option<i64>, Option<i64>, i64, i64, i64, i64, i64, i64);

/// The batch's seconds with their counts, oldest first.
pub async fn activity(
    conn: &mut PgConnection,
    sale: SaleId,
    batch: BatchNo,
) -> Result<Vec<(DateTime<Utc>, SecondCounts)>, SalesError> {
    let rows: Vec<ActivityRow> = sqlx::query_as(
        "SELECT second, admitted, reoffered, lapsed, first_ticket, last_ticket, out_of_order, joins, joins_refused, \
                rate_limited, told_final, pow_failed \
         FROM batch_activity WHERE sale_id = $1 AND batch_no = $2 ORDER BY second",
    )
    .bind(sale.get())
    .bind(batch.get())
    .fetch_all(conn)
    .await?;
    let count = |n: i64| u64::try_from(n).unwrap_or_default();
    Ok(rows
        .into_iter()
        .map(|(second, admitted, reoffered, lapsed, first, last, out_of_order, joins, refused, limited, told, pow)| {
            (
                second,
                SecondCounts {
                    admitted: count(admitted),
                    reoffered: count(reoffered),
                    lapsed: count(lapsed),
                    first_ticket: first.map(count),
                    last_ticket: last.map(count),
                    out_of_order: count(out_of_order),
                    joins: count(joins),
                    joins_refused: count(refused),
                    rate_limited: count(limited),
                    told_final: count(told),
                    pow_failed: count(pow),
                },
            )
        })
        .collect())
}
