//! Every metric herald exports, named once. Prometheus conventions: counters end in `_total`,
//! durations are `_seconds` histograms with explicit buckets. Labels come from small fixed
//! sets: sender ids (a handful of business numbers), categories, outcomes, skip reasons and
//! Graph error codes folded to the known list — never phone numbers, keys or error strings.
//!
//! The dashboard (`deploy/grafana/herald.json`) and alert rules (`deploy/prometheus/alerts.yml`)
//! use only names from [`ALL`]; a test checks that.

use std::net::SocketAddr;
use std::time::Duration;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::domain::{Category, ChannelKind, ConversionTally, Outcome};

pub const MESSAGES: &str = "herald_messages_total";
pub const SEND_DURATION: &str = "herald_send_duration_seconds";
pub const INFLIGHT: &str = "herald_inflight_requests";
pub const RATE_WAIT: &str = "herald_rate_limiter_wait_seconds";
pub const SENDER_RATE_LIMIT: &str = "herald_sender_rate_limit";
pub const SENDER_EFFECTIVE_RATE: &str = "herald_sender_effective_rate";
pub const SENDER_STOPPED: &str = "herald_sender_stopped";
pub const THROTTLED: &str = "herald_throttled_total";
/// Shared send slots (workers on Postgres) that came due while this process could not use
/// them and were skipped, never sent late next to another worker's.
pub const SLOTS_MISSED: &str = "herald_send_slots_missed_total";
pub const RETRIES: &str = "herald_retries_total";
pub const JOBS_CONSUMED: &str = "herald_jobs_consumed_total";
pub const JOBS_ACKED: &str = "herald_jobs_acked_total";
pub const JOBS_DEAD_LETTERED: &str = "herald_jobs_dead_lettered_total";
pub const JOBS_DEFERRED: &str = "herald_jobs_deferred_total";
pub const JOBS_STALE_COPIES: &str = "herald_jobs_stale_copies_dropped_total";
pub const JOB_AGE: &str = "herald_job_age_seconds";
pub const TIER_USED: &str = "herald_tier_used";
pub const TIER_LIMIT: &str = "herald_tier_limit";
pub const TIER_REMAINING: &str = "herald_tier_remaining";
pub const ESTIMATED_COST: &str = "herald_estimated_cost_micros_total";
pub const CAMPAIGNS: &str = "herald_campaigns";
pub const WEBHOOK_EVENTS: &str = "herald_webhook_events_total";
pub const BUDGET_REMAINING: &str = "herald_campaign_budget_remaining_micros";
pub const UNKNOWN_RECIPIENTS: &str = "herald_unknown_recipients";
pub const UNKNOWN_RESENT: &str = "herald_unknown_resent_total";
pub const SMS_BIND_UP: &str = "herald_sms_bind_up";
pub const SMS_BIND_FAILURES: &str = "herald_sms_bind_failures_total";
pub const SMS_RECEIPTS: &str = "herald_sms_receipts_total";
pub const SMS_INBOUND: &str = "herald_sms_inbound_total";
pub const FALLBACKS: &str = "herald_fallbacks_total";
pub const FOLLOW_UPS: &str = "herald_follow_ups_total";
pub const CONVERSIONS: &str = "herald_conversions_total";
pub const MESSAGE_STATUSES: &str = "herald_message_statuses_total";
pub const INBOUND_MESSAGES: &str = "herald_inbound_messages_total";
pub const OPTINS: &str = "herald_optins_total";
pub const BILLED_COST: &str = "herald_billed_cost_micros_total";
pub const PURGED_ROWS: &str = "herald_purged_rows_total";
pub const ADMIN_REQUESTS: &str = "herald_admin_requests_total";
pub const CRM_EVENTS: &str = "herald_crm_events_total";
pub const CRM_EVENTS_DEAD: &str = "herald_crm_events_dead_total";
pub const CRM_OUTBOX_DEPTH: &str = "herald_crm_outbox_depth";
pub const CRM_OUTBOX_OLDEST: &str = "herald_crm_outbox_oldest_seconds";

/// Every metric name herald exports.
pub const ALL: &[&str] = &[
    MESSAGES,
    SEND_DURATION,
    INFLIGHT,
    RATE_WAIT,
    SENDER_RATE_LIMIT,
    SENDER_EFFECTIVE_RATE,
    SENDER_STOPPED,
    THROTTLED,
    SLOTS_MISSED,
    RETRIES,
    JOBS_CONSUMED,
    JOBS_ACKED,
    JOBS_DEAD_LETTERED,
    JOBS_DEFERRED,
    JOBS_STALE_COPIES,
    JOB_AGE,
    TIER_USED,
    TIER_LIMIT,
    TIER_REMAINING,
    ESTIMATED_COST,
    CAMPAIGNS,
    WEBHOOK_EVENTS,
    BUDGET_REMAINING,
    UNKNOWN_RECIPIENTS,
    UNKNOWN_RESENT,
    SMS_BIND_UP,
    SMS_BIND_FAILURES,
    SMS_RECEIPTS,
    SMS_INBOUND,
    FALLBACKS,
    FOLLOW_UPS,
    CONVERSIONS,
    MESSAGE_STATUSES,
    INBOUND_MESSAGES,
    OPTINS,
    BILLED_COST,
    PURGED_ROWS,
    ADMIN_REQUESTS,
    CRM_EVENTS,
    CRM_EVENTS_DEAD,
    CRM_OUTBOX_DEPTH,
    CRM_OUTBOX_OLDEST,
];

/// Send latency buckets: a healthy Cloud API answers in 100–500 ms; the tail shows trouble.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Rate-limiter waits: from none to a full second between sends for a throttled number.
const WAIT_BUCKETS: &[f64] = &[0.0001, 0.001, 0.005, 0.0125, 0.05, 0.1, 0.5, 1.0, 5.0];
/// Job age when picked up: seconds to hours of backlog.
const AGE_BUCKETS: &[f64] = &[
    0.1, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 14400.0, 86400.0,
];

/// Graph error codes (and the SMPP throttles) that get their own label value; anything else is `other`, so a new code
/// from Meta cannot blow up the label set.
const KNOWN_CODES: &[i64] = &[
    // SMPP: ESME_RMSGQFUL (0x14) and ESME_RTHROTTLED (0x58), the SMS route's throttles.
    20, 88, 0, 1, 2, 3, 4, 10, 100, 190, 368, 80007, 130403, 130429, 130472, 130497, 131000, 131005,
    131008, 131009, 131016, 131021, 131026, 131031, 131042, 131047, 131048, 131049, 131050, 131051,
    131053, 131056, 131057, 131063, 131064, 132000, 132001, 132005, 132007, 132012, 132015, 132016,
    132068, 132069, 133004, 133010, 135000, 137000,
];

/// A bounded label value for a Graph error code.
pub fn code_label(code: i64) -> String {
    if KNOWN_CODES.contains(&code) || (200..300).contains(&code) {
        code.to_string()
    } else {
        "other".into()
    }
}

/// Installs the Prometheus recorder (once per process) and, when `addr` is given, the
/// exporter's own HTTP listener on it (which needs a running Tokio runtime).
/// Returns the handle so `/metrics` can also be rendered by herald's own server
/// (`http::spawn_metrics_server`, which also runs the upkeep) and by tests.
pub fn install(addr: Option<SocketAddr>) -> anyhow::Result<PrometheusHandle> {
    let builder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(SEND_DURATION.into()), LATENCY_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(RATE_WAIT.into()), WAIT_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(JOB_AGE.into()), AGE_BUCKETS)?;
    let handle = match addr {
        // `install_recorder` ignores a configured listener: building the exporter and
        // spawning it is what actually listens (and runs the histogram upkeep).
        Some(addr) => {
            let (recorder, exporter) = builder.with_http_listener(addr).build()?;
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder)?;
            tokio::spawn(exporter);
            handle
        }
        None => builder.install_recorder()?,
    };
    describe();
    Ok(handle)
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        MESSAGES,
        "Recipients by final outcome (sent, failed, skipped, unknown) with reason or error code"
    );
    describe_histogram!(
        SEND_DURATION,
        Unit::Seconds,
        "Cloud API send request latency"
    );
    describe_gauge!(INFLIGHT, "Send requests in flight per sender");
    describe_histogram!(
        RATE_WAIT,
        Unit::Seconds,
        "Time a send waited for its sender's rate limiter"
    );
    describe_gauge!(
        SENDER_RATE_LIMIT,
        "Messages per second Meta allows the sender"
    );
    describe_gauge!(
        SENDER_EFFECTIVE_RATE,
        "Messages per second herald currently paces the sender at (after 130429 back-off)"
    );
    describe_gauge!(
        SENDER_STOPPED,
        "1 when herald stopped the sender after a sender-fatal error"
    );
    describe_counter!(THROTTLED, "Throttling answers from Meta (130429, 131056)");
    describe_counter!(
        SLOTS_MISSED,
        "Shared send slots skipped because this process reached them too late (a busy or stalled worker)"
    );
    describe_gauge!(SMS_BIND_UP, "Whether the SMS route's SMPP session is bound");
    describe_counter!(
        SMS_BIND_FAILURES,
        "SMPP connects or binds that failed, per route"
    );
    describe_counter!(SMS_RECEIPTS, "SMS delivery receipts by state and result");
    describe_counter!(SMS_INBOUND, "Messages from customers by SMS (MO), by kind");
    describe_counter!(FALLBACKS, "WhatsApp to SMS fallbacks by trigger and result");
    describe_counter!(
        MESSAGE_STATUSES,
        "WhatsApp status webhooks received by status (sent, delivered, read, failed): the funnel"
    );
    describe_counter!(
        FOLLOW_UPS,
        "Follow-ups by outcome (scheduled, sent, failed, unknown, skipped) and skip reason"
    );
    describe_counter!(CONVERSIONS, "Conversion events by path in and result");
    describe_counter!(
        BILLED_COST,
        "What Meta bills, by its status webhooks' pricing (billable messages, once each), priced with the rate card, in millionths of its currency, by currency, Meta's category and market"
    );
    describe_counter!(
        INBOUND_MESSAGES,
        "Messages customers wrote, by type and result (stored, duplicate: a redelivered webhook)"
    );
    describe_counter!(
        OPTINS,
        "Click-to-chat opt-ins by keyword message: recorded (consent with proof, confirmation scheduled) or duplicate"
    );
    describe_counter!(
        PURGED_ROWS,
        "Personal rows deleted by the retention purge, by data class (HERALD_RETENTION)"
    );
    describe_counter!(
        ADMIN_REQUESTS,
        "Admin API requests by action and result (ok, unauthorized: unknown, revoked or expired token; denied: a token without the role; disabled; bad_request, not_found, conflict, error)"
    );
    describe_counter!(
        CRM_EVENTS,
        "Per-recipient events for CRMs handed to a sink, by sink (amqp, webhook) and result (published, failed)"
    );
    describe_counter!(
        CRM_EVENTS_DEAD,
        "Per-recipient events no sink took within a day, moved to the dead-letter table"
    );
    describe_gauge!(
        CRM_OUTBOX_DEPTH,
        "Per-recipient events recorded and not yet published (the outbox)"
    );
    describe_gauge!(
        CRM_OUTBOX_OLDEST,
        "Age of the oldest unpublished per-recipient event, 0 when none"
    );
    describe_counter!(RETRIES, "Send retries by error code");
    describe_counter!(JOBS_CONSUMED, "Jobs taken from the jobs queue");
    describe_counter!(
        JOBS_ACKED,
        "Jobs acknowledged after every recipient was durable"
    );
    describe_counter!(JOBS_DEAD_LETTERED, "Jobs rejected to the dead-letter queue");
    describe_counter!(
        JOBS_DEFERRED,
        "Jobs whose remaining recipients were deferred"
    );
    describe_counter!(
        JOBS_STALE_COPIES,
        "Deferred job copies dropped because a newer copy of the same job is the live one"
    );
    describe_gauge!(
        UNKNOWN_RECIPIENTS,
        "Recipients whose outcome is unknown (the request may have reached Meta), per campaign"
    );
    describe_counter!(
        UNKNOWN_RESENT,
        "Unknown recipients sent once more after the webhooks showed Meta never accepted them"
    );
    describe_histogram!(JOB_AGE, Unit::Seconds, "Job age when a worker picked it up");
    describe_gauge!(
        TIER_USED,
        "Unique users reached by the portfolio in the rolling 24 h"
    );
    describe_gauge!(
        TIER_LIMIT,
        "The portfolio's messaging tier (unique users per 24 h)"
    );
    describe_gauge!(TIER_REMAINING, "Unique users the portfolio may still reach");
    describe_counter!(
        ESTIMATED_COST,
        "Estimated cost of sent templates in millionths of the currency"
    );
    describe_gauge!(CAMPAIGNS, "Campaigns by state");
    describe_counter!(WEBHOOK_EVENTS, "Webhook events received by kind and result");
    describe_gauge!(
        BUDGET_REMAINING,
        "Campaign budget left in millionths of the currency"
    );
}

/// Counts one recipient's final outcome.
pub fn outcome(sender: &str, channel: ChannelKind, category: Category, outcome: &Outcome) {
    outcomes(sender, channel, category, outcome, 1);
}

/// Counts `n` recipients with the same outcome at once (skips decided per batch).
pub fn outcomes(sender: &str, channel: ChannelKind, category: Category, outcome: &Outcome, n: u64) {
    if n == 0 {
        return;
    }
    let reason = match outcome {
        Outcome::Sent { .. } | Outcome::Unknown => String::new(),
        Outcome::Failed { code } => code_label(*code),
        Outcome::Skipped { reason } => reason.as_str().to_owned(),
    };
    counter!(MESSAGES,
        "outcome" => outcome.kind(),
        "reason" => reason,
        "sender" => sender.to_owned(),
        "channel" => channel.as_str(),
        "category" => category.as_str())
    .increment(n);
}

/// Metric handles for one sender and category, looked up once per job run: the per-message
/// path then updates atomics without touching the registry or allocating label strings.
#[derive(Clone)]
pub struct SendHandles {
    pub sent: metrics::Counter,
    pub latency: metrics::Histogram,
    pub inflight: metrics::Gauge,
}

impl SendHandles {
    pub fn new(sender: &str, channel: ChannelKind, category: Category) -> Self {
        Self {
            sent: counter!(MESSAGES,
                "outcome" => "sent",
                "reason" => "",
                "sender" => sender.to_owned(),
                "channel" => channel.as_str(),
                "category" => category.as_str()),
            latency: histogram!(SEND_DURATION, "sender" => sender.to_owned()),
            inflight: gauge!(INFLIGHT, "sender" => sender.to_owned()),
        }
    }
}

/// The rate-limiter wait histogram of a sender, for the pacer to keep.
pub fn rate_wait_handle(sender: &str) -> metrics::Histogram {
    histogram!(RATE_WAIT, "sender" => sender.to_owned())
}

pub fn sender_rates(sender: &str, limit: f64, effective: f64) {
    gauge!(SENDER_RATE_LIMIT, "sender" => sender.to_owned()).set(limit);
    gauge!(SENDER_EFFECTIVE_RATE, "sender" => sender.to_owned()).set(effective);
}

pub fn sender_stopped(sender: &str, stopped: bool) {
    gauge!(SENDER_STOPPED, "sender" => sender.to_owned()).set(if stopped { 1.0 } else { 0.0 });
}

pub fn slots_missed(sender: &str, n: u64) {
    counter!(SLOTS_MISSED, "sender" => sender.to_owned()).increment(n);
}

pub fn throttled(sender: &str, code: i64) {
    counter!(THROTTLED, "sender" => sender.to_owned(), "code" => code_label(code)).increment(1);
}

/// `code` is the Graph error code, or `http_5xx` / `connect` for transport failures.
pub fn retry(sender: &str, code: &str) {
    counter!(RETRIES, "sender" => sender.to_owned(), "code" => code.to_owned()).increment(1);
}

pub fn job_consumed(age: Option<Duration>) {
    counter!(JOBS_CONSUMED).increment(1);
    if let Some(age) = age {
        histogram!(JOB_AGE).record(age.as_secs_f64());
    }
}

pub fn job_acked() {
    counter!(JOBS_ACKED).increment(1);
}

/// `reason` is a short fixed word: invalid_json, unsupported_version, invalid_job,
/// unknown_sender, unknown_template, template_not_approved, sms_unavailable, sms_too_long,
/// too_large.
pub fn job_dead_lettered(reason: &'static str) {
    counter!(JOBS_DEAD_LETTERED, "reason" => reason).increment(1);
}

pub fn job_deferred(reason: &'static str) {
    counter!(JOBS_DEFERRED, "reason" => reason).increment(1);
}

/// A deferred copy of a job came back but is not the job's live copy (a duplicate left by an
/// older herald's delay routing, or by at-least-once dead-lettering): acked and dropped.
pub fn job_stale_copy_dropped() {
    counter!(JOBS_STALE_COPIES).increment(1);
}

pub fn unknown_resent(sender: &str, n: u64) {
    counter!(UNKNOWN_RESENT, "sender" => sender.to_owned()).increment(n);
}

/// Unknown recipients of a campaign, from the store (the probes of `serve` and `worker`).
pub fn unknown_recipients(campaign: &str, n: u64) {
    gauge!(UNKNOWN_RECIPIENTS, "campaign" => campaign.to_owned()).set(n as f64);
}

pub fn tier(portfolio: &str, used: u64, limit: Option<u32>) {
    gauge!(TIER_USED, "portfolio" => portfolio.to_owned()).set(used as f64);
    if let Some(limit) = limit {
        gauge!(TIER_LIMIT, "portfolio" => portfolio.to_owned()).set(f64::from(limit));
        gauge!(TIER_REMAINING, "portfolio" => portfolio.to_owned())
            .set((f64::from(limit) - used as f64).max(0.0));
    }
}

pub fn estimated_cost(currency: &str, category: Category, market: &str, micros: u64) {
    counter!(ESTIMATED_COST,
        "currency" => currency.to_owned(),
        "category" => category.as_str(),
        "market" => market.to_owned())
    .increment(micros);
}

pub fn campaigns(state: &'static str, count: u64) {
    gauge!(CAMPAIGNS, "state" => state).set(count as f64);
}

/// What a campaign may still spend. The campaign label is an operator-chosen id: campaigns
/// are few and long-lived (like Prometheus job names), and only budgeted ones are reported.
pub fn budget_remaining(campaign: &str, currency: &str, micros: u64) {
    gauge!(BUDGET_REMAINING, "campaign" => campaign.to_owned(), "currency" => currency.to_owned())
        .set(micros as f64);
}

/// Whether the SMS route's session is bound (1) or not (0).
pub fn sms_bind(route: &str, up: bool) {
    gauge!(SMS_BIND_UP, "route" => route.to_owned()).set(if up { 1.0 } else { 0.0 });
}

/// A connect or bind to the SMS route that failed.
pub fn sms_bind_failure(route: &str) {
    counter!(SMS_BIND_FAILURES, "route" => route.to_owned()).increment(1);
}

/// Delivery receipts read from the route: `state` is delivered, failed, expired, pending
/// (an intermediate state) or unreadable; `result` applied, unchanged (a duplicate, a late
/// receipt after a final one) or unmatched (no message with its id, after two minutes).
pub fn sms_receipts(route: &str, state: &'static str, result: &'static str, n: u64) {
    if n > 0 {
        counter!(SMS_RECEIPTS, "route" => route.to_owned(), "state" => state, "result" => result)
            .increment(n);
    }
}

/// Messages from customers by SMS: `kind` is `opt_out` (STOP and its kin) or `other`.
pub fn sms_inbound(route: &str, kind: &'static str) {
    counter!(SMS_INBOUND, "route" => route.to_owned(), "kind" => kind).increment(1);
}

/// WhatsApp → SMS fallbacks: `trigger` not_on_whatsapp, failed or undelivered; `result`
/// sent (handed to the SMS lane), delivered_first (a WhatsApp delivery was recorded first:
/// no SMS) or scheduled (a deadline was set).
pub fn fallback(trigger: &'static str, result: &'static str, n: u64) {
    if n > 0 {
        counter!(FALLBACKS, "trigger" => trigger, "result" => result).increment(n);
    }
}

/// Status webhooks received, by status (the funnel's delivered and read).
pub fn message_statuses(status: &str, n: u64) {
    let status: &'static str = match status {
        "sent" => "sent",
        "delivered" => "delivered",
        "read" => "read",
        "failed" => "failed",
        _ => return,
    };
    if n > 0 {
        counter!(MESSAGE_STATUSES, "status" => status).increment(n);
    }
}

/// Follow-ups: `outcome` scheduled, sent, failed, unknown or skipped; `reason` the skip
/// reason (converted, not_read, opted_out, …) or `none`.
pub fn follow_ups(outcome: &'static str, reason: &'static str, n: u64) {
    if n > 0 {
        counter!(FOLLOW_UPS, "outcome" => outcome, "reason" => reason).increment(n);
    }
}

/// Conversion events that came in on `path` (amqp, http or csv) and were recorded. `result`:
/// stored (attributed to a recipient), unattributed (stored; no recipient matched), duplicate
/// (an `event_id` seen before: ignored). Disjoint, so their sum is every event recorded.
pub fn conversions(path: &'static str, tally: &ConversionTally) {
    let attributed = tally.stored.saturating_sub(tally.unattributed);
    for (result, n) in [
        ("stored", attributed),
        ("unattributed", tally.unattributed),
        ("duplicate", tally.duplicates),
    ] {
        if n > 0 {
            counter!(CONVERSIONS, "path" => path, "result" => result).increment(n);
        }
    }
}

/// A message Meta billed, priced with the rate card.
pub fn billed_cost(currency: &str, category: &str, market: &str, micros: u64) {
    counter!(BILLED_COST, "currency" => currency.to_owned(), "category" => category.to_owned(), "market" => market.to_owned())
        .increment(micros);
}

/// Inbound messages of Meta's `type` (`unsupported` for unknown ones) by result.
pub fn inbound_messages(kind: &'static str, result: &'static str, n: u64) {
    if n > 0 {
        counter!(INBOUND_MESSAGES, "type" => kind, "result" => result).increment(n);
    }
}

/// Opt-in keyword messages by result (`recorded`, `duplicate`).
pub fn optins(result: &'static str, n: u64) {
    if n > 0 {
        counter!(OPTINS, "result" => result).increment(n);
    }
}

/// Rows the retention purge deleted of one data class (`policy::retention`: a fixed set).
/// Per-recipient events a sink took (`published`) or refused (`failed`), and those that went
/// dead.
pub fn crm_events(sink: &'static str, published: u64, failed: u64, dead: u64) {
    if published > 0 {
        counter!(CRM_EVENTS, "sink" => sink, "result" => "published").increment(published);
    }
    if failed > 0 {
        counter!(CRM_EVENTS, "sink" => sink, "result" => "failed").increment(failed);
    }
    if dead > 0 {
        counter!(CRM_EVENTS_DEAD, "sink" => sink).increment(dead);
    }
}

/// The outbox's depth and the age of its oldest event.
pub fn crm_outbox(depth: u64, oldest_seconds: f64) {
    gauge!(CRM_OUTBOX_DEPTH).set(depth as f64);
    gauge!(CRM_OUTBOX_OLDEST).set(oldest_seconds);
}

pub fn purged_rows(class: &'static str, n: u64) {
    if n > 0 {
        counter!(PURGED_ROWS, "class" => class).increment(n);
    }
}

/// One admin API request: its action (`policy::access::Action`) and how it ended. Unknown
/// tokens are counted here, not written to the audit log: an unauthenticated caller must not
/// be able to make herald write.
pub fn admin_request(action: &'static str, result: &'static str) {
    counter!(ADMIN_REQUESTS, "action" => action, "result" => result).increment(1);
}

/// Conversion events refused as invalid (nothing stored), on `path`.
pub fn conversions_rejected(path: &'static str, n: u64) {
    if n > 0 {
        counter!(CONVERSIONS, "path" => path, "result" => "rejected").increment(n);
    }
}

/// `kind` is one of [`webhook_kind`], `result` one of [`webhook_result`].
pub fn webhook_event(kind: &'static str, result: &'static str) {
    webhook_events(kind, result, 1);
}

/// Counts `n` webhook events of one kind with the same result (a batch of statuses).
pub fn webhook_events(kind: &'static str, result: &'static str, n: u64) {
    if n > 0 {
        counter!(WEBHOOK_EVENTS, "kind" => kind, "result" => result).increment(n);
    }
}

/// `kind` label values of [`WEBHOOK_EVENTS`].
pub mod webhook_kind {
    /// A delivery status (sent, delivered, read, failed).
    pub const STATUS: &str = "status";
    /// An inbound message from a user.
    pub const MESSAGE: &str = "message";
    /// A `message_template_status_update`.
    pub const TEMPLATE: &str = "template";
    /// A `user_preferences` marketing stop or resume.
    pub const USER_PREFERENCES: &str = "user_preferences";
    /// Any other field or object herald does not handle.
    pub const OTHER: &str = "other";
    /// A whole POST, before it could be read (bad signature, not JSON, store down).
    pub const BODY: &str = "body";
    /// The subscription handshake (`GET /webhooks`).
    pub const VERIFICATION: &str = "verification";
}

/// `result` label values of [`WEBHOOK_EVENTS`].
pub mod webhook_result {
    /// Changed the store.
    pub const APPLIED: &str = "applied";
    /// Changed nothing: a redelivery, or a status older than the one stored.
    pub const DUPLICATE: &str = "duplicate";
    /// Nothing for herald to do (a chat message, an unknown template, an unhandled field).
    pub const IGNORED: &str = "ignored";
    /// Signed but unreadable; logged.
    pub const INVALID: &str = "invalid";
    /// The X-Hub-Signature-256 header is missing or does not match.
    pub const BAD_SIGNATURE: &str = "bad_signature";
    /// A verification request with the wrong mode or token.
    pub const REJECTED: &str = "rejected";
    /// The store failed; Meta retries the POST.
    pub const ERROR: &str = "error";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_codes_fold_into_other() {
        assert_eq!(code_label(130429), "130429");
        assert_eq!(code_label(250), "250");
        assert_eq!(code_label(987654), "other");
    }

    #[test]
    fn names_follow_prometheus_conventions() {
        for name in ALL {
            assert!(name.starts_with("herald_"), "{name}");
            assert!(
                !name.contains("__") && name.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{name}"
            );
        }
    }
}
