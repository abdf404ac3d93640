//! Status webhooks for accepted messages, as Meta sends them: batched per POST, grouped per
//! business number, `sent` and `delivered` with `pricing`, then `read` without it, signed with
//! `X-Hub-Signature-256` over the raw body. Sends only enqueue (never block on the receiver);
//! one background task batches, waits out the customers' delays and posts.
//!
//! A message's next status is scheduled only once its previous one has been posted (or given
//! up on), so each message's statuses reach the receiver in the order sent → delivered → read
//! while up to [`MAX_INFLIGHT_POSTS`] batches are posted at once. Waiting statuses sit in one
//! heap of whole batches ordered by when they are due: 10,000 messages waiting for their read
//! are a few entries and one timer, not 10,000 tasks.

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BinaryHeap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

use super::customers::Fate;
use super::state::Shared;
use super::windows::Price;

/// Status updates waiting to be posted; beyond this they are counted as lost rather than
/// letting a dead receiver grow the simulator's memory (~10 MB at this size).
const QUEUE_CAPACITY: usize = 65_536;
/// Messages waiting for a `delivered` or `read` that is not due yet. Beyond this their later
/// statuses are counted as lost, which bounds memory (~64 MB at about 250 bytes a message)
/// when long delays meet a high send rate; a sped-up clock keeps the wait, and so the
/// number waiting, short.
const PENDING_CAPACITY: usize = 262_144;
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
    /// What `sent` and `delivered` report in `pricing`: the template's category (or
    /// `marketing_lite` via `marketing_messages`), free in a customer-service window as
    /// [`windows::price`] decides.
    pub price: Price,
    /// Simulated Unix seconds of acceptance: the `sent` timestamp.
    pub accepted_at: u64,
    /// Whether `delivered` and `read` follow `sent`.
    pub fate: Fate,
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

    /// Enqueues without waiting; a full or closed queue loses all the message's statuses.
    pub fn push(&self, event: StatusEvent, lost: &AtomicU64) {
        let statuses = event.fate.statuses();
        if self.tx.try_send(event).is_err() {
            lost.fetch_add(statuses, Relaxed);
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

/// A batch whose POST has finished (well or not): its messages move on to their next status.
struct Posted {
    status: Status,
    events: Vec<StatusEvent>,
}

/// Posts batches until `stop` is notified, the queue is drained and no post is in flight.
/// Statuses already due then still go out; those still waiting for their delay are dropped —
/// the customers did not get to them before the simulator stopped.
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
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Posted>();
    let spawn_post = |status: Status, events: Vec<StatusEvent>| {
        tokio::spawn(post_batch(
            client.clone(),
            url.clone(),
            shared.clone(),
            status,
            events,
            done_tx.clone(),
        ));
    };
    let mut waiting = Waiting::default();
    let mut inflight = 0;
    let mut stopping = false;
    let mut queue_open = true;
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        let now = Instant::now();
        while inflight < MAX_INFLIGHT_POSTS {
            let Some((status, events)) = waiting.take_due(now) else {
                break;
            };
            spawn_post(status, events);
            inflight += 1;
        }
        if stopping && !queue_open && inflight == 0 {
            break;
        }
        let room = inflight < MAX_INFLIGHT_POSTS;
        let next_due = waiting.next_due();
        tokio::select! {
            Some(posted) = done_rx.recv(), if inflight > 0 => {
                inflight -= 1;
                waiting.after_posted(posted, &shared);
            }
            received = rx.recv_many(&mut batch, MAX_BATCH), if room && queue_open => {
                if received == 0 {
                    queue_open = false;
                    continue;
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
                spawn_post(Status::Sent, std::mem::replace(&mut batch, Vec::with_capacity(MAX_BATCH)));
                inflight += 1;
            }
            () = stop.notified(), if !stopping => {
                // Take nothing new; what is queued still goes out.
                stopping = true;
                rx.close();
            }
            () = tokio::time::sleep_until(next_due.unwrap_or(now)), if room && next_due.is_some() => {}
            else => break,
        }
    }
}

/// Posts one status for a batch and hands the batch back for its next status.
async fn post_batch(
    client: reqwest::Client,
    url: String,
    shared: Arc<Shared>,
    status: Status,
    events: Vec<StatusEvent>,
    done: mpsc::UnboundedSender<Posted>,
) {
    let body = notification(&shared, &events, status, shared.clock.now_unix());
    let n = events.len() as u64;
    if post(&client, &url, &shared, body).await {
        shared.webhook_posted.fetch_add(n, Relaxed);
        match status {
            Status::Sent => {}
            Status::Delivered => {
                shared.delivered_posted.fetch_add(n, Relaxed);
            }
            Status::Read => {
                shared.read_posted.fetch_add(n, Relaxed);
            }
        }
    } else {
        shared.webhook_lost.fetch_add(n, Relaxed);
    }
    // The loop is gone only when the simulator was cut off; nothing is left to schedule then.
    let _ = done.send(Posted { status, events });
}

/// Batches waiting for their `delivered` or `read`: a min-heap on when each is due.
#[derive(Default)]
struct Waiting {
    heap: BinaryHeap<Reverse<Due>>,
    /// Messages in the heap, held under [`PENDING_CAPACITY`].
    messages: usize,
    /// Breaks ties between batches due at the same instant: first scheduled, first posted.
    seq: u64,
    warned_full: bool,
}

struct Due {
    at: Instant,
    seq: u64,
    status: Status,
    events: Vec<StatusEvent>,
}

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Due {}

impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Due {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

impl Waiting {
    /// Schedules the next status of a posted batch: `delivered` for the messages that reach
    /// their customer, `read` for those the customer opens, each after its delay.
    fn after_posted(&mut self, posted: Posted, shared: &Shared) {
        let Posted { status, mut events } = posted;
        let (next, delay) = match status {
            Status::Sent => {
                events.retain(|e| e.fate.delivered);
                (Status::Delivered, shared.config.delivered_delay)
            }
            Status::Delivered => {
                events.retain(|e| e.fate.read);
                (Status::Read, shared.config.read_delay)
            }
            Status::Read => return,
        };
        let at = Instant::now() + shared.clock.real(delay);
        self.schedule(next, events, at, &shared.webhook_lost);
    }

    fn schedule(
        &mut self,
        status: Status,
        events: Vec<StatusEvent>,
        at: Instant,
        lost: &AtomicU64,
    ) {
        if events.is_empty() {
            return;
        }
        if self.messages + events.len() > PENDING_CAPACITY {
            let statuses: u64 = events.iter().map(|e| status.and_after(e.fate)).sum();
            lost.fetch_add(statuses, Relaxed);
            if !self.warned_full {
                self.warned_full = true;
                tracing::warn!(
                    capacity = PENDING_CAPACITY,
                    "too many simulated statuses waiting for their delay; later ones are lost (shorten the delays or raise the speed)"
                );
            }
            return;
        }
        self.messages += events.len();
        self.seq += 1;
        self.heap.push(Reverse(Due {
            at,
            seq: self.seq,
            status,
            events,
        }));
    }

    fn next_due(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse(due)| due.at)
    }

    /// The earliest batch due by `now`, joined by the due batches of the same status behind it
    /// while they fit in one POST.
    fn take_due(&mut self, now: Instant) -> Option<(Status, Vec<StatusEvent>)> {
        if self.next_due()? > now {
            return None;
        }
        let Reverse(first) = self.heap.pop()?;
        let (status, mut events) = (first.status, first.events);
        while let Some(Reverse(next)) = self.heap.peek() {
            if next.at > now
                || next.status != status
                || events.len() + next.events.len() > MAX_BATCH
            {
                break;
            }
            let Some(Reverse(next)) = self.heap.pop() else {
                break;
            };
            events.extend(next.events);
        }
        self.messages -= events.len();
        Some((status, events))
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Sent,
    Delivered,
    Read,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Self::Sent => "sent",
            Self::Delivered => "delivered",
            Self::Read => "read",
        }
    }

    /// This status and those still to come for a message of this fate.
    fn and_after(self, fate: Fate) -> u64 {
        match self {
            Self::Sent => fate.statuses(),
            Self::Delivered => u64::from(fate.delivered) + u64::from(fate.read),
            Self::Read => u64::from(fate.read),
        }
    }
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
    /// On `sent` and `delivered`; Meta's `read` carries none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pricing: Option<Pricing>,
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
                            status: status.as_str(),
                            timestamp: match status {
                                Status::Sent => e.accepted_at,
                                Status::Delivered | Status::Read => now.max(e.accepted_at),
                            }
                            .to_string(),
                            recipient_id: &e.recipient_id,
                            biz_opaque_callback_data: e.callback_data.as_deref(),
                            pricing: (status != Status::Read).then_some(Pricing {
                                billable: e.price.billable,
                                pricing_model: "PMP",
                                kind: e.price.kind,
                                category: e.price.category,
                            }),
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
    use crate::simulator::windows::{self, InWindow, Sent};

    const WAMID: &str = "wamid.HBgNNDkxNTEyMzQ1Njc4ORUCABEYEjQ5RDVCRTI3OUI2QkM1NjJBMAA=";

    fn webhook_fixture(name: &str) -> Vec<u8> {
        let path = format!(
            "{}/tests/fixtures/webhooks/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// The simulator as the fixtures' business number: its account and display number.
    fn fixtures_sender(config: SimConfig) -> Shared {
        let mut number = SimNumber::new("106540352242922");
        number.display_phone_number = "+49 30 901820".into();
        number.account_id = Some("102290129340398".into());
        let config = SimConfig {
            numbers: vec![number],
            ..config
        };
        Shared::new(config, "127.0.0.1:1".parse().unwrap(), None)
    }

    /// The fixtures' message, to a customer who receives and reads it.
    fn fixtures_message() -> StatusEvent {
        StatusEvent {
            wamid: WAMID.into(),
            phone_number_id: "106540352242922".into(),
            recipient_id: "4915123456789".into(),
            callback_data: Some("k:black-friday-2026:7f3a9c".into()),
            price: windows::price(Sent::Template("marketing"), InWindow::Closed),
            accepted_at: 1763726400,
            fate: Fate {
                delivered: true,
                read: true,
            },
        }
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
        let shared = fixtures_sender(SimConfig::default());
        let body = notification(&shared, &[fixtures_message()], Status::Sent, 1763726401);
        let want = webhook_fixture("status-sent.json");
        assert_eq!(
            String::from_utf8(body).unwrap(),
            String::from_utf8(want).unwrap().trim_end()
        );
    }

    /// Meta's batch holds the message's `read` and then its `delivered`; the simulator posts
    /// each on its own, and each body is the fixture with only that status, byte for byte:
    /// `delivered` priced, `read` without `pricing`.
    #[test]
    fn delivered_and_read_notifications_have_metas_shape() {
        let fixture = String::from_utf8(webhook_fixture("status-delivered-read-batch.json"))
            .unwrap()
            .trim_end()
            .to_owned();
        let (head, rest) = fixture.split_once(r#""statuses":["#).unwrap();
        let (statuses, tail) = rest.split_once(']').unwrap();
        let (read, delivered) = statuses.split_once("},{").unwrap();
        let with_only = |status: String| format!(r#"{head}"statuses":[{status}]{tail}"#);

        let shared = fixtures_sender(SimConfig::default());
        let message = [fixtures_message()];
        let body = notification(&shared, &message, Status::Read, 1763726460);
        assert_eq!(
            String::from_utf8(body).unwrap(),
            with_only(format!("{read}}}"))
        );
        assert!(!read.contains("pricing"));
        let body = notification(&shared, &message, Status::Delivered, 1763726410);
        assert_eq!(
            String::from_utf8(body).unwrap(),
            with_only(format!("{{{delivered}"))
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
            price: windows::price(Sent::Template("utility"), InWindow::Closed),
            accepted_at: 10,
            fate: Fate::default(),
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

    fn messages(n: usize, fate: Fate) -> Vec<StatusEvent> {
        (0..n)
            .map(|i| StatusEvent {
                wamid: format!("wamid.{i}"),
                fate,
                ..fixtures_message()
            })
            .collect()
    }

    const READER: Fate = Fate {
        delivered: true,
        read: true,
    };

    #[test]
    fn after_sent_only_the_delivered_wait_and_after_delivered_only_the_readers() {
        let shared = fixtures_sender(SimConfig {
            delivered_delay: Duration::from_secs(2 * 60 * 60),
            read_delay: Duration::from_secs(24 * 60 * 60),
            speed: 3600.0,
            ..SimConfig::default()
        });
        let mut events = messages(3, READER);
        events[1].fate = Fate::default();
        events[2].fate.read = false;
        let mut waiting = Waiting::default();
        let before = Instant::now();
        waiting.after_posted(
            Posted {
                status: Status::Sent,
                events,
            },
            &shared,
        );
        // Two simulated hours at 3600× are two real seconds.
        let due = waiting.next_due().unwrap();
        assert!(
            due >= before + Duration::from_secs(2) && due < Instant::now() + Duration::from_secs(3)
        );
        assert!(waiting.take_due(Instant::now()).is_none());
        let (status, delivered) = waiting.take_due(due).unwrap();
        assert_eq!(status, Status::Delivered);
        let ids: Vec<&str> = delivered.iter().map(|e| e.wamid.as_str()).collect();
        assert_eq!(ids, ["wamid.0", "wamid.2"]);

        waiting.after_posted(
            Posted {
                status: Status::Delivered,
                events: delivered,
            },
            &shared,
        );
        let (status, read) = waiting
            .take_due(Instant::now() + Duration::from_secs(24))
            .unwrap();
        assert_eq!(
            (status, read.len(), read[0].wamid.as_str()),
            (Status::Read, 1, "wamid.0")
        );
        waiting.after_posted(
            Posted {
                status: Status::Read,
                events: read,
            },
            &shared,
        );
        assert!(waiting.next_due().is_none());
        assert_eq!(waiting.messages, 0);
    }

    #[test]
    fn due_batches_of_one_status_share_a_post_up_to_the_batch_size() {
        let lost = AtomicU64::new(0);
        let mut waiting = Waiting::default();
        let now = Instant::now();
        waiting.schedule(Status::Read, messages(400, READER), now, &lost);
        waiting.schedule(Status::Read, messages(500, READER), now, &lost);
        waiting.schedule(Status::Read, messages(200, READER), now, &lost);
        waiting.schedule(Status::Delivered, messages(10, READER), now, &lost);
        waiting.schedule(
            Status::Read,
            messages(1, READER),
            now + Duration::from_secs(1),
            &lost,
        );
        let taken: Vec<(Status, usize)> = std::iter::from_fn(|| waiting.take_due(now))
            .map(|(status, events)| (status, events.len()))
            .collect();
        assert_eq!(
            taken,
            [
                (Status::Read, 900),
                (Status::Read, 200),
                (Status::Delivered, 10)
            ]
        );
        assert_eq!(waiting.messages, 1);
        assert_eq!(lost.load(Relaxed), 0);
    }

    #[test]
    fn beyond_the_capacity_waiting_statuses_are_counted_lost_not_kept() {
        let lost = AtomicU64::new(0);
        let mut waiting = Waiting::default();
        let now = Instant::now();
        waiting.schedule(Status::Read, messages(PENDING_CAPACITY, READER), now, &lost);
        // Each delivered reader would have posted `delivered` and `read`.
        waiting.schedule(Status::Delivered, messages(3, READER), now, &lost);
        assert_eq!(lost.load(Relaxed), 6);
        assert_eq!(waiting.messages, PENDING_CAPACITY);
    }
}
