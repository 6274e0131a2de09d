//! Latencies in HDR histograms: per step for the whole run, and per step and second (by when
//! each request was meant to be sent) for the charts. Fixed memory whatever the number of
//! requests, which is what a million buyers need.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{Value, json};

/// Microseconds from 1 µs to 10 minutes, three significant digits.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

fn ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

/// Every request's latency, by step.
#[derive(Debug, Default)]
pub struct Latencies {
    by_step: BTreeMap<&'static str, Histogram<u64>>,
    by_second: BTreeMap<(&'static str, u64), Histogram<u64>>,
}

impl Latencies {
    /// Records a `step` meant to be sent `at` (since the run started) that took `took`, counted
    /// from its intended send time.
    pub fn record(&mut self, step: &'static str, at: Duration, took: Duration) {
        let value = micros(took);
        self.by_step.entry(step).or_insert_with(histogram).saturating_record(value);
        self.by_second.entry((step, at.as_secs())).or_insert_with(histogram).saturating_record(value);
    }

    /// Per step: count, p50, p90, p99, p99.9 and max, in ms.
    pub fn summary(&self) -> Value {
        let steps: serde_json::Map<String, Value> = self
            .by_step
            .iter()
            .map(|(step, h)| {
                let q = |quantile: f64| ms(h.value_at_quantile(quantile));
                let summary = json!({ "count": h.len(), "p50": q(0.5), "p90": q(0.9), "p99": q(0.99),
                                      "p999": q(0.999), "max": ms(h.max()) });
                ((*step).to_owned(), summary)
            })
            .collect();
        Value::Object(steps)
    }

    /// One line per step: p50, p99 and max.
    pub fn lines(&self) -> Vec<(&'static str, String)> {
        self.by_step
            .iter()
            .map(|(step, h)| {
                let line = format!(
                    "p50 {:.1} ms, p99 {:.1} ms, p99.9 {:.1} ms, max {:.1} ms ({} requests)",
                    ms(h.value_at_quantile(0.5)),
                    ms(h.value_at_quantile(0.99)),
                    ms(h.value_at_quantile(0.999)),
                    ms(h.max()),
                    h.len()
                );
                (*step, line)
            })
            .collect()
    }

    /// `quantile` of `step`'s latency for each second of the run, in ms.
    pub fn over_time(&self, step: &str, quantile: f64) -> Vec<(f64, f64)> {
        self.by_second
            .iter()
            .filter(|((s, _), _)| *s == step)
            .map(|((_, second), h)| (*second as f64, ms(h.value_at_quantile(quantile))))
            .collect()
    }
}
