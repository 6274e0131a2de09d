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
