//! The payment provider's notices: how they are authenticated and what they can do to an order.

use flashsale_core::Cents;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::OrderStatus;

/// The header the provider signs its notices in: `sha256=<hex HMAC-SHA256 of the raw body>`.
pub const SIGNATURE_HEADER: &str = "x-signature";

/// Whether `header` is the signature of `body` under `secret`. The comparison takes the same time
/// wherever the first wrong byte is, so the signature cannot be guessed byte by byte.
pub fn signature_is_valid(secret: &[u8], body: &[u8], header: &str) -> bool {
    let Some(hex) = header.trim().strip_prefix("sha256=") else { return false };
    let Some(claimed) = decode_hex(hex) else { return false };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(body);
    mac.verify_slice(&claimed).is_ok()
}

/// `sha256=<hex>` for `body`: what a provider (or the load harness, or a test) sends.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(body);
    format!("sha256={}", flashsale_core::hex(&mac.finalize().into_bytes()))
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if hex.len() % 2 != 0 {
        return None;
    }
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok()).collect()
}

/// What the provider says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    Succeeded,
    Failed,
}

impl PaymentStatus {
    /// The name stored in `payments.status`.
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentStatus::Succeeded => "succeeded",
            PaymentStatus::Failed => "failed",
        }
    }
}

/// The payment provider's reference of a payment: 1–255 visible ASCII characters. Notices are
/// idempotent per reference, so it is the key of the `payments` table; anything else is refused
/// as the body is read (422 `validation_failed`), before a row is looked up.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PaymentRef(String);

/// Why a text is not a payment reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("payment_ref must be 1-255 visible ASCII characters")]
pub struct InvalidPaymentRef;

impl PaymentRef {
    /// The reference as sent.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for PaymentRef {
    type Error = InvalidPaymentRef;
    fn try_from(text: String) -> Result<PaymentRef, InvalidPaymentRef> {
        if (1..=255).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_graphic()) {
            Ok(PaymentRef(text))
        } else {
            Err(InvalidPaymentRef)
        }
    }
}

impl From<PaymentRef> for String {
    fn from(reference: PaymentRef) -> String {
        reference.0
    }
}

impl std::fmt::Display for PaymentRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// `POST /payments/callback`'s body.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
pub struct PaymentNotice {
    #[serde(deserialize_with = "flashsale_core::whole::i64")]
    pub order_id: i64,
    /// The provider's id of the payment (1-255 visible ASCII characters); notices are idempotent
    /// per reference.
    #[schema(value_type = String, min_length = 1, max_length = 255)]
    pub payment_ref: PaymentRef,
    /// The amount paid, in the order's currency's minor unit.
    #[serde(deserialize_with = "flashsale_core::Cents::whole")]
    #[schema(value_type = i64)]
    pub amount_cents: Cents,
    pub status: PaymentStatus,
}

/// What a notice did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PaymentOutcome {
    /// In time: the order is paid and its units sold.
    Paid,
    /// The payment failed: the order is `payment_failed` and its units went back.
    PaymentFailed,
    /// The money arrived for an order that no longer holds units (late, cancelled, failed, or
    /// already paid under another reference): it is owed back, the order is not revived.
    RefundDue,
    /// A failure notice for an order that is no longer waiting for payment: nothing to do.
    Ignored,
    /// The amount is not the order's: nothing changed, the notice is kept for people to look at.
    AmountMismatch,
    /// No such order: kept for people to look at.
    UnknownOrder,
}

impl PaymentOutcome {
    /// The name stored in `payments.outcome` and used as the metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentOutcome::Paid => "paid",
            PaymentOutcome::PaymentFailed => "payment_failed",
            PaymentOutcome::RefundDue => "refund_due",
            PaymentOutcome::Ignored => "ignored",
            PaymentOutcome::AmountMismatch => "amount_mismatch",
            PaymentOutcome::UnknownOrder => "unknown_order",
        }
    }
}

/// The answer to a notice (stored, so a replayed notice gets it again).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PaymentReceipt {
    #[schema(value_type = String)]
    pub payment_ref: PaymentRef,
    pub order_id: i64,
    pub outcome: PaymentOutcome,
    /// The order's status after the notice (absent for an unknown order).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order_status: Option<OrderStatus>,
}

/// What the notice decides for an order in `status` whose deadline has (`late`) or has not passed
/// (PostgreSQL's clock, read under the order's row lock), given whether the amount matches.
/// Returns the outcome and the order's new status, if it changes.
pub fn decide(
    notice: PaymentStatus,
    status: OrderStatus,
    late: bool,
    amount_matches: bool,
) -> (PaymentOutcome, Option<OrderStatus>) {
    use OrderStatus as S;
    match notice {
        PaymentStatus::Succeeded if !amount_matches => (PaymentOutcome::AmountMismatch, None),
        PaymentStatus::Succeeded => match status {
            S::PendingPayment if !late => (PaymentOutcome::Paid, Some(S::Paid)),
            // Late: the order expires now and the money is owed back, in one step.
            S::PendingPayment => (PaymentOutcome::RefundDue, Some(S::RefundDue)),
            S::Expired | S::Cancelled | S::PaymentFailed => (PaymentOutcome::RefundDue, Some(S::RefundDue)),
            S::Paid | S::RefundDue => (PaymentOutcome::RefundDue, None),
        },
        PaymentStatus::Failed => match status {
            S::PendingPayment => (PaymentOutcome::PaymentFailed, Some(S::PaymentFailed)),
            _ => (PaymentOutcome::Ignored, None),
        },
    }
}

/// The order a notice names, for the [`PaymentReceipt`].
pub(crate) fn receipt(notice: &PaymentNotice, outcome: PaymentOutcome, status: Option<OrderStatus>) -> PaymentReceipt {
    PaymentReceipt { payment_ref: notice.payment_ref.clone(), order_id: notice.order_id, outcome, order_status: status }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_and_refuse_tampering() {
        let body = br#"{"order_id":1}"#;
        let header = sign(b"secret", body);
        assert!(signature_is_valid(b"secret", body, &header));
        assert!(!signature_is_valid(b"other", body, &header));
        assert!(!signature_is_valid(b"secret", br#"{"order_id":2}"#, &header));
        assert!(!signature_is_valid(b"secret", body, header.trim_start_matches("sha256=")));
        assert!(!signature_is_valid(b"secret", body, "sha256=zz"));
        assert!(!signature_is_valid(b"secret", body, "sha256="));
        assert!(!signature_is_valid(b"secret", body, &header[..header.len() - 2]));
    }

    #[test]
    fn a_late_or_repeated_payment_never_revives_an_order() {
        use OrderStatus as S;
        assert_eq!(
            decide(PaymentStatus::Succeeded, S::PendingPayment, false, true),
            (PaymentOutcome::Paid, Some(S::Paid))
        );
        assert_eq!(
            decide(PaymentStatus::Succeeded, S::PendingPayment, true, true),
            (PaymentOutcome::RefundDue, Some(S::RefundDue))
        );
        for gone in [S::Expired, S::Cancelled, S::PaymentFailed] {
            assert_eq!(decide(PaymentStatus::Succeeded, gone, false, true).1, Some(S::RefundDue));
        }
        assert_eq!(decide(PaymentStatus::Succeeded, S::Paid, false, true), (PaymentOutcome::RefundDue, None));
        assert_eq!(
            decide(PaymentStatus::Succeeded, S::PendingPayment, false, false),
            (PaymentOutcome::AmountMismatch, None)
        );
        assert_eq!(decide(PaymentStatus::Failed, S::Paid, false, true), (PaymentOutcome::Ignored, None));
        for status in OrderStatus::ALL {
            for late in [false, true] {
                for matches in [false, true] {
                    for notice in [PaymentStatus::Succeeded, PaymentStatus::Failed] {
                        if let (_, Some(next)) = decide(notice, status, late, matches) {
                            // Every change is one the lifecycle allows (a late payment on a
                            // pending order is its expiry and the refund at once).
                            let direct = status.can_become(next);
                            let via_expiry = status.can_become(S::Expired) && S::Expired.can_become(next);
                            assert!(direct || via_expiry, "{status:?} -> {next:?}");
                        }
                    }
                }
            }
        }
    }
}
