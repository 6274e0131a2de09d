//! Admin authentication: `Authorization: Bearer $FLASHSALE_ADMIN_TOKEN`.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use subtle::ConstantTimeEq;

use crate::problem::ApiError;
use crate::state::AppState;

/// An authenticated operator. Taking it as a handler argument is what makes a route admin-only.
#[derive(Debug, Clone)]
pub struct Admin {
    /// Who acted, for the audit trail: the `X-Actor` header (1–64 visible ASCII characters, e.g.
    /// the operator's login, set by the admin console), or `admin`. The shared token proves the
    /// caller is an operator; the header says which one.
    pub actor: String,
    /// The peer address, when the server knows it.
    pub client_ip: Option<IpAddr>,
}

/// The token of an `Authorization: Bearer <token>` header.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

/// The bearer token a request authenticates with: 400 `bad_request` when it sends several
/// `Authorization` headers (which one counts would depend on who reads them: a proxy may check
/// one and the server believe another), 401 when there is no bearer token.
pub fn require_bearer(headers: &HeaderMap) -> Result<&str, ApiError> {
    if headers.get_all(header::AUTHORIZATION).iter().nth(1).is_some() {
        return Err(ApiError::BadRequest("send exactly one Authorization header".to_owned()));
    }
    bearer_token(headers).ok_or(ApiError::Unauthorized)
}

fn actor(headers: &HeaderMap) -> Result<String, ApiError> {
    let Some(value) = headers.get("x-actor") else {
        return Ok("admin".to_owned());
    };
    value
        .to_str()
        .ok()
        .filter(|s| (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned)
        .ok_or_else(|| ApiError::BadRequest("X-Actor must be 1–64 visible ASCII characters".to_owned()))
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Admin, ApiError> {
        let given = require_bearer(&parts.headers)?;
        // Constant time, so the response time does not reveal how much of a guess was right.
        let expected = state.secrets.admin_token.expose().as_bytes();
        if !bool::from(given.as_bytes().ct_eq(expected)) {
            return Err(ApiError::Unauthorized);
        }
        Ok(Admin {
            actor: actor(&parts.headers)?,
            client_ip: parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_are_read_case_insensitively_and_never_empty() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer_token(&headers), None);
        headers.insert(header::AUTHORIZATION, "bearer abc".parse().unwrap());
        assert_eq!(bearer_token(&headers), Some("abc"));
        headers.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(bearer_token(&headers), None);
        headers.insert(header::AUTHORIZATION, "Bearer ".parse().unwrap());
        assert_eq!(bearer_token(&headers), None);
    }
}
