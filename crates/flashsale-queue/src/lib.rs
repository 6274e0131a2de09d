//! The token queue: who may try to buy, in which order, at what pace.
//!
//! # Layout
//! - [`Queue`]: the entry point over one key space: join, admit (the ticker step), read counters,
//!   look up a place or an admission window. One Lua script per atomic operation (`lua/`).
//! - [`tokens`]: the signed ticket (a place carried by the client, so polls need no Redis) and
//!   the signed, single-use admission token.
//! - [`draw`]: the pre-queue draw's ranks, commitments, receipts and their verification.
//! - [`pow`]: the proof of work a sale may ask of each join (stateless signed challenges).
//! - [`signing`]: the HMAC-SHA256 token format both use.
//! - [`QueueError`]: what can go wrong.
//!
//! # The counters
//! A batch's queue works like a bakery's ticket machine. Each buyer who joins takes the next
//! ticket (`BatchKeys::queue_tail` counts the tickets handed out); a "now serving" number
//! (`BatchKeys::queue_serving`) moves forward at the admission rate, and every ticket at or below
//! it is admitted. Both are plain integers in the sale's hash slot, so reading them is one `MGET`.
//!
//! # Fairness
//! Buyers who join during the pre-queue are equal: they are kept in a sorted set scored by
//! [`draw::rank`], a keyed hash under the batch's secret seed of their entry (their id bound to a
//! receipt only they get), and at the opening the set is sealed: they hold tickets 1..P in rank
//! order. Later joiners get P+1, P+2, … in arrival order. The serving counter only moves forward, so admission follows ticket order.
//!
//! # Pace
//! [`Queue::admit`] is the ticker step any instance may run: a token bucket in Redis caps the
//! global rate, and the stock left caps how many admitted buyers may be in flight at once.

use flashsale_core::{AdmissionStep, BatchNo, KeySpace, SaleId, Ticket, UserId};
use redis::Value;
use serde::Serialize;

pub mod draw;
pub mod pow;
pub mod scripts;
pub mod signing;
pub mod tokens;

pub use draw::seed_commitment;
pub use tokens::{AdmissionClaims, AdmissionWindow, StreamClaims, TicketClaims, TokenError, Tokens};

/// What can go wrong reading or changing a queue.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// No connection could be taken from the pool.
    #[error("no Redis connection for the queue: {0}")]
    NoConnection(#[from] deadpool_redis::PoolError),
    /// Redis answered with an error or the connection broke.
    #[error("Redis failed during a queue operation: {0}")]
    Redis(#[from] redis::RedisError),
    /// A script replied with something its contract does not allow.
    #[error("unexpected reply from {operation}: {reply}")]
    MalformedReply { operation: &'static str, reply: String },
}

/// A batch's queue counters at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, utoipa::ToSchema)]
pub struct QueueStats {
    /// Buyers who have joined the batch's queue (pre-queue included).
    pub queued: u64,
    /// Buyers admitted so far (the serving counter, capped by `queued`).
    pub admitted: u64,
    /// While every unit is in a cart: the last place a returned unit could still reach (see
    /// [`Counters::reach`]); buyers behind it are told `sold_out`, new joiners turned away.
    pub reach: Option<u64>,
    /// Times the reach was lifted (see [`Counters::reopens`]).
    pub reopens: u64,
}

/// When a batch's queue accepts buyers, as Unix milliseconds (the scripts compare them with
/// Redis's clock).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueWindow {
    pub sale: SaleId,
    pub batch: BatchNo,
    /// The pre-queue opens.
    pub prequeue_opens_at_ms: i64,
    /// The batch opens: the pre-queue is drawn and admission starts.
    pub opens_at_ms: i64,
    /// The batch's window ends, if it has an end.
    pub closes_at_ms: Option<i64>,
}

/// How fast and how far admission may go.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdmissionPolicy {
    /// Buyers admitted per second at most, across all instances.
    pub rate: u32,
    /// Buyers in flight (admitted, turn running, not reserved) per unit available, 1.0–1.5: a
    /// little above 1 makes up for buyers who never act.
    pub oversubscription: f64,
    /// How long an admitted buyer has to reserve, in milliseconds.
    pub ttl_ms: i64,
    /// Once every unit is in a cart: buyers kept within reach beyond the units that may come
    /// back (times the oversubscription), for those within it who cancel, lapse or pass.
    pub reach_margin: u64,
}

/// Outcome of [`Queue::join`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Joined {
    /// In the pre-queue; the place is drawn at the opening. `new`: this call added the buyer.
    Prequeue { new: bool },
    /// Holds ticket `number` (1-based). `new`: this call handed it out.
    Ticket { number: Ticket, new: bool },
    /// The pre-queue has not opened yet.
    NotOpen,
    /// The batch is closed.
    Closed,
    /// Every unit is sold; new buyers are not queued.
    SoldOut,
    /// The batch has no ledger in Redis (lost, being rebuilt from PostgreSQL): nothing written.
    Missing,
    /// The proof-of-work challenge was already spent on a join: nothing else written.
    PowReused,
}

/// A buyer's place as stored in Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// Joined during the pre-queue: ticket `rank` once the batch has opened (the draw's order).
    Drawn { rank: u64 },
    /// Joined after the opening with this ticket.
    Ticket(Ticket),
}

/// Outcome of one [`Queue::admit`] call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Admitted {
    /// Buyers admitted by this call.
    pub admitted: u64,
    /// The serving counter after it.
    pub serving: u64,
    /// Tickets handed out.
    pub tail: u64,
    /// Admitted buyers whose turn runs and who have not reserved.
    pub inflight: u64,
    /// Admitted buyers whose turn this call found lapsed unused.
    pub lapsed: u64,
    /// The batch ledger's epoch the step ran under (0: no ledger). A rebuild puts the serving
    /// counter back to its mark under a new epoch.
    pub epoch: u64,
}

/// Where an admitted ticket stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Not admitted yet.
    Waiting,
    /// Admitted at `admitted_at_ms`; may reserve until `window.expires_at_ms`.
    Admitted { window: AdmissionWindow, admitted_at_ms: i64 },
    /// Admitted, but the turn ran out.
    Expired,
}

/// The serving counter and queue length of a batch, read together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counters {
    /// Tickets at or below it are admitted.
    pub serving: u64,
    /// Tickets handed out (the pre-queue cohort counts once sealed).
    pub tail: u64,
    /// Buyers in the pre-queue.
    pub prequeue: u64,
    /// Admitted buyers whose turn is running and who have not reserved (as of the last ticker
    /// step).
    pub inflight: u64,
    /// Since when admitted buyers' turns are frozen (Unix ms, Redis's clock): the batch is
    /// paused, fenced, or an instance holds admission while its database is unreachable. A turn
    /// that was running then is not over while it lasts, whatever its recorded end.
    pub frozen_since_ms: Option<i64>,
    /// The last ticket that may still be admitted, set once every unit is in a cart: the units
    /// that may come back cannot serve anyone behind it (see `lua/admit.lua`). It only moves back,
    /// until more stock or a line run dry lifts it.
    pub reach: Option<Ticket>,
    /// Times the reach was lifted: more stock, or everyone within it had passed and units were
    /// free again.
    pub reopens: u64,
}

impl Counters {
    /// Whether a freeze holds a turn that ends at `expires_at_ms`: the batch is frozen and the
    /// turn was still running when the freeze began, so it is not over, whatever its end says.
    pub fn freeze_holds(&self, expires_at_ms: i64) -> bool {
        self.frozen_since_ms.is_some_and(|since| expires_at_ms > since)
    }

    /// Buyers who joined, pre-queue included.
    pub fn queued(&self) -> u64 {
        self.tail.max(self.prequeue)
    }

    /// Whether `ticket` is behind the reach: no unit can come to it any more.
    pub fn beyond_reach(&self, ticket: Ticket) -> bool {
        self.reach.is_some_and(|reach| ticket > reach)
    }
}

/// The queues of every batch under one key space.
#[derive(Clone)]
pub struct Queue {
    redis: flashsale_redis::Redis,
    keys: KeySpace,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue").field("keys", &self.keys).finish_non_exhaustive()
    }
}

fn malformed(operation: &'static str, reply: &dyn std::fmt::Debug) -> QueueError {
    QueueError::MalformedReply { operation, reply: format!("{reply:?}") }
}

fn count(v: &Value) -> Option<u64> {
    match v {
        Value::Int(n) => u64::try_from(*n).ok(),
        _ => None,
    }
}

impl Queue {
    /// Queues under `keys`, reached through `redis`.
    pub fn new(redis: impl Into<flashsale_redis::Redis>, keys: KeySpace) -> Queue {
        Queue { redis: redis.into(), keys }
    }

    /// Puts `user` in the batch's queue (idempotent: a second call returns the same place).
    /// `spends`: the nonce and expiry (Unix ms) of the checked proof-of-work challenge this join
    /// spends, when the sale asks for one.
    pub async fn join(
        &self,
        window: &QueueWindow,
        user: &UserId,
        rank: u64,
        spends: Option<(&str, i64)>,
    ) -> Result<Joined, QueueError> {
        let keys = self.keys.batch(window.sale, window.batch);
        let mut conn = self.redis.conn().await?;
        let reply: Value = scripts::JOIN
            .key(keys.ledger())
            .key(keys.queue_prequeue())
            .key(keys.queue_members())
            .key(keys.queue_tail())
            .key(keys.queue_sealed())
            .key(keys.queue_ticker())
            .key(keys.queue_arrivals())
            .key(keys.queue_pow_spent())
            .arg(user.as_str())
            .arg(rank)
            .arg(window.prequeue_opens_at_ms)
            .arg(window.opens_at_ms)
            .arg(window.closes_at_ms.unwrap_or(0))
            .arg(spends.map_or("", |(nonce, _)| nonce))
            .arg(spends.map_or(0, |(_, expiry)| expiry))
            .invoke_async(&mut conn)
            .await?;
        let bad = || malformed("join", &reply);
        let Some((outcome, [number, new])) = flashsale_redis::tagged(&reply) else {
            return Err(bad());
        };
        let (number, new) = (count(number).ok_or_else(bad)?, count(new).ok_or_else(bad)? == 1);
        match outcome {
            "pre" => Ok(Joined::Prequeue { new }),
            "ticket" if number >= 1 => Ok(Joined::Ticket { number: Ticket(number), new }),
            "not_open" => Ok(Joined::NotOpen),
            "closed" => Ok(Joined::Closed),
            "sold_out" => Ok(Joined::SoldOut),
            "missing" => Ok(Joined::Missing),
            "pow_reused" => Ok(Joined::PowReused),
            _ => Err(bad()),
        }
    }

    /// One ticker step for the batch: admits as many waiting buyers as the rate and the stock
    /// allow right now. Safe to call from every instance at any frequency.
    ///
    /// With `hold` (this instance cannot write orders) or while the batch is paused, nobody is
    /// admitted and the running turns are frozen; the first step after it extends them by the
    /// time the freeze lasted (see `lua/admit.lua`).
    pub async fn admit(
        &self,
        window: &QueueWindow,
        policy: &AdmissionPolicy,
        hold: bool,
    ) -> Result<Admitted, QueueError> {
        let keys = self.keys.batch(window.sale, window.batch);
        let mut conn = self.redis.conn().await?;
        let reply: Value = scripts::ADMIT
            .key(keys.ledger())
            .key(keys.queue_prequeue())
            .key(keys.queue_tail())
            .key(keys.queue_sealed())
            .key(keys.queue_serving())
            .key(keys.queue_steps())
            .key(keys.queue_step_info())
            .key(keys.queue_ticker())
            .key(keys.queue_steps_by_ticket())
            .arg(policy.rate)
            .arg(policy.oversubscription)
            .arg(policy.ttl_ms)
            .arg(window.opens_at_ms)
            .arg(if hold { "1" } else { "0" })
            .arg(policy.reach_margin)
            .invoke_async(&mut conn)
            .await?;
        let bad = || malformed("admit", &reply);
        let Some(("stepped", [admitted, serving, tail, Value::Int(inflight), lapsed, epoch])) =
            flashsale_redis::tagged(&reply)
        else {
            return Err(bad());
        };
        let inflight = flashsale_redis::clamp_count(*inflight, i64::MAX, || keys.queue_ticker());
        Ok(Admitted {
            admitted: count(admitted).ok_or_else(bad)?,
            serving: count(serving).ok_or_else(bad)?,
            tail: count(tail).ok_or_else(bad)?,
            inflight: u64::try_from(inflight).map_err(|_| bad())?,
            lapsed: count(lapsed).ok_or_else(bad)?,
            epoch: count(epoch).ok_or_else(bad)?,
        })
    }

    /// Whether `ticket` is admitted, and its window if so.
    pub async fn admission(&self, sale: SaleId, batch: BatchNo, ticket: Ticket) -> Result<Admission, QueueError> {
        let keys = self.keys.batch(sale, batch);
        let mut conn = self.redis.conn().await?;
        let reply: Value = scripts::ADMISSION_WINDOW
            .key(keys.queue_serving())
            .key(keys.queue_steps_by_ticket())
            .key(keys.queue_step_info())
            .arg(ticket.get())
            .invoke_async(&mut conn)
            .await?;
        let bad = || malformed("admission_window", &reply);
        match flashsale_redis::tagged(&reply) {
            Some(("waiting", [])) => Ok(Admission::Waiting),
            Some(("expired", [])) => Ok(Admission::Expired),
            Some(("admitted", [Value::Int(step), Value::Int(at), Value::Int(exp)])) => Ok(Admission::Admitted {
                window: AdmissionWindow {
                    step: AdmissionStep::try_from(*step).map_err(|_| bad())?,
                    expires_at_ms: *exp,
                },
                admitted_at_ms: *at,
            }),
            _ => Err(bad()),
        }
    }

    /// The first ticket whose admission window may still be running (the oldest admission step
    /// not yet swept), or 0 when none is.
    pub async fn window_from(&self, sale: SaleId, batch: BatchNo) -> Result<u64, QueueError> {
        let keys = self.keys.batch(sale, batch);
        let mut conn = self.redis.conn().await?;
        let oldest: Vec<String> =
            redis::cmd("ZRANGE").arg(keys.queue_steps_by_ticket()).arg(0).arg(0).query_async(&mut conn).await?;
        let Some(step) = oldest.first() else { return Ok(0) };
        let n: Option<u64> =
            redis::cmd("HGET").arg(keys.queue_step_info()).arg(format!("{step}:n")).query_async(&mut conn).await?;
        let last: u64 = step.parse().map_err(|_| malformed("window_from", &step))?;
        Ok(last.saturating_sub(n.unwrap_or(1)).saturating_add(1))
    }

    /// The batch's pre-queue cohort in drawn order (place 1 first), once it is sealed, with the
    /// size it was sealed at (they differ only if Redis lost part of it); `None` before. With
    /// `unsealed`, the pre-queue as it stands even if it was never sealed (a batch that ended at
    /// its opening). Read in slices, so a cohort of a million never makes Redis answer one 30 MB
    /// reply.
    pub async fn cohort(
        &self,
        sale: SaleId,
        batch: BatchNo,
        unsealed: bool,
    ) -> Result<Option<(Option<u64>, Vec<String>)>, QueueError> {
        let keys = self.keys.batch(sale, batch);
        let mut conn = self.redis.conn().await?;
        let sealed: Option<u64> = redis::cmd("GET").arg(keys.queue_sealed()).query_async(&mut conn).await?;
        if sealed.is_none() && !unsealed {
            return Ok(None);
        }
        drop(conn);
        let members = self.read_sorted(&keys.queue_prequeue()).await?;
        Ok(Some((sealed, members)))
    }

    /// The pre-queue's buyers in the order they joined (earliest first), read in slices.
    pub async fn arrivals(&self, sale: SaleId, batch: BatchNo) -> Result<Vec<String>, QueueError> {
        let keys = self.keys.batch(sale, batch);
        self.read_sorted(&keys.queue_arrivals()).await
    }

    /// Every member of a sorted set in score order, in slices of 20,000.
    async fn read_sorted(&self, key: &str) -> Result<Vec<String>, QueueError> {
        const SLICE: usize = 20_000;
        let mut conn = self.redis.conn().await?;
        let mut members: Vec<String> = Vec::new();
        loop {
            let from = members.len();
            let slice: Vec<String> =
                redis::cmd("ZRANGE").arg(key).arg(from).arg(from + SLICE - 1).query_async(&mut conn).await?;
            let done = slice.len() < SLICE;
            members.extend(slice);
            if done {
                return Ok(members);
            }
        }
    }

    /// The buyer's place, or `None` if they have not joined.
    pub async fn place(&self, sale: SaleId, batch: BatchNo, user: &UserId) -> Result<Option<Place>, QueueError> {
        let keys = self.keys.batch(sale, batch);
        let mut conn = self.redis.conn().await?;
        let (rank, ticket): (Option<u64>, Option<u64>) = redis::pipe()
            .cmd("ZRANK")
            .arg(keys.queue_prequeue())
            .arg(user.as_str())
            .cmd("HGET")
            .arg(keys.queue_members())
            .arg(user.as_str())
            .query_async(&mut conn)
            .await?;
        Ok(match (rank, ticket) {
            (Some(rank), _) => Some(Place::Drawn { rank: rank + 1 }),
            (None, Some(ticket)) => Some(Place::Ticket(Ticket(ticket))),
            (None, None) => None,
        })
    }

    /// The counters of several batches in one round trip. Order follows `batches`.
    pub async fn counters(&self, batches: &[(SaleId, BatchNo)]) -> Result<Vec<Counters>, QueueError> {
        if batches.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for (sale, batch) in batches {
            let keys = self.keys.batch(*sale, *batch);
            pipe.cmd("MGET").arg(keys.queue_tail()).arg(keys.queue_serving());
            pipe.cmd("ZCARD").arg(keys.queue_prequeue());
            pipe.cmd("HMGET").arg(keys.queue_ticker()).arg("inflight").arg("frozen_at").arg("reach").arg("reopens");
        }
        let mut conn = self.redis.conn().await?;
        let replies: Vec<Value> = pipe.query_async(&mut conn).await?;
        replies
            .chunks(3)
            .zip(batches)
            .map(|(pair, (sale, batch))| {
                let keys = self.keys.batch(*sale, *batch);
                let bad = || malformed("counters", &pair);
                let [Value::Array(mget), Value::Int(prequeue), Value::Array(ticker)] = pair else {
                    return Err(bad());
                };
                // Clamped, never an error: one batch's bad counter must not fail the reads of
                // every batch read with it (see `flashsale_redis::clamp_count`).
                let counter = |value: Option<&Value>, key: &dyn Fn() -> String| -> Result<u64, QueueError> {
                    let n: i64 = match value {
                        None | Some(Value::Nil) => 0,
                        Some(v) => redis::from_redis_value(v)?,
                    };
                    Ok(u64::try_from(flashsale_redis::clamp_count(n, i64::MAX, key)).unwrap_or_default())
                };
                Ok(Counters {
                    tail: counter(mget.first(), &|| keys.queue_tail())?,
                    serving: counter(mget.get(1), &|| keys.queue_serving())?,
                    prequeue: u64::try_from(*prequeue).map_err(|_| bad())?,
                    inflight: counter(ticker.first(), &|| keys.queue_ticker())?,
                    frozen_since_ms: match ticker.get(1) {
                        None | Some(Value::Nil) => None,
                        Some(v) => Some(redis::from_redis_value(v)?),
                    },
                    reach: match ticker.get(2) {
                        None | Some(Value::Nil) => None,
                        reach => Some(Ticket(counter(reach, &|| keys.queue_ticker())?)),
                    },
                    reopens: counter(ticker.get(3), &|| keys.queue_ticker())?,
                })
            })
            .collect()
    }

    /// The live numbers operations watch, for several batches in one round trip.
    pub async fn stats(&self, batches: &[(SaleId, BatchNo)]) -> Result<Vec<QueueStats>, QueueError> {
        Ok(self
            .counters(batches)
            .await?
            .into_iter()
            .map(|c| QueueStats {
                queued: c.queued(),
                admitted: c.serving.min(c.queued()),
                reach: c.reach.map(Ticket::get),
                reopens: c.reopens,
            })
            .collect())
    }
}
