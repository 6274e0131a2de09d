//! Cross-origin requests: refused by browsers unless the origin is one the deployment lists
//! (`FLASHSALE_CORS_ORIGINS`, e.g. the shop's own site embedding the waiting room). The pages
//! served here are same-origin and need none of it. Listed origins may call the shopper API with
//! the headers it reads, and read the headers it answers with; credentials (cookies) are never
//! allowed, as the API authenticates by bearer token.

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::config::CorsOrigins;

/// Request headers a listed origin may send.
const ALLOW_HEADERS: &str =
    "authorization, content-type, idempotency-key, if-match, if-none-match, x-actor, x-queue-ticket";
/// Response headers a listed origin's script may read.
const EXPOSE_HEADERS: &str = "etag, location, retry-after, idempotent-replayed";
const ALLOW_METHODS: &str = "GET, POST, PATCH";
/// How long a browser may reuse a preflight's answer.
const MAX_AGE_SECS: &str = "600";

/// Answers preflights from listed origins and marks their responses readable; everything else
/// passes without them (and a browser then keeps the answer from the other origin's script).
/// Mounted only when origins are listed.
pub async fn cors(State(origins): State<std::sync::Arc<CorsOrigins>>, request: Request, next: Next) -> Response {
    let origin = request.headers().get(header::ORIGIN).filter(|o| origins.0.contains(o)).cloned();
    let Some(origin) = origin else {
        let mut response = next.run(request).await;
        // A shared cache must not hand this answer (without the CORS headers) to a listed origin.
        response.headers_mut().append(header::VARY, HeaderValue::from_static("origin"));
        return response;
    };
    let preflight =
        request.method() == Method::OPTIONS && request.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut response = if preflight { StatusCode::NO_CONTENT.into_response() } else { next.run(request).await };
    let headers = response.headers_mut();
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.append(header::VARY, HeaderValue::from_static("origin"));
    if preflight {
        headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static(ALLOW_METHODS));
        headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static(ALLOW_HEADERS));
        headers.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static(MAX_AGE_SECS));
    } else {
        headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static(EXPOSE_HEADERS));
    }
    response
}
