//! The middleware every request passes: the instance's metrics in scope ([`in_instance_scope`]),
//! then, for routed requests, a `request` span, the request id, and the request's count and
//! latency labelled by its route template.

use std::collections::HashSet;
use std::sync::{LazyLock, Mutex};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;

use super::problem::InternalCause;
use crate::state::AppState;

/// Runs the request with the instance's metrics recorder in scope (see `crate::metrics`).
pub async fn in_instance_scope(State(state): State<AppState>, request: Request, next: Next) -> Response {
    state.metrics.scope(next.run(request)).await
}

/// A `&'static str` for a label value drawn from a small, bounded set (route templates, status
/// codes), so recording a metric does not allocate per request. Never called with client-chosen
/// text: the set would grow without bound.
fn intern(value: &str) -> &'static str {
    static SEEN: LazyLock<Mutex<HashSet<&'static str>>> = LazyLock::new(Mutex::default);
    let mut seen = SEEN.lock().expect("intern lock is never poisoned");
    if let Some(interned) = seen.get(value) {
        return interned;
    }
    let leaked: &'static str = Box::leak(value.to_owned().into_boxed_str());
    seen.insert(leaked);
    leaked
}

fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PATCH => "PATCH",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        // Clients may invent methods; they must not mint new label values.
        _ => "other",
    }
}

/// Middleware: runs every routed request in a `request` span (method, route template, request
/// id), echoes the request id in `X-Request-Id` (the client's own when it sent a sane one, so a
/// load balancer's id follows the request through; a new one otherwise), counts and times the
/// request labelled by the route *template* (`/admin/sales/{id}`, never the raw URL, whose ids
/// would explode the label set), and logs the cause of internal errors once, here.
pub async fn track(request: Request, next: Next) -> Response {
    use tracing::Instrument;
    let started = Instant::now();
    let method = method_label(request.method());
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", |path| intern(path.as_str()));
    let id = request_id(request.headers().get(REQUEST_ID));
    let span = tracing::info_span!("request", http.method = %method, http.route = %route, request_id = id.to_str().unwrap_or("-"));
    let mut response = next.run(request).instrument(span.clone()).await;
    if let Some(InternalCause(cause)) = response.extensions().get::<InternalCause>() {
        span.in_scope(|| tracing::error!(error = %cause, "request failed"));
    }
    response.headers_mut().insert(REQUEST_ID, id);
    let status = intern(response.status().as_str());
    metrics::histogram!("http_request_duration_seconds", "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    metrics::counter!("http_requests_total", "method" => method, "route" => route, "status" => status).increment(1);
    response
}

const REQUEST_ID: axum::http::HeaderName = axum::http::HeaderName::from_static("x-request-id");

/// The request's id: the client's `X-Request-Id` when it is 1–64 characters of letters, digits,
/// `-`, `_` and `.` (anything else could forge log lines or bloat them), a new random one
/// otherwise.
fn request_id(sent: Option<&axum::http::HeaderValue>) -> axum::http::HeaderValue {
    let sane = |v: &&axum::http::HeaderValue| {
        (1..=64).contains(&v.len()) && v.as_bytes().iter().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(b))
    };
    match sent.filter(sane) {
        Some(value) => value.clone(),
        None => axum::http::HeaderValue::from_str(&format!("{:016x}", rand::random::<u64>()))
            .expect("hex digits are a valid header value"),
    }
}
