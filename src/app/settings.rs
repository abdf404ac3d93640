//! One clap struct per concern, flattened into every command that needs it, so a setting's
//! flag, environment variable, default and validation message are written once.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::CliError;
use crate::channel::sms::SmsRoute;
use crate::policy::cost::RateCard;

/// Longest drain accepted: Kubernetes' grace period must exceed it, and holding jobs unacked
/// or requests open longer than a few minutes only delays their takeover by another pod.
pub const MAX_DRAIN_SECONDS: u64 = 600;

/// Which prices herald commits against budgets and shows in estimates.
#[derive(Args, Debug, Clone, Default)]
pub struct RateCardOpts {
    /// Rate card JSON replacing the built-in Meta list prices.
    #[arg(long, env = "HERALD_RATE_CARD")]
    pub rate_card: Option<PathBuf>,
}

impl RateCardOpts {
    /// The configured rate card, or the built-in one; a card that does not load is a usage
    /// error.
    pub fn load(&self) -> Result<RateCard, CliError> {
        match &self.rate_card {
            Some(p) => RateCard::load(p).map_err(|e| CliError::Usage(e.to_string())),
            None => Ok(RateCard::builtin()),
        }
    }
}

/// How much of each number's rate herald uses.
#[derive(Args, Debug, Clone)]
pub struct PacingOpts {
    /// Share of each number's rate herald uses (leave room for inbound traffic).
    #[arg(long, env = "HERALD_HEADROOM", default_value_t = 0.97)]
    pub headroom: f64,
}

impl PacingOpts {
    pub fn check(&self) -> Result<(), CliError> {
        let h = self.headroom;
        if !(h > 0.0 && h <= 1.0) {
            return Err(CliError::Usage(format!(
                "--headroom must be in (0, 1], got {h}"
            )));
        }
        Ok(())
    }
}

/// How long an SMS text may be.
#[derive(Args, Debug, Clone)]
pub struct SmsOpts {
    /// Most SMS parts one recipient's text may take (each part is billed); a job with a
    /// longer text is refused naming the recipient.
    #[arg(long, env = "HERALD_SMS_MAX_PARTS", default_value_t = 3)]
    pub sms_max_parts: u32,
    /// The SMS route: `smpp://system_id:password@host:port` (`smpps://` for TLS), options
    /// as query parameters: `tps`, `window`, `source_ton`, `source_npi`, `system_type`,
    /// `enquire_link`, `response_timeout`, `receipt_ids`, `name`. Without it, jobs that may
    /// need SMS are refused (`sms_unavailable`).
    #[arg(long, env = "HERALD_SMS_URL", hide_env_values = true)]
    pub sms_url: Option<String>,
}

impl SmsOpts {
    pub fn check(&self) -> Result<(), CliError> {
        if self.sms_max_parts == 0 {
            return Err(CliError::Usage("--sms-max-parts must be at least 1".into()));
        }
        self.route()?;
        Ok(())
    }

    /// The SMS route, when one is configured.
    pub fn route(&self) -> Result<Option<SmsRoute>, CliError> {
        self.sms_url
            .as_deref()
            .filter(|u| !u.trim().is_empty())
            .map(SmsRoute::parse)
            .transpose()
            .map_err(CliError::Usage)
    }
}

/// How many requests go out at once per number.
#[derive(Args, Debug, Clone)]
pub struct InflightOpts {
    /// Requests in flight per sender.
    #[arg(long, env = "HERALD_MAX_INFLIGHT", default_value_t = 256)]
    pub max_inflight: usize,
    /// How far ahead of its send a key is marked `sending` at least, in milliseconds of the
    /// number's rate (at least 2 keys, at most 256); on a slow link herald marks up to half
    /// the requests in flight ahead instead, half of that per statement. A crash leaves the
    /// marked-ahead keys `unknown` beside the requests in flight; each mark is a statement, so
    /// a longer mark-ahead takes load off the store.
    #[arg(long, env = "HERALD_MARK_AHEAD_MS", default_value_t = 10)]
    pub mark_ahead_ms: u64,
}

impl InflightOpts {
    pub fn check(&self) -> Result<(), CliError> {
        if self.max_inflight == 0 {
            return Err(CliError::Usage("--max-inflight must be at least 1".into()));
        }
        if !(1..=1000).contains(&self.mark_ahead_ms) {
            return Err(CliError::Usage(format!(
                "--mark-ahead-ms must be between 1 and 1000, got {}",
                self.mark_ahead_ms
            )));
        }
        Ok(())
    }
}

/// How long a long-running process may take to stop after SIGTERM.
#[derive(Args, Debug, Clone)]
pub struct DrainOpts {
    /// On SIGTERM, how long work in progress may take to finish (`worker`: jobs handing back
    /// their unsent recipients before they return to the queue; `serve`: requests in flight
    /// once the listener closed). Keep it below the pod's grace period.
    #[arg(long, env = "HERALD_DRAIN_SECONDS", default_value_t = 25)]
    pub drain_seconds: u64,
}

impl DrainOpts {
    pub fn check(&self) -> Result<(), CliError> {
        if self.drain_seconds > MAX_DRAIN_SECONDS {
            return Err(CliError::Usage(format!(
                "--drain-seconds must be at most {MAX_DRAIN_SECONDS}, got {}",
                self.drain_seconds
            )));
        }
        Ok(())
    }

    pub fn drain(&self) -> Duration {
        Duration::from_secs(self.drain_seconds)
    }
}
