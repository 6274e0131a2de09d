//! How fast buyers are joining each batch, for an adaptive proof of work: estimated on each
//! instance from the batch's queue length (the same counters every instance reads, so every
//! instance sees the whole deployment's rate, not only its own joins), over windows of at least
//! [`WINDOW_MS`].

use std::collections::HashMap;
use std::sync::Mutex;

use flashsale_core::{BatchNo, SaleId};

/// The shortest window a rate is measured over.
pub const WINDOW_MS: i64 = 2_000;

/// Per batch: where the current window started (queue length, ms) and the last window's rate.
#[derive(Debug, Default)]
pub struct JoinRates {
    batches: Mutex<HashMap<(SaleId, BatchNo), Window>>,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    queued: u64,
    since_ms: i64,
    rate: f64,
}

impl JoinRates {
    /// Records that the batch's queue holds `queued` buyers at `now_ms`; returns the joins per
    /// second of the last whole window (0 until one has passed).
    pub fn observe(&self, sale: SaleId, batch: BatchNo, queued: u64, now_ms: i64) -> f64 {
        let mut batches = self.batches.lock().expect("never poisoned");
        if batches.len() > 10_000 {
            // Batches long finished; live ones start a new window.
            batches.clear();
        }
        let window = batches.entry((sale, batch)).or_insert(Window { queued, since_ms: now_ms, rate: 0.0 });
        let elapsed = now_ms - window.since_ms;
        if elapsed >= WINDOW_MS {
            window.rate = queued.saturating_sub(window.queued) as f64 * 1000.0 / elapsed as f64;
            window.queued = queued;
            window.since_ms = now_ms;
        }
        window.rate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_is_the_growth_of_the_queue_over_the_last_window() {
        let rates = JoinRates::default();
        let (sale, batch) = (SaleId::try_from(1).unwrap(), BatchNo::FIRST);
        assert_eq!(rates.observe(sale, batch, 0, 0), 0.0);
        assert_eq!(rates.observe(sale, batch, 500, 1_000), 0.0, "the window has not passed");
        assert_eq!(rates.observe(sale, batch, 4_000, 2_000), 2_000.0);
        assert_eq!(rates.observe(sale, batch, 4_100, 3_000), 2_000.0, "kept until the next window ends");
        assert_eq!(rates.observe(sale, batch, 4_200, 4_000), 100.0);
    }
}
