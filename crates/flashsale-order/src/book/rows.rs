//! Orders read back: a buyer's, a batch's (for a rebuild of its Redis state), a batch's totals
//! (for the audit against Redis), and the row mapping every query shares.

use chrono::{DateTime, Utc};
use flashsale_core::{BatchNo, Cents, Currency, ReservationId, SaleId, Ticket, Units, UserId};
use sqlx::FromRow;

use super::{BatchOrder, BatchTotals, OrderBook};
use crate::{Order, OrderError, OrderId, OrderStatus, PaymentRef};

pub(super) const ORDER_COLUMNS: &str = "id, sale_id, batch_no, user_id, status, quantity, amount_cents, currency, created_at, \
     expires_at, paid_at, payment_ref, reservation_id";

#[derive(FromRow)]
pub(super) struct OrderRow {
    id: i64,
    sale_id: i64,
    batch_no: i64,
    user_id: String,
    status: String,
    quantity: i32,
    amount_cents: i64,
    currency: String,
    created_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    paid_at: Option<DateTime<Utc>>,
    payment_ref: Option<String>,
    reservation_id: i64,
}

impl TryFrom<OrderRow> for Order {
    type Error = OrderError;
    fn try_from(row: OrderRow) -> Result<Order, OrderError> {
        let corrupt = |reason: String| OrderError::CorruptRow { id: row.id, reason };
        Ok(Order {
            id: OrderId::new(row.id),
            sale_id: SaleId::try_from(row.sale_id).map_err(|e| corrupt(e.to_string()))?,
            batch_no: BatchNo::try_from(row.batch_no).map_err(|e| corrupt(e.to_string()))?,
            status: OrderStatus::parse(&row.status).ok_or_else(|| corrupt(format!("status {}", row.status)))?,
            quantity: Units::try_from(i64::from(row.quantity)).map_err(|e| corrupt(e.to_string()))?,
            amount_cents: Cents(row.amount_cents),
            currency: Currency::try_from(row.currency).map_err(|e| corrupt(e.to_string()))?,
            created_at: row.created_at,
            expires_at: row.expires_at,
            paid_at: row.paid_at,
            payment_ref: row.payment_ref.map(PaymentRef::try_from).transpose().map_err(|e| corrupt(e.to_string()))?,
            user: UserId::try_from(row.user_id).map_err(|_| corrupt("user id".to_owned()))?,
            reservation_id: ReservationId::try_from(row.reservation_id).map_err(|e| corrupt(e.to_string()))?,
        })
    }
}

impl OrderBook {
    /// The buyer's order, if it is theirs.
    pub async fn get(&self, user: &UserId, id: OrderId) -> Result<Option<Order>, OrderError> {
        let row: Option<OrderRow> =
            sqlx::query_as(&format!("SELECT {ORDER_COLUMNS} FROM orders WHERE id = $1 AND user_id = $2"))
                .bind(id.get())
                .bind(user.as_str())
                .fetch_optional(&self.db)
                .await?;
        row.map(Order::try_from).transpose()
    }

    /// The buyer's orders, newest first, `limit` at most, older than `before` if given.
    pub async fn list(&self, user: &UserId, before: Option<OrderId>, limit: i64) -> Result<Vec<Order>, OrderError> {
        let rows: Vec<OrderRow> = sqlx::query_as(&format!(
            "SELECT {ORDER_COLUMNS} FROM orders WHERE user_id = $1 AND ($2::bigint IS NULL OR id < $2) \
             ORDER BY id DESC LIMIT $3"
        ))
        .bind(user.as_str())
        .bind(before.map(OrderId::get))
        .bind(limit)
        .fetch_all(&self.db)
        .await?;
        rows.into_iter().map(Order::try_from).collect()
    }

    /// Every order of a batch, for a rebuild of its Redis state.
    pub async fn batch_orders(
        conn: &mut sqlx::PgConnection,
        sale: SaleId,
        batch: BatchNo,
    ) -> Result<Vec<BatchOrder>, OrderError> {
        let rows: Vec<(i64, String, i32, String, DateTime<Utc>, i64)> = sqlx::query_as(
            "SELECT reservation_id, user_id, quantity, status, expires_at, ticket FROM orders \
             WHERE sale_id = $1 AND batch_no = $2 ORDER BY reservation_id",
        )
        .bind(sale.get())
        .bind(batch.get())
        .fetch_all(conn)
        .await?;
        rows.into_iter()
            .map(|(reservation, user, quantity, status, expires_at, ticket)| {
                let corrupt = |reason: &str| OrderError::CorruptRow { id: reservation, reason: reason.to_owned() };
                Ok(BatchOrder {
                    reservation_id: ReservationId::try_from(reservation).map_err(|_| corrupt("reservation id"))?,
                    user: UserId::try_from(user).map_err(|_| corrupt("user id"))?,
                    quantity: Units::try_from(i64::from(quantity)).map_err(|_| corrupt("quantity"))?,
                    status: OrderStatus::parse(&status).ok_or_else(|| corrupt("status"))?,
                    expires_at,
                    ticket: Ticket::try_from(ticket).map_err(|_| corrupt("ticket"))?,
                })
            })
            .collect()
    }

    /// The largest reservation id the batch's orders use (`None` when it has none). Redis hands
    /// ids out before their orders are written, so its own counter is never below this unless it
    /// went back to an older state.
    pub async fn last_reservation_id(&self, sale: SaleId, batch: BatchNo) -> Result<Option<ReservationId>, OrderError> {
        let last: Option<i64> =
            sqlx::query_scalar("SELECT max(reservation_id) FROM orders WHERE sale_id = $1 AND batch_no = $2")
                .bind(sale.get())
                .bind(batch.get())
                .fetch_one(&self.db)
                .await?;
        Ok(last.and_then(|id| ReservationId::try_from(id).ok()))
    }

    /// What a batch's orders hold, as Redis should see it (see [`BatchTotals`]).
    pub async fn batch_totals(&self, sale: SaleId, batch: BatchNo) -> Result<BatchTotals, OrderError> {
        let (reserved, sold): (i64, i64) = sqlx::query_as(
            "SELECT COALESCE(SUM(quantity) FILTER (WHERE status = 'pending_payment' OR redis_settle IS NOT NULL), 0)::bigint, \
                    COALESCE(SUM(quantity) FILTER (WHERE status = 'paid' AND redis_settle IS NULL), 0)::bigint \
             FROM orders WHERE sale_id = $1 AND batch_no = $2",
        )
        .bind(sale.get())
        .bind(batch.get())
        .fetch_one(&self.db)
        .await?;
        Ok(BatchTotals { reserved, sold })
    }

    /// A batch's orders by status: how many, their units and amount (the sale report's outcomes).
    pub async fn outcomes(&self, sale: SaleId, batch: BatchNo) -> Result<Vec<Outcome>, OrderError> {
        let rows: Vec<(String, i64, i64, i64)> = sqlx::query_as(
            "SELECT status, count(*), COALESCE(SUM(quantity), 0)::bigint, COALESCE(SUM(amount_cents), 0)::bigint \
             FROM orders WHERE sale_id = $1 AND batch_no = $2 GROUP BY status ORDER BY status",
        )
        .bind(sale.get())
        .bind(batch.get())
        .fetch_all(&self.db)
        .await?;
        rows.into_iter()
            .map(|(status, orders, units, cents)| {
                let parsed = OrderStatus::parse(&status)
                    .ok_or_else(|| OrderError::CorruptRow { id: 0, reason: format!("status {status}") })?;
                Ok(Outcome {
                    status: parsed,
                    orders: u64::try_from(orders).unwrap_or_default(),
                    units: u64::try_from(units).unwrap_or_default(),
                    amount_cents: Cents(cents),
                })
            })
            .collect()
    }

    /// Units paid in orders admitted by a priority code (ticket [`Ticket::FIRST_PRIORITY`] or
    /// above), in the sale or one batch of it.
    pub async fn units_paid_through_codes(&self, sale: SaleId, batch: Option<BatchNo>) -> Result<u64, OrderError> {
        let units: i64 = sqlx::query_scalar(
            "SELECT COALESCE(SUM(quantity), 0)::bigint FROM orders \
             WHERE sale_id = $1 AND ($2::bigint IS NULL OR batch_no = $2) AND status = 'paid' AND ticket >= $3",
        )
        .bind(sale.get())
        .bind(batch.map(BatchNo::get))
        .bind(Ticket::FIRST_PRIORITY.to_i64())
        .fetch_one(&self.db)
        .await?;
        Ok(u64::try_from(units).unwrap_or_default())
    }

    /// When the batch sold out: the payment that brought the units paid to `stock` (`None` while
    /// fewer are paid).
    pub async fn sold_out_at(
        &self,
        sale: SaleId,
        batch: BatchNo,
        stock: Units,
    ) -> Result<Option<DateTime<Utc>>, OrderError> {
        Ok(sqlx::query_scalar(
            "SELECT paid_at FROM (SELECT paid_at, SUM(quantity) OVER (ORDER BY paid_at, id) AS paid \
                                  FROM orders WHERE sale_id = $1 AND batch_no = $2 AND status = 'paid') p \
             WHERE paid >= $3 ORDER BY paid_at LIMIT 1",
        )
        .bind(sale.get())
        .bind(batch.get())
        .bind(stock.to_i64())
        .fetch_optional(&self.db)
        .await?
        .flatten())
    }
}

/// Orders of one status in a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub status: OrderStatus,
    pub orders: u64,
    pub units: u64,
    pub amount_cents: Cents,
}
