//! An order's id and lifecycle.

use serde::{Deserialize, Serialize};

use crate::OrderError;

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

impl std::fmt::Display for OrderId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Where an order stands.
///
/// ```text
/// pending_payment ──paid──────────▶ paid
///        │ ├──payment failed──────▶ payment_failed ─┐
///        │ ├──buyer cancelled─────▶ cancelled ──────┼──payment arrives anyway──▶ refund_due
///        │ └──deadline passed─────▶ expired ────────┘
/// ```
/// Only `pending_payment` holds units (reserved); `paid` owns them (sold); every other state has
/// given them back. A payment for an order that no longer holds units (late, or after a cancel)
/// never revives it: its units may already be someone else's, so the money is owed back instead.
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
    /// Every status.
    pub const ALL: [OrderStatus; 6] = [
        OrderStatus::PendingPayment,
        OrderStatus::Paid,
        OrderStatus::PaymentFailed,
        OrderStatus::Cancelled,
        OrderStatus::Expired,
        OrderStatus::RefundDue,
    ];

    /// Whether the lifecycle allows moving from `self` to `next`.
    pub fn can_become(self, next: OrderStatus) -> bool {
        use OrderStatus::*;
        matches!(
            (self, next),
            (PendingPayment, Paid | PaymentFailed | Cancelled | Expired)
                | (Expired | Cancelled | PaymentFailed, RefundDue)
        )
    }

    /// Whether an order in this state holds units back from other buyers.
    pub fn holds_units(self) -> bool {
        matches!(self, OrderStatus::PendingPayment | OrderStatus::Paid)
    }

    /// `next` if the lifecycle allows it, the reason otherwise.
    pub fn transition(self, next: OrderStatus) -> Result<OrderStatus, OrderError> {
        if self.can_become(next) { Ok(next) } else { Err(OrderError::InvalidTransition { from: self, to: next }) }
    }

    /// The name stored in `orders.status` (and sent on the wire).
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::PendingPayment => "pending_payment",
            OrderStatus::Paid => "paid",
            OrderStatus::PaymentFailed => "payment_failed",
            OrderStatus::Cancelled => "cancelled",
            OrderStatus::Expired => "expired",
            OrderStatus::RefundDue => "refund_due",
        }
    }

    /// The status stored as `name`, if it is one.
    pub fn parse(name: &str) -> Option<OrderStatus> {
        OrderStatus::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

#[cfg(test)]
mod tests {
    use super::OrderStatus::*;
    use super::*;

    #[test]
    fn only_pending_orders_move_and_unit_less_ones_only_to_refund() {
        for from in OrderStatus::ALL {
            for to in OrderStatus::ALL {
                let allowed = from.can_become(to);
                let expected = (from == PendingPayment && [Paid, PaymentFailed, Cancelled, Expired].contains(&to))
                    || ([Expired, Cancelled, PaymentFailed].contains(&from) && to == RefundDue);
                assert_eq!(allowed, expected, "{from:?} -> {to:?}");
                assert_eq!(from.transition(to).is_ok(), expected);
            }
        }
    }

    #[test]
    fn a_paid_order_is_never_revived_or_refunded_by_the_lifecycle() {
        assert!(!Paid.can_become(PendingPayment));
        assert!(!Paid.can_become(RefundDue));
        assert!(!Expired.can_become(Paid));
        assert!(Paid.holds_units() && PendingPayment.holds_units() && !Expired.holds_units());
    }

    #[test]
    fn stored_names_match_the_wire_and_round_trip() {
        for status in OrderStatus::ALL {
            assert_eq!(serde_json::to_string(&status).unwrap(), format!("\"{}\"", status.as_str()));
            assert_eq!(OrderStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(OrderStatus::parse("shipped"), None);
    }
}
