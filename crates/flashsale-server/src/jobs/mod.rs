//! Background work, one file per job, each started by [`spawn_all`] and run on every instance
//! (they are safe side by side: each pass locks or scripts what it changes).
//!
//! - [`upkeep`]: once a second, weekly rollover, rebuilding lost Redis state, the audits, sweeps
//!   of reservations nobody ordered, retiring finished batches.
//! - [`admission`]: every 100 ms, the admission step of every open batch.
//! - [`order_sweep`]: once a second, expiring unpaid orders and applying settlements left owed.
//! - [`database_probe`]: every 250 ms, whether PostgreSQL answers (orders fail fast and admission
//!   is held while it does not).
//!
//! A job calls `crate::service` for the work and logs its own failures (a pass that fails is
//! retried at the next tick); nothing here answers a request. Adding a job is one file here and
//! one line in [`spawn_all`].

pub mod admission;
pub mod database_probe;
pub mod order_sweep;
pub mod upkeep;

use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::state::AppState;

/// Starts every job; they stop when `shutdown` is cancelled (join the set to wait for them).
pub fn spawn_all(state: &AppState, shutdown: &CancellationToken) -> JoinSet<()> {
    let mut jobs = JoinSet::new();
    jobs.spawn(upkeep::run(state.clone(), shutdown.clone()));
    jobs.spawn(admission::run(state.clone(), shutdown.clone()));
    jobs.spawn(order_sweep::run(state.clone(), shutdown.clone()));
    jobs.spawn(database_probe::run(state.clone(), shutdown.clone()));
    jobs
}

/// Runs `work` every `period` until `shutdown` is cancelled, each pass in a `job` span named
/// `job` (what a log line written during the pass is attributed to). A tick that finds the
/// previous one still running is skipped, not queued: background work never piles up behind a
/// slow store.
pub async fn every<F, Fut>(job: &'static str, period: Duration, shutdown: CancellationToken, mut work: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    use tracing::Instrument;
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticker.tick() => work().instrument(tracing::info_span!("job", job)).await,
        }
    }
}
