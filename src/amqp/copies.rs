//! The copies herald republishes of a delivery (to a delay queue or `{prefix}.dead`): which
//! headers and properties travel with them, and what can be read from a job that did not
//! parse. Pure functions over lapin's types.

use std::time::Duration;

use chrono::Utc;
use lapin::BasicProperties;
use lapin::types::{FieldTable, ShortString};

use super::topology::{DEFERRAL_HEADER, DELAY_HEADER, LEGACY_DELAY_HEADER};

/// Headers of a delivery that describe its path through queues, not the job: dropped from the
/// copies herald republishes so each copy starts clean.
const TRANSIT_HEADERS: &[&str] = &[
    "x-death",
    "x-first-death-exchange",
    "x-first-death-queue",
    "x-first-death-reason",
    "x-last-death-exchange",
    "x-last-death-queue",
    "x-last-death-reason",
    "x-delivery-count",
    DELAY_HEADER,
    LEGACY_DELAY_HEADER,
    DEFERRAL_HEADER,
];

/// The delivery's headers without the ones describing its trip through queues.
pub(super) fn transit_free_headers(props: &BasicProperties) -> FieldTable {
    let mut out = FieldTable::default();
    if let Some(h) = props.headers() {
        for (k, v) in h {
            if !TRANSIT_HEADERS.contains(&k.as_str()) {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    out
}

/// Properties for a copy herald republishes: what identifies the job (message id, timestamp,
/// content type, correlation id, app id, type, priority) with new headers, persistent. Left
/// out: `expiration` (a copy parked in a delay or dead queue must not expire on the original's
/// clock) and `user_id` (RabbitMQ rejects a user id that is not the publishing connection's).
pub(super) fn copy_properties(orig: &BasicProperties, headers: FieldTable) -> BasicProperties {
    let mut p = BasicProperties::default()
        .with_delivery_mode(2)
        .with_headers(headers)
        .with_content_type(
            orig.content_type()
                .clone()
                .unwrap_or_else(|| ShortString::from("application/json")),
        );
    if let Some(v) = orig.content_encoding() {
        p = p.with_content_encoding(v.clone());
    }
    if let Some(v) = orig.message_id() {
        p = p.with_message_id(v.clone());
    }
    if let Some(v) = orig.timestamp() {
        p = p.with_timestamp(*v);
    }
    if let Some(v) = orig.correlation_id() {
        p = p.with_correlation_id(v.clone());
    }
    if let Some(v) = orig.app_id() {
        p = p.with_app_id(v.clone());
    }
    if let Some(v) = orig.kind() {
        p = p.with_type(v.clone());
    }
    if let Some(v) = orig.priority() {
        p = p.with_priority(*v);
    }
    p
}

/// How long ago the job was published, from the AMQP `timestamp` (seconds since the epoch)
/// when the publisher set it.
pub(super) fn job_age(props: &BasicProperties) -> Option<Duration> {
    let ts = (*props.timestamp())?;
    let now = Utc::now().timestamp();
    u64::try_from(now)
        .ok()
        .and_then(|now| now.checked_sub(ts))
        .map(Duration::from_secs)
}

/// Job and campaign ids of a job that did not parse, for the log and the event: from the body
/// if it is JSON far enough, else the AMQP `message_id`.
pub(super) fn ids_from_body(
    body: &[u8],
    props: &BasicProperties,
) -> (Option<String>, Option<String>) {
    let value: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let field = |name: &str| {
        value
            .as_ref()
            .and_then(|v| v.get(name))
            .and_then(|v| v.as_str())
            .map(|s| truncate(s, 256))
    };
    let job = field("job_id").or_else(|| props.message_id().as_ref().map(|m| m.to_string()));
    (job, field("campaign_id"))
}

pub(super) fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::AMQPValue;

    use crate::amqp::topology::long;

    fn header(table: &FieldTable, name: &str) -> Option<String> {
        match table.inner().get(name) {
            Some(AMQPValue::LongString(s)) => Some(s.to_string()),
            _ => None,
        }
    }

    #[test]
    fn copies_drop_transit_headers_expiration_and_user_id() {
        let mut h = FieldTable::default();
        h.insert("x-death".into(), AMQPValue::Void);
        h.insert(DELAY_HEADER.into(), long("5s"));
        h.insert("tenant".into(), long("acme"));
        let orig = BasicProperties::default()
            .with_headers(h)
            .with_message_id("j1".into())
            .with_timestamp(1_700_000_000)
            .with_expiration("60000".into())
            .with_user_id("someone".into());
        let copy = copy_properties(&orig, transit_free_headers(&orig));
        let headers = copy.headers().clone().unwrap();
        assert_eq!(header(&headers, "tenant").as_deref(), Some("acme"));
        assert!(!headers.inner().contains_key("x-death"));
        assert!(!headers.inner().contains_key(DELAY_HEADER));
        assert_eq!(copy.message_id().as_ref().map(|m| m.as_str()), Some("j1"));
        assert_eq!(*copy.timestamp(), Some(1_700_000_000));
        assert_eq!(*copy.delivery_mode(), Some(2));
        assert!(copy.expiration().is_none());
        assert!(copy.user_id().is_none());
    }

    #[test]
    fn ids_of_an_invalid_job_come_from_what_parses() {
        let props = BasicProperties::default().with_message_id("from-props".into());
        let (job, campaign) = ids_from_body(
            br#"{"version": 9, "job_id": "j9", "campaign_id": "c9"}"#,
            &props,
        );
        assert_eq!(job.as_deref(), Some("j9"));
        assert_eq!(campaign.as_deref(), Some("c9"));
        let (job, campaign) = ids_from_body(b"not json", &props);
        assert_eq!(job.as_deref(), Some("from-props"));
        assert_eq!(campaign, None);
    }

    #[test]
    fn long_reasons_are_cut_on_a_char_boundary() {
        let s = "ä".repeat(10);
        let t = truncate(&s, 5);
        assert!(t.starts_with("ää") && t.ends_with('…'));
        assert_eq!(truncate("short", 10), "short");
    }

    #[test]
    fn job_age_comes_from_the_timestamp() {
        let now = Utc::now().timestamp() as u64;
        let props = BasicProperties::default().with_timestamp(now - 30);
        let age = job_age(&props).unwrap();
        assert!(age >= Duration::from_secs(29) && age <= Duration::from_secs(32));
        assert_eq!(job_age(&BasicProperties::default()), None);
    }
}
