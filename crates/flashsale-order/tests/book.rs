//! The order book against real PostgreSQL (a database per test, the workspace's migrations) and
//! Redis (a key space per test): exactly-once writes, the guard's refusals, the epoch fence,
//! orphans, payments in time and late, cancellation, stored refusals, and a race of writers.

use chrono::{SubsecRound, TimeDelta, Utc};
use flashsale_core::{BatchNo, Cents, Currency, Epoch, Quantity, ReservationId, SaleId, Ticket, Units, UserId};
use flashsale_order::{
    Cancelled, Claim, Fingerprint, IdempotencyKey, NewOrder, Order, OrderBook, OrderStatus, PaymentApplied,
    PaymentNotice, PaymentOutcome, PaymentRef, PaymentStatus, Placed, Refusal, StoredResponse, WriterTuning,
};
use flashsale_testkit::TestRedis;
use sqlx::PgPool;

/// A one-off sale with its first batch: `stock` units, `limit` per buyer, 100 cents a unit.
async fn batch(db: &PgPool, stock: i64, limit: i64) -> SaleId {
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO sales (name, sku, price_cents, currency, stock, per_user_limit, schedule_kind, opens_at, \
                            prequeue_secs, admission_rate, admission_ttl_secs, payment_window_secs) \
         VALUES ('Phone', 'P-1', 100, 'CNY', $1, $2, 'once', now(), 0, 10, 10, 60) RETURNING id",
    )
    .bind(stock)
    .bind(limit)
    .fetch_one(db)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO sale_batches (sale_id, batch_no, opens_at, stock, prequeue_seed) \
         VALUES ($1, 1, now(), $2, decode(repeat('ab', 32), 'hex'))",
    )
    .bind(id)
    .bind(stock)
    .execute(db)
    .await
    .unwrap();
    SaleId::try_from(id).unwrap()
}

async fn book(db: &PgPool, redis: &TestRedis) -> OrderBook {
    let clock = flashsale_redis::Clock::new();
    OrderBook::new(db.clone(), redis.handle().await, clock, redis.keys.clone(), WriterTuning::default())
}

fn user(name: &str) -> UserId {
    UserId::try_from(name.to_owned()).unwrap()
}

/// Buyer `name`'s order of one unit for reservation `reservation`, to be paid within `window`.
fn order(sale: SaleId, name: &str, key: &str, reservation: u64, window: TimeDelta) -> NewOrder {
    NewOrder {
        sale_id: sale,
        batch_no: BatchNo::FIRST,
        user: user(name),
        quantity: Quantity::within(1, Units::new(1)).unwrap(),
        amount_cents: Cents(100),
        currency: Currency::try_from("CNY".to_owned()).unwrap(),
        reservation_id: ReservationId(reservation),
        ticket: Ticket(reservation),
        epoch: Epoch::FIRST,
        idempotency_key: IdempotencyKey::try_from(key).unwrap(),
        fingerprint: Fingerprint::of(&[name.as_bytes(), key.as_bytes()]),
        // PostgreSQL keeps microseconds: an order read back must equal the one written.
        expires_at: (Utc::now() + window).trunc_subsecs(6),
    }
}

fn created(placed: Placed) -> Order {
    match placed {
        Placed::Created(order) => order,
        other => panic!("expected an order, got {other:?}"),
    }
}

#[sqlx::test(migrations = "../../migrations")]
async fn an_order_is_written_once_per_key_and_read_back(db: PgPool) {
    let redis = TestRedis::new();
    let (sale, book) = (batch(&db, 5, 2).await, book(&db, &redis).await);
    let first = created(book.place(order(sale, "alice", "k1", 1, TimeDelta::minutes(1))).await.unwrap());
    assert_eq!(first.status, OrderStatus::PendingPayment);
    // The same key again, for another reservation: refused, the first order stands.
    let again = book.place(order(sale, "alice", "k1", 2, TimeDelta::minutes(1))).await.unwrap();
    assert_eq!(again, Placed::KeyReused);
    assert_eq!(book.get(&user("alice"), first.id).await.unwrap(), Some(first.clone()));
    assert_eq!(book.list(&user("alice"), None, 10).await.unwrap(), vec![first.clone()]);
    assert_eq!(book.get(&user("bob"), first.id).await.unwrap(), None, "another buyer's order is not found");
    let totals = book.batch_totals(sale, BatchNo::FIRST).await.unwrap();
    assert_eq!((totals.reserved, totals.sold), (1, 0));
    assert_eq!(book.last_reservation_id(sale, BatchNo::FIRST).await.unwrap(), Some(ReservationId(1)));
}

#[sqlx::test(migrations = "../../migrations")]
async fn the_record_refuses_what_the_stock_and_the_limit_do_not_allow(db: PgPool) {
    let redis = TestRedis::new();
    let (sale, book) = (batch(&db, 2, 1).await, book(&db, &redis).await);
    created(book.place(order(sale, "alice", "k", 1, TimeDelta::minutes(1))).await.unwrap());
    let second = book.place(order(sale, "alice", "other-key", 2, TimeDelta::minutes(1))).await.unwrap();
    assert_eq!(second, Placed::Refused(Refusal::LimitReached));
    created(book.place(order(sale, "bob", "k", 3, TimeDelta::minutes(1))).await.unwrap());
    let third = book.place(order(sale, "carol", "k", 4, TimeDelta::minutes(1))).await.unwrap();
    assert_eq!(third, Placed::Refused(Refusal::SoldOut));
}

#[sqlx::test(migrations = "../../migrations")]
async fn an_order_of_a_lost_state_is_fenced_and_one_of_a_released_reservation_orphaned(db: PgPool) {
    let redis = TestRedis::new();
    let (sale, book) = (batch(&db, 5, 5).await, book(&db, &redis).await);
    assert_eq!(book.release_orphans(sale, BatchNo::FIRST, &[ReservationId(7)]).await.unwrap(), vec![ReservationId(7)]);
    assert_eq!(book.place(order(sale, "alice", "k", 7, TimeDelta::minutes(1))).await.unwrap(), Placed::Orphaned);
    // A rebuild moved the epoch on: a reservation of the state before is never an order.
    sqlx::query("UPDATE sale_batches SET epoch = nextval('batch_epochs') WHERE sale_id = $1")
        .bind(sale.get())
        .execute(&db)
        .await
        .unwrap();
    assert_eq!(book.place(order(sale, "bob", "k", 8, TimeDelta::minutes(1))).await.unwrap(), Placed::Fenced);
    assert_eq!(book.batch_totals(sale, BatchNo::FIRST).await.unwrap().reserved, 0);
}

fn notice(order: &Order, reference: &str) -> (PaymentNotice, Fingerprint) {
    let notice = PaymentNotice {
        order_id: order.id.get(),
        payment_ref: PaymentRef::try_from(reference.to_owned()).unwrap(),
        amount_cents: order.amount_cents,
        status: PaymentStatus::Succeeded,
    };
    (notice, Fingerprint::of(&[reference.as_bytes()]))
}

#[sqlx::test(migrations = "../../migrations")]
async fn a_payment_in_time_pays_a_late_one_is_owed_back_and_a_cancel_releases(db: PgPool) {
    let redis = TestRedis::new();
    let (sale, book) = (batch(&db, 5, 5).await, book(&db, &redis).await);
    let in_time = created(book.place(order(sale, "alice", "k", 1, TimeDelta::minutes(1))).await.unwrap());
    let (paid, fingerprint) = notice(&in_time, "pay-1");
    let PaymentApplied::Applied { receipt, .. } = book.apply_payment(&paid, &fingerprint).await.unwrap() else {
        panic!("the first notice applies")
    };
    assert_eq!(receipt.outcome, PaymentOutcome::Paid);
    assert!(matches!(book.apply_payment(&paid, &fingerprint).await.unwrap(), PaymentApplied::Replayed(_)));

    let late = created(book.place(order(sale, "bob", "k", 2, TimeDelta::milliseconds(-1))).await.unwrap());
    let (owed, fingerprint) = notice(&late, "pay-2");
    let PaymentApplied::Applied { receipt, settle, .. } = book.apply_payment(&owed, &fingerprint).await.unwrap() else {
        panic!("the first notice applies")
    };
    assert_eq!(receipt.outcome, PaymentOutcome::RefundDue);
    assert!(settle.is_some(), "the late order's units go back to Redis");

    let cancelled = created(book.place(order(sale, "carol", "k", 3, TimeDelta::minutes(1))).await.unwrap());
    assert!(matches!(book.cancel(&user("carol"), cancelled.id).await.unwrap(), Cancelled::Now(..)));
    assert!(
        matches!(book.cancel(&user("carol"), cancelled.id).await.unwrap(), Cancelled::Before(..)),
        "a retried cancel is answered, not applied twice"
    );
    assert!(book.cancel(&user("alice"), in_time.id).await.is_err(), "a paid order cannot be cancelled");
}

#[sqlx::test(migrations = "../../migrations")]
async fn a_refusal_is_stored_and_replayed_to_the_retry(db: PgPool) {
    let redis = TestRedis::new();
    let book = book(&db, &redis).await;
    let key = IdempotencyKey::try_from("k").unwrap();
    let fingerprint = Fingerprint::of(&[b"alice", b"k"]);
    let refusal = StoredResponse { status: 409, body: r#"{"code":"sold_out"}"#.to_owned() };
    book.record_outcome(&user("alice"), &key, fingerprint.clone(), refusal.clone()).await.unwrap();
    assert_eq!(book.stored_answer(&user("alice"), &key, &fingerprint).await.unwrap(), Some(Claim::Replay(refusal)));
    let other = Fingerprint::of(&[b"another request"]);
    assert_eq!(book.stored_answer(&user("alice"), &key, &other).await.unwrap(), Some(Claim::KeyReused));
}

#[sqlx::test(migrations = "../../migrations")]
async fn fifty_writers_at_once_sell_exactly_the_stock(db: PgPool) {
    let redis = TestRedis::new();
    let (sale, book) = (batch(&db, 20, 1).await, std::sync::Arc::new(book(&db, &redis).await));
    let writers: Vec<_> = (0..50u64)
        .map(|i| {
            let book = book.clone();
            let buyer = format!("buyer-{i}");
            tokio::spawn(async move { book.place(order(sale, &buyer, "k", i + 1, TimeDelta::minutes(1))).await })
        })
        .collect();
    let mut answers = Vec::new();
    for writer in writers {
        answers.push(writer.await.unwrap().unwrap());
    }
    let made = answers.iter().filter(|a| matches!(a, Placed::Created(_))).count();
    let sold_out = answers.iter().filter(|a| **a == Placed::Refused(Refusal::SoldOut)).count();
    assert_eq!((made, sold_out), (20, 30));
    assert_eq!(book.batch_totals(sale, BatchNo::FIRST).await.unwrap().reserved, 20);
}
