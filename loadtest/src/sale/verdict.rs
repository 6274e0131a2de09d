//! The checks of a played sale, from the buyers' answers and from PostgreSQL directly, and the
//! reports: terminal summary, JSON and HTML.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Value, json};

use super::SaleOptions;
use super::engine::{Buyer, Outcome};
use super::plan::Act;
use crate::checks::Report;
use crate::html::{Sample, chart, page};
use crate::latency::Latencies;
use crate::progress;
use flashsale_core::stats::{ranks, spearman};

/// What the server published about the played batch.
pub struct ServerView {
    /// The operator's sale report (JSON).
    pub report: Value,
    pub draw: flashsale_queue::draw::PublishedDraw,
    /// The drawn cohort's entrants, once recorded.
    pub entrants: Option<String>,
}

/// Everything a played sale left to judge.
pub struct Run<'a> {
    pub opts: &'a SaleOptions,
    pub server: ServerView,
    pub sale: i64,
    pub started: Instant,
    pub opens_ms: u32,
    pub journeys_done: Duration,
    pub harness_cpu: Option<f64>,
    /// Requests the buyers sent.
    pub requests: u64,
    pub buyers: Vec<Buyer>,
    /// The batch's stats once nothing was reserved any more.
    pub stats: Value,
    pub latencies: Latencies,
    pub samples: Vec<Sample>,
}

fn secs(ms: u32) -> f64 {
    f64::from(ms) / 1000.0
}

/// What PostgreSQL says about the sale's orders.
struct Stored {
    pending: i64,
    paid: i64,
    max_per_user: i64,
    orders: i64,
    keys: i64,
    /// Orders (not units) paid, and owed back after a late payment.
    paid_orders: i64,
    refund_due_orders: i64,
}

async fn stored(database_url: &str, sale: i64) -> anyhow::Result<Stored> {
    let mut db = <sqlx::PgConnection as sqlx::Connection>::connect(database_url)
        .await
        .context("PostgreSQL for the checks (--database-url: the server's database)")?;
    let (pending, paid): (i64, i64) = sqlx::query_as(
        "SELECT COALESCE(SUM(quantity) FILTER (WHERE status = 'pending_payment'), 0)::bigint, \
                COALESCE(SUM(quantity) FILTER (WHERE status = 'paid'), 0)::bigint FROM orders WHERE sale_id = $1",
    )
    .bind(sale)
    .fetch_one(&mut db)
    .await?;
    let max_per_user: i64 = sqlx::query_scalar(
        "SELECT COALESCE(MAX(units), 0)::bigint FROM (SELECT SUM(quantity) AS units FROM orders \
         WHERE sale_id = $1 AND status IN ('pending_payment', 'paid') GROUP BY user_id) held",
    )
    .bind(sale)
    .fetch_one(&mut db)
    .await?;
    let (orders, keys): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(DISTINCT (user_id, idempotency_key)) FROM orders WHERE sale_id = $1")
            .bind(sale)
            .fetch_one(&mut db)
            .await?;
    let (paid_orders, refund_due_orders): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE status = 'paid'), count(*) FILTER (WHERE status = 'refund_due') \
         FROM orders WHERE sale_id = $1",
    )
    .bind(sale)
    .fetch_one(&mut db)
    .await?;
    Ok(Stored { pending, paid, max_per_user, orders, keys, paid_orders, refund_due_orders })
}

/// Buyers the queue itself told their final answer (sold out in line, or closed): what the
/// server's report counts as `told_final`.
fn told_in_line(buyers: &[Buyer]) -> u64 {
    buyers.iter().filter(|b| b.sold_out_in_line || b.outcome == Outcome::Closed).count() as u64
}

/// The server's own account of the sale against the harness's: its report, and its draw checked
/// the way any buyer can (`flashsale-verify`'s code), for every buyer drawn from the pre-queue.
/// What the harness knows of the played sale beyond its buyers.
struct Played {
    /// Buyers the queue told their final answer ([`told_in_line`]).
    told: u64,
    /// Faults were struck during the sale.
    outages: bool,
    /// When the batch opened (ms since the start).
    opens_ms: u32,
}

fn server_checks(
    report: &mut Report,
    server: &ServerView,
    buyers: &[Buyer],
    user: &dyn Fn(usize) -> String,
    db: &Stored,
    played: &Played,
) {
    let Played { told, outages, opens_ms } = *played;
    let r = &server.report;
    let figure = |path: &[&str]| path.iter().fold(r, |v, k| &v[*k]).as_u64();
    let outcome = |status: &str| {
        r["orders"].as_array().and_then(|o| o.iter().find(|o| o["status"] == status)).and_then(|o| o["orders"].as_u64())
    };
    let joined = buyers.iter().filter(|b| b.position.is_some() || b.prequeued).count() as u64;
    let prequeued = buyers.iter().filter(|b| b.prequeued).count() as u64;
    // A join meant before the opening and answered after it may be in the cohort or not (Redis's
    // clock decides at the join; the answer learns the drawn place): the cohort lies between
    // the buyers told "pre-queue" and every buyer whose join was due before the opening.
    let joined_before_opening = buyers
        .iter()
        .filter(|b| b.joined_ms.is_some_and(|at| at < opens_ms) && (b.position.is_some() || b.prequeued))
        .count() as u64;
    let cohort = figure(&["entrants", "prequeue_cohort"]);
    let cohort_fits = cohort.is_some_and(|c| (prequeued..=joined_before_opening).contains(&c));
    let paid = u64::try_from(db.paid_orders).ok();
    // Under faults two figures are not exact by design: a Redis rebuilt from PostgreSQL numbers
    // newcomers past a margin (`queued` counts the skipped numbers), and an instance killed
    // loses its last second of counts (`told_final` may fall short). The rest must still agree.
    let exact = outages
        || (figure(&["entrants", "queued"]) == Some(joined) && figure(&["sell_out", "told_final"]) == Some(told));
    let agrees =
        exact && cohort_fits && outcome("paid") == paid && figure(&["fairness", "admissions_out_of_order"]) == Some(0);
    report.check(
        "server_report_agrees",
        agrees,
        format!(
            "report: queued {:?} (harness {joined}), cohort {cohort:?} (harness {prequeued} to \
             {joined_before_opening}), paid orders {:?} ({paid:?}), told final {:?} ({told}), admissions out of order \
             {:?}, arrival rho {}",
            figure(&["entrants", "queued"]),
            outcome("paid"),
            figure(&["sell_out", "told_final"]),
            figure(&["fairness", "admissions_out_of_order"]),
            r["fairness"]["arrival_rho"]
        ),
    );
    let (placed, checked, detail) = match server
        .entrants
        .as_deref()
        .map(|e| flashsale_verify::Cohort::verify(&server.draw, e))
    {
        None => (0, 0, "the draw is not recorded".to_owned()),
        Some(Err(e)) => (0, 1, format!("the published draw does not verify: {e}")),
        Some(Ok(cohort)) => {
            let drawn: Vec<(usize, &Buyer)> =
                buyers.iter().enumerate().filter(|(_, b)| b.prequeued && b.draw_receipt.is_some()).collect();
            let placed = drawn
                .iter()
                .filter(|(i, b)| {
                    let buyer = flashsale_verify::Buyer::new(&user(*i), b.draw_receipt.as_deref().unwrap_or_default());
                    let place = buyer.ok().and_then(|buyer| cohort.place_of(&buyer));
                    // A buyer who left before the draw never learned a place: in the cohort is enough.
                    place.is_some() && (b.position.is_none() || place == b.position)
                })
                .count();
            (
                placed,
                drawn.len(),
                format!(
                    "{placed} of {} pre-queue buyers found in a cohort of {}, each at the place the queue gave them",
                    drawn.len(),
                    cohort.size()
                ),
            )
        }
    };
    report.check("draw_verifies", placed == checked, detail);
}

/// The naive purchase's numbers for the same buyers and stock.
struct Naive {
    rate: f64,
    sold: usize,
    everyone_answered: Duration,
    latencies: Latencies,
}

/// Runs the checks and writes the reports.
pub async fn judge(run: Run<'_>) -> anyhow::Result<Report> {
    let opts = run.opts;
    let mut report = Report::new(opts.scenario);
    let buyers = &run.buyers;
    let mut counts: HashMap<Outcome, usize> = HashMap::new();
    for b in buyers {
        *counts.entry(b.outcome).or_default() += 1;
    }
    let count = |o: Outcome| counts.get(&o).copied().unwrap_or(0);
    report.note("buyers", format!("{} for {} units", opts.buyers, opts.stock));
    report.note(
        "outcomes",
        format!(
            "bought {}, paid late {}, cancelled {}, lapsed {}, sold out {}, gave up {}, turn expired {}, closed {}, \
             errors {}, unfinished {}",
            count(Outcome::Bought),
            count(Outcome::PaidLate),
            count(Outcome::Cancelled),
            count(Outcome::Lapsed),
            count(Outcome::SoldOut),
            count(Outcome::GaveUp),
            count(Outcome::TurnExpired),
            count(Outcome::Closed),
            count(Outcome::Error),
            count(Outcome::Unfinished)
        ),
    );

    let db = stored(&opts.database_url, run.sale).await?;
    let stock = i64::from(opts.stock);
    let (pending, paid) = (db.pending, db.paid);
    report.check("no_oversell", pending + paid <= stock, format!("paid {paid} + pending {pending} ≤ stock {stock}"));
    // Sold out means every unit paid for, provided enough buyers are willing to pay: twice the
    // stock leaves room for those who cancel, lapse, give up, or learn of their turn too late.
    let willing: i64 = buyers
        .iter()
        .filter(|b| b.plan.act == Act::Pay && b.plan.patience_ms.is_none())
        .map(|b| i64::from(b.plan.quantity))
        .sum();
    report.check(
        "no_undersell",
        willing < stock * 2 || paid == stock,
        format!("sold {paid} of {stock} ({} buyers, {willing} units wanted by buyers who pay)", opts.buyers),
    );
    let number = |k: &str| run.stats[k].as_i64().unwrap_or(-1);
    report.check(
        "ledger_balances",
        // Units held back for priority codes are neither available nor anyone's yet.
        number("available") + run.stats["allotted"].as_i64().unwrap_or(0) + number("reserved") + number("sold")
            == stock,
        format!("{}", run.stats),
    );
    report.check(
        "redis_agrees_with_postgres",
        number("sold") == paid && number("reserved") == pending,
        format!(
            "Redis sold {} reserved {}; PostgreSQL paid {paid} pending {pending}",
            number("sold"),
            number("reserved")
        ),
    );
    let limit = i64::from(opts.per_user_limit);
    report.check(
        "per_user_limit_held",
        db.max_per_user <= limit,
        format!("most units held by one buyer: {} (limit {limit})", db.max_per_user),
    );
    let retries: Vec<bool> = buyers.iter().filter_map(|b| b.retried_identically).collect();
    let identical = retries.iter().filter(|same| **same).count();
    report.check(
        "one_order_per_idempotency_key",
        db.orders == db.keys && identical == retries.len(),
        format!(
            "{} orders under {} keys; {identical} of {} deliberate retries answered identically",
            db.orders,
            db.keys,
            retries.len()
        ),
    );
    // Every payment answered `paid` is a paid order, every one answered `refund_due` an order
    // owed back: never both, never neither (what a payment racing its expiry must not break).
    let (bought, late) = (count(Outcome::Bought), count(Outcome::PaidLate));
    report.check(
        "payments_answered_as_recorded",
        usize::try_from(db.paid_orders).ok() == Some(bought)
            && usize::try_from(db.refund_due_orders).ok() == Some(late),
        format!(
            "buyers told paid {bought}, paid orders {}; told refund due {late}, orders owed back {}",
            db.paid_orders, db.refund_due_orders
        ),
    );
    let failed = count(Outcome::Error) + count(Outcome::Unfinished);
    report.check(
        "every_buyer_reached_an_outcome",
        failed == 0 && buyers.len() == opts.buyers,
        format!(
            "{} journeys: {} errors, {} still waiting when the {} s ran out",
            buyers.len(),
            count(Outcome::Error),
            count(Outcome::Unfinished),
            opts.duration_secs
        ),
    );

    // Fairness: the pre-queue's order against arrival order, over the buyers the server put in
    // the pre-queue (an early bird whose join arrived after the opening was placed by arrival).
    let mut early: Vec<&Buyer> = buyers.iter().filter(|b| b.prequeued && b.position.is_some()).collect();
    early.sort_by_key(|b| b.joined_ms);
    let rho = if early.len() > 2 {
        let arrival: Vec<f64> = (0..early.len()).map(|i| i as f64).collect();
        let positions: Vec<u64> = early.iter().map(|b| b.position.unwrap_or(0)).collect();
        spearman(&arrival, &ranks(&positions))
    } else {
        0.0
    };
    let late_early_birds = buyers.iter().filter(|b| b.plan.early && b.joined_ms.is_some() && !b.prequeued).count();
    report.note(
        "early_birds_placed_after_the_opening",
        format!("{late_early_birds} (meant to join before the opening; their join was answered after it)"),
    );
    report.check(
        "prequeue_order_uncorrelated_with_arrival",
        early.len() < 100 || rho.abs() < 0.25,
        format!("Spearman rho(arrival, place) = {rho:+.3} over {} buyers drawn from the pre-queue", early.len()),
    );
    // Fairness: admission follows places. Buyers learn of admission on their next poll, so when
    // they learned proves little; what proves unfairness is a buyer told `waiting` by a poll sent
    // after a later place's `admitted` answer had arrived (plus the server's 50 ms counter cache).
    let mut placed: Vec<&Buyer> = buyers.iter().filter(|b| b.position.is_some()).collect();
    placed.sort_by_key(|b| std::cmp::Reverse(b.position));
    let mut earliest_later_admission = u32::MAX;
    let (mut overtaken, mut passed_in_standby) = (0, 0);
    for b in &placed {
        let limit = earliest_later_admission.saturating_add(100);
        if b.last_waiting_sent_ms.is_some_and(|sent| sent > limit) {
            overtaken += 1;
        }
        if b.last_standby_sent_ms.is_some_and(|sent| sent > limit) {
            passed_in_standby += 1;
        }
        if let Some(at) = b.admitted_ms {
            earliest_later_admission = earliest_later_admission.min(at);
        }
    }
    let admitted = buyers.iter().filter(|b| b.admitted_ms.is_some()).count();
    report.check(
        "admission_follows_queue_order",
        overtaken == 0,
        format!("{overtaken} buyers still waiting after a later place was admitted ({admitted} admitted)"),
    );
    // The same, for the standby line: a unit that comes back goes to the first place in it.
    report.check(
        "nobody_in_standby_passed_by_someone_behind",
        passed_in_standby == 0,
        format!(
            "{passed_in_standby} buyers still in standby after a later place was admitted ({} told standby)",
            buyers.iter().filter(|b| b.last_standby_sent_ms.is_some()).count()
        ),
    );

    // How fast waiting buyers learned the sale was over, once the last unit was paid for.
    let sold_out_ms = buyers.iter().filter_map(|b| b.paid_ms).max();
    let last_told_ms = buyers.iter().filter_map(|b| b.told_over_ms).max();
    let told_within = match (sold_out_ms, last_told_ms) {
        (Some(sold), Some(told)) => secs(told.saturating_sub(sold)),
        _ => 0.0,
    };
    let told = buyers.iter().filter(|b| b.told_over_ms.is_some()).count();
    // ... and once the last unit that sold went into a cart (its order's creation).
    let last_reserved_ms = buyers.iter().filter(|b| b.paid_ms.is_some()).filter_map(|b| b.ordered_ms).max();
    let told_after_reserved = match (last_reserved_ms, last_told_ms) {
        (Some(reserved), Some(told)) => secs(told.saturating_sub(reserved)),
        _ => 0.0,
    };
    // Truth: a buyer the queue told `sold_out` never sees a later place get a turn afterwards
    // (stock is never raised in these scenarios). The answer was computed at most the server's
    // counter cache (50 ms) before it arrived. (An admitted buyer whose order is refused
    // `sold_out` while every unit is held has only lost that turn: not counted here.)
    let mut latest_later_admission = 0u32;
    let mut told_too_early = 0;
    for b in &placed {
        if b.sold_out_in_line && b.told_over_ms.is_some_and(|told| told.saturating_add(100) < latest_later_admission) {
            told_too_early += 1;
        }
        if let Some(at) = b.admitted_ms {
            latest_later_admission = latest_later_admission.max(at);
        }
    }
    // The server lifts the reach when everyone within it passed with units free again, or when
    // stock is added (`reopens` in the batch's stats): a buyer told sold_out may then get a turn
    // after all.
    let reopens = run.stats["reopens"].as_u64().unwrap_or(0);
    report.check(
        "nobody_told_sold_out_before_a_later_place_got_a_turn",
        told_too_early == 0 || reopens > 0,
        format!(
            "{told_too_early} buyers told sold_out in line before a buyer behind them was admitted ({} told in \
             line; the line was reopened {reopens} times)",
            buyers.iter().filter(|b| b.sold_out_in_line).count()
        ),
    );
    let standby: Vec<&Buyer> = buyers.iter().filter(|b| b.last_standby_sent_ms.is_some()).collect();
    let standby_got = standby.iter().filter(|b| b.ordered_ms.is_some()).count();
    let standby_told = standby.iter().filter(|b| b.told_over_ms.is_some()).count();
    report.note(
        "standby",
        format!(
            "{} buyers told standby: {standby_got} got a unit later, {standby_told} were told sold out",
            standby.len()
        ),
    );
    let user = |i: usize| format!("{}-{}-{i}", opts.scenario, run.sale);
    let played = Played { told: told_in_line(buyers), outages: opts.outages, opens_ms: run.opens_ms };
    server_checks(&mut report, &run.server, buyers, &user, &db, &played);

    let opens = secs(run.opens_ms);
    report.note("opened_at", format!("{opens:.1}s"));
    report.note(
        "sold_out_at",
        format!(
            "{:.1}s ({:.1}s after the opening)",
            secs(sold_out_ms.unwrap_or(0)),
            secs(sold_out_ms.unwrap_or(0)) - opens
        ),
    );
    report.note(
        "everyone_told_within",
        format!(
            "{told_within:.1}s after the last unit was paid for, {told_after_reserved:.1}s after it went into a cart \
             ({told} buyers told)"
        ),
    );
    // Orders per second while the stock lasted: from the first order until as many units were
    // ordered as the batch holds.
    let mut ordered: Vec<(u32, u32)> =
        buyers.iter().filter_map(|b| b.ordered_ms.map(|at| (at, u32::from(b.plan.quantity)))).collect();
    ordered.sort_unstable();
    let mut units = 0u32;
    let reached = ordered.iter().find(|(_, q)| {
        units += q;
        units >= opts.stock
    });
    let order_rate = match (ordered.first(), reached) {
        (Some((first, _)), Some((last, _))) if last > first => {
            Some(ordered.iter().take_while(|(at, _)| at <= last).count() as f64 / secs(last - first))
        }
        _ => None,
    };
    if let Some(rate) = order_rate {
        report.note("orders_per_sec_while_stock_lasted", format!("{rate:.0}"));
    }
    report.note("journeys_done", format!("{:.1}s", run.journeys_done.as_secs_f64()));
    let throughput = run.requests as f64 / run.journeys_done.as_secs_f64().max(1e-9);
    report.note("requests", format!("{} ({throughput:.0}/s on average while buyers played)", run.requests));
    let harness_share = run.harness_cpu.map(|cpu| cpu / run.journeys_done.as_secs_f64().max(1e-9));
    if let (Some(cpu), Some(share)) = (run.harness_cpu, harness_share) {
        report.note("harness_cpu", format!("{cpu:.1} CPU-s, {:.0}% of one core while buyers played", share * 100.0));
    }
    let harness_rss = progress::peak_rss_mib();
    if let Some(rss) = harness_rss {
        report.note("harness_peak_rss", format!("{rss} MiB"));
    }
    report.note("machine", progress::machine());
    let wall = run.started.elapsed();
    report.note("wall_time", format!("{:.1}s", wall.as_secs_f64()));
    for (step, line) in run.latencies.lines() {
        report.note(step, line);
    }

    let naive = if opts.naive {
        let started = Instant::now();
        let (rate, sold, latencies) = crate::naive::run_with_stock(
            &opts.database_url,
            opts.buyers,
            opts.stock as usize,
            opts.connections.min(32),
        )
        .await?;
        let naive = Naive { rate, sold, everyone_answered: started.elapsed(), latencies };
        report.note("naive: purchases/s", format!("{:.0} until the last unit went ({} sold)", naive.rate, naive.sold));
        report.note("naive: every buyer answered after", format!("{:.1}s", naive.everyone_answered.as_secs_f64()));
        for (_, line) in naive.latencies.lines() {
            report.note("naive: purchase latency", line);
        }
        if let Some(api) = order_rate {
            // The API's rate is paced by the admission rate on purpose; raise it (`--admission-rate`)
            // to compare capacity rather than the sale's chosen pace.
            report.note(
                "API / naive purchase rate",
                format!("{:.1}x (the API paced by admission at {}/s)", api / naive.rate.max(1e-9), opts.admission_rate),
            );
        }
        report.check(
            "naive_sells_exactly_its_stock",
            naive.sold == opts.stock as usize,
            format!("{} of {}", naive.sold, opts.stock),
        );
        Some(naive)
    } else {
        None
    };

    if let Some(path) = &opts.html_path {
        let html = html_report(&report, &run.latencies, &run.samples, &opts.marks);
        std::fs::write(path, html).with_context(|| format!("writing {path}"))?;
    }
    if let Some(path) = &opts.report_path {
        let json = json!({
            "scenario": opts.scenario,
            "sale_id": run.sale,
            "options": {
                "buyers": opts.buyers, "stock": opts.stock, "per_user_limit": opts.per_user_limit,
                "max_quantity": opts.max_quantity, "admission_rate": opts.admission_rate,
                "admission_ttl_secs": opts.admission_ttl_secs, "payment_window_secs": opts.payment_window_secs,
                "profile": format!("{:?}", opts.profile).to_lowercase(), "early": opts.early,
                "pay": opts.pay, "cancel": opts.cancel, "retry": opts.retry, "give_up": opts.give_up,
                "connections": opts.connections, "seed": opts.seed,
            },
            "checks": report.checks.iter().map(|c| json!({"name": c.name, "passed": c.passed, "detail": c.detail})).collect::<Vec<_>>(),
            "outcomes": {
                "bought": count(Outcome::Bought), "cancelled": count(Outcome::Cancelled),
                "lapsed": count(Outcome::Lapsed), "sold_out": count(Outcome::SoldOut),
                "gave_up": count(Outcome::GaveUp), "turn_expired": count(Outcome::TurnExpired),
                "closed": count(Outcome::Closed), "errors": count(Outcome::Error),
                "unfinished": count(Outcome::Unfinished),
            },
            "latency_ms": run.latencies.summary(),
            "opened_at_secs": opens,
            "sold_out_at_secs": secs(sold_out_ms.unwrap_or(0)),
            "everyone_told_within_secs": told_within,
            "everyone_told_after_last_reservation_secs": told_after_reserved,
            "standby_buyers": standby.len(), "standby_got_a_unit": standby_got, "standby_told_sold_out": standby_told,
            "orders_per_sec_while_stock_lasted": order_rate,
            "requests": run.requests,
            "requests_per_sec": throughput,
            "journeys_done_secs": run.journeys_done.as_secs_f64(),
            "wall_time_secs": wall.as_secs_f64(),
            "machine": progress::machine(),
            "harness_cpu_secs": run.harness_cpu,
            "harness_cpu_share_of_one_core": harness_share,
            "harness_peak_rss_mib": harness_rss,
            "naive": naive.as_ref().map(|n| json!({
                "purchases_per_sec": n.rate, "sold": n.sold,
                "every_buyer_answered_secs": n.everyone_answered.as_secs_f64(),
                "latency_ms": n.latencies.summary(),
            })),
        });
        std::fs::write(path, serde_json::to_vec_pretty(&json)?).with_context(|| format!("writing {path}"))?;
    }
    Ok(report)
}

/// The HTML report: checks, notes and charts over time.
fn html_report(report: &Report, latencies: &Latencies, samples: &[Sample], marks: &[crate::html::Mark]) -> String {
    let over = |f: fn(&Sample) -> f64| samples.iter().map(|s| (s.t, f(s))).collect::<Vec<_>>();
    let latency = |step: &str, quantile: f64| latencies.over_time(step, quantile);
    let charts = vec![
        chart("Requests per second (the harness's)", "req/s", &[("requests/s", over(|s| s.requests_per_sec))], marks),
        chart(
            "Queue",
            "buyers",
            &[("waiting in the queue", over(|s| s.queue_length)), ("admitted so far", over(|s| s.admitted))],
            marks,
        ),
        chart(
            "Units",
            "units",
            &[
                ("available", over(|s| s.units_available)),
                ("reserved", over(|s| s.units_reserved)),
                ("sold", over(|s| s.units_sold)),
            ],
            marks,
        ),
        chart(
            "Join latency by second sent",
            "ms",
            &[("p50", latency("join", 0.5)), ("p99", latency("join", 0.99))],
            marks,
        ),
        chart(
            "Order latency by second sent",
            "ms",
            &[("p50", latency("order", 0.5)), ("p99", latency("order", 0.99))],
            marks,
        ),
        chart(
            "Poll latency by second sent",
            "ms",
            &[("p50", latency("poll", 0.5)), ("p99", latency("poll", 0.99))],
            marks,
        ),
    ];
    let checks: Vec<(String, bool, String)> =
        report.checks.iter().map(|c| (c.name.to_owned(), c.passed, c.detail.clone())).collect();
    let notes: Vec<(String, String)> = report.notes.iter().map(|(n, v)| ((*n).to_owned(), v.clone())).collect();
    page(&format!("flashsale-loadtest {}", report.scenario), &notes, &checks, &charts)
}
