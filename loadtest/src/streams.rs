//! Many open event streams on one batch: what they cost the server while the line moves.
//!
//! `buyers` join a batch whose line moves slowly (admission at `rate` a second, stock for all, so
//! every waiting buyer's place changes all the time and nobody's status does), then each opens
//! the queue's event stream and holds it for `hold_secs`, reading every event. With
//! `server_pid` (a server on this machine), the server's CPU time is read from `/proc` over
//! `quiet_secs` with the buyers in line and no stream open, then over the hold: what the streams
//! add, per stream and per second, is the figure. Checks: every stream opened and sent its first
//! event; none ended early.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::stream::{self, StreamExt};
use reqwest::{Method, StatusCode};
use serde_json::json;
use tokio::sync::Semaphore;

use crate::checks::Report;
use crate::client::Client;
use crate::wire::Wire;

/// What the scenario plays.
#[derive(Debug, Clone, Copy)]
pub struct StreamsOptions {
    pub buyers: usize,
    /// Buyers admitted per second while the streams are open.
    pub rate: u32,
    pub hold_secs: u64,
    pub quiet_secs: u64,
    /// The server's process id, to read its CPU time (same machine only).
    pub server_pid: Option<u32>,
}

/// Joins and streams in flight at once while they are being set up.
const SETUP_CONCURRENCY: usize = 256;

/// The server's CPU time so far (user + system), from `/proc/PID/stat`.
fn cpu_secs(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command's closing parenthesis; utime and stime are the 14th and 15th.
    let rest = stat.rsplit_once(')').context("unexpected /proc stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    Ok(ticks / 100.0)
}

/// Server CPU seconds per wall second over `secs`.
async fn cpu_share(pid: Option<u32>, secs: u64) -> anyhow::Result<Option<f64>> {
    let Some(pid) = pid else {
        tokio::time::sleep(Duration::from_secs(secs)).await;
        return Ok(None);
    };
    let (before, started) = (cpu_secs(pid)?, Instant::now());
    tokio::time::sleep(Duration::from_secs(secs)).await;
    Ok(Some((cpu_secs(pid)? - before) / started.elapsed().as_secs_f64()))
}

pub async fn run(client: &Client, opts: StreamsOptions) -> anyhow::Result<Report> {
    let mut report = Report::new("streams");
    let opens_at = chrono::Utc::now() + chrono::TimeDelta::seconds(2);
    let sale = json!({
        "name": "streams", "sku": "LOADTEST-STREAMS", "price_cents": 100, "currency": "CNY",
        "stock": opts.buyers, "per_user_limit": 1, "opens_at": opens_at.to_rfc3339(),
        "prequeue_secs": 600, "admission_rate": opts.rate, "admission_ttl_secs": 3600, "payment_window_secs": 3600,
    });
    let created = client.admin_ok(Method::POST, "/admin/sales", Some(&sale), StatusCode::CREATED).await?;
    let id = created.body["id"].as_i64().context("created sale has an id")?;
    let path = format!("/sales/{id}/queue");
    tokio::time::sleep((opens_at - chrono::Utc::now()).to_std().unwrap_or_default() + Duration::from_millis(300)).await;

    let users: Vec<String> = (0..opts.buyers).map(|i| format!("stream-{id}-{i}")).collect();
    let joined: Vec<anyhow::Result<crate::client::Reply>> = stream::iter(&users)
        .map(|user| client.buyer(Method::POST, &path, user, None))
        .buffered(SETUP_CONCURRENCY)
        .collect()
        .await;
    let mut tickets = Vec::with_capacity(users.len());
    for reply in joined {
        let reply = reply?;
        anyhow::ensure!(reply.status == StatusCode::CREATED, "join answered {}: {}", reply.status, reply.body);
        tickets.push(reply.body["ticket"].as_str().unwrap_or_default().to_owned());
    }
    report.note("buyers_in_line", opts.buyers.to_string());

    let quiet = cpu_share(opts.server_pid, opts.quiet_secs).await?;

    // Every buyer opens a stream and reads it until the hold ends.
    let wire = Arc::new(Wire::new(client.bases()).await?);
    let counter = || Arc::new(AtomicU64::new(0));
    // Settled: opened and sent its first event, or failed to.
    let (opened, settled, events, ended_early) = (counter(), counter(), counter(), counter());
    let setup = Arc::new(Semaphore::new(SETUP_CONCURRENCY));
    let hold_until = Instant::now() + Duration::from_secs(opts.hold_secs) + Duration::from_secs(130);
    let mut tasks = tokio::task::JoinSet::new();
    for (user, ticket) in users.iter().zip(&tickets) {
        let request = wire
            .request("GET", &format!("{path}/events"))
            .header("authorization", &format!("Bearer {}", client.buyer_jwt(user)?))
            .header("x-queue-ticket", ticket)
            .body(b"");
        let (wire, setup) = (wire.clone(), setup.clone());
        let (opened, settled, events, ended_early) =
            (opened.clone(), settled.clone(), events.clone(), ended_early.clone());
        tasks.spawn(async move {
            let mut permit = Some(setup.acquire_owned().await);
            let Ok(Ok(mut stream)) = wire.open_stream(&request).await else {
                settled.fetch_add(1, Ordering::Relaxed);
                return;
            };
            opened.fetch_add(1, Ordering::Relaxed);
            loop {
                match tokio::time::timeout_at(hold_until.into(), stream.next()).await {
                    Err(_) => return,
                    Ok(Ok(Some(_))) => {
                        events.fetch_add(1, Ordering::Relaxed);
                        if permit.take().is_some() {
                            settled.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Ok(_) => {
                        ended_early.fetch_add(1, Ordering::Relaxed);
                        if permit.take().is_some() {
                            settled.fetch_add(1, Ordering::Relaxed);
                        }
                        return;
                    }
                }
            }
        });
    }
    // Every stream open (or failed), at most two minutes; then the hold is measured.
    let setup_started = Instant::now();
    while settled.load(Ordering::Relaxed) < opts.buyers as u64 && setup_started.elapsed() < Duration::from_secs(120) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    report.note("streams_opened_in", format!("{:.1}s", setup_started.elapsed().as_secs_f64()));
    let events_before = events.load(Ordering::Relaxed);
    let held = cpu_share(opts.server_pid, opts.hold_secs).await?;
    let events_during = events.load(Ordering::Relaxed) - events_before;
    let open = opened.load(Ordering::Relaxed);
    report.note(
        "events_during_hold",
        format!(
            "{events_during} ({:.2} per stream per minute)",
            events_during as f64 / open.max(1) as f64 * 60.0 / opts.hold_secs.max(1) as f64
        ),
    );
    if let (Some(quiet), Some(held)) = (quiet, held) {
        report.note("server_cpu_quiet", format!("{quiet:.3} CPU-s/s with {} buyers in line, no stream", opts.buyers));
        report.note("server_cpu_streams", format!("{held:.3} CPU-s/s with {open} streams open"));
        report.note(
            "server_cpu_per_stream",
            format!(
                "{:.2} µs/s per stream ({:.3} CPU-s/s for 100,000 at that rate)",
                (held - quiet).max(0.0) / open.max(1) as f64 * 1e6,
                (held - quiet).max(0.0) / open.max(1) as f64 * 100_000.0
            ),
        );
    }
    report.check(
        "every_stream_opened",
        open == opts.buyers as u64 && settled.load(Ordering::Relaxed) == open,
        format!("{open} of {} opened and sent their first event", opts.buyers),
    );
    let early = ended_early.load(Ordering::Relaxed);
    report.check("no_stream_ended_early", early == 0, format!("{early} streams ended before the hold did"));
    tasks.abort_all();
    client.admin_ok(Method::POST, &format!("/admin/sales/{id}/close"), None, StatusCode::OK).await?;
    Ok(report)
}
