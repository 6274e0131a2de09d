//! flashsale on a Redis Cluster of the test's own (three masters, `flashsale_testkit::RedisCluster`):
//! start-up checks every master, and a whole sale runs through every Lua script with the cluster
//! routing each call by its keys' slot. Redis Cluster refuses a script whose keys, given or not,
//! lie in another slot than its first key's, so a script that broke the one-slot-per-sale rule
//! would fail here.

use std::time::Duration;

use axum::http::Method;
use clap::Parser;
use flashsale_server::config::{RawSettings, Settings};
use flashsale_server::startup::{self, StartupError};
use flashsale_testkit::{RedisCluster, TestRedis};
use serde_json::json;

use crate::common::shop::{
    PRICE, admitted_token, assert_redis_agrees_with_postgres, ledger, ledger_back_within, order, pay, sweep,
};
use crate::common::{TestApp, uncached_tuning};

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    settings: RawSettings,
}

fn cluster_settings(cluster: &RedisCluster) -> Settings {
    let seeds = cluster.urls()[..2].join(",");
    let args = ["flashsale", "--redis-cluster", &seeds, "--startup-timeout-secs", "5"];
    Cli::try_parse_from(args).unwrap().settings.validate().unwrap()
}

#[tokio::test]
async fn start_up_reaches_every_master_and_refuses_a_cluster_with_one_that_evicts() {
    let cluster = RedisCluster::start();
    // Seeded with two of the three masters: the client learns the third.
    let redis = startup::connect_redis(&cluster_settings(&cluster)).await.unwrap();
    assert!(redis.is_cluster());
    let mut conn = redis.conn().await.unwrap();
    let pong: String = redis::cmd("PING").query_async(&mut conn).await.unwrap();
    assert_eq!(pong, "PONG");

    // The third master (not a seed) evicts: refused, naming the policy.
    let third = redis::Client::open(cluster.urls()[2].as_str()).unwrap();
    let mut third = third.get_multiplexed_async_connection().await.unwrap();
    let () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory-policy")
        .arg("allkeys-lru")
        .query_async(&mut third)
        .await
        .unwrap();
    let refused = startup::connect_redis(&cluster_settings(&cluster)).await.unwrap_err();
    assert!(matches!(&refused, StartupError::RedisEvicts { policy } if policy == "allkeys-lru"), "{refused}");
}

/// A one-off sale, open now, with `stock` units, limit 2 and a payment window of `window_secs`.
async fn open_sale(app: &TestApp, stock: u32, window_secs: i32) -> i64 {
    crate::common::shop::open_sale(app, stock, 2, window_secs).await
}

#[sqlx::test(migrator = "flashsale_server::startup::MIGRATOR")]
async fn a_whole_sale_runs_on_a_redis_cluster_through_every_script(db: sqlx::PgPool) {
    let cluster = RedisCluster::start();
    let app = TestApp::on_redis(db, uncached_tuning(), TestRedis::on_cluster(&cluster)).await;
    assert!(app.state.redis.is_cluster());

    // Three sales (open_batch), whose keys the cluster spreads over its masters.
    let sales = [open_sale(&app, 5, 60).await, open_sale(&app, 5, 1).await, open_sale(&app, 5, 60).await];
    let [first, lapsing, third] = sales;
    let mut owners = std::collections::BTreeSet::new();
    for url in cluster.urls() {
        let client = redis::Client::open(url.as_str()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        for sale in sales {
            let ledger = app.redis.keys.batch(sale.try_into().unwrap(), flashsale_core::BatchNo::FIRST).ledger();
            let here: i64 = redis::cmd("EXISTS").arg(&ledger).query_async(&mut conn).await.unwrap_or(0);
            if here == 1 {
                owners.insert(url.clone());
            }
        }
    }
    eprintln!("the three sales' ledgers live on {} of the 3 masters", owners.len());

    // Join and admission (join.lua, admit.lua, admission_window.lua), an order (reserve and the
    // idempotency claim), a replay, a payment (settle, confirm).
    let token = admitted_token(&app, first, "alice").await;
    let created = order(&app, first, "alice", "k1", &token, 2).await;
    assert_eq!(created.status, 201, "{created:?}");
    let replayed = order(&app, first, "alice", "k1", &token, 2).await;
    assert_eq!(replayed.headers["idempotent-replayed"], "true");
    let id = created.body["id"].as_i64().unwrap();
    let paid = pay(&app, id, "ref-1", 2 * PRICE, "succeeded").await;
    assert_eq!(paid.body["outcome"], "paid", "{paid:?}");
    assert_eq!(ledger(&app, first).await, (3, 0, 2));

    // A cancel (release) on the third sale; a lapse (expire) on the second.
    let token = admitted_token(&app, third, "bob").await;
    let bobs = order(&app, third, "bob", "k2", &token, 1).await.body["id"].as_i64().unwrap();
    let cancelled = app.buyer(Method::POST, &format!("/orders/{bobs}/cancel"), "bob", None).await;
    assert_eq!(cancelled.body["status"], "cancelled", "{cancelled:?}");
    assert_eq!(ledger(&app, third).await, (5, 0, 0));
    let token = admitted_token(&app, lapsing, "carol").await;
    assert_eq!(order(&app, lapsing, "carol", "k3", &token, 1).await.status, 201);
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    sweep(&app).await;
    assert_eq!(ledger(&app, lapsing).await, (5, 0, 0));

    // Reads across sales (the public list, admin stats): commands of several slots at once.
    let list = app.get("/sales").await;
    assert_eq!(list.body["sales"].as_array().unwrap().len(), 3, "{list:?}");
    let stats = app.admin(Method::GET, "/admin/sales", None).await;
    assert_eq!(stats.status, 200, "{stats:?}");

    // An operator's stock change and pause (set_batch_status) on a running batch (the test's
    // one-second turns, set in the database, are put back within what the API accepts first).
    sqlx::query("UPDATE sales SET admission_ttl_secs = 5 WHERE id = $1").bind(first).execute(&app.db).await.unwrap();
    let patched = app.admin_with(Method::PATCH, &format!("/admin/sales/{first}"), Some(json!({"stock": 7})), &[]).await;
    assert_eq!(patched.status, 200, "{patched:?}");
    assert_eq!(ledger(&app, first).await, (5, 0, 2));
    let paused = app.admin(Method::POST, &format!("/admin/sales/{third}/pause"), None).await;
    assert_eq!(paused.status, 200, "{paused:?}");

    // Redis loses the first sale's keys: upkeep fences and rebuilds it from PostgreSQL
    // (rebuild_batch, unconfirmed).
    let mut conn = app.state.redis.conn().await.unwrap();
    let keys = app.redis.keys.batch(first.try_into().unwrap(), flashsale_core::BatchNo::FIRST);
    let _: i64 = redis::cmd("DEL").arg(keys.ledger()).query_async(&mut conn).await.unwrap();
    let until = std::time::Instant::now() + Duration::from_secs(10);
    while app
        .state
        .inventory
        .snapshot(first.try_into().unwrap(), flashsale_core::BatchNo::FIRST)
        .await
        .unwrap()
        .is_none()
    {
        flashsale_server::jobs::upkeep::pass(&app.state, chrono::Utc::now()).await.unwrap();
        assert!(std::time::Instant::now() < until, "the lost ledger was not rebuilt");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(ledger_back_within(&app, first, 5).await, (5, 0, 2));
    for sale in sales {
        assert_redis_agrees_with_postgres(&app, sale).await;
    }
}

/// A master's node id and a connection to it.
async fn node(url: &str) -> (String, redis::aio::MultiplexedConnection) {
    let mut conn = redis::Client::open(url).unwrap().get_multiplexed_async_connection().await.unwrap();
    let id: String = redis::cmd("CLUSTER").arg("MYID").query_async(&mut conn).await.unwrap();
    (id, conn)
}

/// The sale's slot moves to another master while the sale runs. Mid-migration (every key moved,
/// the slot not yet handed over) the old master answers `ASK` and the client follows it for
/// single commands: the ledger reads succeed; the public view (pipelined reads) answers right,
/// with its units unknown, or 503; a script that would create a key the target does not hold yet is refused
/// by Redis (`TRYAGAIN`) until the hand-over, and the buyer gets 503 `unavailable` (retry), never
/// a 500 and never a change. Once handed over, the old master answers `MOVED` and the client
/// learns the new owner. Nothing is lost, oversold or counted twice.
#[sqlx::test(migrator = "flashsale_server::startup::MIGRATOR")]
async fn a_sale_keeps_selling_while_its_slot_moves_to_another_master(db: sqlx::PgPool) {
    let cluster = RedisCluster::start();
    let app = TestApp::on_redis(db, uncached_tuning(), TestRedis::on_cluster(&cluster)).await;
    let sale = open_sale(&app, 5, 60).await;
    let token = admitted_token(&app, sale, "alice").await;
    let alices = order(&app, sale, "alice", "k1", &token, 1).await;
    assert_eq!(alices.status, 201, "{alices:?}");

    let ledger_key = app.redis.keys.batch(sale.try_into().unwrap(), flashsale_core::BatchNo::FIRST).ledger();
    let mut masters = Vec::new();
    for url in cluster.urls() {
        masters.push((url.clone(), node(&url).await));
    }
    let slot: i64 =
        redis::cmd("CLUSTER").arg("KEYSLOT").arg(&ledger_key).query_async(&mut masters[0].1.1).await.unwrap();
    let mut owner = None;
    for (i, (_, (_, conn))) in masters.iter_mut().enumerate() {
        let here: i64 = redis::cmd("CLUSTER").arg("COUNTKEYSINSLOT").arg(slot).query_async(conn).await.unwrap();
        if here > 0 {
            owner = Some(i);
        }
    }
    let from = owner.expect("the sale's keys are on a master");
    let to = (from + 1) % 3;
    let (from_id, to_id) = (masters[from].1.0.clone(), masters[to].1.0.clone());
    let to_port = masters[to].0.rsplit(':').next().unwrap().to_owned();

    // Migrate: the target imports, the source migrates, every key of the slot moves.
    let () = redis::cmd("CLUSTER")
        .arg("SETSLOT")
        .arg(slot)
        .arg("IMPORTING")
        .arg(&from_id)
        .query_async(&mut masters[to].1.1)
        .await
        .unwrap();
    let () = redis::cmd("CLUSTER")
        .arg("SETSLOT")
        .arg(slot)
        .arg("MIGRATING")
        .arg(&to_id)
        .query_async(&mut masters[from].1.1)
        .await
        .unwrap();
    let keys: Vec<String> = redis::cmd("CLUSTER")
        .arg("GETKEYSINSLOT")
        .arg(slot)
        .arg(10_000)
        .query_async(&mut masters[from].1.1)
        .await
        .unwrap();
    assert!(!keys.is_empty());
    let () = redis::cmd("MIGRATE")
        .arg("127.0.0.1")
        .arg(&to_port)
        .arg("")
        .arg(0)
        .arg(5_000)
        .arg("KEYS")
        .arg(&keys)
        .query_async(&mut masters[from].1.1)
        .await
        .unwrap();

    // Mid-migration: the source answers ASK for the sale's keys, the client follows.
    assert_eq!(ledger(&app, sale).await, (4, 1, 0));
    // The public view answers right, or with its units unknown (null), or 503 `unavailable`
    // (retry): never a wrong number, never a 500.
    let view = app.get(&format!("/sales/{sale}")).await;
    match view.status.as_u16() {
        200 => assert!(view.body["units_left"] == 4 || view.body["units_left"].is_null(), "{view:?}"),
        503 => view.assert_problem(503, "unavailable"),
        other => panic!("the public view while the slot moves answered {other}: {view:?}"),
    }
    let joined = app.buyer(Method::POST, &format!("/sales/{sale}/queue"), "bob", None).await;
    match joined.status.as_u16() {
        201 => {}
        503 => joined.assert_problem(503, "unavailable"),
        other => panic!("a join while the slot moves answered {other}: {joined:?}"),
    }
    assert_eq!(ledger(&app, sale).await, (4, 1, 0));

    // Handed over: every master learns the new owner; the client follows MOVED.
    for (_, (_, conn)) in &mut masters {
        let () =
            redis::cmd("CLUSTER").arg("SETSLOT").arg(slot).arg("NODE").arg(&to_id).query_async(conn).await.unwrap();
    }
    let id = alices.body["id"].as_i64().unwrap();
    assert_eq!(pay(&app, id, "ref-a", PRICE, "succeeded").await.body["outcome"], "paid");
    let token = admitted_token(&app, sale, "bob").await;
    assert_eq!(order(&app, sale, "bob", "k2", &token, 2).await.status, 201);
    let token = admitted_token(&app, sale, "carol").await;
    assert_eq!(order(&app, sale, "carol", "k3", &token, 2).await.status, 201);
    assert_eq!(ledger(&app, sale).await, (0, 4, 1));
    assert_redis_agrees_with_postgres(&app, sale).await;
    let moved: i64 =
        redis::cmd("CLUSTER").arg("COUNTKEYSINSLOT").arg(slot).query_async(&mut masters[to].1.1).await.unwrap();
    assert!(moved > 0, "the sale's keys live on the new master");
}
