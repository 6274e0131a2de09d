//! The sale-day scenarios (`smoke`, `tuesday-noon`, `run`): a whole sale played from the outside
//! against a running server, then checked against the API and PostgreSQL.
//!
//! The harness creates a sale opening a little later, so the pre-queue is exercised, and plays
//! each buyer's journey: arrive according to the arrival profile (early birds in the pre-queue,
//! the rest after the opening), join, follow `poll_after_ms` (or the event stream) until admitted
//! or told the sale is over (or give up, for the impatient), order with an idempotency key (some send it twice on
//! purpose, as a client retrying after a timeout), then pay through the signed callback, cancel,
//! or let the payment window lapse, by seeded ratios.
//!
//! - [`plan`]: who arrives when and does what, drawn from the seed.
//! - [`engine`]: plays the journeys with a bounded pool, latencies from each step's due time.
//! - [`verdict`]: the checks and the reports (terminal, JSON, HTML).

pub mod engine;
pub mod plan;
mod verdict;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::checks::Report;
use crate::client::Client;
use crate::html::Sample;
use crate::progress;
pub use plan::Profile;

/// What a sale scenario plays. [`SaleOptions::smoke`] and [`SaleOptions::tuesday_noon`] are
/// the named scenarios; `run` starts from `smoke`'s and takes every option.
#[derive(Debug, Clone)]
pub struct SaleOptions {
    /// The scenario's name (in the report, and in the buyers' ids).
    pub scenario: &'static str,
    pub buyers: usize,
    pub stock: u32,
    pub per_user_limit: u32,
    /// Each buyer asks for 1..=this many units (at most the per-user limit).
    pub max_quantity: u32,
    /// Buyers admitted per second.
    pub admission_rate: u32,
    /// How long an admitted buyer has to order.
    pub admission_ttl_secs: u32,
    pub payment_window_secs: u32,
    /// The sale opens this long after the run starts.
    pub opens_in_secs: u64,
    pub profile: Profile,
    /// Share of buyers arriving in the pre-queue, over the `early_window_secs` before the opening.
    pub early: f64,
    pub early_window_secs: u64,
    /// The rest arrive over this long after the opening.
    pub late_window_secs: u64,
    /// Of buyers who get an order: share who pay, share who cancel (the rest let it lapse).
    pub pay: f64,
    /// Buyers who pay do so at their order's payment deadline, up to this many ms before or
    /// after it (drawn per buyer from the seed), instead of at once: the payment races the
    /// expiry. A payment that lands late is answered `refund_due`.
    pub pay_at_deadline_ms: Option<u32>,
    pub cancel: f64,
    /// Share of orders sent twice with the same key.
    pub retry: f64,
    /// Share of buyers who give up waiting after some time up to `patience_secs`.
    pub give_up: f64,
    pub patience_secs: u64,
    /// Share of buyers who follow the queue's event stream (Server-Sent Events, a connection
    /// each) instead of polling.
    pub events: f64,
    /// Requests in flight at most (the harness's connection pool).
    pub connections: usize,
    /// Journeys still going after this long are reported unfinished (a failed check).
    pub duration_secs: u64,
    pub seed: u64,
    /// Also play the same buyers and stock against the naive PostgreSQL-only purchase and report
    /// the two side by side.
    pub naive: bool,
    /// Proof of work asked of each join (leading zero bits; 0: none).
    pub join_pow_bits: u8,
    pub payment_secret: String,
    pub database_url: String,
    pub report_path: Option<String>,
    pub html_path: Option<String>,
    /// Moments marked on the HTML report's charts (seconds since the start, label).
    pub marks: Vec<crate::html::Mark>,
    /// The server may be unreachable for a while (the chaos scenarios break it on purpose): a
    /// request that gets no answer is sent again a second later, as a real client would, and
    /// counted, instead of ending the buyer's journey as an error.
    pub outages: bool,
}

impl SaleOptions {
    /// A few thousand buyers for a few hundred units, under a minute: what CI runs.
    pub fn smoke() -> SaleOptions {
        SaleOptions {
            scenario: "smoke",
            buyers: 2_000,
            stock: 200,
            per_user_limit: 1,
            max_quantity: 1,
            admission_rate: 500,
            admission_ttl_secs: 10,
            payment_window_secs: 30,
            opens_in_secs: 5,
            profile: Profile::Spike,
            early: 0.4,
            early_window_secs: 5,
            late_window_secs: 2,
            pay: 0.85,
            pay_at_deadline_ms: None,
            cancel: 0.1,
            retry: 0.05,
            give_up: 0.0,
            patience_secs: 30,
            events: 0.0,
            connections: 128,
            duration_secs: 300,
            seed: 7,
            naive: false,
            join_pow_bits: 0,
            payment_secret: String::new(),
            database_url: String::new(),
            report_path: None,
            html_path: None,
            marks: Vec::new(),
            outages: false,
        }
    }

    /// The sale the backend exists for: a million buyers, most in the last minute before the
    /// opening and the first seconds after it, for 50,000 units. Admitted buyers get a minute to
    /// order (and so a minute to pay: a turn never outlives the reservation it leads to): at this
    /// crowd's peak a 2-core machine answers polls tens of seconds late, and a shorter turn would
    /// pass before its buyer heard of it.
    pub fn tuesday_noon() -> SaleOptions {
        SaleOptions {
            scenario: "tuesday-noon",
            buyers: 1_000_000,
            stock: 50_000,
            admission_rate: 2_000,
            admission_ttl_secs: 60,
            payment_window_secs: 60,
            opens_in_secs: 65,
            early: 0.7,
            early_window_secs: 60,
            late_window_secs: 10,
            retry: 0.02,
            give_up: 0.02,
            patience_secs: 120,
            connections: 256,
            duration_secs: 900,
            ..SaleOptions::smoke()
        }
    }
}

/// Samples the sale twice a second until `done`: requests per second (the harness's count) and
/// the live numbers operations see.
async fn sample(client: &Client, engine: &engine::Engine, sale: i64, done: &AtomicBool) -> Vec<Sample> {
    let mut samples = Vec::new();
    let mut last = (engine.started.elapsed(), 0u64);
    let path = format!("/admin/sales/{sale}");
    while !done.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let Ok(reply) = client.send(Method::GET, &path, None, true, None).await else { continue };
        let stats = &reply.body["current_batch"]["stats"];
        let now = engine.started.elapsed();
        let requests = engine.progress.requests.load(Ordering::Relaxed);
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

/// What the server publishes about the played batch, fetched once the sale settled: its report
/// (once the instances added their last second of counts) and its draw.
async fn server_view(client: &Client, id: i64) -> anyhow::Result<verdict::ServerView> {
    // The instances add their per-second counts once a second.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let report_path = format!("/admin/sales/{id}/batches/1/report");
    let report = client.admin_ok(Method::GET, &report_path, None, StatusCode::OK).await?.body;
    let draw_path = format!("/sales/{id}/batches/1/draw");
    let draw = client.send(Method::GET, &draw_path, None, false, None).await?.body;
    let draw: flashsale_queue::draw::PublishedDraw = serde_json::from_value(draw).context("the published draw")?;
    let entrants = match draw.cohort_size {
        Some(_) => Some(client.text(&format!("{draw_path}/entrants")).await?),
        None => None,
    };
    Ok(verdict::ServerView { report, draw, entrants })
}

/// Plays the sale and checks it.
pub async fn run(client: &Client, opts: &SaleOptions) -> anyhow::Result<Report> {
    let started = Instant::now();
    client.send(Method::GET, "/readyz", None, false, None).await.context("the server is not reachable")?;
    // Drawn before the clock matters: a million plans take a moment.
    let plans = plan::draw(opts);
    let opens_in = Duration::from_secs(opts.opens_in_secs);
    let opens_at = chrono::Utc::now() + chrono::TimeDelta::from_std(opens_in.saturating_sub(started.elapsed()))?;
    let price = 100;
    let sale = json!({
        "name": opts.scenario, "sku": format!("LOADTEST-{}", opts.scenario.to_uppercase()), "price_cents": price,
        "currency": "CNY", "stock": opts.stock, "per_user_limit": opts.per_user_limit,
        "opens_at": opens_at.to_rfc3339(), "prequeue_secs": opts.early_window_secs.max(600),
        "admission_rate": opts.admission_rate, "admission_ttl_secs": opts.admission_ttl_secs,
        "payment_window_secs": opts.payment_window_secs, "join_pow_bits": opts.join_pow_bits,
    });
    let created = client.admin_ok(Method::POST, "/admin/sales", Some(&sale), StatusCode::CREATED).await?;
    let id = created.body["id"].as_i64().context("created sale has an id")?;
    let opens_ms = u32::try_from(opens_in.as_millis())?;
    let engine = Arc::new(engine::Engine::new(client, opts, id, price, started, opens_ms, plans).await?);

    let cpu_before = progress::own_cpu_secs();
    let done = AtomicBool::new(false);
    let deadline = started + Duration::from_secs(opts.duration_secs);
    let (buyers, samples) = tokio::join!(
        async {
            let (finished, signal) = tokio::sync::oneshot::channel::<()>();
            let shown = engine.progress.show_until(started, async move {
                let _ = signal.await;
            });
            let (buyers, ()) = tokio::join!(
                async {
                    let buyers = engine.clone().play(deadline).await;
                    let _ = finished.send(());
                    buyers
                },
                shown
            );
            done.store(true, Ordering::Relaxed);
            buyers
        },
        sample(client, &engine, id, &done)
    );
    let harness_cpu = progress::own_cpu_secs().zip(cpu_before).map(|(after, before)| after - before);
    let journeys_done = started.elapsed();

    // Lapsed orders expire after their window; the sweep returns their units. Wait until nothing
    // is reserved any more (the window plus the sweeper's grace at most).
    let stats_path = format!("/admin/sales/{id}");
    let settle_by = Instant::now() + Duration::from_secs(u64::from(opts.payment_window_secs) + 60);
    let stats = loop {
        let reply = client.admin_ok(Method::GET, &stats_path, None, StatusCode::OK).await?;
        let stats = reply.body["current_batch"]["stats"].clone();
        if stats["reserved"] == json!(0) || Instant::now() > settle_by {
            break stats;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let server = server_view(client, id).await?;
    let run = verdict::Run {
        opts,
        server,
        sale: id,
        started,
        opens_ms,
        journeys_done,
        harness_cpu,
        requests: engine.progress.requests.load(Ordering::Relaxed),
        buyers,
        stats,
        latencies: std::mem::take(&mut *engine.latencies.lock().expect("never poisoned")),
        samples,
    };
    let mut report = verdict::judge(run).await?;
    let solved = engine.progress.pow_solved.load(Ordering::Relaxed);
    if solved > 0 {
        let secs = engine.progress.pow_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        report.note(
            "proof_of_work",
            format!(
                "{solved} challenges of {} bits solved in {secs:.2} CPU-s ({:.2} ms each)",
                opts.join_pow_bits,
                secs * 1000.0 / solved as f64
            ),
        );
    }
    if opts.outages {
        let unanswered = engine.progress.unanswered.load(Ordering::Relaxed);
        report.note("requests_unanswered", format!("{unanswered} (tried again a second later)"));
        let statuses = engine.progress.statuses.lock().expect("never poisoned");
        let answers: Vec<String> = statuses.iter().map(|(status, n)| format!("{status}: {n}")).collect();
        report.note("answers", answers.join(", "));
        let last = engine.progress.last_failure_ms.load(Ordering::Relaxed);
        report.note(
            "last_failure_at",
            if last == 0 { "none".to_owned() } else { format!("{:.1}s", last as f64 / 1000.0) },
        );
    }
    Ok(report)
}
