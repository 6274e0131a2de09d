//! `smoke`: a small sale played whole, from the outside, then checked against the API and
//! PostgreSQL.
//!
//! A sale opens a few seconds after it is created, so the pre-queue is exercised: some buyers
//! arrive early (in the pre-queue, at random moments), the rest in a spike just after the
//! opening. Each buyer joins, follows `poll_after_ms` until admitted or told the sale is over,
//! orders with an idempotency key (some send the order twice on purpose, as a client retrying
//! after a timeout would), then pays through the signed callback, cancels, or lets the payment
//! window lapse, by seeded ratios. Units from cancels and lapses go back to buyers still waiting.
//!
//! Latencies are measured from each step's intended send time (when the buyer wanted to act), so
//! time spent waiting for a slot in the harness's bounded connection pool counts.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::stream::{self, StreamExt};
use rand::{Rng, SeedableRng};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use crate::checks::Report;
use crate::client::Client;
use crate::html::{Sample, chart, page};
use crate::latency::Latencies;
use crate::progress::{self, Progress};
use crate::queue_smoke::{ranks, spearman};

/// What the scenario is asked to play.
#[derive(Debug, Clone)]
pub struct SmokeOptions {
    pub buyers: usize,
    pub stock: u32,
    /// Share of buyers who join during the pre-queue (the rest arrive just after the opening).
    pub early: f64,
    /// Of buyers who get an order: share who pay, share who cancel (the rest let it lapse).
    pub pay: f64,
    pub cancel: f64,
    /// Share of orders sent twice with the same key.
    pub retry: f64,
    /// Requests in flight at most (the harness's connection pool).
    pub connections: usize,
    pub seed: u64,
    pub payment_secret: String,
    pub database_url: String,
    pub report_path: Option<String>,
    /// Write the HTML report (charts over time) here.
    pub html_path: Option<String>,
}

/// How a buyer's journey ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Outcome {
    Bought,
    Cancelled,
    Lapsed,
    SoldOut,
    /// Admitted, but the turn passed (this harness orders at once, so: slow to learn of it).
    TurnExpired,
    Closed,
    Error,
}

/// What one buyer did.
#[derive(Debug, Clone)]
struct Journey {
    early: bool,
    joined_at: Duration,
    position: Option<u64>,
    /// When the last poll that answered `waiting` was sent.
    last_waiting_sent: Option<Duration>,
    /// When the answer `admitted` arrived.
    admitted_at: Option<Duration>,
    /// When the buyer learned the sale was over for them (sold out).
    told_over_at: Option<Duration>,
    /// When the payment was confirmed.
    paid_at: Option<Duration>,
    outcome: Outcome,
    retried_identically: Option<bool>,
}

/// The run's shared pieces.
struct Run<'a> {
    client: &'a Client,
    opts: &'a SmokeOptions,
    sale: i64,
    started: Instant,
    /// When the batch opens, from `started`.
    opens_at: Duration,
    progress: Progress,
    latencies: std::sync::Mutex<Latencies>,
    pool: Semaphore,
    price: i64,
}

impl Run<'_> {
    /// Sends a shopper request once a pool slot is free; the latency counts from `intended`.
    async fn send(
        &self,
        step: &'static str,
        intended: Instant,
        request: reqwest::RequestBuilder,
    ) -> anyhow::Result<(StatusCode, Value)> {
        let _slot = self.pool.acquire().await?;
        Progress::add(&self.progress.requests);
        let response = request.send().await.with_context(|| step)?;
        let status = response.status();
        let bytes = response.bytes().await?;
        let at = intended.saturating_duration_since(self.started);
        self.latencies.lock().expect("never poisoned").record(step, at, intended.elapsed());
        let body = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap_or(Value::Null) };
        Ok((status, body))
    }

    async fn journey(&self, index: usize, early: bool, arrive_at: Duration, choice: f64, retry: bool) -> Journey {
        let user = format!("smoke-{}-{index}", self.sale);
        let mut j = Journey {
            early,
            joined_at: Duration::ZERO,
            position: None,
            last_waiting_sent: None,
            admitted_at: None,
            told_over_at: None,
            paid_at: None,
            outcome: Outcome::Error,
            retried_identically: None,
        };
        match self.play(&user, arrive_at, choice, retry, &mut j).await {
            Ok(outcome) => j.outcome = outcome,
            Err(e) => {
                eprintln!("buyer {index}: {e:#}");
                Progress::add(&self.progress.errors);
                j.outcome = Outcome::Error;
            }
        }
        if j.joined_at > Duration::ZERO {
            Progress::sub(&self.progress.waiting);
        }
        j
    }

    async fn play(
        &self,
        user: &str,
        arrive_at: Duration,
        choice: f64,
        retry: bool,
        j: &mut Journey,
    ) -> anyhow::Result<Outcome> {
        let jwt = self.client.buyer_jwt(user)?;
        let base = self.client.base();
        let http = self.client.http();
        tokio::time::sleep(arrive_at.saturating_sub(self.started.elapsed())).await;
        let intended = Instant::now();
        j.joined_at = self.started.elapsed();
        let queue = format!("{base}/sales/{}/queue", self.sale);
        let (status, joined) = self.send("join", intended, http.post(&queue).bearer_auth(&jwt)).await?;
        anyhow::ensure!(status.is_success(), "join: {status} {joined}");
        Progress::add(&self.progress.joined);
        Progress::add(&self.progress.waiting);
        let mut ticket = joined["ticket"].as_str().unwrap_or_default().to_owned();
        let mut state = joined;
        let mut sent = j.joined_at;
        let admission = loop {
            if let Some(p) = state["position"].as_u64() {
                j.position = Some(p);
            }
            match state["status"].as_str() {
                Some("admitted") => {
                    j.admitted_at = Some(self.started.elapsed());
                    Progress::add(&self.progress.admitted);
                    break state["admission_token"].as_str().unwrap_or_default().to_owned();
                }
                Some("sold_out") => {
                    j.told_over_at = Some(self.started.elapsed());
                    return Ok(Outcome::SoldOut);
                }
                Some("closed") => return Ok(Outcome::Closed),
                Some("expired") => return Ok(Outcome::TurnExpired),
                _ => j.last_waiting_sent = Some(sent),
            }
            // Before the opening nobody moves: the pre-queue draw happens at the opening.
            let wait = state["poll_after_ms"].as_u64().unwrap_or(500).clamp(100, 1_000);
            tokio::time::sleep(Duration::from_millis(wait)).await;
            let intended = Instant::now();
            sent = self.started.elapsed();
            let request = http.get(&queue).bearer_auth(&jwt).header("x-queue-ticket", &ticket);
            let (status, next) = self.send("poll", intended, request).await?;
            anyhow::ensure!(status.is_success(), "poll: {status} {next}");
            if let Some(renewed) = next["ticket"].as_str() {
                ticket = renewed.to_owned();
            }
            state = next;
        };

        let orders = format!("{base}/sales/{}/orders", self.sale);
        let key = format!("{user}-checkout");
        let body = json!({ "admission_token": admission, "quantity": 1 }).to_string();
        let request = || {
            http.post(&orders)
                .bearer_auth(&jwt)
                .header("idempotency-key", &key)
                .header("content-type", "application/json")
                .body(body.clone())
        };
        let (status, order) = self.send("order", Instant::now(), request()).await?;
        if retry {
            let (again_status, again) = self.send("order", Instant::now(), request()).await?;
            j.retried_identically = Some(again_status == status && again == order);
        }
        match (status.as_u16(), order["code"].as_str()) {
            (201, _) => {}
            (409, Some("sold_out")) => {
                j.told_over_at = Some(self.started.elapsed());
                return Ok(Outcome::SoldOut);
            }
            (409, Some("closed")) => return Ok(Outcome::Closed),
            _ => anyhow::bail!("order: {status} {order}"),
        }
        let order_id = order["id"].as_i64().context("order id")?;
        // Lapses are played in the opening wave only: each holds its units for the whole payment
        // window (30 s at least), and lapses in later waves would chain those waits past a minute.
        let lapse_allowed = j.admitted_at.is_some_and(|at| at < self.opens_at + Duration::from_secs(10));
        if choice < self.opts.pay || (!lapse_allowed && choice >= self.opts.pay + self.opts.cancel) {
            let notice = json!({ "order_id": order_id, "payment_ref": format!("pay-{user}"),
                                 "amount_cents": self.price, "status": "succeeded" })
            .to_string();
            let signature = flashsale_order::payment::sign(self.opts.payment_secret.as_bytes(), notice.as_bytes());
            let request = http
                .post(format!("{base}/payments/callback"))
                .header("x-signature", signature)
                .header("content-type", "application/json")
                .body(notice);
            let (status, receipt) = self.send("pay", Instant::now(), request).await?;
            anyhow::ensure!(status == StatusCode::OK && receipt["outcome"] == "paid", "pay: {status} {receipt}");
            j.paid_at = Some(self.started.elapsed());
            Progress::add(&self.progress.sold);
            Ok(Outcome::Bought)
        } else if choice < self.opts.pay + self.opts.cancel {
            let request = http.post(format!("{base}/orders/{order_id}/cancel")).bearer_auth(&jwt);
            let (status, cancelled) = self.send("cancel", Instant::now(), request).await?;
            anyhow::ensure!(status == StatusCode::OK, "cancel: {status} {cancelled}");
            Ok(Outcome::Cancelled)
        } else {
            Ok(Outcome::Lapsed)
        }
    }
}

/// Samples the sale twice a second until `done`: requests per second (the harness's count) and
/// the live numbers operations see.
async fn sample(client: &Client, run: &Run<'_>, sale: i64, done: &std::sync::atomic::AtomicBool) -> Vec<Sample> {
    let mut samples = Vec::new();
    let mut last = (run.started.elapsed(), 0u64);
    let path = format!("/admin/sales/{sale}");
    while !done.load(std::sync::atomic::Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let Ok(reply) = client.send(Method::GET, &path, None, true, None).await else { continue };
        let stats = &reply.body["current_batch"]["stats"];
        let now = run.started.elapsed();
        let requests = run.progress.requests.load(std::sync::atomic::Ordering::Relaxed);
        let number = |k: &str| stats[k].as_f64().unwrap_or(0.0);
        samples.push(Sample {
            t: now.as_secs_f64(),
            requests_per_sec: (requests - last.1) as f64 / (now - last.0).as_secs_f64().max(1e-9),
            queue_length: (number("queued") - number("admitted")).max(0.0),
            admitted: number("admitted"),
            units_available: number("available"),
            units_reserved: number("reserved"),
            units_sold: number("sold"),
        });
        last = (now, requests);
    }
    samples
}

/// The HTML report: checks, notes and charts over time.
fn html_report(report: &Report, latencies: &Latencies, samples: &[Sample]) -> String {
    let over = |f: fn(&Sample) -> f64| samples.iter().map(|s| (s.t, f(s))).collect::<Vec<_>>();
    let latency = |step: &str, quantile: f64| latencies.over_time(step, quantile);
    let charts = vec![
        chart("Requests per second (the harness's)", "req/s", &[("requests/s", over(|s| s.requests_per_sec))]),
        chart(
            "Queue",
            "buyers",
            &[("waiting in the queue", over(|s| s.queue_length)), ("admitted so far", over(|s| s.admitted))],
        ),
        chart(
            "Units",
            "units",
            &[
                ("available", over(|s| s.units_available)),
                ("reserved", over(|s| s.units_reserved)),
                ("sold", over(|s| s.units_sold)),
            ],
        ),
        chart("Order latency by second sent", "ms", &[("p50", latency("order", 0.5)), ("p99", latency("order", 0.99))]),
        chart("Poll latency by second sent", "ms", &[("p50", latency("poll", 0.5)), ("p99", latency("poll", 0.99))]),
    ];
    let checks: Vec<(String, bool, String)> =
        report.checks.iter().map(|c| (c.name.to_owned(), c.passed, c.detail.clone())).collect();
    let notes: Vec<(String, String)> = report.notes.iter().map(|(n, v)| ((*n).to_owned(), v.clone())).collect();
    page(&format!("flashsale-loadtest {}", report.scenario), &notes, &checks, &charts)
}

/// Plays the sale and checks it.
pub async fn run(client: &Client, opts: &SmokeOptions) -> anyhow::Result<Report> {
    let mut report = Report::new("smoke");
    let started = Instant::now();
    client.send(Method::GET, "/readyz", None, false, None).await.context("the server is not reachable")?;
    const OPENS_IN_MS: u64 = 5_000;
    let opens_in = Duration::from_millis(OPENS_IN_MS);
    let opens_at = chrono::Utc::now() + chrono::TimeDelta::from_std(opens_in)?;
    let price = 100;
    let sale = json!({
        "name": "smoke", "sku": "LOADTEST-SMOKE", "price_cents": price, "currency": "CNY",
        "stock": opts.stock, "per_user_limit": 1, "opens_at": opens_at.to_rfc3339(),
        "prequeue_secs": 600, "admission_rate": 500, "admission_ttl_secs": 5, "payment_window_secs": 30,
    });
    let created = client.admin_ok(Method::POST, "/admin/sales", Some(&sale), StatusCode::CREATED).await?;
    let id = created.body["id"].as_i64().context("created sale has an id")?;
    let run = Arc::new(Run {
        client,
        opts,
        sale: id,
        started,
        opens_at: opens_in,
        progress: Progress::default(),
        latencies: Default::default(),
        pool: Semaphore::new(opts.connections.max(1)),
        price,
    });

    // Arrivals: early birds spread over the pre-queue's last seconds, the rest in a spike of two
    // seconds after the opening. Seeded, so a run can be replayed.
    let mut rng = rand::rngs::StdRng::seed_from_u64(opts.seed);
    let plan: Vec<(bool, Duration, f64, bool)> = (0..opts.buyers)
        .map(|_| {
            let early = rng.random_bool(opts.early.clamp(0.0, 1.0));
            let at = if early {
                Duration::from_millis(rng.random_range(200..OPENS_IN_MS - 500))
            } else {
                opens_in + Duration::from_millis(rng.random_range(0..2_000))
            };
            (early, at, rng.random::<f64>(), rng.random_bool(opts.retry.clamp(0.0, 1.0)))
        })
        .collect();
    // Buyers who would pay if they got an order.
    let willing = plan.iter().filter(|p| p.2 < opts.pay).count();
    let cpu_before = progress::own_cpu_secs();
    let done = std::sync::atomic::AtomicBool::new(false);
    let sampled = sample(client, &run, id, &done);
    let ((journeys, ()), samples) = tokio::join!(
        async {
            let played = stream::iter(plan.into_iter().enumerate())
                .map(|(i, (early, at, choice, retry))| {
                    let run = run.clone();
                    async move { run.journey(i, early, at, choice, retry).await }
                })
                .buffer_unordered(opts.buyers.max(1))
                .collect::<Vec<Journey>>();
            let (finished, signal) = tokio::sync::oneshot::channel::<()>();
            let shown = run.progress.show_until(started, async move {
                let _ = signal.await;
            });
            let result = tokio::join!(
                async move {
                    let journeys = played.await;
                    let _ = finished.send(());
                    journeys
                },
                shown
            );
            done.store(true, std::sync::atomic::Ordering::Relaxed);
            result
        },
        sampled
    );
    let harness_cpu = progress::own_cpu_secs().zip(cpu_before).map(|(after, before)| after - before);
    let journeys_done = started.elapsed();

    // Lapsed orders expire after their window; the sweep returns their units (already resold to
    // buyers who were still waiting, or not). Wait until nothing is reserved any more.
    let stats_path = format!("/admin/sales/{id}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let stats = loop {
        let reply = client.admin_ok(Method::GET, &stats_path, None, StatusCode::OK).await?;
        let stats = reply.body["current_batch"]["stats"].clone();
        if stats["reserved"] == json!(0) || Instant::now() > deadline {
            break stats;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };

    let mut counts: HashMap<Outcome, usize> = HashMap::new();
    for j in &journeys {
        *counts.entry(j.outcome).or_default() += 1;
    }
    let count = |o: Outcome| counts.get(&o).copied().unwrap_or(0);
    report.note("buyers", opts.buyers.to_string());
    report.note(
        "outcomes",
        format!(
            "bought {}, cancelled {}, lapsed {}, sold out {}, turn expired {}, closed {}, errors {}",
            count(Outcome::Bought),
            count(Outcome::Cancelled),
            count(Outcome::Lapsed),
            count(Outcome::SoldOut),
            count(Outcome::TurnExpired),
            count(Outcome::Closed),
            count(Outcome::Error)
        ),
    );

    // From PostgreSQL directly.
    let mut db = <sqlx::PgConnection as sqlx::Connection>::connect(&opts.database_url)
        .await
        .context("PostgreSQL for the checks (--database-url: the server's database)")?;
    let (pending, paid): (i64, i64) = sqlx::query_as(
        "SELECT COALESCE(SUM(quantity) FILTER (WHERE status = 'pending_payment'), 0)::bigint, \
                COALESCE(SUM(quantity) FILTER (WHERE status = 'paid'), 0)::bigint FROM orders WHERE sale_id = $1",
    )
    .bind(id)
    .fetch_one(&mut db)
    .await?;
    let max_per_user: i64 = sqlx::query_scalar(
        "SELECT COALESCE(MAX(units), 0)::bigint FROM (SELECT SUM(quantity) AS units FROM orders \
         WHERE sale_id = $1 AND status IN ('pending_payment', 'paid') GROUP BY user_id) held",
    )
    .bind(id)
    .fetch_one(&mut db)
    .await?;
    let (orders, keys): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(DISTINCT (user_id, idempotency_key)) FROM orders WHERE sale_id = $1")
            .bind(id)
            .fetch_one(&mut db)
            .await?;
    let stock = i64::from(opts.stock);

    report.check("no_oversell", pending + paid <= stock, format!("paid {paid} + pending {pending} ≤ stock {stock}"));
    let payers = i64::try_from(willing).unwrap_or(i64::MAX);
    // Sold out means every unit paid for, provided enough buyers are willing to pay: twice the
    // stock leaves room for those who cancel, lapse, or learn of their turn too late.
    let demand_exceeds = payers >= stock * 2;
    report.check(
        "no_undersell",
        !demand_exceeds || paid == stock,
        format!("sold {paid} of {stock} ({} buyers, {payers} willing to pay)", opts.buyers),
    );
    let balanced = stats["available"].as_i64().unwrap_or(-1)
        + stats["reserved"].as_i64().unwrap_or(-1)
        + stats["sold"].as_i64().unwrap_or(-1)
        == stock;
    report.check("ledger_balances", balanced, format!("{stats}"));
    report.check(
        "redis_agrees_with_postgres",
        stats["sold"].as_i64() == Some(paid) && stats["reserved"].as_i64() == Some(pending),
        format!(
            "Redis sold {} reserved {}; PostgreSQL paid {paid} pending {pending}",
            stats["sold"], stats["reserved"]
        ),
    );
    report.check("per_user_limit_held", max_per_user <= 1, format!("most units held by one buyer: {max_per_user}"));
    let retries: Vec<bool> = journeys.iter().filter_map(|j| j.retried_identically).collect();
    report.check(
        "one_order_per_idempotency_key",
        orders == keys && retries.iter().all(|same| *same),
        format!("{orders} orders under {keys} keys; {} deliberate retries answered identically", retries.len()),
    );
    report.check(
        "every_buyer_reached_an_outcome",
        count(Outcome::Error) == 0 && journeys.len() == opts.buyers,
        format!("{} journeys, {} errors", journeys.len(), count(Outcome::Error)),
    );

    // Fairness: the pre-queue's order against arrival order.
    let mut early: Vec<&Journey> = journeys.iter().filter(|j| j.early && j.position.is_some()).collect();
    early.sort_by_key(|j| j.joined_at);
    let rho = if early.len() > 2 {
        let arrival: Vec<f64> = (0..early.len()).map(|i| i as f64).collect();
        let positions: Vec<u64> = early.iter().map(|j| j.position.unwrap_or(0)).collect();
        spearman(&arrival, &ranks(&positions))
    } else {
        0.0
    };
    report.check(
        "prequeue_order_uncorrelated_with_arrival",
        early.len() < 100 || rho.abs() < 0.25,
        format!("Spearman rho(arrival, place) = {rho:+.3} over {} early buyers", early.len()),
    );
    // Fairness: admission follows places. Buyers learn of admission on their next poll, so
    // comparing when they learned proves little; what proves unfairness is a buyer told
    // `waiting` by a poll sent after a later place's `admitted` answer had arrived (plus the
    // server's 50 ms counter cache).
    let mut placed: Vec<&Journey> = journeys.iter().filter(|j| j.position.is_some()).collect();
    placed.sort_by_key(|j| std::cmp::Reverse(j.position));
    let mut earliest_later_admission = Duration::MAX;
    let mut overtaken = 0;
    for j in &placed {
        let limit = earliest_later_admission.checked_add(Duration::from_millis(100));
        if j.last_waiting_sent.zip(limit).is_some_and(|(sent, limit)| sent > limit) {
            overtaken += 1;
        }
        if let Some(at) = j.admitted_at {
            earliest_later_admission = earliest_later_admission.min(at);
        }
    }
    let admitted = journeys.iter().filter(|j| j.admitted_at.is_some()).count();
    report.check(
        "admission_follows_queue_order",
        overtaken == 0,
        format!("{overtaken} buyers still waiting after a later place was admitted ({admitted} admitted)"),
    );

    // How fast waiting buyers learned the sale was over, once the last unit was paid for.
    let sold_out_at = journeys.iter().filter_map(|j| j.paid_at).max();
    let last_told = journeys.iter().filter_map(|j| j.told_over_at).max();
    let told_within = match (sold_out_at, last_told) {
        (Some(sold), Some(told)) => told.saturating_sub(sold).as_secs_f64(),
        _ => 0.0,
    };
    report.note("sold_out_at", format!("{:.1}s", sold_out_at.unwrap_or_default().as_secs_f64()));
    report.note("everyone_told_within", format!("{told_within:.2}s after the last unit was paid for"));
    report.note("journeys_done", format!("{:.1}s", journeys_done.as_secs_f64()));
    let harness_share = harness_cpu.map(|cpu| cpu / journeys_done.as_secs_f64().max(1e-9));
    if let (Some(cpu), Some(share)) = (harness_cpu, harness_share) {
        report.note("harness_cpu", format!("{cpu:.1} CPU-s, {:.0}% of one core while buyers played", share * 100.0));
    }
    report.note("machine", progress::machine());
    report.note("wall_time", format!("{:.1}s", started.elapsed().as_secs_f64()));

    let latencies = run.latencies.lock().expect("never poisoned");
    for (step, line) in latencies.lines() {
        report.note(step, line);
    }
    if let Some(path) = &opts.html_path {
        let html = html_report(&report, &latencies, &samples);
        std::fs::write(path, html).with_context(|| format!("writing {path}"))?;
    }
    if let Some(path) = &opts.report_path {
        let json = json!({
            "scenario": "smoke",
            "sale_id": id,
            "options": { "buyers": opts.buyers, "stock": opts.stock, "seed": opts.seed, "connections": opts.connections },
            "checks": report.checks.iter().map(|c| json!({"name": c.name, "passed": c.passed, "detail": c.detail})).collect::<Vec<_>>(),
            "outcomes": { "bought": count(Outcome::Bought), "cancelled": count(Outcome::Cancelled),
                          "lapsed": count(Outcome::Lapsed), "sold_out": count(Outcome::SoldOut),
                          "turn_expired": count(Outcome::TurnExpired), "errors": count(Outcome::Error) },
            "latency_ms": latencies.summary(),
            "sold_out_at_secs": sold_out_at.unwrap_or_default().as_secs_f64(),
            "everyone_told_within_secs": told_within,
            "wall_time_secs": started.elapsed().as_secs_f64(),
            "machine": progress::machine(),
            "harness_cpu_secs": harness_cpu,
            "harness_cpu_share_of_one_core": harness_share,
        });
        std::fs::write(path, serde_json::to_vec_pretty(&json)?).with_context(|| format!("writing {path}"))?;
    }
    Ok(report)
}
