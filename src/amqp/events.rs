//! Job events published to the `{prefix}.events` topic exchange, so campaign systems learn
//! what became of their jobs without polling: `job.completed` (every recipient has its
//! outcome) and `job.dead_lettered` (the job was refused, with the reason).
//!
//! JSON, one object per message, `content_type=application/json`. Fields may be added, never
//! renamed. No phone numbers: keys and counts only.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use lapin::BasicProperties;
use lapin::types::ShortString;
use serde::Serialize;

use super::connection::{AmqpError, Publisher};
use super::topology::{Topology, short};
use crate::engine::{JobReport, StopCause};

pub const JOB_COMPLETED: &str = "job.completed";
pub const JOB_DEAD_LETTERED: &str = "job.dead_lettered";

/// Every recipient of a job has its final outcome.
#[derive(Debug, Clone, Serialize)]
pub struct JobCompleted {
    pub event: &'static str,
    pub campaign: String,
    pub job: String,
    pub sender: String,
    /// Final outcomes written by this run: `sent`, `unknown`, `failed:<code>`,
    /// `skipped:<reason>`.
    pub outcomes: BTreeMap<String, u64>,
    /// Sums of `outcomes` per kind: `sent`, `failed`, `skipped`, `unknown`.
    pub totals: BTreeMap<&'static str, u64>,
    /// Keys that already had an outcome (an earlier run of this job — a redelivery — or an
    /// overlapping job). A redelivered job reports them here instead of in `outcomes`.
    pub already_done: u64,
    /// Failed keys with their Graph error codes (at most the first 1,000).
    pub failed: Vec<FailedKey>,
    /// Keys left for a later run; 0 in a `job.completed` event.
    pub remaining: u64,
    /// Why the run stopped early, if it did (all keys were final anyway).
    pub stop: Option<StopCause>,
    pub elapsed_seconds: f64,
    pub completed_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FailedKey {
    pub key: String,
    pub code: i64,
}

impl JobCompleted {
    pub fn from_report(report: &JobReport) -> Self {
        let totals = ["sent", "failed", "skipped", "unknown"]
            .into_iter()
            .map(|k| (k, report.total(k)))
            .collect();
        Self {
            event: JOB_COMPLETED,
            campaign: report.campaign_id.clone(),
            job: report.job_id.clone(),
            sender: report.sender.clone(),
            outcomes: report.outcomes.clone(),
            totals,
            already_done: report.already_done,
            failed: report
                .failed
                .iter()
                .map(|(k, code)| FailedKey {
                    key: k.as_str().to_owned(),
                    code: *code,
                })
                .collect(),
            remaining: report.remaining,
            stop: report.stop.clone(),
            elapsed_seconds: report.elapsed.as_secs_f64(),
            completed_at: Utc::now(),
        }
    }
}

/// A job was refused and moved to `{prefix}.dead`.
#[derive(Debug, Clone, Serialize)]
pub struct JobDeadLettered {
    pub event: &'static str,
    /// From the job body when it parsed far enough, else the AMQP `message_id`.
    pub job: Option<String>,
    pub campaign: Option<String>,
    /// The routing key it was published with (the sender id, per contract).
    pub routing_key: String,
    /// Short fixed label (`invalid_json`, `unknown_sender`, …), also in `x-herald-reason-code`.
    pub reason_code: &'static str,
    /// The full reason, also in `x-herald-reason`.
    pub reason: String,
    pub at: DateTime<Utc>,
}

/// Publishes an event with publisher confirms. Not `mandatory`: an exchange nobody listens to
/// is fine.
pub async fn publish<E: Serialize>(
    publisher: &Publisher,
    topology: &Topology,
    routing_key: &str,
    message_id: Option<&str>,
    event: &E,
) -> Result<(), AmqpError> {
    let body = serde_json::to_vec(event).expect("events serialise");
    let mut props = BasicProperties::default()
        .with_content_type(ShortString::from("application/json"))
        .with_delivery_mode(2)
        .with_timestamp(Utc::now().timestamp().max(0) as u64)
        .with_type(ShortString::from(routing_key))
        .with_app_id(ShortString::from("herald"));
    if let Some(id) = message_id.and_then(short) {
        props = props.with_message_id(id);
    }
    publisher
        .publish(
            &topology.events_exchange(),
            routing_key,
            false,
            &body,
            props,
        )
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::IdempotencyKey;
    use std::time::Duration;

    #[test]
    fn a_completed_event_carries_counts_failures_and_stop_cause() {
        let mut report = JobReport {
            job_id: "j1".into(),
            campaign_id: "c1".into(),
            sender: "106540352242922".into(),
            elapsed: Duration::from_millis(1500),
            already_done: 2,
            ..JobReport::default()
        };
        report.outcomes.insert("sent".into(), 7);
        report.outcomes.insert("failed:131026".into(), 1);
        report.outcomes.insert("skipped:no_consent".into(), 2);
        report
            .failed
            .push((IdempotencyKey::from_trusted("k:c1:abc"), 131026));
        let v = serde_json::to_value(JobCompleted::from_report(&report)).unwrap();
        assert_eq!(v["event"], "job.completed");
        assert_eq!(v["campaign"], "c1");
        assert_eq!(v["job"], "j1");
        assert_eq!(v["outcomes"]["sent"], 7);
        assert_eq!(v["totals"]["failed"], 1);
        assert_eq!(v["totals"]["skipped"], 2);
        assert_eq!(v["already_done"], 2);
        assert_eq!(v["failed"][0]["key"], "k:c1:abc");
        assert_eq!(v["failed"][0]["code"], 131026);
        assert_eq!(v["remaining"], 0);
        assert!(v["stop"].is_null());
        assert_eq!(v["elapsed_seconds"], 1.5);
    }
}
