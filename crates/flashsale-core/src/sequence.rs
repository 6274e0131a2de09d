//! Numbers a batch hands out in order: tickets, admission steps, reservation ids and epochs.
//!
//! All four are counters kept in Redis (and, for reservation ids, tickets and epochs, copied
//! into PostgreSQL) that start at 1 and only grow. They are all `u64` underneath, which is why
//! they get types: a ticket passed where an admission step is expected, or a reservation id
//! where an epoch is, would compile and be wrong in the quietest way.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A stored or replied integer that cannot be a sequence number (negative).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0} is not a sequence number (negative)")]
pub struct NegativeSequence(pub i64);

macro_rules! sequence_number {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub u64);

        impl $name {
            /// The number.
            pub const fn get(self) -> u64 {
                self.0
            }

            /// The number as PostgreSQL's `bigint` and Redis's integers keep it (these counters
            /// never come near `i64::MAX`; one that did would be kept as the maximum rather than
            /// wrap around to a negative number).
            pub fn to_i64(self) -> i64 {
                i64::try_from(self.0).unwrap_or(i64::MAX)
            }
        }

        impl TryFrom<i64> for $name {
            type Error = NegativeSequence;
            fn try_from(stored: i64) -> Result<$name, NegativeSequence> {
                u64::try_from(stored).map($name).map_err(|_| NegativeSequence(stored))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

sequence_number! {
    /// A buyer's place in a batch's queue, 1-based: handed out by `join.lua` after the opening,
    /// or drawn for the pre-queue's cohort. Tickets at or below the serving counter are
    /// admitted; each ticket is admitted at most once, so it is also the admission token's
    /// single-use id.
    Ticket
}

sequence_number! {
    /// One pass of admission, named by the last ticket it admitted: `admit.lua` records per step
    /// how many of its tickets are still in flight, and a reservation (or a lapse) reports back
    /// to the step its ticket belongs to, which is how admission knows how many buyers are
    /// still on their way to the stock. 0 for reservations made without a ticket (benchmarks).
    AdmissionStep
}

sequence_number! {
    /// A reservation's id, unique within its batch: handed out by Redis (`reserve.lua`), kept
    /// on the order (`orders.reservation_id`), named by every settlement and by the rebuild.
    /// Redis handing out one PostgreSQL already holds means Redis went back in time.
    ReservationId
}

sequence_number! {
    /// A batch's Redis generation: PostgreSQL's `sale_batches.epoch`, raised by every rebuild
    /// of the batch's Redis state and stamped into its ledger. An order carries the epoch its
    /// reservation was made in; one from an older epoch was made in a Redis that was since
    /// replaced, and PostgreSQL fences it (see the server's recovery service).
    Epoch
}

impl Ticket {
    /// The first ticket of a redeemed priority code's admission (2^52; the code's id is added):
    /// queue tickets never get near it, so such a ticket is never a place in the line. The Lua
    /// prelude's `PRIORITY_TICKETS_FROM` is the same number (a test holds them together): the
    /// scripts route a code's units to and from the codes' allotment by it, and the rebuild keeps
    /// such tickets out of the queue's counters.
    pub const FIRST_PRIORITY: Ticket = Ticket(1 << 52);

    /// Whether this is a priority code's ticket rather than a place in the queue.
    pub const fn is_priority(self) -> bool {
        self.0 >= Ticket::FIRST_PRIORITY.0
    }
}

impl Epoch {
    /// The epoch of a batch whose Redis state was never rebuilt.
    pub const FIRST: Epoch = Epoch(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_numbers_refuse_negative_integers_and_keep_json_as_a_bare_number() {
        assert_eq!(Ticket::try_from(7), Ok(Ticket(7)));
        assert_eq!(Epoch::try_from(-1), Err(NegativeSequence(-1)));
        assert_eq!(ReservationId(u64::MAX).to_i64(), i64::MAX);
        assert_eq!(serde_json::to_string(&Some(Ticket(3))).unwrap(), "3");
        assert_eq!(serde_json::from_str::<AdmissionStep>("12").unwrap(), AdmissionStep(12));
    }
}
