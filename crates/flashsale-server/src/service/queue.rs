//! The buyer's side of the queue: joining, the status poll, admission tokens, and the admission
//! ticker every instance runs.
//!
//! A status poll costs no Redis round trip in the common case: the buyer's place travels in a
//! signed ticket the client sends back (`X-Queue-Ticket`), the sale and batch come from the
//! public-view cache, and the serving counter and stock from [`BatchCounters`], cached per batch
//! for a few milliseconds. Redis is asked only when the client has no ticket, once when the
//! pre-queue's draw becomes known, and once when the buyer is first admitted (to learn the
//! admission window, which the new ticket then carries).

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use flashsale_core::{BatchNo, SaleId, Ticket, Units, UserId};
use flashsale_queue::pow::{ChallengeClaims, IssuedChallenge, PowError};
use flashsale_queue::{Admission, AdmissionClaims, AdmissionPolicy, Joined, Place, QueueWindow, TicketClaims, draw};
use flashsale_sales::{Batch, Sale};
use serde::Serialize;

use super::Error;
use super::sales::live_snapshot;
use crate::problem::ProblemCode;
use crate::pulse::{PULSE, Signal};
use crate::snapshot::BatchCounters;
use crate::state::AppState;

/// How often each instance runs the admission ticker step for every open batch.
pub const ADMISSION_TICK: Duration = Duration::from_millis(100);

/// How often a buyer of a paused batch is told to ask again.
const PAUSED_POLL_MS: u64 = 5_000;

/// Where a buyer stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum QueueStatus {
    /// In line (or in the pre-queue, `position` null until the draw at the opening).
    Waiting,
    /// It is the buyer's turn: `admission_token` lets them reserve until `expires_at`.
    Admitted,
    /// The turn came and passed unused; the place went to the next buyer.
    Expired,
    /// Operations paused the sale; the place is kept, and an admitted buyer's turn is frozen
    /// (it runs on after the resume, with the time it had left).
    Paused,
    /// Still in line, but every unit is in someone's cart: one comes back only if a hold lapses
    /// or is cancelled. `units_held`, `next_release_at` (when the first hold ends) and
    /// `standby_place` (this buyer's place among those a returned unit would go to, admitted
    /// buyers still choosing counted first) say how likely that is.
    Standby,
    /// Every unit is sold, or every unit is in a cart and this buyer is behind the last place a
    /// returned unit could reach (so no unit can come to them). Final, unless operations add
    /// stock or everyone ahead passes and units are free again: then the place, which is kept,
    /// is in line again for a buyer who asks once more.
    SoldOut,
    /// The batch is closed.
    Closed,
}

/// `POST` and `GET /sales/{id}/queue`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct QueueState {
    pub status: QueueStatus,
    pub sale_id: SaleId,
    pub batch_no: BatchNo,
    /// 1-based place in the batch's queue; null during the pre-queue; kept once admitted.
    pub position: Option<u64>,
    /// Buyers still waiting ahead of this one.
    pub ahead: Option<u64>,
    /// Estimated seconds until admission at the current rate; null when unknown (pre-queue, no
    /// stock free right now).
    pub eta_secs: Option<u64>,
    /// When to ask again, in ms: rarely when far back, often near the front; null when there is
    /// nothing left to wait for.
    pub poll_after_ms: Option<u64>,
    /// A new ticket, present whenever the place it records changed (the first answer, the
    /// pre-queue draw, admission): keep the latest and send it back as `X-Queue-Ticket`; it
    /// carries the place, so the poll is cheap. Absent when the ticket sent is still current.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ticket: Option<String>,
    /// When admitted: the single-use token the order step consumes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admission_token: Option<String>,
    /// When admitted: when the token stops being accepted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    /// In standby: units in buyers' carts, unpaid, that may come back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub units_held: Option<Units>,
    /// In standby: when the first hold ends (its order expires then, unless paid).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_release_at: Option<DateTime<Utc>>,
    /// In standby: 1 + the buyers a returned unit would go to first (admitted buyers still
    /// choosing, then those ahead in line). Above `units_held`, only holds that lapse or are
    /// cancelled *and* buyers ahead who pass could still reach this buyer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub standby_place: Option<u64>,
    /// Buyers who joined during the pre-queue: their receipt for the draw, hex. With their id it
    /// finds their entry in the cohort published at the opening, their place and its proof
    /// (`flashsale-verify --buyer ID --receipt HEX`); nobody without it can tell they joined.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub draw_receipt: Option<String>,
    /// When the batch opens (the pre-queue's draw).
    pub opens_at: DateTime<Utc>,
    /// The server's clock.
    pub server_time: DateTime<Utc>,
}

/// The buyer's rank in the batch's pre-queue draw (see [`flashsale_queue::draw`]): from the
/// batch's secret seed and the buyer's entry, itself bound to a receipt under the batch's
/// entrant key.
fn prequeue_rank(batch: &Batch, user: &UserId) -> u64 {
    let entry = draw::entrant(&batch.entrant_key, batch.sale_id, batch.batch_no, user);
    draw::rank(&batch.prequeue_seed, &entry)
}

/// A sale's current batch, with what the queue needs of it.
/// Borrowed from the cached snapshot: a status poll copies nothing of the sale.
struct Context<'a> {
    sale: &'a Sale,
    batch: &'a Batch,
    window: QueueWindow,
    policy: AdmissionPolicy,
}

fn context_of<'a>(state: &AppState, sale: &'a Sale, batch: &'a Batch) -> Context<'a> {
    let config = &sale.config;
    Context {
        window: QueueWindow {
            sale: sale.id,
            batch: batch.batch_no,
            prequeue_opens_at_ms: config.prequeue_opens_at(batch.opens_at).timestamp_millis(),
            opens_at_ms: batch.opens_at.timestamp_millis(),
            closes_at_ms: batch.closes_at.map(|t| t.timestamp_millis()),
        },
        policy: AdmissionPolicy {
            rate: config.admission_rate,
            oversubscription: state.queue_settings.oversubscription,
            ttl_ms: i64::from(config.admission_ttl_secs) * 1000,
            reach_margin: reach_margin(state.queue_settings.reach_margin_min, batch.stock),
        },
        sale,
        batch,
    }
}

/// Buyers kept in standby beyond those the held units could serve, once every unit is in a cart
/// (`admit.lua`'s reach): at least `min`, and a twentieth of the stock. A unit goes to the next
/// buyer when one within reach cancels, lets the payment lapse or passes; if more do than this
/// allows, the line runs dry with units free and must reopen to buyers already told `sold_out`
/// (most of whom have left), so the margin is generous: a buyer kept in standby a little longer
/// costs far less than a unit nobody comes for.
pub fn reach_margin(min: u32, stock: Units) -> u64 {
    u64::from(min.max(stock.get() / 20))
}

/// The cached snapshot of one sale; 404 when there is no such sale.
pub(crate) async fn sale_snapshot(
    state: &AppState,
    id: SaleId,
) -> Result<std::sync::Arc<crate::snapshot::PublicSnapshot>, Error> {
    let snapshot = live_snapshot(state, Some(id)).await?;
    if snapshot.is_empty() {
        return Err(Error::sale_not_found());
    }
    Ok(snapshot)
}

/// The batch's counters and ledger, from the per-batch cache (refreshed at most every
/// `counter_cache_ttl`).
pub(crate) async fn counters(
    state: &AppState,
    sale: SaleId,
    batch: BatchNo,
) -> Result<std::sync::Arc<BatchCounters>, Error> {
    state
        .counters
        .get_or_load((sale, batch), || async {
            let key = [(sale, batch)];
            let (queue, ledger) = tokio::join!(state.queue.counters(&key), state.inventory.snapshot(sale, batch));
            let (queue, ledger) = (queue?.pop().unwrap_or_default(), ledger?);
            // Only while every unit is held: when can the first come back?
            let next_release_ms = match ledger {
                Some(l) if l.is_all_held() => state.inventory.next_releases(&key).await?.pop().flatten(),
                _ => None,
            };
            Ok::<_, Error>(std::sync::Arc::new(BatchCounters { queue, ledger, next_release_ms }))
        })
        .await
}

pub(crate) fn millis_to_time(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

/// When a waiting buyer should ask again (`poll_after_ms`).
///
/// A buyer comes back when their turn is expected (admission never runs faster than the rate, so
/// not later than it), near the front at least every half second so an admission is noticed well
/// inside its window; further back less often, up to the crowd's
/// ceiling: every 10 s for a small crowd, longer as the crowd grows, so that the buyers at the
/// ceiling poll `budget` times a second together (at most every 120 s).
///
/// The far crowd, buyers so far back that the stock free now will almost surely be in carts
/// before the line reaches them, does not poll at the ceiling all sale long: each is told to come
/// back once, just after the predicted sell-out (the admission needs `servable / rate` seconds
/// to let in the buyers the free stock can serve; they need a few more to reserve), spread in
/// queue order at `budget` polls a second. (Counting the admitted buyers still choosing out of
/// `servable` would, at the opening, when tens of thousands are, put the sell-out seconds away
/// and send the whole crowd back at once, long before it comes: measured, BENCHMARKS.md.) By
/// then the reach is known and those it cannot serve learn `sold_out` on that poll; those it
/// can are told `standby` or their turn. Never later
/// than their turn could come, were everyone ahead to pass: a far buyer polls before
/// `ahead / rate` seconds plus their turn's length, so no turn lapses unseen.
#[derive(Debug, Clone, Copy)]
pub struct Pacing {
    /// The batch's admission rate, buyers per second.
    pub rate: u32,
    /// Buyers waiting in the batch (the pre-queue cohort before the draw).
    pub waiting: u64,
    /// Polls per second the crowd should make, all instances together.
    pub budget: u32,
    /// Buyers the stock not yet in a cart can serve: available units times the
    /// oversubscription, admitted buyers still choosing included.
    pub servable: u64,
    /// How long an admitted buyer's turn lasts, ms.
    pub turn_ms: u64,
}

/// Time for the last buyers admitted before a sell-out to put their units in carts.
const RESERVE_SLACK_MS: u64 = 5_000;

impl Pacing {
    /// The longest anyone is told to wait before asking again (the far crowd aside).
    fn ceiling_ms(&self) -> u64 {
        (self.waiting.saturating_mul(1000) / u64::from(self.budget.max(1))).clamp(10_000, 120_000)
    }

    /// How long until the admission could reach `ahead` at the earliest (at its full rate).
    fn earliest_turn_ms(&self, ahead: u64) -> u64 {
        ahead.saturating_mul(1000) / u64::from(self.rate.max(1))
    }

    /// The first place of the far crowd: twice the buyers the free stock can serve, plus five
    /// seconds of admission, for the units that come back from cancellations and lapses.
    fn far_from(&self) -> u64 {
        self.servable.saturating_mul(2).saturating_add(u64::from(self.rate).saturating_mul(5))
    }

    /// For a buyer `ahead` places from the front.
    pub fn waiting_ms(&self, ahead: u64) -> u64 {
        let far_from = self.far_from();
        if ahead >= far_from {
            let sell_out = self.earliest_turn_ms(self.servable).saturating_add(RESERVE_SLACK_MS);
            let spread = (ahead - far_from).saturating_mul(1000) / u64::from(self.budget.max(1));
            let latest = self.earliest_turn_ms(ahead).saturating_add(self.turn_ms).saturating_sub(1_000);
            return sell_out.saturating_add(spread).min(latest).max(500);
        }
        self.earliest_turn_ms(ahead).clamp(500, self.ceiling_ms())
    }

    /// For a buyer in the pre-queue, `until_open_ms` before the draw, with pre-queue `rank` (52
    /// bits, [`flashsale_queue::draw::rank`]). Nothing moves before the draw, so
    /// early birds only re-check now and then (the opening may be moved, the sale paused). Close
    /// to it they are told to come back after the draw, when their place is expected to come up:
    /// the rank's high bits say roughly where in the cohort they will be drawn, its low bits
    /// spread the cohort's first polls evenly instead of a million of them at the opening (the
    /// far crowd is spread by its place already). This
    /// tells a buyer roughly where they will be drawn a few seconds before the draw is public;
    /// they cannot change it (the rank is fixed by the seed and their id).
    pub fn prequeue_ms(&self, until_open_ms: u64, rank: u64) -> u64 {
        let ceiling = self.ceiling_ms();
        if until_open_ms > ceiling {
            return (until_open_ms / 2).clamp(1_000, ceiling);
        }
        let expected_ahead = u64::try_from((u128::from(rank) * u128::from(self.waiting)) >> 52).unwrap_or(u64::MAX);
        let spread = self.waiting_ms(expected_ahead);
        if expected_ahead >= self.far_from() {
            return until_open_ms + spread;
        }
        (until_open_ms + spread * (rank & 0xFFFF) / 0x1_0000).max(500)
    }
}

/// Counts a queue request of the sale refused by a rate limit, for its current batch's report.
pub async fn rate_limited(state: &AppState, id: SaleId) {
    if let Ok(snapshot) = sale_snapshot(state, id).await {
        state.activity.rate_limited(id, snapshot[0].1.batch.batch_no, state.clock.now_ms());
    }
}

/// How long a proof-of-work challenge may be solved and used.
pub const CHALLENGE_TTL_MS: i64 = 120_000;

/// A fresh proof-of-work challenge for the buyer's join to the sale's current batch, at the
/// difficulty the sale asks right now (an adaptive one rises with the join rate).
pub async fn challenge(state: &AppState, user: &UserId, id: SaleId) -> Result<IssuedChallenge, Error> {
    let snapshot = sale_snapshot(state, id).await?;
    let ctx = context_of(state, &snapshot[0].0, &snapshot[0].1.batch);
    issue_challenge(state, &ctx, user).await
}

async fn issue_challenge(state: &AppState, ctx: &Context<'_>, user: &UserId) -> Result<IssuedChallenge, Error> {
    let pow = ctx.sale.config.join_pow;
    let now_ms = state.clock.now_ms();
    let bits = if pow.adaptive.is_some() {
        let live = counters(state, ctx.sale.id, ctx.batch.batch_no).await?;
        let rate = state.join_rates.observe(ctx.sale.id, ctx.batch.batch_no, live.queue.queued(), now_ms);
        pow.bits_at(rate)
    } else {
        pow.bits
    };
    let mut nonce = [0u8; 16];
    rand::Rng::fill(&mut rand::rng(), &mut nonce[..]);
    let expires_at_ms = now_ms + CHALLENGE_TTL_MS;
    let claims = ChallengeClaims {
        user: user.clone(),
        sale: ctx.sale.id,
        batch: ctx.batch.batch_no,
        bits,
        expires_at_ms,
        nonce: flashsale_core::hex(&nonce),
    };
    metrics::counter!("pow_challenges_total").increment(1);
    metrics::gauge!("pow_bits", "sale" => ctx.sale.id.to_string()).set(f64::from(bits));
    Ok(IssuedChallenge { challenge: state.challenges.issue(&claims), bits, expires_at: millis_to_time(expires_at_ms) })
}

/// A join's proof of work as sent: the challenge and the solution (`None`: not a number).
#[derive(Debug, Clone, Copy)]
pub struct Proof<'a> {
    pub challenge: &'a str,
    pub solution: Option<u64>,
}

/// The challenge `proof` spends, checked (before any Redis round trip), if the sale asks for a
/// proof of work; the refusal carries a fresh challenge.
async fn checked_proof(
    state: &AppState,
    ctx: &Context<'_>,
    user: &UserId,
    proof: Option<Proof<'_>>,
) -> Result<Option<ChallengeClaims>, Error> {
    if !ctx.sale.config.join_pow.is_on() {
        return Ok(None);
    }
    let checked = match proof {
        None => Err(PowError::Missing),
        Some(Proof { solution: None, .. }) => Err(PowError::Wrong),
        Some(Proof { challenge, solution: Some(solution) }) => {
            state.challenges.check(challenge, solution, user, ctx.sale.id, ctx.batch.batch_no, state.clock.now_ms())
        }
    };
    match checked {
        Ok(claims) => Ok(Some(claims)),
        Err(reason) => Err(pow_refused(state, ctx, user, reason).await),
    }
}

async fn pow_refused(state: &AppState, ctx: &Context<'_>, user: &UserId, reason: PowError) -> Error {
    metrics::counter!("pow_refused_total", "reason" => pow_reason(reason)).increment(1);
    // A missing proof is the protocol's first step (the answer carries the challenge): not a failure.
    if reason != PowError::Missing {
        state.activity.pow_failed(ctx.sale.id, ctx.batch.batch_no, state.clock.now_ms());
    }
    match issue_challenge(state, ctx, user).await {
        Ok(fresh) => Error::Pow { reason, fresh },
        Err(e) => e,
    }
}

fn pow_reason(reason: PowError) -> &'static str {
    match reason {
        PowError::Missing => "missing",
        PowError::Forged => "forged",
        PowError::Foreign => "foreign",
        PowError::Expired => "expired",
        PowError::Wrong => "wrong",
        PowError::Reused => "reused",
    }
}

/// Joins the buyer to the sale's current batch, with the proof of work the sale asks (if any).
/// Returns whether this call created the place.
pub async fn join(
    state: &AppState,
    user: &UserId,
    id: SaleId,
    proof: Option<Proof<'_>>,
) -> Result<(bool, QueueState), Error> {
    let snapshot = sale_snapshot(state, id).await?;
    let ctx = context_of(state, &snapshot[0].0, &snapshot[0].1.batch);
    let spent = checked_proof(state, &ctx, user, proof).await?;
    let rank = prequeue_rank(ctx.batch, user);
    let spends = spent.as_ref().map(|c| (c.nonce.as_str(), c.expires_at_ms));
    let joined = state.queue.join(&ctx.window, user, rank, spends).await?;
    let outcome = match joined {
        Joined::Prequeue { .. } => "prequeue",
        Joined::Ticket { .. } => "ticket",
        Joined::NotOpen => "not_open",
        Joined::Closed => "closed",
        Joined::SoldOut => "sold_out",
        Joined::Missing => "rebuilding",
        Joined::PowReused => "pow_reused",
    };
    metrics::counter!("queue_joins_total", "outcome" => outcome).increment(1);
    // For the report: new places and refusals (a buyer joining again keeps their place: not a
    // join; a batch being rebuilt refuses nobody for good).
    match joined {
        Joined::Prequeue { new: true } | Joined::Ticket { new: true, .. } => {
            state.activity.join(id, ctx.batch.batch_no, state.clock.now_ms(), true);
        }
        Joined::NotOpen | Joined::Closed | Joined::SoldOut => {
            state.activity.join(id, ctx.batch.batch_no, state.clock.now_ms(), false);
        }
        Joined::Prequeue { new: false } | Joined::Ticket { new: false, .. } | Joined::Missing | Joined::PowReused => {}
    }
    let (number, new) = match joined {
        Joined::Prequeue { new } => (None, new),
        Joined::Ticket { number, new } => (Some(number), new),
        Joined::NotOpen => {
            return Err(Error::NotOpen { opens_at: ctx.sale.config.prequeue_opens_at(ctx.batch.opens_at) });
        }
        Joined::Closed => {
            return Err(Error::Refused { code: ProblemCode::Closed, detail: "the batch is closed".to_owned() });
        }
        Joined::SoldOut => {
            return Err(Error::Refused {
                code: ProblemCode::SoldOut,
                detail: "every unit of this batch is sold".to_owned(),
            });
        }
        // Redis lost the batch; upkeep rebuilds it within a second or two.
        Joined::Missing => return Err(Error::Rebuilding),
        Joined::PowReused => return Err(pow_refused(state, &ctx, user, PowError::Reused).await),
    };
    let ticket =
        TicketClaims { user: user.clone(), sale: id, batch: ctx.batch.batch_no, number, admission: None, told: false };
    Ok((new, view(state, &ctx, ticket, None).await?))
}

/// The buyer's state in the sale's current batch; `presented` is the ticket from their last
/// answer, if the client kept it.
pub async fn status(state: &AppState, user: &UserId, id: SaleId, presented: Option<&str>) -> Result<QueueState, Error> {
    let snapshot = sale_snapshot(state, id).await?;
    let ctx = context_of(state, &snapshot[0].0, &snapshot[0].1.batch);
    let verified = presented.and_then(|t| state.tokens.verify_ticket(t, user, id, ctx.batch.batch_no));
    let reusable = verified.as_ref().and(presented);
    let ticket = match verified {
        Some(ticket) => ticket,
        None => {
            let place = Box::pin(state.queue.place(id, ctx.batch.batch_no, user)).await?;
            let number = match place {
                None => {
                    return Err(Error::NotFound(
                        "you have not joined this batch's queue; POST /sales/{id}/queue to join".to_owned(),
                    ));
                }
                Some(Place::Drawn { rank }) => (state.clock.now() >= ctx.batch.opens_at).then_some(Ticket(rank)),
                Some(Place::Ticket(number)) => Some(number),
            };
            TicketClaims {
                user: user.clone(),
                sale: id,
                batch: ctx.batch.batch_no,
                number,
                admission: None,
                told: false,
            }
        }
    };
    let state_now = view(state, &ctx, ticket, reusable).await?;
    let status = match state_now.status {
        QueueStatus::Waiting => "waiting",
        QueueStatus::Admitted => "admitted",
        QueueStatus::Expired => "expired",
        QueueStatus::Paused => "paused",
        QueueStatus::Standby => "standby",
        QueueStatus::SoldOut => "sold_out",
        QueueStatus::Closed => "closed",
    };
    metrics::counter!("queue_polls_total", "status" => status).increment(1);
    Ok(state_now)
}

/// Computes the buyer's state from their ticket and the batch's (cached) counters. `presented`
/// is the genuine ticket string the client sent, handed back unchanged (not re-signed) when
/// nothing in it changed.
async fn view(
    state: &AppState,
    ctx: &Context<'_>,
    mut ticket: TicketClaims,
    presented: Option<&str>,
) -> Result<QueueState, Error> {
    let mut dirty = presented.is_none();
    let now = state.clock.now();
    let now_ms = now.timestamp_millis();
    let (sale, batch) = (ctx.sale.id, ctx.batch.batch_no);
    let live = counters(state, sale, batch).await?;
    let ledger = live.ledger;
    let serving = live.queue.serving;

    // The pre-queue's draw is known from the opening on: learn this buyer's place once.
    if ticket.number.is_none() && now >= ctx.batch.opens_at {
        if let Some(Place::Drawn { rank }) = Box::pin(state.queue.place(sale, batch, &ticket.user)).await? {
            ticket.number = Some(Ticket(rank));
            dirty = true;
        }
    }

    let available = ledger.map_or(0, |l| l.available.get());
    // Buyers the stock free now can serve; of them, those the admission may still let in.
    let servable = admission_capacity(available, ctx.policy.oversubscription);
    let capacity = servable.saturating_sub(live.queue.inflight);
    let pacing = Pacing {
        rate: ctx.policy.rate,
        waiting: live.queue.queued().saturating_sub(serving),
        budget: state.queue_settings.poll_budget,
        servable,
        turn_ms: u64::try_from(ctx.policy.ttl_ms).unwrap_or(0),
    };
    let closed = ctx.batch.is_finished(now) || ledger.is_some_and(|l| l.closed);
    // Sold out for this buyer: every unit sold, or every unit in a cart and this place behind
    // the reach, where no unit that comes back can go (the admission never passes it).
    let sold_out = ledger.is_some_and(|l| l.is_sold_out())
        || ticket.number.is_some_and(|n| n.get() > serving && live.queue.beyond_reach(n));
    let mut out = QueueState {
        status: QueueStatus::Waiting,
        sale_id: sale,
        batch_no: batch,
        position: ticket.number.map(Ticket::get),
        ahead: None,
        eta_secs: None,
        poll_after_ms: None,
        ticket: None,
        admission_token: None,
        expires_at: None,
        units_held: None,
        next_release_at: None,
        standby_place: None,
        // The cohort holds places 1..P, P the pre-queue's size (fixed from the opening on).
        draw_receipt: ticket
            .number
            .is_none_or(|n| n.get() <= live.queue.prequeue)
            .then(|| flashsale_core::hex(&draw::receipt(&ctx.batch.entrant_key, sale, batch, &ticket.user))),
        opens_at: ctx.batch.opens_at,
        server_time: now,
    };

    if closed || sold_out {
        out.status = if closed { QueueStatus::Closed } else { QueueStatus::SoldOut };
        // Counted once per buyer for the sale report: the ticket handed back remembers it.
        if !ticket.told {
            ticket.told = true;
            dirty = true;
            state.activity.told_final(sale, batch, now_ms);
        }
    } else {
        match ticket.number {
            None => {
                let until_open = u64::try_from((ctx.batch.opens_at - now).num_milliseconds()).unwrap_or(0);
                let rank = prequeue_rank(ctx.batch, &ticket.user);
                let pacing = Pacing { waiting: live.queue.prequeue, ..pacing };
                out.poll_after_ms = Some(pacing.prequeue_ms(until_open, rank));
            }
            Some(number) if number.get() <= serving => {
                // A window the ticket carries that has passed is asked about again: a pause or a
                // database outage may have moved its end (see `admit.lua`).
                let turn = match ticket.admission.filter(|w| now_ms < w.expires_at_ms) {
                    Some(window) => Some(window),
                    None => match Box::pin(state.queue.admission(sale, batch, number)).await? {
                        Admission::Admitted { window, .. } => Some(window),
                        // Admitted, and the step's window was swept: the turn has passed.
                        Admission::Expired => None,
                        // Redis's counter is behind the cached one (possible only if Redis lost
                        // its state): at the front, but not admitted yet.
                        Admission::Waiting => {
                            out.ahead = Some(0);
                            out.poll_after_ms = Some(500);
                            out.ticket = Some(state.tokens.sign_ticket(&ticket));
                            return Ok(out);
                        }
                    },
                };
                let paused = ledger.is_some_and(|l| l.paused);
                // Frozen: the turn counts as running if it was running when the freeze began.
                // (A pause admission has not stepped on yet is frozen from now.)
                let frozen = |w: &flashsale_queue::AdmissionWindow| {
                    if live.queue.frozen_since_ms.is_some() { live.queue.freeze_holds(w.expires_at_ms) } else { paused }
                };
                match turn.filter(|w| frozen(w) || now_ms < w.expires_at_ms) {
                    // Paused: the turn is frozen, not running out; ordering waits for the resume.
                    Some(window) if paused => {
                        dirty |= ticket.admission != Some(window);
                        ticket.admission = Some(window);
                        out.status = QueueStatus::Paused;
                        out.ahead = Some(0);
                        out.poll_after_ms = Some(PAUSED_POLL_MS);
                    }
                    Some(window) => {
                        dirty |= ticket.admission != Some(window);
                        ticket.admission = Some(window);
                        let claims = AdmissionClaims {
                            user: ticket.user.clone(),
                            sale,
                            batch,
                            ticket: number,
                            step: window.step,
                            expires_at_ms: window.expires_at_ms,
                        };
                        out.status = QueueStatus::Admitted;
                        out.admission_token = Some(state.tokens.sign_admission(&claims));
                        out.expires_at = Some(millis_to_time(window.expires_at_ms));
                        out.ahead = Some(0);
                    }
                    None => out.status = QueueStatus::Expired,
                }
            }
            Some(number) => {
                let ahead = number.get() - serving - 1;
                out.ahead = Some(ahead);
                if ledger.is_some_and(|l| l.paused) {
                    out.status = QueueStatus::Paused;
                    out.poll_after_ms = Some(PAUSED_POLL_MS);
                } else if let Some(held) = ledger.filter(|l| l.is_all_held()).map(|l| l.reserved) {
                    out.status = QueueStatus::Standby;
                    out.units_held = Some(held);
                    out.next_release_at = live.next_release_ms.map(millis_to_time);
                    out.standby_place = Some(ahead.saturating_add(live.queue.inflight).saturating_add(1));
                    out.poll_after_ms = Some(pacing.waiting_ms(ahead));
                } else {
                    // Admission reaches this buyer at the rate only while the stock left can
                    // take everyone ahead; beyond that it waits for reservations to lapse or be
                    // cancelled, which nobody can time.
                    out.eta_secs = (ahead < capacity).then(|| (ahead + 1).div_ceil(u64::from(ctx.policy.rate.max(1))));
                    out.poll_after_ms = Some(pacing.waiting_ms(ahead));
                }
            }
        }
    }
    if dirty {
        out.ticket = Some(state.tokens.sign_ticket(&ticket));
    }
    Ok(out)
}

/// Buyers the admission lets be in flight for `available` free units, as `admit.lua` counts them
/// (`floor(available * factor)`); the caller subtracts those already in flight.
#[allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "a u32 times a factor of 1.0 to 1.5 is non-negative and fits a u64"
)]
fn admission_capacity(available: u32, oversubscription: f64) -> u64 {
    (f64::from(available) * oversubscription).floor() as u64
}

/// Follows a batch's pulse (see [`crate::pulse`]) for an event stream, starting it on this
/// instance if no stream followed the batch yet.
pub fn follow(state: &AppState, sale: SaleId, batch: BatchNo) -> tokio::sync::watch::Receiver<Signal> {
    state.pulses.follow((sale, batch), |sender| {
        tokio::spawn(state.metrics.scope(beat(state.clone(), (sale, batch), sender)));
    })
}

/// The pulse of one batch: reads its counters every [`PULSE`] while anyone follows it and
/// publishes the signal when it changes. A failed read keeps the last signal (the streams' own
/// looks report the failure to their buyers).
async fn beat(state: AppState, key: crate::pulse::Key, sender: tokio::sync::watch::Sender<Signal>) {
    let mut ticks = tokio::time::interval(PULSE);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        ticks.tick().await;
        if state.pulses.stop_if_unfollowed(key, &sender) {
            return;
        }
        match counters(&state, key.0, key.1).await {
            Ok(counters) => {
                let next = Signal::of(&counters);
                sender.send_if_modified(|signal| {
                    let changed = *signal != next;
                    *signal = next;
                    changed
                });
            }
            Err(e) => {
                tracing::debug!(sale.id = %key.0, batch.no = %key.1, error = %e, "a batch's pulse could not read it")
            }
        }
    }
}

/// One admission step for every open batch; returns how many buyers were admitted. Fails only
/// when the list of sales cannot be read; a failure of one sale's step is logged and skipped.
pub async fn admit_all(state: &AppState, now: DateTime<Utc>) -> Result<u64, Error> {
    // The sales come from PostgreSQL. While it cannot be read, the ticker goes on with the list
    // it last read, holding admission: skipping the step instead would let the turns of buyers
    // already admitted lapse at the first step after the outage.
    let snapshot = match live_snapshot(state, None).await {
        Ok(snapshot) => {
            state.ticker.remember(&snapshot);
            snapshot
        }
        Err(e) => match state.ticker.last_sales() {
            Some(snapshot) if matches!(e, Error::Unavailable(_)) => {
                tracing::debug!(error = %e, "the sales could not be read; stepping with the last list");
                snapshot
            }
            _ => return Err(e),
        },
    };
    // While this instance cannot write orders, admitting buyers would only burn their turns. Only
    // the probe decides that: a busy pool or a Redis hiccup behind a stale list is no outage,
    // and a hold freezes the batch for every instance (a lease in `admit.lua`).
    let hold = state.database.is_down();
    let (mut admitted, mut stepped, mut failed) = (0, 0, 0);
    for (sale, live) in snapshot.iter() {
        if now < live.batch.opens_at || live.batch.is_finished(now) {
            continue;
        }
        let ctx = context_of(state, sale, &live.batch);
        // One sale's failure (its state being rebuilt, a bad reply) must not stop admission for
        // the others: it is logged and counted, and the loop goes on.
        let step = match state.queue.admit(&ctx.window, &ctx.policy, hold).await {
            Ok(step) => step,
            Err(e) => {
                failed += 1;
                metrics::counter!("queue_admission_failures_total", "sale" => sale.id.to_string()).increment(1);
                tracing::warn!(sale.id = %sale.id, batch.no = %live.batch.batch_no, error = %e, "admission step failed for one sale");
                continue;
            }
        };
        let first_wave = admission_capacity(live.batch.stock.get(), ctx.policy.oversubscription);
        state.activity.admission(sale.id, live.batch.batch_no, state.clock.now_ms(), &step, first_wave);
        let label = sale.id.to_string();
        metrics::counter!("queue_admitted_total", "sale" => label.clone()).increment(step.admitted);
        metrics::gauge!("queue_serving", "sale" => label.clone()).set(step.serving as f64);
        metrics::gauge!("queue_length", "sale" => label.clone()).set(step.tail as f64);
        metrics::counter!("queue_admissions_lapsed_total", "sale" => label.clone()).increment(step.lapsed);
        metrics::gauge!("queue_in_flight", "sale" => label).set(step.inflight as f64);
        admitted += step.admitted;
        stepped += 1;
    }
    if failed == 0 || stepped > 0 {
        state.ticker.passed(state.clock.now_ms());
    }
    Ok(admitted)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stock for everyone: nobody is in the far crowd.
    fn ample() -> Pacing {
        Pacing { rate: 1, waiting: 0, budget: 1, servable: u64::MAX / 4, turn_ms: 60_000 }
    }

    /// Tuesday noon: a million waiting for 50,000 units (60,000 buyers with the margin).
    fn tuesday() -> Pacing {
        Pacing { rate: 2_000, waiting: 1_000_000, budget: 20_000, servable: 60_000, turn_ms: 60_000 }
    }

    #[test]
    fn the_far_crowd_comes_back_once_just_after_the_predicted_sell_out_within_the_budget() {
        let sale = tuesday();
        // Near enough to be reached: paced as before.
        assert_eq!(sale.waiting_ms(10_000), 5_000);
        assert_eq!(sale.waiting_ms(100_000), 50_000);
        // The far crowd (from 2 x 60,000 + 5 s of admission on): 30 s to admit 60,000, 5 s to
        // reserve, then in queue order at the budget.
        assert_eq!(sale.waiting_ms(130_000), 35_000);
        assert_eq!(sale.waiting_ms(150_000), 36_000);
        assert_eq!(sale.waiting_ms(999_999), 35_000 + 869_999 / 20);
        // Any second of that window brings at most the budget's polls.
        let mut per_second = std::collections::BTreeMap::<u64, u64>::new();
        for ahead in 130_000..1_000_000 {
            *per_second.entry(sale.waiting_ms(ahead) / 1000).or_default() += 1;
        }
        assert!(per_second.values().all(|&n| n <= 20_000), "{:?}", per_second.values().max());
        // In the pre-queue: after the draw by as much.
        assert_eq!(sale.prequeue_ms(2_000, (1u64 << 52) - 1), 2_000 + sale.waiting_ms(999_999));
    }

    #[test]
    fn a_far_buyer_polls_before_a_turn_could_pass_unseen() {
        // A budget below the rate would spread the far crowd beyond the moment admission could
        // reach them (if everyone ahead passed) and their turn end: they come back before.
        let sale = Pacing { budget: 100, ..tuesday() };
        let ahead = 200_000;
        assert_eq!(sale.waiting_ms(ahead), 100_000 + 60_000 - 1_000);
    }

    #[test]
    fn buyers_far_back_poll_rarely_and_near_the_front_often() {
        let small = Pacing { rate: 1000, waiting: 20_000, budget: 20_000, ..ample() };
        assert_eq!(small.waiting_ms(0), 500);
        assert_eq!(small.waiting_ms(5_000), 5_000);
        assert_eq!(small.waiting_ms(1_000_000), 10_000);
        let slow = Pacing { rate: 10, ..small };
        assert!(slow.waiting_ms(100) > slow.waiting_ms(10));
    }

    #[test]
    fn a_big_crowd_polls_within_the_budget() {
        let crowd = Pacing { rate: 2_000, waiting: 1_000_000, budget: 20_000, ..ample() };
        assert_eq!(crowd.waiting_ms(999_999), 50_000);
        // Summed over the crowd: the ceiling's share is the budget, the front adds a few times
        // the admission rate.
        let polls_per_sec: f64 = (0..crowd.waiting).map(|ahead| 1000.0 / crowd.waiting_ms(ahead) as f64).sum();
        assert!(polls_per_sec < 20_000.0 + 6.0 * 2_000.0, "{polls_per_sec}");
        let huge = Pacing { waiting: 100_000_000, ..crowd };
        assert_eq!(huge.waiting_ms(99_000_000), 120_000);
    }

    #[test]
    fn the_prequeue_comes_back_after_the_draw_spread_by_rank() {
        let cohort = Pacing { rate: 2_000, waiting: 1_000_000, budget: 20_000, ..ample() };
        // Far from the opening: an occasional re-check.
        assert_eq!(cohort.prequeue_ms(300_000, 0), 50_000);
        // Close to it: after the opening, at most the expected place's poll interval later.
        let front = 1u64 << 20; // drawn near the front
        let back = (1u64 << 52) - 1; // drawn last
        assert!((2_000..=2_500).contains(&cohort.prequeue_ms(2_000, front)));
        let last = cohort.prequeue_ms(2_000, back);
        assert!(last > 2_000 && last <= 52_000, "{last}");
        // Low bits spread the cohort: ranks with the same high bits come back at different times.
        let spread: std::collections::BTreeSet<u64> =
            (0..100u64).map(|low| cohort.prequeue_ms(2_000, back - 0xFFFF + low * 600)).collect();
        assert!(spread.len() > 90);
        // Never sooner than half a second, even at the opening.
        assert_eq!(cohort.prequeue_ms(0, 0), 500);
    }
}
