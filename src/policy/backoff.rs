//! Retry and pacing arithmetic: exponential back-off with full jitter, Meta's 4^n delay for the
//! pair limit, and the multiplicative-decrease / additive-increase rule for a number's rate.

use std::time::Duration;

/// Back-off before retry number `attempt` (1 = first retry): `base · 2^(attempt-1)` capped at
/// `cap`, scaled by `jitter` ∈ [0, 1] ("full jitter": spreads retries of many recipients so
/// they don't hit the API in lockstep).
pub fn retry_delay(attempt: u32, base: Duration, cap: Duration, jitter: f64) -> Duration {
    let exp = attempt.saturating_sub(1).min(30);
    let raw = base.saturating_mul(1u32 << exp.min(31)).min(cap);
    raw.mul_f64(jitter.clamp(0.0, 1.0))
}

/// Delay before retrying a recipient after its `n`-th 131056 (pair rate limit): Meta says
/// wait 4^n seconds. Capped at an hour.
pub fn pair_limit_delay(n: u32) -> Duration {
    let secs = 4u64.saturating_pow(n.max(1)).min(3600);
    Duration::from_secs(secs)
}

/// Rate after a 130429: multiplicative decrease, never below `floor`.
pub fn decrease_rate(current: f64, factor: f64, floor: f64) -> f64 {
    (current * factor).max(floor)
}

/// Rate after a quiet recovery interval: additive increase, never above `ceiling`.
pub fn recover_rate(current: f64, step: f64, ceiling: f64) -> f64 {
    (current + step).min(ceiling)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn retries_back_off_exponentially_up_to_the_cap() {
        let base = Duration::from_millis(100);
        let cap = Duration::from_secs(5);
        assert_eq!(retry_delay(1, base, cap, 1.0), Duration::from_millis(100));
        assert_eq!(retry_delay(2, base, cap, 1.0), Duration::from_millis(200));
        assert_eq!(retry_delay(4, base, cap, 1.0), Duration::from_millis(800));
        assert_eq!(retry_delay(20, base, cap, 1.0), cap);
        assert_eq!(retry_delay(3, base, cap, 0.5), Duration::from_millis(200));
    }

    #[test]
    fn pair_limit_waits_four_to_the_n_seconds() {
        assert_eq!(pair_limit_delay(1), Duration::from_secs(4));
        assert_eq!(pair_limit_delay(2), Duration::from_secs(16));
        assert_eq!(pair_limit_delay(3), Duration::from_secs(64));
        assert_eq!(pair_limit_delay(50), Duration::from_secs(3600));
    }

    #[test]
    fn rate_halves_on_throttle_and_creeps_back() {
        assert_eq!(decrease_rate(80.0, 0.5, 1.0), 40.0);
        assert_eq!(decrease_rate(1.5, 0.5, 1.0), 1.0);
        assert_eq!(recover_rate(40.0, 4.0, 80.0), 44.0);
        assert_eq!(recover_rate(78.0, 4.0, 80.0), 80.0);
    }

    proptest! {
        #[test]
        fn retry_delay_never_exceeds_cap(attempt in 0u32..100, jitter in 0.0f64..=1.0, base_ms in 1u64..10_000, cap_ms in 1u64..600_000) {
            let d = retry_delay(attempt, Duration::from_millis(base_ms), Duration::from_millis(cap_ms), jitter);
            prop_assert!(d <= Duration::from_millis(cap_ms));
        }

        #[test]
        fn aimd_stays_within_bounds(start in 1.0f64..1000.0, steps in proptest::collection::vec(any::<bool>(), 0..200)) {
            let ceiling = 1000.0;
            let mut r = start;
            for throttled in steps {
                r = if throttled { decrease_rate(r, 0.5, 1.0) } else { recover_rate(r, ceiling * 0.05, ceiling) };
                prop_assert!((1.0..=ceiling).contains(&r));
            }
        }
    }
}
