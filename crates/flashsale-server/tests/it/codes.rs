//! Priority codes through the HTTP API: generated once, redeemed once, admitted without queueing
//! into the same reservation (limit included), and never guessed at speed.

use crate::common::shop::{order, pay};
use crate::common::{TestApp, open_now, uncached};
use axum::http::Method;
use flashsale_testkit::SaleBuilder;
use serde_json::{Value, json};

async fn generate(app: &TestApp, id: i64, count: i64) -> Vec<String> {
    let reply =
        app.admin(Method::POST, &format!("/admin/sales/{id}/priority-codes"), Some(json!({"count": count}))).await;
    assert_eq!(reply.status, 201, "{reply:?}");
    reply.body["codes"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_owned()).collect()
}

async fn redeem(app: &TestApp, id: i64, user: &str, code: &str) -> crate::common::Reply {
    let auth = format!("Bearer {}", crate::common::buyer_jwt(user, 600));
    let headers = [("authorization", auth.as_str()), ("content-type", "application/json")];
    let body = json!({ "code": code }).to_string();
    app.send(Method::POST, &format!("/sales/{id}/queue/priority"), &headers, body).await
}

async fn sale(app: &TestApp, stock: u32, limit: u32) -> i64 {
    let body = SaleBuilder::one_off().opening_in(60).prequeue_secs(600).stock(stock).limit(limit).body();
    app.create_sale(body).await["id"].as_i64().unwrap()
}

#[sqlx::test(migrator = "flashsale_server::startup::MIGRATOR")]
async fn a_code_admits_its_holder_once_without_queueing(db: sqlx::PgPool) {
    let app = uncached(db).await;
    let id = sale(&app, 10, 2).await;
    let codes = generate(&app, id, 3).await;
    assert_eq!(codes.len(), 3);
    assert!(codes.iter().all(|c| c.len() == 23 && c.split('-').count() == 4), "{codes:?}");
    let trail = app.admin(Method::GET, &format!("/admin/sales/{id}/audit"), None).await.body.to_string();
    assert!(trail.contains("sale.priority_codes") && !trail.contains(&codes[0]), "codes are never stored in clear");

    // Before the opening a code admits nobody yet.
    redeem(&app, id, "ann", &codes[0]).await.assert_problem(409, "not_open");
    open_now(&app, id).await;
    // Hundreds in line do not matter: the holder is admitted at once, typed loosely.
    for i in 0..5 {
        app.buyer(Method::POST, &format!("/sales/{id}/queue"), &format!("q{i}"), None).await;
    }
    let admitted = redeem(&app, id, "ann", &codes[0].to_lowercase().replace('-', " ")).await;
    assert_eq!(admitted.status, 200, "{admitted:?}");
    let token = admitted.body["admission_token"].as_str().unwrap().to_owned();
    let created = order(&app, id, "ann", "k1", &token, 2).await;
    assert_eq!(created.status, 201, "{created:?}");
    let (order_id, amount) = (created.body["id"].as_i64().unwrap(), created.body["amount_cents"].as_i64().unwrap());
    assert_eq!(pay(&app, order_id, "p1", amount, "succeeded").await.status, 200);

    // The same buyer again gets an admission back, but the turn is spent: no second order.
    let again = redeem(&app, id, "ann", &codes[0]).await;
    assert_eq!(again.status, 200);
    let second = order(&app, id, "ann", "k2", again.body["admission_token"].as_str().unwrap(), 1).await;
    second.assert_problem(409, "token_used");
    // Another buyer, another sale's code, a guess, garbage: refused.
    redeem(&app, id, "bob", &codes[0]).await.assert_problem(409, "code_used");
    let other = sale(&app, 10, 1).await;
    let foreign = generate(&app, other, 1).await;
    redeem(&app, id, "bob", &foreign[0]).await.assert_problem(404, "code_invalid");
    redeem(&app, id, "bob", "00000-00000-00000-00000").await.assert_problem(404, "code_invalid");
    redeem(&app, id, "bob", "not a code").await.assert_problem(404, "code_invalid");

    // Operations see it: the sale's codes, and the batch's report.
    let stats = &app.admin(Method::GET, &format!("/admin/sales/{id}"), None).await.body["priority_codes"];
    assert_eq!(stats, &json!({"generated": 3, "redeemed": 1, "units_paid": 2}));
    let report = app.admin(Method::GET, &format!("/admin/sales/{id}/batches/1/report"), None).await.body;
    assert_eq!(report["operator"]["priority_codes"], json!({"generated": 3, "redeemed": 1, "units_paid": 2}));
}

#[sqlx::test(migrator = "flashsale_server::startup::MIGRATOR")]
async fn fifty_buyers_racing_for_one_code_make_one_order(db: sqlx::PgPool) {
    let app = uncached(db).await;
    let id = sale(&app, 100, 1).await;
    let code = generate(&app, id, 1).await.remove(0);
    open_now(&app, id).await;
    let attempts = (0..50).map(|i| {
        let (app, code) = (&app, code.clone());
        async move {
            let user = format!("racer{i}");
            let reply = redeem(app, id, &user, &code).await;
            match reply.body["admission_token"].as_str() {
                Some(token) => order(app, id, &user, "k", token, 1).await.status.as_u16(),
                None => {
                    reply.assert_problem(409, "code_used");
                    0
                }
            }
        }
    });
    let outcomes = futures::future::join_all(attempts).await;
    assert_eq!(outcomes.iter().filter(|s| **s == 201).count(), 1, "{outcomes:?}");
    assert_eq!(outcomes.iter().filter(|s| **s == 0).count(), 49);
    assert_eq!(app.count("orders").await, 1);
}

#[sqlx::test(migrator = "flashsale_server::startup::MIGRATOR")]
async fn codes_cannot_be_guessed_at_speed_nor_generated_out_of_bounds(db: sqlx::PgPool) {
    let app = uncached(db).await;
    let id = sale(&app, 10, 1).await;
    open_now(&app, id).await;
    let limit = flashsale_server::limits::CODE_ATTEMPTS_PER_USER_PER_MINUTE;
    for _ in 0..limit {
        redeem(&app, id, "guesser", "00000-00000-00000-00000").await.assert_problem(404, "code_invalid");
    }
    let limited = redeem(&app, id, "guesser", "00000-00000-00000-00001").await;
    limited.assert_problem(429, "rate_limited");
    assert!(limited.headers.contains_key("retry-after"));
    for count in [0, 10_001] {
        let reply =
            app.admin(Method::POST, &format!("/admin/sales/{id}/priority-codes"), Some(json!({"count": count}))).await;
        reply.assert_problem(422, "validation_failed");
    }
    let csv = app
        .admin_with(
            Method::POST,
            &format!("/admin/sales/{id}/priority-codes"),
            Some(json!({"count": 2})),
            &[("accept", "text/csv")],
        )
        .await;
    assert_eq!(csv.status, 201);
    assert_eq!(csv.headers["content-type"], "text/csv; charset=utf-8");
    let text = match &csv.body {
        Value::String(text) => text.clone(),
        other => panic!("{other:?}"),
    };
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!((lines.len(), lines[0]), (3, "code"));
}

/// The batch's ledger with the codes' allotment: (available, allotted, reserved, sold), balanced.
async fn split(app: &TestApp, id: i64) -> (u32, u32, u32, u32) {
    let sale = flashsale_core::SaleId::try_from(id).unwrap();
    let l = app.state.inventory.snapshot(sale, flashsale_core::BatchNo::FIRST).await.unwrap().unwrap();
    assert!(l.balances(), "{l:?}");
    (l.available.get(), l.allotted.get(), l.reserved.get(), l.sold.get())
}

/// A sale whose batch holds `priority_units` of its `stock` back for code holders, open now.
async fn allotted_sale(app: &TestApp, stock: u32, priority_units: u32) -> i64 {
    let body = SaleBuilder::one_off()
        .opening_in(60)
        .stock(stock)
        .limit(1)
        .set("priority_units", json!(priority_units))
        .set("priority_hold_secs", json!(600))
        .body();
    let id = app.create_sale(body).await["id"].as_i64().unwrap();
    open_now(app, id).await;
    id
}

/// A code holder's order: redeems `code` as `user` and orders one unit with the admission.
async fn order_with_code(app: &TestApp, id: i64, user: &str, code: &str) -> crate::common::Reply {
    let admitted = redeem(app, id, user, code).await;
    assert_eq!(admitted.status, 200, "{admitted:?}");
    order(app, id, user, "k", admitted.body["admission_token"].as_str().unwrap(), 1).await
}

/// Moves the end of the batch's allotment to now, as its time passing would.
async fn end_allotment(app: &TestApp, id: i64) {
    let ledger = app.redis.keys.batch(id.try_into().unwrap(), flashsale_core::BatchNo::FIRST).ledger();
    let mut conn = app.state.redis.conn().await.unwrap();
    let now = chrono::Utc::now().timestamp_millis() - 1;
    let _: () =
        redis::cmd("HSET").arg(&ledger).arg("allotment_until_ms").arg(now).query_async(&mut conn).await.unwrap();
}

#[sqlx::test(migrator = "flashsale_server::startup::MIGRATOR")]
async fn an_allotment_keeps_units_for_code_holders_until_its_time_is_up(db: sqlx::PgPool) {
    use crate::common::shop::{assert_redis_agrees_with_postgres, token};
    let app = uncached(db).await;
    let id = allotted_sale(&app, 5, 2).await;
    let codes = generate(&app, id, 4).await;
    assert_eq!(split(&app, id).await, (3, 2, 0, 0));
    let admin = app.admin(Method::GET, &format!("/admin/sales/{id}"), None).await.body;
    assert_eq!((admin["priority_units"].as_u64(), admin["priority_hold_secs"].as_u64()), (Some(2), Some(600)));
    assert_eq!(admin["current_batch"]["stats"]["allotted"], 2);

    // The queue's buyers get the three units that are everyone's, and no more.
    for (i, user) in ["p1", "p2", "p3"].iter().enumerate() {
        assert_eq!(order(&app, id, user, "k", &token(&app, id, user, i as u64 + 1), 1).await.status, 201);
    }
    order(&app, id, "p4", "k", &token(&app, id, "p4", 4), 1).await.assert_problem(409, "sold_out");
    assert_eq!(split(&app, id).await, (0, 2, 3, 0));
    // The public is told the truth: nothing to buy now, but units may still come to them.
    let public = app.buyer(Method::GET, &format!("/sales/{id}"), "p4", None).await.body;
    assert_eq!((public["status"].as_str(), public["units_left"].as_u64()), (Some("all_held"), Some(0)));

    // Code holders get the two held back, and no more: their allotment is theirs, not a door to
    // the public's stock.
    let ann = order_with_code(&app, id, "ann", &codes[0]).await;
    assert_eq!(ann.status, 201);
    let bob = order_with_code(&app, id, "bob", &codes[1]).await;
    assert_eq!(bob.status, 201);
    order_with_code(&app, id, "carl", &codes[2]).await.assert_problem(409, "sold_out");
    assert_eq!(split(&app, id).await, (0, 0, 5, 0));

    // A code holder's unit that comes back goes back to the codes while the allotment lasts.
    let ann_id = ann.body["id"].as_i64().unwrap();
    assert_eq!(app.buyer(Method::POST, &format!("/orders/{ann_id}/cancel"), "ann", None).await.status, 200);
    assert_eq!(split(&app, id).await, (0, 1, 4, 0));
    order(&app, id, "p5", "k", &token(&app, id, "p5", 5), 1).await.assert_problem(409, "sold_out");
    // Carl's code was not spent by his `sold_out`: he tries again and gets the returned unit.
    let carl = redeem(&app, id, "carl", &codes[2]).await;
    let carl = order(&app, id, "carl", "k2", carl.body["admission_token"].as_str().unwrap(), 1).await;
    assert_eq!(carl.status, 201, "{carl:?}");
    assert_eq!(split(&app, id).await, (0, 0, 5, 0));
    let bob_id = bob.body["id"].as_i64().unwrap();
    assert_eq!(app.buyer(Method::POST, &format!("/orders/{bob_id}/cancel"), "bob", None).await.status, 200);
    assert_eq!(split(&app, id).await, (0, 1, 4, 0));

    // Its time is up: what is left goes to everyone, at the next reservation or admission tick.
    end_allotment(&app, id).await;
    assert_eq!(order(&app, id, "p6", "k", &token(&app, id, "p6", 6), 1).await.status, 201);
    assert_eq!(split(&app, id).await, (0, 0, 5, 0));
    // From then on a code's returned unit is everyone's too.
    let carl_id = carl.body["id"].as_i64().unwrap();
    assert_eq!(app.buyer(Method::POST, &format!("/orders/{carl_id}/cancel"), "carl", None).await.status, 200);
    assert_eq!(split(&app, id).await, (1, 0, 4, 0));
    assert_redis_agrees_with_postgres(&app, id).await;
    let again = order_with_code(&app, id, "dave", &codes[3]).await;
    assert_eq!(again.status, 201, "a code holder now buys from everyone's units: {again:?}");
}

#[sqlx::test(migrator = "flashsale_server::startup::MIGRATOR")]
async fn an_allotment_follows_the_sale_s_changes_and_is_refused_above_the_stock(db: sqlx::PgPool) {
    let app = uncached(db).await;
    let id = allotted_sale(&app, 10, 4).await;
    let codes = generate(&app, id, 3).await;
    for (user, code) in [("ann", &codes[0]), ("bob", &codes[1])] {
        assert_eq!(order_with_code(&app, id, user, code).await.status, 201);
    }
    assert_eq!(split(&app, id).await, (6, 2, 2, 0));
    let path = format!("/admin/sales/{id}");
    let patch = |body: Value| app.admin(Method::PATCH, &path, Some(body));
    // Fewer held back than codes already hold: none left for codes; the rest is everyone's.
    assert_eq!(patch(json!({"priority_units": 1})).await.status, 200);
    assert_eq!(split(&app, id).await, (8, 0, 2, 0));
    order_with_code(&app, id, "carl", &codes[2]).await.assert_problem(409, "sold_out");
    // More again: taken from what is free, codes' holdings counted.
    assert_eq!(patch(json!({"priority_units": 5})).await.status, 200);
    assert_eq!(split(&app, id).await, (5, 3, 2, 0));
    // Less stock: the allotment keeps its share as far as the free units go.
    assert_eq!(patch(json!({"stock": 6, "priority_units": 5})).await.status, 200);
    assert_eq!(split(&app, id).await, (1, 3, 2, 0));
    // An allotment above the stock, or a hold out of bounds, changes nothing.
    let refused = patch(json!({"priority_units": 7})).await;
    refused.assert_problem(422, "validation_failed");
    assert!(refused.body.to_string().contains("priority_units"), "{refused:?}");
    patch(json!({"priority_hold_secs": 10})).await.assert_problem(422, "validation_failed");
    // A hold that would outlast the batch would strand what codes leave.
    let outlasting = patch(json!({"duration_secs": 300})).await;
    outlasting.assert_problem(422, "validation_failed");
    assert!(outlasting.body.to_string().contains("priority_hold_secs"), "{outlasting:?}");
    assert_eq!(split(&app, id).await, (1, 3, 2, 0));
}

#[sqlx::test(migrator = "flashsale_server::startup::MIGRATOR")]
async fn a_redis_loss_restores_the_allotment_and_keeps_code_tickets_out_of_the_line(db: sqlx::PgPool) {
    use crate::common::shop::{assert_redis_agrees_with_postgres, pay, token};
    let app = uncached(db).await;
    let id = allotted_sale(&app, 6, 3).await;
    let codes = generate(&app, id, 3).await;
    for user in ["q1", "q2", "q3"] {
        assert!(app.buyer(Method::POST, &format!("/sales/{id}/queue"), user, None).await.status.is_success());
    }
    let ann = order_with_code(&app, id, "ann", &codes[0]).await;
    assert_eq!(ann.status, 201);
    let bob = order_with_code(&app, id, "bob", &codes[1]).await;
    let (bob_id, amount) = (bob.body["id"].as_i64().unwrap(), bob.body["amount_cents"].as_i64().unwrap());
    assert_eq!(pay(&app, bob_id, "p-bob", amount, "succeeded").await.status, 200);
    assert_eq!(order(&app, id, "q1", "k", &token(&app, id, "q1", 1), 1).await.status, 201);
    // Held back 3, codes hold 2 (one paid): 1 left for codes, 2 for everyone.
    assert_eq!(split(&app, id).await, (2, 1, 2, 1));
    let batch = app.redis.keys.batch(id.try_into().unwrap(), flashsale_core::BatchNo::FIRST);
    flashsale_server::jobs::upkeep::pass(&app.state, chrono::Utc::now()).await.unwrap();

    // Redis loses the sale; upkeep rebuilds it from PostgreSQL.
    let mut conn = app.state.redis.conn().await.unwrap();
    for key in app.redis.keys_in_use().await {
        let _: () = redis::cmd("DEL").arg(&key).query_async(&mut conn).await.unwrap();
    }
    let pass = flashsale_server::jobs::upkeep::pass(&app.state, chrono::Utc::now()).await.unwrap();
    assert_eq!(pass.ledgers_rebuilt, 1);
    assert_eq!(split(&app, id).await, (2, 1, 2, 1), "the codes' share restored from their orders");
    assert_redis_agrees_with_postgres(&app, id).await;

    // A code's ticket (2^52 + its id) is no place in the line: the line goes on from its own
    // tickets, not from the codes' (which once sent the tail and the serving counter to 2^52:
    // everyone in line admitted at once, and newcomers numbered among the codes).
    let shared = &app;
    let counter = |key: String| async move {
        let mut conn = shared.state.redis.conn().await.unwrap();
        redis::cmd("GET").arg(key).query_async::<Option<u64>>(&mut conn).await.unwrap().unwrap_or(0)
    };
    let (tail, serving) = (counter(batch.queue_tail()).await, counter(batch.queue_serving()).await);
    assert!(tail < 1_000 && serving < 1_000, "tail {tail}, serving {serving}");
    assert!(app.buyer(Method::POST, &format!("/sales/{id}/queue"), "q4", None).await.status.is_success());
    let newcomer = counter(batch.queue_tail()).await;
    assert!((4..1_000).contains(&newcomer), "the newcomer's ticket {newcomer}");

    // The codes' last unit, then none; a code holder's cancel refills it.
    assert_eq!(order_with_code(&app, id, "carl", &codes[2]).await.status, 201);
    assert_eq!(split(&app, id).await, (2, 0, 3, 1));
    let ann_id = ann.body["id"].as_i64().unwrap();
    assert_eq!(app.buyer(Method::POST, &format!("/orders/{ann_id}/cancel"), "ann", None).await.status, 200);
    assert_eq!(split(&app, id).await, (2, 1, 2, 1));
    assert_redis_agrees_with_postgres(&app, id).await;
}
