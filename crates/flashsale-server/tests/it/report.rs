//! A batch's sale report against an independent count: the orders in PostgreSQL and what the
//! test itself did to the sale.

use crate::common::shop::{admitted_token, order, pay};
use crate::common::{TestApp, open_now, uncached};
use axum::http::Method;
use chrono::Utc;
use flashsale_testkit::SaleBuilder;
use serde_json::{Value, json};

/// Polls `user`'s state once without a ticket and once with the ticket it answered with.
async fn poll_twice(app: &TestApp, id: i64, user: &str) -> Value {
    let uri = format!("/sales/{id}/queue");
    let first = app.buyer(Method::GET, &uri, user, None).await;
    let ticket = first.body["ticket"].as_str().map(str::to_owned);
    let again = app.buyer(Method::GET, &uri, user, ticket.as_deref()).await;
    assert_eq!(first.body["status"], again.body["status"]);
    again.body
}

#[sqlx::test(migrator = "flashsale_server::startup::MIGRATOR")]
async fn the_report_agrees_with_the_orders_and_with_what_happened(db: sqlx::PgPool) {
    let app = uncached(db).await;
    let body = SaleBuilder::one_off()
        .opening_in(60)
        .prequeue_secs(600)
        .stock(2)
        .limit(1)
        .set("name", json!("Phone <X> & \"Co\""))
        .body();
    let id = app.create_sale(body).await["id"].as_i64().unwrap();
    let queue = format!("/sales/{id}/queue");
    let cohort = ["ann", "bob", "cat", "dan", "eve"];
    for user in cohort {
        assert_eq!(app.buyer(Method::POST, &queue, user, None).await.status, 201);
    }
    open_now(&app, id).await;
    assert_eq!(app.buyer(Method::POST, &queue, "zed", None).await.status, 201);
    flashsale_server::service::queue::admit_all(&app.state, Utc::now()).await.unwrap();
    assert_eq!(flashsale_server::service::draws::record_due(&app.state, Utc::now()).await.unwrap(), 1);

    // The two buyers drawn first order and pay; the batch sells out.
    let mut first_two = Vec::new();
    for user in cohort.iter().chain(["zed"].iter()) {
        let state = app.buyer(Method::GET, &queue, user, None).await;
        if state.body["position"].as_u64().is_some_and(|p| p <= 2) {
            first_two.push(*user);
        }
    }
    assert_eq!(first_two.len(), 2);
    for user in &first_two {
        let token = admitted_token(&app, id, user).await;
        let created = order(&app, id, user, "k", &token, 1).await;
        assert_eq!(created.status, 201, "{created:?}");
        let (order_id, amount) = (created.body["id"].as_i64().unwrap(), created.body["amount_cents"].as_i64().unwrap());
        assert_eq!(pay(&app, order_id, &format!("p-{user}"), amount, "succeeded").await.status, 200);
    }
    // Everyone else is told, each counted once however often they ask with their ticket; a
    // newcomer is turned away.
    let rest: Vec<&str> = cohort.iter().chain(["zed"].iter()).copied().filter(|u| !first_two.contains(u)).collect();
    for user in &rest {
        assert_eq!(poll_twice(&app, id, user).await["status"], "sold_out");
    }
    app.buyer(Method::POST, &queue, "late", None).await.assert_problem(409, "sold_out");
    flashsale_server::jobs::activity::flush(&app.state).await;

    let report = app.admin(Method::GET, &format!("/admin/sales/{id}/batches/1/report"), None).await;
    assert_eq!(report.status, 200, "{report:?}");
    let r = &report.body;
    assert_eq!(r["entrants"], json!({"prequeue_cohort": 5, "later_joiners": 1, "queued": 6}));
    assert_eq!((r["admission"]["admitted"].as_u64(), r["admission"]["lapsed"].as_u64()), (Some(2), Some(0)));

    // Against the orders, counted here.
    let (paid, units, revenue, last_paid): (i64, i64, i64, chrono::DateTime<Utc>) = sqlx::query_as(
        "SELECT count(*), SUM(quantity)::bigint, SUM(amount_cents)::bigint, max(paid_at) FROM orders \
         WHERE sale_id = $1 AND status = 'paid'",
    )
    .bind(id)
    .fetch_one(&app.db)
    .await
    .unwrap();
    let outcome =
        |status: &str| r["orders"].as_array().unwrap().iter().find(|o| o["status"] == status).unwrap().clone();
    assert_eq!(outcome("paid"), json!({"status": "paid", "orders": paid, "units": units}));
    assert_eq!(outcome("cancelled")["orders"], 0);
    let sold_out_at: chrono::DateTime<Utc> = serde_json::from_value(r["sell_out"]["sold_out_at"].clone()).unwrap();
    assert_eq!(sold_out_at, last_paid);
    assert_eq!(r["sell_out"]["told_final"].as_u64(), Some(rest.len() as u64));
    assert!(r["sell_out"]["all_told_secs_after_sell_out"].as_f64().is_some());
    assert_eq!(r["operator"]["revenue_cents"].as_i64(), Some(revenue));
    assert_eq!(r["operator"]["joins_refused"].as_u64(), Some(1));
    assert_eq!(r["fairness"]["admissions_out_of_order"], 0);
    let rho = r["fairness"]["arrival_rho"].as_f64().unwrap();
    assert!((-1.0..=1.0).contains(&rho), "{rho}");
    assert_eq!(r["draw"]["cohort_size"], 5);
    let timeline = r["timeline"].as_array().unwrap();
    let joins: u64 = timeline.iter().map(|s| s["joins"].as_u64().unwrap()).sum();
    assert_eq!(joins, 6, "five in the pre-queue, one after: {timeline:?}");

    // The public report leaves the operator's figures out; the operator's page is one
    // self-contained document that runs nothing.
    let public = app.get(&format!("/sales/{id}/batches/1/report")).await;
    assert_eq!(public.status, 200);
    assert!(public.body.get("operator").is_none());
    assert_eq!(public.body["entrants"], r["entrants"]);
    let html = app
        .admin_with(Method::GET, &format!("/admin/sales/{id}/batches/1/report"), None, &[("accept", "text/html")])
        .await;
    assert_eq!(html.headers["content-type"], "text/html; charset=utf-8");
    assert!(html.headers["content-security-policy"].to_str().unwrap().starts_with("default-src 'none'"));
    let page = html.body.as_str().unwrap();
    assert!(page.contains("Phone &lt;X&gt; &amp; &quot;Co&quot;") && !page.contains("<X>"), "escaped");
    assert!(page.contains("<svg") && !page.contains("<script"));
}

#[sqlx::test(migrator = "flashsale_server::startup::MIGRATOR")]
async fn the_report_is_for_operators_and_known_batches(db: sqlx::PgPool) {
    let app = uncached(db).await;
    let id = app.create_sale(SaleBuilder::one_off().opening_in(60).body()).await["id"].as_i64().unwrap();
    let uri = format!("/admin/sales/{id}/batches/1/report");
    app.send(Method::GET, &uri, &[], axum::body::Body::empty()).await.assert_problem(401, "unauthorized");
    app.admin(Method::GET, &format!("/admin/sales/{id}/batches/9/report"), None).await.assert_problem(404, "not_found");
    app.get(&format!("/sales/{}/batches/1/report", id + 1)).await.assert_problem(404, "not_found");
    // Before the opening: nothing happened yet, and the report says so.
    let r = app.admin(Method::GET, &uri, None).await.body;
    assert_eq!(r["entrants"]["prequeue_cohort"], Value::Null);
    assert_eq!((r["admission"]["admitted"].as_u64(), r["sell_out"]["sold_out_at"].clone()), (Some(0), Value::Null));
}
