//! Orders through the HTTP API against real Redis and PostgreSQL: exactly once per idempotency
//! key, the races (last units, one buyer's many tabs, one token many times), payments at the
//! deadline, the crash between reservation and insert, and Redis losing a batch mid-sale.

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::common::shop::*;
use crate::common::{Reply, TestApp, buyer_jwt};
use axum::http::Method;
use chrono::Utc;
use flashsale_core::{AdmissionStep, BatchNo, SaleId, Ticket};
use flashsale_order::Placed;
use flashsale_order::payment::sign;
use flashsale_queue::AdmissionClaims;
use flashsale_server::config::dev;
use serde_json::json;

#[sqlx::test(migrator = "flashsale_server::startup::MIGRATOR")]
async fn an_admitted_buyer_orders_and_pays_through_the_queue(db: sqlx::PgPool) {
    let app = uncached(db).await;
    let id = open_sale(&app, 10, 2, 600).await;
    let joined = app.buyer(Method::POST, &format!("/sales/{id}/queue"), "alice", None).await;
    let ticket = joined.body["ticket"].as_str().unwrap().to_owned();
    for _ in 0..10 {
        flashsale_server::service::queue::admit_all(&app.state, Utc::now()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = app.buyer(Method::GET, &format!("/sales/{id}/queue"), "alice", Some(&ticket)).await;
    assert_eq!(status.body["status"], "admitted", "{status:?}");
    let admission = status.body["admission_token"].as_str().unwrap();

    let created = order(&app, id, "alice", "key-1", admission, 2).await;
    assert_eq!(created.status, 201, "{created:?}");
    let body = &created.body;
    assert_eq!((body["status"].as_str(), body["quantity"].as_u64()), (Some("pending_payment"), Some(2)));
    assert_eq!(body["amount_cents"], PRICE * 2);
    assert_eq!(body["currency"], "CNY");
    let expires_at = chrono::DateTime::parse_from_rfc3339(body["expires_at"].as_str().unwrap()).unwrap();
    let window = expires_at.with_timezone(&Utc) - Utc::now();
    assert!((590..=600).contains(&window.num_seconds()), "the payment window: {window}");
    assert!(body.get("user").is_none() && body.get("reservation_id").is_none(), "internals stay inside");
    assert_eq!(ledger(&app, id).await, (8, 2, 0));
    assert_eq!(
        app.state.queue.counters(&[(SaleId::try_from(id).unwrap(), BatchNo::FIRST)]).await.unwrap()[0].inflight,
        0
    );

    let order_id = body["id"].as_i64().unwrap();
    let read = app.buyer(Method::GET, &format!("/orders/{order_id}"), "alice", None).await;
    assert_eq!(read.body, *body);
    let list = app.buyer(Method::GET, "/orders", "alice", None).await;
    assert_eq!(list.body["orders"], json!([body]));

    let paid = pay(&app, order_id, "pay-1", PRICE * 2, "succeeded").await;
    assert_eq!(paid.status, 200, "{paid:?}");
    assert_eq!((paid.body["outcome"].as_str(), paid.body["order_status"].as_str()), (Some("paid"), Some("paid")));
    assert_eq!(ledger(&app, id).await, (8, 0, 2));
    let read = app.buyer(Method::GET, &format!("/orders/{order_id}"), "alice", None).await;
    assert_eq!((read.body["status"].as_str(), read.body["payment_ref"].as_str()), (Some("paid"), Some("pay-1")));
    let owed: i64 = sqlx::query_scalar("SELECT count(*) FROM orders WHERE redis_settle IS NOT NULL")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(owed, 0, "the settlement was applied and its note cleared");
    assert_redis_agrees_with_postgres(&app, id).await;
}

#[sqlx::test(migrator = "flashsale_server::startup::MIGRATOR")]
async fn fifty_parallel_creates_with_one_key_make_one_order(db: sqlx::PgPool) {
    let app = uncached(db).await;
    let id = open_sale(&app, 10, 2, 600).await;
    let admission = token(&app, id, "alice", 1);
    let replies = futures::future::join_all((0..50).map(|_| order(&app, id, "alice", "same-key", &admission, 1))).await;
    let created: Vec<&Reply> = replies.iter().filter(|r| r.status == 201).collect();
    let in_progress = replies.iter().filter(|r| r.status == 409 && r.body["code"] == "in_progress").count();
    assert!(!created.is_empty());
    assert_eq!(created.len() + in_progress, 50, "every answer is the order or in_progress");
    assert!(created.iter().all(|r| r.body == created[0].body), "replays are identical");
    assert_eq!(app.count("orders").await, 1);
    assert_eq!(ledger(&app, id).await, (9, 1, 0));

    // A retry after the first finished gets the same bytes, marked as a replay.
    let replay = order(&app, id, "alice", "same-key", &admission, 1).await;
    assert_eq!((replay.status.as_u16(), &replay.body), (201, &created[0].body));
    assert_eq!(replay.headers["idempotent-replayed"], "true");
    // The same key with another quantity: refused, nothing written.
    order(&app, id, "alice", "same-key", &admission, 2).await.assert_problem(422, "idempotency_key_reused");
    // Keys are per buyer: bob's "same-key" is his own.
    let bob = order(&app, id, "bob", "same-key", &token(&app, id, "bob", 2), 1).await;
    assert_eq!(bob.status, 201, "{bob:?}");
    assert_eq!(app.count("orders").await, 2);
    assert_eq!(ledger(&app, id).await, (8, 2, 0));
    // Alice's key names her order in this sale; reusing it in another sale is refused there too,
    // and the units reserved for the attempt go straight back.
    let other = open_sale(&app, 5, 2, 600).await;
    let reused = order(&app, other, "alice", "same-key", &token(&app, other, "alice", 1), 1).await;
    reused.assert_problem(422, "idempotency_key_reused");
    assert_eq!(ledger(&app, other).await, (5, 0, 0));
    // A replay after the order was paid is still the answer the creation got.
    let order_id = created[0].body["id"].as_i64().unwrap();
    assert_eq!(pay(&app, order_id, "p", PRICE, "succeeded").await.body["outcome"], "paid");
    let late_replay = order(&app, id, "alice", "same-key", &admission, 1).await;
    assert_eq!((late_replay.status.as_u16(), &late_replay.body), (201, &created[0].body));
}

#[sqlx::test(migrator = "flashsale_server::startup::MIGRATOR")]
async fn a_retry_after_the_admission_ran_out_still_gets_the_first_answer(db: sqlx::PgPool) {
    let app = uncached(db).await;
    let id = open_sale(&app, 10, 2, 600).await;
    let soon_over = |ticket| {
        app.state.tokens.sign_admission(&AdmissionClaims {
            user: uid("alice"),
            sale: SaleId::try_from(id).unwrap(),
            batch: BatchNo::FIRST,
            ticket: Ticket(ticket),
            step: AdmissionStep(0),
            expires_at_ms: Utc::now().timestamp_millis() + 1_000,
        })
    };
    let admission = soon_over(1);
    let first = order(&app, id, "alice", "late-retry", &admission, 1).await;
    assert_eq!(first.status, 201, "{first:?}");
    tokio::time::sleep(std::time::Duration::from_millis(1_200)).await;
    // The client timed out and retries after the turn ended: the order it made, not a 403.
    let retry = order(&app, id, "alice", "late-retry", &admission, 1).await;
    assert_eq!((retry.status.as_u16(), &retry.body), (201, &first.body));
    assert_eq!(retry.headers["idempotent-replayed"], "true");
    // An expired token under a key that has no answer is refused, and nothing is reserved.
    order(&app, id, "alice", "fresh-key", &admission, 1).await.assert_problem(403, "token_invalid");
    // Nor does another request under the same key pass for the first (another quantity).
    order(&app, id, "alice", "late-retry", &admission, 2).await.assert_problem(403, "token_invalid");
    assert_eq!(app.count("orders").await, 1);
    assert_eq!(ledger(&app, id).await, (9, 1, 0));
}

#[sqlx::test(migrator = "flashsale_server::startup::MIGRATOR")]
async fn three_hundred_buyers_race_for_twenty_units_over_http(db: sqlx::PgPool) {
    let app = uncached(db).await;
    let id = open_sale(&app, 20, 1, 600).await;
    let buyers: Vec<(String, String)> =
        (0..300).map(|i| (format!("buyer-{i}"), token(&app, id, &format!("buyer-{i}"), i + 1))).collect();
    let replies = futures::future::join_all(buyers.iter().map(|(user, t)| order(&app, id, user, "k", t, 1))).await;
    let created = replies.iter().filter(|r| r.status == 201).count();
    let sold_out = replies.iter().filter(|r| r.status == 409 && r.body["code"] == "sold_out").count();
    assert_eq!((created, sold_out), (20, 280));
    assert_eq!(ledger(&app, id).await, (0, 20, 0));
    assert_eq!(pg_units(&app, id).await, (20, 0));
    // The refusals were stored too: a retry gets sold_out again, not a second chance at the race.
    let loser = replies.iter().position(|r| r.status == 409).unwrap();
    let again = order(&app, id, &buyers[loser].0, "k", &buyers[loser].1, 1).await;
    again.assert_problem(409, "sold_out");
    assert_eq!(again.body, replies[loser].body);
}

#[sqlx::test(migrator = "flashsale_server::startup::MIGRATOR")]
async fn one_buyer_in_twenty_tabs_gets_at_most_the_limit(db: sqlx::PgPool) {
    let app = uncached(db).await;
    let id = open_sale(&app, 100, 2, 600).await;
    let tabs: Vec<(String, String)> = (0..20).map(|i| (format!("tab-{i}"), token(&app, id, "alice", i + 1))).collect();
    let replies = futures::future::join_all(tabs.iter().map(|(key, t)| order(&app, id, "alice", key, t, 1))).await;
    let created = replies.iter().filter(|r| r.status == 201).count();
    let limited = replies.iter().filter(|r| r.status == 409 && r.body["code"] == "limit_reached").count();
    assert_eq!((created, limited), (2, 18));
    assert_eq!(pg_units(&app, id).await, (2, 0));
}

#[sqlx::test(migrator = "flashsale_server::startup::MIGRATOR")]
async fn an_admission_token_is_single_use_and_only_its_buyers(db: sqlx::PgPool) {
    let app = uncached(db).await;
    let id = open_sale(&app, 10, 2, 600).await;
    let alice = token(&app, id, "alice", 1);
    let keys: Vec<String> = (0..50).map(|i| format!("k{i}")).collect();
    let replies = futures::future::join_all(keys.iter().map(|k| order(&app, id, "alice", k, &alice, 1))).await;
    assert_eq!(replies.iter().filter(|r| r.status == 201).count(), 1);
    assert!(replies.iter().filter(|r| r.status != 201).all(|r| r.body["code"] == "token_used"));
    order(&app, id, "bob", "k", &alice, 1).await.assert_problem(403, "token_invalid");
    let mut forged = token(&app, id, "bob", 9);
    forged.pop();
    order(&app, id, "bob", "k", &forged, 1).await.assert_problem(403, "token_invalid");
    let expired = app.state.tokens.sign_admission(&AdmissionClaims {
        user: uid("bob"),
        sale: SaleId::try_from(id).unwrap(),
        batch: BatchNo::FIRST,
        ticket: Ticket(10),
        step: AdmissionStep(0),
        expires_at_ms: Utc::now().timestamp_millis() - 1,
    });
    order(&app, id, "bob", "k", &expired, 1).await.assert_problem(403, "token_invalid");
    let other_sale = open_sale(&app, 10, 2, 600).await;
    order(&app, other_sale, "alice", "k", &token(&app, id, "alice", 2), 1).await.assert_problem(403, "token_invalid");
    assert_eq!(app.count("orders").await, 1);
    assert_eq!(ledger(&app, id).await, (9, 1, 0));
}

#[sqlx::test(migrator = "flashsale_server::startup::MIGRATOR")]
async fn bad_order_requests_are_problems_and_write_nothing(db: sqlx::PgPool) {
    let app = uncached(db).await;
    let id = open_sale(&app, 10, 2, 600).await;
    let t = token(&app, id, "alice", 1);
    let auth = format!("Bearer {}", buyer_jwt("alice", 600));
    let uri = format!("/sales/{id}/orders");
    let body = json!({ "admission_token": t, "quantity": 1 }).to_string();
    let json_type = ("content-type", "application/json");
    let no_key = app.send(Method::POST, &uri, &[("authorization", &auth), json_type], body.clone()).await;
    no_key.assert_problem(400, "idempotency_key_invalid");
    for bad in ["has space", &"x".repeat(256)] {
        let headers = [("authorization", auth.as_str()), ("idempotency-key", bad), json_type];
        app.send(Method::POST, &uri, &headers, body.clone()).await.assert_problem(400, "idempotency_key_invalid");
    }
    for quantity in [0, 3, -1] {
        let reply = order(&app, id, "alice", "k", &t, quantity).await;
        reply.assert_problem(422, "validation_failed");
        assert_eq!(reply.body["errors"][0]["field"], "quantity");
    }
    let headers = [("authorization", auth.as_str()), ("idempotency-key", "k"), json_type];
    let unknown = json!({ "admission_token": t, "quantity": 1, "price_cents": 1 }).to_string();
    app.send(Method::POST, &uri, &headers, unknown).await.assert_problem(422, "validation_failed");
    app.send(Method::POST, &uri, &headers, "{not json").await.assert_problem(400, "malformed_json");
    let anonymous = [("idempotency-key", "k"), json_type];
    app.send(Method::POST, &uri, &anonymous, body.clone()).await.assert_problem(401, "unauthorized");
    order(&app, 999_999, "alice", "k", &t, 1).await.assert_problem(404, "not_found");
    assert_eq!((app.count("orders").await, app.count("idempotency_keys").await), (0, 0));
    assert!(!app.redis.keys_in_use().await.iter().any(|k| k.contains(":idem:")), "no key was claimed");
    assert_eq!(ledger(&app, id).await, (10, 0, 0));
    // The token was not spent by any of it.
    assert_eq!(order(&app, id, "alice", "k", &t, 1).await.status, 201);
}

#[sqlx::test(migrator = "flashsale_server::startup::MIGRATOR")]
async fn a_crash_between_reserve_and_insert_gives_the_units_and_the_turn_back_in_seconds(db: sqlx::PgPool) {
    let mut tuning = tuning();
    tuning.orphan_after = Duration::from_millis(300);
    let app = TestApp::with_tuning(db, tuning).await;
    let id = open_sale(&app, 5, 2, 600).await;
    app.state.failpoints.crash_after_reserve.store(true, Ordering::SeqCst);
    let t = token(&app, id, "alice", 1);
    assert_eq!(order(&app, id, "alice", "k", &t, 2).await.status, 500);
    app.state.failpoints.crash_after_reserve.store(false, Ordering::SeqCst);
    assert_eq!(app.count("orders").await, 0);
    assert_eq!(ledger(&app, id).await, (3, 2, 0), "held, with no order");
    // While the dead request's claim stands, a retry is told it is in progress.
    order(&app, id, "alice", "k", &t, 2).await.assert_problem(409, "in_progress");
    // Upkeep finds no order for the reservation after the orphan age: units, ticket and claim
    // come back (not after the payment window).
    flashsale_server::jobs::upkeep::pass(&app.state, Utc::now()).await.unwrap();
    assert_eq!(ledger(&app, id).await, (3, 2, 0), "too young to be an orphan");
    tokio::time::sleep(Duration::from_millis(400)).await;
    flashsale_server::jobs::upkeep::pass(&app.state, Utc::now()).await.unwrap();
    assert_eq!(ledger(&app, id).await, (5, 0, 0));
    let retried = order(&app, id, "alice", "k", &t, 2).await;
    assert_eq!(retried.status, 201, "{retried:?}");
    // A confirmed order is never taken for an orphan.
    tokio::time::sleep(Duration::from_millis(400)).await;
    flashsale_server::jobs::upkeep::pass(&app.state, Utc::now()).await.unwrap();
    assert_eq!(ledger(&app, id).await, (3, 2, 0));
    assert_redis_agrees_with_postgres(&app, id).await;
}

#[sqlx::test(migrator = "flashsale_server::startup::MIGRATOR")]
async fn an_order_arriving_after_its_reservation_was_released_is_refused(db: sqlx::PgPool) {
    let mut tuning = tuning();
    tuning.orphan_after = Duration::from_millis(100);
    let app = TestApp::with_tuning(db, tuning).await;
    let id = open_sale(&app, 1, 1, 600).await;
    // A stalled instance reserved the last unit and has not written its order yet.
    let late = stalled_order(&app, id, "slow", 7).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    flashsale_server::jobs::upkeep::pass(&app.state, Utc::now()).await.unwrap();
    assert_eq!(ledger(&app, id).await, (1, 0, 0), "released as an orphan");
    assert_eq!(order(&app, id, "quick", "k", &token(&app, id, "quick", 8), 1).await.status, 201);
    // The stalled instance wakes up and writes its order: refused, the unit is quick's.
    assert_eq!(app.state.orders.place(late).await.unwrap(), Placed::Orphaned);
    assert_eq!(pg_units(&app, id).await, (1, 0));
}

#[sqlx::test(migrator = "flashsale_server::startup::MIGRATOR")]
async fn a_write_that_fails_gives_the_reservation_and_the_token_back(db: sqlx::PgPool) {
    let app = uncached(db).await;
    let id = open_sale(&app, 5, 2, 600).await;
    // The orders table refuses this buyer's rows (as a failing database would).
    sqlx::query("ALTER TABLE orders ADD CONSTRAINT no_mallory CHECK (user_id <> 'mallory')")
        .execute(&app.db)
        .await
        .unwrap();
    let t = token(&app, id, "mallory", 1);
    assert_eq!(order(&app, id, "mallory", "k", &t, 1).await.status, 500);
    assert_eq!(ledger(&app, id).await, (5, 0, 0), "the units went straight back");
    assert!(!app.redis.keys_in_use().await.iter().any(|k| k.contains(":idem:")), "the key was freed for the retry");
    sqlx::query("ALTER TABLE orders DROP CONSTRAINT no_mallory").execute(&app.db).await.unwrap();
    let retry = order(&app, id, "mallory", "k", &t, 1).await;
    assert_eq!(retry.status, 201, "the same token and key work once the database does: {retry:?}");
}

#[sqlx::test(migrator = "flashsale_server::startup::MIGRATOR")]
async fn payments_racing_the_deadline_and_the_sweep_get_one_outcome_each(db: sqlx::PgPool) {
    let app = uncached(db).await;
    let id = open_sale(&app, 40, 1, 3).await;
    let mut orders = Vec::new();
    for i in 0..20u64 {
        let user = format!("buyer-{i}");
        let created = order(&app, id, &user, "k", &token(&app, id, &user, i + 1), 1).await;
        assert_eq!(created.status, 201, "{created:?}");
        orders.push(created.body);
    }
    // Sweepers on three "instances" run all along; half the buyers pay just before their order's
    // deadline, half just after.
    let stop = tokio_util::sync::CancellationToken::new();
    let sweepers = (0..3)
        .map(|_| {
            let (state, stop) = (app.state.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.is_cancelled() {
                    flashsale_server::service::orders::sweep(&state).await.unwrap();
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        })
        .collect::<Vec<_>>();
    let payments = orders.iter().enumerate().map(|(i, o)| {
        let app = &app;
        let deadline = chrono::DateTime::parse_from_rfc3339(o["expires_at"].as_str().unwrap()).unwrap();
        let epsilon = chrono::TimeDelta::milliseconds(300);
        let at = deadline.with_timezone(&Utc) + if i % 2 == 0 { -epsilon } else { epsilon };
        async move {
            let wait = (at - Utc::now()).to_std().unwrap_or_default();
            tokio::time::sleep(wait).await;
            pay(app, o["id"].as_i64().unwrap(), &format!("pay-{i}"), PRICE, "succeeded").await
        }
    });
    let receipts = futures::future::join_all(payments).await;
    stop.cancel();
    for s in sweepers {
        s.await.unwrap();
    }
    sweep(&app).await;
    for (i, receipt) in receipts.iter().enumerate() {
        assert_eq!(receipt.status, 200, "{receipt:?}");
        let expected = if i % 2 == 0 { ("paid", "paid") } else { ("refund_due", "refund_due") };
        assert_eq!(
            (receipt.body["outcome"].as_str().unwrap(), receipt.body["order_status"].as_str().unwrap()),
            expected,
            "payment {i}"
        );
    }
    // Every unit counted exactly once: 10 sold, 30 back in stock, nothing left reserved.
    assert_eq!(ledger(&app, id).await, (30, 0, 10));
    assert_eq!(pg_units(&app, id).await, (0, 10));
    let refunds: i64 =
        sqlx::query_scalar("SELECT count(*) FROM orders WHERE status = 'refund_due'").fetch_one(&app.db).await.unwrap();
    assert_eq!(refunds, 10);
}

#[sqlx::test(migrator = "flashsale_server::startup::MIGRATOR")]
async fn payment_callbacks_are_signed_idempotent_and_never_revive_an_order(db: sqlx::PgPool) {
    let app = uncached(db).await;
    let id = open_sale(&app, 10, 2, 600).await;
    let mut ids = Vec::new();
    for i in 0..4u64 {
        let user = format!("buyer-{i}");
        let created = order(&app, id, &user, "k", &token(&app, id, &user, i + 1), 1).await;
        ids.push(created.body["id"].as_i64().unwrap());
    }
    let body =
        json!({ "order_id": ids[0], "payment_ref": "p0", "amount_cents": PRICE, "status": "succeeded" }).to_string();
    // Signatures: wrong secret, none, tampered body.
    pay_raw(&app, &body, "not-the-secret").await.assert_problem(401, "unauthorized");
    app.send(Method::POST, "/payments/callback", &[("content-type", "application/json")], body.clone())
        .await
        .assert_problem(401, "unauthorized");
    let signature = sign(dev::PAYMENT_SECRET.as_bytes(), body.as_bytes());
    let tampered = body.replace(&PRICE.to_string(), "1");
    app.send(Method::POST, "/payments/callback", &[("x-signature", &signature)], tampered)
        .await
        .assert_problem(401, "unauthorized");
    assert_eq!(app.count("payments").await, 0);

    // Delivered, then replayed five times: one payment, the same answer.
    let first = pay_raw(&app, &body, dev::PAYMENT_SECRET).await;
    assert_eq!((first.status.as_u16(), first.body["outcome"].as_str()), (200, Some("paid")));
    for _ in 0..5 {
        let again = pay_raw(&app, &body, dev::PAYMENT_SECRET).await;
        assert_eq!((again.status, &again.body), (first.status, &first.body));
        assert_eq!(again.headers["idempotent-replayed"], "true");
    }
    assert_eq!(ledger(&app, id).await, (6, 3, 1));
    // Out of order: a failure notice arriving after the success changes nothing.
    let late_failure = pay(&app, ids[0], "p0-failed", PRICE, "failed").await;
    assert_eq!(
        (late_failure.body["outcome"].as_str(), late_failure.body["order_status"].as_str()),
        (Some("ignored"), Some("paid"))
    );
    // A second payment for a paid order is owed back; the order stays paid.
    let double = pay(&app, ids[0], "p0-twice", PRICE, "succeeded").await;
    assert_eq!(
        (double.body["outcome"].as_str(), double.body["order_status"].as_str()),
        (Some("refund_due"), Some("paid"))
    );
    // The same reference with other contents.
    pay(&app, ids[0], "p0", PRICE + 1, "succeeded").await.assert_problem(422, "payment_ref_reused");
    // Wrong amount: recorded, nothing changes.
    pay(&app, ids[1], "p1", PRICE - 1, "succeeded").await.assert_problem(422, "amount_mismatch");
    pay(&app, ids[1], "p1", PRICE - 1, "succeeded").await.assert_problem(422, "amount_mismatch");
    let pending = app.buyer(Method::GET, &format!("/orders/{}", ids[1]), "buyer-1", None).await;
    assert_eq!(pending.body["status"], "pending_payment");
    // Unknown order: recorded.
    pay(&app, 987_654, "p-unknown", PRICE, "succeeded").await.assert_problem(404, "not_found");
    // A failed payment gives the units back at once.
    let failed = pay(&app, ids[2], "p2", PRICE, "failed").await;
    assert_eq!(failed.body["outcome"], "payment_failed");
    assert_eq!(ledger(&app, id).await, (7, 2, 1));
    // Late: the order expired (its deadline moved into the past), then the money arrives.
    sqlx::query("UPDATE orders SET expires_at = now() - interval '1 second' WHERE id = $1")
        .bind(ids[3])
        .execute(&app.db)
        .await
        .unwrap();
    sweep(&app).await;
    assert_eq!(ledger(&app, id).await, (8, 1, 1), "the expiry released the units");
    let late = pay(&app, ids[3], "p3", PRICE, "succeeded").await;
    assert_eq!(
        (late.body["outcome"].as_str(), late.body["order_status"].as_str()),
        (Some("refund_due"), Some("refund_due"))
    );
    assert_eq!(ledger(&app, id).await, (8, 1, 1), "a late payment takes no units");
    let recorded: Vec<(String, String)> =
        sqlx::query_as("SELECT payment_ref, outcome FROM payments ORDER BY received_at")
            .fetch_all(&app.db)
            .await
            .unwrap();
    let outcomes: Vec<&str> = recorded.iter().map(|(_, o)| o.as_str()).collect();
    assert_eq!(
        outcomes,
        ["paid", "ignored", "refund_due", "amount_mismatch", "unknown_order", "payment_failed", "refund_due"]
    );
    assert_redis_agrees_with_postgres(&app, id).await;
}

#[sqlx::test(migrator = "flashsale_server::startup::MIGRATOR")]
async fn buyers_see_and_cancel_only_their_own_orders(db: sqlx::PgPool) {
    let app = uncached(db).await;
    let id = open_sale(&app, 10, 2, 600).await;
    let created = order(&app, id, "alice", "k", &token(&app, id, "alice", 1), 2).await;
    let order_id = created.body["id"].as_i64().unwrap();
    let uri = format!("/orders/{order_id}");
    app.buyer(Method::GET, &uri, "bob", None).await.assert_problem(404, "not_found");
    app.buyer(Method::POST, &format!("{uri}/cancel"), "bob", None).await.assert_problem(404, "not_found");
    app.buyer(Method::GET, "/orders/123456", "alice", None).await.assert_problem(404, "not_found");
    assert_eq!(app.buyer(Method::GET, "/orders", "bob", None).await.body["orders"], json!([]));
    assert_eq!(ledger(&app, id).await, (8, 2, 0));

    let cancelled = app.buyer(Method::POST, &format!("{uri}/cancel"), "alice", None).await;
    assert_eq!(cancelled.body["status"], "cancelled", "{cancelled:?}");
    assert_eq!(ledger(&app, id).await, (10, 0, 0), "released at once");
    let again = app.buyer(Method::POST, &format!("{uri}/cancel"), "alice", None).await;
    assert_eq!((again.status.as_u16(), &again.body["status"]), (200, &json!("cancelled")));
    let paid_anyway = pay(&app, order_id, "p", PRICE * 2, "succeeded").await;
    assert_eq!(paid_anyway.body["outcome"], "refund_due");
    assert_eq!(ledger(&app, id).await, (10, 0, 0));
    let paid = order(&app, id, "carol", "k", &token(&app, id, "carol", 2), 1).await.body["id"].as_i64().unwrap();
    pay(&app, paid, "pc", PRICE, "succeeded").await;
    app.buyer(Method::POST, &format!("/orders/{paid}/cancel"), "carol", None)
        .await
        .assert_problem(409, "invalid_transition");
}

#[sqlx::test(migrator = "flashsale_server::startup::MIGRATOR")]
async fn redis_losing_a_batch_mid_sale_is_rebuilt_from_postgres(db: sqlx::PgPool) {
    let app = uncached(db).await;
    let id = open_sale(&app, 30, 2, 600).await;
    let mut tokens = Vec::new();
    let mut ids = Vec::new();
    let mut first_answers = Vec::new();
    for i in 0..10u64 {
        let user = format!("buyer-{i}");
        let t = token(&app, id, &user, i + 1);
        let created = order(&app, id, &user, "k", &t, 2).await;
        assert_eq!(created.status, 201);
        ids.push(created.body["id"].as_i64().unwrap());
        tokens.push(t);
        first_answers.push(created.body);
    }
    for (i, order_id) in ids.iter().enumerate().take(4) {
        assert_eq!(pay(&app, *order_id, &format!("p{i}"), PRICE * 2, "succeeded").await.body["outcome"], "paid");
    }
    app.buyer(Method::POST, &format!("/orders/{}/cancel", ids[4]), "buyer-4", None).await;
    assert_eq!(ledger(&app, id).await, (12, 10, 8));
    // A reservation made now, whose order write is still on its way when Redis loses everything.
    let stale = stalled_order(&app, id, "late", 500).await;

    // Redis loses the batch (a flush of everything under this test's prefix).
    let mut conn = app.state.redis.conn().await.unwrap();
    for key in app.redis.keys_in_use().await {
        let _: () = redis::cmd("DEL").arg(&key).query_async(&mut conn).await.unwrap();
    }
    let t = token(&app, id, "newcomer", 100);
    let refused = order(&app, id, "newcomer", "k", &t, 1).await;
    refused.assert_problem(503, "rebuilding");
    assert_eq!(refused.headers["retry-after"], "1");

    // The upkeep notices and rebuilds (three instances at once: one does it).
    let passes =
        futures::future::join_all((0..3).map(|_| flashsale_server::jobs::upkeep::pass(&app.state, Utc::now()))).await;
    assert_eq!(passes.into_iter().map(|p| p.unwrap().ledgers_rebuilt).sum::<usize>(), 1);
    assert_eq!(ledger(&app, id).await, (12, 10, 8), "stock minus pending and paid");
    assert_redis_agrees_with_postgres(&app, id).await;

    // The straggler's order arrives after the rebuild: fenced, never written.
    assert_eq!(app.state.orders.place(stale).await.unwrap(), Placed::Fenced);

    // Used tokens stay used; holdings survive (buyer-5 holds 2 of 2); the newcomer's retry works.
    order(&app, id, "buyer-9", "k2", &tokens[9], 1).await.assert_problem(409, "token_used");
    // A retry of a request that succeeded before the loss (its claim went with Redis) still gets
    // its first answer.
    let retry = order(&app, id, "buyer-9", "k", &tokens[9], 2).await;
    assert_eq!((retry.status.as_u16(), &retry.body), (201, &first_answers[9]));
    order(&app, id, "buyer-5", "k2", &token(&app, id, "buyer-5", 101), 1).await.assert_problem(409, "limit_reached");
    let retried = order(&app, id, "newcomer", "k", &t, 1).await;
    assert_eq!(retried.status, 201, "{retried:?}");
    // Orders from before the loss still pay and cancel against the rebuilt state.
    assert_eq!(pay(&app, ids[5], "p5", PRICE * 2, "succeeded").await.body["outcome"], "paid");
    app.buyer(Method::POST, &format!("/orders/{}/cancel", ids[6]), "buyer-6", None).await;
    assert_eq!(ledger(&app, id).await, (13, 7, 10));
    assert_redis_agrees_with_postgres(&app, id).await;
    let sold: i64 = sqlx::query_scalar("SELECT COALESCE(SUM(quantity), 0)::bigint FROM orders WHERE status = 'paid'")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(sold, 10, "no unit sold twice");
}

#[sqlx::test(migrator = "flashsale_server::startup::MIGRATOR")]
async fn the_audit_compares_redis_with_the_orders_in_postgres(db: sqlx::PgPool) {
    let app = uncached(db).await;
    let id = open_sale(&app, 10, 2, 600).await;
    let created = order(&app, id, "alice", "k", &token(&app, id, "alice", 1), 2).await;
    pay(&app, created.body["id"].as_i64().unwrap(), "p", PRICE * 2, "succeeded").await;
    order(&app, id, "bob", "k", &token(&app, id, "bob", 2), 1).await;
    // The comparison with PostgreSQL runs on the passes whose second is a multiple of five.
    let now = Utc::now();
    let audit_at = now - chrono::TimeDelta::seconds(now.timestamp() % 5);
    let gauge = |kind: &str, value: i64| format!("inventory_pg_drift_units{{sale=\"{id}\",kind=\"{kind}\"}} {value}");
    let metrics = || async { app.send(Method::GET, "/metrics", &[], axum::body::Body::empty()).await.body };
    // Passes run as the job runs them, with the instance's metrics in scope.
    let pass = || app.state.metrics.scope(flashsale_server::jobs::upkeep::pass(&app.state, audit_at));
    pass().await.unwrap();
    let text = metrics().await;
    assert!(text.as_str().unwrap().contains(&gauge("sold", 0)), "{text}");
    assert!(text.as_str().unwrap().contains(&gauge("reserved", 0)), "{text}");
    // Redis sells a unit no order paid for: its ledger still balances, only PostgreSQL can tell.
    let ledger = app.redis.keys.batch(SaleId::try_from(id).unwrap(), BatchNo::FIRST).ledger();
    let mut conn = app.state.redis.conn().await.unwrap();
    let _: () =
        redis::pipe().hincr(&ledger, "available", -1).hincr(&ledger, "sold", 1).query_async(&mut conn).await.unwrap();
    assert_eq!(pass().await.unwrap().unbalanced, 0, "the ledger alone balances");
    let text = metrics().await;
    assert!(text.as_str().unwrap().contains(&gauge("sold", 1)), "{text}");
}

#[sqlx::test(migrator = "flashsale_server::startup::MIGRATOR")]
async fn polling_never_costs_a_buyer_their_order(db: sqlx::PgPool) {
    let mut tuning = tuning();
    tuning.limits.per_user = std::num::NonZeroU32::new(2);
    tuning.limits.orders_per_user = std::num::NonZeroU32::new(1);
    let app = TestApp::with_tuning(db, tuning).await;
    let id = open_sale(&app, 10, 2, 600).await;
    let uri = format!("/sales/{id}/queue");
    app.buyer(Method::POST, &uri, "alice", None).await;
    let mut limited = None;
    for _ in 0..10 {
        let polled = app.buyer(Method::GET, &uri, "alice", None).await;
        if polled.status == 429 {
            limited = Some(polled);
            break;
        }
    }
    limited.expect("the polls ran out of budget").assert_problem(429, "rate_limited");
    // The order and its immediate retry spend a budget of their own.
    let t = token(&app, id, "alice", 1);
    let created = order(&app, id, "alice", "k", &t, 1).await;
    assert_eq!(created.status, 201, "{created:?}");
    let retried = order(&app, id, "alice", "k", &t, 1).await;
    assert_eq!((retried.status, &retried.body), (created.status, &created.body));
}

#[sqlx::test(migrator = "flashsale_server::startup::MIGRATOR")]
async fn the_public_view_tells_all_held_from_sold_out_and_a_cdn_can_cache_it(db: sqlx::PgPool) {
    let app = uncached(db).await;
    let id = open_sale(&app, 3, 2, 600).await;
    let uri = format!("/sales/{id}");
    let open = app.get(&uri).await;
    assert_eq!((open.body["status"].as_str(), open.body["units_held"].as_u64()), (Some("open"), Some(0)));
    assert_eq!(open.headers["cache-control"], "public, max-age=1");
    let etag = open.headers["etag"].to_str().unwrap().to_owned();
    // A revalidation while nothing changed is a 304; server_time moving on does not count.
    let same = app.send(Method::GET, &uri, &[("if-none-match", &etag)], axum::body::Body::empty()).await;
    assert_eq!(same.status.as_u16(), 304);
    assert_eq!(same.headers["etag"].to_str().unwrap(), etag);

    // Every unit goes into carts: all held, with when the first hold ends.
    let alice = order(&app, id, "alice", "k", &token(&app, id, "alice", 1), 2).await;
    let bob = order(&app, id, "bob", "k", &token(&app, id, "bob", 2), 1).await;
    let held = app.get(&uri).await;
    assert_eq!(held.body["status"], "all_held", "{held:?}");
    assert_eq!((held.body["units_left"].as_u64(), held.body["units_held"].as_u64()), (Some(0), Some(3)));
    assert_eq!(held.body["next_release_at"], alice.body["expires_at"], "alice's hold ends first");
    let changed = app.send(Method::GET, &uri, &[("if-none-match", &etag)], axum::body::Body::empty()).await;
    assert_eq!(changed.status.as_u16(), 200, "a changed view is sent again");
    assert_ne!(changed.headers["etag"].to_str().unwrap(), etag);
    // The list says the same, and revalidates too (its sales repeat server_time).
    let list = app.get("/sales").await;
    assert_eq!(list.body["sales"][0]["status"], "all_held");
    let list_etag = list.headers["etag"].to_str().unwrap().to_owned();
    let again = app.send(Method::GET, "/sales", &[("if-none-match", &list_etag)], axum::body::Body::empty()).await;
    assert_eq!(again.status.as_u16(), 304);

    // A cancelled hold puts a unit back: open again.
    let bob_id = bob.body["id"].as_i64().unwrap();
    app.buyer(Method::POST, &format!("/orders/{bob_id}/cancel"), "bob", None).await;
    let reopened = app.get(&uri).await;
    assert_eq!((reopened.body["status"].as_str(), reopened.body["units_left"].as_u64()), (Some("open"), Some(1)));
    assert!(reopened.body["next_release_at"].is_null());

    // Held again, then every hold paid: sold out, nothing to come back.
    let carol = order(&app, id, "carol", "k", &token(&app, id, "carol", 3), 1).await;
    assert_eq!(app.get(&uri).await.body["status"], "all_held");
    pay(&app, alice.body["id"].as_i64().unwrap(), "pa", PRICE * 2, "succeeded").await;
    assert_eq!(app.get(&uri).await.body["status"], "all_held", "carol's unit may still come back");
    pay(&app, carol.body["id"].as_i64().unwrap(), "pc", PRICE, "succeeded").await;
    let sold = app.get(&uri).await;
    assert_eq!((sold.body["status"].as_str(), sold.body["units_held"].as_u64()), (Some("sold_out"), Some(0)));
    assert!(sold.body["next_release_at"].is_null());
}

#[sqlx::test(migrator = "flashsale_server::startup::MIGRATOR")]
async fn waiting_buyers_are_told_standby_while_every_unit_is_in_a_cart(db: sqlx::PgPool) {
    let app = uncached(db).await;
    let id = open_sale(&app, 2, 2, 600).await;
    let queue = format!("/sales/{id}/queue");
    for buyer in ["bob", "carol"] {
        assert!(app.buyer(Method::POST, &queue, buyer, None).await.status.is_success());
    }
    let poll = |buyer: &'static str| {
        let queue = queue.clone();
        let app = &app;
        async move { app.buyer(Method::GET, &queue, buyer, None).await.body }
    };
    assert_eq!(poll("bob").await["status"], "waiting");
    assert!(poll("bob").await.get("units_held").is_none(), "standby's fields only in standby");

    // Alice (admitted earlier, ticket outside the line) puts both units in her cart.
    let alice = order(&app, id, "alice", "k", &token(&app, id, "alice", 100), 2).await;
    let bob = poll("bob").await;
    assert_eq!(bob["status"], "standby", "{bob}");
    assert_eq!((bob["units_held"].as_u64(), bob["standby_place"].as_u64()), (Some(2), Some(1)));
    assert_eq!(bob["next_release_at"], alice.body["expires_at"]);
    assert!(bob["eta_secs"].is_null() && bob["poll_after_ms"].as_u64().is_some());
    assert_eq!(poll("carol").await["standby_place"], 2);

    // Her cancellation puts the units back: the line waits for admission again.
    let alice_id = alice.body["id"].as_i64().unwrap();
    app.buyer(Method::POST, &format!("/orders/{alice_id}/cancel"), "alice", None).await;
    assert_eq!(poll("bob").await["status"], "waiting");

    // Held and paid: sold out, for everyone in line.
    let dave = order(&app, id, "dave", "k", &token(&app, id, "dave", 101), 2).await;
    assert_eq!(poll("carol").await["status"], "standby");
    pay(&app, dave.body["id"].as_i64().unwrap(), "pd", PRICE * 2, "succeeded").await;
    assert_eq!(poll("bob").await["status"], "sold_out");
    assert_eq!(poll("carol").await["status"], "sold_out");
}

/// The whole life of the reach (see `admit.lua`): a batch of two units sold into carts with eight
/// buyers in line, then paid, lapsed, passed, cancelled and raised, each waiting buyer's status
/// read after every step. Oversubscription is 1.0 and the margin 0 here, so the reach is exactly
/// the units that may come back.
#[sqlx::test(migrator = "flashsale_server::startup::MIGRATOR")]
async fn buyers_out_of_reach_are_told_sold_out_at_once_and_the_line_reopens_when_units_are_free(db: sqlx::PgPool) {
    let app = uncached(db).await;
    let id = open_sale(&app, 2, 1, 600).await;
    let queue = format!("/sales/{id}/queue");
    let tick = || async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        flashsale_server::service::queue::admit_all(&app.state, Utc::now()).await.unwrap();
    };
    let status = |buyer: &'static str| {
        let (app, queue) = (&app, &queue);
        async move {
            let body = app.buyer(Method::GET, queue, buyer, None).await.body;
            (body["status"].as_str().unwrap_or_default().to_owned(), body)
        }
    };
    let statuses = |buyers: &'static [&'static str]| async move {
        let mut out = Vec::new();
        for b in buyers {
            out.push(status(b).await.0);
        }
        out
    };
    let stats = || async {
        app.admin(Method::GET, &format!("/admin/sales/{id}"), None).await.body["current_batch"]["stats"].clone()
    };
    const LINE: &[&str] = &["c", "d", "e", "f", "g", "h"];

    // a and b (places 1, 2) put both units in their carts; c..h (places 3..8) wait.
    let a = order(&app, id, "a", "ka", &admitted_token(&app, id, "a").await, 1).await;
    let b = order(&app, id, "b", "kb", &admitted_token(&app, id, "b").await, 1).await;
    for buyer in LINE {
        assert!(app.buyer(Method::POST, &queue, buyer, None).await.status.is_success());
    }
    tick().await;
    // Two units may come back: c and d could get them; e..h never can, and are told so now.
    assert_eq!(statuses(LINE).await, ["standby", "standby", "sold_out", "sold_out", "sold_out", "sold_out"]);
    let (_, e) = status("e").await;
    assert!(e["poll_after_ms"].is_null() && e["position"] == 5, "{e}");
    assert_eq!((stats().await["reach"].as_u64(), stats().await["reopens"].as_u64()), (Some(4), Some(0)));
    app.buyer(Method::POST, &queue, "i", None).await.assert_problem(409, "sold_out");

    // a pays: one unit may come back, for c only.
    pay(&app, a.body["id"].as_i64().unwrap(), "pa", PRICE, "succeeded").await;
    tick().await;
    assert_eq!(statuses(&["c", "d"]).await, ["standby", "sold_out"]);

    // b's order lapses: the unit goes to c, the next in line; d stays out of reach.
    sqlx::query("UPDATE orders SET expires_at = now() - interval '1 second' WHERE id = $1")
        .bind(b.body["id"].as_i64().unwrap())
        .execute(&app.db)
        .await
        .unwrap();
    sweep(&app).await;
    tick().await;
    assert_eq!(statuses(&["c", "d"]).await, ["admitted", "sold_out"]);

    // c lets the turn pass: everyone within reach has had a turn, and a unit is free. The line
    // reopens rather than strand it: d, told sold_out, is next and gets the turn.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    tick().await;
    assert_eq!(statuses(&["c", "d", "e"]).await, ["expired", "admitted", "waiting"]);
    assert_eq!((stats().await["reach"].as_u64(), stats().await["reopens"].as_u64()), (None, Some(1)));

    // d takes the unit; then cancels: it goes to e.
    let d = order(&app, id, "d", "kd", &admitted_token(&app, id, "d").await, 1).await;
    tick().await;
    assert_eq!(statuses(&["e", "f"]).await, ["standby", "sold_out"]);
    app.buyer(Method::POST, &format!("/orders/{}/cancel", d.body["id"]), "d", None).await;
    tick().await;
    assert_eq!(statuses(&["e", "f"]).await, ["admitted", "sold_out"]);
    let e = order(&app, id, "e", "ke", &admitted_token(&app, id, "e").await, 1).await;
    pay(&app, e.body["id"].as_i64().unwrap(), "pe", PRICE, "succeeded").await;
    tick().await;
    assert_eq!(statuses(LINE).await[2..], ["sold_out", "sold_out", "sold_out", "sold_out"]);
    assert_eq!(ledger(&app, id).await, (0, 0, 2));

    // Operations add a unit after the sell-out: the line is open again, from f on. (The 1 s turn
    // this test set is below what the API accepts; an edit validates the whole sale.)
    sqlx::query("UPDATE sales SET admission_ttl_secs = 5 WHERE id = $1").bind(id).execute(&app.db).await.unwrap();
    let version = format!("\"{}\"", app.admin(Method::GET, &format!("/admin/sales/{id}"), None).await.body["version"]);
    let raised = app
        .admin_with(Method::PATCH, &format!("/admin/sales/{id}"), Some(json!({"stock": 3})), &[("if-match", &version)])
        .await;
    assert_eq!(raised.status, 200, "{raised:?}");
    tick().await;
    assert_eq!(statuses(&["f", "g"]).await, ["admitted", "waiting"]);
    assert_redis_agrees_with_postgres(&app, id).await;
}
