//! The retention purge as herald runs it (`policy::retention` decides what goes,
//! `Store::purge` deletes it): `herald purge` once, and workers and `herald serve` every
//! `HERALD_PURGE_INTERVAL` (jittered, so a fleet of workers does not purge in step), on
//! herald's clock. Several processes purging at once is safe: each row is deleted once.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::Args;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::CliError;
use crate::domain::Clock;
use crate::policy::retention::RetentionPolicy;
use crate::store::{PurgeCounts, Store, StoreResult};
use crate::telemetry::metrics;

/// How long personal data is kept (DESIGN §1.1).
#[derive(Args, Debug, Clone, Default)]
pub struct RetentionOpts {
    /// How long personal data is kept, per class: `class=duration,…` (e.g.
    /// `ledger=400d,inbound=30d,conversions=90d`; `never` keeps a class). Classes not named
    /// keep their defaults: ledger=400d, inbound=30d, conversions=400d, consents=1096d (after
    /// the revocation), tier=2d, timers=30d, suppressions=never, audit=365d, events=30d
    /// (published and dead per-recipient events).
    #[arg(long, env = "HERALD_RETENTION", default_value = "")]
    pub retention: String,
}

impl RetentionOpts {
    /// The policy, or a usage error naming the class at fault.
    pub fn policy(&self) -> Result<RetentionPolicy, CliError> {
        RetentionPolicy::parse(&self.retention)
            .map_err(|e| CliError::Usage(format!("HERALD_RETENTION: {e}")))
    }
}

/// Whether and how often a long-running process purges.
#[derive(Args, Debug, Clone)]
pub struct PurgeOpts {
    #[command(flatten)]
    pub retention: RetentionOpts,
    /// How often this process runs the retention purge (jittered by ±25 %; `0` turns it
    /// off). Hourly keeps each purge small.
    #[arg(long, env = "HERALD_PURGE_INTERVAL", default_value = "1h", value_parser = humantime::parse_duration)]
    pub purge_interval: Duration,
    /// Do not purge here (another process does, or `herald purge` runs from cron).
    #[arg(long, env = "HERALD_NO_PURGE")]
    pub no_purge: bool,
}

impl PurgeOpts {
    /// The policy and interval when this process purges; `None` when it does not. A bad
    /// `HERALD_RETENTION` is a usage error even then: it is caught at start, not at the
    /// first `herald purge`.
    pub fn schedule(&self) -> Result<Option<(RetentionPolicy, Duration)>, CliError> {
        let policy = self.retention.policy()?;
        if self.no_purge || self.purge_interval.is_zero() {
            return Ok(None);
        }
        if self.purge_interval < Duration::from_secs(1) {
            return Err(CliError::Usage(
                "--purge-interval must be at least 1s (or 0 for off)".into(),
            ));
        }
        Ok(Some((policy, self.purge_interval)))
    }
}

/// One purge at `now`: deletes (or, dry, counts) and counts what went in
/// `herald_purged_rows_total`.
pub async fn purge_once(
    store: &dyn Store,
    policy: &RetentionPolicy,
    now: DateTime<Utc>,
    dry_run: bool,
) -> StoreResult<PurgeCounts> {
    let counts = store.purge(policy, now, dry_run).await?;
    if !dry_run {
        for (class, n) in &counts.rows {
            metrics::purged_rows(class.as_str(), *n);
        }
    }
    Ok(counts)
}

/// Runs the purge every `every` (±25 %, the first within one interval of starting) until
/// `stop`. A failed purge is logged and tried at the next turn; one cut short by `stop` has
/// committed its finished batches and loses nothing.
pub fn spawn_purges(
    store: Arc<dyn Store>,
    policy: RetentionPolicy,
    clock: Clock,
    every: Duration,
    stop: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut wait = every.mul_f64(rand::random::<f64>());
        loop {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.cancelled() => return,
            }
            tokio::select! {
                done = purge_once(&*store, &policy, clock.now(), false) => match done {
                    Ok(c) if c.total() > 0 => info!(rows = ?c.rows, "retention purge"),
                    Ok(_) => {}
                    Err(e) => warn!(error = %e, "retention purge failed; trying again later"),
                },
                _ = stop.cancelled() => return,
            }
            wait = every.mul_f64(0.75 + rand::random::<f64>() / 2.0);
        }
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct P {
        #[command(flatten)]
        purge: PurgeOpts,
    }

    fn opts(args: &[&str]) -> PurgeOpts {
        P::try_parse_from(["p"].iter().chain(args)).unwrap().purge
    }

    #[test]
    fn the_help_lists_the_defaults_of_the_table() {
        use clap::CommandFactory;
        let cmd = P::command();
        let arg = cmd
            .get_arguments()
            .find(|a| a.get_id() == "retention")
            .unwrap();
        let help = arg.get_help().unwrap().to_string();
        for part in RetentionPolicy::default().to_string().split(',') {
            assert!(help.contains(part), "{part} missing from: {help}");
        }
    }

    #[test]
    fn purging_is_hourly_unless_turned_off() {
        let (_, every) = opts(&[]).schedule().unwrap().unwrap();
        assert_eq!(every, Duration::from_secs(3600));
        assert!(opts(&["--no-purge"]).schedule().unwrap().is_none());
        assert!(
            opts(&["--purge-interval", "0"])
                .schedule()
                .unwrap()
                .is_none()
        );
    }

    #[tokio::test]
    async fn workers_purge_on_their_interval_on_heralds_clock_until_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("h.db").display());
        let store = crate::store::open(&url).await.unwrap();
        let day = Duration::from_secs(24 * 3600);
        let reached = [crate::domain::PhoneNumber::from_trusted("+4915112345678")];
        store.reserve_tier("pf", None, day, &reached).await.unwrap();
        let clock = Clock::system();
        let stop = CancellationToken::new();
        let task = spawn_purges(
            Arc::clone(&store),
            RetentionPolicy::default(),
            clock.clone(),
            Duration::from_millis(10),
            stop.clone(),
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            store.tier_usage("pf", day * 1000).await.unwrap(),
            1,
            "not 2 days old yet"
        );
        // Three days later on herald's clock the tier row is past its period.
        clock.advance(day * 3);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while store.tier_usage("pf", day * 1000).await.unwrap() > 0 {
            assert!(tokio::time::Instant::now() < deadline, "never purged");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("stops when told")
            .unwrap();
    }

    #[test]
    fn a_bad_retention_is_a_usage_error_even_when_not_purging() {
        let e = opts(&["--no-purge", "--retention", "inbox=3d"])
            .schedule()
            .unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("HERALD_RETENTION") && e.to_string().contains("inbox"));
    }
}
