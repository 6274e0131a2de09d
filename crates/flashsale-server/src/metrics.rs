//! Prometheus metrics: the recorder, its buckets, and the description of every metric the
//! workspace records (a test checks that each one recorded is described). Requests are counted
//! and timed by `crate::http::track`.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

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
