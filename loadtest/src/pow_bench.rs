//! `pow-bench`: what a join's proof of work costs, measured here in Rust on this machine: the
//! server's check of one solved challenge (an HMAC and a SHA-256), and a client's solve time by
//! difficulty (median and 90th percentile over many challenges: the number of tries is
//! geometric, so one sample says little). No server needed.

use std::time::Instant;

use flashsale_core::{BatchNo, SaleId, UserId};
use flashsale_queue::pow::{self, ChallengeClaims, Challenges};

use crate::checks::Report;

fn claims(i: u64, bits: u8) -> ChallengeClaims {
    ChallengeClaims {
        user: UserId::try_from(format!("bench-{i}")).expect("a valid id"),
        sale: SaleId::try_from(1).expect("a valid id"),
        batch: BatchNo::FIRST,
        bits,
        expires_at_ms: i64::MAX,
        nonce: format!("{i:032x}"),
    }
}

/// Measures the check and the solve times for each of `bits`, `per_level` challenges each.
pub fn run(bits: &[u8], per_level: u64) -> anyhow::Result<Report> {
    let mut report = Report::new("pow-bench");
    let challenges = Challenges::new(b"pow-bench");
    // The check: a solved challenge of 8 bits, verified many times.
    let c = claims(0, 8);
    let token = challenges.issue(&c);
    let solution = pow::solve(&token, 8);
    let rounds = 100_000u32;
    let started = Instant::now();
    for _ in 0..rounds {
        let checked = challenges.check(&token, solution, &c.user, c.sale, c.batch, 0);
        anyhow::ensure!(checked.is_ok(), "a solved challenge failed its check");
    }
    let check_us = started.elapsed().as_secs_f64() * 1e6 / f64::from(rounds);
    report.note("check", format!("{check_us:.2} µs per join checked ({rounds} checks of one solved challenge)"));
    for &level in bits {
        let mut times: Vec<f64> = (0..per_level)
            .map(|i| {
                let token = challenges.issue(&claims(i, level));
                let started = Instant::now();
                let n = pow::solve(&token, level);
                std::hint::black_box(n);
                started.elapsed().as_secs_f64() * 1000.0
            })
            .collect();
        times.sort_by(f64::total_cmp);
        // The median and the 90th percentile by rank (times sorted, at least one).
        let at = |percent: usize| times[(times.len() - 1) * percent / 100];
        report.note(
            "solve",
            format!("{level:2} bits: median {:8.2} ms, p90 {:8.2} ms ({per_level} challenges)", at(50), at(90)),
        );
    }
    Ok(report)
}
