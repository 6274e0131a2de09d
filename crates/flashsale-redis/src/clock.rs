//! [`Clock`]: the one clock every instance decides by, Redis's.
//!
//! The scripts already stamp and compare times with Redis's `TIME` (reservations' deadlines,
//! admission steps, the queue's opening). An instance that compared those stamps with its own
//! clock would decide differently from the others as soon as its clock drifted: one instance 30 s
//! fast once told every admitted buyer their turn had expired. So instances never read their own
//! clock for a decision: they read Redis's, through an offset measured every second
//! ([`Clock::sync`]) and applied to the local clock in between, which costs nothing per request.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use chrono::{DateTime, TimeDelta, Utc};
use redis::aio::ConnectionLike;

/// Redis's time, read through a cached offset from this machine's clock. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Clock(Arc<Inner>);

#[derive(Debug, Default)]
struct Inner {
    /// Redis's clock minus the local one, ms, as last measured.
    offset_ms: AtomicI64,
    /// Whether it was ever measured.
    synced: AtomicBool,
    /// Added to the local clock's readings: a test's way of giving an instance a wrong clock.
    local_skew_ms: i64,
}

impl Clock {
    /// A clock that has not measured Redis yet (it reads the local clock until [`Clock::sync`]).
    pub fn new() -> Clock {
        Clock::default()
    }

    /// A clock whose local readings are `skew_ms` off, as on a machine whose clock is wrong (for
    /// fault tests: once synced, it must read the same as any other instance's).
    pub fn with_local_skew(skew_ms: i64) -> Clock {
        Clock(Arc::new(Inner { local_skew_ms: skew_ms, ..Inner::default() }))
    }

    fn local_ms(&self) -> i64 {
        let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        i64::try_from(since.as_millis()).unwrap_or(i64::MAX) + self.0.local_skew_ms
    }

    /// Now, Unix ms, by Redis's clock.
    pub fn now_ms(&self) -> i64 {
        self.local_ms() + self.0.offset_ms.load(Ordering::Relaxed)
    }

    /// Now, by Redis's clock (with the local clock's sub-millisecond precision).
    pub fn now(&self) -> DateTime<Utc> {
        let shift = self.0.local_skew_ms + self.0.offset_ms.load(Ordering::Relaxed);
        Utc::now() + TimeDelta::milliseconds(shift)
    }

    /// Whether the offset was ever measured.
    pub fn is_synced(&self) -> bool {
        self.0.synced.load(Ordering::Relaxed)
    }

    /// The offset last measured (Redis minus local), ms.
    pub fn offset_ms(&self) -> i64 {
        self.0.offset_ms.load(Ordering::Relaxed)
    }

    /// Measures the offset: Redis's `TIME` against the local clock at the middle of the round
    /// trip (its error is at most half the round trip, well under a millisecond on a LAN).
    pub async fn sync(&self, conn: &mut impl ConnectionLike) -> redis::RedisResult<()> {
        let before = self.local_ms();
        let (secs, micros): (i64, i64) = redis::cmd("TIME").query_async(conn).await?;
        let after = self.local_ms();
        let redis_ms = secs * 1000 + micros / 1000;
        self.0.offset_ms.store(redis_ms - (before + after) / 2, Ordering::Relaxed);
        self.0.synced.store(true, Ordering::Relaxed);
        Ok(())
    }
}
