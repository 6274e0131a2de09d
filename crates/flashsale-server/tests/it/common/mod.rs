//! Shared helpers for the server's integration tests: the real router over a per-test
//! PostgreSQL database (`#[sqlx::test]`) and a per-test Redis key space.

pub mod shop;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use flashsale_server::config::{Secrets, dev};
use flashsale_server::state::Tuning;
use flashsale_server::{AppState, app};
use flashsale_testkit::{SaleBuilder, TestRedis};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use sqlx::PgPool;
use tower::ServiceExt;

/// The body limit the tests run with (the server's default).
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// A router over real PostgreSQL and Redis, isolated for one test.
pub struct TestApp {
    pub router: Router,
    pub state: AppState,
    pub redis: TestRedis,
    pub db: PgPool,
}

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub body: Value,
}

impl Reply {
    /// Asserts an RFC 9457 problem with this status and code.
    #[track_caller]
    pub fn assert_problem(&self, status: u16, code: &str) {
        assert_eq!(self.status.as_u16(), status, "{self:?}");
        assert_eq!(self.headers["content-type"], "application/problem+json", "{self:?}");
        assert_eq!(self.body["code"], code, "{self:?}");
        assert_eq!(self.body["status"], status, "{self:?}");
        assert_eq!(self.body["type"], format!("urn:problem:flashsale:{code}"));
    }
}

impl TestApp {
    pub async fn new(db: PgPool) -> TestApp {
        TestApp::with_tuning(db, Tuning::default()).await
    }

    /// A test app whose public views are cached for `ttl`.
    pub async fn with_cache_ttl(db: PgPool, ttl: std::time::Duration) -> TestApp {
        TestApp::with_tuning(db, Tuning { public_cache_ttl: ttl, ..Tuning::default() }).await
    }

    /// A test app with the given tunables.
    pub async fn with_tuning(db: PgPool, tuning: Tuning) -> TestApp {
        TestApp::on_redis(db, tuning, TestRedis::new()).await
    }

    /// A test app over `redis` (a key space on a Redis server of the test's own, for faults).
    pub async fn on_redis(db: PgPool, tuning: Tuning, redis: TestRedis) -> TestApp {
        let hot = redis.handle().await;
        flashsale_inventory::scripts::load_all(&hot).await.unwrap();
        flashsale_queue::scripts::load_all(&hot).await.unwrap();
        flashsale_order::load_scripts(&hot).await.unwrap();
        // Each test app records into metrics of its own: one test's counters never show in
        // another's `/metrics`.
        let tuning = Tuning { metrics: flashsale_server::metrics::Metrics::own(), ..tuning };
        let state = AppState::new(db.clone(), hot, redis.keys.clone(), Secrets::dev(), tuning);
        redis.clean_after(state.background.clone());
        let router = app(state.clone(), MAX_BODY_BYTES);
        TestApp { router, state, redis, db }
    }

    /// Sends a request with the given headers and raw body.
    pub async fn send(&self, method: Method, uri: &str, headers: &[(&str, &str)], body: impl Into<Body>) -> Reply {
        let mut request = Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = self.router.clone().oneshot(request.body(body.into()).unwrap()).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        Reply { status, headers, body }
    }

    /// An admin request with a JSON body (or none), the dev token and extra headers.
    pub async fn admin_with(&self, method: Method, uri: &str, body: Option<Value>, extra: &[(&str, &str)]) -> Reply {
        let auth = format!("Bearer {}", dev::ADMIN_TOKEN);
        let mut headers = vec![("authorization", auth.as_str()), ("content-type", "application/json")];
        headers.extend_from_slice(extra);
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        self.send(method, uri, &headers, body).await
    }

    /// An admin request with a JSON body (or none) and the dev token.
    pub async fn admin(&self, method: Method, uri: &str, body: Option<Value>) -> Reply {
        self.admin_with(method, uri, body, &[]).await
    }

    /// A shopper request: the buyer's JWT and, optionally, their last queue ticket.
    pub async fn buyer(&self, method: Method, uri: &str, user: &str, ticket: Option<&str>) -> Reply {
        let auth = format!("Bearer {}", buyer_jwt(user, 600));
        let mut headers = vec![("authorization", auth.as_str())];
        if let Some(ticket) = ticket {
            headers.push(("x-queue-ticket", ticket));
        }
        self.send(method, uri, &headers, Body::empty()).await
    }

    /// A public GET.
    pub async fn get(&self, uri: &str) -> Reply {
        self.send(Method::GET, uri, &[], Body::empty()).await
    }

    /// Creates a sale from `body`, asserting 201; returns its admin view.
    pub async fn create_sale(&self, body: Value) -> Value {
        let reply = self.admin(Method::POST, "/admin/sales", Some(body)).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{reply:?}");
        reply.body
    }

    /// Rows in a table, to prove a refused request wrote nothing.
    pub async fn count(&self, table: &str) -> i64 {
        sqlx::query_scalar(&format!("SELECT count(*) FROM {table}")).fetch_one(&self.db).await.unwrap()
    }
}

/// A valid weekly Tuesday-noon sale.
pub fn weekly_sale() -> Value {
    SaleBuilder::weekly().body()
}

/// A valid one-off sale opening in an hour.
pub fn one_off_sale() -> Value {
    SaleBuilder::one_off().body()
}

/// Moves `units` of a batch's ledger from available to reserved, the way reservations will, so
/// that stock changes can be tested against units buyers hold.
pub async fn hold_units(app: &TestApp, sale: i64, units: i64) {
    let keys = app.redis.keys.batch(sale.try_into().unwrap(), flashsale_core::BatchNo::FIRST);
    let mut conn = app.state.redis.conn().await.unwrap();
    let _: () = redis::pipe()
        .atomic()
        .hincr(keys.ledger(), "available", -units)
        .hincr(keys.ledger(), "reserved", units)
        .query_async(&mut conn)
        .await
        .unwrap();
}

/// A buyer JWT as an identity provider would issue it (HS256, dev secret), valid for `secs`.
pub fn buyer_jwt(user: &str, secs: i64) -> String {
    let claims = json!({ "sub": user, "exp": chrono::Utc::now().timestamp() + secs });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(dev::JWT_SECRET.as_bytes()),
    )
    .unwrap()
}

/// Moves a sale's current batch opening into the past, as if the clock had reached it, in
/// PostgreSQL and in the batch's Redis ledger (the app must not cache public views, or it would
/// not notice).
pub async fn open_now(app: &TestApp, sale: i64) {
    let opens_at: chrono::DateTime<chrono::Utc> = sqlx::query_scalar(
        "UPDATE sale_batches SET opens_at = now() - interval '1 second' WHERE sale_id = $1 RETURNING opens_at",
    )
    .bind(sale)
    .fetch_one(&app.db)
    .await
    .unwrap();
    let ledger = app.redis.keys.batch(sale.try_into().unwrap(), flashsale_core::BatchNo::FIRST).ledger();
    let mut conn = app.state.redis.conn().await.unwrap();
    let _: () = redis::cmd("HSET")
        .arg(&ledger)
        .arg("opens_at_ms")
        .arg(opens_at.timestamp_millis())
        .query_async(&mut conn)
        .await
        .unwrap();
}

/// A test app that caches nothing, so tests see every change at once.
pub async fn uncached(db: PgPool) -> TestApp {
    TestApp::with_tuning(db, uncached_tuning()).await
}

/// The tunables of [`uncached`].
pub fn uncached_tuning() -> Tuning {
    Tuning {
        public_cache_ttl: std::time::Duration::ZERO,
        queue: flashsale_server::config::QueueSettings {
            oversubscription: 1.0,
            counter_cache_ttl: std::time::Duration::ZERO,
            // The queue tests count the reach exactly: the held units' buyers, no margin.
            reach_margin_min: 0,
            ..Default::default()
        },
        ..Tuning::default()
    }
}

/// A one-off sale opening in a minute, its pre-queue open now.
pub fn sale_in_prequeue(stock: u32) -> Value {
    SaleBuilder::one_off().opening_in(60).prequeue_secs(600).stock(stock).body()
}

/// Records the batch's every unit as sold, the way paid orders will, so sold-out behaviour can be
/// tested before orders exist.
pub async fn sell_out(app: &TestApp, sale: i64) {
    let ledger = app.redis.keys.batch(sale.try_into().unwrap(), flashsale_core::BatchNo::FIRST).ledger();
    let mut conn = app.state.redis.conn().await.unwrap();
    let total: i64 = redis::cmd("HGET").arg(&ledger).arg("total").query_async(&mut conn).await.unwrap();
    let _: () = redis::cmd("HSET")
        .arg(&ledger)
        .arg("available")
        .arg(0)
        .arg("reserved")
        .arg(0)
        .arg("sold")
        .arg(total)
        .query_async(&mut conn)
        .await
        .unwrap();
}
