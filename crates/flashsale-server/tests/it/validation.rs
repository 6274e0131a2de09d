//! Bad input gets a clear 4xx problem and changes nothing.

use crate::common::{MAX_BODY_BYTES, TestApp, weekly_sale};
use axum::http::Method;
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
}

/// The edges of the contract an outside probe found: an oversized payment notice is a 413
/// problem (not axum's text), two `Authorization` headers are refused, an id has one spelling,
/// and integers written as whole floats are integers.
#[sqlx::test(migrator = "flashsale_server::startup::MIGRATOR")]
async fn the_contracts_edges_are_problems_too(db: sqlx::PgPool) {
    let app = TestApp::new(db).await;
    let huge = "x".repeat(MAX_BODY_BYTES + 1);
    let refused = app
        .send(
            Method::POST,
            "/payments/callback",
            &[("content-type", "application/json"), ("x-signature", "sha256=00")],
            huge,
        )
        .await;
    refused.assert_problem(413, "payload_too_large");

    let admin = format!("Bearer {}", flashsale_server::config::dev::ADMIN_TOKEN);
    let twice = [("authorization", admin.as_str()), ("authorization", "Bearer someone-else")];
    app.send(Method::GET, "/admin/sales", &twice, "").await.assert_problem(400, "bad_request");
    let buyer = format!("Bearer {}", crate::common::buyer_jwt("alice", 600));
    let twice = [("authorization", buyer.as_str()), ("authorization", buyer.as_str())];
    app.send(Method::GET, "/orders", &twice, "").await.assert_problem(400, "bad_request");

    let mut body = weekly_sale();
    body["stock"] = json!(100.0);
    body["per_user_limit"] = json!(2.0);
    let created = app.create_sale(body).await;
    let id = created["id"].as_i64().unwrap();
    assert_eq!(app.get(&format!("/sales/{id}")).await.status.as_u16(), 200);
    for spelling in [
        format!("/sales/+{id}"),
        format!("/sales/0{id}"),
        format!("/sales/%3{id}"),
        format!("/sales/{id}/batches/01/draw"),
    ] {
        app.get(&spelling).await.assert_problem(404, "not_found");
    }
    let mut fractional = weekly_sale();
    fractional["stock"] = json!(100.5);
    let refused = app.admin(Method::POST, "/admin/sales", Some(fractional)).await;
    assert_eq!(refused.status.as_u16(), 422, "{refused:?}");
}

/// The document served validates as far as a test can tell without a validator (CI runs
/// openapi-spec-validator and Schemathesis): operation ids are unique, the limits the server
/// enforces are declared, and the example opening is in the future whenever it is served.
#[sqlx::test(migrator = "flashsale_server::startup::MIGRATOR")]
async fn the_openapi_document_declares_what_the_server_enforces(db: sqlx::PgPool) {
    let app = TestApp::new(db).await;
    let document = app.get("/openapi.json").await.body;
    let mut ids = std::collections::BTreeSet::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let id = operation["operationId"].as_str().unwrap_or_default().to_owned();
            assert!(ids.insert(id.clone()), "{method} {path}: operationId {id} is used twice");
        }
    }
    let schemas = &document["components"]["schemas"];
    assert_eq!(schemas["NewSale"]["properties"]["stock"]["maximum"], 10_000_000);
    assert_eq!(schemas["NewSale"]["properties"]["sku"]["pattern"], "^[A-Za-z0-9._-]{1,64}$");
    assert_eq!(schemas["SalePatch"]["minProperties"], 1);
    assert!(schemas["SalePatch"].get("maxProperties").is_none());
    assert!(schemas["WeeklyInput"]["properties"]["timezone"]["enum"].as_array().unwrap().len() > 300);
    let example = schemas["NewSale"]["properties"]["opens_at"]["example"].as_str().unwrap();
    let opens_at = chrono::DateTime::parse_from_rfc3339(example).unwrap();
    assert!(opens_at > chrono::Utc::now(), "the example opening {example} is in the past");
    // The example body is accepted as it stands.
    let mut example_sale = serde_json::Map::new();
    for (name, property) in schemas["NewSale"]["properties"].as_object().unwrap() {
        if let Some(value) = property.get("example").filter(|_| name != "weekly") {
            example_sale.insert(name.clone(), value.clone());
        }
    }
    let created = app.admin(Method::POST, "/admin/sales", Some(Value::Object(example_sale))).await;
    assert_eq!(created.status.as_u16(), 201, "{created:?}");
}
