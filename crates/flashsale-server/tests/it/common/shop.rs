//! Shoppers' order steps for the integration tests: an open sale, admission tokens as the queue
//! signs them, orders, payment callbacks, and the ledger and PostgreSQL units to compare.

use axum::http::Method;
use chrono::Utc;
use flashsale_core::{AdmissionStep, BatchNo, Cents, Currency, Quantity, SaleId, Ticket, Units, UserId};
use flashsale_inventory::{ReserveRequest, Reserved};
use flashsale_order::payment::sign;
use flashsale_order::{Fingerprint, IdempotencyKey, NewOrder};
use flashsale_queue::AdmissionClaims;
use flashsale_server::config::dev;
use flashsale_testkit::SaleBuilder;
use serde_json::json;

use super::{Reply, TestApp, buyer_jwt, open_now};

pub const PRICE: i64 = 599_900;

/// A one-off sale, open now, with `stock` units, a per-user limit and a payment window (shorter
/// windows than the API accepts are set in the database, so deadlines pass within a test).
pub async fn open_sale(app: &TestApp, stock: u32, limit: u32, window_secs: i32) -> i64 {
    let body = SaleBuilder::one_off().stock(stock).limit(limit).body();
    let id = app.create_sale(body).await["id"].as_i64().unwrap();
    sqlx::query("UPDATE sales SET admission_ttl_secs = 1, payment_window_secs = $2 WHERE id = $1")
        .bind(id)
        .bind(window_secs)
        .execute(&app.db)
        .await
        .unwrap();
    open_now(app, id).await;
    id
}

/// A test app that caches nothing and limits no rate: these tests fire one buyer's requests by
/// the dozen on purpose (the limits have their own tests).
pub async fn uncached(db: sqlx::PgPool) -> TestApp {
    TestApp::with_tuning(db, tuning()).await
}

pub fn tuning() -> flashsale_server::state::Tuning {
    let mut tuning = super::uncached_tuning();
    tuning.limits.per_user = None;
    tuning.limits.orders_per_user = None;
    tuning.limits.per_ip = None;
    tuning
}

pub fn uid(s: &str) -> UserId {
    UserId::try_from(s.to_owned()).unwrap()
}

/// An admission token for `user` with queue ticket `ticket`, as the queue signs them.
pub fn token(app: &TestApp, sale: i64, user: &str, ticket: u64) -> String {
    app.state.tokens.sign_admission(&AdmissionClaims {
        user: uid(user),
        sale: SaleId::try_from(sale).unwrap(),
        batch: BatchNo::FIRST,
        ticket: Ticket(ticket),
        step: AdmissionStep(0),
        expires_at_ms: Utc::now().timestamp_millis() + 60_000,
    })
}

pub async fn order(app: &TestApp, sale: i64, user: &str, key: &str, token: &str, quantity: i64) -> Reply {
    let auth = format!("Bearer {}", buyer_jwt(user, 600));
    let headers = [("authorization", auth.as_str()), ("idempotency-key", key), ("content-type", "application/json")];
    let body = json!({ "admission_token": token, "quantity": quantity }).to_string();
    app.send(Method::POST, &format!("/sales/{sale}/orders"), &headers, body).await
}

pub async fn pay_raw(app: &TestApp, body: &str, secret: &str) -> Reply {
    let signature = sign(secret.as_bytes(), body.as_bytes());
    let headers = [("x-signature", signature.as_str()), ("content-type", "application/json")];
    app.send(Method::POST, "/payments/callback", &headers, body.to_owned()).await
}

pub async fn pay(app: &TestApp, order: i64, reference: &str, amount: i64, status: &str) -> Reply {
    let body = json!({ "order_id": order, "payment_ref": reference, "amount_cents": amount, "status": status });
    pay_raw(app, &body.to_string(), dev::PAYMENT_SECRET).await
}

/// (available, reserved, sold) in Redis.
pub async fn ledger(app: &TestApp, sale: i64) -> (u32, u32, u32) {
    let l = app.state.inventory.snapshot(SaleId::try_from(sale).unwrap(), BatchNo::FIRST).await.unwrap().unwrap();
    assert!(l.balances(), "{l:?}");
    (l.available.get(), l.reserved.get(), l.sold.get())
}

/// (pending units, paid units) in PostgreSQL.
pub async fn pg_units(app: &TestApp, sale: i64) -> (i64, i64) {
    sqlx::query_as(
        "SELECT COALESCE(SUM(quantity) FILTER (WHERE status = 'pending_payment'), 0)::bigint, \
                COALESCE(SUM(quantity) FILTER (WHERE status = 'paid'), 0)::bigint FROM orders WHERE sale_id = $1",
    )
    .bind(sale)
    .fetch_one(&app.db)
    .await
    .unwrap()
}

/// Redis agrees with PostgreSQL once every settlement is applied.
pub async fn assert_redis_agrees_with_postgres(app: &TestApp, sale: i64) {
    let (available, reserved, sold) = ledger(app, sale).await;
    let (pending, paid) = pg_units(app, sale).await;
    assert_eq!((i64::from(reserved), i64::from(sold)), (pending, paid), "available {available}");
}

pub async fn sweep(app: &TestApp) {
    flashsale_server::service::orders::sweep(&app.state).await.unwrap();
}

/// Joins `user` to the sale's queue and runs admission ticks until they are admitted; returns
/// their admission token (signed by the queue, bound to a real admission step).
pub async fn admitted_token(app: &TestApp, sale: i64, user: &str) -> String {
    let joined = app.buyer(Method::POST, &format!("/sales/{sale}/queue"), user, None).await;
    assert!(joined.status.is_success(), "{joined:?}");
    let mut ticket = joined.body["ticket"].as_str().map(str::to_owned);
    for _ in 0..100 {
        flashsale_server::service::queue::admit_all(&app.state, Utc::now()).await.unwrap();
        let state = app.buyer(Method::GET, &format!("/sales/{sale}/queue"), user, ticket.as_deref()).await;
        if let Some(token) = state.body["admission_token"].as_str() {
            return token.to_owned();
        }
        if let Some(t) = state.body["ticket"].as_str() {
            ticket = Some(t.to_owned());
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("{user} was never admitted to sale {sale}");
}

/// Waits up to `secs` seconds for the batch's ledger to be back in Redis (a rebuild after a
/// fence runs in the background) and returns (available, reserved, sold).
pub async fn ledger_back_within(app: &TestApp, sale: i64, secs: u64) -> (u32, u32, u32) {
    let (id, deadline) =
        (SaleId::try_from(sale).unwrap(), std::time::Instant::now() + std::time::Duration::from_secs(secs));
    while std::time::Instant::now() < deadline {
        if app.state.inventory.snapshot(id, BatchNo::FIRST).await.unwrap().is_some() {
            return ledger(app, sale).await;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("sale {sale}'s ledger was not rebuilt within {secs} s");
}

/// Units PostgreSQL counts as held (pending + paid) for the batch, by the guard's counter, and
/// checked against the orders themselves.
pub async fn committed_units(app: &TestApp, sale: i64) -> i64 {
    let counted: i64 =
        sqlx::query_scalar("SELECT committed_units FROM sale_batches WHERE sale_id = $1 AND batch_no = 1")
            .bind(sale)
            .fetch_one(&app.db)
            .await
            .unwrap();
    let (pending, paid) = pg_units(app, sale).await;
    assert_eq!(counted, pending + paid, "the guard's counter follows the orders");
    counted
}

/// An instance that reserved one unit for `user` with queue ticket `ticket` and stalled before
/// writing the order: the reservation is made in Redis now, and the order its write would carry
/// is returned, to be placed whenever the test lets the instance wake up.
pub async fn stalled_order(app: &TestApp, sale: i64, user: &str, ticket: u64) -> NewOrder {
    let (sale, batch) = (SaleId::try_from(sale).unwrap(), BatchNo::FIRST);
    let buyer = uid(user);
    let request = ReserveRequest {
        user: &buyer,
        units: Units::new(1),
        ticket: Ticket(ticket),
        step: AdmissionStep(0),
        window_ms: 600_000,
        claim: None,
    };
    let reserved = app.state.inventory.reserve(sale, batch, request).await.unwrap();
    let Reserved::Reserved { id, deadline_ms, epoch } = reserved else { panic!("not reserved: {reserved:?}") };
    NewOrder {
        sale_id: sale,
        batch_no: batch,
        user: buyer,
        quantity: Quantity::within(1, Units::new(1)).unwrap(),
        amount_cents: Cents(PRICE),
        currency: Currency::try_from("CNY".to_owned()).unwrap(),
        reservation_id: id,
        ticket: Ticket(ticket),
        epoch,
        idempotency_key: IdempotencyKey::try_from(format!("{user}-key").as_str()).unwrap(),
        fingerprint: Fingerprint::of(&[user.as_bytes()]),
        expires_at: chrono::DateTime::from_timestamp_millis(deadline_ms).unwrap(),
    }
}
