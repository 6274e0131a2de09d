//! Cancellation by the buyer and the payment provider's notices: each decided under the order's
//! row lock, so a payment, a cancel and the expiry never interleave.

use sqlx::FromRow;

use super::rows::{ORDER_COLUMNS, OrderRow};
use super::{Cancelled, OrderBook, PaymentApplied, RedisSettle, StoredResponse, settlement_of};
use crate::payment::{PaymentNotice, PaymentOutcome, decide, receipt};
use crate::{Fingerprint, Order, OrderError, OrderId, OrderStatus};
use flashsale_core::UserId;

impl OrderBook {
    /// Cancels the buyer's pending order. One statement, so it cannot interleave with a payment
    /// or the expiry worker (both lock the row): whichever comes first decides.
    pub async fn cancel(&self, user: &UserId, id: OrderId) -> Result<Cancelled, OrderError> {
        let row: Option<OrderRow> = sqlx::query_as(&format!(
            "UPDATE orders SET status = 'cancelled', updated_at = now(), redis_settle = 'release' \
             WHERE id = $1 AND user_id = $2 AND status = 'pending_payment' RETURNING {ORDER_COLUMNS}"
        ))
        .bind(id.get())
        .bind(user.as_str())
        .fetch_optional(&self.db)
        .await?;
        if let Some(row) = row {
            let order = Order::try_from(row)?;
            let settle = settlement_of(&order, RedisSettle::Release);
            return Ok(Cancelled::Now(order, settle));
        }
        let order = self.get(user, id).await?.ok_or(OrderError::NotFound)?;
        match order.status {
            OrderStatus::Cancelled => Ok(Cancelled::Before(order)),
            from => Err(OrderError::InvalidTransition { from, to: OrderStatus::Cancelled }),
        }
    }

    /// Applies a payment notice, exactly once per `payment_ref`. The order's row is locked and
    /// the deadline read from PostgreSQL's clock under that lock, so a payment and the expiry
    /// worker racing at the deadline give exactly one outcome.
    pub async fn apply_payment(
        &self,
        notice: &PaymentNotice,
        fingerprint: &Fingerprint,
    ) -> Result<PaymentApplied, OrderError> {
        // Two notices with the same reference at once: the second insert fails on the primary
        // key after the first committed; running again finds the stored answer.
        for _ in 0..3 {
            match self.try_apply_payment(notice, fingerprint).await {
                Err(OrderError::Database(e)) if is_unique_violation(&e) => continue,
                other => return other,
            }
        }
        Err(OrderError::CorruptRow { id: notice.order_id, reason: "payment reference keeps conflicting".to_owned() })
    }

    async fn try_apply_payment(
        &self,
        notice: &PaymentNotice,
        fingerprint: &Fingerprint,
    ) -> Result<PaymentApplied, OrderError> {
        let mut tx = self.db.begin().await?;
        let seen: Option<(Vec<u8>, i16, String)> =
            sqlx::query_as("SELECT fingerprint, status_code, response FROM payments WHERE payment_ref = $1")
                .bind(notice.payment_ref.as_str())
                .fetch_optional(&mut *tx)
                .await?;
        if let Some((stored, status, body)) = seen {
            if stored != fingerprint.0 {
                return Ok(PaymentApplied::RefReused);
            }
            let status = u16::try_from(status).unwrap_or(500);
            return Ok(PaymentApplied::Replayed(StoredResponse { status, body }));
        }
        #[derive(FromRow)]
        struct Locked {
            #[sqlx(flatten)]
            order: OrderRow,
            late: bool,
        }
        let locked: Option<Locked> = sqlx::query_as(&format!(
            "SELECT {ORDER_COLUMNS}, clock_timestamp() > expires_at AS late FROM orders WHERE id = $1 FOR UPDATE"
        ))
        .bind(notice.order_id)
        .fetch_optional(&mut *tx)
        .await?;
        let (outcome, status_after, settle) = match locked {
            None => (PaymentOutcome::UnknownOrder, None, None),
            Some(Locked { order, late }) => {
                let order = Order::try_from(order)?;
                let (outcome, next) =
                    decide(notice.status, order.status, late, notice.amount_cents == order.amount_cents);
                let settle = match (order.status, next) {
                    (_, Some(OrderStatus::Paid)) => Some(RedisSettle::Commit),
                    (OrderStatus::PendingPayment, Some(_)) => Some(RedisSettle::Release),
                    _ => None,
                };
                if let Some(next) = next {
                    sqlx::query(
                        "UPDATE orders SET status = $2, updated_at = now(), \
                         paid_at = CASE WHEN $2 = 'paid' THEN now() ELSE paid_at END, \
                         payment_ref = CASE WHEN $2 = 'paid' THEN $3 ELSE payment_ref END, \
                         redis_settle = COALESCE($4, redis_settle) WHERE id = $1",
                    )
                    .bind(order.id.get())
                    .bind(next.as_str())
                    .bind(notice.payment_ref.as_str())
                    .bind(settle.map(RedisSettle::as_str))
                    .execute(&mut *tx)
                    .await?;
                }
                let settle = settle.map(|how| settlement_of(&order, how));
                (outcome, Some(next.unwrap_or(order.status)), settle)
            }
        };
        let status: u16 = match outcome {
            PaymentOutcome::UnknownOrder => 404,
            PaymentOutcome::AmountMismatch => 422,
            _ => 200,
        };
        let receipt = receipt(notice, outcome, status_after);
        sqlx::query(
            "INSERT INTO payments (payment_ref, order_id, amount_cents, status, fingerprint, outcome, status_code, response) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(notice.payment_ref.as_str())
        .bind(notice.order_id)
        .bind(notice.amount_cents.get())
        .bind(notice.status.as_str())
        .bind(&fingerprint.0[..])
        .bind(outcome.as_str())
        .bind(i16::try_from(status).unwrap_or(500))
        .bind(serde_json::to_string(&receipt).map_err(|e| OrderError::CorruptRow { id: notice.order_id, reason: e.to_string() })?)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(PaymentApplied::Applied { status, receipt, settle })
    }
}

fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(e) if e.is_unique_violation())
}
