//! Shopper authentication: `Authorization: Bearer <JWT>`, HS256 signed with
//! `FLASHSALE_JWT_SECRET`, `sub` = user id (1–64 characters), `exp` required, `nbf` honoured.
//!
//! Deployments put their identity provider's tokens here; the load harness mints its own. Only
//! HS256 is accepted: a token claiming `none` or another algorithm is refused, never "verified"
//! with the wrong primitive.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use flashsale_core::UserId;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::auth::bearer_token;
use crate::problem::ApiError;
use crate::state::AppState;

/// An authenticated shopper.
#[derive(Debug, Clone)]
pub struct Buyer {
    pub user: UserId,
}

#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
}

/// Verifies shopper JWTs.
#[derive(Clone)]
pub struct JwtVerifier {
    key: DecodingKey,
    validation: Validation,
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
        validation.validate_exp = true;
        validation.validate_nbf = true;
        // Clocks of the identity provider and this server may differ a little.
        validation.leeway = 5;
        JwtVerifier { key: DecodingKey::from_secret(secret), validation }
    }

    /// The buyer named by `token`, if it is genuine and current.
    pub fn verify(&self, token: &str) -> Option<UserId> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).ok()?;
        UserId::try_from(data.claims.sub).ok()
    }
}

impl FromRequestParts<AppState> for Buyer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Buyer, ApiError> {
        let token = bearer_token(&parts.headers).ok_or(ApiError::Unauthorized)?;
        let user = state.jwt.verify(token).ok_or(ApiError::Unauthorized)?;
        Ok(Buyer { user })
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
        assert_eq!(verifier.verify(&t).unwrap().as_str(), "alice");
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
            assert!(verifier.verify(t).is_none(), "case {i} accepted");
        }
    }
}
