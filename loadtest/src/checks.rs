//! Named checks and the report that lists them.

use std::fmt;

/// One named check and its outcome.
#[derive(Debug)]
pub struct Check {
    pub name: &'static str,
    pub passed: bool,
    /// What was measured, for the report.
    pub detail: String,
}

/// Every check a scenario ran, in order.
#[derive(Debug, Default)]
pub struct Report {
    pub scenario: &'static str,
    pub checks: Vec<Check>,
    /// Measurements that are not pass/fail (timings, counts), printed before the verdicts.
    pub notes: Vec<(&'static str, String)>,
}

impl Report {
    /// A report for `scenario` with no checks yet.
    pub fn new(scenario: &'static str) -> Report {
        Report { scenario, checks: Vec::new(), notes: Vec::new() }
    }

    /// Records a check.
    pub fn check(&mut self, name: &'static str, passed: bool, detail: impl Into<String>) {
        self.checks.push(Check { name, passed, detail: detail.into() });
    }

    /// Records a measurement.
    pub fn note(&mut self, name: &'static str, value: impl Into<String>) {
        self.notes.push((name, value.into()));
    }

    /// Whether every check passed (and there was at least one).
    pub fn passed(&self) -> bool {
        !self.checks.is_empty() && self.checks.iter().all(|c| c.passed)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "scenario {}", self.scenario)?;
        for (name, value) in &self.notes {
            writeln!(f, "  {name:<43} {value}")?;
        }
        for check in &self.checks {
            let verdict = if check.passed { "PASS" } else { "FAIL" };
            writeln!(f, "  {verdict} {:<38} {}", check.name, check.detail)?;
        }
        let failed = self.checks.iter().filter(|c| !c.passed).count();
        writeln!(f, "checks: {} passed, {failed} failed", self.checks.len() - failed)
    }
}
