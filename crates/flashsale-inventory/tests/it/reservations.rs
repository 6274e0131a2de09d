//! Reservation races against a real Redis: the last unit, the per-user limit, token replay,
//! exactly-once settlement and expiry. Each test in its own key space.

use std::time::{SystemTime, UNIX_EPOCH};

use flashsale_core::{AdmissionStep, BatchNo, Epoch, SaleId, Ticket, Units, UserId};
use flashsale_inventory::{
    Inventory, LedgerSnapshot, LedgerSpec, ReservationId, ReserveRequest, Reserved, Settled, Settlement, StatusChange,
};
use flashsale_testkit::TestRedis;
use futures::future::join_all;

const WINDOW_MS: i64 = 60_000;

fn sale() -> SaleId {
    SaleId::try_from(11).unwrap()
}

fn user(i: usize) -> UserId {
    UserId::try_from(format!("buyer {i}")).unwrap()
}

fn now_ms() -> i64 {
    i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis()).unwrap()
}

async fn open(stock: u32, limit: u32) -> (TestRedis, Inventory) {
    let redis = TestRedis::new();
    flashsale_inventory::scripts::load_all(&redis.handle().await).await.unwrap();
    let inventory = Inventory::new(redis.handle().await, redis.keys.clone());
    let spec = LedgerSpec {
        total: Units::new(stock),
        per_user_limit: Units::new(limit),
        opens_at_ms: now_ms() - 1_000,
        closes_at_ms: None,
        paused: false,
        closed: false,
        epoch: Epoch::FIRST,
        allotment: flashsale_inventory::Allotment::NONE,
    };
    inventory.open_batch(sale(), BatchNo::FIRST, spec).await.unwrap();
    (redis, inventory)
}

fn request(user: &UserId, units: u32, ticket: u64, window_ms: i64) -> ReserveRequest<'_> {
    ReserveRequest {
        user,
        units: Units::new(units),
        ticket: Ticket(ticket),
        step: AdmissionStep(0),
        window_ms,
        claim: None,
    }
}

async fn ledger(inventory: &Inventory) -> LedgerSnapshot {
    inventory.snapshot(sale(), BatchNo::FIRST).await.unwrap().unwrap()
}

#[tokio::test]
async fn five_hundred_buyers_racing_for_ten_units_get_exactly_ten() {
    for _round in 0..10 {
        let (_redis, inventory) = open(10, 1).await;
        let users: Vec<UserId> = (0..500).map(user).collect();
        let attempts = users.iter().enumerate().map(|(i, u)| {
            let inventory = inventory.clone();
            let u = u.clone();
            tokio::spawn(async move {
                inventory.reserve(sale(), BatchNo::FIRST, request(&u, 1, i as u64 + 1, WINDOW_MS)).await.unwrap()
            })
        });
        let outcomes: Vec<Reserved> = join_all(attempts).await.into_iter().map(Result::unwrap).collect();
        let won = outcomes.iter().filter(|o| matches!(o, Reserved::Reserved { .. })).count();
        let lost = outcomes.iter().filter(|o| matches!(o, Reserved::SoldOut { .. })).count();
        assert_eq!((won, lost), (10, 490));
        let l = ledger(&inventory).await;
        assert_eq!((l.available, l.reserved, l.sold), (Units::ZERO, Units::new(10), Units::ZERO));
        assert!(l.balances());
    }
}

#[tokio::test]
async fn one_buyer_in_twenty_tabs_never_holds_more_than_the_limit() {
    let (_redis, inventory) = open(100, 2).await;
    let alice = user(1);
    let attempts = (0..20).map(|i| inventory.reserve(sale(), BatchNo::FIRST, request(&alice, 1, i + 1, WINDOW_MS)));
    let outcomes: Vec<Reserved> = join_all(attempts).await.into_iter().map(Result::unwrap).collect();
    let won = outcomes.iter().filter(|o| matches!(o, Reserved::Reserved { .. })).count();
    assert_eq!(won, 2, "{outcomes:?}");
    assert!(outcomes.iter().all(|o| matches!(o, Reserved::Reserved { .. } | Reserved::LimitReached { .. })));
    assert_eq!(ledger(&inventory).await.reserved, Units::new(2));
}

#[tokio::test]
async fn a_replayed_admission_token_reserves_once() {
    let (_redis, inventory) = open(100, 100).await;
    let alice = user(1);
    let attempts = (0..50).map(|_| inventory.reserve(sale(), BatchNo::FIRST, request(&alice, 1, 7, WINDOW_MS)));
    let outcomes: Vec<Reserved> = join_all(attempts).await.into_iter().map(Result::unwrap).collect();
    let won = outcomes.iter().filter(|o| matches!(o, Reserved::Reserved { .. })).count();
    let replays = outcomes.iter().filter(|o| **o == Reserved::TokenUsed).count();
    assert_eq!((won, replays), (1, 49));
}

#[tokio::test]
async fn settling_twice_and_concurrently_counts_once() {
    let (_redis, inventory) = open(10, 5).await;
    let alice = user(1);
    let Reserved::Reserved { id: paid, .. } =
        inventory.reserve(sale(), BatchNo::FIRST, request(&alice, 2, 1, WINDOW_MS)).await.unwrap()
    else {
        panic!("reserve failed")
    };
    let Reserved::Reserved { id: dropped, .. } =
        inventory.reserve(sale(), BatchNo::FIRST, request(&alice, 3, 2, WINDOW_MS)).await.unwrap()
    else {
        panic!("reserve failed")
    };
    let commits = (0..20).map(|_| inventory.settle(sale(), BatchNo::FIRST, paid, Settlement::Commit));
    let releases = (0..20).map(|_| inventory.settle(sale(), BatchNo::FIRST, dropped, Settlement::Release));
    let (commits, releases) = tokio::join!(join_all(commits), join_all(releases));
    let done =
        |outcomes: &[Result<Settled, _>]| outcomes.iter().filter(|o| matches!(o, Ok(Settled::Done { .. }))).count();
    assert_eq!((done(&commits), done(&releases)), (1, 1));
    assert!(commits.iter().all(|o| matches!(o, Ok(Settled::Done { .. } | Settled::AlreadyCommitted))));
    assert!(releases.iter().all(|o| matches!(o, Ok(Settled::Done { .. } | Settled::AlreadyReleased))));
    // Too late to pay for what was released; unknown ids are unknown.
    assert_eq!(
        inventory.settle(sale(), BatchNo::FIRST, dropped, Settlement::Commit).await.unwrap(),
        Settled::AlreadyReleased
    );
    assert_eq!(
        inventory.settle(sale(), BatchNo::FIRST, ReservationId(99), Settlement::Commit).await.unwrap(),
        Settled::Unknown
    );
    let l = ledger(&inventory).await;
    assert_eq!((l.available, l.reserved, l.sold), (Units::new(8), Units::ZERO, Units::new(2)));
    // The buyer keeps the 2 bought units against the limit, and got the 3 released back.
    assert_eq!(
        inventory.reserve(sale(), BatchNo::FIRST, request(&alice, 4, 3, WINDOW_MS)).await.unwrap(),
        Reserved::LimitReached { held: Units::new(2) }
    );
    assert!(matches!(
        inventory.reserve(sale(), BatchNo::FIRST, request(&alice, 3, 4, WINDOW_MS)).await.unwrap(),
        Reserved::Reserved { .. }
    ));
}

#[tokio::test]
async fn expired_reservations_come_back_exactly_once_with_several_sweepers() {
    let (_redis, inventory) = open(10, 10).await;
    for i in 0..10 {
        let u = user(i);
        let reserved = inventory.reserve(sale(), BatchNo::FIRST, request(&u, 1, i as u64 + 1, 30)).await.unwrap();
        assert!(matches!(reserved, Reserved::Reserved { .. }));
    }
    assert_eq!(ledger(&inventory).await.available, Units::ZERO);
    tokio::time::sleep(std::time::Duration::from_millis(60)).await;
    // Within the grace period nothing is released: the order's own expiry decides first.
    assert_eq!(inventory.expire_due(sale(), BatchNo::FIRST, 100, 60_000).await.unwrap().units, 0);
    let sweeps = (0..3).map(|_| inventory.expire_due(sale(), BatchNo::FIRST, 4, 0));
    let mut released: u64 = join_all(sweeps).await.into_iter().map(|e| e.unwrap().units).sum();
    released += inventory.expire_due(sale(), BatchNo::FIRST, 100, 0).await.unwrap().units;
    assert_eq!(released, 10);
    let l = ledger(&inventory).await;
    assert_eq!((l.available, l.reserved), (Units::new(10), Units::ZERO));
    assert!(l.balances());
}

#[tokio::test]
async fn a_paused_closed_or_unopened_batch_reserves_nothing() {
    let (_redis, inventory) = open(10, 1).await;
    let alice = user(1);
    inventory.set_status(sale(), BatchNo::FIRST, StatusChange::Pause).await.unwrap();
    assert_eq!(
        inventory.reserve(sale(), BatchNo::FIRST, request(&alice, 1, 1, WINDOW_MS)).await.unwrap(),
        Reserved::Paused
    );
    inventory.set_status(sale(), BatchNo::FIRST, StatusChange::Close).await.unwrap();
    assert_eq!(
        inventory.reserve(sale(), BatchNo::FIRST, request(&alice, 1, 1, WINDOW_MS)).await.unwrap(),
        Reserved::Closed
    );
    let other = BatchNo::FIRST.next();
    assert_eq!(inventory.reserve(sale(), other, request(&alice, 1, 1, WINDOW_MS)).await.unwrap(), Reserved::Missing);
    assert!(inventory.reserve(sale(), BatchNo::FIRST, request(&alice, 0, 2, WINDOW_MS)).await.is_err());
    assert_eq!(ledger(&inventory).await.available, Units::new(10));
}

#[tokio::test]
async fn a_flushed_script_cache_is_reloaded_transparently() {
    let (redis, inventory) = open(10, 1).await;
    let mut conn = redis.handle().await.conn().await.unwrap();
    // Every caller reloads on NOSCRIPT, so flushing under other tests' feet is harmless.
    let _: () = redis::cmd("SCRIPT").arg("FLUSH").query_async(&mut conn).await.unwrap();
    let alice = user(1);
    let reserved = inventory.reserve(sale(), BatchNo::FIRST, request(&alice, 1, 1, WINDOW_MS)).await.unwrap();
    assert!(matches!(reserved, Reserved::Reserved { .. }), "{reserved:?}");
}

#[tokio::test]
async fn a_request_claim_is_made_in_the_same_step_and_stops_a_second_use() {
    let (redis, inventory) = open(1, 1).await;
    let claim_key = redis.keys.batch(sale(), BatchNo::FIRST).idempotency("buyer 0", "key");
    let (alice, bob) = (user(0), user(1));
    // 30 concurrent uses of one claim: one gets through, the others see it held and take nothing.
    let attempts = (0..30).map(|i| {
        let inventory = inventory.clone();
        let (alice, claim_key) = (alice.clone(), claim_key.clone());
        tokio::spawn(async move {
            let claim = flashsale_inventory::RequestClaim { key: &claim_key, value: "first", ttl_ms: 60_000 };
            let request = ReserveRequest { claim: Some(claim), ..request(&alice, 1, 100 + i, WINDOW_MS) };
            inventory.reserve(sale(), BatchNo::FIRST, request).await.unwrap()
        })
    });
    let outcomes: Vec<Reserved> = join_all(attempts).await.into_iter().map(Result::unwrap).collect();
    assert_eq!(outcomes.iter().filter(|o| matches!(o, Reserved::Reserved { .. })).count(), 1);
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, Reserved::Reserved { .. }) || *o == Reserved::Claimed { held: "first".to_owned() })
    );
    // A refusal claims too (the caller stores the refusal under it).
    let bob_key = redis.keys.batch(sale(), BatchNo::FIRST).idempotency("buyer 1", "key");
    let bob_claim = flashsale_inventory::RequestClaim { key: &bob_key, value: "bob", ttl_ms: 60_000 };
    let refused = inventory
        .reserve(sale(), BatchNo::FIRST, ReserveRequest { claim: Some(bob_claim), ..request(&bob, 1, 1, WINDOW_MS) })
        .await
        .unwrap();
    assert_eq!(refused, Reserved::SoldOut { available: Units::ZERO });
    let again = ReserveRequest { claim: Some(bob_claim), ..request(&bob, 1, 2, WINDOW_MS) };
    assert_eq!(
        inventory.reserve(sale(), BatchNo::FIRST, again).await.unwrap(),
        Reserved::Claimed { held: "bob".to_owned() }
    );
    // No ledger (Redis lost it): no claim is written, so the retry after the rebuild runs.
    let mut conn = redis.handle().await.conn().await.unwrap();
    let _: () =
        redis::cmd("DEL").arg(redis.keys.batch(sale(), BatchNo::FIRST).ledger()).query_async(&mut conn).await.unwrap();
    let lost_key = redis.keys.batch(sale(), BatchNo::FIRST).idempotency("buyer 2", "key");
    let lost = flashsale_inventory::RequestClaim { key: &lost_key, value: "x", ttl_ms: 60_000 };
    let carol = user(2);
    let missing = ReserveRequest { claim: Some(lost), ..request(&carol, 1, 3, WINDOW_MS) };
    assert_eq!(inventory.reserve(sale(), BatchNo::FIRST, missing).await.unwrap(), Reserved::Missing);
    let exists: bool = redis::cmd("EXISTS").arg(&lost_key).query_async(&mut conn).await.unwrap();
    assert!(!exists);
}
