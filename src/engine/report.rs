//! What running a job produced: per-outcome counts, failed keys, cost, and whether work was
//! left for later.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::domain::{Category, IdempotencyKey, Outcome};
use crate::policy::cost::CostTally;
use crate::policy::gate::{DeferReason, RejectReason};

/// Why a run stopped before every key had its outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "cause", rename_all = "snake_case")]
pub enum StopCause {
    /// SIGTERM: the rest was handed back.
    Shutdown,
    /// An operator paused the campaign.
    CampaignPaused,
    /// A template or payload error from Meta paused the campaign.
    CampaignFatal { code: i64, message: String },
    /// An auth, payment or policy error from Meta stopped the sender.
    SenderStopped { code: i64, message: String },
}

impl std::fmt::Display for StopCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Shutdown => f.write_str("shutting down"),
            Self::CampaignPaused => f.write_str("campaign paused"),
            Self::CampaignFatal { code, message } => {
                write!(f, "campaign paused after error {code}: {message}")
            }
            Self::SenderStopped { code, message } => {
                write!(f, "sender stopped after error {code}: {message}")
            }
        }
    }
}

/// The result of running a job.
#[derive(Debug)]
pub enum JobRun {
    /// The job can never be sent as is; nothing was claimed.
    Rejected(RejectReason),
    /// The whole job is held back; nothing was claimed.
    Deferred(DeferReason),
    /// The job ran; see the report for what is left, if anything.
    Finished(Box<JobReport>),
}

/// Counts and details of one run of a job.
#[derive(Debug, Clone, Default, Serialize)]
pub struct JobReport {
    pub job_id: String,
    pub campaign_id: String,
    pub sender: String,
    pub category: Option<Category>,
    /// Final outcomes written by this run: `sent`, `unknown`, `failed:<code>`,
    /// `skipped:<reason>`.
    pub outcomes: BTreeMap<String, u64>,
    /// Keys that already had an outcome (an earlier run or an overlapping job).
    pub already_done: u64,
    /// Keys another live worker holds right now.
    pub held_elsewhere: u64,
    /// Failed keys with their Graph error codes (first 1,000).
    pub failed: Vec<(IdempotencyKey, i64)>,
    /// Keys left pending for a later run (deferred, paused, stopped).
    pub remaining: u64,
    /// When a later run should pick the remaining keys up.
    pub resume_after: Option<DateTime<Utc>>,
    pub stop: Option<StopCause>,
    /// Sends Meta accepted but held for template quality assessment.
    pub held_for_quality: u64,
    pub retries: u64,
    /// The latest error answer or transport failure seen, for the operator.
    pub last_error: Option<String>,
    /// `unknown` keys the webhooks showed were never accepted, put back and sent again in
    /// this run (each at most once, ever).
    pub resent_unknown: u64,
    /// `unknown` keys of the job that may still be resolved that way: the job should run
    /// again at `unknown_recheck_at` (a worker defers it until then instead of acking).
    pub unknown_waiting: u64,
    pub unknown_recheck_at: Option<DateTime<Utc>>,
    #[serde(skip)]
    pub cost: CostTally,
    pub elapsed: Duration,
}

impl JobReport {
    pub(crate) fn count(&mut self, outcome: &Outcome) {
        // The common labels are looked up without allocating.
        let fixed = match outcome {
            Outcome::Sent { .. } => Some("sent"),
            Outcome::Unknown => Some("unknown"),
            _ => None,
        };
        if let Some(n) = fixed.and_then(|k| self.outcomes.get_mut(k)) {
            *n += 1;
            return;
        }
        let label = match outcome {
            Outcome::Sent { .. } => "sent".to_owned(),
            Outcome::Unknown => "unknown".to_owned(),
            Outcome::Failed { code } => format!("failed:{code}"),
            Outcome::Skipped { reason } => format!("skipped:{reason}"),
        };
        *self.outcomes.entry(label).or_default() += 1;
    }

    /// Final outcomes of a kind: `sent`, `failed`, `skipped` or `unknown`.
    pub fn total(&self, kind: &str) -> u64 {
        self.outcomes
            .iter()
            .filter(|(k, _)| k.as_str() == kind || k.split(':').next() == Some(kind))
            .map(|(_, n)| n)
            .sum()
    }

    /// Every key of this run has its final outcome (or had one already). Keys held by
    /// another run are not: that run may still die before sending them.
    pub fn is_complete(&self) -> bool {
        self.remaining == 0 && self.held_elsewhere == 0 && self.stop.is_none()
    }
}

impl JobReport {
    /// A human summary: outcomes, cost and what is left.
    pub fn summary(&self, currency: &str) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        let sent = self.total("sent");
        let _ = writeln!(
            out,
            "job {} (campaign {}, sender {}): {} sent in {:.2} s ({:.0} msg/s)",
            self.job_id,
            self.campaign_id,
            self.sender,
            sent,
            secs,
            sent as f64 / secs
        );
        for (label, n) in &self.outcomes {
            let _ = writeln!(out, "  {label:<28} {n:>8}");
        }
        if self.already_done > 0 {
            let _ = writeln!(
                out,
                "  {:<28} {:>8}",
                "already done (not resent)", self.already_done
            );
        }
        if self.held_elsewhere > 0 {
            let _ = writeln!(
                out,
                "  {:<28} {:>8}",
                "held by another worker", self.held_elsewhere
            );
        }
        if self.remaining > 0 {
            let _ = writeln!(
                out,
                "  {:<28} {:>8}",
                "left for a later run", self.remaining
            );
        }
        let window_closed = self.total("skipped:window_closed");
        if window_closed > 0 {
            let _ = writeln!(
                out,
                "  {window_closed} without an open customer-service window: a session message goes only to customers who wrote to this number in the last 24 h{}",
                if sent == 0 {
                    " — none had; add a `template` to reach the others"
                } else {
                    ""
                }
            );
        }
        if self.retries > 0 {
            let _ = writeln!(out, "  retries: {}", self.retries);
        }
        if self.resent_unknown > 0 {
            let _ = writeln!(
                out,
                "  resent after the webhooks showed Meta never accepted them: {}",
                self.resent_unknown
            );
        }
        if let Some(at) = self.unknown_recheck_at.filter(|_| self.unknown_waiting > 0) {
            let _ = writeln!(
                out,
                "  {} unknown (the request may have reached Meta): resent once if the status webhooks show it did not; run again after {} (`herald report CAMPAIGN --unknown` lists them)",
                self.unknown_waiting,
                at.format("%Y-%m-%d %H:%M:%S UTC")
            );
        }
        if self.held_for_quality > 0 {
            let _ = writeln!(
                out,
                "  held by Meta for template quality assessment: {}",
                self.held_for_quality
            );
        }
        let _ = writeln!(
            out,
            "  estimated cost: {}{}",
            crate::policy::cost::format_micros(self.cost.total_micros(), currency),
            if self.cost.unpriced > 0 {
                format!(" (+{} unpriced)", self.cost.unpriced)
            } else {
                String::new()
            }
        );
        if self.cost.free > 0 {
            let _ = writeln!(
                out,
                "  free in the customer-service window: {}",
                self.cost.free
            );
        }
        out
    }
}
