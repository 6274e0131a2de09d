//! Proof of work on join: each join costs the joiner some CPU, so a thousand accounts in a fast
//! loop cost a thousand times that, while one buyer's phone pays it once.
//!
//! The server hands out a *challenge*: a signed, stateless token bound to the buyer, the sale,
//! the batch, a difficulty and an expiry, with 16 random bytes so no two are alike (no Redis
//! write per challenge). The buyer finds a `solution` (a number) such that
//! SHA-256(challenge || ":" || solution in decimal) starts with `difficulty` zero bits, and sends
//! both with the join. Checking costs one HMAC and one SHA-256 (a few microseconds,
//! BENCHMARKS.md), before any Redis round trip; the join script then spends the challenge, so
//! one challenge buys one join.

use flashsale_core::{BatchNo, SaleId, UserId};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::signing::Signer;

/// The hardest difficulty a sale may ask: 2^28 hashes on average, minutes on a phone.
pub const MAX_BITS: u8 = 28;

/// What a challenge binds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChallengeClaims {
    pub user: UserId,
    pub sale: SaleId,
    pub batch: BatchNo,
    /// Leading zero bits the solution's hash must have.
    pub bits: u8,
    /// Unix ms (Redis's clock) after which the challenge is refused.
    pub expires_at_ms: i64,
    /// 16 random bytes, hex: makes each challenge unique, and is what the join spends.
    pub nonce: String,
}

/// A challenge as handed to a client: solve it, then join with `X-Pow-Challenge: <challenge>`
/// and `X-Pow-Solution: <number>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct IssuedChallenge {
    /// The signed challenge, sent back unchanged.
    pub challenge: String,
    /// Leading zero bits SHA-256(challenge ":" solution) must have (0: any solution does).
    pub bits: u8,
    /// When it stops being accepted.
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

/// Why a join's proof of work is refused. Each is answered with a fresh challenge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PowError {
    /// No challenge or no solution sent (the sale asks for one).
    #[error("this sale asks for a proof of work with each join: solve the challenge and send it")]
    Missing,
    /// Not a challenge this deployment signed (forged, tampered, truncated).
    #[error("the challenge is not one this server issued")]
    Forged,
    /// Issued to another buyer, sale or batch.
    #[error("the challenge was issued for another buyer, sale or batch")]
    Foreign,
    /// Its time is up.
    #[error("the challenge has expired")]
    Expired,
    /// The solution's hash has too few leading zero bits.
    #[error("the solution does not solve the challenge")]
    Wrong,
    /// Already spent on a join.
    #[error("the challenge was already used for a join")]
    Reused,
}

/// Signs and checks challenges with a key of their own.
#[derive(Debug, Clone)]
pub struct Challenges {
    signer: Signer,
}

impl Challenges {
    /// Challenges keyed from the deployment's secret.
    pub fn new(secret: &[u8]) -> Challenges {
        Challenges { signer: Signer::new(secret, "pow-challenge") }
    }

    /// A new challenge for `claims`, as the client gets it.
    pub fn issue(&self, claims: &ChallengeClaims) -> String {
        self.signer.sign(claims)
    }

    /// The challenge's claims if `challenge` is genuine, for this buyer, sale and batch, not
    /// expired at `now_ms`, and solved by `solution`.
    pub fn check(
        &self,
        challenge: &str,
        solution: u64,
        user: &UserId,
        sale: SaleId,
        batch: BatchNo,
        now_ms: i64,
    ) -> Result<ChallengeClaims, PowError> {
        let claims: ChallengeClaims = self.signer.verify(challenge).ok_or(PowError::Forged)?;
        if &claims.user != user || claims.sale != sale || claims.batch != batch {
            return Err(PowError::Foreign);
        }
        if now_ms >= claims.expires_at_ms {
            return Err(PowError::Expired);
        }
        if !solves(challenge, solution, claims.bits) {
            return Err(PowError::Wrong);
        }
        Ok(claims)
    }
}

/// Leading zero bits of `hash`.
fn zero_bits(hash: &[u8]) -> u32 {
    let mut bits = 0;
    for byte in hash {
        if *byte == 0 {
            bits += 8;
        } else {
            return bits + byte.leading_zeros();
        }
    }
    bits
}

/// Whether SHA-256(`challenge` ":" `solution`) starts with `bits` zero bits.
pub fn solves(challenge: &str, solution: u64, bits: u8) -> bool {
    let mut hash = Sha256::new();
    hash.update(challenge.as_bytes());
    hash.update(b":");
    hash.update(solution.to_string().as_bytes());
    zero_bits(&hash.finalize()) >= u32::from(bits)
}

/// The first solution of `challenge` at `bits`, counting up from 0 (what a client does; the
/// harness and the tests use it). About 2^bits hashes.
pub fn solve(challenge: &str, bits: u8) -> u64 {
    (0..).find(|n| solves(challenge, *n, bits)).expect("some solution exists below 2^64")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(bits: u8) -> ChallengeClaims {
        ChallengeClaims {
            user: UserId::try_from("ann".to_owned()).unwrap(),
            sale: SaleId::try_from(1).unwrap(),
            batch: BatchNo::FIRST,
            bits,
            expires_at_ms: 2_000,
            nonce: "00".repeat(16),
        }
    }

    #[test]
    fn zero_bits_count_across_bytes() {
        assert_eq!(zero_bits(&[0xff]), 0);
        assert_eq!(zero_bits(&[0x00, 0x10]), 11);
        assert_eq!(zero_bits(&[0, 0]), 16);
    }

    #[test]
    fn a_solved_challenge_passes_once_and_every_other_answer_is_named() {
        let challenges = Challenges::new(b"secret");
        let c = claims(8);
        let token = challenges.issue(&c);
        let solution = solve(&token, 8);
        let (user, sale, batch) = (c.user.clone(), c.sale, c.batch);
        assert_eq!(challenges.check(&token, solution, &user, sale, batch, 1_000), Ok(c.clone()));
        let wrong = (0..).find(|n| !solves(&token, *n, 8)).unwrap();
        assert_eq!(challenges.check(&token, wrong, &user, sale, batch, 1_000), Err(PowError::Wrong));
        assert_eq!(challenges.check(&token, solution, &user, sale, batch, 2_000), Err(PowError::Expired));
        let bob = UserId::try_from("bob".to_owned()).unwrap();
        assert_eq!(challenges.check(&token, solution, &bob, sale, batch, 1_000), Err(PowError::Foreign));
        assert_eq!(challenges.check(&token, solution, &user, sale, batch.next(), 1_000), Err(PowError::Foreign));
        let forged = Challenges::new(b"guess").issue(&c);
        assert_eq!(challenges.check(&forged, solve(&forged, 8), &user, sale, batch, 1_000), Err(PowError::Forged));
    }

    #[test]
    fn a_harder_challenge_takes_more_tries() {
        let token = Challenges::new(b"secret").issue(&claims(0));
        assert_eq!(solve(&token, 0), 0, "difficulty 0: any answer");
        assert!(solves(&token, solve(&token, 12), 12));
    }
}
