//! What happens after an order is written: unpaid orders expire, the Redis settlements owed for
//! expired, cancelled and paid orders (the outbox), and reservations Redis made whose order never
//! came (orphans).

use std::time::Duration;

use flashsale_core::{BatchNo, ReservationId, SaleId};

use super::rows::{ORDER_COLUMNS, OrderRow};
use super::writer::lock_epochs;
use super::{OrderBook, PendingSettlement, RedisSettle, settlement_of};
use crate::{Order, OrderError, OrderId};

impl OrderBook {
    /// Moves up to `limit` pending orders past their deadline to `expired` and returns the
    /// releases Redis owes them. Safe on every instance at once: rows another instance is
    /// expiring (or a payment is deciding) are skipped, not waited for.
    pub async fn expire_due(&self, limit: i64) -> Result<Vec<PendingSettlement>, OrderError> {
        let rows: Vec<OrderRow> = sqlx::query_as(&format!(
            "WITH due AS (SELECT id FROM orders WHERE status = 'pending_payment' AND expires_at < clock_timestamp() \
                          ORDER BY expires_at LIMIT $1 FOR UPDATE SKIP LOCKED) \
             UPDATE orders o SET status = 'expired', updated_at = now(), redis_settle = 'release' \
             FROM due WHERE o.id = due.id RETURNING {}",
            ORDER_COLUMNS.split(", ").map(|c| format!("o.{c}")).collect::<Vec<_>>().join(", ")
        ))
        .bind(limit)
        .fetch_all(&self.db)
        .await?;
        rows.into_iter().map(|row| Order::try_from(row).map(|o| settlement_of(&o, RedisSettle::Release))).collect()
    }

    /// Settlements Redis still owes, changed more than `older_than` ago (younger ones are being
    /// applied by the request that made them).
    pub async fn unsettled(&self, older_than: Duration, limit: i64) -> Result<Vec<PendingSettlement>, OrderError> {
        let rows: Vec<(i64, i64, i64, i64, String)> = sqlx::query_as(
            "SELECT id, sale_id, batch_no, reservation_id, redis_settle FROM orders \
             WHERE redis_settle IS NOT NULL AND updated_at < now() - make_interval(secs => $1) \
             ORDER BY updated_at LIMIT $2",
        )
        .bind(older_than.as_secs_f64())
        .bind(limit)
        .fetch_all(&self.db)
        .await?;
        rows.into_iter()
            .map(|(id, sale, batch, reservation, how)| {
                let corrupt = |reason: &str| OrderError::CorruptRow { id, reason: reason.to_owned() };
                Ok(PendingSettlement {
                    order: OrderId::new(id),
                    sale: SaleId::try_from(sale).map_err(|_| corrupt("sale id"))?,
                    batch: BatchNo::try_from(batch).map_err(|_| corrupt("batch no"))?,
                    reservation_id: ReservationId::try_from(reservation).map_err(|_| corrupt("reservation id"))?,
                    how: RedisSettle::parse(&how).ok_or_else(|| corrupt("redis_settle"))?,
                })
            })
            .collect()
    }

    /// Records that Redis applied these orders' settlements.
    pub async fn mark_settled(&self, orders: &[OrderId]) -> Result<(), OrderError> {
        if orders.is_empty() {
            return Ok(());
        }
        let ids: Vec<i64> = orders.iter().map(|o| o.get()).collect();
        sqlx::query("UPDATE orders SET redis_settle = NULL WHERE id = ANY($1)").bind(&ids).execute(&self.db).await?;
        Ok(())
    }

    /// Decides the fate of reservations Redis made a while ago without knowing of an order:
    /// those with an order are confirmed; the others are recorded as released (so a late order
    /// for one is refused, [`Placed::Orphaned`](super::Placed::Orphaned)) and returned, for Redis to give back. Under the
    /// batch row's lock, which the order writer holds while it inserts: an order is either
    /// committed before (and found here) or refused after.
    pub async fn release_orphans(
        &self,
        sale: SaleId,
        batch: BatchNo,
        ids: &[ReservationId],
    ) -> Result<Vec<ReservationId>, OrderError> {
        let mut tx = self.db.begin().await?;
        lock_epochs(&mut tx, std::iter::once((sale, batch))).await?;
        let wanted: Vec<i64> = ids.iter().map(|id| id.to_i64()).collect();
        let written: Vec<i64> = sqlx::query_scalar(
            "SELECT reservation_id FROM orders WHERE sale_id = $1 AND batch_no = $2 AND reservation_id = ANY($3)",
        )
        .bind(sale.get())
        .bind(batch.get())
        .bind(&wanted)
        .fetch_all(&mut *tx)
        .await?;
        let written: std::collections::HashSet<i64> = written.into_iter().collect();
        let orphans: Vec<i64> = wanted.into_iter().filter(|id| !written.contains(id)).collect();
        sqlx::query(
            "INSERT INTO released_reservations (sale_id, batch_no, reservation_id)              SELECT $1, $2, UNNEST($3::bigint[]) ON CONFLICT DO NOTHING",
        )
        .bind(sale.get())
        .bind(batch.get())
        .bind(&orphans)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(orphans.into_iter().filter_map(|id| ReservationId::try_from(id).ok()).collect())
    }

    /// Whether an order of the batch still holds units unpaid, or has a settlement Redis owes:
    /// the batch's Redis state is still needed.
    pub async fn has_unsettled_orders(&self, sale: SaleId, batch: BatchNo) -> Result<bool, OrderError> {
        Ok(sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM orders WHERE sale_id = $1 AND batch_no = $2 \
                            AND (status = 'pending_payment' OR redis_settle IS NOT NULL))",
        )
        .bind(sale.get())
        .bind(batch.get())
        .fetch_one(&self.db)
        .await?)
    }
}
