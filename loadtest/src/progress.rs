//! The live progress line: buyers joined, waiting, admitted, sold, errors and requests per
//! second, rewritten in place once a second on a terminal, a plain line every five seconds when
//! the output is a file or a pipe (CI logs).

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Counters the buyers bump as they go.
#[derive(Debug, Default)]
pub struct Progress {
    pub joined: AtomicU64,
    /// Joined and not yet at a final outcome.
    pub waiting: AtomicU64,
    pub admitted: AtomicU64,
    /// Units paid for.
    pub sold: AtomicU64,
    pub errors: AtomicU64,
    pub requests: AtomicU64,
    /// Requests the server did not answer, tried again (only when outages are expected).
    pub unanswered: AtomicU64,
    /// Answers by HTTP status (the `Answers` of the buyers' requests, for the chaos report).
    pub statuses: std::sync::Mutex<std::collections::BTreeMap<u16, u64>>,
    /// When (ms since the start) a buyer last got a 5xx or no answer at all; 0: never.
    pub last_failure_ms: AtomicU64,
    /// Proofs of work solved for joins, and the time spent solving them (ns of one core).
    pub pow_solved: AtomicU64,
    pub pow_nanos: AtomicU64,
}

impl Progress {
    /// Counts an answer with `status`, received `at_ms` after the start.
    pub fn answered(&self, status: u16, at_ms: u64) {
        *self.statuses.lock().expect("never poisoned").entry(status).or_default() += 1;
        if status >= 500 {
            self.failed(at_ms);
        }
    }

    /// A request failed (5xx or no answer) `at_ms` after the start.
    pub fn failed(&self, at_ms: u64) {
        self.last_failure_ms.fetch_max(at_ms, Ordering::Relaxed);
    }
}

impl Progress {
    pub fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn sub(counter: &AtomicU64) {
        counter.fetch_sub(1, Ordering::Relaxed);
    }

    fn line(&self, elapsed: Duration, rate: f64) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        format!(
            "{:>6.1}s  joined {:>7}  waiting {:>7}  admitted {:>6}  sold {:>6}  errors {:>4}  {:>7.0} req/s",
            elapsed.as_secs_f64(),
            get(&self.joined),
            get(&self.waiting),
            get(&self.admitted),
            get(&self.sold),
            get(&self.errors),
            rate
        )
    }

    /// Prints the line until `done` resolves.
    pub async fn show_until(&self, started: Instant, done: impl std::future::Future<Output = ()>) {
        let terminal = std::io::stdout().is_terminal();
        let every = if terminal { Duration::from_secs(1) } else { Duration::from_secs(5) };
        let mut ticker = tokio::time::interval(every);
        ticker.tick().await;
        let mut last = (Instant::now(), 0u64);
        tokio::pin!(done);
        loop {
            tokio::select! {
                () = &mut done => break,
                _ = ticker.tick() => {
                    let requests = self.requests.load(Ordering::Relaxed);
                    let rate = (requests - last.1) as f64 / last.0.elapsed().as_secs_f64().max(1e-9);
                    last = (Instant::now(), requests);
                    let line = self.line(started.elapsed(), rate);
                    let mut out = std::io::stdout().lock();
                    if terminal {
                        let _ = write!(out, "\r{line}");
                    } else {
                        let _ = writeln!(out, "{line}");
                    }
                    let _ = out.flush();
                }
            }
        }
        if terminal {
            println!();
        }
    }
}

/// CPU seconds this process has used (user + system), from `/proc/self/stat`; `None` where there
/// is no `/proc`.
pub fn own_cpu_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// A one-line description of the machine: cores and memory.
pub fn machine() -> String {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().find(|l| l.starts_with("MemTotal")).map(str::to_owned))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|kb| kb.parse::<f64>().ok()))
        .map_or_else(|| "unknown memory".to_owned(), |kb| format!("{:.0} GiB", kb / 1_048_576.0));
    format!("{cores} cores, {memory}")
}

/// The most memory this process has held (`VmHWM`, in MiB), from `/proc/self/status`; `None`
/// where there is no `/proc`.
pub fn peak_rss_mib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}
