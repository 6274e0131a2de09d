//! Bad input gets a clear 4xx problem and changes nothing.

mod common;

use axum::http::Method;
use common::{MAX_BODY_BYTES, TestApp, weekly_sale};
use serde_json::{Value, json};

fn with(field: &str, value: Value) -> Value {
    let mut body = weekly_sale();
    body[field] = value;
    body
}

fn without(field: &str) -> Value {
    let mut body = weekly_sale();
    body.as_object_mut().unwrap().remove(field);
    body
}

#[sqlx::test(migrator = "flashsale_server::startup::MIGRATOR")]
async fn invalid_sales_are_refused_with_the_failing_field_named(db: sqlx::PgPool) {
    let app = TestApp::new(db).await;
    let past = (chrono::Utc::now() - chrono::TimeDelta::minutes(1)).to_rfc3339();
    let cases: Vec<(&str, Value, &str)> = vec![
        ("zero stock", with("stock", json!(0)), "stock"),
        ("negative stock", with("stock", json!(-5)), "stock"),
        ("absurd stock", with("stock", json!(1_000_000_000)), "stock"),
        ("limit zero", with("per_user_limit", json!(0)), "per_user_limit"),
        ("limit above stock", with("per_user_limit", json!(101)), "per_user_limit"),
        ("zero price", with("price_cents", json!(0)), "price_cents"),
        ("lowercase currency", with("currency", json!("cny")), "currency"),
        ("blank name", with("name", json!("   ")), "name"),
        ("sku with spaces", with("sku", json!("PHONE X")), "sku"),
        ("ttl beyond window", with("admission_ttl_secs", json!(1000)), "admission_ttl_secs"),
        ("zero rate", with("admission_rate", json!(0)), "admission_rate"),
        ("negative prequeue", with("prequeue_secs", json!(-1)), "prequeue_secs"),
        ("tiny duration", with("duration_secs", json!(1)), "duration_secs"),
        (
            "bad weekday",
            with("weekly", json!({"weekday": "tuesday", "time": "12:00", "timezone": "Asia/Shanghai"})),
            "weekly.weekday",
        ),
        (
            "bad time",
            with("weekly", json!({"weekday": "tue", "time": "12:60", "timezone": "Asia/Shanghai"})),
            "weekly.time",
        ),
        (
            "bad zone",
            with("weekly", json!({"weekday": "tue", "time": "12:00", "timezone": "Asia/Atlantis"})),
            "weekly.timezone",
        ),
        ("both schedules", with("opens_at", json!("2030-01-01T00:00:00Z")), "opens_at"),
        ("no schedule", without("weekly"), "opens_at"),
        (
            "past opening",
            {
                let mut b = without("weekly");
                b["opens_at"] = json!(past);
                b
            },
            "opens_at",
        ),
        (
            "unparseable opening",
            {
                let mut b = without("weekly");
                b["opens_at"] = json!("tomorrow noon");
                b
            },
            "opens_at",
        ),
    ];
    for (case, body, field) in cases {
        let reply = app.admin(Method::POST, "/admin/sales", Some(body)).await;
        reply.assert_problem(422, "validation_failed");
        let fields: Vec<&str> =
            reply.body["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
        assert!(fields.contains(&field), "{case}: expected {field} in {fields:?}");
    }
    assert_eq!(app.count("sales").await, 0);
    assert_eq!(app.count("sale_batches").await, 0);
    assert_eq!(app.count("admin_audit").await, 0);
    assert!(app.redis.keys_in_use().await.is_empty());
}

#[sqlx::test(migrator = "flashsale_server::startup::MIGRATOR")]
async fn malformed_requests_get_a_problem_never_a_500(db: sqlx::PgPool) {
    let app = TestApp::new(db).await;
    let auth = "Bearer dev-admin-token";
    let json_type = ("content-type", "application/json");
    let huge = json!({"name": "x".repeat(MAX_BODY_BYTES)}).to_string();
    /// (case, headers besides the token, body, expected status, expected code)
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, String, u16, &'a str);
    let cases: Vec<Case> = vec![
        ("truncated JSON", vec![json_type], "{\"name\":".into(), 400, "malformed_json"),
        ("not JSON", vec![json_type], "name=phone".into(), 400, "malformed_json"),
        ("empty body", vec![json_type], String::new(), 400, "malformed_json"),
        ("unknown field", vec![json_type], with("colour", json!("black")).to_string(), 422, "validation_failed"),
        ("string for a number", vec![json_type], with("stock", json!("100")).to_string(), 422, "validation_failed"),
        ("float stock", vec![json_type], with("stock", json!(1.5)).to_string(), 422, "validation_failed"),
        ("array body", vec![json_type], "[1,2]".into(), 422, "validation_failed"),
        ("missing field", vec![json_type], without("name").to_string(), 422, "validation_failed"),
        ("no content type", vec![], weekly_sale().to_string(), 415, "unsupported_media_type"),
        (
            "text content type",
            vec![("content-type", "text/plain")],
            weekly_sale().to_string(),
            415,
            "unsupported_media_type",
        ),
        ("oversized body", vec![json_type], huge, 413, "payload_too_large"),
    ];
    for (case, mut headers, body, status, code) in cases {
        headers.push(("authorization", auth));
        let reply = app.send(Method::POST, "/admin/sales", &headers, body).await;
        assert_eq!(reply.status.as_u16(), status, "{case}: {reply:?}");
        reply.assert_problem(status, code);
    }
    assert_eq!(app.count("sales").await, 0);
    assert!(app.redis.keys_in_use().await.is_empty());
}

#[sqlx::test(migrator = "flashsale_server::startup::MIGRATOR")]
async fn unknown_paths_methods_and_ids_are_problems(db: sqlx::PgPool) {
    let app = TestApp::new(db).await;
    app.get("/nope").await.assert_problem(404, "not_found");
    app.get("/sales/abc").await.assert_problem(404, "not_found");
    app.get("/sales/0").await.assert_problem(404, "not_found");
    app.get("/sales/99").await.assert_problem(404, "not_found");
    app.admin(Method::GET, "/admin/sales/99", None).await.assert_problem(404, "not_found");
    app.admin(Method::PATCH, "/admin/sales/99", Some(json!({"stock": 5}))).await.assert_problem(404, "not_found");
    app.admin(Method::POST, "/admin/sales/99/pause", None).await.assert_problem(404, "not_found");
    let reply = app.admin(Method::DELETE, "/admin/sales", None).await;
    reply.assert_problem(405, "method_not_allowed");
    app.admin(Method::GET, "/admin/sales?limit=0", None).await.assert_problem(400, "bad_request");
    app.admin(Method::GET, "/admin/sales?limit=ten", None).await.assert_problem(400, "bad_request");
}

#[sqlx::test(migrator = "flashsale_server::startup::MIGRATOR")]
async fn invalid_patches_change_nothing(db: sqlx::PgPool) {
    let app = TestApp::new(db).await;
    let id = app.create_sale(weekly_sale()).await["id"].as_i64().unwrap();
    let uri = format!("/admin/sales/{id}");
    let cases = [
        (json!({}), "validation_failed"),
        (json!({"price_cents": 1}), "validation_failed"),
        (json!({"stock": 0}), "validation_failed"),
        (json!({"per_user_limit": 1000}), "validation_failed"),
        (json!({"payment_window_secs": 60}), "validation_failed"),
    ];
    for (patch, code) in cases {
        app.admin(Method::PATCH, &uri, Some(patch)).await.assert_problem(422, code);
    }
    let after = app.admin(Method::GET, &uri, None).await;
    assert_eq!(after.body["version"], 1);
    assert_eq!(after.body["stock"], 100);
    assert_eq!(after.body["current_batch"]["stats"]["stock"], 100);
    assert_eq!(app.count("admin_audit").await, 1);
    app.redis.cleanup().await;
}
