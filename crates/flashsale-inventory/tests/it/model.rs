//! A state-machine test: random sequences of reserve (by queue buyers and by priority code
//! holders), replay, commit, release, abort, expire, stock changes, the end of the codes'
//! allotment and rebuilds (Redis loses the batch's state and it is rebuilt from what the orders
//! know) run against Redis and against a plain model; after every step the ledger must equal the
//! model and balance (available + allotted + reserved + sold = total).

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
    /// `code`: with a priority code's ticket (reserves from the codes' allotment while it lasts).
    Reserve {
        user: u8,
        units: u32,
        short: bool,
        code: bool,
    },
    Replay,
    Commit(usize),
    Release(usize),
    Abort(usize),
    Expire,
    Rebuild,
    SetStock(u32),
    /// The allotment's time is up (released at the next reservation, stock change or rebuild).
    EndAllotment,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..5, 1u32..=3, any::<bool>(), prop::bool::weighted(0.4))
            .prop_map(|(user, units, short, code)| Op::Reserve { user, units, short, code }),
        1 => Just(Op::Replay),
        2 => (0usize..16).prop_map(Op::Commit),
        2 => (0usize..16).prop_map(Op::Release),
        1 => (0usize..16).prop_map(Op::Abort),
        1 => Just(Op::Expire),
        1 => Just(Op::Rebuild),
        1 => (1u32..40).prop_map(Op::SetStock),
        1 => Just(Op::EndAllotment),
    ]
}

/// What the ledger should hold.
#[derive(Debug, Default)]
struct Model {
    total: u32,
    available: u32,
    reserved: u32,
    sold: u32,
    /// The codes' allotment as configured, what of it is free, and units codes hold.
    allotment: u32,
    allotted: u32,
    code_units: u32,
    /// Its time is up (the spec says so from then on).
    allotment_ended: bool,
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

/// Priority units the batch holds back (capped by its stock when opened).
const ALLOTMENT: u32 = 6;

/// `until_ms`: the allotment's end as configured (the same for every call of a run, as a sale's
/// is), or just past when it has ended.
fn spec(total: u32, until_ms: i64, allotment_ended: bool) -> LedgerSpec {
    let until_ms = if allotment_ended { now_ms() - 1 } else { until_ms };
    LedgerSpec {
        total: Units::new(total),
        per_user_limit: Units::new(LIMIT),
        opens_at_ms: now_ms() - 1_000,
        closes_at_ms: None,
        paused: false,
        closed: false,
        epoch: Epoch::FIRST,
        allotment: flashsale_inventory::Allotment { units: Units::new(ALLOTMENT), until_ms },
    }
}

impl Model {
    /// What the scripts do when a reservation's units come back (release, abort, expiry): a
    /// code's units top the allotment up first.
    fn units_back(&mut self, units: u32, code: bool) {
        self.reserved -= units;
        let mut to_allotment = 0;
        if code {
            self.code_units -= units;
            let room = i64::from(self.allotment) - i64::from(self.code_units) - i64::from(self.allotted);
            to_allotment = u32::try_from(room.clamp(0, i64::from(units))).unwrap();
            self.allotted += to_allotment;
        }
        self.available += units - to_allotment;
    }

    /// The split a stock change or a rebuild computes: the allotment's share of the free units.
    fn resplit(&mut self) {
        if self.allotment_ended {
            self.allotment = 0;
        }
        let free = self.total - self.reserved - self.sold;
        self.allotted = free.min(self.allotment.saturating_sub(self.code_units));
        self.available = free - self.allotted;
    }
}

async fn run(ops: Vec<Op>, stock: u32) -> Result<(), TestCaseError> {
    let redis = TestRedis::new();
    flashsale_inventory::scripts::load_all(&redis.handle().await).await.unwrap();
    let inventory = Inventory::new(redis.handle().await, redis.keys.clone());
    let (sale, batch) = (SaleId::try_from(5).unwrap(), BatchNo::FIRST);
    let until_ms = now_ms() + 600_000;
    inventory.open_batch(sale, batch, spec(stock, until_ms, false)).await.unwrap();
    let allotted = ALLOTMENT.min(stock);
    let mut m = Model { total: stock, available: stock - allotted, allotment: ALLOTMENT, allotted, ..Model::default() };
    let user = |u: u8| UserId::try_from(format!("user {u}")).unwrap();

    for (step, op) in ops.into_iter().enumerate() {
        match op {
            Op::Reserve { user: u, units, short, code } => {
                let ticket = step as u64 + 1 + if code { Ticket::FIRST_PRIORITY.get() } else { 0 };
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
                    continue_checks(&inventory, sale, batch, &m, step).await?;
                    continue;
                }
                if m.allotment_ended && m.allotment > 0 {
                    // The first reservation past the allotment's end releases it.
                    m.available += m.allotted;
                    (m.allotment, m.allotted) = (0, 0);
                }
                let from_allotment = code && m.allotment > 0;
                let free = if from_allotment { m.allotted } else { m.available };
                if free < units {
                    prop_assert_eq!(got, Reserved::SoldOut { available: Units::new(free) });
                } else {
                    let Reserved::Reserved { id, .. } = got else {
                        return Err(TestCaseError::fail(format!("{got:?}")));
                    };
                    if from_allotment {
                        m.allotted -= units;
                    } else {
                        m.available -= units;
                    }
                    if code {
                        m.code_units += units;
                    }
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
                        if how == Settlement::Commit {
                            m.reserved -= units;
                            m.sold += units;
                        } else {
                            m.units_back(units, Ticket(m.info[&id].2).is_priority());
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
                    m.units_back(units, Ticket(m.info[id].2).is_priority());
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
                    spec: LedgerSpec { epoch: Epoch(2), ..spec(m.total, until_ms, m.allotment_ended) },
                    queue: Default::default(),
                    last_reservation,
                    open,
                    settled,
                };
                let got = inventory.rebuild(sale, batch, &state).await.unwrap();
                m.allotment = ALLOTMENT;
                m.resplit();
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
                let got = inventory.configure(sale, batch, spec(total, until_ms, m.allotment_ended)).await.unwrap();
                let held = m.reserved + m.sold;
                if total < held {
                    prop_assert_eq!(got, Configured::BelowCommitted { held: Units::new(held) });
                } else {
                    m.total = total;
                    if m.allotment_ended {
                        m.resplit();
                    } else {
                        // The allotment's settings unchanged: it keeps what it holds, as far as
                        // the free units go (a stock change moves nothing between the buckets).
                        let free = total - held;
                        m.allotted = m.allotted.min(free);
                        m.available = free - m.allotted;
                    }
                    prop_assert_eq!(got, Configured::Applied { available: Units::new(m.available) });
                }
            }
            Op::EndAllotment => {
                let mut conn = redis.handle().await.conn().await.unwrap();
                let _: () = redis::cmd("HSET")
                    .arg(redis.keys.batch(sale, batch).ledger())
                    .arg("allotment_until_ms")
                    .arg(now_ms() - 1)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                m.allotment_ended = true;
            }
        }
        continue_checks(&inventory, sale, batch, &m, step).await?;
    }
    Ok(())
}

/// After every step: the ledger balances and equals the model.
async fn continue_checks(
    inventory: &Inventory,
    sale: SaleId,
    batch: BatchNo,
    m: &Model,
    step: usize,
) -> Result<(), TestCaseError> {
    let l = inventory.snapshot(sale, batch).await.unwrap().unwrap();
    prop_assert!(l.balances(), "unbalanced after step {}: {:?}", step, l);
    prop_assert_eq!(
        (l.total.get(), l.available.get(), l.allotted.get(), l.reserved.get(), l.sold.get()),
        (m.total, m.available, m.allotted, m.reserved, m.sold),
        "after step {}",
        step
    );
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
