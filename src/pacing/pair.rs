//! Meta's pair rate limit: one business number to one user, about one message per 6 s with
//! bursts up to 45 borrowed from the future. A GCRA per (number, user) keeps herald under it;
//! entries disappear once their debt is paid, so memory follows the recent send rate, not the
//! campaign size.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::domain::{PhoneNumber, SenderId};

pub struct PairLimiter {
    interval: Duration,
    /// Most sends allowed at once (Meta's burst).
    burst: u32,
    state: Mutex<PairState>,
}

struct PairState {
    /// Theoretical arrival time per pair: when its debt is paid.
    tat: HashMap<(SenderId, PhoneNumber), Instant>,
    last_prune: Instant,
}

impl Default for PairLimiter {
    fn default() -> Self {
        Self::new(Duration::from_secs(6), 45)
    }
}

impl PairLimiter {
    pub fn new(interval: Duration, burst: u32) -> Self {
        Self {
            interval,
            burst: burst.max(1),
            state: Mutex::new(PairState {
                tat: HashMap::new(),
                last_prune: Instant::now(),
            }),
        }
    }

    /// Takes a slot for (sender, to) now, or says how long to wait for one.
    pub fn check(&self, sender: &SenderId, to: &PhoneNumber) -> Result<(), Duration> {
        self.check_at(sender, to, Instant::now())
    }

    fn check_at(&self, sender: &SenderId, to: &PhoneNumber, now: Instant) -> Result<(), Duration> {
        let mut st = self.state.lock().expect("pair lock");
        if now.duration_since(st.last_prune) > Duration::from_secs(1) {
            st.tat.retain(|_, tat| *tat > now);
            st.last_prune = now;
        }
        let tolerance = self.interval * (self.burst - 1);
        let key = (sender.clone(), to.clone());
        let tat = st.tat.get(&key).copied().unwrap_or(now).max(now);
        let allowed_at = tat.checked_sub(tolerance).unwrap_or(now);
        if allowed_at > now {
            return Err(allowed_at - now);
        }
        st.tat.insert(key, tat + self.interval);
        Ok(())
    }

    /// Pairs currently tracked (for tests and memory checks).
    pub fn tracked(&self) -> usize {
        self.state.lock().expect("pair lock").tat.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_allowed_then_one_per_interval() {
        let l = PairLimiter::new(Duration::from_secs(6), 3);
        let s = SenderId::parse("1").unwrap();
        let to = PhoneNumber::parse("+4915112345678").unwrap();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(l.check_at(&s, &to, t0).is_ok());
        }
        let wait = l.check_at(&s, &to, t0).unwrap_err();
        assert_eq!(wait, Duration::from_secs(6));
        assert!(l.check_at(&s, &to, t0 + Duration::from_secs(6)).is_ok());
        // Other recipients are unaffected.
        let other = PhoneNumber::parse("+4917698765432").unwrap();
        assert!(l.check_at(&s, &other, t0).is_ok());
    }

    #[test]
    fn paid_off_pairs_are_forgotten() {
        let l = PairLimiter::new(Duration::from_millis(10), 45);
        let s = SenderId::parse("1").unwrap();
        let t0 = Instant::now();
        let to = PhoneNumber::parse("+4915112345678").unwrap();
        l.check_at(&s, &to, t0).unwrap();
        assert_eq!(l.tracked(), 1);
        let other = PhoneNumber::parse("+4917698765432").unwrap();
        l.check_at(&s, &other, t0 + Duration::from_secs(2)).unwrap();
        assert_eq!(l.tracked(), 1);
    }
}
