//! Sales and batches as stored, and a batch's status at a given instant.

use chrono::{DateTime, Utc};
use flashsale_core::{BatchNo, EntrantKey, Epoch, PrequeueSeed, SaleId, Units};
use serde::Serialize;

use crate::config::SaleConfig;

/// A sale as stored: its validated configuration plus bookkeeping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sale {
    pub id: SaleId,
    pub config: SaleConfig,
    /// Set when operations closed the sale: no batch opens after this.
    pub ended_at: Option<DateTime<Utc>>,
    /// Bumped by every admin change; the API's ETag.
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// One opening of a sale.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub sale_id: SaleId,
    pub batch_no: BatchNo,
    pub opens_at: DateTime<Utc>,
    /// The end of the batch's window; `None`: until sold out or closed.
    pub closes_at: Option<DateTime<Utc>>,
    /// Units this batch releases.
    pub stock: Units,
    /// Operations paused admission.
    pub paused: bool,
    /// Operations closed the batch before its window ended.
    pub closed_at: Option<DateTime<Utc>>,
    /// Secret seed of the pre-queue draw; committed to from the batch's creation, published once
    /// the cohort is sealed and recorded (see `flashsale_queue::draw`).
    pub prequeue_seed: PrequeueSeed,
    /// Secret key of the pre-queue buyers' draw receipts; never published.
    pub entrant_key: EntrantKey,
    /// Bumped each time the batch's Redis state is rebuilt from PostgreSQL; reservations report
    /// the epoch they were made in, and orders are written only with the current one.
    pub epoch: Epoch,
}

/// 32 bytes from the thread's CSPRNG (ChaCha, seeded by the OS).
fn secret_bytes() -> Vec<u8> {
    let mut bytes = vec![0u8; 32];
    rand::Rng::fill(&mut rand::rng(), &mut bytes[..]);
    bytes
}

/// Where a batch stands, as shoppers and operations see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BatchStatus {
    /// Before the pre-queue: nothing to do yet but count down.
    Scheduled,
    /// Buyers may join the queue; their order is drawn at the opening.
    Prequeue,
    /// Buyers are being admitted.
    Open,
    /// Every unit is in a buyer's cart and none is paid for yet: units come back if a hold
    /// lapses or is cancelled, so the sale is not over (`units_held`, `next_release_at`).
    AllHeld,
    /// Operations stopped admission; buyers keep their places.
    Paused,
    /// Every unit is sold, or held with nothing that could come back.
    SoldOut,
    /// The window ended or operations closed the batch.
    Closed,
}

/// What a batch's live stock (its ledger in Redis, the only place that knows it) says about
/// its status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stock {
    /// Units are available (or the ledger is not known).
    Left,
    /// None available, some held unpaid: they may come back.
    AllHeld,
    /// None available and none held: every unit is paid for.
    SoldOut,
}

impl Batch {
    /// Whether the batch is over for good at `now`: closed by operations or past its window.
    pub fn is_finished(&self, now: DateTime<Utc>) -> bool {
        self.closed_at.is_some() || self.closes_at.is_some_and(|closes| closes <= now)
    }

    /// The batch's status at `now`. `sold_out` comes from the inventory ledger in Redis, the
    /// only place that knows live stock; everything else is decided by the stored row and clock.
    /// A closed batch reports `closed` even if it also sold out; a sold-out batch reports
    /// `sold_out` even while paused, since waiting would not help; a paused one whose units are
    /// all held reports `paused` (operations act first).
    pub fn status(&self, prequeue_opens_at: DateTime<Utc>, now: DateTime<Utc>, stock: Stock) -> BatchStatus {
        if self.is_finished(now) {
            BatchStatus::Closed
        } else if stock == Stock::SoldOut {
            BatchStatus::SoldOut
        } else if self.paused {
            BatchStatus::Paused
        } else if now < prequeue_opens_at {
            BatchStatus::Scheduled
        } else if now < self.opens_at {
            BatchStatus::Prequeue
        } else if stock == Stock::AllHeld {
            BatchStatus::AllHeld
        } else {
            BatchStatus::Open
        }
    }

    /// The first batch of a sale created at `now`.
    pub fn first(sale_id: SaleId, config: &SaleConfig, now: DateTime<Utc>) -> Batch {
        let opens_at = config.first_opening(now);
        Batch {
            sale_id,
            batch_no: BatchNo::FIRST,
            opens_at,
            closes_at: config.batch_closes_at(opens_at),
            stock: config.stock,
            paused: false,
            closed_at: None,
            prequeue_seed: PrequeueSeed::new(secret_bytes()),
            entrant_key: EntrantKey::new(secret_bytes()),
            epoch: Epoch::FIRST,
        }
    }

    /// The batch that follows this one for a weekly sale, opening at the first weekly opening
    /// after `now` (missed weeks, e.g. while every instance was down, are skipped, not replayed).
    /// `None` for a one-off sale.
    pub fn successor(&self, config: &SaleConfig, now: DateTime<Utc>) -> Option<Batch> {
        let crate::config::Schedule::Weekly(weekly) = config.schedule else {
            return None;
        };
        let opens_at = weekly.next_after(now.max(self.opens_at));
        Some(Batch {
            sale_id: self.sale_id,
            batch_no: self.batch_no.next(),
            opens_at,
            closes_at: config.batch_closes_at(opens_at),
            stock: config.stock,
            paused: false,
            closed_at: None,
            prequeue_seed: PrequeueSeed::new(secret_bytes()),
            entrant_key: EntrantKey::new(secret_bytes()),
            epoch: Epoch::FIRST,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;

    fn batch(closes_in: Option<i64>) -> (Batch, DateTime<Utc>) {
        let now = Utc::now();
        let b = Batch {
            sale_id: SaleId::try_from(1).unwrap(),
            batch_no: BatchNo::FIRST,
            opens_at: now + TimeDelta::seconds(60),
            closes_at: closes_in.map(|s| now + TimeDelta::seconds(s)),
            stock: Units::new(10),
            paused: false,
            closed_at: None,
            prequeue_seed: PrequeueSeed::new(secret_bytes()),
            entrant_key: EntrantKey::new(secret_bytes()),
            epoch: Epoch::FIRST,
        };
        (b, now)
    }

    #[test]
    fn status_follows_the_clock_through_the_window() {
        let (b, now) = batch(Some(120));
        let prequeue = b.opens_at - TimeDelta::seconds(30);
        assert_eq!(b.status(prequeue, now, Stock::Left), BatchStatus::Scheduled);
        assert_eq!(b.status(prequeue, now + TimeDelta::seconds(45), Stock::Left), BatchStatus::Prequeue);
        assert_eq!(b.status(prequeue, now + TimeDelta::seconds(60), Stock::Left), BatchStatus::Open);
        assert_eq!(b.status(prequeue, now + TimeDelta::seconds(60), Stock::AllHeld), BatchStatus::AllHeld);
        assert_eq!(b.status(prequeue, now + TimeDelta::seconds(120), Stock::Left), BatchStatus::Closed);
    }

    #[test]
    fn closed_beats_sold_out_beats_paused() {
        let (mut b, now) = batch(None);
        let open = b.opens_at;
        b.paused = true;
        assert_eq!(b.status(open, open, Stock::Left), BatchStatus::Paused);
        assert_eq!(b.status(open, open, Stock::AllHeld), BatchStatus::Paused);
        assert_eq!(b.status(open, open, Stock::SoldOut), BatchStatus::SoldOut);
        b.closed_at = Some(now);
        assert_eq!(b.status(open, open, Stock::SoldOut), BatchStatus::Closed);
    }
}
