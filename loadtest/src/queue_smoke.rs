//! The queue end to end, from the outside: a pre-queue cohort, an opening, latecomers, admission.
//!
//! Half the buyers join during the pre-queue (concurrently), the batch opens, the other half join
//! one after another; then everyone polls with their ticket until admission settles. Checks: one
//! distinct place per buyer; the cohort holds places 1..P and latecomers follow in arrival order;
//! the cohort's order is uncorrelated with its arrival order (Spearman's rho reported); admission
//! follows places and never exceeds what the stock allows; joining again returns the same place.

use std::time::{Duration, Instant};

use anyhow::Context;
use flashsale_core::stats::{ranks, spearman};
use futures::stream::{self, StreamExt};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::checks::Report;
use crate::client::Client;

/// Requests in flight at once.
const CONCURRENCY: usize = 32;

/// Runs the scenario with `buyers` buyers and `stock` units.
pub async fn run(client: &Client, buyers: usize, stock: u32, oversubscription: f64) -> anyhow::Result<Report> {
    let mut report = Report::new("queue-smoke");
    let started = Instant::now();
    client.send(Method::GET, "/readyz", None, false, None).await.context("the server is not reachable")?;
    let opens_in = Duration::from_secs(6);
    let opens_at = chrono::Utc::now() + chrono::TimeDelta::from_std(opens_in)?;
    let sale = json!({
        "name": "queue-smoke", "sku": "LOADTEST-QUEUE", "price_cents": 100, "currency": "CNY",
        "stock": stock, "per_user_limit": 1, "opens_at": opens_at.to_rfc3339(),
        "prequeue_secs": 600, "admission_rate": 200, "admission_ttl_secs": 60, "payment_window_secs": 120,
    });
    let created = client.admin_ok(Method::POST, "/admin/sales", Some(&sale), StatusCode::CREATED).await?;
    let id = created.body["id"].as_i64().context("created sale has an id")?;
    let path = format!("/sales/{id}/queue");
    let users: Vec<String> = (0..buyers).map(|i| format!("smoke-{id}-{i}")).collect();
    let cohort = buyers / 2;

    // The pre-queue cohort, all at once.
    let joined: Vec<anyhow::Result<crate::client::Reply>> = stream::iter(&users[..cohort])
        .map(|user| client.buyer(Method::POST, &path, user, None))
        .buffered(CONCURRENCY)
        .collect()
        .await;
    let mut tickets = Vec::with_capacity(buyers);
    let mut prequeue_ok = true;
    for reply in joined {
        let reply = reply?;
        prequeue_ok &= reply.status == StatusCode::CREATED && reply.body["position"].is_null();
        tickets.push(reply.body["ticket"].as_str().unwrap_or_default().to_owned());
    }
    report.check("prequeue_joins_have_no_place_yet", prequeue_ok, format!("{cohort} buyers joined before the opening"));

    // The opening, then latecomers one by one.
    let wait = (opens_at - chrono::Utc::now()).to_std().unwrap_or_default() + Duration::from_millis(300);
    tokio::time::sleep(wait).await;
    let mut late_positions = Vec::new();
    for user in &users[cohort..] {
        let reply = client.buyer(Method::POST, &path, user, None).await?;
        late_positions.push(reply.body["position"].as_u64().unwrap_or(0));
        tickets.push(reply.body["ticket"].as_str().unwrap_or_default().to_owned());
    }
    let fifo = late_positions.iter().enumerate().all(|(i, p)| *p == (cohort + i + 1) as u64);
    report.check(
        "latecomers_queue_in_arrival_order",
        fifo,
        format!("places {:?}…", &late_positions[..late_positions.len().min(5)]),
    );

    // Let admission settle, then read everyone's state.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let states: Vec<anyhow::Result<crate::client::Reply>> = stream::iter(users.iter().zip(&tickets))
        .map(|(user, ticket)| client.buyer(Method::GET, &path, user, Some(ticket.as_str())))
        .buffered(CONCURRENCY)
        .collect()
        .await;
    let states: Vec<Value> = states.into_iter().map(|r| r.map(|r| r.body)).collect::<Result<_, _>>()?;
    let positions: Vec<u64> = states.iter().map(|s| s["position"].as_u64().unwrap_or(0)).collect();
    let mut sorted = positions.clone();
    sorted.sort_unstable();
    let permutation = sorted.iter().enumerate().all(|(i, p)| *p == i as u64 + 1);
    report.check("one_distinct_place_per_buyer", permutation, format!("{buyers} buyers, places 1..{buyers}"));
    let cohort_first = positions[..cohort].iter().all(|p| usize::try_from(*p).is_ok_and(|p| p <= cohort));
    report.check("prequeue_cohort_ahead_of_latecomers", cohort_first, format!("cohort of {cohort} holds 1..{cohort}"));
    let arrival: Vec<f64> = (0..cohort).map(|i| i as f64).collect();
    let rho = spearman(&arrival, &ranks(&positions[..cohort]));
    report.check(
        "prequeue_order_ignores_arrival",
        rho.abs() < 0.35,
        format!("Spearman rho(arrival, place) = {rho:+.3}"),
    );

    let admitted: Vec<u64> =
        states.iter().filter(|s| s["status"] == "admitted").map(|s| s["position"].as_u64().unwrap_or(0)).collect();
    let waiting: Vec<u64> =
        states.iter().filter(|s| s["status"] == "waiting").map(|s| s["position"].as_u64().unwrap_or(0)).collect();
    let in_order = admitted.iter().max() < waiting.iter().min() || waiting.is_empty();
    report.check(
        "admission_follows_places",
        in_order && !admitted.is_empty(),
        format!("{} admitted, {} waiting", admitted.len(), waiting.len()),
    );
    let cap = (f64::from(stock) * oversubscription).floor();
    report.check(
        "admission_within_stock",
        admitted.len() as f64 <= cap,
        format!("{} admitted, at most {cap} allowed", admitted.len()),
    );
    let tokens = states.iter().filter(|s| s["status"] == "admitted").all(|s| s["admission_token"].is_string());
    report.check("admitted_buyers_hold_tokens", tokens, "every admitted buyer got an admission token");

    // Joining again changes nothing.
    let mut same = true;
    for (user, position) in users.iter().zip(&positions).take(10) {
        let again = client.buyer(Method::POST, &path, user, None).await?;
        same &= again.status == StatusCode::OK && again.body["position"].as_u64() == Some(*position);
    }
    report.check("joining_again_keeps_the_place", same, "10 buyers joined a second time");

    client.admin_ok(Method::POST, &format!("/admin/sales/{id}/close"), None, StatusCode::OK).await?;
    report.note("wall_time", format!("{:.2}s", started.elapsed().as_secs_f64()));
    Ok(report)
}
