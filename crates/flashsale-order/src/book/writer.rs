//! The order writers: group commit ([`crate::batcher`]) of orders, each checked against the
//! batch's epoch (the fence) and the orphans released under the batch rows' lock, and, apart, of
//! the refusals stored for replay.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use flashsale_core::{BatchNo, SaleId, UserId};
use sqlx::{PgPool, Postgres, Transaction};

use super::{OrderBook, Placed, Refusal, StoredResponse, WriterTuning};
use crate::batcher::Batcher;
use crate::{Fingerprint, IdempotencyKey, NewOrder, Order, OrderError, OrderId, OrderStatus};

/// A refusal to store under the buyer's key, so a retry gets it again.
pub(super) struct StoredOutcome {
    user: UserId,
    key: IdempotencyKey,
    fingerprint: Fingerprint,
    response: StoredResponse,
}

/// Starts the two writers: orders on `tuning.workers` tasks, stored refusals (rare, small) on one.
pub(super) fn spawn(db: &PgPool, tuning: WriterTuning) -> (Batcher<NewOrder, Placed>, Batcher<StoredOutcome, ()>) {
    let orders_db = db.clone();
    let orders = Batcher::spawn("orders", tuning.workers, tuning.max_batch, move |orders: Vec<NewOrder>| {
        let db = orders_db.clone();
        async move { write_orders_isolated(&db, orders).await }
    });
    let outcomes_db = db.clone();
    let outcomes = Batcher::spawn("outcomes", 1, tuning.max_batch, move |outcomes: Vec<StoredOutcome>| {
        let db = outcomes_db.clone();
        async move {
            let n = outcomes.len();
            match store_outcomes(&db, &outcomes).await {
                Ok(()) => (0..n).map(|_| Ok(())).collect(),
                Err(e) => (0..n).map(|_| Err(e.clone())).collect(),
            }
        }
    });
    (orders, outcomes)
}

impl OrderBook {
    /// Writes the order for a reservation, durably (group commit).
    pub async fn place(&self, order: NewOrder) -> Result<Placed, OrderError> {
        self.orders.submit(order).await
    }

    /// Stores the answer of a claimed request that made no order (sold out, limit reached, ...).
    pub async fn record_outcome(
        &self,
        user: &UserId,
        key: &IdempotencyKey,
        fingerprint: Fingerprint,
        response: StoredResponse,
    ) -> Result<(), OrderError> {
        self.outcomes.submit(StoredOutcome { user: user.clone(), key: key.clone(), fingerprint, response }).await
    }
}

/// Writes a batch of orders in one transaction; if it fails, writes each alone, so that one bad
/// order (a constraint it breaks) fails only its own request. An order the database guard refuses
/// (stock, per-user limit, a reservation id used twice) is answered [`Placed::Refused`].
async fn write_orders_isolated(db: &PgPool, orders: Vec<NewOrder>) -> Vec<Result<Placed, OrderError>> {
    let alone = |result: Result<Vec<Placed>, OrderError>| match result {
        Ok(mut r) => Ok(r.remove(0)),
        Err(e) => match Refusal::of(&e) {
            Some(refusal) => Ok(Placed::Refused(refusal)),
            None => Err(e),
        },
    };
    match write_orders(db, &orders).await {
        Ok(results) => results.into_iter().map(Ok).collect(),
        Err(e) if orders.len() == 1 => vec![alone(Err(e))],
        Err(_) => {
            let mut results = Vec::with_capacity(orders.len());
            for order in &orders {
                results.push(alone(write_orders(db, std::slice::from_ref(order)).await));
            }
            results
        }
    }
}

/// One transaction of orders (see [`OrderBook::place`]).
async fn write_orders(db: &PgPool, orders: &[NewOrder]) -> Result<Vec<Placed>, OrderError> {
    let mut tx = db.begin().await?;
    let current = lock_epochs(&mut tx, orders.iter().map(|o| (o.sale_id, o.batch_no))).await?;
    let released = released_among(&mut tx, orders.iter()).await?;
    // Why an order cannot be written, if it cannot.
    let refused = |o: &NewOrder| {
        if current.get(&(o.sale_id.get(), o.batch_no.get())).is_none_or(|e| o.epoch.to_i64() < *e) {
            Some(Placed::Fenced)
        } else if released.contains(&(o.sale_id.get(), o.batch_no.get(), o.reservation_id.to_i64())) {
            Some(Placed::Orphaned)
        } else {
            None
        }
    };
    let mut placed: Vec<Option<Placed>> = orders.iter().map(refused).collect();
    let valid: Vec<&NewOrder> = orders.iter().zip(&placed).filter(|(_, p)| p.is_none()).map(|(o, _)| o).collect();
    let created = insert_orders(&mut tx, valid.iter().copied()).await?;
    for (o, answer) in orders.iter().zip(placed.iter_mut()).filter(|(_, p)| p.is_none()) {
        let Some((id, created_at)) = created.get(&(o.sale_id.get(), o.batch_no.get(), o.reservation_id.to_i64()))
        else {
            // Not inserted: the buyer's key already names another order.
            *answer = Some(Placed::KeyReused);
            continue;
        };
        *answer = Some(Placed::Created(Order {
            id: OrderId::new(*id),
            sale_id: o.sale_id,
            batch_no: o.batch_no,
            status: OrderStatus::PendingPayment,
            quantity: o.quantity.units(),
            amount_cents: o.amount_cents,
            currency: o.currency.clone(),
            created_at: *created_at,
            expires_at: o.expires_at,
            paid_at: None,
            payment_ref: None,
            user: o.user.clone(),
            reservation_id: o.reservation_id,
        }));
    }
    tx.commit().await?;
    Ok(placed.into_iter().map(|p| p.expect("every order answered")).collect())
}

/// One statement storing refusals (a key already stored keeps its first answer).
async fn store_outcomes(db: &PgPool, outcomes: &[StoredOutcome]) -> Result<(), OrderError> {
    sqlx::query(
        "INSERT INTO idempotency_keys (user_id, key, fingerprint, status_code, response) \
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::bytea[], $4::int2[], $5::text[]) ON CONFLICT DO NOTHING",
    )
    .bind(outcomes.iter().map(|r| r.user.as_str()).collect::<Vec<_>>())
    .bind(outcomes.iter().map(|r| r.key.as_str()).collect::<Vec<_>>())
    .bind(outcomes.iter().map(|r| &r.fingerprint.0[..]).collect::<Vec<_>>())
    .bind(outcomes.iter().map(|r| i16::try_from(r.response.status).unwrap_or(500)).collect::<Vec<_>>())
    .bind(outcomes.iter().map(|r| r.response.body.as_str()).collect::<Vec<_>>())
    .execute(db)
    .await?;
    Ok(())
}

/// Locks the batches' rows (a rebuild's epoch bump waits for this transaction; the guard's
/// trigger updates them, so the lock is taken at that strength now rather than upgraded later,
/// which two writers could deadlock on) and returns their current epochs.
pub(super) async fn lock_epochs(
    tx: &mut Transaction<'_, Postgres>,
    batches: impl Iterator<Item = (SaleId, BatchNo)>,
) -> Result<HashMap<(i64, i64), i64>, OrderError> {
    let mut unique: Vec<(i64, i64)> = batches.map(|(s, b)| (s.get(), b.get())).collect();
    unique.sort_unstable();
    unique.dedup();
    let rows: Vec<(i64, i64, i64)> = sqlx::query_as(
        "SELECT sale_id, batch_no, epoch FROM sale_batches \
         WHERE (sale_id, batch_no) IN (SELECT * FROM UNNEST($1::bigint[], $2::bigint[])) \
         ORDER BY sale_id, batch_no FOR NO KEY UPDATE",
    )
    .bind(unique.iter().map(|u| u.0).collect::<Vec<_>>())
    .bind(unique.iter().map(|u| u.1).collect::<Vec<_>>())
    .fetch_all(&mut **tx)
    .await?;
    Ok(rows.into_iter().map(|(s, b, e)| ((s, b), e)).collect())
}

/// Which of these orders' reservations upkeep released as orphans (read under the batch rows'
/// lock, which the release takes too).
async fn released_among(
    tx: &mut Transaction<'_, Postgres>,
    orders: impl Iterator<Item = &NewOrder>,
) -> Result<std::collections::HashSet<(i64, i64, i64)>, OrderError> {
    let orders: Vec<&NewOrder> = orders.collect();
    let rows: Vec<(i64, i64, i64)> = sqlx::query_as(
        "SELECT sale_id, batch_no, reservation_id FROM released_reservations          WHERE (sale_id, batch_no, reservation_id) IN (SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::bigint[]))",
    )
    .bind(orders.iter().map(|o| o.sale_id.get()).collect::<Vec<_>>())
    .bind(orders.iter().map(|o| o.batch_no.get()).collect::<Vec<_>>())
    .bind(orders.iter().map(|o| o.reservation_id.to_i64()).collect::<Vec<_>>())
    .fetch_all(&mut **tx)
    .await?;
    Ok(rows.into_iter().collect())
}

/// Inserts orders; returns each one's id and creation time by (sale, batch, reservation).
async fn insert_orders(
    tx: &mut Transaction<'_, Postgres>,
    orders: impl Iterator<Item = &NewOrder>,
) -> Result<HashMap<(i64, i64, i64), (i64, DateTime<Utc>)>, OrderError> {
    let orders: Vec<&NewOrder> = orders.collect();
    if orders.is_empty() {
        return Ok(HashMap::new());
    }
    let quantity = |o: &NewOrder| i32::try_from(o.quantity.units().get()).unwrap_or(i32::MAX);
    let rows: Vec<(i64, i64, i64, i64, DateTime<Utc>)> = sqlx::query_as(
        "INSERT INTO orders (sale_id, batch_no, user_id, quantity, amount_cents, currency, reservation_id, ticket, \
                             epoch, idempotency_key, fingerprint, expires_at) \
         SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::text[], $4::int[], $5::bigint[], $6::text[], \
                              $7::bigint[], $8::bigint[], $9::bigint[], $10::text[], $11::bytea[], $12::timestamptz[]) \
         ON CONFLICT (user_id, idempotency_key) DO NOTHING \
         RETURNING id, sale_id, batch_no, reservation_id, created_at",
    )
    .bind(orders.iter().map(|o| o.sale_id.get()).collect::<Vec<_>>())
    .bind(orders.iter().map(|o| o.batch_no.get()).collect::<Vec<_>>())
    .bind(orders.iter().map(|o| o.user.as_str()).collect::<Vec<_>>())
    .bind(orders.iter().map(|o| quantity(o)).collect::<Vec<_>>())
    .bind(orders.iter().map(|o| o.amount_cents.get()).collect::<Vec<_>>())
    .bind(orders.iter().map(|o| o.currency.as_str()).collect::<Vec<_>>())
    .bind(orders.iter().map(|o| o.reservation_id.to_i64()).collect::<Vec<_>>())
    .bind(orders.iter().map(|o| o.ticket.to_i64()).collect::<Vec<_>>())
    .bind(orders.iter().map(|o| o.epoch.to_i64()).collect::<Vec<_>>())
    .bind(orders.iter().map(|o| o.idempotency_key.as_str()).collect::<Vec<_>>())
    .bind(orders.iter().map(|o| &o.fingerprint.0[..]).collect::<Vec<_>>())
    .bind(orders.iter().map(|o| o.expires_at).collect::<Vec<_>>())
    .fetch_all(&mut **tx)
    .await?;
    Ok(rows.into_iter().map(|(id, s, b, r, at)| ((s, b, r), (id, at))).collect())
}
