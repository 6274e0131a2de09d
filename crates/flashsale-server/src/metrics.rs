//! Prometheus metrics: the recorder, its buckets, and the description of every metric the
//! workspace records (a test checks that each one recorded is described). Requests are counted
//! and timed by `crate::http::track`.
//!
//! # One recorder per app instance
//! The `metrics` facade has one global recorder per process. Installed here is [`Dispatch`],
//! which hands each recording to the recorder of the app instance whose task records it (a
//! tokio task-local, set by [`Metrics::scope`] around every request and every job), or to the
//! process's recorder when no instance is in scope. A server process runs one instance, on the
//! process's recorder ([`Metrics::process`]), so everything lands in one place. Tests run many
//! instances in one process, each with a recorder of its own ([`Metrics::own`]): one test's
//! counters never show in another's `/metrics`. What the order crate's writer tasks record
//! (`order_batch_size`) is out of any instance's scope and lands in the process's recorder.

use std::future::Future;
use std::sync::{Arc, OnceLock};

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use tokio::task::futures::TaskLocalFuture;

/// Latency buckets in seconds: fine-grained below 10 ms, where the hot path lives.
const LATENCY_BUCKETS: &[f64] = &[0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

tokio::task_local! {
    /// The recorder of the app instance whose task is running.
    static INSTANCE: Arc<PrometheusRecorder>;
}

/// A recorder with this workspace's buckets and every metric described.
fn new_recorder() -> Arc<PrometheusRecorder> {
    let recorder = Arc::new(
        PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full("http_request_duration_seconds".to_owned()), LATENCY_BUCKETS)
            .expect("bucket list is not empty")
            .build_recorder(),
    );
    describe(&recorder);
    recorder
}

/// The global recorder: the instance in scope's, else the process's.
struct Dispatch {
    process: Arc<PrometheusRecorder>,
}

impl Dispatch {
    fn with<T>(&self, f: impl FnOnce(&PrometheusRecorder) -> T) -> T {
        // Borrowed in place, not cloned: this runs for every recording on the hot path.
        let mut f = Some(f);
        let mut call = |recorder: &PrometheusRecorder| f.take().map(|f| f(recorder));
        match INSTANCE.try_with(|instance| call(instance)) {
            Ok(Some(done)) => done,
            _ => call(&self.process).expect("called once"),
        }
    }
}

impl Recorder for Dispatch {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.with(|r| r.describe_counter(key, unit, description));
    }

    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.with(|r| r.describe_gauge(key, unit, description));
    }

    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.with(|r| r.describe_histogram(key, unit, description));
    }

    fn register_counter(&self, key: &Key, metadata: &Metadata<'_>) -> Counter {
        self.with(|r| r.register_counter(key, metadata))
    }

    fn register_gauge(&self, key: &Key, metadata: &Metadata<'_>) -> Gauge {
        self.with(|r| r.register_gauge(key, metadata))
    }

    fn register_histogram(&self, key: &Key, metadata: &Metadata<'_>) -> Histogram {
        self.with(|r| r.register_histogram(key, metadata))
    }
}

/// The process's recorder, installing [`Dispatch`] as the global recorder the first time.
fn process_recorder() -> Arc<PrometheusRecorder> {
    static PROCESS: OnceLock<Arc<PrometheusRecorder>> = OnceLock::new();
    PROCESS
        .get_or_init(|| {
            let process = new_recorder();
            metrics::set_global_recorder(Dispatch { process: process.clone() })
                .unwrap_or_else(|_| panic!("no other metrics recorder is installed"));
            process
        })
        .clone()
}

/// An app instance's metrics: the recorder its requests and jobs record into, and its
/// `/metrics` rendering.
#[derive(Clone)]
pub struct Metrics {
    recorder: Arc<PrometheusRecorder>,
    handle: PrometheusHandle,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    /// The process's recorder: what a server process, one instance, records into.
    pub fn process() -> Metrics {
        Metrics::of(process_recorder())
    }

    /// A recorder of this instance's own (several instances in one process: tests).
    pub fn own() -> Metrics {
        process_recorder();
        Metrics::of(new_recorder())
    }

    fn of(recorder: Arc<PrometheusRecorder>) -> Metrics {
        let handle = recorder.handle();
        Metrics { recorder, handle }
    }

    /// Runs `work` with this instance's recorder in scope: what it records is this instance's.
    pub fn scope<F: Future>(&self, work: F) -> TaskLocalFuture<Arc<PrometheusRecorder>, F> {
        INSTANCE.scope(self.recorder.clone(), work)
    }

    /// `/metrics`: everything recorded into this instance's recorder, in Prometheus's text format.
    pub fn render(&self) -> String {
        self.handle.render()
    }

    /// Drains histograms' old samples (see `PrometheusHandle::run_upkeep`).
    pub fn run_upkeep(&self) {
        self.handle.run_upkeep();
    }
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
    ("pow_challenges_total", Kind::Counter, "Proof-of-work challenges issued for joins."),
    (
        "pow_refused_total",
        Kind::Counter,
        "Joins refused for their proof of work, by reason (missing, wrong, expired, reused, foreign, forged).",
    ),
    ("pow_bits", Kind::Gauge, "The proof-of-work difficulty (leading zero bits) last asked of a join, by sale."),
    ("priority_codes_generated_total", Kind::Counter, "Priority codes generated by operations."),
    (
        "priority_codes_redeemed_total",
        Kind::Counter,
        "Priority-code redemptions, by outcome (admitted, spent, invalid).",
    ),
    (
        "draws_recorded_total",
        Kind::Counter,
        "Pre-queue cohorts sealed and recorded in PostgreSQL (their seeds published).",
    ),
    (
        "draw_cohort_incomplete_total",
        Kind::Counter,
        "Cohorts recorded with fewer buyers than Redis sealed (Redis lost part of a pre-queue; expected 0).",
    ),
    (
        "activity_dropped_total",
        Kind::Counter,
        "Times per-second batch counts were dropped because PostgreSQL could not take them for long (expected 0).",
    ),
    ("draw_out_of_order_total", Kind::Counter, "Cohorts found out of rank order in Redis when recorded (expected 0)."),
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

/// Gives every metric its `# HELP` line in `recorder`.
fn describe(recorder: &PrometheusRecorder) {
    for &(name, kind, help) in DESCRIPTIONS {
        let (name, help) = (KeyName::from(name), SharedString::from(help));
        match kind {
            Kind::Counter => recorder.describe_counter(name, None, help),
            Kind::Gauge => recorder.describe_gauge(name, None, help),
            Kind::Histogram => recorder.describe_histogram(name, None, help),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `counter!`, `gauge!` and `histogram!` in the workspace's sources: (name, kind, file).
    fn recorded() -> Vec<(String, Kind, String)> {
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
        found
    }

    /// Every `counter!`, `gauge!` and `histogram!` in the workspace's sources names a metric
    /// described above, as the same kind.
    #[test]
    fn every_recorded_metric_is_described() {
        let found = recorded();
        assert!(found.len() > 20, "the scan found the metrics: {found:?}");
        for (name, kind, file) in found {
            assert!(
                DESCRIPTIONS.iter().any(|(n, k, _)| *n == name && *k == kind),
                "{name} ({kind:?}, in {file}) has no description in DESCRIPTIONS"
            );
        }
    }

    /// The PromQL expressions of the alert rules (`expr:` lines and `expr: |` blocks).
    fn alert_expressions(yaml: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut lines = yaml.lines().peekable();
        while let Some(line) = lines.next() {
            let Some(rest) = line.trim_start().strip_prefix("expr:") else { continue };
            let indent = line.len() - line.trim_start().len();
            if rest.trim() != "|" {
                out.push(rest.trim().to_owned());
                continue;
            }
            let mut block = String::new();
            while let Some(next) = lines.next_if(|l| l.len() - l.trim_start().len() > indent || l.trim().is_empty()) {
                block.push_str(next.trim());
                block.push(' ');
            }
            out.push(block);
        }
        out
    }

    /// Every metric the Grafana dashboard and the Prometheus alert rules in `deploy/` use is one
    /// the server exports: described here (its `# HELP`) and recorded somewhere in the sources.
    /// A renamed metric or a typo in a rule fails here rather than in a silent panel or an
    /// alert that can never fire.
    #[test]
    fn every_metric_the_dashboard_and_the_alerts_use_is_exported() {
        let deploy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy");
        let dashboard: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(deploy.join("grafana/dashboards/flashsale.json")).unwrap())
                .unwrap();
        let mut expressions: Vec<String> = dashboard["panels"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|panel| panel["targets"].as_array().cloned().unwrap_or_default())
            .map(|target| target["expr"].as_str().unwrap().to_owned())
            .collect();
        let from_dashboard = expressions.len();
        expressions.extend(alert_expressions(&std::fs::read_to_string(deploy.join("prometheus/alerts.yml")).unwrap()));
        assert!(from_dashboard > 10 && expressions.len() > from_dashboard + 10, "{expressions:?}");

        let recorded: Vec<String> = recorded().into_iter().map(|(name, _, _)| name).collect();
        let exported = |name: &str| {
            DESCRIPTIONS.iter().any(|&(described, kind, _)| {
                let series = match kind {
                    Kind::Histogram => {
                        ["_bucket", "_sum", "_count"].iter().any(|s| name.strip_suffix(s) == Some(described))
                    }
                    _ => name == described,
                };
                series && recorded.iter().any(|r| r == described)
            })
        };
        // PromQL's own words with an underscore; every other such word must be a metric.
        let promql = ["histogram_quantile", "clamp_min", "clamp_max", "label_replace", "absent_over_time"];
        for expression in &expressions {
            let words = expression.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'));
            for word in words.filter(|w| w.contains('_') && w.bytes().all(|b| !b.is_ascii_uppercase())) {
                assert!(
                    promql.contains(&word) || exported(word),
                    "{word} (in `{expression}`) is not a metric the server exports"
                );
            }
        }
    }
}
