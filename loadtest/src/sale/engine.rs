//! Plays every buyer's journey with a bounded number of requests in flight.
//!
//! A million buyers cannot each be a task holding its own strings and futures while they wait
//! (that is gigabytes): each buyer is a small record, and what they do next is an entry in one
//! timetable ordered by when they mean to do it. A dispatcher takes the earliest entry that is
//! due once one of the pool's slots is free and runs that one step; the step writes down the
//! buyer's next move. When the pool is saturated, steps run late; their latency counts from when
//! they were due, so the harness's own queueing is never hidden (no coordinated omission).
//!
//! Two timetables: checkout steps (order, pay, cancel) go before queue steps (join, poll) that
//! are due at the same time. A real buyer's order does not wait behind other people's polls in
//! their browser; only in a harness that shares one pool would it, and an admission token would
//! then expire in the harness rather than at the server.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::{Notify, Semaphore};

use super::SaleOptions;
use super::plan::{Act, Plan};
use crate::client::Client;
use crate::latency::Latencies;
use crate::progress::Progress;
use crate::wire::{Answer, Wire};

/// Lapses are played only by buyers admitted within this long of the opening: each holds its
/// units for the whole payment window plus the sweeper's grace, and lapses in later waves would
/// chain those waits. Later would-be lapsers pay instead.
const LAPSE_WAVE_MS: u32 = 10_000;

/// How a buyer's journey ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Outcome {
    Bought,
    /// Paid after the deadline: the order expired and the money is owed back (`refund_due`).
    PaidLate,
    Cancelled,
    Lapsed,
    SoldOut,
    /// Stopped waiting on purpose (their patience ran out).
    GaveUp,
    /// Admitted, but the turn passed before they ordered (they learned of it too late).
    TurnExpired,
    Closed,
    Error,
    /// Still going when the run's duration ran out.
    Unfinished,
}

/// What a buyer does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Join,
    Poll,
    /// Following the event stream (on a connection of its own, not a pool slot).
    Watch,
    Order,
    Pay,
    Cancel,
    Done,
}

/// One buyer: their plan, where they are, and what the checks need to know afterwards. Times are
/// ms since the run started.
#[derive(Debug)]
pub struct Buyer {
    pub plan: Plan,
    stage: Stage,
    ticket: Option<Box<str>>,
    admission: Option<Box<str>>,
    order_id: i64,
    pub position: Option<u64>,
    pub joined_ms: Option<u32>,
    /// Joined the pre-queue (the join's answer had no place yet: drawn at the opening). Not the
    /// same as arriving early: an early bird whose join reached the server after the opening got
    /// a place in arrival order instead.
    pub prequeued: bool,
    /// When the last poll answered `waiting` was sent.
    pub last_waiting_sent_ms: Option<u32>,
    /// When the last answer `standby` was computed (every unit in a cart, waiting for one to
    /// come back); `None`: never told standby.
    pub last_standby_sent_ms: Option<u32>,
    /// Was told `sold_out` by the queue, in line (not by a refused order after admission).
    pub sold_out_in_line: bool,
    /// When the answer `admitted` arrived.
    pub admitted_ms: Option<u32>,
    /// When they learned the sale was over for them (sold out).
    pub told_over_ms: Option<u32>,
    /// When the payment was confirmed.
    pub paid_ms: Option<u32>,
    /// When their order was created.
    pub ordered_ms: Option<u32>,
    pub outcome: Outcome,
    /// For buyers who sent their order twice: whether both answers were the same.
    pub retried_identically: Option<bool>,
    /// Pre-queue buyers: the draw receipt the queue handed them (to check their place).
    pub draw_receipt: Option<Box<str>>,
}

impl Buyer {
    fn new(plan: Plan) -> Buyer {
        Buyer {
            plan,
            stage: Stage::Join,
            ticket: None,
            admission: None,
            order_id: 0,
            position: None,
            joined_ms: None,
            prequeued: false,
            last_waiting_sent_ms: None,
            last_standby_sent_ms: None,
            sold_out_in_line: false,
            admitted_ms: None,
            told_over_ms: None,
            draw_receipt: None,
            paid_ms: None,
            ordered_ms: None,
            outcome: Outcome::Unfinished,
            retried_identically: None,
        }
    }
}

/// The queue's answer, as much of it as a buyer reads.
#[derive(Debug, Deserialize)]
struct QueueAnswer {
    status: String,
    /// When the server computed the answer (the same clock as the harness's: one machine).
    server_time: Option<chrono::DateTime<chrono::Utc>>,
    position: Option<u64>,
    poll_after_ms: Option<u64>,
    ticket: Option<String>,
    admission_token: Option<String>,
    draw_receipt: Option<String>,
}

/// What happens after a step.
enum Next {
    /// The buyer acts again at `ms` (since the start).
    At(Stage, u32),
    Done(Outcome),
}

/// The buyers and their timetable.
struct Book {
    buyers: Vec<Buyer>,
    /// (due ms, buyer index), earliest first: `[checkout, queue]`.
    due: [BinaryHeap<Reverse<(u32, u32)>>; 2],
    in_flight: usize,
}

/// One sale's buyers, played against one server.
pub struct Engine {
    client: Client,
    opts: SaleOptions,
    sale: i64,
    price: i64,
    pub started: Instant,
    /// `started` on the wall clock, to place the server's timestamps on the run's time line.
    started_wall: chrono::DateTime<chrono::Utc>,
    opens_ms: u32,
    /// One expiry for every buyer's JWT, so a buyer sends the same token each time (as a real
    /// client does, and as the server's verified-token cache expects).
    jwt_exp: i64,
    wire: Wire,
    queue_path: String,
    orders_path: String,
    book: Mutex<Book>,
    wake: Notify,
    pool: Arc<Semaphore>,
    pub progress: Progress,
    pub latencies: Mutex<Latencies>,
    errors_shown: AtomicU32,
}

impl Engine {
    /// The buyers of `plans`, for sale `sale` opening `opens_ms` after `started`.
    pub async fn new(
        client: &Client,
        opts: &SaleOptions,
        sale: i64,
        price: i64,
        started: Instant,
        opens_ms: u32,
        plans: Vec<Plan>,
    ) -> anyhow::Result<Engine> {
        let due =
            [BinaryHeap::new(), plans.iter().enumerate().map(|(i, p)| Reverse((p.arrive_ms, index(i)))).collect()];
        Ok(Engine {
            client: client.clone(),
            opts: opts.clone(),
            sale,
            price,
            started,
            started_wall: chrono::Utc::now() - chrono::TimeDelta::from_std(started.elapsed()).unwrap_or_default(),
            opens_ms,
            jwt_exp: chrono::Utc::now().timestamp() + 6 * 3600,
            wire: Wire::new(client.bases()).await?,
            queue_path: format!("/sales/{sale}/queue"),
            orders_path: format!("/sales/{sale}/orders"),
            book: Mutex::new(Book { buyers: plans.into_iter().map(Buyer::new).collect(), due, in_flight: 0 }),
            wake: Notify::new(),
            pool: Arc::new(Semaphore::new(opts.connections.max(1))),
            progress: Progress::default(),
            latencies: Mutex::new(Latencies::default()),
            errors_shown: AtomicU32::new(0),
        })
    }

    fn now_ms(&self) -> u32 {
        u32::try_from(self.started.elapsed().as_millis()).unwrap_or(u32::MAX)
    }

    fn user(&self, i: u32) -> String {
        format!("{}-{}-{i}", self.opts.scenario, self.sale)
    }

    fn with<R>(&self, i: u32, f: impl FnOnce(&mut Buyer) -> R) -> R {
        let mut book = self.book.lock().expect("never poisoned");
        f(&mut book.buyers[i as usize])
    }

    /// Runs every journey to its end, or until `deadline`; returns the buyers.
    pub async fn play(self: Arc<Self>, deadline: Instant) -> Vec<Buyer> {
        loop {
            let Ok(slot) = self.pool.clone().acquire_owned().await else { break };
            let Some((due, i)) = self.next_due(deadline).await else { break };
            // A stream holds a connection of its own for as long as it lasts, not a pool slot.
            let slot = (self.with(i, |b| b.stage) != Stage::Watch).then_some(slot);
            let engine = self.clone();
            tokio::spawn(async move {
                engine.step(i, due).await;
                drop(slot);
                engine.book.lock().expect("never poisoned").in_flight -= 1;
                engine.wake.notify_one();
            });
        }
        // Wait for the steps still running.
        let _ = self.pool.acquire_many(u32::try_from(self.opts.connections.max(1)).unwrap_or(u32::MAX)).await;
        std::mem::take(&mut self.book.lock().expect("never poisoned").buyers)
    }

    /// The next step that is due, waiting for it; `None` when nothing is left (or time is up).
    async fn next_due(&self, deadline: Instant) -> Option<(u32, u32)> {
        loop {
            if Instant::now() >= deadline {
                return None;
            }
            // Registered before looking, so a wake-up between the look and the wait is kept.
            let woken = self.wake.notified();
            let next = {
                let mut book = self.book.lock().expect("never poisoned");
                let now = self.now_ms();
                let due = |heap: &BinaryHeap<Reverse<(u32, u32)>>| heap.peek().map(|Reverse((due, _))| *due);
                let ready = (0..2).find(|k| due(&book.due[*k]).is_some_and(|d| d <= now));
                if let Some(k) = ready {
                    let Reverse(entry) = book.due[k].pop().expect("peeked");
                    book.in_flight += 1;
                    return Some(entry);
                }
                let next = due(&book.due[0]).into_iter().chain(due(&book.due[1])).min();
                if next.is_none() && book.in_flight == 0 {
                    return None;
                }
                next
            };
            let until = next.map_or(deadline, |due| (self.started + Duration::from_millis(due.into())).min(deadline));
            tokio::select! {
                () = tokio::time::sleep_until(until.into()) => {}
                () = woken => {}
            }
        }
    }

    /// Runs buyer `i`'s step that was due at `due` and books the next one.
    async fn step(&self, i: u32, due: u32) {
        let stage = self.with(i, |b| b.stage);
        let next = match stage {
            Stage::Join => self.join(i, due).await,
            Stage::Poll => self.poll(i, due).await,
            Stage::Watch => self.watch(i, due).await,
            Stage::Order => self.order(i, due).await,
            Stage::Pay => self.pay(i, due).await,
            Stage::Cancel => self.cancel(i, due).await,
            Stage::Done => return,
        };
        let next = next.unwrap_or_else(|e| {
            if self.opts.outages {
                // Every step is safe to repeat (tickets, idempotency keys, payment references).
                Progress::add(&self.progress.unanswered);
                self.progress.failed(u64::from(self.now_ms()));
                return Next::At(stage, self.now_ms() + 1_000);
            }
            if self.errors_shown.fetch_add(1, Ordering::Relaxed) < 10 {
                eprintln!("buyer {i}: {e:#}");
            }
            Progress::add(&self.progress.errors);
            Next::Done(Outcome::Error)
        });
        let mut book = self.book.lock().expect("never poisoned");
        match next {
            Next::At(stage, at) => {
                book.buyers[i as usize].stage = stage;
                let timetable = usize::from(matches!(stage, Stage::Join | Stage::Poll | Stage::Watch));
                book.due[timetable].push(Reverse((at, i)));
            }
            Next::Done(outcome) => {
                let buyer = &mut book.buyers[i as usize];
                buyer.stage = Stage::Done;
                buyer.outcome = outcome;
                buyer.ticket = None;
                buyer.admission = None;
                if buyer.joined_ms.is_some() {
                    Progress::sub(&self.progress.waiting);
                }
            }
        }
    }

    /// Sends `request` for `step`, meant to go at `due`; records its latency from then.
    async fn send(&self, step: &'static str, due: u32, request: Vec<u8>) -> anyhow::Result<Answer> {
        Progress::add(&self.progress.requests);
        let answer = self.wire.send(&request).await.map_err(|e| anyhow::anyhow!("{step}: {e}"))?;
        self.record(step, due);
        self.progress.answered(answer.status, u64::from(self.now_ms()));
        Ok(answer)
    }

    /// Records that `step`, due at `due` (ms since the start), is done now.
    fn record(&self, step: &'static str, due: u32) {
        let intended = Duration::from_millis(due.into());
        let took = self.started.elapsed().saturating_sub(intended);
        self.latencies.lock().expect("never poisoned").record(step, intended, took);
    }

    /// `method path` as buyer `i`.
    fn as_buyer(&self, i: u32, method: &str, path: &str) -> anyhow::Result<crate::wire::Request> {
        Ok(self.wire.request(method, path).header("authorization", &format!("Bearer {}", self.jwt(i)?)))
    }

    fn jwt(&self, i: u32) -> anyhow::Result<String> {
        self.client.buyer_jwt_until(&self.user(i), self.jwt_exp)
    }

    /// A busy server (429 with Retry-After, 503 while Redis is rebuilt): the same step later.
    fn later(&self, stage: Stage, retry_after: Option<u64>) -> Next {
        let wait = u32::try_from(retry_after.unwrap_or(1).clamp(1, 30) * 1000).unwrap_or(1000);
        Next::At(stage, self.now_ms() + wait)
    }

    /// Joins; a sale asking a proof of work answers 428 with a challenge, which the buyer solves
    /// and joins with (as a client without a challenge in hand does).
    async fn join(&self, i: u32, due: u32) -> anyhow::Result<Next> {
        let mut proof: Option<(String, u64)> = None;
        for _ in 0..3 {
            let mut request = self.as_buyer(i, "POST", &self.queue_path)?;
            if let Some((challenge, solution)) = &proof {
                request = request.header("x-pow-challenge", challenge).header("x-pow-solution", &solution.to_string());
            }
            let Answer { status, body, retry_after } = self.send("join", due, request.body(b"")).await?;
            return match status {
                200 | 201 => {
                    self.with(i, |b| b.joined_ms = Some(due));
                    Progress::add(&self.progress.joined);
                    Progress::add(&self.progress.waiting);
                    self.answered(i, due, &body)
                }
                403 | 428 => {
                    proof = Some(self.solve(&body)?);
                    continue;
                }
                409 => Ok(self.over(i, &body, "join")?),
                429 | 503 => Ok(self.later(Stage::Join, retry_after)),
                _ => anyhow::bail!("join: {status} {}", String::from_utf8_lossy(&body)),
            };
        }
        anyhow::bail!("join: three proofs of work in a row refused")
    }

    /// Solves the challenge a refused join carried (`pow`), counting the time it took.
    fn solve(&self, problem: &[u8]) -> anyhow::Result<(String, u64)> {
        let problem: Value = serde_json::from_slice(problem)?;
        let challenge = problem["pow"]["challenge"].as_str().context("a proof-of-work refusal without a challenge")?;
        let bits = u8::try_from(problem["pow"]["bits"].as_u64().context("a challenge without bits")?)?;
        let started = Instant::now();
        let solution = flashsale_queue::pow::solve(challenge, bits);
        let nanos = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.progress.pow_nanos.fetch_add(nanos, std::sync::atomic::Ordering::Relaxed);
        Progress::add(&self.progress.pow_solved);
        Ok((challenge.to_owned(), solution))
    }

    async fn poll(&self, i: u32, due: u32) -> anyhow::Result<Next> {
        let (ticket, gave_up) = self.with(i, |b| {
            let waited = due.saturating_sub(b.joined_ms.unwrap_or(due));
            (b.ticket.clone(), b.plan.patience_ms.is_some_and(|p| waited >= p))
        });
        if gave_up {
            return Ok(Next::Done(Outcome::GaveUp));
        }
        let mut request = self.as_buyer(i, "GET", &self.queue_path)?;
        if let Some(ticket) = ticket.as_deref() {
            request = request.header("x-queue-ticket", ticket);
        }
        let Answer { status, body, retry_after } = self.send("poll", due, request.body(b"")).await?;
        match status {
            200 => self.answered(i, due, &body),
            429 | 503 => Ok(self.later(Stage::Poll, retry_after)),
            _ => anyhow::bail!("poll: {status} {}", String::from_utf8_lossy(&body)),
        }
    }

    /// Acts on a queue answer to a request sent at `sent`.
    fn answered(&self, i: u32, sent: u32, body: &[u8]) -> anyhow::Result<Next> {
        let answer: QueueAnswer = serde_json::from_slice(body)?;
        let now = self.now_ms();
        self.with(i, |b| {
            if b.joined_ms == Some(sent) && b.position.is_none() && answer.position.is_none() {
                b.prequeued = true;
            }
            if answer.position.is_some() {
                b.position = answer.position;
            }
            if let Some(ticket) = answer.ticket {
                b.ticket = Some(ticket.into());
            }
            if b.draw_receipt.is_none() {
                b.draw_receipt = answer.draw_receipt.map(Into::into);
            }
            Ok(match answer.status.as_str() {
                "waiting" | "paused" | "standby" => {
                    b.last_waiting_sent_ms = Some(sent);
                    if answer.status == "standby" {
                        b.last_standby_sent_ms = Some(sent);
                    }
                    if b.plan.stream {
                        return Ok(Next::At(Stage::Watch, now));
                    }
                    let mut at = now.saturating_add(u32::try_from(answer.poll_after_ms.unwrap_or(1_000))?);
                    if let (Some(patience), Some(joined)) = (b.plan.patience_ms, b.joined_ms) {
                        at = at.min(joined.saturating_add(patience));
                    }
                    Next::At(Stage::Poll, at)
                }
                "admitted" => {
                    b.admitted_ms = Some(now);
                    b.admission = answer.admission_token.map(Into::into);
                    Progress::add(&self.progress.admitted);
                    Next::At(Stage::Order, now)
                }
                "sold_out" => {
                    b.told_over_ms = Some(now);
                    b.sold_out_in_line = true;
                    Next::Done(Outcome::SoldOut)
                }
                "closed" => Next::Done(Outcome::Closed),
                "expired" => Next::Done(Outcome::TurnExpired),
                other => anyhow::bail!("queue answered status {other:?}"),
            })
        })
    }

    /// Follows the queue's event stream until the buyer is admitted or told the sale is over, or
    /// their patience runs out. A stream that ends early (its ten-minute lifetime, an error
    /// event) hands the buyer back to polling.
    async fn watch(&self, i: u32, due: u32) -> anyhow::Result<Next> {
        let (ticket, joined, patience) = self.with(i, |b| (b.ticket.clone(), b.joined_ms, b.plan.patience_ms));
        let mut request = self.as_buyer(i, "GET", &format!("{}/events", self.queue_path))?;
        if let Some(ticket) = ticket.as_deref() {
            request = request.header("x-queue-ticket", ticket);
        }
        Progress::add(&self.progress.requests);
        let mut stream = match self.wire.open_stream(&request.body(b"")).await? {
            Ok(stream) => stream,
            Err(Answer { status: 429 | 503, retry_after, .. }) => return Ok(self.later(Stage::Watch, retry_after)),
            Err(Answer { status, body, .. }) => anyhow::bail!("watch: {status} {}", String::from_utf8_lossy(&body)),
        };
        let gives_up_at = patience.zip(joined).map(|(p, j)| self.started + Duration::from_millis((j + p).into()));
        let mut first = true;
        loop {
            let event = match gives_up_at {
                Some(at) => match tokio::time::timeout_at(at.into(), stream.next()).await {
                    Ok(event) => event?,
                    Err(_) => return Ok(Next::Done(Outcome::GaveUp)),
                },
                None => stream.next().await?,
            };
            let Some(event) = event else { return Ok(Next::At(Stage::Poll, self.now_ms())) };
            if first {
                // The stream's latency: from when the buyer meant to open it to its first event.
                self.record("watch", due);
                first = false;
            }
            if event.name != "queue" {
                return Ok(Next::At(Stage::Poll, self.now_ms()));
            }
            let answer: QueueAnswer = serde_json::from_str(&event.data)?;
            let computed = answer.server_time.map_or(self.now_ms(), |t| {
                u32::try_from((t - self.started_wall).num_milliseconds().max(0)).unwrap_or(u32::MAX)
            });
            match self.answered(i, computed, event.data.as_bytes())? {
                Next::At(Stage::Watch, _) => {}
                next => return Ok(next),
            }
        }
    }

    /// A 409 that ends the journey: sold out or closed.
    fn over(&self, i: u32, body: &[u8], step: &str) -> anyhow::Result<Next> {
        let problem: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        match problem["code"].as_str() {
            Some("sold_out") => {
                let now = self.now_ms();
                self.with(i, |b| b.told_over_ms = Some(now));
                Ok(Next::Done(Outcome::SoldOut))
            }
            Some("closed") => Ok(Next::Done(Outcome::Closed)),
            _ => anyhow::bail!("{step}: 409 {problem}"),
        }
    }

    async fn order(&self, i: u32, due: u32) -> anyhow::Result<Next> {
        let (plan, admission, admitted_ms) = self.with(i, |b| (b.plan, b.admission.clone(), b.admitted_ms));
        let body = json!({ "admission_token": admission.as_deref().unwrap_or_default(), "quantity": plan.quantity })
            .to_string();
        let key = format!("{}-checkout", self.user(i));
        let request =
            self.as_buyer(i, "POST", &self.orders_path)?.header("idempotency-key", &key).body(body.as_bytes());
        let first = self.send("order", due, request.clone()).await?;
        if matches!(first.status, 429 | 503) {
            return Ok(self.later(Stage::Order, first.retry_after));
        }
        if plan.retry {
            // A client retrying after a timeout: the same key and body must get the same answer.
            let again = self.send("order", self.now_ms(), request).await?;
            let same = again.status == first.status && again.body == first.body;
            if !same && self.errors_shown.fetch_add(1, Ordering::Relaxed) < 10 {
                eprintln!(
                    "buyer {i}: the retried order answered {} {} after {} {}",
                    again.status,
                    String::from_utf8_lossy(&again.body),
                    first.status,
                    String::from_utf8_lossy(&first.body)
                );
            }
            self.with(i, |b| b.retried_identically = Some(same));
        }
        let (status, answer) = (first.status, first.body);
        match status {
            201 => {}
            409 => return self.over(i, &answer, "order"),
            // The admission ran out before the order arrived: the turn is lost.
            403 if String::from_utf8_lossy(&answer).contains("expired") => return Ok(Next::Done(Outcome::TurnExpired)),
            _ => anyhow::bail!("order: {status} {}", String::from_utf8_lossy(&answer)),
        }
        let order: Value = serde_json::from_slice(&answer)?;
        let id = order["id"].as_i64().ok_or_else(|| anyhow::anyhow!("order without an id: {order}"))?;
        let now = self.now_ms();
        self.with(i, |b| {
            b.order_id = id;
            b.ordered_ms = Some(now);
            b.admission = None;
        });
        let in_opening_wave = admitted_ms.is_some_and(|at| at < self.opens_ms.saturating_add(LAPSE_WAVE_MS));
        Ok(match plan.act {
            // Deadline payments in the opening wave only, as lapses: later waves pay at once.
            Act::Pay if in_opening_wave => Next::At(Stage::Pay, pay_at(now, &order, plan.pay_offset_ms)),
            Act::Pay => Next::At(Stage::Pay, now),
            Act::Cancel => Next::At(Stage::Cancel, now),
            Act::Lapse if in_opening_wave => Next::Done(Outcome::Lapsed),
            Act::Lapse => Next::At(Stage::Pay, now),
        })
    }

    async fn pay(&self, i: u32, due: u32) -> anyhow::Result<Next> {
        let (id, quantity) = self.with(i, |b| (b.order_id, b.plan.quantity));
        let notice = json!({ "order_id": id, "payment_ref": format!("pay-{}", self.user(i)),
                             "amount_cents": self.price * i64::from(quantity), "status": "succeeded" })
        .to_string();
        let signature = flashsale_order::payment::sign(self.opts.payment_secret.as_bytes(), notice.as_bytes());
        let request =
            self.wire.request("POST", "/payments/callback").header("x-signature", &signature).body(notice.as_bytes());
        let Answer { status, body, retry_after } = self.send("pay", due, request).await?;
        if matches!(status, 429 | 503) {
            return Ok(self.later(Stage::Pay, retry_after));
        }
        let receipt: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if status == 200 && receipt["outcome"] == "refund_due" && self.with(i, |b| b.plan.pay_offset_ms).is_some() {
            return Ok(Next::Done(Outcome::PaidLate));
        }
        anyhow::ensure!(status == 200 && receipt["outcome"] == "paid", "pay: {status} {receipt}");
        let now = self.now_ms();
        self.with(i, |b| b.paid_ms = Some(now));
        Progress::add(&self.progress.sold);
        Ok(Next::Done(Outcome::Bought))
    }

    async fn cancel(&self, i: u32, due: u32) -> anyhow::Result<Next> {
        let id = self.with(i, |b| b.order_id);
        let request = self.as_buyer(i, "POST", &format!("/orders/{id}/cancel"))?.body(b"");
        let Answer { status, body, retry_after } = self.send("cancel", due, request).await?;
        match status {
            200 => Ok(Next::Done(Outcome::Cancelled)),
            429 | 503 => Ok(self.later(Stage::Cancel, retry_after)),
            _ => anyhow::bail!("cancel: {status} {}", String::from_utf8_lossy(&body)),
        }
    }
}

/// When a buyer who just ordered (at `now`, ms since the start) pays: at once, or `offset` ms
/// from the order's `expires_at` (measured on this machine's clock, which the server's
/// PostgreSQL shares here).
fn pay_at(now: u32, order: &Value, offset: Option<i32>) -> u32 {
    let Some(offset) = offset else { return now };
    let deadline = order["expires_at"].as_str().and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
    let Some(deadline) = deadline else { return now };
    let until = (deadline.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_milliseconds() + i64::from(offset);
    u32::try_from(i64::from(now) + until.max(0)).unwrap_or(u32::MAX)
}

fn index(i: usize) -> u32 {
    u32::try_from(i).expect("fewer than 4 billion buyers")
}
