//! The order record, what creating one needs, and the idempotency key that makes it exactly once.

use chrono::{DateTime, Utc};
use flashsale_core::{BatchNo, Cents, Currency, Epoch, Quantity, ReservationId, SaleId, Ticket, Units, UserId};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::{OrderId, OrderStatus, PaymentRef};

/// An order, as stored and as the buyer sees it (the internal links to Redis are not sent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Order {
    pub id: OrderId,
    pub sale_id: SaleId,
    pub batch_no: BatchNo,
    pub status: OrderStatus,
    #[schema(value_type = u32, example = 1)]
    pub quantity: Units,
    /// Price × quantity, in the currency's minor unit.
    #[schema(value_type = i64, example = 499_900)]
    pub amount_cents: Cents,
    #[schema(value_type = String, example = "CNY")]
    pub currency: Currency,
    pub created_at: DateTime<Utc>,
    /// Pay before this or the units go back to other buyers.
    pub expires_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paid_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub payment_ref: Option<PaymentRef>,
    /// The buyer (never sent: the buyer knows who they are, and nobody else sees the order).
    #[serde(skip)]
    pub user: UserId,
    /// The Redis reservation holding the units.
    #[serde(skip)]
    pub reservation_id: ReservationId,
}

/// What the order writer stores for a reservation just made.
#[derive(Debug, Clone)]
pub struct NewOrder {
    pub sale_id: SaleId,
    pub batch_no: BatchNo,
    pub user: UserId,
    pub quantity: Quantity,
    /// Price × quantity.
    pub amount_cents: Cents,
    pub currency: Currency,
    pub reservation_id: ReservationId,
    /// The admission ticket the reservation consumed.
    pub ticket: Ticket,
    /// The batch epoch the reservation was made in (see [`crate::book`]'s fence).
    pub epoch: Epoch,
    pub idempotency_key: IdempotencyKey,
    /// What the request asked, for refusing the key's reuse with another request.
    pub fingerprint: Fingerprint,
    pub expires_at: DateTime<Utc>,
}

/// A client's `Idempotency-Key`: 1–255 visible ASCII characters, scoped to the buyer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

/// Why a header is not an idempotency key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("Idempotency-Key must be 1 to 255 visible ASCII characters")]
pub struct InvalidIdempotencyKey;

impl IdempotencyKey {
    /// The key as sent.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<&str> for IdempotencyKey {
    type Error = InvalidIdempotencyKey;
    fn try_from(key: &str) -> Result<IdempotencyKey, InvalidIdempotencyKey> {
        if (1..=255).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic()) {
            Ok(IdempotencyKey(key.to_owned()))
        } else {
            Err(InvalidIdempotencyKey)
        }
    }
}

/// SHA-256 of what a request asked for, so that a key reused for another request is noticed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// The fingerprint of `parts`, each length-prefixed so that no two different lists collide.
    pub fn of(parts: &[&[u8]]) -> Fingerprint {
        let mut hash = Sha256::new();
        for part in parts {
            hash.update(u64::try_from(part.len()).unwrap_or(u64::MAX).to_be_bytes());
            hash.update(part);
        }
        Fingerprint(hash.finalize().into())
    }

    /// Lower-case hex.
    pub fn hex(&self) -> String {
        flashsale_core::hex(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_visible_ascii_of_bounded_length() {
        assert!(IdempotencyKey::try_from("a").is_ok());
        assert!(IdempotencyKey::try_from("0c6f1a2e-5b7d-4a8e-9f00-123456789abc").is_ok());
        assert!(IdempotencyKey::try_from("x".repeat(255).as_str()).is_ok());
        for bad in ["", "has space", "tab\t", "é", &"x".repeat(256)] {
            assert_eq!(IdempotencyKey::try_from(bad), Err(InvalidIdempotencyKey), "{bad:?}");
        }
    }

    #[test]
    fn fingerprints_separate_parts() {
        assert_ne!(Fingerprint::of(&[b"ab", b"c"]), Fingerprint::of(&[b"a", b"bc"]));
        assert_eq!(Fingerprint::of(&[b"ab", b"c"]), Fingerprint::of(&[b"ab", b"c"]));
    }
}
