//! Per-recipient events for CRMs end to end: a campaign against the simulator, whose status
//! webhooks reach herald's webhook endpoint, with `HERALD_RECIPIENT_EVENTS` on. Over RabbitMQ:
//! every recipient's states arrive once each, in order per key, valid against the published
//! schema, and a consumer that stops and comes back loses nothing. Over the signed webhook: the
//! receiver verifies every POST, and one that is down for a while (herald's clock moved past
//! the back-off, no sleeping) gets everything afterwards, once. Off: nothing is written.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use futures::StreamExt;
use herald::amqp::Topology;
use herald::crm::{
    AmqpSink, Relay, RelayConfig, SIGNATURE_HEADER, WebhookSink, WebhookSinkConfig, spawn_relay,
};
use herald::domain::{Clock, EventOptions, IdempotencyKey, Job};
use herald::engine::{Engine, EngineConfig, RunControl};
use herald::graph::GraphConfig;
use herald::simulator::{self, SimConfig, SimHandle};
use herald::store::{self, Store};
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::support::{self, SENDER, consent_marketing, fast_retries, sender};

const APP_SECRET: &str = "recipient-events-app-secret";
const CRM_SECRET: &str = "crm-secret-0123456789abcdef";
const WAIT: Duration = Duration::from_secs(30);

/// The published schema.
fn schema() -> Value {
    serde_json::from_str(include_str!("../../schema/recipient-event-v1.schema.json")).unwrap()
}

/// Checks `event` against the published schema: the keywords it uses (type object, required,
/// additionalProperties false, const, enum, string minLength, date-time, the E.164 pattern).
fn validate(schema: &Value, event: &Value) -> Result<(), String> {
    let obj = event.as_object().ok_or("not an object")?;
    for r in schema["required"].as_array().unwrap() {
        let r = r.as_str().unwrap();
        if !obj.contains_key(r) {
            return Err(format!("missing {r}"));
        }
    }
    let props = schema["properties"].as_object().unwrap();
    assert_eq!(schema["additionalProperties"], json!(false));
    for (k, v) in obj {
        let p = props.get(k).ok_or_else(|| format!("unknown field {k}"))?;
        if let Some(c) = p.get("const")
            && c != v
        {
            return Err(format!("{k}: {v} is not {c}"));
        }
        if let Some(e) = p.get("enum")
            && !e.as_array().unwrap().contains(v)
        {
            return Err(format!("{k}: {v} not in {e}"));
        }
        if p.get("type") == Some(&json!("string")) {
            let s = v.as_str().ok_or_else(|| format!("{k} is not a string"))?;
            if p.get("minLength").is_some() && s.is_empty() {
                return Err(format!("{k} is empty"));
            }
            if p.get("format") == Some(&json!("date-time")) {
                chrono::DateTime::parse_from_rfc3339(s).map_err(|e| format!("{k}: {e}"))?;
            }
            if let Some(pattern) = p.get("pattern") {
                assert_eq!(
                    pattern, "^\\+[1-9][0-9]{6,14}$",
                    "the validator knows this pattern"
                );
                let digits = s.strip_prefix('+').unwrap_or("");
                let ok = (7..=15).contains(&digits.len())
                    && digits.chars().all(|c| c.is_ascii_digit())
                    && !digits.starts_with('0');
                if !ok {
                    return Err(format!("{k}: {s} is not E.164"));
                }
            }
        }
    }
    Ok(())
}

#[test]
fn the_validator_refuses_what_the_schema_refuses() {
    let s = schema();
    let good = json!({
        "version": 1, "event_id": "k/sent", "event": "recipient.sent", "state": "sent",
        "campaign": "c", "key": "k", "message": "first", "channel": "whatsapp",
        "at": "2026-11-27T09:00:00.000Z"
    });
    validate(&s, &good).unwrap();
    for (field, bad) in [
        ("state", json!("bounced")),
        ("version", json!(2)),
        ("at", json!("yesterday")),
        ("to", json!("4915112345678")),
        ("extra", json!(1)),
    ] {
        let mut v = good.clone();
        v[field] = bad;
        assert!(validate(&s, &v).is_err(), "{field} accepted");
    }
    let mut v = good.clone();
    v.as_object_mut().unwrap().remove("key");
    assert!(validate(&s, &v).is_err());
}

/// herald with a simulator whose status webhooks reach herald's `/webhooks`, on SQLite.
struct App {
    sim: SimHandle,
    store: Arc<dyn Store>,
    engine: Engine,
    stop: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Drop for App {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn app(events: Option<EventOptions>, undeliverable: &[String]) -> App {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sim = simulator::spawn(
        SimConfig {
            rate_per_sec: 1_000_000,
            accept_unknown_templates: true,
            webhook_url: Some(format!(
                "http://{}/webhooks",
                listener.local_addr().unwrap()
            )),
            app_secret: Some(APP_SECRET.into()),
            delivered_share: 1.0,
            read_share: 0.5,
            undeliverable: undeliverable
                .iter()
                .map(|n| n.trim_start_matches('+').to_owned())
                .collect(),
            ..SimConfig::default()
        },
        SocketAddr::from(([127, 0, 0, 1], 0)),
    )
    .await
    .expect("simulator starts");
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("h.db").display());
    let store = store::open(&url).await.expect("store opens");
    support::seed(&store, &sender(SENDER, 1_000_000)).await;
    let stop = CancellationToken::new();
    let config = herald::http::ServeConfig {
        webhooks: herald::http::WebhookConfig {
            app_secret: APP_SECRET.into(),
            verify_token: None,
            opt_out: herald::http::OptOutWords::default(),
            clock: Clock::system(),
            rate_card: Arc::new(herald::policy::cost::RateCard::builtin()),
            recipient_events: events,
        },
        admin_token: None,
        shutdown_delay: Duration::ZERO,
        drain: Duration::from_secs(1),
    };
    tokio::spawn(herald::http::run(
        listener,
        Arc::clone(&store),
        config,
        stop.clone(),
    ));
    let graph = GraphConfig {
        base_url: sim.url(),
        request_timeout: Duration::from_secs(10),
        ..GraphConfig::default()
    };
    let engine = support::engine(
        &store,
        &graph,
        EngineConfig {
            recipient_events: events,
            ..fast_retries()
        },
    );
    App {
        sim,
        store,
        engine,
        stop,
        _dir: dir,
    }
}

fn numbers(n: usize, base: u64) -> Vec<String> {
    (0..n)
        .map(|i| format!("+49151{:08}", base + i as u64))
        .collect()
}

fn campaign_job(campaign: &str, to: &[String]) -> Arc<Job> {
    let recipients: Vec<Value> = to
        .iter()
        .enumerate()
        .map(|(i, n)| json!({ "to": n, "key": format!("{campaign}-{i}") }))
        .collect();
    let v = json!({
        "version": 1,
        "job_id": format!("{campaign}-job"),
        "campaign_id": campaign,
        "sender": SENDER,
        "template": { "name": "flash_sale", "language": "de", "category": "marketing" },
        "recipients": recipients,
    });
    Arc::new(Job::parse(v.to_string().as_bytes()).expect("valid job"))
}

/// The (key, state) pairs each recipient's ledger row says must have been reported, once the
/// status webhooks have settled: `sent` keys delivered (and read, with read implying
/// delivered), failed keys `failed`.
async fn expected_events(store: &Arc<dyn Store>, keys: &[String]) -> HashSet<(String, String)> {
    let ids: Vec<IdempotencyKey> = keys
        .iter()
        .map(|k| IdempotencyKey::from_trusted(k.clone()))
        .collect();
    let mut want = HashSet::new();
    for row in store.ledger_entries(&ids).await.unwrap() {
        let k = row.key.as_str().to_owned();
        match row.state.as_str() {
            "sent" => {
                want.insert((k.clone(), "sent".to_owned()));
                match row.delivery.as_deref() {
                    Some("delivered") => {
                        want.insert((k, "delivered".to_owned()));
                    }
                    Some("read") => {
                        want.insert((k.clone(), "delivered".to_owned()));
                        want.insert((k, "read".to_owned()));
                    }
                    other => panic!("{k}: delivery {other:?} did not settle"),
                }
            }
            "failed" => {
                want.insert((k, "failed".to_owned()));
            }
            other => panic!("{k}: unexpected state {other}"),
        }
    }
    want
}

/// Waits until every accepted message has its final status webhook applied (delivered, or
/// read for the share the simulator reads).
async fn settle(app: &App, keys: &[String], accepted: u64) {
    let ids: Vec<IdempotencyKey> = keys
        .iter()
        .map(|k| IdempotencyKey::from_trusted(k.clone()))
        .collect();
    let deadline = Instant::now() + WAIT;
    loop {
        let rows = app.store.ledger_entries(&ids).await.unwrap();
        let settled = rows
            .iter()
            .filter(|r| r.state == "sent" && r.delivery.is_some())
            .count() as u64;
        let posted = app.sim.stats().webhook_statuses_posted;
        // sent + delivered per message, plus read for about half: stop once nothing moves.
        if settled == accepted && posted >= 2 * accepted {
            tokio::time::sleep(Duration::from_millis(300)).await;
            if app.sim.stats().webhook_statuses_posted == posted {
                return;
            }
        }
        assert!(Instant::now() < deadline, "{settled} of {accepted} settled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Checks what a consumer received: each valid, each (key, state) once, in order per key.
fn check_received(received: &[Value], want: &HashSet<(String, String)>) {
    let schema = schema();
    let rank = |s: &str| match s {
        "sent" => 0,
        "delivered" => 1,
        "read" => 2,
        _ => 3,
    };
    let mut seen = HashSet::new();
    let mut last: HashMap<String, i32> = HashMap::new();
    for e in received {
        validate(&schema, e).unwrap_or_else(|err| panic!("{err}: {e}"));
        assert!(e.get("to").is_none(), "numbers are off by default: {e}");
        let (key, state) = (
            e["key"].as_str().unwrap().to_owned(),
            e["state"].as_str().unwrap().to_owned(),
        );
        assert_eq!(e["event_id"], format!("{key}/{state}"));
        assert!(
            seen.insert((key.clone(), state.clone())),
            "{key}/{state} twice"
        );
        let r = rank(&state);
        let prev = last.insert(key.clone(), r).unwrap_or(-1);
        assert!(prev < r, "{key}: {state} after a later state");
        if state == "failed" {
            assert_eq!(e["code"], "131026");
        }
    }
    assert_eq!(&seen, want, "every state of every recipient, nothing else");
}

/// Consumes `queue` until `until` says stop, acking each event after recording it.
async fn consume(
    url: &str,
    queue: &str,
    into: &Arc<Mutex<Vec<Value>>>,
    until: impl Fn(usize) -> bool,
) {
    let conn = herald::amqp::connect(url, "test-crm").await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.basic_qos(1, BasicQosOptions::default()).await.unwrap();
    let mut consumer = ch
        .basic_consume(
            queue.into(),
            "crm".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let deadline = Instant::now() + WAIT;
    while !until(into.lock().unwrap().len()) {
        let next = tokio::time::timeout(Duration::from_secs(5), consumer.next()).await;
        let delivery = match next {
            Ok(Some(d)) => d.unwrap(),
            _ => {
                assert!(Instant::now() < deadline, "no more events came");
                continue;
            }
        };
        let v: Value = serde_json::from_slice(&delivery.data).unwrap();
        assert_eq!(
            delivery.routing_key.as_str(),
            v["event"].as_str().unwrap(),
            "routed by recipient.<state>"
        );
        into.lock().unwrap().push(v);
        delivery.ack(BasicAckOptions::default()).await.unwrap();
    }
    // The consumer stops: whatever else comes waits in the queue.
    let _ = conn.close(200, "consumer stopped".into()).await;
}

#[tokio::test]
async fn amqp_events_arrive_once_each_in_order_and_wait_for_a_stopped_consumer() {
    let Some(url) = support::amqp_url().await else {
        return;
    };
    let prefix = support::unique_prefix();
    let topology = Topology::new(prefix.clone());
    let to = numbers(50, 30_000_000);
    let failing: Vec<String> = to.iter().step_by(10).cloned().collect();
    let app = app(Some(EventOptions::default()), &failing).await;
    consent_marketing(&app.store, &to).await;
    // The CRM's queue exists before the first event (herald declares it the same way).
    let conn = herald::amqp::connect(&url, "test-setup").await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    topology
        .declare_recipient_events(&ch, 10_000)
        .await
        .unwrap();

    let relay_stop = CancellationToken::new();
    let relay = spawn_relay(
        Arc::clone(&app.store),
        Arc::new(AmqpSink::new(url.clone(), topology.clone(), 10_000)),
        RelayConfig {
            poll: Duration::from_millis(50),
            ..RelayConfig::default()
        },
        relay_stop.clone(),
    );
    let received = Arc::new(Mutex::new(Vec::new()));
    let queue = topology.recipient_events_queue();
    let job = campaign_job("ev-amqp", &to);
    let ctl = RunControl::default();
    let run = app.engine.run_job(Arc::clone(&job), &ctl);
    // A consumer takes the first ten events and stops while the campaign goes on.
    let ((), ran) = tokio::join!(consume(&url, &queue, &received, |n| n >= 10), run);
    ran.expect("the run does not fail");
    let keys: Vec<String> = job
        .recipients
        .iter()
        .map(|r| r.key.as_str().to_owned())
        .collect();
    settle(&app, &keys, 45).await;
    let want = expected_events(&app.store, &keys).await;
    assert!(want.len() >= 45 * 2 + 5, "{} events expected", want.len());
    // Everything was published while nobody consumed: it waits in the queue.
    let deadline = Instant::now() + WAIT;
    loop {
        let c = app.store.recipient_event_counts().await.unwrap();
        if c.pending == 0 && c.published == want.len() as u64 {
            break;
        }
        assert!(Instant::now() < deadline, "outbox not drained: {c:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The consumer comes back and gets the rest: nothing lost, nothing twice.
    consume(&url, &queue, &received, |n| n >= want.len()).await;
    relay_stop.cancel();
    relay.await.unwrap();
    check_received(&received.lock().unwrap(), &want);

    ch.queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await
        .unwrap();
    topology.delete(&ch).await.unwrap();
}

/// A CRM's webhook receiver: verifies every POST's signature; answers 503 while down.
#[derive(Default)]
struct Receiver {
    up: AtomicBool,
    events: Mutex<Vec<Value>>,
    posts: AtomicU64,
    bad_signatures: AtomicU64,
    batches: Mutex<BTreeMap<String, usize>>,
}

async fn receive(State(r): State<Arc<Receiver>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    r.posts.fetch_add(1, Ordering::SeqCst);
    let signature = headers.get(SIGNATURE_HEADER).map(|v| v.as_bytes());
    if herald::http::verify(CRM_SECRET.as_bytes(), &body, signature).is_err() {
        r.bad_signatures.fetch_add(1, Ordering::SeqCst);
        return StatusCode::UNAUTHORIZED;
    }
    // Signed with any other key, the same body would not verify.
    assert!(herald::http::verify(b"another-key", &body, signature).is_err());
    if !r.up.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let batch: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(batch["version"], 1);
    let events = batch["events"].as_array().unwrap().clone();
    let id = headers
        .get(herald::crm::BATCH_HEADER)
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    *r.batches.lock().unwrap().entry(id).or_default() += 1;
    r.events.lock().unwrap().extend(events);
    StatusCode::OK
}

async fn receiver() -> (Arc<Receiver>, String, CancellationToken) {
    let r = Arc::new(Receiver::default());
    let app = axum::Router::new()
        .route("/crm/herald", axum::routing::post(receive))
        .with_state(Arc::clone(&r));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/crm/herald", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    let s = stop.clone();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { s.cancelled().await })
            .await
            .unwrap();
    });
    (r, url, stop)
}

fn webhook_relay(store: &Arc<dyn Store>, url: &str, clock: &Clock) -> Relay {
    let sink = WebhookSink::new(WebhookSinkConfig {
        url: url.to_owned(),
        secret: CRM_SECRET.into(),
        concurrency: 4,
        timeout: Duration::from_secs(5),
    })
    .unwrap();
    Relay::new(
        Arc::clone(store),
        Arc::new(sink),
        RelayConfig {
            clock: clock.clone(),
            // Far longer than a round takes: a second round right away finds nothing due.
            retry_base: Duration::from_secs(60),
            ..RelayConfig::default()
        },
    )
}

#[tokio::test]
async fn a_webhook_receiver_down_for_a_while_gets_every_event_afterwards_once() {
    let to = numbers(30, 31_000_000);
    let failing = vec![to[7].clone()];
    let app = app(Some(EventOptions { numbers: true }), &failing).await;
    consent_marketing(&app.store, &to).await;
    let job = campaign_job("ev-hook", &to);
    app.engine
        .run_job(Arc::clone(&job), &RunControl::default())
        .await
        .unwrap();
    let keys: Vec<String> = job
        .recipients
        .iter()
        .map(|r| r.key.as_str().to_owned())
        .collect();
    settle(&app, &keys, 29).await;
    let want = expected_events(&app.store, &keys).await;

    let (crm, url, stop) = receiver().await;
    let clock = Clock::system();
    let relay = webhook_relay(&app.store, &url, &clock);
    // Down: every event is handed back and waits for its back-off on herald's clock.
    let down = relay.try_round().await.unwrap();
    assert_eq!(down.claimed, want.len());
    assert_eq!(
        (down.published, down.failed, down.dead),
        (0, want.len() as u64, 0)
    );
    assert_eq!(relay.try_round().await.unwrap().claimed, 0, "backing off");
    let c = app.store.recipient_event_counts().await.unwrap();
    assert_eq!(c.pending, want.len() as u64, "the outbox holds them");
    // An hour later on herald's clock the receiver is back.
    crm.up.store(true, Ordering::SeqCst);
    clock.advance(Duration::from_secs(3600));
    let mut published = 0;
    loop {
        let r = relay.try_round().await.unwrap();
        if r.claimed == 0 {
            break;
        }
        assert_eq!(r.failed, 0);
        published += r.published;
    }
    assert_eq!(published, want.len() as u64);
    assert_eq!(crm.bad_signatures.load(Ordering::SeqCst), 0);
    let events = crm.events.lock().unwrap().clone();
    let schema = schema();
    let mut seen = HashSet::new();
    for e in &events {
        validate(&schema, e).unwrap_or_else(|err| panic!("{err}: {e}"));
        assert!(
            e["to"].as_str().unwrap().starts_with("+49151"),
            "numbers were asked for"
        );
        assert!(seen.insert((
            e["key"].as_str().unwrap().to_owned(),
            e["state"].as_str().unwrap().to_owned()
        )));
    }
    assert_eq!(seen, want, "everything, once");
    assert!(
        crm.batches.lock().unwrap().values().all(|n| *n == 1),
        "no batch taken twice"
    );
    let c = app.store.recipient_event_counts().await.unwrap();
    assert_eq!(
        (c.pending, c.published as usize, c.dead),
        (0, want.len(), 0)
    );
    stop.cancel();
}

#[tokio::test]
async fn events_nobody_takes_for_a_day_go_dead() {
    let to = numbers(5, 32_000_000);
    let app = app(Some(EventOptions::default()), &[]).await;
    consent_marketing(&app.store, &to).await;
    let job = campaign_job("ev-dead", &to);
    app.engine
        .run_job(Arc::clone(&job), &RunControl::default())
        .await
        .unwrap();
    let keys: Vec<String> = job
        .recipients
        .iter()
        .map(|r| r.key.as_str().to_owned())
        .collect();
    settle(&app, &keys, 5).await;
    let (crm, url, stop) = receiver().await;
    let clock = Clock::system();
    let relay = webhook_relay(&app.store, &url, &clock);
    let first = relay.try_round().await.unwrap();
    assert!(first.claimed >= 5);
    assert_eq!(first.dead, 0);
    clock.advance(Duration::from_secs(25 * 3600));
    let mut dead = 0;
    loop {
        let r = relay.try_round().await.unwrap();
        if r.claimed == 0 {
            break;
        }
        dead += r.dead;
    }
    let c = app.store.recipient_event_counts().await.unwrap();
    assert_eq!(c.pending, 0);
    assert_eq!(c.dead, dead);
    assert!(dead >= 5);
    assert!(
        crm.posts.load(Ordering::SeqCst) >= 2,
        "each round tried the receiver"
    );
    stop.cancel();
}

#[tokio::test]
async fn with_events_off_nothing_is_written() {
    let to = numbers(20, 33_000_000);
    let app = app(None, &to[..2]).await;
    consent_marketing(&app.store, &to).await;
    let job = campaign_job("ev-off", &to);
    app.engine
        .run_job(Arc::clone(&job), &RunControl::default())
        .await
        .unwrap();
    let keys: Vec<String> = job
        .recipients
        .iter()
        .map(|r| r.key.as_str().to_owned())
        .collect();
    settle(&app, &keys, 18).await;
    let c = app.store.recipient_event_counts().await.unwrap();
    assert_eq!((c.pending, c.published, c.dead), (0, 0, 0));
    assert!(
        app.store
            .recipient_event_states(&keys)
            .await
            .unwrap()
            .is_empty()
    );
    // The statuses were applied all the same.
    let settled = app
        .store
        .ledger_entries(
            &keys
                .iter()
                .map(|k| IdempotencyKey::from_trusted(k.clone()))
                .collect::<Vec<_>>(),
        )
        .await
        .unwrap()
        .iter()
        .filter(|r| r.delivery.is_some())
        .count();
    assert_eq!(settled, 18);
}

#[tokio::test]
async fn a_full_crm_queue_refuses_events_and_they_wait_in_the_outbox() {
    let Some(url) = support::amqp_url().await else {
        return;
    };
    let topology = Topology::new(support::unique_prefix());
    let (store, _dir) = support::sqlite_store().await;
    let t0 = chrono::Utc::now();
    let batch = |prefix: &str| -> Vec<herald::domain::NewRecipientEvent> {
        (0..20)
            .map(|i| {
                herald::domain::NewRecipientEvent::build(
                    herald::domain::EventFacts {
                        message_key: &format!("{prefix}-{i}"),
                        state: herald::domain::RecipientState::Sent,
                        campaign: "full",
                        channel: herald::domain::ChannelKind::WhatsApp,
                        recipient: "+4915112345678",
                        code: None,
                        at: t0,
                    },
                    false,
                )
            })
            .collect()
    };
    let events = batch("full");
    assert_eq!(store.record_recipient_events(&events).await.unwrap(), 20);
    let clock = Clock::system();
    let relay = Relay::new(
        Arc::clone(&store),
        Arc::new(AmqpSink::new(url.clone(), topology.clone(), 5)),
        RelayConfig {
            clock: clock.clone(),
            ..RelayConfig::default()
        },
    );
    // Nobody consumes. A quorum queue enforces its length between batches, not within one:
    // the first batch may overshoot the five; once over, RabbitMQ refuses (reject-publish).
    let first = relay.try_round().await.unwrap();
    assert_eq!(first.claimed, 20);
    let more = batch("more");
    assert_eq!(store.record_recipient_events(&more).await.unwrap(), 20);
    let second = relay.try_round().await.unwrap();
    assert!(second.failed > 0, "{second:?}");
    assert_eq!(second.dead, 0);
    let refused = first.failed + second.failed;
    let waiting = store.recipient_event_counts().await.unwrap().pending;
    assert_eq!(waiting, refused, "refused events wait in the outbox");

    // The CRM drains the queue; the back-off passes on herald's clock; the rest go out.
    let received = Arc::new(Mutex::new(Vec::new()));
    let queue = topology.recipient_events_queue();
    let mut rounds = 0;
    while store.recipient_event_counts().await.unwrap().pending > 0 {
        consume(&url, &queue, &received, {
            let queued = received.lock().unwrap().len();
            move |n| n > queued
        })
        .await;
        clock.advance(Duration::from_secs(600));
        relay.try_round().await.unwrap();
        rounds += 1;
        assert!(rounds < 40, "never drained");
    }
    // What is left in the queue.
    let total_published = store.recipient_event_counts().await.unwrap().published;
    assert_eq!(total_published, 40);
    let all_ids = |r: &Arc<Mutex<Vec<Value>>>| {
        r.lock()
            .unwrap()
            .iter()
            .map(|e| e["event_id"].as_str().unwrap().to_owned())
            .collect::<HashSet<String>>()
    };
    while all_ids(&received).len() < 40 {
        let n = received.lock().unwrap().len();
        consume(&url, &queue, &received, move |m| m > n).await;
    }
    assert_eq!(
        all_ids(&received).len(),
        40,
        "every event arrived (deduplicated on event_id)"
    );

    let conn = herald::amqp::connect(&url, "test-cleanup").await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await
        .unwrap();
    topology.delete(&ch).await.unwrap();
}
