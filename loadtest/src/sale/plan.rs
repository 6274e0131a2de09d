//! Who arrives when and what they will do: drawn from a seed before the clock starts, so a run
//! can be replayed, and kept small (a million buyers' plans are a few tens of megabytes).

use rand::{Rng, SeedableRng};

use super::SaleOptions;

/// How arrivals are spread around the opening.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Profile {
    /// Early birds evenly over the early window; the rest evenly over the late window.
    Uniform,
    /// Early birds ever denser towards the opening; the rest ever sparser after it.
    Ramp,
    /// Early birds as `ramp`; the rest mostly in the first seconds (exponential decay).
    Spike,
}

/// What a buyer does with an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Act {
    Pay,
    Cancel,
    /// Lets the payment window lapse.
    Lapse,
}

/// One buyer's plan.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// When they arrive, in ms since the run started.
    pub arrive_ms: u32,
    /// Arrives before the opening (in the pre-queue).
    pub early: bool,
    pub act: Act,
    /// Sends the order twice with the same key.
    pub retry: bool,
    pub quantity: u8,
    /// Gives up after waiting this long, in ms (`None`: waits as long as it takes).
    pub patience_ms: Option<u32>,
    /// Follows the queue's event stream instead of polling.
    pub stream: bool,
    /// Pays this many ms after the order's deadline (negative: before it), with
    /// `pay_at_deadline_ms`; otherwise pays at once.
    pub pay_offset_ms: Option<i32>,
}

/// Every buyer's plan, from `opts.seed`.
pub fn draw(opts: &SaleOptions) -> Vec<Plan> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(opts.seed);
    let opens_ms = opts.opens_in_secs as f64 * 1000.0;
    // Early birds stop a little before the opening, so "early" means in the pre-queue.
    let early_ms = (opts.early_window_secs as f64 * 1000.0).min(opens_ms - 300.0).max(0.0);
    let late_ms = opts.late_window_secs as f64 * 1000.0;
    let max_quantity = opts.max_quantity.clamp(1, opts.per_user_limit.max(1)).min(u32::from(u8::MAX));
    // A stream of its own, so the other draws are the same with or without deadline payments.
    let mut deadline_rng = rand::rngs::StdRng::seed_from_u64(opts.seed.rotate_left(17) ^ 0x5eed_dead);
    let spread = opts.pay_at_deadline_ms.map(|ms| i32::try_from(ms).unwrap_or(i32::MAX));
    (0..opts.buyers)
        .map(|_| {
            let early = rng.random_bool(opts.early.clamp(0.0, 1.0));
            let u: f64 = rng.random();
            let at = if early {
                // Offset before the opening's early-window edge, 0 = earliest.
                let x = match opts.profile {
                    Profile::Uniform => u,
                    Profile::Ramp | Profile::Spike => u.sqrt(),
                };
                opens_ms - 300.0 - early_ms + x * early_ms
            } else {
                let x = match opts.profile {
                    Profile::Uniform => u,
                    Profile::Ramp => 1.0 - (1.0 - u).sqrt(),
                    // Mean a fifth of the window, cut at its end.
                    Profile::Spike => (-(1.0 - u * (1.0 - (-5.0f64).exp())).ln() / 5.0).min(1.0),
                };
                opens_ms + x * late_ms
            };
            let choice: f64 = rng.random();
            let act = if choice < opts.pay {
                Act::Pay
            } else if choice < opts.pay + opts.cancel {
                Act::Cancel
            } else {
                Act::Lapse
            };
            let retry = rng.random_bool(opts.retry.clamp(0.0, 1.0));
            let quantity = u8::try_from(rng.random_range(1..=max_quantity)).unwrap_or(1);
            let patience_ms = rng.random_bool(opts.give_up.clamp(0.0, 1.0)).then(|| {
                // Somewhere between a tenth of the patience and all of it.
                let secs = opts.patience_secs as f64 * rng.random_range(0.1..=1.0);
                whole_ms(secs * 1000.0)
            });
            let stream = rng.random_bool(opts.events.clamp(0.0, 1.0));
            let pay_offset_ms = spread.map(|ms| deadline_rng.random_range(-ms..=ms));
            Plan { arrive_ms: whole_ms(at), early, act, retry, quantity, patience_ms, stream, pay_offset_ms }
        })
        .collect()
}

/// `ms` rounded down to whole milliseconds, clamped to what a `u32` holds (49 days).
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "clamped to u32's range first")]
fn whole_ms(ms: f64) -> u32 {
    ms.clamp(0.0, f64::from(u32::MAX)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(profile: Profile) -> SaleOptions {
        SaleOptions { buyers: 20_000, profile, ..SaleOptions::smoke() }
    }

    #[test]
    fn the_same_seed_draws_the_same_plans() {
        let a = draw(&opts(Profile::Spike));
        let b = draw(&opts(Profile::Spike));
        assert!(a.iter().zip(&b).all(|(x, y)| x.arrive_ms == y.arrive_ms && x.act == y.act));
    }

    #[test]
    fn early_birds_arrive_before_the_opening_and_the_rest_within_the_late_window() {
        let o = opts(Profile::Spike);
        let opens = u32::try_from(o.opens_in_secs * 1000).unwrap();
        let late = u32::try_from(o.late_window_secs * 1000).unwrap();
        for p in draw(&o) {
            if p.early {
                assert!(p.arrive_ms < opens, "{p:?}");
            } else {
                assert!(p.arrive_ms >= opens && p.arrive_ms <= opens + late, "{p:?}");
            }
        }
    }

    #[test]
    fn a_spike_puts_most_latecomers_in_the_first_fifth_and_uniform_does_not() {
        let share_in_first_fifth = |profile| {
            let o = opts(profile);
            let opens = u32::try_from(o.opens_in_secs * 1000).unwrap();
            let fifth = u32::try_from(o.late_window_secs * 200).unwrap();
            let late: Vec<_> = draw(&o).into_iter().filter(|p| !p.early).collect();
            late.iter().filter(|p| p.arrive_ms < opens + fifth).count() as f64 / late.len() as f64
        };
        assert!(share_in_first_fifth(Profile::Spike) > 0.6);
        assert!((share_in_first_fifth(Profile::Uniform) - 0.2).abs() < 0.03);
        // A ramp falls off after the opening: more than uniform's share early on, less than a spike's.
        let ramp = share_in_first_fifth(Profile::Ramp);
        assert!(ramp > 0.3 && ramp < 0.6, "{ramp}");
    }

    #[test]
    fn ratios_and_quantities_follow_the_options() {
        let o = SaleOptions { max_quantity: 2, per_user_limit: 2, give_up: 0.1, ..opts(Profile::Uniform) };
        let plans = draw(&o);
        let share = |f: &dyn Fn(&Plan) -> bool| plans.iter().filter(|p| f(p)).count() as f64 / plans.len() as f64;
        assert!((share(&|p| p.act == Act::Pay) - o.pay).abs() < 0.02);
        assert!((share(&|p| p.patience_ms.is_some()) - 0.1).abs() < 0.02);
        assert!(plans.iter().all(|p| (1..=2).contains(&p.quantity)));
        assert!((share(&|p| p.quantity == 2) - 0.5).abs() < 0.03);
    }
}
