//! Prometheus metrics: request counts and latency per matched route.

use std::collections::HashSet;
use std::sync::{LazyLock, Mutex, OnceLock};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::problem::InternalCause;

/// Latency buckets in seconds: fine-grained below 10 ms, where the hot path lives.
const LATENCY_BUCKETS: &[f64] = &[0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// The process-wide recorder's handle. The `metrics` facade has one global recorder, so it is
/// installed once and shared (tests build many routers in one process).
pub fn handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full("http_request_duration_seconds".to_owned()), LATENCY_BUCKETS)
                .expect("bucket list is not empty")
                .install_recorder()
                .inspect(|_| describe())
                .expect("no other metrics recorder is installed")
        })
        .clone()
}

/// What kind of metric a name is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Every metric any crate records, with its `# HELP` text. A test reads the sources and fails
/// when a metric is recorded that is not described here.
const DESCRIPTIONS: &[(&str, Kind, &str)] = &[
    ("http_requests_total", Kind::Counter, "HTTP requests answered, by method, route template and status."),
    ("http_request_duration_seconds", Kind::Histogram, "Time to answer an HTTP request, by method and route template."),
    ("http_connections_open", Kind::Gauge, "HTTP connections open on this instance."),
    (
        "http_connections_refused_total",
        Kind::Counter,
        "Connections refused with 503 because FLASHSALE_HTTP_MAX_CONNECTIONS were open.",
    ),
    ("rate_limited_total", Kind::Counter, "Requests answered 429 by a rate limit, by scope."),
    ("rate_limiter_keys", Kind::Gauge, "Buyers and addresses the rate limiters currently remember, by scope."),
    ("queue_joins_total", Kind::Counter, "Queue joins, by outcome."),
    ("queue_polls_total", Kind::Counter, "Queue status answers, by the status told."),
    ("queue_admitted_total", Kind::Counter, "Buyers admitted to their turn, by sale."),
    ("queue_admissions_lapsed_total", Kind::Counter, "Admitted buyers whose turn ran out unused, by sale."),
    ("queue_admission_failures_total", Kind::Counter, "Admission ticker steps that failed, by sale."),
    ("queue_serving", Kind::Gauge, "The batch's serving counter (tickets at or below it are admitted), by sale."),
    ("queue_length", Kind::Gauge, "Tickets handed out in the current batch, by sale."),
    ("queue_in_flight", Kind::Gauge, "Admitted buyers whose turn runs and who have not reserved, by sale."),
    ("order_requests_total", Kind::Counter, "Order requests, by outcome."),
    ("orders_created_units_total", Kind::Counter, "Units in orders created."),
    ("orders_cancelled_total", Kind::Counter, "Orders cancelled by their buyer."),
    ("orders_expired_total", Kind::Counter, "Orders whose payment window ran out unpaid."),
    (
        "orders_refused_by_database_total",
        Kind::Counter,
        "Orders Redis reserved that PostgreSQL refused (expected 0), by reason.",
    ),
    ("order_batch_size", Kind::Histogram, "Orders written per group commit."),
    ("payments_total", Kind::Counter, "Payment callbacks, by outcome."),
    (
        "reservations_expired_total",
        Kind::Counter,
        "Reservations past their deadline returned to stock by the Redis sweep.",
    ),
    ("reservations_orphaned_total", Kind::Counter, "Reservations whose order never arrived, released by upkeep."),
    (
        "settlement_conflicts_total",
        Kind::Counter,
        "Settlements Redis answered differently from PostgreSQL (expected 0).",
    ),
    (
        "inventory_drift_units",
        Kind::Gauge,
        "Units by which a batch's Redis ledger does not balance (expected 0), by sale.",
    ),
    (
        "inventory_pg_drift_units",
        Kind::Gauge,
        "Units by which Redis differs from PostgreSQL's orders (expected 0), by sale and kind.",
    ),
    ("inventory_rebuilds_total", Kind::Counter, "Batch ledgers rebuilt in Redis from PostgreSQL."),
    ("inventory_fences_total", Kind::Counter, "Batches fenced because their Redis state was wrong, by reason."),
    ("redis_restarts_detected_total", Kind::Counter, "Redis restarts or failovers detected (a new run_id)."),
    ("clock_offset_ms", Kind::Gauge, "This instance's clock against Redis's, in ms."),
    ("database_up", Kind::Gauge, "1 while PostgreSQL answers this instance's probe, 0 during an outage."),
];

/// Gives every metric its `# HELP` line.
fn describe() {
    for &(name, kind, help) in DESCRIPTIONS {
        match kind {
            Kind::Counter => metrics::describe_counter!(name, help),
            Kind::Gauge => metrics::describe_gauge!(name, help),
            Kind::Histogram => metrics::describe_histogram!(name, help),
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `counter!`, `gauge!` and `histogram!` in the workspace's sources names a metric
    /// described above, as the same kind.
    #[test]
    fn every_recorded_metric_is_described() {
        let crates = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut files = vec![crates];
        let mut found = Vec::new();
        while let Some(path) = files.pop() {
            if path.is_dir() {
                files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") || path.ends_with("metrics.rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for (macro_name, kind) in
                [("counter!(", Kind::Counter), ("gauge!(", Kind::Gauge), ("histogram!(", Kind::Histogram)]
            {
                for (at, _) in text.match_indices(macro_name) {
                    let rest = text[at + macro_name.len()..].trim_start();
                    if let Some(name) = rest.strip_prefix('"').and_then(|r| r.split('"').next()) {
                        found.push((name.to_owned(), kind, path.display().to_string()));
                    }
                }
            }
        }
        assert!(found.len() > 20, "the scan found the metrics: {found:?}");
        for (name, kind, file) in found {
            assert!(
                DESCRIPTIONS.iter().any(|(n, k, _)| *n == name && *k == kind),
                "{name} ({kind:?}, in {file}) has no description in DESCRIPTIONS"
            );
        }
    }
}
