//! Whether this instance's stores and its admission ticker work right now, and what it does
//! while they do not ([`DatabaseHealth`], [`TickerHealth`]; both read by `/readyz`).
//!
//! # PostgreSQL
//!
//! A database outage must cost buyers time, never their turn. Once found, it
//! - makes order requests fail fast (503 `unavailable` with `Retry-After`) *before* anything is
//!   reserved in Redis, instead of each one waiting for a connection;
//! - holds admission (see `admit.lua`): nobody new is admitted to a turn they could not use, and
//!   the turns of buyers already admitted are frozen and extended by the outage once it ends.
//!
//! The probe uses a connection of its own, not the pool's: a pool busy with a sale's load is not
//! an outage, and a probe stuck behind that load would report one.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, Ordering};
use std::time::Duration;

use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection};

/// How often the probe asks PostgreSQL.
pub const PROBE_EVERY: Duration = Duration::from_millis(250);

/// How long one probe (connecting included) may take before PostgreSQL counts as unreachable.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Failed probes in a row before PostgreSQL counts as down: one slow answer is not an outage,
/// and a wrong "down" holds admission for every instance.
pub const FAILURES_TO_DOWN: u32 = 2;

/// PostgreSQL's reachability as this instance last saw it.
#[derive(Debug, Default)]
pub struct DatabaseHealth {
    /// Redis's clock when the current outage was first seen, Unix ms; 0 while PostgreSQL answers.
    down_since_ms: AtomicI64,
    /// Probes failed in a row.
    failures: AtomicU32,
    /// When the first of them failed, Unix ms.
    failing_since_ms: AtomicI64,
}

impl DatabaseHealth {
    /// PostgreSQL did not answer the last probe.
    pub fn is_down(&self) -> bool {
        self.down_since_ms.load(Ordering::Relaxed) != 0
    }

    /// How long the current outage has lasted, if there is one.
    pub fn down_for(&self, now_ms: i64) -> Option<Duration> {
        let since = self.down_since_ms.load(Ordering::Relaxed);
        (since != 0).then(|| Duration::from_millis(u64::try_from(now_ms - since).unwrap_or_default()))
    }

    /// Records a probe's outcome at `now_ms`; returns whether the state changed. PostgreSQL is
    /// down from [`FAILURES_TO_DOWN`] failures in a row (dated from the first) to the next answer.
    pub fn record(&self, answered: bool, now_ms: i64) -> bool {
        if answered {
            self.failures.store(0, Ordering::Relaxed);
            return self.down_since_ms.swap(0, Ordering::Relaxed) != 0;
        }
        if self.failures.fetch_add(1, Ordering::Relaxed) == 0 {
            self.failing_since_ms.store(now_ms.max(1), Ordering::Relaxed);
        }
        if self.failures.load(Ordering::Relaxed) < FAILURES_TO_DOWN {
            return false;
        }
        let since = self.failing_since_ms.load(Ordering::Relaxed);
        self.down_since_ms.compare_exchange(0, since, Ordering::Relaxed, Ordering::Relaxed).is_ok()
    }
}

/// The probe's connection, reopened after any failure.
pub struct Probe {
    options: PgConnectOptions,
    conn: Option<PgConnection>,
}

impl std::fmt::Debug for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Probe").field("connected", &self.conn.is_some()).finish_non_exhaustive()
    }
}

impl Probe {
    /// A probe of the database `options` point at (the pool's own options).
    pub fn new(options: PgConnectOptions) -> Probe {
        Probe { options, conn: None }
    }

    /// Whether PostgreSQL answers a `SELECT 1` within [`PROBE_TIMEOUT`]; `None` when the probe
    /// learned nothing: PostgreSQL refused the probe a connection of its own because every
    /// connection slot is taken (by the pools, which then work).
    pub async fn check(&mut self) -> Option<bool> {
        let answered = tokio::time::timeout(PROBE_TIMEOUT, async {
            if self.conn.is_none() {
                self.conn = Some(PgConnection::connect_with(&self.options).await?);
            }
            let conn = self.conn.as_mut().expect("connected above");
            sqlx::query("SELECT 1").execute(conn).await.map(|_| ())
        })
        .await;
        match answered {
            Ok(Ok(())) => Some(true),
            Ok(Err(e)) if too_many_connections(&e) => None,
            _ => {
                // A half-open connection must not be reused: the next probe connects afresh.
                self.conn = None;
                Some(false)
            }
        }
    }
}

/// 53300: PostgreSQL has no connection slot left (`max_connections`).
fn too_many_connections(error: &sqlx::Error) -> bool {
    error.as_database_error().and_then(|e| e.code()).is_some_and(|code| code == "53300")
}

/// How long the admission ticker may go without a complete pass before `/readyz` says this
/// instance is not ready.
pub const TICKER_STALE_AFTER: Duration = Duration::from_secs(5);

/// Whether this instance's admission ticker is alive, for `/readyz`. A pass counts when the list
/// of sales was read and no open sale's step failed, or at least one succeeded (one broken sale
/// does not make the instance unready; every sale failing does). Once gave an outage away: every
/// tick failed for minutes while `/readyz` answered 200.
#[derive(Debug, Default)]
pub struct TickerHealth {
    /// Set when the ticker task starts (instances driven without it, as in tests of the router,
    /// are not judged by it).
    running: AtomicBool,
    /// Redis's clock at the last complete pass, Unix ms (0: none yet).
    last_pass_ms: AtomicI64,
    /// The live sales as last read, for the steps that run while PostgreSQL cannot be read.
    last_sales: std::sync::Mutex<Option<std::sync::Arc<crate::snapshot::PublicSnapshot>>>,
}

impl TickerHealth {
    /// The ticker task has started, at `now_ms` (so it gets a full period before it is judged).
    pub fn started(&self, now_ms: i64) {
        self.last_pass_ms.store(now_ms, Ordering::Relaxed);
        self.running.store(true, Ordering::Relaxed);
    }

    /// Remembers the live sales the pass read.
    pub fn remember(&self, sales: &std::sync::Arc<crate::snapshot::PublicSnapshot>) {
        *self.last_sales.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(sales.clone());
    }

    /// The live sales the last pass read.
    pub fn last_sales(&self) -> Option<std::sync::Arc<crate::snapshot::PublicSnapshot>> {
        self.last_sales.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// A complete pass at `now_ms`.
    pub fn passed(&self, now_ms: i64) {
        self.last_pass_ms.store(now_ms, Ordering::Relaxed);
    }

    /// How long the running ticker has gone without a complete pass, when that is longer than
    /// [`TICKER_STALE_AFTER`].
    pub fn stale_for(&self, now_ms: i64) -> Option<Duration> {
        if !self.running.load(Ordering::Relaxed) {
            return None;
        }
        let since = now_ms - self.last_pass_ms.load(Ordering::Relaxed);
        let since = Duration::from_millis(u64::try_from(since).unwrap_or_default());
        (since > TICKER_STALE_AFTER).then_some(since)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_starts_once_and_ends_on_the_first_answer() {
        let health = DatabaseHealth::default();
        assert!(!health.is_down());
        assert!(!health.record(false, 500), "one failed probe is not an outage");
        assert!(!health.record(true, 750));
        assert!(!health.record(false, 1_000));
        assert!(health.record(false, 1_250), "two in a row are");
        assert!(!health.record(false, 2_000));
        assert_eq!(health.down_for(3_500), Some(Duration::from_millis(2_500)), "dated from the first failure");
        assert!(health.record(true, 4_000));
        assert!(!health.is_down());
        assert_eq!(health.down_for(5_000), None);
    }
}
