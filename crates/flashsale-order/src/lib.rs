//! Orders: the durable record that a buyer holds units and must pay within a window.
//!
//! # Layout
//! - [`OrderId`]: an order's identifier.
//! - [`OrderStatus`]: the lifecycle, with the transitions it allows ([`OrderStatus::can_become`]).
//! - [`OrderError`]: what can go wrong, in the domain's words.
//!
//! PostgreSQL is the source of truth for orders. Creation (exactly once per idempotency key), the
//! payment callback and the expiry worker arrive with the orders issue; this crate fixes the
//! lifecycle they must follow, so that every later piece of code agrees on it.

use serde::{Deserialize, Serialize};

/// An order's id (`orders.id`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(transparent)]
pub struct OrderId(i64);

impl OrderId {
    /// Wraps a stored id.
    pub fn new(id: i64) -> OrderId {
        OrderId(id)
    }

    /// The stored id.
    pub fn get(self) -> i64 {
        self.0
    }
}

/// Where an order stands.
///
/// ```text
/// pending_payment ──paid──────────▶ paid
///        │ ├──payment failed──────▶ payment_failed
///        │ ├──buyer cancelled─────▶ cancelled
///        │ └──deadline passed─────▶ expired ──late payment──▶ refund_due
/// ```
/// Only `pending_payment` holds units (reserved); `paid` owns them (sold); every other state has
/// given them back. A late payment never revives an expired order: its units may already be
/// someone else's, so the money is owed back instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    PendingPayment,
    Paid,
    PaymentFailed,
    Cancelled,
    Expired,
    RefundDue,
}

impl OrderStatus {
    /// Whether the lifecycle allows moving from `self` to `next`.
    pub fn can_become(self, next: OrderStatus) -> bool {
        use OrderStatus::*;
        matches!((self, next), (PendingPayment, Paid | PaymentFailed | Cancelled | Expired) | (Expired, RefundDue))
    }

    /// Whether an order in this state holds units back from other buyers.
    pub fn holds_units(self) -> bool {
        matches!(self, OrderStatus::PendingPayment | OrderStatus::Paid)
    }
}

/// What can go wrong with an order, in the domain's words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderError {
    /// No order with this id belongs to the buyer.
    #[error("order not found")]
    NotFound,
    /// The order's state does not allow the change.
    #[error("an order that is {from:?} cannot become {to:?}")]
    InvalidTransition { from: OrderStatus, to: OrderStatus },
}

impl OrderStatus {
    /// `next` if the lifecycle allows it, the reason otherwise.
    pub fn transition(self, next: OrderStatus) -> Result<OrderStatus, OrderError> {
        if self.can_become(next) { Ok(next) } else { Err(OrderError::InvalidTransition { from: self, to: next }) }
    }
}

#[cfg(test)]
mod tests {
    use super::OrderStatus::*;
    use super::*;

    const ALL: [OrderStatus; 6] = [PendingPayment, Paid, PaymentFailed, Cancelled, Expired, RefundDue];

    #[test]
    fn only_pending_orders_move_and_expired_ones_only_to_refund() {
        for from in ALL {
            for to in ALL {
                let allowed = from.can_become(to);
                let expected = (from == PendingPayment && [Paid, PaymentFailed, Cancelled, Expired].contains(&to))
                    || (from == Expired && to == RefundDue);
                assert_eq!(allowed, expected, "{from:?} -> {to:?}");
                assert_eq!(from.transition(to).is_ok(), expected);
            }
        }
    }

    #[test]
    fn a_paid_order_is_never_revived_or_refunded_by_the_lifecycle() {
        assert!(!Paid.can_become(PendingPayment));
        assert!(!Expired.can_become(Paid));
        assert!(Paid.holds_units() && PendingPayment.holds_units() && !Expired.holds_units());
    }

    #[test]
    fn statuses_use_snake_case_on_the_wire() {
        assert_eq!(serde_json::to_string(&PendingPayment).unwrap(), "\"pending_payment\"");
    }
}
