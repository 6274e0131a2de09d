//! The pages (served with their security headers, assets cached by version), dev mode's sign-in
//! and test payment (and their absence outside dev mode), the stream token a browser opens its
//! event stream with, and cross-origin access for listed sites only. The pages themselves are
//! driven in a real browser by `scripts/browser.sh`.

use axum::http::Method;
use flashsale_server::AppState;
use flashsale_server::config::{CorsOrigins, Secrets, WebSettings};
use flashsale_server::state::Tuning;
use serde_json::json;

use crate::common::shop::{admitted_token, open_sale, order, uncached};
use crate::common::{TestApp, buyer_jwt, open_now, sale_in_prequeue};

#[sqlx::test(migrator = "flashsale_server::startup::MIGRATOR")]
async fn pages_carry_their_security_headers_and_assets_are_cached_by_version(db: sqlx::PgPool) {
    let app = TestApp::new(db).await;
    for path in ["/", "/s/12", "/admin/"] {
        let page = app.get(path).await;
        assert_eq!(page.status, 200, "{path}");
        assert_eq!(page.headers["content-type"], "text/html; charset=utf-8");
        assert_eq!(page.headers["cache-control"], "no-cache");
        let policy = page.headers["content-security-policy"].to_str().unwrap();
        assert!(policy.contains("script-src 'self'") && policy.contains("frame-ancestors 'none'"), "{policy}");
        assert_eq!(page.headers["x-content-type-options"], "nosniff");
    }
    let html = app.get("/").await.body.as_str().unwrap().to_owned();
    assert!(html.contains("<meta name=\"flashsale-dev\" content=\"true\">"));
    let script = html.split('"').find(|s| s.starts_with("/assets/") && s.ends_with("/waiting-room.js")).unwrap();
    let asset = app.get(script).await;
    assert_eq!(asset.status, 200);
    assert_eq!(asset.headers["content-type"], "text/javascript; charset=utf-8");
    assert_eq!(asset.headers["cache-control"], "public, max-age=31536000, immutable");
    // Another version's address, an unknown file, a sale page for no sale id: not found.
    app.get("/assets/0123456789ab/waiting-room.js").await.assert_problem(404, "not_found");
    app.get(&script.replace("waiting-room.js", "secrets.js")).await.assert_problem(404, "not_found");
    app.get("/s/phone-x").await.assert_problem(404, "not_found");
    app.get("/s/012").await.assert_problem(404, "not_found");
    let redirect = app.get("/admin").await;
    assert_eq!((redirect.status.as_u16(), &redirect.headers["location"]), (308, &"/admin/".parse().unwrap()));
}

#[sqlx::test(migrator = "flashsale_server::startup::MIGRATOR")]
async fn dev_mode_signs_in_a_name_and_pays_through_the_signed_callback(db: sqlx::PgPool) {
    let app = uncached(db).await;
    let login = |name: serde_json::Value| {
        let body = json!({ "name": name }).to_string();
        let app = &app;
        async move { app.send(Method::POST, "/dev/login", &[("content-type", "application/json")], body).await }
    };
    let signed_in = login(json!("alice")).await;
    assert_eq!(signed_in.status, 200, "{signed_in:?}");
    assert_eq!(signed_in.body["user"], "alice");
    let jwt = signed_in.body["token"].as_str().unwrap().to_owned();
    let orders = app.send(Method::GET, "/orders", &[("authorization", &format!("Bearer {jwt}"))], "").await;
    assert_eq!(orders.status, 200, "the minted JWT is a buyer's: {orders:?}");
    login(json!("")).await.assert_problem(422, "validation_failed");
    login(json!("x".repeat(65))).await.assert_problem(422, "validation_failed");

    // Pay now (test): the buyer's own order, paid in full, once however often it is pressed.
    let sale = open_sale(&app, 5, 2, 60).await;
    let token = admitted_token(&app, sale, "alice").await;
    let created = order(&app, sale, "alice", "k1", &token, 2).await;
    let id = created.body["id"].as_i64().unwrap();
    let pay = |user: &str| {
        let auth = format!("Bearer {}", buyer_jwt(user, 600));
        let app = &app;
        async move { app.send(Method::POST, &format!("/dev/orders/{id}/pay"), &[("authorization", &auth)], "").await }
    };
    pay("mallory").await.assert_problem(404, "not_found");
    let paid = pay("alice").await;
    assert_eq!((paid.status.as_u16(), &paid.body["outcome"]), (200, &json!("paid")), "{paid:?}");
    let again = pay("alice").await;
    assert_eq!(again.headers["idempotent-replayed"], "true");
    let order = app.buyer(Method::GET, &format!("/orders/{id}"), "alice", None).await;
    assert_eq!(order.body["status"], "paid");
    assert_eq!(app.count("payments").await, 1);
}

#[sqlx::test(migrator = "flashsale_server::startup::MIGRATOR")]
async fn with_secrets_configured_the_dev_routes_do_not_exist(db: sqlx::PgPool) {
    let dev = TestApp::new(db.clone()).await;
    let secrets = Secrets { dev_mode: false, ..Secrets::dev() };
    let state = AppState::new(db.clone(), dev.state.redis.clone(), dev.redis.keys.clone(), secrets, Tuning::default());
    let app = TestApp { router: flashsale_server::app(state.clone(), 1024), state, redis: dev.redis.clone(), db };
    let body = json!({ "name": "alice" }).to_string();
    app.send(Method::POST, "/dev/login", &[("content-type", "application/json")], body)
        .await
        .assert_problem(404, "not_found");
    let auth = format!("Bearer {}", buyer_jwt("alice", 600));
    app.send(Method::POST, "/dev/orders/1/pay", &[("authorization", &auth)], "").await.assert_problem(404, "not_found");
    assert!(app.get("/").await.body.as_str().unwrap().contains("<meta name=\"flashsale-dev\" content=\"false\">"));
}

#[sqlx::test(migrator = "flashsale_server::startup::MIGRATOR")]
async fn a_stream_token_opens_only_its_buyers_stream_of_its_sale(db: sqlx::PgPool) {
    let app = uncached(db).await;
    let id = app.create_sale(sale_in_prequeue(5)).await["id"].as_i64().unwrap();
    let other = app.create_sale(sale_in_prequeue(5)).await["id"].as_i64().unwrap();
    open_now(&app, id).await;
    open_now(&app, other).await;
    app.buyer(Method::POST, &format!("/sales/{id}/queue"), "alice", None).await;
    app.buyer(Method::POST, &format!("/sales/{other}/queue"), "alice", None).await;
    app.send(Method::POST, &format!("/sales/{id}/queue/stream-token"), &[], "")
        .await
        .assert_problem(401, "unauthorized");
    let issued = app.buyer(Method::POST, &format!("/sales/{id}/queue/stream-token"), "alice", None).await;
    assert_eq!(issued.status, 200, "{issued:?}");
    let token = issued.body["stream_token"].as_str().unwrap().to_owned();
    assert!(issued.body["expires_at"].is_string());

    let open = |sale: i64, query: String| {
        use tower::ServiceExt;
        let request = axum::http::Request::get(format!("/sales/{sale}/queue/events{query}"))
            .body(axum::body::Body::empty())
            .unwrap();
        app.router.clone().oneshot(request)
    };
    let stream = open(id, format!("?stream_token={token}")).await.unwrap();
    assert_eq!(stream.status(), 200);
    assert_eq!(stream.headers()["content-type"], "text/event-stream");
    drop(stream);
    // Not for another sale, not forged, not without one, not a queue ticket passed off as one.
    for (sale, query) in [
        (other, format!("?stream_token={token}")),
        (id, format!("?stream_token={}x", &token[..token.len() - 1])),
        (id, String::new()),
        (id, "?stream_token=".to_owned()),
    ] {
        let refused = open(sale, query.clone()).await.unwrap();
        assert_eq!(refused.status(), 401, "{sale} {query}");
    }
    let ticket = app.buyer(Method::GET, &format!("/sales/{id}/queue"), "alice", None).await.body["ticket"].clone();
    if let Some(ticket) = ticket.as_str() {
        assert_eq!(open(id, format!("?stream_token={ticket}")).await.unwrap().status(), 401);
    }
}

#[sqlx::test(migrator = "flashsale_server::startup::MIGRATOR")]
async fn only_listed_origins_may_call_the_api_from_a_browser(db: sqlx::PgPool) {
    let web =
        WebSettings { cors_origins: CorsOrigins(vec!["https://shop.example".parse().unwrap()]), ..Default::default() };
    let app = TestApp::with_tuning(db.clone(), Tuning { web, ..Tuning::default() }).await;
    let listed = app.send(Method::GET, "/sales", &[("origin", "https://shop.example")], "").await;
    assert_eq!(listed.headers["access-control-allow-origin"], "https://shop.example");
    assert!(listed.headers["access-control-expose-headers"].to_str().unwrap().contains("retry-after"));
    assert!(listed.headers.get("access-control-allow-credentials").is_none());
    let other = app.send(Method::GET, "/sales", &[("origin", "https://evil.example")], "").await;
    assert_eq!(other.status, 200);
    assert!(other.headers.get("access-control-allow-origin").is_none());
    assert_eq!(other.headers["vary"], "origin");

    let preflight = [("origin", "https://shop.example"), ("access-control-request-method", "POST")];
    let answer = app.send(Method::OPTIONS, "/sales/1/queue", &preflight, "").await;
    assert_eq!(answer.status, 204);
    assert!(answer.headers["access-control-allow-headers"].to_str().unwrap().contains("idempotency-key"));
    assert!(answer.headers["access-control-allow-methods"].to_str().unwrap().contains("POST"));

    // Nothing listed (the default): no CORS headers at all.
    let closed = TestApp::new(db).await;
    let reply = closed.send(Method::GET, "/sales", &[("origin", "https://shop.example")], "").await;
    assert!(reply.headers.get("access-control-allow-origin").is_none());
}
