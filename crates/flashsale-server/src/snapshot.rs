//! What status polls, the public views and the admission ticker read instead of asking
//! PostgreSQL and Redis each time: each sale's current batch with its live state, cached per
//! instance for a few hundred milliseconds, and each batch's queue counters and ledger, cached
//! for a few milliseconds. The service layer fills these caches (`crate::service::sales`,
//! `crate::service::queue`); the state holds them.

use chrono::{DateTime, Utc};
use flashsale_core::SaleId;
use flashsale_inventory::LedgerSnapshot;
use flashsale_queue::{Counters, QueueStats};
use flashsale_sales::{Batch, BatchStatus, Sale, Stock, store};

use crate::cache::TtlCache;

/// A sale's current batch with its live state.
#[derive(Debug, Clone)]
pub struct Live {
    /// The batch as stored.
    pub batch: Batch,
    /// Its ledger, if Redis has one.
    pub ledger: Option<LedgerSnapshot>,
    /// Its queue counters.
    pub queue: QueueStats,
    /// Its final numbers, once it is retired (its Redis keys expire then).
    pub final_stats: Option<store::FinalStats>,
    /// While every unit is held: when the first hold ends (Unix ms), the earliest a unit can
    /// come back.
    pub next_release_ms: Option<i64>,
    /// The commitment to the batch's draw seed (`flashsale_queue::seed_commitment`), computed
    /// once per snapshot load rather than on every public view it serves.
    pub draw_commitment: String,
}

impl Live {
    /// The batch's status at `now`.
    pub fn status(&self, sale: &Sale, now: DateTime<Utc>) -> BatchStatus {
        self.batch.status(sale.config.prequeue_opens_at(self.batch.opens_at), now, self.stock())
    }

    /// What the ledger says of the stock (`Left` when there is no ledger to ask).
    pub fn stock(&self) -> Stock {
        match self.ledger {
            Some(l) if l.is_sold_out() => Stock::SoldOut,
            Some(l) if l.is_all_held() => Stock::AllHeld,
            _ => Stock::Left,
        }
    }
}

/// What public views are built from: sales with their current batch and its live state.
pub type PublicSnapshot = Vec<(Sale, Live)>;

/// Public views, keyed by sale (`None`: the list). Admin changes on this instance invalidate the
/// sale's entries at once; other instances see them within the TTL (by default 500 ms).
pub type PublicCache = TtlCache<Option<SaleId>, PublicSnapshot>;

impl PublicCache {
    /// Forgets what is cached about `sale` (and the list, which includes it).
    pub fn invalidate(&self, sale: SaleId) {
        self.remove(&Some(sale));
        self.remove(&None);
    }
}

/// A batch's serving counter and stock, as reused by status polls.
#[derive(Debug, Clone, Copy)]
pub struct BatchCounters {
    pub queue: Counters,
    pub ledger: Option<LedgerSnapshot>,
    /// While every unit is held: when the first hold ends (Unix ms).
    pub next_release_ms: Option<i64>,
}
