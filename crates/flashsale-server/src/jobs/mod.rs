//! Background work, one file per job, each started by [`spawn_all`] and run on every instance
//! (they are safe side by side: each pass locks or scripts what it changes).
//!
//! - [`upkeep`]: once a second, weekly rollover, rebuilding lost Redis state, the audits, sweeps
//!   of reservations nobody ordered, retiring finished batches.
//! - [`admission`]: every 100 ms, the admission step of every open batch.
//! - [`activity`]: once a second, adding this instance's per-second batch counts to PostgreSQL
//!   (the sale reports' timelines).
//! - [`draws`]: once a second, recording the sealed pre-queue cohort of every batch that opened
//!   (and so publishing its seed).
//! - [`order_sweep`]: once a second, expiring unpaid orders and applying settlements left owed.
//! - [`database_probe`]: every 250 ms, whether PostgreSQL answers (orders fail fast and admission
//!   is held while it does not).
//!
//! A job calls `crate::service` for the work and logs its own failures (a pass that fails is
//! retried at the next tick); nothing here answers a request. Adding a job is one file here and
//! one line in [`spawn_all`].

pub mod activity;
pub mod admission;
pub mod database_probe;
pub mod draws;
pub mod order_sweep;
pub mod upkeep;

use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::state::AppState;

/// Starts every job; they stop when `shutdown` is cancelled (join the set to wait for them).
pub fn spawn_all(state: &AppState, shutdown: &CancellationToken) -> JoinSet<()> {
    let mut jobs = JoinSet::new();
    let metrics = &state.metrics;
    jobs.spawn(metrics.scope(upkeep::run(state.clone(), shutdown.clone())));
    jobs.spawn(metrics.scope(admission::run(state.clone(), shutdown.clone())));
    jobs.spawn(metrics.scope(order_sweep::run(state.clone(), shutdown.clone())));
    jobs.spawn(metrics.scope(database_probe::run(state.clone(), shutdown.clone())));
    jobs.spawn(metrics.scope(draws::run(state.clone(), shutdown.clone())));
    jobs.spawn(metrics.scope(activity::run(state.clone(), shutdown.clone())));
    jobs
}

/// A job's clock: ticks every `period` until `shutdown` is cancelled. A tick that finds the
/// previous pass still running is skipped, not queued: background work never piles up behind a
/// slow store. [`every`] is the usual way to use it; a job that keeps state of its own between
/// passes (the database probe's connection) loops on [`Ticks::next`] itself.
#[derive(Debug)]
pub struct Ticks {
    ticker: tokio::time::Interval,
    shutdown: CancellationToken,
}

impl Ticks {
    /// Ticks every `period`, the first at once.
    pub fn new(period: Duration, shutdown: CancellationToken) -> Ticks {
        let mut ticker = tokio::time::interval(period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        Ticks { ticker, shutdown }
    }

    /// Waits for the next tick; `false` once shutdown is requested.
    pub async fn next(&mut self) -> bool {
        tokio::select! {
            () = self.shutdown.cancelled() => false,
            _ = self.ticker.tick() => true,
        }
    }
}

/// The span a pass of `job` runs in: what a log line written during the pass is attributed to.
pub fn span(job: &'static str) -> tracing::Span {
    tracing::info_span!("job", job)
}

/// Runs `work` at every tick of [`Ticks`] until `shutdown` is cancelled, each pass in the
/// job's [`span`].
pub async fn every<F, Fut>(job: &'static str, period: Duration, shutdown: CancellationToken, mut work: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    use tracing::Instrument;
    let mut ticks = Ticks::new(period, shutdown);
    while ticks.next().await {
        work().instrument(span(job)).await;
    }
}
