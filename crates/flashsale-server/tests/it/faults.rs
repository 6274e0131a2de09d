//! Faults replayed against real Redis and PostgreSQL: Redis going back to an older copy of its
//! state (restored keys, a restart from a file missing its last writes), Redis losing a batch
//! while an operator edits it, a buyer's aborted order retried, corrupt counters in one sale.
//! Whatever Redis does, PostgreSQL never holds more than the stock or a buyer's limit, and Redis
//! is repaired from it within seconds.

use crate::common::TestApp;
use crate::common::shop::*;
use axum::http::Method;
use chrono::Utc;
use flashsale_core::{BatchNo, SaleId};
use flashsale_testkit::{RedisServer, SaleBuilder, TestRedis};
use serde_json::json;

/// Every key of the test's prefix deleted: what a `FLUSHALL` does to the test's sales.
fn flush(app: &TestApp) {
    app.redis.delete_all_keys();
}

/// The batch's keys as `DUMP`ed now, to be put back later (an older copy of Redis's state).
async fn dump_batch(app: &TestApp, sale: i64) -> Vec<(String, Option<Vec<u8>>)> {
    let mut conn = app.state.redis.conn().await.unwrap();
    let mut dumped = Vec::new();
    for key in app.redis.keys_in_use().await.into_iter().filter(|k| k.contains(&format!("{{sale:{sale}}}"))) {
        let bytes: Option<Vec<u8>> = redis::cmd("DUMP").arg(&key).query_async(&mut conn).await.unwrap();
        dumped.push((key, bytes));
    }
    dumped
}

/// Puts the dumped copy back (`RESTORE … REPLACE`), and deletes the batch's keys made since.
async fn restore_batch(app: &TestApp, sale: i64, dumped: &[(String, Option<Vec<u8>>)]) {
    let mut conn = app.state.redis.conn().await.unwrap();
    for key in app.redis.keys_in_use().await.into_iter().filter(|k| k.contains(&format!("{{sale:{sale}}}"))) {
        if !dumped.iter().any(|(k, _)| *k == key) {
            let _: () = redis::cmd("DEL").arg(&key).query_async(&mut conn).await.unwrap();
        }
    }
    for (key, bytes) in dumped {
        let bytes = bytes.as_ref().unwrap();
        let _: () =
            redis::cmd("RESTORE").arg(key).arg(0).arg(bytes).arg("REPLACE").query_async(&mut conn).await.unwrap();
    }
}

/// (ticker `inflight`, step `:r` total, step `:n` total) of a sale's queue.
async fn step_counts(app: &TestApp, sale: i64) -> (i64, i64, i64) {
    let keys = app.redis.keys.batch(SaleId::try_from(sale).unwrap(), BatchNo::FIRST);
    let mut conn = app.state.redis.conn().await.unwrap();
    let inflight: Option<i64> =
        redis::cmd("HGET").arg(keys.queue_ticker()).arg("inflight").query_async(&mut conn).await.unwrap();
    let info: Vec<(String, String)> =
        redis::cmd("HGETALL").arg(keys.queue_step_info()).query_async(&mut conn).await.unwrap();
    let sum =
        |suffix: &str| info.iter().filter(|(k, _)| k.ends_with(suffix)).map(|(_, v)| v.parse::<i64>().unwrap()).sum();
    (inflight.unwrap_or(0), sum(":r"), sum(":n"))
}

/// Buyers `prefix-0..n` each order one unit with a fresh token; returns how many got 201.
async fn buyers_order(app: &TestApp, sale: i64, prefix: &str, n: u64, first_ticket: u64) -> usize {
    let mut created = 0;
    for i in 0..n {
        let user = format!("{prefix}-{i}");
        let reply = order(app, sale, &user, "k", &token(app, sale, &user, first_ticket + i), 1).await;
        if reply.status == 201 {
            created += 1;
        }
    }
    created
}

#[sqlx::test(migrator = "flashsale_server::startup::MIGRATOR")]
async fn an_order_aborted_and_retried_counts_once_and_admission_goes_on_for_every_sale(db: sqlx::PgPool) {
    let app = uncached(db).await;
    let (x, y) = (open_sale(&app, 10, 2, 600).await, open_sale(&app, 10, 2, 600).await);
    sqlx::query("UPDATE sales SET admission_ttl_secs = 60").execute(&app.db).await.unwrap();
    assert_eq!(order(&app, x, "mallory", "K", &token(&app, x, "mallory", 1), 1).await.status, 201);
    let in_y = admitted_token(&app, y, "mallory").await;
    assert_eq!(step_counts(&app, y).await, (1, 0, 1));
    // The same key in another sale: the reservation is made, the write refused, the
    // reservation aborted and the token handed back.
    order(&app, y, "mallory", "K", &in_y, 1).await.assert_problem(422, "idempotency_key_reused");
    assert_eq!(step_counts(&app, y).await, (1, 0, 1), "the abort undid what the reservation counted");
    let retried = order(&app, y, "mallory", "K2", &in_y, 1).await;
    assert_eq!(retried.status, 201, "{retried:?}");
    assert_eq!(step_counts(&app, y).await, (0, 1, 1), "counted once");
    // Every view and the ticker still work, for both sales.
    assert_eq!(app.get("/sales").await.body["sales"].as_array().unwrap().len(), 2);
    flashsale_server::service::queue::admit_all(&app.state, Utc::now()).await.unwrap();
    admitted_token(&app, x, "bob").await;
}

#[sqlx::test(migrator = "flashsale_server::startup::MIGRATOR")]
async fn one_sales_corrupt_counters_never_stop_the_others_and_are_repaired(db: sqlx::PgPool) {
    let app = uncached(db).await;
    let (x, y) = (open_sale(&app, 10, 2, 600).await, open_sale(&app, 10, 2, 600).await);
    assert_eq!(order(&app, y, "alice", "k", &token(&app, y, "alice", 1), 2).await.status, 201);
    let keys = app.redis.keys.batch(SaleId::try_from(y).unwrap(), BatchNo::FIRST);
    let mut conn = app.state.redis.conn().await.unwrap();
    let _: () = redis::pipe()
        .hset(keys.queue_ticker(), "inflight", -1)
        .set(keys.queue_tail(), -4)
        .hset(keys.ledger(), "available", -3)
        .query_async(&mut conn)
        .await
        .unwrap();
    // Public list, admin list, the ticker and another sale's buyers: all unaffected.
    let listed = app.get("/sales").await;
    assert_eq!((listed.status.as_u16(), listed.body["sales"].as_array().unwrap().len()), (200, 2), "{listed:?}");
    assert_eq!(app.admin(Method::GET, "/admin/sales", None).await.status, 200);
    assert_eq!(app.get(&format!("/sales/{y}")).await.status, 200);
    flashsale_server::service::queue::admit_all(&app.state, Utc::now()).await.unwrap();
    admitted_token(&app, x, "bob").await;
    // The audit sees y's ledger does not balance: fenced, rebuilt from PostgreSQL in seconds.
    let pass = flashsale_server::jobs::upkeep::pass(&app.state, Utc::now()).await.unwrap();
    assert_eq!(pass.unbalanced, 1);
    assert_eq!(ledger_back_within(&app, y, 5).await, (8, 2, 0));
}

#[sqlx::test(migrator = "flashsale_server::startup::MIGRATOR")]
async fn the_database_refuses_what_a_wrong_redis_reserves(db: sqlx::PgPool) {
    let app = uncached(db).await;
    let id = open_sale(&app, 3, 2, 600).await;
    assert_eq!(buyers_order(&app, id, "early", 3, 1).await, 3);
    // Redis is wrong in the way that oversells: more stock than the record (a balanced ledger,
    // so nothing in Redis alone can tell), and alice's holdings forgotten.
    let keys = app.redis.keys.batch(SaleId::try_from(id).unwrap(), BatchNo::FIRST);
    let mut conn = app.state.redis.conn().await.unwrap();
    let _: () = redis::pipe()
        .hincr(keys.ledger(), "total", 5)
        .hincr(keys.ledger(), "available", 5)
        .query_async(&mut conn)
        .await
        .unwrap();
    let late = token(&app, id, "late", 10);
    let refused = order(&app, id, "late", "k", &late, 1).await;
    refused.assert_problem(409, "sold_out");
    // The batch was fenced and is rebuilt from PostgreSQL; then a retry gets the same answer.
    assert_eq!(ledger_back_within(&app, id, 5).await, (0, 3, 0));
    let retried = order(&app, id, "late", "k", &late, 1).await;
    assert_eq!((retried.status, &retried.body), (refused.status, &refused.body));
    assert_eq!(committed_units(&app, id).await, 3);
    let metrics = app.send(Method::GET, "/metrics", &[], axum::body::Body::empty()).await.body;
    assert!(metrics.as_str().unwrap().contains("orders_refused_by_database_total{reason=\"sold_out\"}"));

    // The per-user limit, the same way: Redis forgets what early-0 holds, the database does not.
    let _: () = redis::pipe()
        .hincr(keys.ledger(), "total", 4)
        .hincr(keys.ledger(), "available", 4)
        .hset(keys.holdings(), "early-0", 0)
        .query_async(&mut conn)
        .await
        .unwrap();
    sqlx::query("UPDATE sales SET per_user_limit = 1").execute(&app.db).await.unwrap();
    sqlx::query("UPDATE sale_batches SET stock = 7").execute(&app.db).await.unwrap();
    let again = order(&app, id, "early-0", "k2", &token(&app, id, "early-0", 20), 1).await;
    again.assert_problem(409, "limit_reached");
    let held: i64 = sqlx::query_scalar("SELECT units FROM batch_holdings WHERE user_id = 'early-0'")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(held, 1);
}

#[sqlx::test(migrator = "flashsale_server::startup::MIGRATOR")]
async fn stock_below_what_the_record_holds_is_refused_even_when_redis_forgot(db: sqlx::PgPool) {
    let app = uncached(db).await;
    let id = open_sale(&app, 5, 2, 600).await;
    sqlx::query("UPDATE sales SET admission_ttl_secs = 5").execute(&app.db).await.unwrap();
    assert_eq!(buyers_order(&app, id, "b", 4, 1).await, 4);
    // Redis forgets the reservations (the ledger says nothing is held).
    let keys = app.redis.keys.batch(SaleId::try_from(id).unwrap(), BatchNo::FIRST);
    let mut conn = app.state.redis.conn().await.unwrap();
    let _: () = redis::pipe()
        .hset(keys.ledger(), "available", 5)
        .hset(keys.ledger(), "reserved", 0)
        .query_async(&mut conn)
        .await
        .unwrap();
    let patched = app.admin(Method::PATCH, &format!("/admin/sales/{id}"), Some(json!({"stock": 2}))).await;
    patched.assert_problem(409, "stock_below_committed");
    let stock: i64 = sqlx::query_scalar("SELECT stock FROM sale_batches WHERE sale_id = $1")
        .bind(id)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(stock, 5);
}

#[sqlx::test(migrator = "flashsale_server::startup::MIGRATOR")]
async fn redis_restored_from_an_older_copy_is_detected_and_rebuilt(db: sqlx::PgPool) {
    let app = uncached(db).await;
    let id = open_sale(&app, 10, 2, 600).await;
    assert_eq!(buyers_order(&app, id, "before", 2, 1).await, 2);
    let old_copy = dump_batch(&app, id).await;
    assert_eq!(buyers_order(&app, id, "lost", 3, 100).await, 3);
    restore_batch(&app, id, &old_copy).await;
    assert_eq!(ledger(&app, id).await, (8, 2, 0), "Redis went back two orders' worth");

    // An order now gets a reservation id the record already holds: refused, 503, fenced.
    let collided = order(&app, id, "next", "k", &token(&app, id, "next", 200), 1).await;
    collided.assert_problem(503, "rebuilding");
    assert_eq!(ledger_back_within(&app, id, 5).await, (5, 5, 0));
    assert_redis_agrees_with_postgres(&app, id).await;
    // The buyer's retry with the same key and token works.
    assert_eq!(order(&app, id, "next", "k", &token(&app, id, "next", 200), 1).await.status, 201);

    // The same, caught by the audit before any order collides.
    let old_copy = dump_batch(&app, id).await;
    assert_eq!(buyers_order(&app, id, "lost-again", 2, 300).await, 2);
    restore_batch(&app, id, &old_copy).await;
    flashsale_server::jobs::upkeep::pass(&app.state, Utc::now()).await.unwrap();
    assert_eq!(ledger_back_within(&app, id, 5).await, (2, 8, 0));

    // Demand beyond the stock sells exactly the stock.
    assert_eq!(buyers_order(&app, id, "crowd", 10, 400).await, 2);
    assert_eq!(committed_units(&app, id).await, 10);
}

#[sqlx::test(migrator = "flashsale_server::startup::MIGRATOR")]
async fn an_admin_edit_while_redis_lost_the_batch_waits_for_the_rebuild(db: sqlx::PgPool) {
    let app = uncached(db).await;
    let id = open_sale(&app, 4, 2, 600).await;
    sqlx::query("UPDATE sales SET admission_ttl_secs = 5").execute(&app.db).await.unwrap();
    assert_eq!(buyers_order(&app, id, "b", 3, 1).await, 3);
    flush(&app);
    let uri = format!("/admin/sales/{id}");
    let renamed = app.admin(Method::PATCH, &uri, Some(json!({"name": "Phone X (renamed)"}))).await;
    renamed.assert_problem(503, "rebuilding");
    assert_eq!(renamed.headers["retry-after"], "1");
    app.admin(Method::POST, &format!("{uri}/pause"), None).await.assert_problem(503, "rebuilding");
    // Joins during the rebuild are told to come back, not 500.
    app.buyer(Method::POST, &format!("/sales/{id}/queue"), "carol", None).await.assert_problem(503, "rebuilding");
    flashsale_server::jobs::upkeep::pass(&app.state, Utc::now()).await.unwrap();
    assert_eq!(app.admin(Method::PATCH, &uri, Some(json!({"name": "Phone X (renamed)"}))).await.status, 200);
    assert_eq!(ledger(&app, id).await, (1, 3, 0));
    assert_eq!(buyers_order(&app, id, "later", 5, 100).await, 1, "4 units, 4 sold: never 7");
    assert_eq!(committed_units(&app, id).await, 4);
}

#[sqlx::test(migrator = "flashsale_server::startup::MIGRATOR")]
async fn a_redis_restart_that_lost_its_last_writes_is_rebuilt_from_postgres(db: sqlx::PgPool) {
    // A Redis of this test's own, which saves a snapshot when told and restarts from it.
    let mut server = RedisServer::start(&["--appendonly", "no", "--dbfilename", "dump.rdb"]);
    let app = TestApp::on_redis(db, tuning(), TestRedis::at(&server.url())).await;
    let id = open_sale(&app, 10, 2, 600).await;
    flashsale_server::jobs::upkeep::pass(&app.state, Utc::now()).await.unwrap();
    assert_eq!(buyers_order(&app, id, "saved", 2, 1).await, 2);
    let mut conn = app.state.redis.conn().await.unwrap();
    let _: () = redis::cmd("SAVE").query_async(&mut conn).await.unwrap();
    drop(conn);
    // Orders whose Redis writes the crash loses (what `appendfsync everysec` loses, or a lagging
    // replica promoted by a failover): their ledger is there, just older.
    assert_eq!(buyers_order(&app, id, "lost", 3, 100).await, 3);
    server.crash_and_restart();
    assert_eq!(ledger(&app, id).await, (8, 2, 0), "Redis came back with the older ledger");
    // The next pass sees a new Redis and rebuilds every live batch from PostgreSQL.
    flashsale_server::jobs::upkeep::pass(&app.state, Utc::now()).await.unwrap();
    assert_eq!(ledger_back_within(&app, id, 5).await, (5, 5, 0));
    assert_redis_agrees_with_postgres(&app, id).await;
    assert_eq!(buyers_order(&app, id, "crowd", 8, 200).await, 5);
    assert_eq!(committed_units(&app, id).await, 10);
}

/// (Redis's ledger epoch, PostgreSQL's batch epoch).
async fn epochs(app: &TestApp, sale: i64) -> (i64, i64) {
    let id = SaleId::try_from(sale).unwrap();
    let redis = app.state.inventory.snapshot(id, BatchNo::FIRST).await.unwrap().map_or(0, |l| l.epoch.to_i64());
    let record: i64 = sqlx::query_scalar("SELECT epoch FROM sale_batches WHERE sale_id = $1")
        .bind(sale)
        .fetch_one(&app.db)
        .await
        .unwrap();
    (redis, record)
}

/// Moves the record's epoch on without touching Redis: what PostgreSQL holds after an instance
/// froze between its rebuild's Redis write and its commit while another instance's rebuild
/// committed (the frozen one's Redis state is then of an epoch the record never kept).
async fn record_moves_on(app: &TestApp, sale: i64) {
    sqlx::query("UPDATE sale_batches SET epoch = nextval('batch_epochs') WHERE sale_id = $1")
        .bind(sale)
        .execute(&app.db)
        .await
        .unwrap();
}

#[sqlx::test(migrator = "flashsale_server::startup::MIGRATOR")]
async fn redis_state_of_a_rebuild_that_never_committed_is_rebuilt_not_fenced_forever(db: sqlx::PgPool) {
    let app = uncached(db).await;
    let id = open_sale(&app, 10, 2, 600).await;
    assert_eq!(buyers_order(&app, id, "before", 2, 1).await, 2);
    record_moves_on(&app, id).await;
    // The record fences the order Redis reserved at the old epoch; Redis being still at that
    // epoch, the batch is rebuilt at once, and the buyer's retry works.
    let fenced = order(&app, id, "next", "k", &token(&app, id, "next", 100), 1).await;
    fenced.assert_problem(503, "rebuilding");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while epochs(&app, id).await.0 != epochs(&app, id).await.1 {
        assert!(std::time::Instant::now() < deadline, "Redis stayed at a fenced epoch: {:?}", epochs(&app, id).await);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(ledger(&app, id).await, (8, 2, 0));
    assert_eq!(order(&app, id, "next", "k", &token(&app, id, "next", 100), 1).await.status, 201);

    // Caught by upkeep before any order is fenced.
    record_moves_on(&app, id).await;
    flashsale_server::jobs::upkeep::pass(&app.state, Utc::now()).await.unwrap();
    let (redis, record) = epochs(&app, id).await;
    assert_eq!(redis, record, "upkeep rebuilt the batch at the record's epoch");
    assert_redis_agrees_with_postgres(&app, id).await;
    // Demand beyond the stock sells exactly the stock.
    assert_eq!(buyers_order(&app, id, "crowd", 10, 200).await, 7);
    assert_eq!(committed_units(&app, id).await, 10);
}

#[sqlx::test(migrator = "flashsale_server::startup::MIGRATOR")]
async fn an_instance_whose_clock_is_30_s_off_decides_like_the_others(db: sqlx::PgPool) {
    let app = uncached(db).await;
    let id = open_sale(&app, 10, 2, 600).await;
    sqlx::query("UPDATE sales SET admission_ttl_secs = 20").execute(&app.db).await.unwrap();
    // A second instance on the same Redis and PostgreSQL, its machine's clock 30 s fast.
    let mut skewed = tuning();
    skewed.local_clock_skew_ms = 30_000;
    let fast = TestApp::on_redis(app.db.clone(), skewed, app.redis.clone()).await;
    flashsale_server::jobs::upkeep::sync_clock(&fast.state).await;
    assert!((fast.state.clock.now_ms() - app.state.clock.now_ms()).abs() < 1_000, "it reads Redis's clock");
    // Admitted through the first instance (a 20 s turn), polled and ordered through the fast one.
    let token = admitted_token(&app, id, "alice").await;
    let seen = fast.buyer(Method::GET, &format!("/sales/{id}/queue"), "alice", None).await;
    assert_eq!(seen.body["status"], "admitted", "{seen:?}");
    let ordered = order(&fast, id, "alice", "k", &token, 1).await;
    assert_eq!(ordered.status, 201, "{ordered:?}");
    // Its claim is stamped by Redis's clock too: a retry through the first instance is neither
    // taken for a stale claim nor refused.
    assert_eq!(order(&app, id, "alice", "k", &token, 1).await.body, ordered.body);
}

/// The keys of sale `sale` in Redis (any batch).
async fn sale_keys(app: &TestApp, sale: i64) -> Vec<String> {
    app.redis.keys_in_use().await.into_iter().filter(|k| k.contains(&format!("{{sale:{sale}}}"))).collect()
}

#[sqlx::test(migrator = "flashsale_server::startup::MIGRATOR")]
async fn a_finished_batch_gives_every_key_an_end_of_life_and_keeps_its_numbers(db: sqlx::PgPool) {
    let mut tuning = tuning();
    tuning.retire_grace = std::time::Duration::from_millis(1_500);
    let app = TestApp::with_tuning(db, tuning).await;
    let id = open_sale(&app, 5, 2, 600).await;
    sqlx::query("UPDATE sales SET admission_ttl_secs = 20").execute(&app.db).await.unwrap();
    let t = admitted_token(&app, id, "alice").await;
    let paid = order(&app, id, "alice", "k", &t, 2).await.body["id"].as_i64().unwrap();
    assert_eq!(pay(&app, paid, "p", PRICE * 2, "succeeded").await.body["outcome"], "paid");
    let pending = order(&app, id, "bob", "k", &token(&app, id, "bob", 50), 1).await.body["id"].as_i64().unwrap();
    app.admin(Method::POST, &format!("/admin/sales/{id}/close"), None).await;
    // Not while an order still holds units unpaid.
    assert_eq!(flashsale_server::jobs::upkeep::pass(&app.state, Utc::now()).await.unwrap().retired, 0);
    app.buyer(Method::POST, &format!("/orders/{pending}/cancel"), "bob", None).await;
    // Nor before its pre-queue draw is recorded: its cohort must not expire with its keys.
    assert_eq!(flashsale_server::jobs::upkeep::pass(&app.state, Utc::now()).await.unwrap().retired, 0);
    assert_eq!(flashsale_server::service::draws::record_due(&app.state, Utc::now()).await.unwrap(), 1);
    assert_eq!(flashsale_server::jobs::upkeep::pass(&app.state, Utc::now()).await.unwrap().retired, 1);
    let mut conn = app.state.redis.conn().await.unwrap();
    let keys = sale_keys(&app, id).await;
    assert!(keys.len() > 5, "{keys:?}");
    for key in keys.iter().filter(|k| !k.contains(":idem:")) {
        let ttl: i64 = redis::cmd("PTTL").arg(key).query_async(&mut conn).await.unwrap();
        // -2: expired already (a slow machine between SCAN and PTTL).
        assert!(ttl == -2 || (1..=1_500).contains(&ttl), "{key}: {ttl}");
    }
    tokio::time::sleep(std::time::Duration::from_millis(1_600)).await;
    assert!(sale_keys(&app, id).await.iter().all(|k| k.contains(":idem:")), "only claims (a day) are left");
    // Its numbers stay visible, from PostgreSQL.
    let stats = &app.admin(Method::GET, &format!("/admin/sales/{id}"), None).await.body["current_batch"]["stats"];
    assert_eq!(
        (stats["sold"].as_i64(), stats["queued"].as_i64(), stats["admitted"].as_i64()),
        (Some(2), Some(1), Some(1))
    );
    assert_eq!(flashsale_server::jobs::upkeep::pass(&app.state, Utc::now()).await.unwrap().retired, 0);
}

#[sqlx::test(migrator = "flashsale_server::startup::MIGRATOR")]
async fn a_weekly_sale_leaves_redis_one_batch_worth_however_many_weeks_it_runs(db: sqlx::PgPool) {
    let mut tuning = tuning();
    tuning.retire_grace = std::time::Duration::from_millis(1);
    let app = TestApp::with_tuning(db, tuning).await;
    let id =
        app.create_sale(SaleBuilder::weekly().set("duration_secs", json!(3600)).body()).await["id"].as_i64().unwrap();
    for week in 1..=4 {
        // This week's batch ends (its window passed); upkeep schedules the next and retires it.
        sqlx::query(
            "UPDATE sale_batches SET opens_at = opens_at - make_interval(days => 8 * $2::int), \
             closes_at = now() - interval '1 second' WHERE sale_id = $1 AND batch_no = $2",
        )
        .bind(id)
        .bind(week)
        .execute(&app.db)
        .await
        .unwrap();
        // Its (empty) pre-queue draw is recorded, as the draws job does every second.
        assert_eq!(flashsale_server::service::draws::record_due(&app.state, Utc::now()).await.unwrap(), 1);
        let pass = flashsale_server::jobs::upkeep::pass(&app.state, Utc::now()).await.unwrap();
        assert_eq!((pass.rolled_over, pass.retired), (1, 1), "week {week}");
    }
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let keys = sale_keys(&app, id).await;
    assert!(keys.iter().all(|k| k.contains(":b:5:")), "only the current batch's keys: {keys:?}");
}

/// A buyer's queue state through the API, with the ticket they keep.
async fn poll(app: &TestApp, sale: i64, user: &str, ticket: &mut String) -> serde_json::Value {
    let state = app.buyer(Method::GET, &format!("/sales/{sale}/queue"), user, Some(ticket)).await;
    assert_eq!(state.status, 200, "{state:?}");
    if let Some(t) = state.body["ticket"].as_str() {
        *ticket = t.to_owned();
    }
    state.body
}

#[sqlx::test(migrator = "flashsale_server::startup::MIGRATOR")]
async fn a_queue_redis_lost_keeps_every_place_and_numbers_newcomers_after_them(db: sqlx::PgPool) {
    let app = uncached(db).await;
    let id = open_sale(&app, 100, 1, 600).await;
    sqlx::query("UPDATE sales SET admission_ttl_secs = 20, admission_rate = 5").execute(&app.db).await.unwrap();
    let mut tickets = Vec::new();
    for i in 1..=20 {
        let joined = app.buyer(Method::POST, &format!("/sales/{id}/queue"), &format!("b{i}"), None).await;
        assert_eq!(joined.body["position"], i, "{joined:?}");
        tickets.push(joined.body["ticket"].as_str().unwrap().to_owned());
    }
    // Admission reaches a few buyers; the first orders, the next ones have not looked yet.
    while app.state.queue.counters(&[(SaleId::try_from(id).unwrap(), BatchNo::FIRST)]).await.unwrap()[0].serving < 3 {
        flashsale_server::service::queue::admit_all(&app.state, Utc::now()).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let first = poll(&app, id, "b1", &mut tickets[0]).await;
    let t1 = first["admission_token"].as_str().unwrap().to_owned();
    assert_eq!(order(&app, id, "b1", "k", &t1, 1).await.status, 201);
    flashsale_server::jobs::upkeep::pass(&app.state, Utc::now()).await.unwrap();

    // Redis loses everything; upkeep rebuilds the batch from PostgreSQL and the queue's marks.
    flush(&app);
    flashsale_server::jobs::upkeep::pass(&app.state, Utc::now()).await.unwrap();
    ledger_back_within(&app, id, 5).await;

    // Admitted just before the loss: still admitted, and the turn works.
    let second = poll(&app, id, "b2", &mut tickets[1]).await;
    assert_eq!(second["status"], "admitted", "{second}");
    let t2 = second["admission_token"].as_str().unwrap().to_owned();
    assert_eq!(order(&app, id, "b2", "k", &t2, 1).await.status, 201);
    // Waiting with a ticket: the same place.
    let tenth = poll(&app, id, "b10", &mut tickets[9]).await;
    assert_eq!((tenth["status"].as_str(), tenth["position"].as_u64()), (Some("waiting"), Some(10)), "{tenth}");
    // A newcomer, and a buyer who lost their ticket and joins again: behind every number issued.
    let late = app.buyer(Method::POST, &format!("/sales/{id}/queue"), "late", None).await;
    assert!(late.body["position"].as_u64().unwrap() > 20, "{late:?}");
    app.buyer(Method::GET, &format!("/sales/{id}/queue"), "b15", None).await.assert_problem(404, "not_found");
    let again = app.buyer(Method::POST, &format!("/sales/{id}/queue"), "b15", None).await;
    assert!(again.body["position"].as_u64().unwrap() > late.body["position"].as_u64().unwrap(), "{again:?}");
    // Admission goes on in queue order, and b10's turn comes and works.
    let mut tenth_token = None;
    for _ in 0..100 {
        flashsale_server::service::queue::admit_all(&app.state, Utc::now()).await.unwrap();
        let state = poll(&app, id, "b10", &mut tickets[9]).await;
        if let Some(t) = state["admission_token"].as_str() {
            tenth_token = Some(t.to_owned());
            break;
        }
        assert_eq!(state["status"], "waiting", "{state}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(order(&app, id, "b10", "k", &tenth_token.expect("b10 admitted"), 1).await.status, 201);
}

/// One step of the state machine below.
#[derive(Debug, Clone)]
enum Step {
    /// A buyer orders (a fresh admission token and key each time).
    Order {
        user: u8,
        units: u8,
    },
    Pay(usize),
    Cancel(usize),
    /// Redis's state of the batch is copied, to be gone back to later.
    Copy,
    /// Redis goes back to the last copy (a restart losing its last writes, a lagging replica).
    GoBack,
    /// Redis loses everything.
    Flush,
    /// An upkeep pass (the audits, rebuilds and sweeps).
    Upkeep,
}

fn step() -> impl proptest::strategy::Strategy<Value = Step> {
    use proptest::prelude::*;
    prop_oneof![
        6 => (0u8..6, 1u8..=2).prop_map(|(user, units)| Step::Order { user, units }),
        2 => (0usize..32).prop_map(Step::Pay),
        1 => (0usize..32).prop_map(Step::Cancel),
        1 => Just(Step::Copy),
        2 => Just(Step::GoBack),
        1 => Just(Step::Flush),
        2 => Just(Step::Upkeep),
    ]
}

/// PostgreSQL's orders never exceed the stock or a buyer's limit (checked on the orders
/// themselves, not only on the guard's counters).
async fn assert_the_record_holds(app: &TestApp, sale: i64, stock: i64, limit: i64, history: &[Step]) {
    let held = committed_units(app, sale).await;
    assert!(held <= stock, "{held} units held of {stock} after {history:?}");
    let most: Option<i64> = sqlx::query_scalar(
        "SELECT max(units)::bigint FROM (SELECT sum(quantity) AS units FROM orders \
         WHERE sale_id = $1 AND status IN ('pending_payment', 'paid') GROUP BY user_id) u",
    )
    .bind(sale)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert!(most.unwrap_or(0) <= limit, "a buyer holds {most:?} of {limit} after {history:?}");
}

#[sqlx::test(migrator = "flashsale_server::startup::MIGRATOR")]
async fn whatever_redis_loses_or_goes_back_to_the_record_never_oversells(db: sqlx::PgPool) {
    use proptest::strategy::{Strategy, ValueTree};
    // Seeded: a failure prints its steps, and the same build replays the same cases.
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let steps = proptest::collection::vec(step(), 1..40);
    let app = uncached(db).await;
    let (stock, limit) = (6, 2);
    for case in 0..12u64 {
        let history = steps.new_tree(&mut runner).unwrap().current();
        let id = open_sale(&app, 6, 2, 600).await;
        let mut orders: Vec<(i64, String)> = Vec::new();
        let mut copy = None;
        for (i, step) in history.iter().enumerate() {
            match step {
                Step::Order { user, units } => {
                    let user = format!("u{user}");
                    let t = token(&app, id, &user, case * 1000 + i as u64 + 1);
                    let reply = order(&app, id, &user, &format!("k{case}-{i}"), &t, i64::from(*units)).await;
                    assert!([201, 409, 503].contains(&reply.status.as_u16()), "{reply:?} after {history:?}");
                    if reply.status == 201 {
                        orders.push((reply.body["id"].as_i64().unwrap(), user));
                    }
                }
                Step::Pay(pick) | Step::Cancel(pick) if !orders.is_empty() => {
                    let (order_id, user) = &orders[pick % orders.len()];
                    if matches!(step, Step::Pay(_)) {
                        pay(&app, *order_id, &format!("p{case}-{i}"), PRICE, "succeeded").await;
                    } else {
                        app.buyer(Method::POST, &format!("/orders/{order_id}/cancel"), user, None).await;
                    }
                }
                Step::Pay(_) | Step::Cancel(_) => {}
                Step::Copy => copy = Some(dump_batch(&app, id).await),
                Step::GoBack => {
                    if let Some(copy) = &copy {
                        restore_batch(&app, id, copy).await;
                    }
                }
                Step::Flush => flush(&app),
                Step::Upkeep => {
                    flashsale_server::jobs::upkeep::pass(&app.state, Utc::now()).await.unwrap();
                    tokio::time::sleep(std::time::Duration::from_millis(30)).await;
                }
            }
            assert_the_record_holds(&app, id, stock, limit, &history[..=i]).await;
        }
    }
}

/// Runs admission ticks for `for_ms`, as the ticker would (a tick may fail during an outage).
async fn tick_for(app: &TestApp, for_ms: u64) {
    let until = std::time::Instant::now() + std::time::Duration::from_millis(for_ms);
    while std::time::Instant::now() < until {
        let _ = flashsale_server::service::queue::admit_all(&app.state, Utc::now()).await;
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// The batch's serving counter: how many buyers were ever admitted.
async fn serving(app: &TestApp, sale: i64) -> u64 {
    let key = [(SaleId::try_from(sale).unwrap(), BatchNo::FIRST)];
    app.state.queue.counters(&key).await.unwrap()[0].serving
}

/// A pause freezes an admitted buyer's turn: it does not run out while the sale is paused (the
/// buyer is told `paused`), and the buyer orders with the token they already hold after the
/// resume, although the turn's original end has passed.
#[sqlx::test(migrator = "flashsale_server::startup::MIGRATOR")]
async fn a_pause_freezes_an_admitted_buyers_turn(db: sqlx::PgPool) {
    let app = uncached(db).await;
    let sale = open_sale(&app, 5, 1, 60).await; // turns last one second
    let token = admitted_token(&app, sale, "alice").await;
    let paused = app.admin(Method::POST, &format!("/admin/sales/{sale}/pause"), None).await;
    assert!(paused.status.is_success(), "{paused:?}");
    tick_for(&app, 1_500).await;
    let polled = app.buyer(Method::GET, &format!("/sales/{sale}/queue"), "alice", None).await;
    assert_eq!((polled.body["status"].as_str(), polled.body["position"].as_u64()), (Some("paused"), Some(1)));
    let resumed = app.admin(Method::POST, &format!("/admin/sales/{sale}/resume"), None).await;
    assert!(resumed.status.is_success(), "{resumed:?}");
    tick_for(&app, 100).await;
    let polled = app.buyer(Method::GET, &format!("/sales/{sale}/queue"), "alice", None).await;
    assert_eq!(polled.body["status"], "admitted", "{polled:?}");
    let placed = order(&app, sale, "alice", "k-alice", &token, 1).await;
    assert_eq!(placed.status.as_u16(), 201, "{placed:?}");
}

/// A buyer refused because nothing is left ends their turn at once: a unit cancelled a moment
/// later goes to the next buyer in line at the next tick, not when the refused buyer's window
/// would have run out.
#[sqlx::test(migrator = "flashsale_server::startup::MIGRATOR")]
async fn a_refused_buyer_hands_the_turn_on_at_once(db: sqlx::PgPool) {
    let app = uncached(db).await;
    let sale = open_sale(&app, 3, 2, 60).await;
    // Long turns: only the refusal can free carol's.
    sqlx::query("UPDATE sales SET admission_ttl_secs = 60 WHERE id = $1").bind(sale).execute(&app.db).await.unwrap();
    app.state.public_cache.invalidate(SaleId::try_from(sale).unwrap());
    let mut tokens = Vec::new();
    for buyer in ["alice", "bob", "carol"] {
        tokens.push(admitted_token(&app, sale, buyer).await);
    }
    let alice = order(&app, sale, "alice", "k-a", &tokens[0], 2).await;
    let bob = order(&app, sale, "bob", "k-b", &tokens[1], 1).await;
    assert_eq!((alice.status.as_u16(), bob.status.as_u16()), (201, 201));
    order(&app, sale, "carol", "k-c", &tokens[2], 1).await.assert_problem(409, "sold_out");
    let joined = app.buyer(Method::POST, &format!("/sales/{sale}/queue"), "dave", None).await;
    assert!(joined.status.is_success(), "{joined:?}");
    let bob_order = bob.body["id"].as_i64().unwrap();
    let cancelled = app.buyer(Method::POST, &format!("/orders/{bob_order}/cancel"), "bob", None).await;
    assert!(cancelled.status.is_success(), "{cancelled:?}");
    flashsale_server::service::queue::admit_all(&app.state, Utc::now()).await.unwrap();
    assert_eq!(serving(&app, sale).await, 4, "dave is admitted for bob's unit at the next tick");
}

/// A PostgreSQL outage (every connection dropped, new ones refused, through a proxy of the
/// test's own): orders fail fast with 503 and `Retry-After` before anything is reserved,
/// admission is held (nobody is admitted to a turn they could not use), the turn of a buyer
/// admitted before the outage outlasts it, and everything resumes by itself.
#[sqlx::test(migrator = "flashsale_server::startup::MIGRATOR")]
async fn a_database_outage_fails_fast_holds_admission_and_costs_no_turn(db: sqlx::PgPool) {
    use std::time::{Duration, Instant};
    let options = db.connect_options();
    let upstream = tokio::net::lookup_host((options.get_host(), options.get_port())).await.unwrap().next().unwrap();
    let proxy = flashsale_testkit::TcpProxy::start(upstream).await;
    let through_proxy = (*options).clone().host("127.0.0.1").port(proxy.addr().port());
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(5)
        .acquire_timeout(Duration::from_secs(1))
        .connect_with(through_proxy)
        .await
        .unwrap();
    let app = TestApp::on_redis(pool.clone(), tuning(), TestRedis::new()).await;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let probe = tokio::spawn(flashsale_server::jobs::database_probe::run(app.state.clone(), shutdown.clone()));
    let wait_for = |down: bool| {
        let state = app.state.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(5);
            while state.database.is_down() != down {
                assert!(
                    Instant::now() < deadline,
                    "the probe never saw the database {}",
                    if down { "down" } else { "up" }
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };

    let sale = open_sale(&app, 5, 1, 60).await; // turns last one second
    let token = admitted_token(&app, sale, "alice").await;
    let joined = app.buyer(Method::POST, &format!("/sales/{sale}/queue"), "bob", None).await;
    assert!(joined.status.is_success(), "{joined:?}");

    proxy.cut();
    let cut_at = Instant::now();
    wait_for(true).await;
    eprintln!("measured: the probe saw PostgreSQL down {:?} after the cut", cut_at.elapsed());
    let started = Instant::now();
    let refused = order(&app, sale, "alice", "k-alice", &token, 1).await;
    refused.assert_problem(503, "unavailable");
    assert_eq!(refused.headers["retry-after"], "1");
    assert!(started.elapsed() < Duration::from_secs(2), "answered after {:?}", started.elapsed());
    eprintln!("measured: an order during the outage answered 503 in {:?}", started.elapsed());
    let (available, reserved, _) = ledger(&app, sale).await;
    assert_eq!((available, reserved), (5, 0), "nothing reserved for an order that cannot be written");
    // Longer than alice's turn: the ticks hold admission and freeze her turn.
    tick_for(&app, 2_000).await;
    assert_eq!(serving(&app, sale).await, 1, "bob is not admitted to a turn he could not use");

    proxy.restore();
    let restored_at = Instant::now();
    wait_for(false).await;
    eprintln!("measured: the probe saw PostgreSQL back {:?} after the restore", restored_at.elapsed());
    tick_for(&app, 100).await;
    let placed = order(&app, sale, "alice", "k-alice", &token, 1).await;
    assert_eq!(placed.status.as_u16(), 201, "alice's turn outlasted the outage: {placed:?}");
    admitted_token(&app, sale, "bob").await;
    assert_redis_agrees_with_postgres(&app, sale).await;

    shutdown.cancel();
    probe.await.unwrap();
    pool.close().await;
}

/// An instance frozen (or dead) while it holds a batch row in an open transaction, as a rebuild
/// or an admin change does, holds it only until PostgreSQL ends the idle session
/// (`idle_in_transaction_session_timeout`, set on every session the server opens): orders of
/// the batch then go on, on every instance.
#[sqlx::test(migrator = "flashsale_server::startup::MIGRATOR")]
async fn a_frozen_instance_holds_a_batch_for_seconds_not_forever(db: sqlx::PgPool) {
    use sqlx::Connection;
    use std::time::Duration;
    let app = uncached(db.clone()).await;
    let sale = open_sale(&app, 5, 1, 60).await;
    sqlx::query("UPDATE sales SET admission_ttl_secs = 60 WHERE id = $1").bind(sale).execute(&app.db).await.unwrap();
    app.state.public_cache.invalidate(SaleId::try_from(sale).unwrap());
    let token = admitted_token(&app, sale, "alice").await;

    let bounds = flashsale_server::startup::DatabaseBounds {
        idle_in_transaction_timeout: Duration::from_millis(1_500),
        ..Default::default()
    };
    let mut frozen = sqlx::PgConnection::connect_with(&bounds.apply((*db.connect_options()).clone())).await.unwrap();
    sqlx::raw_sql("BEGIN").execute(&mut frozen).await.unwrap();
    sqlx::query("SELECT 1 FROM sale_batches WHERE sale_id = $1 FOR UPDATE")
        .bind(sale)
        .execute(&mut frozen)
        .await
        .unwrap();
    // The instance stops here, the row locked.
    let placed = tokio::time::timeout(Duration::from_secs(20), order(&app, sale, "alice", "k-alice", &token, 1))
        .await
        .expect("the order waited for the frozen instance's lock for good");
    assert_eq!(placed.status.as_u16(), 201, "{placed:?}");
    assert!(sqlx::query("SELECT 1").execute(&mut frozen).await.is_err(), "PostgreSQL ended the frozen session");
}

/// Redis stops answering for longer than a buyer's turn (`CLIENT PAUSE` on a Redis of the
/// test's own: it keeps its data, as a failover or a stalled primary would): requests fail fast
/// meanwhile, and afterwards the buyer admitted before it orders with the token they hold, their
/// turn extended by the silence.
#[sqlx::test(migrator = "flashsale_server::startup::MIGRATOR")]
async fn a_redis_that_stops_answering_costs_no_turn(db: sqlx::PgPool) {
    use std::time::{Duration, Instant};
    let server = RedisServer::start(&[]);
    let app = TestApp::on_redis(db, tuning(), TestRedis::at(&server.url())).await;
    let sale = open_sale(&app, 5, 1, 60).await;
    // Two-second turns, all but a moment of them left when Redis answers again.
    sqlx::query("UPDATE sales SET admission_ttl_secs = 2 WHERE id = $1").bind(sale).execute(&app.db).await.unwrap();
    let token = admitted_token(&app, sale, "alice").await;

    let mut admin = redis::Client::open(server.url()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let () = redis::cmd("CLIENT").arg("PAUSE").arg(4_000).arg("ALL").query_async(&mut admin).await.unwrap();
    let tried = Instant::now(); // when the pause began
    let refused = order(&app, sale, "alice", "k-alice", &token, 1).await;
    refused.assert_problem(503, "unavailable");
    assert!(tried.elapsed() < Duration::from_secs(2), "answered after {:?}", tried.elapsed());
    // Ticks until just after Redis answers again: she has the rest of her turn from there.
    let since_pause = u64::try_from(tried.elapsed().as_millis()).unwrap();
    tick_for(&app, 4_200u64.saturating_sub(since_pause)).await;

    let placed = order(&app, sale, "alice", "k-alice", &token, 1).await;
    assert_eq!(placed.status.as_u16(), 201, "alice's turn outlasted Redis's silence: {placed:?}");
    assert_redis_agrees_with_postgres(&app, sale).await;
}
