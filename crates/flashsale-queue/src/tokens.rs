//! The signed tokens of the queue: the buyer's ticket, the admission token, and the stream token
//! that opens an event stream from a browser.

use flashsale_core::{AdmissionStep, BatchNo, SaleId, Ticket, UserId};
use serde::{Deserialize, Serialize};

use crate::signing::Signer;

/// A buyer's place, signed and handed to the client after joining; sent back on every status
/// poll so the server knows the place without asking Redis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketClaims {
    /// The buyer.
    pub user: UserId,
    pub sale: SaleId,
    pub batch: BatchNo,
    /// Place in the queue (1-based); `None` while the pre-queue's order is not drawn yet.
    pub number: Option<Ticket>,
    /// Set once admitted: the admission step and when the admission expires.
    pub admission: Option<AdmissionWindow>,
    /// Set once the buyer was told their final answer (sold out, closed): the server counts each
    /// buyer told once, for the sale report, without remembering anyone.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub told: bool,
}

/// When an admitted buyer's turn ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdmissionWindow {
    /// The admission step (its last ticket), which the reservation reports back to.
    pub step: AdmissionStep,
    /// Unix milliseconds (Redis's clock) after which the turn is lost.
    pub expires_at_ms: i64,
}

/// The single-use right to reserve, bound to one buyer, sale, batch and ticket.
///
/// Its unique id is the ticket number: every ticket of a batch is admitted at most once, so the
/// inventory step can consume `(batch, ticket)` to make the token single use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdmissionClaims {
    pub user: UserId,
    pub sale: SaleId,
    pub batch: BatchNo,
    /// The admitted ticket: the token's unique id within the batch.
    pub ticket: Ticket,
    /// The admission step the ticket belongs to.
    pub step: AdmissionStep,
    /// Unix milliseconds after which the token is refused.
    pub expires_at_ms: i64,
}

/// The right to open one buyer's event stream for one sale, for a minute.
///
/// A browser's `EventSource` cannot send an `Authorization` header, and the buyer's JWT (long-lived,
/// good for orders) must not go into a URL, where proxies and logs keep it. The page trades the JWT
/// for this token (`POST /sales/{id}/queue/stream-token`) and puts it in the stream's URL: it
/// opens nothing but that buyer's stream of that sale, and only for a minute (the browser's own
/// reconnects within the minute reuse it; after it the page asks for another).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamClaims {
    pub user: UserId,
    pub sale: SaleId,
    /// Unix milliseconds (Redis's clock) after which the token opens nothing.
    pub expires_at_ms: i64,
}

/// Why an admission token is refused. The API answers all of them with 403 `token_invalid`; the
/// variants exist for logs and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not signed by this deployment (forged, tampered, truncated, another kind of token).
    #[error("the admission token is not valid")]
    Forged,
    /// Signed, but for another buyer.
    #[error("the admission token belongs to another buyer")]
    WrongUser,
    /// Signed, but for another sale or batch.
    #[error("the admission token is for another sale or batch")]
    WrongSale,
    /// Signed, but its time is up.
    #[error("the admission token has expired")]
    Expired,
}

/// Signs and checks tickets, admission tokens and stream tokens, each with its own derived key.
#[derive(Debug, Clone)]
pub struct Tokens {
    ticket: Signer,
    admission: Signer,
    stream: Signer,
}

impl Tokens {
    /// Keys derived from the deployment's secret (`FLASHSALE_JWT_SECRET`).
    pub fn new(secret: &[u8]) -> Tokens {
        Tokens {
            ticket: Signer::new(secret, "queue-ticket"),
            admission: Signer::new(secret, "admission-token"),
            stream: Signer::new(secret, "stream-token"),
        }
    }

    /// The stream token for `claims`.
    pub fn sign_stream(&self, claims: &StreamClaims) -> String {
        self.stream.sign(claims)
    }

    /// The buyer a stream token opens `sale`'s event stream for at `now_ms`, if it is genuine,
    /// for that sale and not expired.
    pub fn verify_stream(&self, token: &str, sale: SaleId, now_ms: i64) -> Option<UserId> {
        let claims: StreamClaims = self.stream.verify(token)?;
        (claims.sale == sale && now_ms < claims.expires_at_ms).then_some(claims.user)
    }

    /// The ticket as a string for the client.
    pub fn sign_ticket(&self, ticket: &TicketClaims) -> String {
        self.ticket.sign(ticket)
    }

    /// The ticket in `token` if it is genuine and belongs to this buyer and batch.
    pub fn verify_ticket(&self, token: &str, user: &UserId, sale: SaleId, batch: BatchNo) -> Option<TicketClaims> {
        self.ticket.verify::<TicketClaims>(token).filter(|t| &t.user == user && t.sale == sale && t.batch == batch)
    }

    /// The admission token for `claims`.
    pub fn sign_admission(&self, claims: &AdmissionClaims) -> String {
        self.admission.sign(claims)
    }

    /// Checks an admission token presented by `user` for `sale`/`batch` at `now_ms`.
    pub fn verify_admission(
        &self,
        token: &str,
        user: &UserId,
        sale: SaleId,
        batch: BatchNo,
        now_ms: i64,
    ) -> Result<AdmissionClaims, TokenError> {
        let claims = self.open_admission(token, user, sale, batch)?;
        if now_ms >= claims.expires_at_ms {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }

    /// The claims of a genuine admission token of `user` for `sale`/`batch`, whatever its expiry.
    /// A pause or an outage extends a turn after its token was signed: the caller of an expired
    /// token asks the queue for the turn's current end (`Queue::admission`) before refusing it.
    pub fn open_admission(
        &self,
        token: &str,
        user: &UserId,
        sale: SaleId,
        batch: BatchNo,
    ) -> Result<AdmissionClaims, TokenError> {
        let claims: AdmissionClaims = self.admission.verify(token).ok_or(TokenError::Forged)?;
        if &claims.user != user {
            return Err(TokenError::WrongUser);
        }
        if claims.sale != sale || claims.batch != batch {
            return Err(TokenError::WrongSale);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(s: &str) -> UserId {
        UserId::try_from(s.to_owned()).unwrap()
    }

    fn ids() -> (SaleId, BatchNo) {
        (SaleId::try_from(1).unwrap(), BatchNo::FIRST)
    }

    fn claims(expires_at_ms: i64) -> AdmissionClaims {
        let (sale, batch) = ids();
        AdmissionClaims { user: user("alice"), sale, batch, ticket: Ticket(7), step: AdmissionStep(10), expires_at_ms }
    }

    #[test]
    fn a_stream_token_opens_only_its_sale_and_only_until_it_expires() {
        let tokens = Tokens::new(b"secret");
        let (sale, _) = ids();
        let claims = StreamClaims { user: user("alice"), sale, expires_at_ms: 2_000 };
        let token = tokens.sign_stream(&claims);
        assert_eq!(tokens.verify_stream(&token, sale, 1_999), Some(user("alice")));
        assert_eq!(tokens.verify_stream(&token, sale, 2_000), None);
        assert_eq!(tokens.verify_stream(&token, SaleId::try_from(2).unwrap(), 1_000), None);
        // Neither a forged one nor another kind of token (a ticket) opens a stream.
        assert_eq!(tokens.verify_stream(&Tokens::new(b"guess").sign_stream(&claims), sale, 1_000), None);
        let ticket = TicketClaims {
            user: user("alice"),
            sale,
            batch: BatchNo::FIRST,
            number: None,
            admission: None,
            told: false,
        };
        assert_eq!(tokens.verify_stream(&tokens.sign_ticket(&ticket), sale, 1_000), None);
    }

    #[test]
    fn a_genuine_admission_token_verifies_for_its_buyer_sale_and_batch() {
        let tokens = Tokens::new(b"secret");
        let (sale, batch) = ids();
        let token = tokens.sign_admission(&claims(2_000));
        assert_eq!(tokens.verify_admission(&token, &user("alice"), sale, batch, 1_000), Ok(claims(2_000)));
    }

    #[test]
    fn forged_tampered_expired_and_misdirected_admission_tokens_are_refused() {
        let tokens = Tokens::new(b"secret");
        let (sale, batch) = ids();
        let token = tokens.sign_admission(&claims(2_000));
        let other_sale = SaleId::try_from(2).unwrap();
        let forged = Tokens::new(b"guess").sign_admission(&claims(2_000));
        let mut tampered = token.clone();
        tampered.insert(3, 'x');
        let ticket_not_admission = tokens.sign_ticket(&TicketClaims {
            user: user("alice"),
            sale,
            batch,
            number: Some(Ticket(7)),
            admission: None,
            told: false,
        });
        let alice = user("alice");
        assert_eq!(tokens.verify_admission(&forged, &alice, sale, batch, 1_000), Err(TokenError::Forged));
        assert_eq!(tokens.verify_admission(&tampered, &alice, sale, batch, 1_000), Err(TokenError::Forged));
        assert_eq!(tokens.verify_admission(&ticket_not_admission, &alice, sale, batch, 1_000), Err(TokenError::Forged));
        assert_eq!(tokens.verify_admission(&token, &user("bob"), sale, batch, 1_000), Err(TokenError::WrongUser));
        assert_eq!(tokens.verify_admission(&token, &alice, other_sale, batch, 1_000), Err(TokenError::WrongSale));
        assert_eq!(tokens.verify_admission(&token, &alice, sale, batch.next(), 1_000), Err(TokenError::WrongSale));
        assert_eq!(tokens.verify_admission(&token, &alice, sale, batch, 2_000), Err(TokenError::Expired));
    }

    #[test]
    fn tickets_of_another_buyer_or_batch_are_ignored() {
        let tokens = Tokens::new(b"secret");
        let (sale, batch) = ids();
        let ticket =
            TicketClaims { user: user("alice"), sale, batch, number: Some(Ticket(3)), admission: None, told: false };
        let token = tokens.sign_ticket(&ticket);
        assert_eq!(tokens.verify_ticket(&token, &user("alice"), sale, batch), Some(ticket));
        assert_eq!(tokens.verify_ticket(&token, &user("bob"), sale, batch), None);
        assert_eq!(tokens.verify_ticket(&token, &user("alice"), sale, batch.next()), None);
    }
}
