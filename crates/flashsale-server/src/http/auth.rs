//! Who is asking: an operator ([`Admin`]: `Authorization: Bearer $FLASHSALE_ADMIN_TOKEN`), a
//! shopper ([`Buyer`]: a JWT, verified by [`crate::jwt`]), and from which address ([`ClientIp`]).
//! Taking one as a handler argument is what makes a route require it.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use subtle::ConstantTimeEq;

use flashsale_core::UserId;

use super::problem::ApiError;
use crate::service::Actor;
use crate::state::AppState;

/// An authenticated operator. Taking it as a handler argument is what makes a route admin-only.
#[derive(Debug, Clone)]
pub struct Admin {
    /// Who acted, for the audit trail: the `X-Actor` header (1–64 visible ASCII characters, e.g.
    /// the operator's login, set by the admin console), or `admin`, and the peer address. The
    /// shared token proves the caller is an operator; the header says which one.
    pub actor: Actor,
}

/// An authenticated shopper.
#[derive(Debug, Clone)]
pub struct Buyer {
    pub user: UserId,
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

/// The address of the connection's other end, when the server knows it (tests driving the router
/// without a socket have none).
fn peer(parts: &Parts) -> Option<IpAddr> {
    parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip())
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
        Ok(Admin { actor: Actor { name: actor(&parts.headers)?, client_ip: peer(parts) } })
    }
}

impl FromRequestParts<AppState> for Buyer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Buyer, ApiError> {
        Buyer::from_headers(&parts.headers, state)
    }
}

impl Buyer {
    /// The buyer of the request's `Authorization: Bearer <JWT>`.
    pub fn from_headers(headers: &HeaderMap, state: &AppState) -> Result<Buyer, ApiError> {
        let token = require_bearer(headers)?;
        let user = state.jwt.verify(token, state.clock.now().timestamp()).ok_or(ApiError::Unauthorized)?;
        Ok(Buyer { user })
    }
}

/// The client's IP as [`crate::limits::RateLimits::client_ip`] decides it; `None` when the server does not know
/// the peer (tests driving the router without a socket).
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub Option<IpAddr>);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<ClientIp, Self::Rejection> {
        let forwarded = parts.headers.get("x-forwarded-for").and_then(|v| v.to_str().ok());
        Ok(ClientIp(state.limits.client_ip(peer(parts), forwarded)))
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
