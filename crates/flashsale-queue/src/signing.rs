//! Compact signed tokens: `base64url(json payload) "." base64url(HMAC-SHA256)`.
//!
//! Used for the queue ticket (a buyer's place, carried by the client so status polls need no
//! Redis round trip) and the admission token (the single-use right to reserve). Each purpose signs
//! with its own key, derived from the deployment's secret, so a token of one kind can never be
//! passed off as another.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Signs and verifies tokens of one purpose.
#[derive(Clone)]
pub struct Signer {
    key: [u8; 32],
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(***)")
    }
}

/// HMAC-SHA256 of `message` under `key`.
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(message);
    mac.finalize().into_bytes().into()
}

impl Signer {
    /// A signer for `purpose` (e.g. `"queue-ticket"`), keyed by HMAC(secret, purpose).
    pub fn new(secret: &[u8], purpose: &str) -> Signer {
        Signer { key: hmac_sha256(secret, format!("flashsale:{purpose}").as_bytes()) }
    }

    /// The token for `payload`.
    pub fn sign<T: Serialize>(&self, payload: &T) -> String {
        let json = serde_json::to_vec(payload).expect("token payloads serialise");
        let body = URL_SAFE_NO_PAD.encode(json);
        let mac = hmac_sha256(&self.key, body.as_bytes());
        format!("{body}.{}", URL_SAFE_NO_PAD.encode(mac))
    }

    /// The payload of `token` if this signer made it, `None` otherwise (tampered, forged, of
    /// another purpose, or not a token at all). The MAC is checked in constant time before the
    /// payload is parsed.
    pub fn verify<T: DeserializeOwned>(&self, token: &str) -> Option<T> {
        let (body, mac) = token.split_once('.')?;
        let mac = URL_SAFE_NO_PAD.decode(mac).ok()?;
        let mut check = HmacSha256::new_from_slice(&self.key).expect("HMAC accepts keys of any length");
        check.update(body.as_bytes());
        check.verify_slice(&mac).ok()?;
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(body).ok()?).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_only_with_their_own_key_and_purpose() {
        let signer = Signer::new(b"secret", "ticket");
        let token = signer.sign(&(1, "u"));
        assert_eq!(signer.verify::<(i32, String)>(&token), Some((1, "u".to_owned())));
        assert_eq!(Signer::new(b"secret", "admission").verify::<(i32, String)>(&token), None);
        assert_eq!(Signer::new(b"other", "ticket").verify::<(i32, String)>(&token), None);
    }

    #[test]
    fn tampered_tokens_are_refused() {
        let signer = Signer::new(b"secret", "ticket");
        let token = signer.sign(&(1, "u"));
        let (body, mac) = token.split_once('.').unwrap();
        let forged_body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&(2, "u")).unwrap());
        for bad in [format!("{forged_body}.{mac}"), format!("{body}.{}", &mac[1..]), body.to_owned(), String::new()] {
            assert_eq!(signer.verify::<(i32, String)>(&bad), None, "{bad}");
        }
    }
}
