//! One look at a batch per tick for every event stream that follows it.
//!
//! An event stream must notice at once when its buyer's state changes for reasons that concern
//! the whole batch: paused, resumed, every unit in a cart, sold out, the reach moving past the
//! buyer's place. Re-checking each stream on its own every fraction of a second costs a look per
//! stream per tick: 100,000 streams, half a million looks a second. Instead one task per watched
//! batch reads the batch's counters every [`PULSE`] (from the same short cache the status polls
//! use) and publishes a [`Signal`], a few flags, on a `tokio::sync::watch` channel only when
//! they change. A stream wakes on the change, checks with a few comparisons whether it concerns
//! its buyer ([`Signal::concerns`]), and only then computes its buyer's state. What only moves
//! one buyer at a time (their place, their turn coming up) each stream looks at on its own
//! clock, paced like the buyer's polls (`poll_after_ms`): often near the front, rarely far back.
//!
//! The task (`service::queue::follow` starts it) runs while anyone follows the batch on this
//! instance and ends after the last stream closes.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use flashsale_core::{BatchNo, SaleId, Ticket};
use tokio::sync::watch;

use crate::snapshot::BatchCounters;

/// How often a followed batch's counters are read.
pub const PULSE: Duration = Duration::from_millis(200);

/// What of a batch concerns every buyer following it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Signal {
    /// Redis holds no ledger for the batch (it is being rebuilt).
    pub missing: bool,
    pub paused: bool,
    pub closed: bool,
    pub sold_out: bool,
    /// Every unit in a cart, none free.
    pub all_held: bool,
    /// Admitted buyers' turns are frozen (a pause, a rebuild, an instance's database outage).
    pub frozen: bool,
    /// The last place a returned unit could still reach (see `admit.lua`).
    pub reach: Option<Ticket>,
}

impl Signal {
    /// The signal of a batch whose counters read `c`.
    pub fn of(c: &BatchCounters) -> Signal {
        let ledger = c.ledger;
        Signal {
            missing: ledger.is_none(),
            paused: ledger.is_some_and(|l| l.paused),
            closed: ledger.is_some_and(|l| l.closed),
            sold_out: ledger.is_some_and(|l| l.is_sold_out()),
            all_held: ledger.is_some_and(|l| l.is_all_held()),
            frozen: c.queue.frozen_since_ms.is_some(),
            reach: c.queue.reach,
        }
    }

    /// Whether going from `self` to `next` may change what the buyer at `place` sees: any flag,
    /// or the reach moving across their place (a reach that moves further back behind them does
    /// not concern them).
    pub fn concerns(&self, next: &Signal, place: Option<u64>) -> bool {
        let flags = |s: &Signal| (s.missing, s.paused, s.closed, s.sold_out, s.all_held, s.frozen);
        let beyond = |s: &Signal, p: u64| s.reach.is_some_and(|r| p > r.get());
        flags(self) != flags(next) || place.is_some_and(|p| beyond(self, p) != beyond(next, p))
    }
}

/// A followed batch.
pub type Key = (SaleId, BatchNo);

/// The batches followed by event streams on this instance, each with its pulse.
#[derive(Debug, Default)]
pub struct Pulses {
    batches: Mutex<HashMap<Key, watch::Sender<Signal>>>,
}

impl Pulses {
    /// Follows a batch: the receiver sees its [`Signal`] change. If nobody on this instance
    /// followed it yet, `start` is handed the sender to start the batch's pulse
    /// (`service::queue::follow`), which ends when [`Pulses::stop_if_unfollowed`] says so.
    pub fn follow(&self, key: Key, start: impl FnOnce(watch::Sender<Signal>)) -> watch::Receiver<Signal> {
        let mut batches = self.batches.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(sender) = batches.get(&key) {
            return sender.subscribe();
        }
        let (sender, receiver) = watch::channel(Signal::default());
        batches.insert(key, sender.clone());
        start(sender);
        receiver
    }

    /// Batches with a running pulse.
    pub fn followed(&self) -> usize {
        self.batches.lock().unwrap_or_else(std::sync::PoisonError::into_inner).len()
    }

    /// Removes the batch's pulse if nobody follows it any more; whether it did (the pulse then
    /// ends). Checked under the same lock `follow` subscribes under, so a stream that arrives as
    /// the last one leaves either finds the pulse running or starts a new one.
    pub fn stop_if_unfollowed(&self, key: Key, sender: &watch::Sender<Signal>) -> bool {
        let mut batches = self.batches.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if sender.receiver_count() > 0 {
            return false;
        }
        batches.remove(&key);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signal_concerns_a_buyer_when_a_flag_changes_or_the_reach_crosses_their_place() {
        let open = Signal::default();
        let held = Signal { all_held: true, reach: Some(Ticket(100)), ..open };
        assert!(open.concerns(&held, Some(5)) && open.concerns(&held, None));
        // The reach moves back from 100 to 50: it passes the buyer at 70, not those at 40 or 120.
        let shrunk = Signal { reach: Some(Ticket(50)), ..held };
        assert!(held.concerns(&shrunk, Some(70)));
        assert!(!held.concerns(&shrunk, Some(40)));
        assert!(!held.concerns(&shrunk, Some(120)));
        assert!(!held.concerns(&shrunk, None));
        assert!(!held.concerns(&held, Some(70)));
    }
}
