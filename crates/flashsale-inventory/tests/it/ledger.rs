//! The ledger scripts against a real Redis, each test in its own key space.

use flashsale_core::{BatchNo, Epoch, SaleId, Units};
use flashsale_inventory::{Configured, Inventory, LedgerSpec, Opened, StatusChange, StatusChanged};
use flashsale_testkit::TestRedis;

fn sale() -> SaleId {
    SaleId::try_from(7).unwrap()
}

fn spec(total: u32) -> LedgerSpec {
    LedgerSpec {
        total: Units::new(total),
        per_user_limit: Units::new(2),
        opens_at_ms: 1_800_000_000_000,
        closes_at_ms: None,
        paused: false,
        closed: false,
        epoch: Epoch::FIRST,
        allotment: flashsale_inventory::Allotment::NONE,
    }
}

async fn setup() -> (TestRedis, Inventory) {
    let redis = TestRedis::new();
    flashsale_inventory::scripts::load_all(&redis.handle().await).await.unwrap();
    let inventory = Inventory::new(redis.handle().await, redis.keys.clone());
    (redis, inventory)
}

/// Puts `units` of the batch into buyers' hands the way a reservation does (available → reserved),
/// so stock changes can be tested before the reserve script exists.
async fn hold(redis: &TestRedis, units: i64) {
    let mut conn = redis.handle().await.conn().await.unwrap();
    let key = redis.keys.batch(sale(), BatchNo::FIRST).ledger();
    let _: () = redis::pipe()
        .atomic()
        .hincr(&key, "available", -units)
        .hincr(&key, "reserved", units)
        .query_async(&mut conn)
        .await
        .unwrap();
}

#[tokio::test]
async fn opening_twice_never_resets_a_ledger() {
    let (redis, inventory) = setup().await;
    assert_eq!(inventory.open_batch(sale(), BatchNo::FIRST, spec(10)).await.unwrap(), Opened::Created);
    hold(&redis, 3).await;
    assert_eq!(inventory.open_batch(sale(), BatchNo::FIRST, spec(99)).await.unwrap(), Opened::AlreadyOpen);
    let snap = inventory.snapshot(sale(), BatchNo::FIRST).await.unwrap().unwrap();
    assert_eq!((snap.total, snap.available, snap.reserved), (Units::new(10), Units::new(7), Units::new(3)));
    assert!(snap.balances());
}

#[tokio::test]
async fn concurrent_openings_create_one_ledger() {
    let (_redis, inventory) = setup().await;
    let calls = (0..50).map(|_| {
        let inventory = inventory.clone();
        tokio::spawn(async move { inventory.open_batch(sale(), BatchNo::FIRST, spec(10)).await.unwrap() })
    });
    let mut created = 0;
    for call in calls {
        if call.await.unwrap() == Opened::Created {
            created += 1;
        }
    }
    assert_eq!(created, 1);
}

#[tokio::test]
async fn stock_never_drops_below_what_buyers_hold() {
    let (redis, inventory) = setup().await;
    inventory.open_batch(sale(), BatchNo::FIRST, spec(10)).await.unwrap();
    hold(&redis, 6).await;
    assert_eq!(
        inventory.configure(sale(), BatchNo::FIRST, spec(5)).await.unwrap(),
        Configured::BelowCommitted { held: Units::new(6) }
    );
    let unchanged = inventory.snapshot(sale(), BatchNo::FIRST).await.unwrap().unwrap();
    assert_eq!(unchanged.total, Units::new(10));
    assert_eq!(
        inventory.configure(sale(), BatchNo::FIRST, spec(6)).await.unwrap(),
        Configured::Applied { available: Units::ZERO }
    );
    assert_eq!(
        inventory.configure(sale(), BatchNo::FIRST, spec(20)).await.unwrap(),
        Configured::Applied { available: Units::new(14) }
    );
    let snap = inventory.snapshot(sale(), BatchNo::FIRST).await.unwrap().unwrap();
    assert!(snap.balances(), "{snap:?}");
}

#[tokio::test]
async fn racing_stock_changes_keep_the_ledger_balanced() {
    let (redis, inventory) = setup().await;
    inventory.open_batch(sale(), BatchNo::FIRST, spec(100)).await.unwrap();
    hold(&redis, 40).await;
    let calls = (1..=200u32).map(|total| {
        let inventory = inventory.clone();
        tokio::spawn(async move { (total, inventory.configure(sale(), BatchNo::FIRST, spec(total)).await.unwrap()) })
    });
    for call in calls {
        let (total, outcome) = call.await.unwrap();
        match outcome {
            Configured::Applied { .. } => assert!(total >= 40),
            Configured::BelowCommitted { held } => assert!(total < 40 && held == Units::new(40)),
            other => panic!("unexpected {other:?}"),
        }
    }
    let snap = inventory.snapshot(sale(), BatchNo::FIRST).await.unwrap().unwrap();
    assert!(snap.balances() && snap.total >= Units::new(40), "{snap:?}");
}

#[tokio::test]
async fn closing_is_final() {
    let (_redis, inventory) = setup().await;
    let batch = BatchNo::FIRST;
    assert_eq!(inventory.set_status(sale(), batch, StatusChange::Pause).await.unwrap(), StatusChanged::Missing);
    inventory.open_batch(sale(), batch, spec(10)).await.unwrap();
    assert_eq!(inventory.set_status(sale(), batch, StatusChange::Pause).await.unwrap(), StatusChanged::Applied);
    assert!(inventory.snapshot(sale(), batch).await.unwrap().unwrap().paused);
    assert_eq!(inventory.set_status(sale(), batch, StatusChange::Resume).await.unwrap(), StatusChanged::Applied);
    assert!(!inventory.snapshot(sale(), batch).await.unwrap().unwrap().paused);
    assert_eq!(inventory.set_status(sale(), batch, StatusChange::Close).await.unwrap(), StatusChanged::Applied);
    assert_eq!(inventory.set_status(sale(), batch, StatusChange::Resume).await.unwrap(), StatusChanged::Closed);
    assert_eq!(inventory.configure(sale(), batch, spec(20)).await.unwrap(), Configured::Closed);
    assert!(inventory.snapshot(sale(), batch).await.unwrap().unwrap().closed);
}

#[tokio::test]
async fn a_missing_ledger_reads_as_none_and_a_corrupt_one_clamped_and_unbalanced() {
    let (redis, inventory) = setup().await;
    assert_eq!(inventory.snapshot(sale(), BatchNo::FIRST).await.unwrap(), None);
    let mut conn = redis.handle().await.conn().await.unwrap();
    let key = redis.keys.batch(sale(), BatchNo::FIRST).ledger();
    let _: () =
        redis::cmd("HSET").arg(&key).arg("total").arg(-5).arg("available").arg(3).query_async(&mut conn).await.unwrap();
    // Read, never an error (one bad batch must not fail the reads of the others), and it does
    // not balance, which is what makes the audit rebuild it.
    let read = inventory.snapshot(sale(), BatchNo::FIRST).await.unwrap().unwrap();
    assert_eq!((read.total, read.available), (Units::ZERO, Units::new(3)));
    assert!(!read.balances());
}

#[tokio::test]
async fn scripts_refuse_bad_arguments_without_writing() {
    let (redis, _inventory) = setup().await;
    let mut conn = redis.handle().await.conn().await.unwrap();
    let key = redis.keys.batch(sale(), BatchNo::FIRST).ledger();
    let result: redis::RedisResult<i64> = flashsale_inventory::scripts::OPEN_BATCH
        .key(&key)
        .arg(0)
        .arg(1)
        .arg(0)
        .arg(0)
        .arg(0)
        .arg(0)
        .invoke_async(&mut conn)
        .await;
    assert!(result.is_err());
    assert!(redis.keys_in_use().await.is_empty());
}

#[test]
fn the_scripts_tell_code_tickets_by_the_number_rust_gives_them() {
    let line = format!("local PRIORITY_TICKETS_FROM = {}\n", flashsale_core::Ticket::FIRST_PRIORITY.get());
    assert!(flashsale_redis::PRELUDE.contains(&line), "the prelude must define {line}");
}
