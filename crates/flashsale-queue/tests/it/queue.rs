//! The queue scripts against a real Redis, each test in its own key space.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use flashsale_core::stats::{ranks, spearman};
use flashsale_core::{AdmissionStep, BatchNo, EntrantKey, Epoch, PrequeueSeed, SaleId, Ticket, Units, UserId};
use flashsale_inventory::{Inventory, LedgerSpec, StatusChange};
use flashsale_queue::draw;
use flashsale_queue::{Admission, AdmissionPolicy, Joined, Place, Queue, QueueWindow};
use flashsale_testkit::TestRedis;

fn now_ms() -> i64 {
    i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis()).unwrap()
}

fn user(i: usize) -> UserId {
    UserId::try_from(format!("user-{i}")).unwrap()
}

fn sale() -> SaleId {
    SaleId::try_from(3).unwrap()
}

/// A batch whose pre-queue opened a minute ago and which opens `opens_in_ms` from now.
fn window(opens_in_ms: i64) -> QueueWindow {
    let now = now_ms();
    QueueWindow {
        sale: sale(),
        batch: BatchNo::FIRST,
        prequeue_opens_at_ms: now - 60_000,
        opens_at_ms: now + opens_in_ms,
        closes_at_ms: None,
    }
}

struct Setup {
    redis: TestRedis,
    queue: Queue,
    inventory: Inventory,
}

async fn setup(stock: u32) -> Setup {
    setup_with(stock, 1).await
}

async fn setup_with(stock: u32, per_user_limit: u32) -> Setup {
    let redis = TestRedis::new();
    flashsale_queue::scripts::load_all(&redis.handle().await).await.unwrap();
    flashsale_inventory::scripts::load_all(&redis.handle().await).await.unwrap();
    let inventory = Inventory::new(redis.handle().await, redis.keys.clone());
    inventory.open_batch(sale(), BatchNo::FIRST, ledger_spec(stock, per_user_limit)).await.unwrap();
    let queue = Queue::new(redis.handle().await, redis.keys.clone());
    Setup { redis, queue, inventory }
}

/// An open ledger of `stock` units.
fn ledger_spec(stock: u32, per_user_limit: u32) -> LedgerSpec {
    LedgerSpec {
        total: Units::new(stock),
        per_user_limit: Units::new(per_user_limit),
        opens_at_ms: now_ms(),
        closes_at_ms: None,
        paused: false,
        closed: false,
        epoch: Epoch::FIRST,
        allotment: flashsale_inventory::Allotment::NONE,
    }
}

fn policy(rate: u32, ttl_ms: i64) -> AdmissionPolicy {
    AdmissionPolicy { rate, oversubscription: 1.0, ttl_ms, reach_margin: 0 }
}

#[tokio::test]
async fn joining_twenty_times_at_once_yields_one_place() {
    let s = setup(10).await;
    let open = window(-1_000);
    let buyer = user(1);
    let joins = (0..20).map(|_| s.queue.join(&open, &buyer, 0, None));
    let outcomes: Vec<Joined> = futures::future::join_all(joins).await.into_iter().map(Result::unwrap).collect();
    let new = outcomes.iter().filter(|o| matches!(o, Joined::Ticket { new: true, .. })).count();
    assert_eq!(new, 1, "{outcomes:?}");
    assert!(outcomes.iter().all(|o| matches!(o, Joined::Ticket { number: Ticket(1), .. })), "{outcomes:?}");
}

#[tokio::test]
async fn after_the_opening_places_are_first_come_first_served() {
    let s = setup(10).await;
    let open = window(-1_000);
    for i in 1..=50 {
        assert_eq!(
            s.queue.join(&open, &user(i), 0, None).await.unwrap(),
            Joined::Ticket { number: Ticket(i as u64), new: true }
        );
    }
    assert_eq!(s.queue.place(sale(), BatchNo::FIRST, &user(17)).await.unwrap(), Some(Place::Ticket(Ticket(17))));
    assert_eq!(s.queue.place(sale(), BatchNo::FIRST, &user(99)).await.unwrap(), None);
}

#[tokio::test]
async fn the_prequeue_order_is_the_seeded_permutation_and_ignores_arrival_time() {
    const BUYERS: usize = 1000;
    for seed_byte in [1u8, 2, 3] {
        let s = setup(10).await;
        let seed = PrequeueSeed::new(vec![seed_byte; 32]);
        let key = EntrantKey::new(vec![seed_byte; 32]);
        let rank = |u: &UserId| draw::rank(&seed, &draw::entrant(&key, sale(), BatchNo::FIRST, u));
        let pre = window(3_600_000);
        // Buyers arrive in order 0, 1, 2, ... during the pre-queue.
        for i in 0..BUYERS {
            let joined = s.queue.join(&pre, &user(i), rank(&user(i)), None).await.unwrap();
            assert_eq!(joined, Joined::Prequeue { new: true });
        }
        // Not sealed yet: no cohort to record (unless the batch ended unsealed).
        assert_eq!(s.queue.cohort(sale(), BatchNo::FIRST, false).await.unwrap(), None);
        let (unsealed, members) = s.queue.cohort(sale(), BatchNo::FIRST, true).await.unwrap().unwrap();
        assert_eq!((unsealed, members.len()), (None, BUYERS));
        // The batch opens; a latecomer queues behind the whole cohort.
        let open = QueueWindow { opens_at_ms: now_ms() - 1, ..pre };
        assert_eq!(
            s.queue.join(&open, &user(BUYERS), 0, None).await.unwrap(),
            Joined::Ticket { number: Ticket(1001), new: true }
        );

        let mut places = Vec::new();
        for i in 0..BUYERS {
            match s.queue.place(sale(), BatchNo::FIRST, &user(i)).await.unwrap() {
                Some(Place::Drawn { rank }) => places.push(usize::try_from(rank).unwrap() - 1),
                other => panic!("{other:?}"),
            }
        }
        // A permutation of 0..BUYERS...
        let mut sorted = places.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..BUYERS).collect::<Vec<_>>());
        // ...reproducible by anyone from the seed...
        let mut by_rank: Vec<usize> = (0..BUYERS).collect();
        by_rank.sort_by_key(|i| rank(&user(*i)));
        for (place, buyer) in by_rank.iter().enumerate() {
            assert_eq!(places[*buyer], place);
        }
        // ...and the sealed cohort reads back in that order (the latecomer is not in it).
        let (sealed, members) = s.queue.cohort(sale(), BatchNo::FIRST, false).await.unwrap().unwrap();
        assert_eq!(sealed, Some(BUYERS as u64));
        let drawn: Vec<String> = by_rank.iter().map(|i| user(*i).as_str().to_owned()).collect();
        assert_eq!(members, drawn);
        // ...and unrelated to arrival order (|rho| ~ 0.03 expected for 1000 buyers).
        let arrival: Vec<u64> = (0..BUYERS as u64).collect();
        let drawn_places: Vec<u64> = places.iter().map(|p| *p as u64).collect();
        let rho = spearman(&ranks(&arrival), &ranks(&drawn_places));
        assert!(rho.abs() < 0.15, "seed {seed_byte}: arrival/place correlation {rho}");
    }
}

#[tokio::test]
async fn joins_outside_the_window_are_refused_and_sold_out_stops_new_buyers_only() {
    let s = setup(1).await;
    let early = QueueWindow { prequeue_opens_at_ms: now_ms() + 60_000, ..window(120_000) };
    assert_eq!(s.queue.join(&early, &user(1), 0, None).await.unwrap(), Joined::NotOpen);
    let open = window(-1_000);
    assert_eq!(s.queue.join(&open, &user(1), 0, None).await.unwrap(), Joined::Ticket { number: Ticket(1), new: true });
    // Sell the one unit (as a paid order will).
    let mut conn = s.redis.handle().await.conn().await.unwrap();
    let ledger = s.redis.keys.batch(sale(), BatchNo::FIRST).ledger();
    let _: () = redis::cmd("HSET")
        .arg(&ledger)
        .arg("available")
        .arg(0)
        .arg("sold")
        .arg(1)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(s.queue.join(&open, &user(2), 0, None).await.unwrap(), Joined::SoldOut);
    assert_eq!(s.queue.join(&open, &user(1), 0, None).await.unwrap(), Joined::Ticket { number: Ticket(1), new: false });
    s.inventory.set_status(sale(), BatchNo::FIRST, StatusChange::Close).await.unwrap();
    assert_eq!(s.queue.join(&open, &user(3), 0, None).await.unwrap(), Joined::Closed);
}

#[tokio::test]
async fn a_proof_of_work_challenge_buys_one_join_and_expired_ones_are_forgotten() {
    let s = setup(10).await;
    let open = window(-1_000);
    let far = now_ms() + 60_000;
    assert_eq!(
        s.queue.join(&open, &user(1), 0, Some(("n1", far))).await.unwrap(),
        Joined::Ticket { number: Ticket(1), new: true }
    );
    // Spent: refused for anyone, nothing written.
    assert_eq!(s.queue.join(&open, &user(2), 0, Some(("n1", far))).await.unwrap(), Joined::PowReused);
    assert_eq!(s.queue.place(sale(), BatchNo::FIRST, &user(2)).await.unwrap(), None);
    // A spent challenge past its expiry is dropped by the next join (it could not be used anyway).
    assert!(s.queue.join(&open, &user(3), 0, Some(("old", now_ms() - 1))).await.is_ok());
    s.queue.join(&open, &user(4), 0, Some(("n2", far))).await.unwrap();
    let mut conn = s.redis.handle().await.conn().await.unwrap();
    let spent: Vec<String> = redis::cmd("ZRANGE")
        .arg(s.redis.keys.batch(sale(), BatchNo::FIRST).queue_pow_spent())
        .arg(0)
        .arg(-1)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(spent, ["n1", "n2"]);
}

#[tokio::test]
async fn two_instances_ticking_together_never_exceed_the_admission_rate() {
    let s = setup(100_000).await;
    let open = window(-1_000);
    for i in 1..=2000 {
        s.queue.join(&open, &user(i), 0, None).await.unwrap();
    }
    let (a, b) = (s.queue.clone(), Queue::new(s.redis.handle().await, s.redis.keys.clone()));
    let rate = 200;
    let started = Instant::now();
    let mut serving = 0;
    while started.elapsed() < Duration::from_millis(1500) {
        let p = policy(rate, 60_000);
        let (x, y) = tokio::join!(a.admit(&open, &p, false), b.admit(&open, &p, false));
        serving = x.unwrap().serving.max(y.unwrap().serving);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    // The bucket starts empty and banks at most one second's worth.
    let bound = f64::from(rate) * (elapsed + 0.1);
    assert!(
        serving > 0 && serving as f64 <= bound,
        "admitted {serving} in {elapsed:.2}s at {rate}/s (bound {bound:.0})"
    );
}

#[tokio::test]
async fn admission_stops_at_the_stock_and_resumes_when_turns_expire() {
    let s = setup(10).await;
    let open = window(-1_000);
    for i in 1..=100 {
        s.queue.join(&open, &user(i), 0, None).await.unwrap();
    }
    // Turns last two seconds: long enough that a loaded machine cannot lapse them mid-test.
    let p = policy(10_000, 2_000);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut last = s.queue.admit(&open, &p, false).await.unwrap();
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        last = s.queue.admit(&open, &p, false).await.unwrap();
    }
    assert_eq!((last.serving, last.inflight), (10, 10), "{last:?}");
    match s.queue.admission(sale(), BatchNo::FIRST, Ticket(10)).await.unwrap() {
        Admission::Admitted { window, admitted_at_ms } => assert_eq!(window.expires_at_ms - admitted_at_ms, 2_000),
        other => panic!("{other:?}"),
    }
    assert_eq!(s.queue.admission(sale(), BatchNo::FIRST, Ticket(11)).await.unwrap(), Admission::Waiting);
    // Nobody reserved: the turns lapse and the counter admits the next ten.
    let next = tick_for(&s, &open, &p, 2_100).await;
    assert_eq!((next.serving, next.inflight, next.lapsed), (20, 10, 10), "{next:?}");
    assert_eq!(s.queue.admission(sale(), BatchNo::FIRST, Ticket(5)).await.unwrap(), Admission::Expired);
}

#[tokio::test]
async fn a_paused_batch_admits_nobody_and_keeps_places() {
    let s = setup(10).await;
    let open = window(-1_000);
    for i in 1..=5 {
        s.queue.join(&open, &user(i), 0, None).await.unwrap();
    }
    s.inventory.set_status(sale(), BatchNo::FIRST, StatusChange::Pause).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(s.queue.admit(&open, &policy(1000, 1000), false).await.unwrap().serving, 0);
    assert_eq!(s.queue.place(sale(), BatchNo::FIRST, &user(3)).await.unwrap(), Some(Place::Ticket(Ticket(3))));
    s.inventory.set_status(sale(), BatchNo::FIRST, StatusChange::Resume).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(s.queue.admit(&open, &policy(1000, 1000), false).await.unwrap().serving > 0);
}

#[tokio::test]
async fn buyers_who_reserve_stop_counting_as_in_flight() {
    let s = setup(10).await;
    let open = window(-1_000);
    for i in 1..=30 {
        s.queue.join(&open, &user(i), 0, None).await.unwrap();
    }
    // Turns last two seconds: long enough that a loaded machine cannot lapse them mid-test.
    let p = policy(10_000, 2_000);
    // The bucket starts empty: the first step only starts the clock.
    s.queue.admit(&open, &p, false).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let first = s.queue.admit(&open, &p, false).await.unwrap();
    assert_eq!((first.serving, first.inflight), (10, 10), "{first:?}");
    let step = first.serving;
    for ticket in 1..=3u64 {
        let buyer = user(usize::try_from(ticket).unwrap());
        let request = flashsale_inventory::ReserveRequest {
            user: &buyer,
            units: Units::new(1),
            ticket: Ticket(ticket),
            step: AdmissionStep(step),
            window_ms: 60_000,
            claim: None,
        };
        let reserved = s.inventory.reserve(sale(), BatchNo::FIRST, request).await.unwrap();
        assert!(matches!(reserved, flashsale_inventory::Reserved::Reserved { .. }), "{reserved:?}");
    }
    // 7 units left, 7 admitted buyers still to act: nobody more is admitted yet.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let next = s.queue.admit(&open, &p, false).await.unwrap();
    assert_eq!((next.serving, next.inflight), (10, 7), "{next:?}");
    // The seven lapse; only they count as lapsed, and seven more are admitted for the 7 units.
    let later = tick_for(&s, &open, &p, 2_100).await;
    assert_eq!((later.serving, later.inflight, later.lapsed), (17, 7, 7), "{later:?}");
}

/// Ticks every 100 ms for `ms`, as the instances' tickers do (a longer silence is an outage,
/// whose time `admit.lua` gives back to the running turns); the last step, with `lapsed` summed
/// over all of them.
async fn tick_for(s: &Setup, open: &QueueWindow, p: &AdmissionPolicy, ms: u64) -> flashsale_queue::Admitted {
    let until = Instant::now() + Duration::from_millis(ms);
    let mut lapsed = 0;
    loop {
        let step = s.queue.admit(open, p, false).await.unwrap();
        lapsed += step.lapsed;
        if Instant::now() >= until {
            return flashsale_queue::Admitted { lapsed, ..step };
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// When no instance could step for more than two seconds (Redis unreachable, every instance
/// down), nobody could order either: the running turns get the gap back at the next step.
#[tokio::test]
async fn a_gap_in_the_steps_is_given_back_to_running_turns() {
    let (s, open) = with_buyers(10, 5).await;
    let p = policy(10_000, 1_000);
    assert_eq!(admit_now(&s, &open, &p).await.serving, 5);
    let before = turn_ends_at(&s, 3).await;
    let silent_from = now_ms();
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let back = s.queue.admit(&open, &p, false).await.unwrap();
    let silence = now_ms() - silent_from;
    assert_eq!((back.lapsed, back.inflight), (0, 5), "{back:?}");
    let after = turn_ends_at(&s, 3).await;
    assert!(after - before >= silence - 100, "extended by {} after a silence of {silence} ms", after - before);
    // Then the ticks go on and the turns end at their new end.
    let wait = u64::try_from(after - now_ms() + 300).unwrap_or(0);
    assert_eq!(tick_for(&s, &open, &p, wait).await.lapsed, 5);
}

/// A batch open since a second ago with `buyers` joined (tickets 1..=buyers).
async fn with_buyers(stock: u32, buyers: usize) -> (Setup, QueueWindow) {
    let s = setup(stock).await;
    let open = window(-1_000);
    for i in 1..=buyers {
        s.queue.join(&open, &user(i), 0, None).await.unwrap();
    }
    (s, open)
}

/// Admits everyone the stock allows (the bucket starts empty: the first step starts the clock).
async fn admit_now(s: &Setup, open: &QueueWindow, p: &AdmissionPolicy) -> flashsale_queue::Admitted {
    s.queue.admit(open, p, false).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    s.queue.admit(open, p, false).await.unwrap()
}

async fn turn_ends_at(s: &Setup, ticket: u64) -> i64 {
    match s.queue.admission(sale(), BatchNo::FIRST, Ticket(ticket)).await.unwrap() {
        Admission::Admitted { window, .. } => window.expires_at_ms,
        other => panic!("ticket {ticket}: {other:?}"),
    }
}

/// A pause (operations) and a hold (an instance whose database is down) freeze admitted turns:
/// nobody lapses while it lasts, and afterwards every turn ends later by the time it lasted.
#[tokio::test]
async fn a_pause_or_a_hold_freezes_admitted_turns_and_gives_the_time_back() {
    for by_pause in [true, false] {
        let (s, open) = with_buyers(10, 5).await;
        let p = policy(10_000, 1_000);
        assert_eq!(admit_now(&s, &open, &p).await.serving, 5);
        let before = turn_ends_at(&s, 3).await;
        if by_pause {
            s.inventory.set_status(sale(), BatchNo::FIRST, StatusChange::Pause).await.unwrap();
        }
        let frozen_from = now_ms();
        // Longer than the turns: without the freeze every one of them would lapse.
        for round in 0..6 {
            // Two instances step in turn, one holding and one not (its database answers): the
            // holder's lease freezes the batch for both.
            let step = s.queue.admit(&open, &p, !by_pause && round % 2 == 0).await.unwrap();
            assert_eq!((step.serving, step.lapsed, step.inflight), (5, 0, 5), "pause {by_pause}: {step:?}");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        assert!(s.queue.counters(&[(sale(), BatchNo::FIRST)]).await.unwrap()[0].frozen_since_ms.is_some());
        assert_eq!(turn_ends_at(&s, 3).await, before, "the turn is still admitted, not extended yet");
        if by_pause {
            s.inventory.set_status(sale(), BatchNo::FIRST, StatusChange::Resume).await.unwrap();
        } else {
            // A hold is a lease: the batch stays frozen for a second after the last holding step.
            let held = s.queue.admit(&open, &p, false).await.unwrap();
            assert_eq!((held.serving, held.lapsed), (5, 0), "still held: {held:?}");
            tokio::time::sleep(Duration::from_millis(1_050)).await;
        }
        let frozen_for = now_ms() - frozen_from;
        let thawed = s.queue.admit(&open, &p, false).await.unwrap();
        assert_eq!((thawed.lapsed, thawed.inflight), (0, 5), "pause {by_pause}: {thawed:?}");
        assert!(s.queue.counters(&[(sale(), BatchNo::FIRST)]).await.unwrap()[0].frozen_since_ms.is_none());
        let after = turn_ends_at(&s, 3).await;
        // The freeze began at the first frozen step and ended at the thawing one.
        assert!(
            after - before >= frozen_for - 100 && after - before <= frozen_for + 200,
            "pause {by_pause}: extended by {} for a freeze of {frozen_for} ms",
            after - before
        );
        // Extended, not endless: the turns lapse at their new end.
        tokio::time::sleep(Duration::from_millis(u64::try_from(after - now_ms() + 50).unwrap_or(0))).await;
        let lapsed = s.queue.admit(&open, &p, false).await.unwrap();
        assert_eq!(lapsed.lapsed, 5, "pause {by_pause}: {lapsed:?}");
    }
}

async fn reserve_as(s: &Setup, buyer: &UserId, units: u32, ticket: u64, step: u64) -> flashsale_inventory::Reserved {
    let request = flashsale_inventory::ReserveRequest {
        user: buyer,
        units: Units::new(units),
        ticket: Ticket(ticket),
        step: AdmissionStep(step),
        window_ms: 60_000,
        claim: None,
    };
    s.inventory.reserve(sale(), BatchNo::FIRST, request).await.unwrap()
}

/// A refusal that leaves the buyer nothing to buy (nothing available, or their limit held)
/// ends their turn at once: the next unit that comes back goes to the next buyer without waiting
/// for the refused buyer's window to run out. A refusal that leaves something keeps the turn.
#[tokio::test]
async fn a_refusal_that_leaves_nothing_to_buy_ends_the_turn() {
    use flashsale_inventory::Reserved;
    let s = setup_with(3, 2).await;
    let open = window(-1_000);
    for i in 1..=6 {
        s.queue.join(&open, &user(i), 0, None).await.unwrap();
    }
    let p = policy(10_000, 60_000);
    let first = admit_now(&s, &open, &p).await;
    assert_eq!((first.serving, first.inflight), (3, 3), "{first:?}");
    let step = first.serving;
    let inflight = || async { s.queue.counters(&[(sale(), BatchNo::FIRST)]).await.unwrap()[0].inflight };

    assert!(matches!(reserve_as(&s, &user(1), 2, 1, step).await, Reserved::Reserved { .. }));
    // One unit left: asking for two is refused, but the buyer may still take one.
    assert!(
        matches!(reserve_as(&s, &user(2), 2, 2, step).await, Reserved::SoldOut { available } if available.get() == 1)
    );
    assert_eq!(inflight().await, 2, "the turn is kept");
    assert!(matches!(reserve_as(&s, &user(2), 1, 2, step).await, Reserved::Reserved { .. }));
    assert_eq!(inflight().await, 1);
    // Nothing left: the turn ends, and its ticket is spent.
    assert!(
        matches!(reserve_as(&s, &user(3), 1, 3, step).await, Reserved::SoldOut { available } if available.get() == 0)
    );
    assert_eq!(inflight().await, 0, "the refused buyer no longer counts as in flight");
    assert_eq!(reserve_as(&s, &user(3), 1, 3, step).await, Reserved::TokenUsed);
    // The whole limit held: the same.
    assert!(matches!(reserve_as(&s, &user(1), 1, 4, step).await, Reserved::LimitReached { .. }));
    assert_eq!(reserve_as(&s, &user(1), 1, 4, step).await, Reserved::TokenUsed);
}

/// Once every unit is in a cart, admission never passes the reach (the units that may come back,
/// with the oversubscription margin) even when units come back, new joiners are turned away, and
/// more stock lifts it.
#[tokio::test]
async fn admission_never_passes_the_reach_until_more_stock_lifts_it() {
    use flashsale_inventory::{Reserved, Settlement};
    let (s, open) = with_buyers(4, 20).await;
    let p = AdmissionPolicy { oversubscription: 1.5, ..policy(10_000, 60_000) };
    let first = admit_now(&s, &open, &p).await;
    assert_eq!((first.serving, first.inflight), (6, 6), "{first:?}");
    let mut held = Vec::new();
    for ticket in 1..=4u64 {
        match reserve_as(&s, &user(usize::try_from(ticket).unwrap()), 1, ticket, first.serving).await {
            Reserved::Reserved { id, .. } => held.push(id),
            other => panic!("{other:?}"),
        }
    }
    let counters = || async { s.queue.counters(&[(sale(), BatchNo::FIRST)]).await.unwrap()[0] };
    assert_eq!(counters().await.reach, None, "set by the first step that sees every unit held");
    // 4 held, 2 admitted buyers still choosing: 6 + ceil((4 - 2) * 1.5) = 9 (no margin here).
    tokio::time::sleep(Duration::from_millis(20)).await;
    s.queue.admit(&open, &p, false).await.unwrap();
    assert_eq!(counters().await.reach, Some(Ticket(9)));
    assert!(counters().await.beyond_reach(Ticket(10)) && !counters().await.beyond_reach(Ticket(9)));
    assert_eq!(s.queue.join(&open, &user(21), 0, None).await.unwrap(), Joined::SoldOut);

    // All four come back: the stock alone would let four more in (6 - 2 in flight); the reach, three.
    for id in held {
        s.inventory.settle(sale(), BatchNo::FIRST, id, Settlement::Release).await.unwrap();
    }
    let step = tick_for(&s, &open, &p, 300).await;
    assert_eq!(step.serving, 9, "{step:?}");

    // More stock lifts it: the line goes on, and joins are taken again.
    s.inventory.configure(sale(), BatchNo::FIRST, ledger_spec(6, 1)).await.unwrap();
    let step = tick_for(&s, &open, &p, 300).await;
    assert!(step.serving > 9, "{step:?}");
    assert_eq!((counters().await.reach, counters().await.reopens), (None, 1));
    assert!(matches!(s.queue.join(&open, &user(21), 0, None).await.unwrap(), Joined::Ticket { .. }));
}
