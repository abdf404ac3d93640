//! Status webhooks for accepted messages, as Meta sends them: batched per POST, grouped per
//! business number, `sent` and then `delivered` with `pricing`, signed with
//! `X-Hub-Signature-256` over the raw body. Sends only enqueue (never block on the receiver);
//! one background task batches and posts.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc};

use super::state::Shared;

/// Status updates waiting to be posted; beyond this they are counted as lost rather than
/// letting a dead receiver grow the simulator's memory (~10 MB at this size).
const QUEUE_CAPACITY: usize = 65_536;
/// Statuses per POST: Meta sends up to about 1,000 updates at once.
const MAX_BATCH: usize = 1_000;
/// How long a batch may wait to fill: short enough for tests to see webhooks promptly.
const LINGER: Duration = Duration::from_millis(10);
/// Batches posted at once, so one slow answer does not stall the rest.
const MAX_INFLIGHT_POSTS: usize = 4;
/// Attempts per POST; Meta retries for days, a simulator gives up sooner.
const ATTEMPTS: u32 = 3;
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const POST_TIMEOUT: Duration = Duration::from_secs(10);

/// One accepted message, remembered until its statuses are posted.
#[derive(Debug, Clone)]
pub struct StatusEvent {
    pub wamid: String,
    pub phone_number_id: String,
    /// The recipient's digits (`wa_id`).
    pub recipient_id: String,
    pub callback_data: Option<String>,
    /// The pricing category: the template's, or `marketing_lite` via `marketing_messages`.
    pub category: &'static str,
    /// Unix seconds of acceptance: the `sent` timestamp.
    pub accepted_at: u64,
}

/// The sending side, held by the request handlers.
#[derive(Debug, Clone)]
pub struct WebhookQueue {
    tx: mpsc::Sender<StatusEvent>,
}

impl WebhookQueue {
    pub fn new() -> (Self, mpsc::Receiver<StatusEvent>) {
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        (Self { tx }, rx)
    }

    /// Enqueues without waiting; a full or closed queue loses the statuses (two per message).
    pub fn push(&self, event: StatusEvent, lost: &AtomicU64) {
        if self.tx.try_send(event).is_err() {
            lost.fetch_add(2, Relaxed);
        }
    }
}

/// The `X-Hub-Signature-256` value for a body: `sha256=` and the hex HMAC-SHA256.
pub fn sign(app_secret: &str, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(app_secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Posts batches until `stop` is notified and the queue is drained, then waits for the posts
/// in flight.
pub async fn run(
    mut rx: mpsc::Receiver<StatusEvent>,
    shared: Arc<Shared>,
    url: String,
    stop: Arc<Notify>,
) {
    let client = match reqwest::Client::builder()
        .timeout(POST_TIMEOUT)
        .user_agent("facebookexternalua")
        .build()
    {
        Ok(client) => client,
        Err(e) => {
            tracing::error!(error = %e, "simulator cannot build its webhook client; no webhooks");
            return;
        }
    };
    let inflight = Arc::new(Semaphore::new(MAX_INFLIGHT_POSTS));
    let mut stopping = false;
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        let received = if stopping {
            rx.recv_many(&mut batch, MAX_BATCH).await
        } else {
            tokio::select! {
                n = rx.recv_many(&mut batch, MAX_BATCH) => n,
                () = stop.notified() => {
                    // Take nothing new; what is queued still goes out.
                    stopping = true;
                    rx.close();
                    continue;
                }
            }
        };
        if received == 0 {
            break;
        }
        if !stopping && batch.len() < MAX_BATCH {
            tokio::time::sleep(LINGER).await;
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(event) => batch.push(event),
                    Err(_) => break,
                }
            }
        }
        let events = std::mem::replace(&mut batch, Vec::with_capacity(MAX_BATCH));
        let permit = inflight
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        tokio::spawn(post_batch(
            client.clone(),
            url.clone(),
            shared.clone(),
            events,
            permit,
        ));
    }
    let _all_done = inflight.acquire_many(MAX_INFLIGHT_POSTS as u32).await;
}

/// Posts `sent` for the batch, then `delivered`, so a receiver sees them in that order.
async fn post_batch(
    client: reqwest::Client,
    url: String,
    shared: Arc<Shared>,
    events: Vec<StatusEvent>,
    _permit: OwnedSemaphorePermit,
) {
    for status in [Status::Sent, Status::Delivered] {
        let body = notification(&shared, &events, status, unix_now());
        let counter = if post(&client, &url, &shared, body).await {
            &shared.webhook_posted
        } else {
            &shared.webhook_lost
        };
        counter.fetch_add(events.len() as u64, Relaxed);
    }
}

async fn post(client: &reqwest::Client, url: &str, shared: &Shared, body: Vec<u8>) -> bool {
    let signature = shared
        .config
        .app_secret
        .as_deref()
        .map(|secret| sign(secret, &body));
    let mut backoff = FIRST_BACKOFF;
    for attempt in 1..=ATTEMPTS {
        let mut request = client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.clone());
        if let Some(signature) = &signature {
            request = request.header("X-Hub-Signature-256", signature);
        }
        match request.send().await {
            Ok(response) if response.status().is_success() => return true,
            Ok(response) => {
                tracing::warn!(status = %response.status(), attempt, "webhook receiver refused a status batch");
            }
            Err(e) => tracing::warn!(error = %e, attempt, "webhook receiver unreachable"),
        }
        if attempt < ATTEMPTS {
            tokio::time::sleep(backoff).await;
            backoff *= 2;
        }
    }
    false
}

#[derive(Debug, Clone, Copy)]
enum Status {
    Sent,
    Delivered,
}

#[derive(Serialize)]
struct Notification<'a> {
    object: &'static str,
    entry: Vec<Entry<'a>>,
}

#[derive(Serialize)]
struct Entry<'a> {
    id: &'a str,
    changes: [Change<'a>; 1],
}

#[derive(Serialize)]
struct Change<'a> {
    field: &'static str,
    value: ChangeValue<'a>,
}

#[derive(Serialize)]
struct ChangeValue<'a> {
    messaging_product: &'static str,
    metadata: Metadata<'a>,
    statuses: Vec<StatusUpdate<'a>>,
}

#[derive(Serialize)]
struct Metadata<'a> {
    display_phone_number: String,
    phone_number_id: &'a str,
}

#[derive(Serialize)]
struct StatusUpdate<'a> {
    id: &'a str,
    status: &'static str,
    timestamp: String,
    recipient_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    biz_opaque_callback_data: Option<&'a str>,
    pricing: Pricing,
}

#[derive(Serialize)]
struct Pricing {
    billable: bool,
    pricing_model: &'static str,
    #[serde(rename = "type")]
    kind: &'static str,
    category: &'static str,
}

/// The raw body of one webhook POST: one entry per business number in the batch.
fn notification(shared: &Shared, events: &[StatusEvent], status: Status, now: u64) -> Vec<u8> {
    let mut by_number: BTreeMap<&str, Vec<&StatusEvent>> = BTreeMap::new();
    for event in events {
        by_number
            .entry(event.phone_number_id.as_str())
            .or_default()
            .push(event);
    }
    let entry = by_number
        .into_iter()
        .map(|(number, events)| Entry {
            id: shared.account_of(number),
            changes: [Change {
                field: "messages",
                value: ChangeValue {
                    messaging_product: "whatsapp",
                    metadata: Metadata {
                        display_phone_number: shared.display_digits_of(number),
                        phone_number_id: number,
                    },
                    statuses: events
                        .into_iter()
                        .map(|e| StatusUpdate {
                            id: &e.wamid,
                            status: match status {
                                Status::Sent => "sent",
                                Status::Delivered => "delivered",
                            },
                            timestamp: match status {
                                Status::Sent => e.accepted_at,
                                Status::Delivered => now.max(e.accepted_at),
                            }
                            .to_string(),
                            recipient_id: &e.recipient_id,
                            biz_opaque_callback_data: e.callback_data.as_deref(),
                            pricing: Pricing {
                                billable: true,
                                pricing_model: "PMP",
                                kind: "regular",
                                category: e.category,
                            },
                        })
                        .collect(),
                },
            }],
        })
        .collect();
    serde_json::to_vec(&Notification {
        object: "whatsapp_business_account",
        entry,
    })
    .expect("a notification always serialises")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simulator::config::{SimConfig, SimNumber};

    fn webhook_fixture(name: &str) -> Vec<u8> {
        let path = format!(
            "{}/tests/fixtures/webhooks/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn signatures_match_metas_fixtures() {
        for name in ["status-sent", "status-delivered-read-batch"] {
            let body = webhook_fixture(&format!("{name}.json"));
            let sig = String::from_utf8(webhook_fixture(&format!("{name}.sig"))).unwrap();
            assert_eq!(sign("test-app-secret", &body), sig.trim(), "{name}");
        }
    }

    /// The simulator's `sent` body for the fixture's message is the fixture, byte for byte.
    #[test]
    fn a_sent_notification_has_metas_shape() {
        let mut number = SimNumber::new("106540352242922");
        number.display_phone_number = "+49 30 901820".into();
        number.account_id = Some("102290129340398".into());
        let config = SimConfig {
            numbers: vec![number],
            ..Default::default()
        };
        let shared = Shared::new(config, "127.0.0.1:1".parse().unwrap(), None);
        let event = StatusEvent {
            wamid: "wamid.HBgNNDkxNTEyMzQ1Njc4ORUCABEYEjQ5RDVCRTI3OUI2QkM1NjJBMAA=".into(),
            phone_number_id: "106540352242922".into(),
            recipient_id: "4915123456789".into(),
            callback_data: Some("k:black-friday-2026:7f3a9c".into()),
            category: "marketing",
            accepted_at: 1763726400,
        };
        let body = notification(&shared, &[event], Status::Sent, 1763726401);
        let want = webhook_fixture("status-sent.json");
        assert_eq!(
            String::from_utf8(body).unwrap(),
            String::from_utf8(want).unwrap().trim_end()
        );
    }

    #[test]
    fn a_batch_groups_statuses_per_number() {
        let shared = Shared::new(SimConfig::default(), "127.0.0.1:1".parse().unwrap(), None);
        let event = |n: &str, wamid: &str| StatusEvent {
            wamid: wamid.into(),
            phone_number_id: n.into(),
            recipient_id: "491".into(),
            callback_data: None,
            category: "utility",
            accepted_at: 10,
        };
        let events = [event("1", "a"), event("2", "b"), event("1", "c")];
        let body = notification(&shared, &events, Status::Delivered, 20);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let entries = v["entry"].as_array().unwrap();
        assert_eq!(entries.len(), 2);
        let first = &entries[0]["changes"][0]["value"];
        assert_eq!(first["metadata"]["phone_number_id"], "1");
        assert_eq!(first["statuses"].as_array().unwrap().len(), 2);
        assert_eq!(first["statuses"][1]["id"], "c");
        assert_eq!(first["statuses"][0]["status"], "delivered");
        assert_eq!(first["statuses"][0]["timestamp"], "20");
        assert!(
            first["statuses"][0]
                .get("biz_opaque_callback_data")
                .is_none()
        );
    }
}
