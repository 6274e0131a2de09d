//! Admin endpoints need the admin bearer token; public ones need none.

use crate::common::{TestApp, weekly_sale};
use axum::body::Body;
use axum::http::Method;

#[sqlx::test(migrator = "flashsale_server::startup::MIGRATOR")]
async fn admin_requests_without_the_right_token_are_refused_and_change_nothing(db: sqlx::PgPool) {
    let app = TestApp::new(db).await;
    let body = weekly_sale().to_string();
    let json = ("content-type", "application/json");
    let cases: [&[(&str, &str)]; 5] = [
        &[json],
        &[json, ("authorization", "Bearer wrong-token")],
        &[json, ("authorization", "Bearer dev-admin-tokenX")],
        &[json, ("authorization", "Basic dev-admin-token")],
        &[json, ("authorization", "dev-admin-token")],
    ];
    for headers in cases {
        let reply = app.send(Method::POST, "/admin/sales", headers, body.clone()).await;
        reply.assert_problem(401, "unauthorized");
        assert_eq!(reply.headers["www-authenticate"], "Bearer");
    }
    for uri in ["/admin/sales", "/admin/sales/1", "/admin/sales/1/audit"] {
        app.send(Method::GET, uri, &[], Body::empty()).await.assert_problem(401, "unauthorized");
    }
    assert_eq!(app.count("sales").await, 0);
    assert_eq!(app.count("admin_audit").await, 0);
    assert!(app.redis.keys_in_use().await.is_empty());
}

#[sqlx::test(migrator = "flashsale_server::startup::MIGRATOR")]
async fn the_right_token_creates_a_sale_and_the_public_sees_it_without_one(db: sqlx::PgPool) {
    let app = TestApp::new(db).await;
    let created = app.create_sale(weekly_sale()).await;
    let id = created["id"].as_i64().unwrap();
    let public = app.get(&format!("/sales/{id}")).await;
    assert_eq!(public.status, 200, "{public:?}");
    assert_eq!(public.body["name"], "Phone X");
    // Operations-only fields stay private.
    assert!(public.body.get("sku").is_none() && public.body.get("version").is_none());
}

#[sqlx::test(migrator = "flashsale_server::startup::MIGRATOR")]
async fn the_audit_trail_records_who_did_what(db: sqlx::PgPool) {
    let app = TestApp::new(db).await;
    let id = app.create_sale(weekly_sale()).await["id"].as_i64().unwrap();
    let pause = app.admin_with(Method::POST, &format!("/admin/sales/{id}/pause"), None, &[("x-actor", "alice")]).await;
    assert_eq!(pause.status, 200, "{pause:?}");
    let trail = app.admin(Method::GET, &format!("/admin/sales/{id}/audit"), None).await;
    let entries = trail.body["entries"].as_array().unwrap();
    let seen: Vec<(&str, &str)> =
        entries.iter().map(|e| (e["actor"].as_str().unwrap(), e["action"].as_str().unwrap())).collect();
    assert_eq!(seen, [("admin", "sale.create"), ("alice", "sale.pause")]);
    assert_eq!(entries[0]["details"]["request"]["stock"], 100);
    let bad_actor = app.admin_with(Method::POST, &format!("/admin/sales/{id}/resume"), None, &[("x-actor", "")]).await;
    bad_actor.assert_problem(400, "bad_request");
}
