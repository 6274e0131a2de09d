//! A state-machine test: random sequences of reserve, replay, commit, release, abort, expire,
//! stock changes and rebuilds (Redis loses the batch's state and it is rebuilt from what the
//! orders know) run against Redis and against a plain model; after every step the ledger must
//! equal the model and balance (available + reserved + sold = total).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use flashsale_core::{AdmissionStep, BatchNo, Epoch, SaleId, Ticket, Units, UserId};
use flashsale_inventory::{
    BatchState, Configured, Inventory, LedgerSpec, OpenReservation, Rebuilt, ReservationId, ReserveRequest, Reserved,
    Settled, SettledReservation, Settlement,
};
use flashsale_testkit::TestRedis;
use proptest::prelude::*;

const LIMIT: u32 = 4;
const SHORT_MS: i64 = 1;
const LONG_MS: i64 = 600_000;

#[derive(Debug, Clone)]
enum Op {
    Reserve { user: u8, units: u32, short: bool },
    Replay,
    Commit(usize),
    Release(usize),
    Abort(usize),
    Expire,
    Rebuild,
    SetStock(u32),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..5, 1u32..=3, any::<bool>()).prop_map(|(user, units, short)| Op::Reserve { user, units, short }),
        1 => Just(Op::Replay),
        2 => (0usize..16).prop_map(Op::Commit),
        2 => (0usize..16).prop_map(Op::Release),
        1 => (0usize..16).prop_map(Op::Abort),
        1 => Just(Op::Expire),
        1 => Just(Op::Rebuild),
        1 => (1u32..40).prop_map(Op::SetStock),
    ]
}

/// What the ledger should hold.
#[derive(Debug, Default)]
struct Model {
    total: u32,
    available: u32,
    reserved: u32,
    sold: u32,
    holdings: BTreeMap<u8, u32>,
    /// Open reservations: id → (user, units, short window).
    open: BTreeMap<u64, (u8, u32, bool)>,
    /// Every reservation id ever made, in order, and how each was settled.
    made: Vec<u64>,
    settled: BTreeMap<u64, Settlement>,
    /// Tickets used, with the buyer who used each (a used ticket is bound to its buyer).
    used_tickets: Vec<(u64, u8)>,
    /// Every reservation's user, units and ticket.
    info: BTreeMap<u64, (u8, u32, u64)>,
    /// Reservations aborted before a rebuild: no order remembers them, so Redis no longer knows them.
    forgotten: Vec<u64>,
}

fn now_ms() -> i64 {
    i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis()).unwrap()
}

fn spec(total: u32) -> LedgerSpec {
    LedgerSpec {
        total: Units::new(total),
        per_user_limit: Units::new(LIMIT),
        opens_at_ms: now_ms() - 1_000,
        closes_at_ms: None,
        paused: false,
        closed: false,
        epoch: Epoch::FIRST,
    }
}

async fn run(ops: Vec<Op>, stock: u32) -> Result<(), TestCaseError> {
    let redis = TestRedis::new();
    flashsale_inventory::scripts::load_all(&redis.handle().await).await.unwrap();
    let inventory = Inventory::new(redis.handle().await, redis.keys.clone());
    let (sale, batch) = (SaleId::try_from(5).unwrap(), BatchNo::FIRST);
    inventory.open_batch(sale, batch, spec(stock)).await.unwrap();
    let mut m = Model { total: stock, available: stock, ..Model::default() };
    let user = |u: u8| UserId::try_from(format!("user {u}")).unwrap();

    for (step, op) in ops.into_iter().enumerate() {
        match op {
            Op::Reserve { user: u, units, short } => {
                let ticket = step as u64 + 1;
                let buyer = user(u);
                let window_ms = if short { SHORT_MS } else { LONG_MS };
                let request = ReserveRequest {
                    user: &buyer,
                    units: Units::new(units),
                    ticket: Ticket(ticket),
                    step: AdmissionStep(0),
                    window_ms,
                    claim: None,
                };
                let got = inventory.reserve(sale, batch, request).await.unwrap();
                let held = m.holdings.get(&u).copied().unwrap_or(0);
                if held + units > LIMIT {
                    prop_assert_eq!(got, Reserved::LimitReached { held: Units::new(held) });
                } else if m.available < units {
                    prop_assert_eq!(got, Reserved::SoldOut { available: Units::new(m.available) });
                } else {
                    let Reserved::Reserved { id, .. } = got else {
                        return Err(TestCaseError::fail(format!("{got:?}")));
                    };
                    m.available -= units;
                    m.reserved += units;
                    *m.holdings.entry(u).or_default() += units;
                    m.open.insert(id.0, (u, units, short));
                    m.made.push(id.0);
                    m.used_tickets.push((ticket, u));
                    m.info.insert(id.0, (u, units, ticket));
                }
            }
            Op::Replay => {
                if let Some((ticket, u)) = m.used_tickets.last().copied() {
                    let buyer = user(u);
                    let request = ReserveRequest {
                        user: &buyer,
                        units: Units::new(1),
                        ticket: Ticket(ticket),
                        step: AdmissionStep(0),
                        window_ms: LONG_MS,
                        claim: None,
                    };
                    prop_assert_eq!(inventory.reserve(sale, batch, request).await.unwrap(), Reserved::TokenUsed);
                }
            }
            Op::Commit(pick) | Op::Release(pick) | Op::Abort(pick) => {
                let Some(id) = (!m.made.is_empty()).then(|| m.made[pick % m.made.len()]) else { continue };
                let how = match op {
                    Op::Commit(_) => Settlement::Commit,
                    Op::Release(_) => Settlement::Release,
                    _ => Settlement::Abort { step: AdmissionStep(0) },
                };
                let got = inventory.settle(sale, batch, ReservationId(id), how).await.unwrap();
                match (m.open.remove(&id), m.settled.get(&id)) {
                    (Some((u, units, _)), _) => {
                        prop_assert_eq!(got, Settled::Done { units: Units::new(units) });
                        m.reserved -= units;
                        if how == Settlement::Commit {
                            m.sold += units;
                        } else {
                            m.available += units;
                            *m.holdings.get_mut(&u).unwrap() -= units;
                        }
                        if matches!(how, Settlement::Abort { .. }) {
                            // The ticket is usable again.
                            let ticket = m.info[&id].2;
                            m.used_tickets.retain(|(t, _)| *t != ticket);
                        }
                        m.settled.insert(id, how);
                    }
                    (None, _) if m.forgotten.contains(&id) => prop_assert_eq!(got, Settled::Unknown),
                    (None, Some(Settlement::Commit)) => prop_assert_eq!(got, Settled::AlreadyCommitted),
                    (None, Some(Settlement::Release | Settlement::Abort { .. })) => {
                        prop_assert_eq!(got, Settled::AlreadyReleased)
                    }
                    (None, None) => return Err(TestCaseError::fail("made but neither open nor settled")),
                }
            }
            Op::Expire => {
                tokio::time::sleep(Duration::from_millis(3)).await;
                let got = inventory.expire_due(sale, batch, 1_000, 0).await.unwrap();
                let due: Vec<u64> = m.open.iter().filter(|(_, (_, _, short))| *short).map(|(id, _)| *id).collect();
                let mut units_back = 0;
                for id in &due {
                    let (u, units, _) = m.open.remove(id).unwrap();
                    m.reserved -= units;
                    m.available += units;
                    *m.holdings.get_mut(&u).unwrap() -= units;
                    m.settled.insert(*id, Settlement::Release);
                    units_back += u64::from(units);
                }
                prop_assert_eq!((got.reservations, got.units), (due.len() as u64, units_back));
            }
            Op::Rebuild => {
                // Redis loses the batch: every key of it goes.
                let keys = redis.keys.batch(sale, batch);
                let mut conn = redis.handle().await.conn().await.unwrap();
                let all = [
                    keys.ledger(),
                    keys.holdings(),
                    keys.reservations(),
                    keys.reservation_deadlines(),
                    keys.settled(),
                    keys.used_tickets(),
                ];
                let _: () = redis::cmd("DEL").arg(&all[..]).query_async(&mut conn).await.unwrap();
                let request = ReserveRequest {
                    user: &user(0),
                    units: Units::new(1),
                    ticket: Ticket(999_999),
                    step: AdmissionStep(0),
                    window_ms: 1,
                    claim: None,
                };
                prop_assert_eq!(inventory.reserve(sale, batch, request).await.unwrap(), Reserved::Missing);
                // What the orders know: aborted reservations never became orders.
                let order = |id: &u64| {
                    let (u, units, ticket) = m.info[id];
                    (ReservationId(*id), user(u), Units::new(units), Ticket(ticket))
                };
                let open = m
                    .open
                    .iter()
                    .map(|(id, (_, _, short))| {
                        let (id, user, units, ticket) = order(id);
                        let deadline_ms = now_ms() + if *short { SHORT_MS } else { LONG_MS };
                        OpenReservation { id, user, units, deadline_ms, ticket }
                    })
                    .collect();
                let settled = m
                    .settled
                    .iter()
                    .filter(|(_, how)| !matches!(how, Settlement::Abort { .. }))
                    .map(|(id, how)| {
                        let (id, user, units, ticket) = order(id);
                        SettledReservation { id, user, units, committed: *how == Settlement::Commit, ticket }
                    })
                    .collect();
                let last_reservation = m.made.iter().copied().max().unwrap_or(0);
                let state = BatchState {
                    spec: LedgerSpec { epoch: Epoch(2), ..spec(m.total) },
                    queue: Default::default(),
                    last_reservation,
                    open,
                    settled,
                };
                let got = inventory.rebuild(sale, batch, &state).await.unwrap();
                prop_assert_eq!(
                    got,
                    Rebuilt::Rebuilt {
                        available: Units::new(m.available),
                        reserved: Units::new(m.reserved),
                        sold: Units::new(m.sold)
                    }
                );
                prop_assert_eq!(inventory.rebuild(sale, batch, &state).await.unwrap(), Rebuilt::AlreadyPresent);
                let aborted =
                    m.settled.iter().filter(|(_, how)| matches!(how, Settlement::Abort { .. })).map(|(id, _)| *id);
                m.forgotten.extend(aborted);
            }
            Op::SetStock(total) => {
                let got = inventory.configure(sale, batch, spec(total)).await.unwrap();
                let held = m.reserved + m.sold;
                if total < held {
                    prop_assert_eq!(got, Configured::BelowCommitted { held: Units::new(held) });
                } else {
                    m.total = total;
                    m.available = total - held;
                    prop_assert_eq!(got, Configured::Applied { available: Units::new(m.available) });
                }
            }
        }
        let l = inventory.snapshot(sale, batch).await.unwrap().unwrap();
        prop_assert!(l.balances(), "unbalanced after step {}: {:?}", step, l);
        prop_assert_eq!(
            (l.total.get(), l.available.get(), l.reserved.get(), l.sold.get()),
            (m.total, m.available, m.reserved, m.sold),
            "after step {}",
            step
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]

    #[test]
    fn the_ledger_follows_the_model_through_any_sequence(ops in prop::collection::vec(op(), 1..40), stock in 1u32..30) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(run(ops, stock))?;
    }
}
