//! Health, readiness, metrics, the OpenAPI document, start-up refusals and background upkeep.

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::{TestApp, weekly_sale};
use axum::http::Method;
use chrono::{TimeDelta, Utc};
use clap::Parser;
use flashsale_server::AppState;
use flashsale_server::config::{RawSettings, Secrets, Settings};
use flashsale_server::jobs::upkeep;
use flashsale_server::startup::{self, StartupError};
use flashsale_testkit::SaleBuilder;
use serde_json::json;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    settings: RawSettings,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn settings(redis_url: &str) -> Settings {
    let args = ["flashsale", "--redis-url", redis_url, "--startup-timeout-secs", "2"];
    Cli::try_parse_from(args).unwrap().settings.validate().unwrap()
}

/// A private redis-server on a free port, killed when dropped.
struct PrivateRedis {
    child: Child,
    url: String,
}

impl PrivateRedis {
    fn start(extra: &[&str]) -> PrivateRedis {
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(extra)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server is installed (the test script installs it)");
        // From here on, dropping `redis` kills and reaps the process, panic or not.
        let redis = PrivateRedis { child, url: format!("redis://127.0.0.1:{port}") };
        for _ in 0..50 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return redis;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("private redis-server did not start");
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn start_up_refuses_a_redis_that_evicts_keys() {
    let redis = PrivateRedis::start(&["--maxmemory-policy", "allkeys-lru"]);
    let refused = startup::connect_redis(&settings(&redis.url)).await.unwrap_err();
    assert!(matches!(&refused, StartupError::RedisEvicts { policy } if policy == "allkeys-lru"), "{refused}");
    assert!(refused.to_string().contains("noeviction"));
}

#[tokio::test]
async fn start_up_accepts_a_redis_with_noeviction() {
    let redis = PrivateRedis::start(&["--maxmemory-policy", "noeviction"]);
    startup::connect_redis(&settings(&redis.url)).await.unwrap();
}

#[tokio::test]
async fn start_up_gives_up_on_an_unreachable_redis_after_its_timeout() {
    let port = free_port();
    let started = std::time::Instant::now();
    let refused = startup::connect_redis(&settings(&format!("redis://127.0.0.1:{port}"))).await.unwrap_err();
    assert!(matches!(refused, StartupError::RedisUnreachable { .. }), "{refused}");
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[tokio::test]
async fn start_up_gives_up_on_an_unreachable_postgres_after_its_timeout() {
    let url = format!("postgres://postgres@127.0.0.1:{}/flashsale", free_port());
    let args = ["flashsale", "--database-url", &url, "--startup-timeout-secs", "2"];
    let settings = Cli::try_parse_from(args).unwrap().settings.validate().unwrap();
    let refused = startup::connect_postgres(&settings).await.unwrap_err();
    assert!(matches!(refused, StartupError::PostgresUnreachable { .. }), "{refused}");
    // The message names the target but never a password.
    assert!(refused.to_string().contains("127.0.0.1"), "{refused}");
}

#[sqlx::test(migrator = "flashsale_server::startup::MIGRATOR")]
async fn readiness_reports_a_dead_redis_while_health_stays_up(db: sqlx::PgPool) {
    let app = TestApp::new(db.clone()).await;
    app.create_sale(weekly_sale()).await;
    assert_eq!(app.get("/readyz").await.status, 200);
    assert_eq!(app.get("/healthz").await.body, json!({"status": "ok"}));

    let port = free_port();
    let dead = startup::redis_pool(&format!("redis://127.0.0.1:{port}"), 2).unwrap();
    let state =
        AppState::new(db, dead, app.redis.keys.clone(), Secrets::dev(), flashsale_server::state::Tuning::default());
    let broken = TestApp {
        router: flashsale_server::app(state.clone(), 1024),
        state,
        redis: app.redis.clone(),
        db: app.db.clone(),
    };
    let reply = broken.get("/readyz").await;
    reply.assert_problem(503, "unavailable");
    assert!(reply.body["detail"].as_str().unwrap().contains("Redis"));
    assert_eq!(broken.get("/healthz").await.status, 200);
    // Listing a sale needs its live ledger: a clear 503, not a 500 or a hang.
    broken.get("/sales").await.assert_problem(503, "unavailable");
}

#[sqlx::test(migrator = "flashsale_server::startup::MIGRATOR")]
async fn metrics_count_requests_by_route_template(db: sqlx::PgPool) {
    let app = TestApp::new(db).await;
    let id = app.create_sale(weekly_sale()).await["id"].as_i64().unwrap();
    app.get(&format!("/sales/{id}")).await;
    let reply = app.send(Method::GET, "/metrics", &[], axum::body::Body::empty()).await;
    let text = reply.body.as_str().unwrap();
    assert!(text.contains("http_requests_total{method=\"GET\",route=\"/sales/{id}\",status=\"200\"}"), "{text}");
    assert!(text.contains("http_request_duration_seconds_bucket{method=\"POST\",route=\"/admin/sales\""), "{text}");
    assert!(!text.contains(&format!("/sales/{id}\"")), "raw ids must not become labels");
    // Every metric shown carries its help text.
    for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        let name = line.split_whitespace().nth(2).unwrap();
        assert!(text.contains(&format!("# HELP {name} ")), "{name} has no # HELP line");
    }
}

#[sqlx::test(migrator = "flashsale_server::startup::MIGRATOR")]
async fn the_openapi_document_describes_every_route(db: sqlx::PgPool) {
    let app = TestApp::new(db).await;
    let doc = app.get("/openapi.json").await.body;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths: BTreeSet<&str> = doc["paths"].as_object().unwrap().keys().map(String::as_str).collect();
    let expected: BTreeSet<&str> = [
        "/sales",
        "/sales/{id}",
        "/sales/{id}/queue",
        "/sales/{id}/queue/events",
        "/sales/{id}/queue/stream-token",
        "/sales/{id}/queue/challenge",
        "/sales/{id}/queue/priority",
        "/sales/{id}/batches/{batch_no}/draw",
        "/sales/{id}/batches/{batch_no}/draw/entrants",
        "/sales/{id}/batches/{batch_no}/report",
        "/admin/sales/{id}/batches/{batch_no}/report",
        "/sales/{id}/orders",
        "/orders",
        "/orders/{id}",
        "/orders/{id}/cancel",
        "/payments/callback",
        "/admin/sales",
        "/admin/sales/{id}",
        "/admin/sales/{id}/pause",
        "/admin/sales/{id}/resume",
        "/admin/sales/{id}/close",
        "/admin/sales/{id}/audit",
        "/admin/sales/{id}/priority-codes",
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
    ]
    .into();
    assert_eq!(paths, expected);
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            assert!(operation["responses"].as_object().is_some_and(|r| !r.is_empty()), "{method} {path}");
            if path.contains("/queue") || path.contains("orders") {
                assert_eq!(operation["security"][0]["buyer_jwt"], json!([]), "{method} {path}");
                assert!(operation["responses"]["401"].is_object(), "{method} {path} documents 401");
            }
            if path == "/payments/callback" {
                assert!(operation["responses"]["401"].is_object(), "the callback documents its signature check");
            }
            if path.starts_with("/admin") {
                assert!(operation["responses"]["401"].is_object(), "{method} {path} documents 401");
                assert_eq!(operation["security"][0]["admin_token"], json!([]), "{method} {path}");
            }
        }
    }
    for schema in
        ["NewSale", "SalePatch", "AdminSale", "PublicSale", "Problem", "QueueState", "Order", "PaymentReceipt"]
    {
        assert!(doc["components"]["schemas"][schema].is_object(), "{schema} missing");
    }
}

#[sqlx::test(migrator = "flashsale_server::startup::MIGRATOR")]
async fn a_finished_weekly_batch_rolls_over_once_even_with_several_instances(db: sqlx::PgPool) {
    let app = TestApp::new(db).await;
    let sale = app.create_sale(weekly_sale()).await;
    let id = sale["id"].as_i64().unwrap();
    let closes_at = chrono::DateTime::parse_from_rfc3339(sale["current_batch"]["closes_at"].as_str().unwrap())
        .unwrap()
        .with_timezone(&Utc);
    let later = closes_at + TimeDelta::seconds(1);
    // Before the window ends nothing rolls over.
    assert_eq!(upkeep::pass(&app.state, closes_at - TimeDelta::seconds(1)).await.unwrap().rolled_over, 0);
    // Three instances at once: exactly one creates the next batch.
    let passes = (0..3).map(|_| upkeep::pass(&app.state, later));
    let rolled: usize = futures::future::join_all(passes).await.into_iter().map(|p| p.unwrap().rolled_over).sum();
    assert_eq!(rolled, 1);
    let batches: Vec<(i64, chrono::DateTime<Utc>)> =
        sqlx::query_as("SELECT batch_no, opens_at FROM sale_batches WHERE sale_id = $1 ORDER BY batch_no")
            .bind(id)
            .fetch_all(&app.db)
            .await
            .unwrap();
    assert_eq!(batches.len(), 2);
    assert_eq!(batches[1].1 - batches[0].1, TimeDelta::days(7));
    let next = flashsale_core::BatchNo::FIRST.next();
    let ledger = app.state.inventory.snapshot(id.try_into().unwrap(), next).await.unwrap().unwrap();
    assert_eq!((ledger.total.get(), ledger.available.get()), (100, 100));
}

#[sqlx::test(migrator = "flashsale_server::startup::MIGRATOR")]
async fn upkeep_recreates_a_ledger_redis_lost(db: sqlx::PgPool) {
    let app = TestApp::new(db).await;
    app.create_sale(weekly_sale()).await;
    assert_eq!(upkeep::pass(&app.state, Utc::now()).await.unwrap().ledgers_rebuilt, 0);
    app.redis.delete_all_keys();
    assert_eq!(upkeep::pass(&app.state, Utc::now()).await.unwrap().ledgers_rebuilt, 1);
    assert_eq!(app.get("/sales").await.body["sales"][0]["units_left"], 100);
}

#[sqlx::test(migrator = "flashsale_server::startup::MIGRATOR")]
async fn the_audit_counts_a_ledger_that_does_not_balance(db: sqlx::PgPool) {
    let app = TestApp::new(db).await;
    let id = app.create_sale(weekly_sale()).await["id"].as_i64().unwrap();
    assert_eq!(upkeep::pass(&app.state, Utc::now()).await.unwrap().unbalanced, 0);
    // A unit vanishes from the ledger (a bug, or a hand edit).
    let ledger = app.redis.keys.batch(id.try_into().unwrap(), flashsale_core::BatchNo::FIRST).ledger();
    let mut conn = app.state.redis.conn().await.unwrap();
    let _: i64 = redis::cmd("HINCRBY").arg(&ledger).arg("available").arg(-1).query_async(&mut conn).await.unwrap();
    // Run as its job runs it, with the instance's metrics in scope.
    assert_eq!(app.state.metrics.scope(upkeep::pass(&app.state, Utc::now())).await.unwrap().unbalanced, 1);
    let metrics = app.send(Method::GET, "/metrics", &[], axum::body::Body::empty()).await;
    assert!(metrics.body.as_str().unwrap().contains(&format!("inventory_drift_units{{sale=\"{id}\"}} 1")));
}

#[sqlx::test(migrator = "flashsale_server::startup::MIGRATOR")]
async fn readiness_fails_while_the_admission_ticker_makes_no_progress(db: sqlx::PgPool) {
    let app = crate::common::uncached(db).await;
    let id = app.create_sale(SaleBuilder::one_off().opening_in(30).body()).await["id"].as_i64().unwrap();
    crate::common::open_now(&app, id).await;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let ticker = tokio::spawn(flashsale_server::jobs::admission::run(app.state.clone(), shutdown.clone()));
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(app.get("/readyz").await.status, 200);
    // The only open sale's state is broken in a way every admission step fails on, while Redis
    // and PostgreSQL answer: admission is dead, and readiness says so.
    let ledger = app.redis.keys.batch(id.try_into().unwrap(), flashsale_core::BatchNo::FIRST).ledger();
    let mut conn = app.state.redis.conn().await.unwrap();
    let _: () = redis::cmd("SET").arg(&ledger).arg("not a ledger").query_async(&mut conn).await.unwrap();
    tokio::time::sleep(flashsale_server::health::TICKER_STALE_AFTER + std::time::Duration::from_millis(700)).await;
    let reply = app.get("/readyz").await;
    reply.assert_problem(503, "unavailable");
    assert!(reply.body["detail"].as_str().unwrap().contains("admission ticker"), "{reply:?}");
    // Repaired: ready again at the next pass.
    let _: () = redis::cmd("DEL").arg(&ledger).query_async(&mut conn).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(app.get("/readyz").await.status, 200);
    shutdown.cancel();
    ticker.await.unwrap();
}

mod slow_clients {
    //! The real listener on a port of the test's own, with short bounds, against clients that
    //! are silent, slow or too many.

    use std::net::SocketAddr;
    use std::time::{Duration, Instant};

    use flashsale_server::listener::{self, ConnectionLimits};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use crate::common::TestApp;

    /// A whole HTTP exchange on a fresh connection: the raw response text.
    async fn exchange(addr: SocketAddr, request: &str) -> String {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut response))
            .await
            .expect("the server answered and closed")
            .unwrap();
        String::from_utf8_lossy(&response).into_owned()
    }

    async fn healthz(addr: SocketAddr) -> String {
        exchange(addr, "GET /healthz HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").await
    }

    /// How long until the server closes `stream` (reads to the end, discarding any answer).
    async fn closed_after(stream: &mut TcpStream, started: Instant) -> Duration {
        let mut sink = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut sink))
            .await
            .expect("the server never closed the connection");
        started.elapsed()
    }

    /// A connection that never sends a byte, one that sends its head a byte every 200 ms, and one
    /// whose body stalls are each closed within their bound while `/healthz` keeps answering;
    /// connections over the cap get a 503 problem at once, and the cap frees as they close.
    #[sqlx::test(migrator = "flashsale_server::startup::MIGRATOR")]
    async fn slow_and_silent_clients_are_cut_off_while_healthz_keeps_answering(db: sqlx::PgPool) {
        let app = TestApp::new(db).await;
        let limits = ConnectionLimits {
            header_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(2),
            max_connections: 8,
        };
        let socket = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let shutdown = tokio_util::sync::CancellationToken::new();
        let server =
            tokio::spawn(listener::serve(socket, app.router.clone(), limits, shutdown.clone().cancelled_owned()));

        let started = Instant::now();
        let mut silent = TcpStream::connect(addr).await.unwrap();
        let trickler = tokio::spawn(async move {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            for byte in b"GET /healthz HTTP/1.1\r\nHost: test\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n" {
                if stream.write_all(&[*byte]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            started.elapsed()
        });
        let mut stalled = TcpStream::connect(addr).await.unwrap();
        stalled
            .write_all(b"POST /payments/callback HTTP/1.1\r\nHost: test\r\nContent-Length: 100\r\n\r\n{\"order_id\":")
            .await
            .unwrap();
        assert!(healthz(addr).await.starts_with("HTTP/1.1 200"), "healthz answers meanwhile");

        let silent_for = closed_after(&mut silent, started).await;
        assert!(silent_for < Duration::from_secs(3), "a silent connection lived {silent_for:?}");
        let stalled_for = closed_after(&mut stalled, started).await;
        assert!(stalled_for < Duration::from_secs(5), "a stalled body held its connection {stalled_for:?}");
        let trickled_for = trickler.await.unwrap();
        // The head would take 16 s at this pace; it is cut at the header timeout (a write or two
        // may still succeed into the socket's buffer after the close).
        assert!(trickled_for < Duration::from_secs(4), "a trickled head lived {trickled_for:?}");
        eprintln!(
            "measured: silent closed after {silent_for:?}, stalled body {stalled_for:?}, trickled head {trickled_for:?}"
        );
        assert!(healthz(addr).await.starts_with("HTTP/1.1 200"));

        // The cap: eight connections open, the ninth is refused with a problem.
        let mut held = Vec::new();
        for _ in 0..8 {
            held.push(TcpStream::connect(addr).await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let refused = healthz(addr).await;
        assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
        assert!(refused.contains("application/problem+json") && refused.contains("retry-after: 1"), "{refused}");
        // The held connections send nothing, so the header timeout frees the cap.
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        assert!(healthz(addr).await.starts_with("HTTP/1.1 200"), "the cap is free again");
        drop(held);

        shutdown.cancel();
        server.await.unwrap().unwrap();
    }

    /// One buyer holds at most the allowed event streams at once; a stream that ends gives its
    /// place back.
    #[sqlx::test(migrator = "flashsale_server::startup::MIGRATOR")]
    async fn one_buyer_cannot_hold_more_event_streams_than_allowed(db: sqlx::PgPool) {
        use axum::http::Method;
        let app = TestApp::with_tuning(db, crate::common::uncached_tuning()).await;
        let sale = crate::common::shop::open_sale(&app, 5, 1, 60).await;
        let joined = app.buyer(Method::POST, &format!("/sales/{sale}/queue"), "alice", None).await;
        assert!(joined.status.is_success(), "{joined:?}");
        let stream = |app: &TestApp| {
            let request = axum::http::Request::get(format!("/sales/{sale}/queue/events"))
                .header("authorization", format!("Bearer {}", crate::common::buyer_jwt("alice", 600)))
                .body(axum::body::Body::empty())
                .unwrap();
            tower::ServiceExt::oneshot(app.router.clone(), request)
        };
        let first = stream(&app).await.unwrap();
        let second = stream(&app).await.unwrap();
        assert_eq!((first.status().as_u16(), second.status().as_u16()), (200, 200));
        let third = stream(&app).await.unwrap();
        assert_eq!(third.status().as_u16(), 429);
        drop(first);
        let again = stream(&app).await.unwrap();
        assert_eq!(again.status().as_u16(), 200, "the closed stream's place is free");
        drop((second, again));
    }
}

#[sqlx::test(migrator = "flashsale_server::startup::MIGRATOR")]
async fn every_answer_carries_a_request_id_and_a_sane_one_sent_is_kept(db: sqlx::PgPool) {
    let app = TestApp::new(db).await;
    let fresh = app.get("/healthz").await;
    let id = fresh.headers["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(id.len(), 16, "a new id: {id}");
    assert_ne!(app.get("/healthz").await.headers["x-request-id"], id.as_str(), "one id per request");
    // A load balancer's id follows the request through, on problems too.
    let kept =
        app.send(Method::GET, "/sales/999999", &[("x-request-id", "lb-7f3a.2")], axum::body::Body::empty()).await;
    kept.assert_problem(404, "not_found");
    assert_eq!(kept.headers["x-request-id"], "lb-7f3a.2");
    // One that could forge a log line or bloat it is replaced.
    for forged in ["a b", "x\"} level=ERROR", &"a".repeat(65)] {
        let reply = app.send(Method::GET, "/healthz", &[("x-request-id", forged)], axum::body::Body::empty()).await;
        assert_ne!(reply.headers["x-request-id"], forged);
    }
}
