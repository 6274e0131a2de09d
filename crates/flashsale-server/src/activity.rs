//! What happens to each batch, second by second, for its sale report: counted in memory on the
//! paths where it happens (admission steps, joins, rate limits, final answers) and added to
//! PostgreSQL's `batch_activity` once a second by the `activity` job. Each instance adds only its
//! own counts, so the table holds the sum over instances; the report reads it long after Redis
//! has let the batch go.
//!
//! Memory is bounded: one entry per batch and second between two flushes, and a flush that
//! fails keeps its entries for the next one only up to [`MAX_PENDING`].

use std::collections::HashMap;
use std::sync::Mutex;

use flashsale_core::{BatchNo, SaleId};
use flashsale_queue::Admitted;
use flashsale_sales::activity::SecondCounts;

/// Entries kept while PostgreSQL cannot take them; beyond it the oldest are dropped (logged).
pub const MAX_PENDING: usize = 100_000;

type Key = (SaleId, BatchNo, i64);

/// Per-second counts waiting for the next flush.
#[derive(Debug, Default)]
pub struct Activity {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    seconds: HashMap<Key, SecondCounts>,
    /// The ledger's epoch and the serving counter after this instance's last step per batch: a
    /// step of the same epoch that admits a ticket at or below it admitted out of order (a
    /// rebuild puts the counter back under a new epoch, to re-offer turns the loss took).
    last_serving: HashMap<(SaleId, BatchNo), (u64, u64)>,
}

impl Activity {
    fn with(&self, sale: SaleId, batch: BatchNo, now_ms: i64, add: impl FnOnce(&mut SecondCounts)) {
        let mut inner = self.inner.lock().expect("never poisoned");
        add(inner.seconds.entry((sale, batch, now_ms.div_euclid(1000))).or_default());
    }

    /// One admission step of this instance. `first_wave`: the buyers the batch's stock could
    /// serve at once (stock × oversubscription); admissions past it went to units that came back.
    pub fn admission(&self, sale: SaleId, batch: BatchNo, now_ms: i64, step: &Admitted, first_wave: u64) {
        let mut inner = self.inner.lock().expect("never poisoned");
        let out_of_order = if step.admitted > 0 {
            let first = step.serving - step.admitted + 1;
            let before = inner.last_serving.insert((sale, batch), (step.epoch, step.serving));
            u64::from(before.is_some_and(|(epoch, last)| epoch == step.epoch && first <= last))
        } else {
            0
        };
        if step.admitted == 0 && step.lapsed == 0 {
            return;
        }
        let counts = inner.seconds.entry((sale, batch, now_ms.div_euclid(1000))).or_default();
        counts.admitted += step.admitted;
        counts.lapsed += step.lapsed;
        counts.out_of_order += out_of_order;
        if step.admitted > 0 {
            let first = step.serving - step.admitted + 1;
            counts.reoffered += step.serving.saturating_sub(first_wave.max(first - 1));
            counts.first_ticket = Some(counts.first_ticket.map_or(first, |t| t.min(first)));
            counts.last_ticket = Some(counts.last_ticket.map_or(step.serving, |t| t.max(step.serving)));
        }
    }

    /// A join: `taken` when it took a new place, refused otherwise.
    pub fn join(&self, sale: SaleId, batch: BatchNo, now_ms: i64, taken: bool) {
        self.with(sale, batch, now_ms, |c| if taken { c.joins += 1 } else { c.joins_refused += 1 });
    }

    /// A queue request answered 429.
    pub fn rate_limited(&self, sale: SaleId, batch: BatchNo, now_ms: i64) {
        self.with(sale, batch, now_ms, |c| c.rate_limited += 1);
    }

    /// A join whose proof of work failed (wrong, expired, reused, foreign, forged; not missing).
    pub fn pow_failed(&self, sale: SaleId, batch: BatchNo, now_ms: i64) {
        self.with(sale, batch, now_ms, |c| c.pow_failed += 1);
    }

    /// A buyer told their final answer (sold out, closed) for the first time.
    pub fn told_final(&self, sale: SaleId, batch: BatchNo, now_ms: i64) {
        self.with(sale, batch, now_ms, |c| c.told_final += 1);
    }

    /// Everything counted since the last take, for the flush.
    pub fn take(&self) -> Vec<(SaleId, BatchNo, i64, SecondCounts)> {
        let mut inner = self.inner.lock().expect("never poisoned");
        if inner.last_serving.len() > 10_000 {
            // Batches long finished; a step of a live one re-learns its counter.
            inner.last_serving.clear();
        }
        inner.seconds.drain().map(|((sale, batch, second), counts)| (sale, batch, second, counts)).collect()
    }

    /// Gives back what a failed flush could not write, to be added at the next one.
    pub fn put_back(&self, rows: Vec<(SaleId, BatchNo, i64, SecondCounts)>) {
        let mut inner = self.inner.lock().expect("never poisoned");
        for (sale, batch, second, counts) in rows {
            if inner.seconds.len() >= MAX_PENDING {
                tracing::error!(kept = MAX_PENDING, "batch activity could not be written for long; dropping the rest");
                metrics::counter!("activity_dropped_total").increment(1);
                return;
            }
            inner.seconds.entry((sale, batch, second)).or_default().add(&counts);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> (SaleId, BatchNo) {
        (SaleId::try_from(1).unwrap(), BatchNo::FIRST)
    }

    fn step(admitted: u64, serving: u64) -> Admitted {
        Admitted { admitted, serving, ..Admitted::default() }
    }

    #[test]
    fn steps_add_up_per_second_and_a_step_behind_the_last_is_out_of_order() {
        let (sale, batch) = ids();
        let activity = Activity::default();
        activity.admission(sale, batch, 1_000, &step(5, 5), 8);
        activity.admission(sale, batch, 1_900, &step(5, 10), 8);
        activity.admission(sale, batch, 2_100, &step(2, 12), 8);
        // A step whose first ticket (11) is at or below the last one seen (12).
        activity.admission(sale, batch, 2_200, &step(2, 12), 8);
        // A rebuild (a new epoch) puts the counter back: re-admitting is not out of order.
        activity.admission(sale, batch, 2_300, &Admitted { epoch: 2, ..step(2, 12) }, 8);
        let mut rows = activity.take();
        rows.sort_by_key(|r| r.2);
        let first = &rows[0].3;
        assert_eq!((rows[0].2, first.admitted, first.reoffered), (1, 10, 2));
        assert_eq!((first.first_ticket, first.last_ticket, first.out_of_order), (Some(1), Some(10), 0));
        let second = &rows[1].3;
        assert_eq!((second.admitted, second.reoffered, second.out_of_order), (6, 6, 1));
        assert!(activity.take().is_empty(), "taken once");
    }

    #[test]
    fn what_a_failed_flush_gives_back_is_added_to_what_came_since() {
        let (sale, batch) = ids();
        let activity = Activity::default();
        activity.join(sale, batch, 500, true);
        let rows = activity.take();
        activity.join(sale, batch, 700, false);
        activity.put_back(rows);
        let rows = activity.take();
        assert_eq!(rows.len(), 1);
        assert_eq!((rows[0].3.joins, rows[0].3.joins_refused), (1, 1));
    }
}
