//! The simulated customers behind the recipients: whose phone receives a message (`delivered`),
//! who then opens it (`read`), and the simulated clock that lets "24 h later" pass in seconds.
//! Pure decisions over plain types; `webhooks` waits and posts.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::config::SimConfig;
use super::hashing::share_point;

/// Salts of the two picks, so who reads does not follow from who is delivered (nor from the
/// `undeliverable_ratio` or the SMSC's picks, which hash the number with other salts).
const DELIVERED_SALT: &str = "delivered";
const READ_SALT: &str = "read";

/// The longest real wait for a status; longer delays are cut to it, which keeps `Instant`
/// arithmetic from overflowing on absurd delays and speeds.
const MAX_REAL_DELAY: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// What happens to an accepted message after `sent`, decided when it is accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Fate {
    /// The customer's phone receives it: a `delivered` status follows `sent`.
    pub delivered: bool,
    /// The customer opens it: a `read` status follows `delivered` (never without it).
    pub read: bool,
}

impl Fate {
    /// The status webhooks the message produces: `sent`, then `delivered` and `read` if due.
    pub fn statuses(self) -> u64 {
        1 + u64::from(self.delivered) + u64::from(self.read)
    }
}

/// The fate of a message to `recipient_digits` (`wa_id` form): a salted stable hash of the
/// number against [`SimConfig::delivered_share`], then another against
/// [`SimConfig::read_share`], so the same customers receive and read on every run.
pub fn fate(config: &SimConfig, recipient_digits: &str) -> Fate {
    let delivered = picked(DELIVERED_SALT, recipient_digits, config.delivered_share);
    Fate {
        delivered,
        read: delivered && picked(READ_SALT, recipient_digits, config.read_share),
    }
}

fn picked(salt: &str, digits: &str, share: f64) -> bool {
    share >= 1.0 || (share > 0.0 && share_point(salt, digits) < share)
}

/// The simulator's clock: starts at the real time and runs `speed` times faster, so status
/// timestamps read like the hours that are being simulated.
#[derive(Debug, Clone, Copy)]
pub struct SimClock {
    started: Instant,
    /// Unix time at `started`, in seconds.
    started_unix: f64,
    speed: f64,
}

impl SimClock {
    /// A clock starting now; `speed` must be finite and positive (checked by
    /// [`SimConfig::validate`]).
    pub fn new(speed: f64) -> Self {
        let started_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        Self {
            started: Instant::now(),
            started_unix,
            speed,
        }
    }

    /// Simulated Unix seconds: the start plus the real time elapsed times the speed.
    pub fn now_unix(&self) -> u64 {
        self.unix_at(Instant::now())
    }

    fn unix_at(&self, at: Instant) -> u64 {
        let elapsed = at.saturating_duration_since(self.started).as_secs_f64();
        (self.started_unix + elapsed * self.speed) as u64
    }

    /// The real time a simulated delay takes: `delay / speed`, at most a year.
    pub fn real(&self, delay: Duration) -> Duration {
        Duration::try_from_secs_f64(delay.as_secs_f64() / self.speed)
            .map_or(MAX_REAL_DELAY, |d| d.min(MAX_REAL_DELAY))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn customers(delivered_share: f64, read_share: f64) -> SimConfig {
        SimConfig {
            delivered_share,
            read_share,
            ..SimConfig::default()
        }
    }

    fn numbers() -> Vec<String> {
        (0..10_000).map(|i| format!("4915{i:08}")).collect()
    }

    #[test]
    fn about_the_read_share_of_delivered_customers_read_and_the_same_ones_every_run() {
        let config = customers(1.0, 0.3);
        let numbers = numbers();
        let readers: Vec<&String> = numbers.iter().filter(|n| fate(&config, n).read).collect();
        assert!((2_800..3_200).contains(&readers.len()), "{}", readers.len());
        let again: Vec<&String> = numbers.iter().filter(|n| fate(&config, n).read).collect();
        assert_eq!(readers, again);
        // Pinned, so a test or the demo may name its readers in advance.
        let first: Vec<usize> = (0..8)
            .filter(|i| fate(&config, &numbers[*i]).read)
            .collect();
        assert_eq!(first, [3, 7]);
    }

    #[test]
    fn only_delivered_customers_read_and_the_two_picks_are_independent() {
        let config = customers(0.5, 0.5);
        let fates: Vec<Fate> = numbers().iter().map(|n| fate(&config, n)).collect();
        let delivered = fates.iter().filter(|f| f.delivered).count();
        let read = fates.iter().filter(|f| f.read).count();
        assert!((4_800..5_200).contains(&delivered), "{delivered}");
        // Half of the delivered half: the read pick does not follow the delivered one.
        assert!((2_300..2_700).contains(&read), "{read}");
        assert!(fates.iter().all(|f| f.delivered || !f.read));
    }

    #[test]
    fn the_defaults_deliver_everything_and_nobody_reads() {
        let config = SimConfig::default();
        assert!(numbers().iter().all(|n| fate(&config, n)
            == Fate {
                delivered: true,
                read: false
            }));
        let all = customers(1.0, 1.0);
        assert!(numbers().iter().all(|n| fate(&all, n).read));
        let none = customers(0.0, 1.0);
        assert!(numbers().iter().all(|n| fate(&none, n) == Fate::default()));
        assert_eq!(Fate::default().statuses(), 1);
        assert_eq!(fate(&all, "491").statuses(), 3);
    }

    #[test]
    fn a_sped_up_clock_shortens_delays_and_runs_timestamps_ahead() {
        let clock = SimClock::new(3600.0);
        assert_eq!(
            clock.real(Duration::from_secs(60 * 60)),
            Duration::from_secs(1)
        );
        let later = clock.started + Duration::from_secs(10);
        assert_eq!(
            clock.unix_at(later) - clock.unix_at(clock.started),
            10 * 3600
        );
        let slow = SimClock::new(1e-12);
        assert_eq!(slow.real(Duration::from_secs(u64::MAX)), MAX_REAL_DELAY);
        let real_time = SimClock::new(1.0);
        assert_eq!(
            real_time.real(Duration::from_millis(250)),
            Duration::from_millis(250)
        );
    }
}
