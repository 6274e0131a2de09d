//! Verifying shopper JWTs (the `Authorization: Bearer <JWT>` of shopper routes), HS256 signed with
//! `FLASHSALE_JWT_SECRET`, `sub` = user id (1–64 characters), `exp` required, `nbf` honoured.
//!
//! Deployments put their identity provider's tokens here; the load harness mints its own. Only
//! HS256 is accepted: a token claiming `none` or another algorithm is refused, never "verified"
//! with the wrong primitive.

use flashsale_core::UserId;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    exp: i64,
    nbf: Option<i64>,
}

/// A token that verified, remembered so the buyer's next poll with the same token skips the
/// signature check and JSON parsing (its time window is still checked on every use).
#[derive(Debug, Clone)]
struct Verified {
    user: UserId,
    exp: i64,
    nbf: Option<i64>,
}

/// How many verified tokens an instance remembers before starting over. A buyer polls with the
/// same token every few seconds; remembering it turns most verifications into one hash lookup.
const VERIFIED_CAPACITY: usize = 200_000;

/// Clock skew tolerated against the identity provider, in seconds.
const LEEWAY_SECS: i64 = 5;

/// Verifies shopper JWTs.
pub struct JwtVerifier {
    key: DecodingKey,
    validation: Validation,
    verified: std::sync::Mutex<std::collections::HashMap<Box<str>, Verified>>,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JwtVerifier(HS256)")
    }
}

impl JwtVerifier {
    /// A verifier for tokens signed with `secret`.
    pub fn new(secret: &[u8]) -> JwtVerifier {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        // The time window is checked by `verify` against Redis's clock (the one every instance
        // shares), with a leeway for the identity provider's clock, not by the library against
        // this machine's.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        JwtVerifier { key: DecodingKey::from_secret(secret), validation, verified: Default::default() }
    }

    /// The buyer named by `token`, if it is genuine and current at `now` (Unix seconds).
    pub fn verify(&self, token: &str, now: i64) -> Option<UserId> {
        let current = |v: &Verified| now < v.exp + LEEWAY_SECS && v.nbf.is_none_or(|nbf| now + LEEWAY_SECS >= nbf);
        if let Some(known) = self.verified.lock().expect("never poisoned").get(token) {
            // The same bytes verified before: only the time window can have changed.
            return current(known).then(|| known.user.clone());
        }
        let claims = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).ok()?.claims;
        let verified = Verified { user: UserId::try_from(claims.sub).ok()?, exp: claims.exp, nbf: claims.nbf };
        if !current(&verified) {
            return None;
        }
        let user = verified.user.clone();
        let mut known = self.verified.lock().expect("never poisoned");
        if known.len() >= VERIFIED_CAPACITY {
            // Start over rather than track recency: cheap, and bounded.
            known.clear();
        }
        known.insert(token.into(), verified);
        Some(user)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    fn now() -> i64 {
        chrono::Utc::now().timestamp()
    }

    fn token(claims: serde_json::Value, secret: &[u8], alg: Algorithm) -> String {
        encode(&Header::new(alg), &claims, &EncodingKey::from_secret(secret)).unwrap()
    }

    #[test]
    fn genuine_current_tokens_name_their_buyer() {
        let verifier = JwtVerifier::new(b"secret");
        let t = token(json!({"sub": "alice", "exp": now() + 60}), b"secret", Algorithm::HS256);
        assert_eq!(verifier.verify(&t, now()).unwrap().as_str(), "alice");
    }

    #[test]
    fn a_remembered_token_still_expires() {
        let verifier = JwtVerifier::new(b"secret");
        // Valid (with the leeway) for two more seconds.
        let t = token(json!({"sub": "alice", "exp": now() - LEEWAY_SECS + 2}), b"secret", Algorithm::HS256);
        assert!(verifier.verify(&t, now()).is_some());
        assert!(verifier.verify(&t, now()).is_some(), "second use comes from memory");
        assert!(verifier.verify(&t, now() + 2).is_none(), "expired while remembered");
    }

    #[test]
    fn expired_early_unsigned_foreign_and_malformed_tokens_are_refused() {
        let verifier = JwtVerifier::new(b"secret");
        let cases = [
            token(json!({"sub": "alice", "exp": now() - 60}), b"secret", Algorithm::HS256),
            token(json!({"sub": "alice", "exp": now() + 60, "nbf": now() + 60}), b"secret", Algorithm::HS256),
            token(json!({"sub": "alice"}), b"secret", Algorithm::HS256),
            token(json!({"exp": now() + 60}), b"secret", Algorithm::HS256),
            token(json!({"sub": "", "exp": now() + 60}), b"secret", Algorithm::HS256),
            token(json!({"sub": "x".repeat(65), "exp": now() + 60}), b"secret", Algorithm::HS256),
            token(json!({"sub": "alice", "exp": now() + 60}), b"other", Algorithm::HS256),
            token(json!({"sub": "alice", "exp": now() + 60}), b"secret", Algorithm::HS384),
            // alg "none": header {"alg":"none"}, no signature.
            "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhbGljZSIsImV4cCI6OTk5OTk5OTk5OX0.".to_owned(),
            "not a jwt".to_owned(),
        ];
        for (i, t) in cases.iter().enumerate() {
            assert!(verifier.verify(t, now()).is_none(), "case {i} accepted");
        }
    }
}
