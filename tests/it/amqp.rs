//! herald's RabbitMQ side against a real broker: the worker in-process (and as the real binary
//! for SIGTERM), `herald enqueue` as the binary, the simulator as the Cloud API and a fresh
//! store per test. Every test declares its own prefix and deletes it afterwards, even when it
//! fails. Without a broker the tests print `SKIPPED` and pass, unless
//! `HERALD_REQUIRE_SERVICES=1` (CI) makes that a failure.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use herald::amqp::{self, Publisher, Topology, WorkerConfig, WorkerState, run_worker};
use herald::domain::{CampaignId, Job};
use herald::engine::Engine;
use herald::graph::GraphConfig;
use herald::simulator::{self, SimConfig, SimHandle};
use herald::store::{self, CampaignCounts, CampaignState, Sender, Store};
use lapin::message::Delivery;
use lapin::options::{BasicGetOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::rabbit_node::RabbitNode;
use crate::support;

use crate::support::{SENDER, consent_marketing, fast_retries, sender};
/// Long enough for a loaded CI machine, short enough that a hang fails the test in time.
const WAIT: Duration = Duration::from_secs(30);

// --- the broker side ------------------------------------------------------------------------

/// A test's own prefix on the broker, declared like a worker would; everything of the prefix
/// is deleted on drop, even when the test panics.
struct Broker {
    url: String,
    topology: Topology,
    conn: Connection,
    publisher: Publisher,
}

impl Broker {
    async fn start() -> Option<Broker> {
        let broker = Self::undeclared().await?;
        broker
            .topology
            .declare(broker.publisher.channel())
            .await
            .expect("declare the topology");
        Some(broker)
    }

    /// A unique prefix with nothing declared yet (still deleted on drop).
    async fn undeclared() -> Option<Broker> {
        Some(Self::connect(support::amqp_url().await?).await)
    }

    /// A unique prefix, declared, on the broker at `url`.
    async fn start_at(url: String) -> Broker {
        let broker = Self::connect(url).await;
        broker
            .topology
            .declare(broker.publisher.channel())
            .await
            .expect("declare the topology");
        broker
    }

    async fn connect(url: String) -> Broker {
        let topology = Topology::new(support::unique_prefix());
        let conn = amqp::connect(&url, "test").await.expect("connect");
        let publisher = Publisher::open(&conn).await.expect("confirm channel");
        Broker {
            url,
            topology,
            conn,
            publisher,
        }
    }

    /// A fresh channel: a passive declare of a missing queue closes its channel, so probes
    /// never share one.
    async fn channel(&self) -> Channel {
        self.conn.create_channel().await.expect("channel")
    }

    async fn publish(&self, body: &[u8], routing_key: &str, job_id: &str) {
        self.publisher
            .publish(
                &self.topology.jobs_exchange(),
                routing_key,
                true,
                body,
                amqp::job_properties(job_id),
            )
            .await
            .expect("the broker confirms the job");
    }

    async fn publish_job(&self, job: &Value) {
        let id = job["job_id"].as_str().unwrap_or("unnamed").to_owned();
        let key = job["sender"].as_str().unwrap_or(SENDER).to_owned();
        self.publish(job.to_string().as_bytes(), &key, &id).await;
    }

    /// Ready messages in a queue (`None` if it does not exist).
    async fn ready(&self, queue: &str) -> Option<u32> {
        self.queue_info(queue).await.map(|(ready, _)| ready)
    }

    /// (ready messages, consumers) of a queue, `None` if it does not exist.
    async fn queue_info(&self, queue: &str) -> Option<(u32, u32)> {
        let ch = self.channel().await;
        let q = ch
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .ok()?;
        let _ = ch.close(200, "probe".into()).await;
        Some((q.message_count(), q.consumer_count()))
    }

    async fn wait_ready(&self, queue: &str, n: u32) {
        let deadline = Instant::now() + WAIT;
        loop {
            let now = self.ready(queue).await;
            if now == Some(n) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{queue} holds {now:?} ready messages, expected {n}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Takes one message (acked on the way).
    async fn get(&self, queue: &str) -> Option<Delivery> {
        let ch = self.channel().await;
        let got = ch
            .basic_get(queue.into(), BasicGetOptions { no_ack: true })
            .await
            .expect("basic.get");
        got.map(|m| m.delivery)
    }

    async fn take(&self, queue: &str, n: usize) -> Vec<Delivery> {
        let deadline = Instant::now() + WAIT;
        let mut out = Vec::new();
        while out.len() < n {
            match self.get(queue).await {
                Some(d) => out.push(d),
                None => {
                    assert!(
                        Instant::now() < deadline,
                        "{queue}: got {} of {n} messages",
                        out.len()
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        out
    }

    /// A private queue receiving every event of the prefix.
    async fn events(&self) -> String {
        let ch = self.channel().await;
        let q = ch
            .queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("events queue");
        ch.queue_bind(
            q.name().clone(),
            self.topology.events_exchange().into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind events");
        // The queue lives with the connection; this channel may go.
        q.name().to_string()
    }

    /// The next event of `kind` on `queue`, skipping others.
    async fn next_event(&self, queue: &str, kind: &str) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(d) = self.get(queue).await {
                let v: Value = serde_json::from_slice(&d.data).expect("events are JSON");
                if v["event"] == kind {
                    assert_eq!(d.routing_key.as_str(), kind);
                    return v;
                }
                continue;
            }
            assert!(Instant::now() < deadline, "no {kind} event");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        // Async cleanup from a destructor: a thread with its own runtime, joined, so the
        // prefix is gone before the next test starts — panicking or not.
        let url = self.url.clone();
        let topology = self.topology.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("cleanup runtime");
            rt.block_on(async {
                if let Ok(conn) = amqp::connect(&url, "test-cleanup").await {
                    if let Ok(ch) = conn.create_channel().await {
                        let _ = topology.delete(&ch).await;
                    }
                    let _ = conn.close(200, "cleanup".into()).await;
                }
            });
        })
        .join();
    }
}

fn header(d: &Delivery, name: &str) -> Option<String> {
    match d.properties.headers().as_ref()?.inner().get(name)? {
        AMQPValue::LongString(s) => Some(s.to_string()),
        AMQPValue::ShortString(s) => Some(s.to_string()),
        AMQPValue::LongLongInt(n) => Some(n.to_string()),
        other => Some(format!("{other:?}")),
    }
}

// --- the application side -------------------------------------------------------------------

/// A simulator, a seeded store (SQLite, or Postgres when given a URL) and an engine.
struct App {
    sim: SimHandle,
    store: Arc<dyn Store>,
    engine: Arc<Engine>,
    db_url: String,
    /// The in-process `herald serve` receiving the simulator's status webhooks, if asked for.
    _webhooks: Option<WebhookReceiver>,
    _dir: tempfile::TempDir,
}

/// `herald serve`'s webhook side in this process; stopped on drop.
struct WebhookReceiver(CancellationToken);

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

const WEBHOOK_SECRET: &str = "amqp-test-secret";

struct AppOptions {
    /// The sender's rate: low values make a job last long enough to interrupt.
    rate: u32,
    /// The rate the simulator enforces per number (130429 above it).
    sim_rate: u32,
    latency: Duration,
    postgres: Option<String>,
    /// The simulator posts signed status webhooks to a `herald serve` on the same store.
    webhooks: bool,
    /// The simulator also runs an SMSC with this TPS limit (workers get `HERALD_SMS_URL`).
    smsc_tps: Option<u32>,
}

impl Default for AppOptions {
    fn default() -> Self {
        Self {
            rate: 100_000,
            sim_rate: 1_000_000,
            latency: Duration::ZERO,
            postgres: None,
            webhooks: false,
            smsc_tps: None,
        }
    }
}

impl App {
    async fn start(opts: AppOptions) -> App {
        let webhook_listener = match opts.webhooks {
            true => Some(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap()),
            false => None,
        };
        let sim = simulator::spawn(
            SimConfig {
                rate_per_sec: opts.sim_rate,
                latency: opts.latency,
                accept_unknown_templates: true,
                webhook_url: webhook_listener
                    .as_ref()
                    .map(|l| format!("http://{}/webhooks", l.local_addr().unwrap())),
                app_secret: opts.webhooks.then(|| WEBHOOK_SECRET.into()),
                smsc: opts.smsc_tps.map(|tps| herald::simulator::SmscConfig {
                    tps,
                    receipt_delay: Duration::from_millis(20),
                    ..Default::default()
                }),
                ..SimConfig::default()
            },
            SocketAddr::from(([127, 0, 0, 1], 0)),
        )
        .await
        .expect("simulator starts");
        let dir = tempfile::tempdir().unwrap();
        let db_url = opts.postgres.clone().unwrap_or_else(|| {
            format!(
                "sqlite://{}?mode=rwc",
                dir.path().join("herald.db").display()
            )
        });
        let store = store::open(&db_url).await.expect("store opens");
        seed(&store, opts.rate).await;
        let webhooks = webhook_listener.map(|listener| {
            let stop = CancellationToken::new();
            let config = herald::http::ServeConfig {
                webhooks: herald::http::WebhookConfig {
                    app_secret: WEBHOOK_SECRET.into(),
                    verify_token: None,
                    opt_out: herald::http::OptOutWords::default(),
                    clock: herald::domain::Clock::system(),
                    rate_card: std::sync::Arc::new(herald::policy::cost::RateCard::builtin()),
                    recipient_events: None,
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
            WebhookReceiver(stop)
        });
        let graph = GraphConfig {
            base_url: sim.url(),
            request_timeout: Duration::from_secs(10),
            ..GraphConfig::default()
        };
        let engine = Arc::new(support::engine(&store, &graph, fast_retries()));
        App {
            sim,
            store,
            engine,
            db_url,
            _webhooks: webhooks,
            _dir: dir,
        }
    }

    async fn consent(&self, numbers: &[String]) {
        consent_marketing(&self.store, numbers).await;
    }

    async fn wait_accepted(&self, n: u64) {
        let deadline = Instant::now() + WAIT;
        while self.sim.stats().accepted < n {
            assert!(
                Instant::now() < deadline,
                "simulator accepted {} of {n}",
                self.sim.stats().accepted
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn seed(store: &Arc<dyn Store>, rate: u32) {
    support::seed(store, &sender(SENDER, rate)).await;
}

fn numbers(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("+49151{:08}", 20_000_000 + i))
        .collect()
}

fn job(id: &str, campaign: &str, to: &[String]) -> Value {
    let recipients: Vec<Value> = to.iter().map(|n| json!({ "to": n })).collect();
    json!({
        "version": 1,
        "job_id": id,
        "campaign_id": campaign,
        "sender": SENDER,
        "template": { "name": "flash_sale", "language": "de", "category": "marketing" },
        "recipients": recipients,
    })
}

/// A worker running in-process.
struct Worker {
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), amqp::WorkerError>>,
    state: Arc<WorkerState>,
}

fn start_worker(broker: &Broker, app: &App, drain: Duration) -> Worker {
    let shutdown = CancellationToken::new();
    let state = Arc::new(WorkerState::new());
    let task = tokio::spawn(run_worker(
        WorkerConfig {
            amqp_url: broker.url.clone(),
            topology: broker.topology.clone(),
            prefetch: 4,
            drain,
        },
        Arc::clone(&app.engine),
        shutdown.clone(),
        Some(Arc::clone(&state)),
    ));
    Worker {
        shutdown,
        task,
        state,
    }
}

impl Worker {
    async fn wait_consuming(&self) {
        let deadline = Instant::now() + WAIT;
        while !self.state.is_ready() {
            assert!(Instant::now() < deadline, "the worker never became ready");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The SIGTERM path: cancel, then wait for the drain. Returns how long stopping took.
    async fn stop(self) -> Duration {
        let started = Instant::now();
        self.shutdown.cancel();
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("the worker stops")
            .expect("the worker task does not panic")
            .expect("the worker ends without error");
        started.elapsed()
    }
}

// --- the tests ------------------------------------------------------------------------------

#[tokio::test]
async fn poison_jobs_are_dead_lettered_with_their_reason_and_the_worker_goes_on() {
    let Some(broker) = Broker::start().await else {
        return;
    };
    let app = App::start(AppOptions::default()).await;
    let to = numbers(5);
    app.consent(&to).await;
    let events = broker.events().await;
    let worker = start_worker(&broker, &app, Duration::from_secs(5));
    worker.wait_consuming().await;

    broker
        .publish(b"{\"version\": 1, \"job_id\": ", SENDER, "broken")
        .await;
    let mut v2 = job("future", "c-poison", &to);
    v2["version"] = json!(2);
    broker.publish_job(&v2).await;
    let mut stranger = job("stranger", "c-poison", &to);
    stranger["sender"] = json!("999999");
    broker.publish_job(&stranger).await;
    broker.publish_job(&job("good", "c-poison", &to)).await;

    let dead = broker.take(&broker.topology.dead_queue(), 3).await;
    let mut codes: Vec<String> = dead
        .iter()
        .map(|d| header(d, "x-herald-reason-code").expect("reason code header"))
        .collect();
    codes.sort();
    assert_eq!(
        codes,
        ["invalid_json", "unknown_sender", "unsupported_version"]
    );
    for d in &dead {
        let reason = header(d, "x-herald-reason").expect("reason header");
        assert!(!reason.is_empty());
        if header(d, "x-herald-reason-code").as_deref() == Some("unknown_sender") {
            assert!(reason.contains("999999"), "{reason}");
            assert_eq!(
                d.routing_key.as_str(),
                "999999",
                "the routing key travels along"
            );
            assert_eq!(
                d.properties.message_id().as_ref().map(|m| m.as_str()),
                Some("stranger")
            );
        }
    }

    let done = broker.next_event(&events, amqp::JOB_COMPLETED).await;
    assert_eq!(done["job"], "good");
    app.wait_accepted(5).await;
    worker.stop().await;
    assert_eq!(app.sim.stats().accepted, 5);
    // Nothing held back or handed back: every delivery was acked.
    assert_eq!(broker.ready(&broker.topology.jobs_queue()).await, Some(0));
}

#[tokio::test]
async fn malformed_jobs_are_rejected_once_without_echoing_a_number_and_the_worker_goes_on() {
    let Some(broker) = Broker::start().await else {
        return;
    };
    // Postgres: it is the store that refuses a NUL byte, which used to look like an outage.
    let Some(url) = support::postgres_url().await else {
        return;
    };
    let app = App::start(AppOptions {
        postgres: Some(url.clone()),
        ..AppOptions::default()
    })
    .await;
    let to = numbers(3);
    app.consent(&to).await;
    let events = broker.events().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("worker.log");
    let _worker = WorkerProcess(
        herald(&broker)
            .arg("worker")
            .env("HERALD_DATABASE_URL", &app.db_url)
            .env("HERALD_GRAPH_URL", app.sim.url())
            .env("HERALD_HTTP_ADDR", "127.0.0.1:0")
            .env("HERALD_METRICS_ADDR", "127.0.0.1:0")
            .env("RUST_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start herald worker"),
    );
    wait_consumers(&broker, 1).await;

    let nul = |edit: &dyn Fn(&mut Value)| {
        let mut v = job("bad", "c-bad", &to);
        edit(&mut v);
        v
    };
    let bad = [
        nul(&|v| v["recipients"][0]["to"] = json!(format!("{}\u{0}", to[0]))),
        nul(&|v| v["template"]["name"] = json!("flash\u{0}sale")),
        nul(&|v| v["template"]["language"] = json!("de\u{0}")),
        nul(&|v| v["campaign_id"] = json!("c\u{0}bad")),
        nul(&|v| {
            v["recipients"][1]["components"] =
                json!([{"type": "body", "parameters": [{"type": "text", "text": "A\u{0}"}]}])
        }),
        nul(&|v| v["recipients"][2]["to"] = json!(4915701800000u64)),
    ];
    for v in &bad {
        broker.publish_job(v).await;
    }
    // A duplicate key, whose second value is a number.
    let dup = job("dup", "c-bad", &to).to_string().replacen(
        "\"to\":",
        "\"to\":\"+4915701800000\",\"to\":",
        1,
    );
    broker.publish(dup.as_bytes(), SENDER, "dup").await;
    // Routed to another number than the job's sender.
    broker
        .publish(
            job("misrouted", "c-bad", &to).to_string().as_bytes(),
            "111",
            "misrouted",
        )
        .await;
    // An encoding herald does not speak.
    let publish_encoded = |body: Vec<u8>, id: &'static str, encoding: &'static str| {
        let broker = &broker;
        async move {
            broker
                .publisher
                .publish(
                    &broker.topology.jobs_exchange(),
                    SENDER,
                    true,
                    &body,
                    amqp::job_properties(id).with_content_encoding(encoding.into()),
                )
                .await
                .expect("published");
        }
    };
    publish_encoded(
        job("brotli", "c-bad", &to).to_string().into_bytes(),
        "brotli",
        "br",
    )
    .await;
    // Good jobs after all that: one gzipped, one plain.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, job("gz", "c-gz", &to).to_string().as_bytes()).unwrap();
    publish_encoded(gz.finish().unwrap(), "gz", "gzip").await;
    broker.publish_job(&job("good", "c-good", &to)).await;

    let dead = broker.take(&broker.topology.dead_queue(), 9).await;
    let mut codes: Vec<String> = dead
        .iter()
        .map(|d| header(d, "x-herald-reason-code").expect("reason code"))
        .collect();
    codes.sort();
    assert_eq!(
        codes,
        [
            "invalid_encoding",
            "invalid_job",
            "invalid_job",
            "invalid_job",
            "invalid_job",
            "invalid_job",
            "invalid_job",
            "invalid_json",
            "routing_key_mismatch"
        ]
    );
    app.wait_accepted(6).await;
    let mut completed = Vec::new();
    while completed.len() < 2 {
        completed.push(broker.next_event(&events, amqp::JOB_COMPLETED).await["job"].clone());
    }
    completed.sort_by_key(|v| v.to_string());
    assert_eq!(completed, [json!("good"), json!("gz")]);
    assert_eq!(broker.ready(&broker.topology.jobs_queue()).await, Some(0));
    assert_eq!(
        broker.ready(&broker.topology.dead_queue()).await,
        Some(0),
        "rejected once"
    );

    // No full number anywhere: not in headers, not in events, not in the log.
    let digits: Vec<String> = to
        .iter()
        .map(|n| n.trim_start_matches('+').to_owned())
        .chain(["4915701800000".to_owned()])
        .collect();
    let mut seen = Vec::new();
    for d in &dead {
        for h in ["x-herald-reason", "x-herald-reason-code"] {
            seen.push(header(d, h).unwrap_or_default());
        }
    }
    while let Some(d) = broker.get(&events).await {
        seen.push(String::from_utf8_lossy(&d.data).into_owned());
    }
    let logged = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        logged.matches("job rejected to").count(),
        9,
        "the log names each rejection: {logged}"
    );
    seen.push(logged);
    for text in &seen {
        for n in &digits {
            assert!(!text.contains(n.as_str()), "a number in: {text}");
        }
    }
    drop(_worker);
    support::drop_postgres_database(&url).await;
}

async fn a_job_is_sent_acked_and_announced(app: App) {
    let Some(broker) = Broker::start().await else {
        return;
    };
    let to = numbers(50);
    app.consent(&to[..47]).await;
    let events = broker.events().await;
    let worker = start_worker(&broker, &app, Duration::from_secs(5));
    broker.publish_job(&job("j-1", "c-valid", &to)).await;

    let event = broker.next_event(&events, amqp::JOB_COMPLETED).await;
    assert_eq!(event["job"], "j-1");
    assert_eq!(event["campaign"], "c-valid");
    assert_eq!(event["sender"], SENDER);
    assert_eq!(event["totals"]["sent"], 47);
    assert_eq!(event["outcomes"]["skipped:no_consent"], 3);
    assert_eq!(event["remaining"], 0);
    assert!(event["stop"].is_null());
    assert!(event["elapsed_seconds"].as_f64().unwrap() > 0.0);

    worker.stop().await;
    let stats = app.sim.stats();
    assert_eq!((stats.accepted, stats.duplicates), (47, 0));
    let counts = app
        .store
        .campaign_counts(&CampaignId::parse("c-valid").unwrap())
        .await
        .unwrap();
    assert_eq!(counts.state("sent"), 47);
    // Acked, so closing the worker's channel handed nothing back.
    assert_eq!(broker.ready(&broker.topology.jobs_queue()).await, Some(0));
}

#[tokio::test]
async fn a_job_is_sent_acked_and_announced_with_sqlite() {
    a_job_is_sent_acked_and_announced(App::start(AppOptions::default()).await).await;
}

#[tokio::test]
async fn a_job_is_sent_acked_and_announced_with_postgres() {
    let Some(url) = support::postgres_url().await else {
        return;
    };
    let app = App::start(AppOptions {
        postgres: Some(url.clone()),
        ..AppOptions::default()
    })
    .await;
    a_job_is_sent_acked_and_announced(app).await;
    support::drop_postgres_database(&url).await;
}

#[tokio::test]
async fn a_paused_campaign_job_waits_in_a_delay_queue_instead_of_being_held() {
    let Some(broker) = Broker::start().await else {
        return;
    };
    let app = App::start(AppOptions::default()).await;
    let to = numbers(3);
    app.consent(&to).await;
    let campaign = CampaignId::parse("c-paused").unwrap();
    app.store
        .set_campaign_state(&campaign, CampaignState::Paused, Some("test"))
        .await
        .unwrap();
    let worker = start_worker(&broker, &app, Duration::from_secs(5));
    let body = job("j-paused", "c-paused", &to);
    broker.publish_job(&body).await;

    let delay_queue = broker
        .topology
        .delay_queue(&amqp::DelayTier::for_delay(Duration::from_secs(30)));
    broker.wait_ready(&delay_queue, 1).await;
    let deadline = Instant::now() + WAIT;
    while worker.state.jobs_in_flight() > 0 {
        assert!(
            Instant::now() < deadline,
            "the job is still held by the worker"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    worker.stop().await;
    assert_eq!(broker.ready(&broker.topology.jobs_queue()).await, Some(0));
    assert_eq!(app.sim.stats().accepted, 0);

    let parked = broker.get(&delay_queue).await.expect("the parked job");
    assert_eq!(parked.routing_key.as_str(), SENDER);
    assert_eq!(header(&parked, amqp::DELAY_HEADER).as_deref(), Some("30s"));
    assert_eq!(header(&parked, "x-herald-deferrals").as_deref(), Some("1"));
    assert_eq!(
        parked.properties.message_id().as_ref().map(|m| m.as_str()),
        Some("j-paused")
    );
    assert_eq!(*parked.properties.delivery_mode(), Some(2));
    assert_eq!(
        serde_json::from_slice::<Value>(&parked.data).unwrap(),
        body,
        "the same body"
    );
}

#[tokio::test]
async fn a_job_due_in_seconds_comes_back_from_its_delay_queue_and_is_sent() {
    let Some(broker) = Broker::start().await else {
        return;
    };
    let app = App::start(AppOptions::default()).await;
    let to = numbers(4);
    app.consent(&to).await;
    let events = broker.events().await;
    let worker = start_worker(&broker, &app, Duration::from_secs(5));
    let mut body = job("j-later", "c-later", &to);
    body["not_before"] = json!(Utc::now() + chrono::Duration::seconds(2));
    let published = Instant::now();
    broker.publish_job(&body).await;

    let event = broker.next_event(&events, amqp::JOB_COMPLETED).await;
    assert!(
        published.elapsed() >= Duration::from_secs(2),
        "sent before not_before"
    );
    assert_eq!(event["job"], "j-later");
    assert_eq!(event["totals"]["sent"], 4);
    worker.stop().await;
    assert_eq!(app.sim.stats().accepted, 4);
}

/// Ready messages in every delay queue of the prefix, by tier name.
async fn delay_counts(broker: &Broker) -> Vec<(&'static str, u32)> {
    let mut out = Vec::new();
    for tier in &amqp::DELAY_TIERS {
        let n = broker
            .ready(&broker.topology.delay_queue(tier))
            .await
            .expect("delay queue exists");
        out.push((tier.name, n));
    }
    out
}

#[tokio::test]
async fn a_deferred_job_waits_in_exactly_one_delay_queue_per_tier() {
    let Some(broker) = Broker::start().await else {
        return;
    };
    let app = App::start(AppOptions::default()).await;
    let to = numbers(2);
    app.consent(&to).await;
    let worker = start_worker(&broker, &app, Duration::from_secs(5));
    // One job per tier: due in 10 s (5 s tier), 1 min (30 s), 10 min (5 min), 2 h (30 min).
    let due = [("j-5s", 10), ("j-30s", 60), ("j-5m", 600), ("j-30m", 7200)];
    for (id, secs) in due {
        let mut body = job(id, "c-tiers", &to);
        body["not_before"] = json!(Utc::now() + chrono::Duration::seconds(secs));
        broker.publish_job(&body).await;
    }
    let deadline = Instant::now() + WAIT;
    loop {
        let counts = delay_counts(&broker).await;
        let total: u32 = counts.iter().map(|(_, n)| n).sum();
        if total >= 4 && worker.state.jobs_in_flight() == 0 {
            assert_eq!(
                counts,
                vec![("5s", 1), ("30s", 1), ("5m", 1), ("30m", 1)],
                "each deferred job is in its own tier's queue, once"
            );
            break;
        }
        assert!(Instant::now() < deadline, "delay queues hold {counts:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    worker.stop().await;
    for (tier, (id, _)) in amqp::DELAY_TIERS.iter().zip(due) {
        let parked = broker
            .get(&broker.topology.delay_queue(tier))
            .await
            .expect("the parked job");
        assert_eq!(
            parked.properties.message_id().as_ref().map(|m| m.as_str()),
            Some(id)
        );
        assert!(header(&parked, amqp::DEFERRAL_HEADER).is_some());
    }
    assert_eq!(app.sim.stats().accepted, 0);
}

#[tokio::test]
async fn copies_of_a_deferred_job_collapse_into_one_that_comes_back_once() {
    let Some(broker) = Broker::start().await else {
        return;
    };
    let app = App::start(AppOptions::default()).await;
    let to = numbers(3);
    app.consent(&to).await;
    let events = broker.events().await;
    let mut body = job("j-copies", "c-copies", &to);
    body["not_before"] = json!(Utc::now() + chrono::Duration::seconds(8));
    // Three copies parked as an older herald left them: no deferral token, one per delay
    // queue it wrongly matched (here all in the 5 s queue, to come back quickly).
    for _ in 0..3 {
        let mut headers = FieldTable::default();
        headers.insert(
            amqp::DELAY_HEADER.into(),
            AMQPValue::LongString("5s".into()),
        );
        broker
            .publisher
            .publish(
                &broker.topology.delay_exchange(),
                SENDER,
                true,
                body.to_string().as_bytes(),
                amqp::job_properties("j-copies").with_headers(headers),
            )
            .await
            .expect("parked");
    }
    let worker = start_worker(&broker, &app, Duration::from_secs(5));
    let event = broker.next_event(&events, amqp::JOB_COMPLETED).await;
    assert_eq!(event["job"], "j-copies");
    assert_eq!(event["totals"]["sent"], 3);
    // Let any further copy come back (5 s tier) and be dropped.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let deadline = Instant::now() + WAIT;
    while worker.state.jobs_in_flight() > 0 {
        assert!(Instant::now() < deadline, "a job is still in flight");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    worker.stop().await;
    let mut completed = 1;
    while let Some(d) = broker.get(&events).await {
        let v: Value = serde_json::from_slice(&d.data).unwrap();
        if v["event"] == amqp::JOB_COMPLETED {
            completed += 1;
        }
    }
    assert_eq!(completed, 1, "the job ran to completion once");
    let counts = delay_counts(&broker).await;
    assert!(
        counts.iter().all(|(_, n)| *n == 0),
        "no copy is left: {counts:?}"
    );
    assert_eq!(broker.ready(&broker.topology.jobs_queue()).await, Some(0));
    assert_eq!(app.sim.stats().accepted, 3);
    assert_eq!(app.sim.stats().duplicates, 0);
}

#[tokio::test]
async fn shutdown_hands_unsent_recipients_back_and_the_next_worker_finishes_them() {
    let Some(broker) = Broker::start().await else {
        return;
    };
    // 200 recipients at 20/s: ten seconds of work to interrupt.
    let app = App::start(AppOptions {
        rate: 20,
        ..AppOptions::default()
    })
    .await;
    let to = numbers(200);
    app.consent(&to).await;
    let events = broker.events().await;
    let first = start_worker(&broker, &app, Duration::from_secs(10));
    broker.publish_job(&job("j-long", "c-long", &to)).await;
    app.wait_accepted(10).await;

    let took = first.stop().await;
    assert!(took < Duration::from_secs(5), "draining took {took:?}");
    let sent_before = app.sim.stats().accepted;
    assert!(sent_before < 200, "the job was not interrupted");
    // Handed back whole (nack-requeue), not acked and not lost.
    broker.wait_ready(&broker.topology.jobs_queue(), 1).await;

    let second = start_worker(&broker, &app, Duration::from_secs(10));
    let event = broker.next_event(&events, amqp::JOB_COMPLETED).await;
    second.stop().await;
    assert_eq!(event["job"], "j-long");
    assert_eq!(event["already_done"], sent_before);
    assert_eq!(event["totals"]["sent"], 200 - sent_before);
    let stats = app.sim.stats();
    assert_eq!((stats.accepted, stats.duplicates), (200, 0));
}

#[tokio::test]
async fn a_run_that_outlives_the_drain_deadline_is_handed_back_anyway() {
    let Some(broker) = Broker::start().await else {
        return;
    };
    // Every request takes 3 s: the run cannot finish its requests in flight within the drain.
    let app = App::start(AppOptions {
        latency: Duration::from_secs(3),
        ..AppOptions::default()
    })
    .await;
    let to = numbers(20);
    app.consent(&to).await;
    let worker = start_worker(&broker, &app, Duration::from_millis(500));
    broker.publish_job(&job("j-slow", "c-slow", &to)).await;
    let deadline = Instant::now() + WAIT;
    while worker.state.jobs_in_flight() == 0 {
        assert!(Instant::now() < deadline, "the job never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    let took = worker.stop().await;
    assert!(
        took < Duration::from_secs(3),
        "the drain deadline was not kept: {took:?}"
    );
    broker.wait_ready(&broker.topology.jobs_queue(), 1).await;
}

#[tokio::test]
async fn a_deleted_jobs_queue_is_redeclared_and_consuming_resumes() {
    let Some(broker) = Broker::start().await else {
        return;
    };
    let app = App::start(AppOptions::default()).await;
    let to = numbers(3);
    app.consent(&to).await;
    let events = broker.events().await;
    let worker = start_worker(&broker, &app, Duration::from_secs(5));
    worker.wait_consuming().await;

    let queue = broker.topology.jobs_queue();
    broker
        .channel()
        .await
        .queue_delete(queue.as_str().into(), Default::default())
        .await
        .expect("delete the jobs queue");
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some((_, consumers)) = broker.queue_info(&queue).await
            && consumers == 1
        {
            break;
        }
        assert!(Instant::now() < deadline, "the worker did not come back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    broker.publish_job(&job("j-after", "c-after", &to)).await;
    let event = broker.next_event(&events, amqp::JOB_COMPLETED).await;
    assert_eq!(event["job"], "j-after");
    worker.stop().await;
}

// --- the binary -----------------------------------------------------------------------------

fn herald(broker: &Broker) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_herald"));
    cmd.env("HERALD_AMQP_URL", &broker.url)
        .env("HERALD_AMQP_PREFIX", broker.topology.prefix())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null());
    cmd
}

#[tokio::test]
async fn enqueue_splits_a_csv_into_jobs_with_the_contract_properties() {
    let Some(broker) = Broker::start().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("recipients.csv");
    let mut text = String::from("to,key,param1\n");
    for (i, n) in numbers(25).iter().enumerate() {
        text.push_str(&format!("{n},order-{i},Kim\n"));
    }
    std::fs::write(&csv, text).unwrap();

    let out = herald(&broker)
        .args(["enqueue", "--csv"])
        .arg(&csv)
        .args([
            "--campaign",
            "c-csv",
            "--sender",
            SENDER,
            "--template",
            "flash_sale",
            "--language",
            "de",
            "--category",
            "marketing",
            "--job-size",
            "10",
            "--job-prefix",
            "c-csv-a",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ids: Vec<&str> = stdout.lines().collect();
    assert_eq!(ids, ["c-csv-a-00001", "c-csv-a-00002", "c-csv-a-00003"]);

    let jobs = broker.take(&broker.topology.jobs_queue(), 3).await;
    let mut sizes = Vec::new();
    for d in &jobs {
        assert_eq!(d.routing_key.as_str(), SENDER);
        assert_eq!(*d.properties.delivery_mode(), Some(2));
        assert_eq!(
            d.properties.content_type().as_ref().map(|c| c.as_str()),
            Some("application/json")
        );
        assert!(d.properties.timestamp().is_some());
        let job = Job::parse(&d.data).expect("a valid job");
        assert_eq!(
            d.properties.message_id().as_ref().map(|m| m.as_str()),
            Some(job.id.as_str())
        );
        sizes.push(job.recipients.len());
    }
    sizes.sort();
    assert_eq!(sizes, [5, 10, 10]);
}

#[tokio::test]
async fn enqueue_refuses_an_invalid_job_file_and_publishes_nothing() {
    let Some(broker) = Broker::start().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("job.json");
    let mut body = job("j-bad", "c-bad", &numbers(1));
    body["version"] = json!(7);
    std::fs::write(&file, body.to_string()).unwrap();
    let out = herald(&broker).arg("enqueue").arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unsupported job version"));
    assert_eq!(broker.ready(&broker.topology.jobs_queue()).await, Some(0));

    // The same job made valid goes out, with its id printed.
    body["version"] = json!(1);
    std::fs::write(&file, body.to_string()).unwrap();
    let out = herald(&broker).arg("enqueue").arg(&file).output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "j-bad");
    assert_eq!(broker.ready(&broker.topology.jobs_queue()).await, Some(1));
}

#[test]
fn enqueue_to_an_unreachable_broker_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("job.json");
    std::fs::write(&file, job("j-x", "c-x", &numbers(1)).to_string()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_herald"))
        .arg("enqueue")
        .arg(&file)
        .env("HERALD_AMQP_URL", "amqp://guest:secret@127.0.0.1:1/%2f")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot reach RabbitMQ"), "{stderr}");
    assert!(stderr.contains("Nothing was published"), "{stderr}");
    assert!(!stderr.contains("secret"), "the password leaked: {stderr}");
}

#[tokio::test]
async fn the_worker_binary_drains_and_exits_0_on_sigterm() {
    let Some(broker) = Broker::start().await else {
        return;
    };
    let app = App::start(AppOptions {
        rate: 20,
        ..AppOptions::default()
    })
    .await;
    let to = numbers(100);
    app.consent(&to).await;

    let mut child = herald(&broker)
        .arg("worker")
        .env("HERALD_DATABASE_URL", &app.db_url)
        .env("HERALD_GRAPH_URL", app.sim.url())
        .env("HERALD_DRAIN_SECONDS", "10")
        // Free ports: tests and other herald processes run side by side.
        .env("HERALD_HTTP_ADDR", "127.0.0.1:0")
        .env("HERALD_METRICS_ADDR", "127.0.0.1:0")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let queue = broker.topology.jobs_queue();
    let deadline = Instant::now() + WAIT;
    while broker.queue_info(&queue).await.map(|(_, c)| c) != Some(1) {
        if let Some(status) = child.try_wait().unwrap() {
            let mut stderr = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
            panic!("the worker binary exited early ({status}): {stderr}");
        }
        assert!(
            Instant::now() < deadline,
            "the worker binary never consumed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    broker.publish_job(&job("j-bin", "c-bin", &to)).await;
    app.wait_accepted(5).await;

    let started = Instant::now();
    // SAFETY: signalling our own child by its pid.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let status = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        status.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(app.sim.stats().accepted < 100);
    broker.wait_ready(&queue, 1).await;
}

/// Switches connections to a test database off or on, cutting those it has: a database
/// outage as the worker sees it (superusers included, unlike REVOKE CONNECT).
async fn database_reachable(db_url: &str, reachable: bool) {
    use sqlx::Connection;
    let (base, name) = db_url
        .split('?')
        .next()
        .and_then(|b| b.rsplit_once('/'))
        .expect("a postgres URL with a database");
    let mut admin = sqlx::postgres::PgConnection::connect(&format!("{base}/postgres"))
        .await
        .expect("admin connection");
    sqlx::query(&format!(
        "ALTER DATABASE {name} WITH ALLOW_CONNECTIONS {reachable}"
    ))
    .execute(&mut admin)
    .await
    .expect("alter database");
    if !reachable {
        sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
            .bind(name)
            .execute(&mut admin)
            .await
            .expect("cut connections");
    }
    let _ = admin.close().await;
}

#[tokio::test]
async fn a_database_outage_hands_jobs_back_until_the_database_returns() {
    let Some(broker) = Broker::start().await else {
        return;
    };
    let Some(url) = support::postgres_url().await else {
        return;
    };
    let app = App::start(AppOptions {
        postgres: Some(url.clone()),
        ..AppOptions::default()
    })
    .await;
    let to = numbers(10);
    app.consent(&to).await;
    let events = broker.events().await;
    let worker = start_worker(&broker, &app, Duration::from_secs(5));
    worker.wait_consuming().await;

    database_reachable(&url, false).await;
    broker.publish_job(&job("j-outage", "c-outage", &to)).await;
    let deadline = Instant::now() + WAIT;
    while worker.state.database_ok() {
        assert!(Instant::now() < deadline, "the outage went unnoticed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!worker.state.is_ready(), "not ready without a database");
    assert_eq!(app.sim.stats().accepted, 0);

    database_reachable(&url, true).await;
    let event = broker.next_event(&events, amqp::JOB_COMPLETED).await;
    assert_eq!(event["job"], "j-outage");
    assert_eq!(event["totals"]["sent"], 10);
    assert!(worker.state.database_ok());
    worker.stop().await;
    assert_eq!(app.sim.stats().accepted, 10);
    assert_eq!(broker.ready(&broker.topology.jobs_queue()).await, Some(0));
    support::drop_postgres_database(&url).await;
}

/// Runs `rabbitmqctl` (the broker on this machine), `None` when it cannot.
async fn rabbitmqctl(args: &[&str]) -> Option<String> {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let out = Command::new("rabbitmqctl")
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    })
    .await
    .unwrap()
}

/// Erlang pids of the broker connections whose name contains `fragment`, in the form
/// `close_connection` takes (the table format; JSON prints pids another way).
async fn connections_named(fragment: &str) -> Option<Vec<String>> {
    let listed = rabbitmqctl(&["list_connections", "-q", "pid", "client_properties"]).await?;
    Some(
        listed
            .lines()
            .filter(|line| line.contains(fragment))
            .filter_map(|line| line.split('\t').next())
            .map(str::to_owned)
            .collect(),
    )
}

#[tokio::test]
async fn a_closed_connection_is_reopened_and_consuming_resumes() {
    let Some(broker) = Broker::start().await else {
        return;
    };
    let app = App::start(AppOptions::default()).await;
    let to = numbers(3);
    app.consent(&to).await;
    let events = broker.events().await;
    let worker = start_worker(&broker, &app, Duration::from_secs(5));
    worker.wait_consuming().await;

    let fragment = format!("worker {} ", broker.topology.prefix());
    let Some(pids) = connections_named(&fragment).await else {
        assert!(
            !support::require_services(),
            "HERALD_REQUIRE_SERVICES=1 but rabbitmqctl cannot list connections"
        );
        eprintln!("SKIPPED: rabbitmqctl cannot list the broker's connections");
        return;
    };
    assert_eq!(pids.len(), 1, "one worker connection: {pids:?}");
    rabbitmqctl(&["close_connection", &pids[0], "test: connection lost"])
        .await
        .expect("close the worker's connection");

    // A new connection, consuming again.
    let deadline = Instant::now() + WAIT;
    loop {
        let now = connections_named(&fragment).await.unwrap_or_default();
        let consumers = broker
            .queue_info(&broker.topology.jobs_queue())
            .await
            .map(|(_, c)| c);
        if now.len() == 1 && now[0] != pids[0] && consumers == Some(1) {
            break;
        }
        assert!(Instant::now() < deadline, "the worker did not reconnect");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    broker
        .publish_job(&job("j-reconnected", "c-reconnect", &to))
        .await;
    let event = broker.next_event(&events, amqp::JOB_COMPLETED).await;
    assert_eq!(event["job"], "j-reconnected");
    worker.stop().await;
}

#[tokio::test]
async fn a_conflicting_queue_stops_the_worker_with_a_clear_error() {
    let Some(broker) = Broker::undeclared().await else {
        return;
    };
    // Someone else declared the jobs queue as a classic queue.
    broker
        .channel()
        .await
        .queue_declare(
            broker.topology.jobs_queue().as_str().into(),
            QueueDeclareOptions::durable(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let app = App::start(AppOptions::default()).await;
    let worker = start_worker(&broker, &app, Duration::from_secs(1));
    let result = tokio::time::timeout(WAIT, worker.task)
        .await
        .expect("the worker gives up instead of retrying forever")
        .unwrap();
    let err = result
        .expect_err("a conflicting queue is an error")
        .to_string();
    assert!(err.contains(broker.topology.prefix()), "{err}");
    assert!(
        err.contains("PRECONDITION") || err.contains("inequivalent"),
        "{err}"
    );
}

// --- scale-out: several worker processes on one Postgres ------------------------------------

/// The scale-out tests start several worker processes and measure rates: one at a time, so
/// they don't slow each other below the rates they check.
static SCALE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A `herald worker` process; killed (SIGKILL) when dropped.
struct WorkerProcess(std::process::Child);

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_worker_process(broker: &Broker, app: &App, lease_seconds: u64) -> WorkerProcess {
    spawn_worker_process_with(broker, app, lease_seconds, &[])
}

fn spawn_worker_process_with(
    broker: &Broker,
    app: &App,
    lease_seconds: u64,
    env: &[(&str, &str)],
) -> WorkerProcess {
    let child = herald(broker)
        .arg("worker")
        .envs(env.iter().copied())
        .env("HERALD_DATABASE_URL", &app.db_url)
        .env("HERALD_GRAPH_URL", app.sim.url())
        .env("HERALD_DRAIN_SECONDS", "5")
        .env("HERALD_LEASE_SECONDS", lease_seconds.to_string())
        .env("HERALD_HTTP_ADDR", "127.0.0.1:0")
        .env("HERALD_METRICS_ADDR", "127.0.0.1:0")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start herald worker");
    WorkerProcess(child)
}

async fn wait_consumers(broker: &Broker, n: u32) {
    let queue = broker.topology.jobs_queue();
    let deadline = Instant::now() + WAIT;
    while broker.queue_info(&queue).await.map(|(_, c)| c) != Some(n) {
        assert!(Instant::now() < deadline, "{n} workers never consumed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until every key of `campaign` has a final outcome; returns the counts.
async fn wait_campaign_done(
    app: &App,
    campaign: &str,
    keys: u64,
    limit: Duration,
) -> CampaignCounts {
    let id = CampaignId::parse(campaign).unwrap();
    let deadline = Instant::now() + limit;
    loop {
        let counts = app.store.campaign_counts(&id).await.unwrap();
        let open = counts.state("pending") + counts.state("sending");
        if counts.total() == keys && open == 0 {
            return counts;
        }
        assert!(
            Instant::now() < deadline,
            "campaign {campaign} not done: {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn add_sender(store: &Arc<dyn Store>, id: &str, rate: u32) {
    let sender = Sender {
        display_number: String::new(),
        ..sender(id, rate)
    };
    store.upsert_sender(&sender).await.unwrap();
}

#[tokio::test]
async fn three_workers_on_one_number_stay_at_its_rate_and_never_above_it() {
    let _one_at_a_time = SCALE.lock().await;
    let Some(broker) = Broker::start().await else {
        return;
    };
    let Some(pg) = support::postgres_url().await else {
        return;
    };
    let app = App::start(AppOptions {
        rate: 80,
        sim_rate: 80,
        postgres: Some(pg.clone()),
        ..AppOptions::default()
    })
    .await;
    let to = numbers(800);
    app.consent(&to).await;
    let _workers: Vec<_> = (0..3)
        .map(|_| spawn_worker_process(&broker, &app, 60))
        .collect();
    wait_consumers(&broker, 3).await;
    // Four jobs so that all three workers send to the number at once.
    for (i, chunk) in to.chunks(200).enumerate() {
        broker
            .publish_job(&job(&format!("rate-{i}"), "rate", chunk))
            .await;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while app.sim.stats().accepted == 0 {
        assert!(Instant::now() < deadline, "nothing was sent");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let first = Instant::now();
    let counts = wait_campaign_done(&app, "rate", 800, Duration::from_secs(60)).await;
    let elapsed = first.elapsed().as_secs_f64();
    assert_eq!(counts.state("sent"), 800, "{counts:?}");
    let stats = app.sim.stats();
    let n = &stats.numbers[SENDER];
    assert_eq!(n.throttled_130429, 0, "{stats:?}");
    assert!(n.max_in_one_second <= 80, "{stats:?}");
    assert_eq!(stats.duplicates, 0);
    // 799 intervals after the first accepted send; the ledger poll adds up to 0.2 s.
    let average = 799.0 / (elapsed - 0.2).max(0.1);
    assert!(
        average >= 76.0,
        "average {average:.1}/s over {elapsed:.1} s"
    );
    support::drop_postgres_database(&pg).await;
}

/// Busy loops on every core for the length of a test, each in its own process group so the
/// whole group dies on drop; each ends by itself after two minutes should the test be killed.
struct CpuHogs(Vec<std::process::Child>);

impl CpuHogs {
    fn start(n: usize) -> CpuHogs {
        use std::os::unix::process::CommandExt;
        CpuHogs(
            (0..n)
                .map(|_| {
                    Command::new("timeout")
                        .args(["120", "sh", "-c", "while :; do :; done"])
                        .stdin(Stdio::null())
                        .process_group(0)
                        .spawn()
                        .expect("start a CPU hog")
                })
                .collect(),
        )
    }
}

impl Drop for CpuHogs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            // The group's id is the leader's pid: `timeout` and the loop it runs.
            unsafe { libc::kill(-(c.id() as i32), libc::SIGKILL) };
            let _ = c.wait();
        }
    }
}

/// Three worker processes on one number at `rate`, with the machine's cores kept busy:
/// the simulator (enforcing the same rate) must see no second above it and no 130429.
async fn three_loaded_workers_hold(rate: u32, recipients: usize) -> Option<f64> {
    let _one_at_a_time = SCALE.lock().await;
    let broker = Broker::start().await?;
    let pg = support::postgres_url().await?;
    let app = App::start(AppOptions {
        rate,
        sim_rate: rate,
        postgres: Some(pg.clone()),
        ..AppOptions::default()
    })
    .await;
    let to = numbers(recipients);
    for chunk in to.chunks(5000) {
        app.consent(chunk).await;
    }
    let _workers: Vec<_> = (0..3)
        .map(|_| spawn_worker_process(&broker, &app, 10))
        .collect();
    wait_consumers(&broker, 3).await;
    let _hogs = CpuHogs::start(2);
    for (i, chunk) in to.chunks(recipients.div_ceil(6)).enumerate() {
        broker
            .publish_job(&job(&format!("load-{i}"), "load", chunk))
            .await;
    }
    let first = loop {
        if app.sim.stats().accepted > 0 {
            break Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let counts =
        wait_campaign_done(&app, "load", recipients as u64, Duration::from_secs(120)).await;
    let elapsed = first.elapsed().as_secs_f64();
    assert_eq!(counts.state("sent"), recipients as u64, "{counts:?}");
    let stats = app.sim.stats();
    let n = &stats.numbers[SENDER];
    assert_eq!(n.throttled_130429, 0, "{stats:?}");
    assert!(n.max_in_one_second <= rate as u64, "{stats:?}");
    assert_eq!(stats.duplicates, 0);
    support::drop_postgres_database(&pg).await;
    let average = (recipients - 1) as f64 / elapsed;
    eprintln!(
        "{rate}/s, 3 workers, 2 CPU hogs: busiest second {}, average {average:.1}/s",
        n.max_in_one_second
    );
    Some(average)
}

#[tokio::test]
async fn three_workers_under_cpu_load_never_exceed_80_per_second() {
    if let Some(average) = three_loaded_workers_hold(80, 800).await {
        // Loaded, the average may sag a little; it must not collapse.
        assert!(average >= 60.0, "average {average:.1}/s");
    }
}

#[tokio::test]
async fn three_workers_under_cpu_load_never_exceed_1000_per_second() {
    three_loaded_workers_hold(1000, 10_000).await;
}

#[tokio::test]
async fn three_workers_two_numbers_twenty_thousand_recipients_each_sent_once() {
    let _one_at_a_time = SCALE.lock().await;
    let Some(broker) = Broker::start().await else {
        return;
    };
    let Some(pg) = support::postgres_url().await else {
        return;
    };
    const OTHER: &str = "106540352242923";
    let app = App::start(AppOptions {
        rate: 1000,
        sim_rate: 1000,
        postgres: Some(pg.clone()),
        ..AppOptions::default()
    })
    .await;
    add_sender(&app.store, OTHER, 1000).await;
    let to = numbers(20_000);
    for chunk in to.chunks(5000) {
        app.consent(chunk).await;
    }
    let _workers: Vec<_> = (0..3)
        .map(|_| spawn_worker_process(&broker, &app, 60))
        .collect();
    wait_consumers(&broker, 3).await;
    for (i, chunk) in to.chunks(2000).enumerate() {
        let mut j = job(&format!("big-{i}"), "big", chunk);
        if i % 2 == 1 {
            j["sender"] = json!(OTHER);
        }
        broker.publish_job(&j).await;
    }
    let counts = wait_campaign_done(&app, "big", 20_000, Duration::from_secs(240)).await;
    assert_eq!(counts.state("sent"), 20_000, "{counts:?}");
    let stats = app.sim.stats();
    assert_eq!(stats.accepted, 20_000);
    assert_eq!(stats.duplicates, 0);
    for id in [SENDER, OTHER] {
        let n = &stats.numbers[id];
        assert_eq!(n.throttled_130429, 0, "{id}: {stats:?}");
        assert!(n.max_in_one_second <= 1000, "{id}: {stats:?}");
    }
    support::drop_postgres_database(&pg).await;
}

#[tokio::test]
async fn a_worker_killed_mid_campaign_loses_nobody_and_sends_nobody_twice() {
    let _one_at_a_time = SCALE.lock().await;
    let Some(broker) = Broker::start().await else {
        return;
    };
    let Some(pg) = support::postgres_url().await else {
        return;
    };
    let app = App::start(AppOptions {
        rate: 100,
        sim_rate: 1_000_000,
        postgres: Some(pg.clone()),
        ..AppOptions::default()
    })
    .await;
    let to = numbers(1000);
    app.consent(&to).await;
    let mut victim = spawn_worker_process(&broker, &app, 4);
    wait_consumers(&broker, 1).await;
    for (i, chunk) in to.chunks(250).enumerate() {
        broker
            .publish_job(&job(&format!("kill-{i}"), "kill", chunk))
            .await;
    }
    app.wait_accepted(200).await;
    // kill -9: no drain, no acks, keys left `pending` or `sending` under a dead owner.
    victim.0.kill().unwrap();
    victim.0.wait().unwrap();
    let _survivor = spawn_worker_process(&broker, &app, 4);
    let counts = wait_campaign_done(&app, "kill", 1000, Duration::from_secs(120)).await;
    let stats = app.sim.stats();
    assert_eq!(stats.duplicates, 0, "{stats:?}");
    let sent = counts.state("sent");
    let unknown = counts.state("unknown");
    // Every key has exactly one outcome; only keys that were mid-request at the kill may be
    // `unknown` (and those the API may or may not have accepted).
    assert_eq!(sent + unknown, 1000, "{counts:?}");
    assert!(
        stats.accepted >= sent && stats.accepted <= sent + unknown,
        "{stats:?} {counts:?}"
    );
    assert!(unknown <= 60, "{counts:?}");
    support::drop_postgres_database(&pg).await;
}

#[tokio::test]
async fn a_kill_loop_of_three_workers_loses_nobody_and_resends_only_what_meta_never_accepted() {
    let _one_at_a_time = SCALE.lock().await;
    let Some(broker) = Broker::start().await else {
        return;
    };
    let Some(pg) = support::postgres_url().await else {
        return;
    };
    let app = App::start(AppOptions {
        rate: 250,
        sim_rate: 1_000_000,
        // Requests take a while, so kills catch some in flight.
        latency: Duration::from_millis(40),
        postgres: Some(pg.clone()),
        webhooks: true,
        ..AppOptions::default()
    })
    .await;
    const N: usize = 6000;
    let to = numbers(N);
    for chunk in to.chunks(3000) {
        app.consent(chunk).await;
    }
    let env = [("HERALD_RESEND_UNKNOWN_AFTER", "2s")];
    let spawn = || spawn_worker_process_with(&broker, &app, 3, &env);
    let mut workers: Vec<WorkerProcess> = (0..3).map(|_| spawn()).collect();
    wait_consumers(&broker, 3).await;
    for (i, chunk) in to.chunks(250).enumerate() {
        broker
            .publish_job(&job(&format!("loop-{i}"), "loop", chunk))
            .await;
    }
    // Kill one worker (kill -9) every 1.2 s and start a fresh one, while the first two
    // thirds of the campaign go out: the rest keeps status webhooks flowing afterwards.
    const KILLS: usize = 12;
    app.wait_accepted(300).await;
    for k in 0..KILLS {
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let mut victim = workers.remove(k % workers.len());
        victim.0.kill().unwrap();
        victim.0.wait().unwrap();
        workers.push(spawn());
    }
    assert!(
        app.sim.stats().accepted < (N as u64) * 9 / 10,
        "the kills came too late to matter: {:?}",
        app.sim.stats()
    );
    let id = CampaignId::parse("loop").unwrap();
    let deadline = Instant::now() + Duration::from_secs(180);
    let counts = loop {
        let counts = app.store.campaign_counts(&id).await.unwrap();
        let open = counts.state("pending") + counts.state("sending");
        // Done when every key is final and no unknown is left that a review may still resend
        // (each job's worker keeps it until then).
        let queues_empty = broker.ready(&broker.topology.jobs_queue()).await == Some(0)
            && delay_counts(&broker).await.iter().all(|(_, n)| *n == 0);
        if counts.total() == N as u64 && open == 0 && queues_empty {
            break counts;
        }
        assert!(Instant::now() < deadline, "not done: {counts:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    drop(workers);
    let stats = app.sim.stats();
    let (sent, unknown) = (counts.state("sent"), counts.state("unknown"));
    assert_eq!(stats.duplicates, 0, "{stats:?}");
    assert_eq!(sent + unknown, N as u64, "{counts:?}");
    assert_eq!(
        stats.accepted, sent,
        "every sent key was accepted once, nothing else: {counts:?}"
    );
    assert!(
        unknown < KILLS as u64,
        "{unknown} unknown after {KILLS} kills: {counts:?}"
    );
    let resent = app
        .store
        .ledger_page(&id, None, N as u32)
        .await
        .unwrap()
        .iter()
        .filter(|r| r.resent_unknown)
        .count();
    eprintln!(
        "kill loop: {KILLS} kills, {sent} sent ({resent} of them resent after unknown), {unknown} unknown, {} accepted, 0 duplicates",
        stats.accepted
    );
    support::drop_postgres_database(&pg).await;
}

#[tokio::test]
async fn a_rabbitmq_restart_mid_campaign_is_survived() {
    let _one_at_a_time = SCALE.lock().await;
    // A node of its own: restarting the shared broker would break every other test.
    let Some(node) = RabbitNode::start().await else {
        return;
    };
    let Some(pg) = support::postgres_url().await else {
        return;
    };
    let broker = Broker::start_at(node.url()).await;
    let app = App::start(AppOptions {
        rate: 200,
        postgres: Some(pg.clone()),
        ..AppOptions::default()
    })
    .await;
    let to = numbers(2000);
    app.consent(&to).await;
    let _workers: Vec<_> = (0..2)
        .map(|_| spawn_worker_process(&broker, &app, 4))
        .collect();
    wait_consumers(&broker, 2).await;
    // 16 jobs: the two workers hold 8 (prefetch 4 each) unacked when the broker goes down;
    // the other 8 wait in the durable queue and must still be there afterwards.
    for (i, chunk) in to.chunks(125).enumerate() {
        broker
            .publish_job(&job(&format!("restart-{i}"), "restart", chunk))
            .await;
    }
    app.wait_accepted(300).await;
    node.stop().await;
    let during = app.sim.stats().accepted;
    tokio::time::sleep(Duration::from_secs(2)).await;
    node.start_again().await;

    let counts = wait_campaign_done(&app, "restart", 2000, Duration::from_secs(120)).await;
    let stats = app.sim.stats();
    assert!(
        stats.accepted > during,
        "nothing was sent after the restart: {stats:?}"
    );
    assert_eq!(stats.duplicates, 0, "{stats:?}");
    // A restart interrupts no HTTP request: every key is sent, exactly once.
    assert_eq!(counts.state("sent"), 2000, "{counts:?}");
    assert_eq!(stats.accepted, 2000, "{stats:?}");
    // Every job, redelivered or not, ends acknowledged; none is dead-lettered.
    let after = Broker::start_at(node.url()).await;
    let jobs = broker.topology.jobs_queue();
    let deadline = Instant::now() + WAIT;
    loop {
        let ch = after.channel().await;
        let q = ch
            .queue_declare(
                jobs.as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("the jobs queue survives the restart");
        let _ = ch.close(200, "probe".into()).await;
        let unacked = rabbit_unacked(&node, &jobs).await;
        if q.message_count() == 0 && unacked == Some(0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{jobs}: {} ready, {unacked:?} unacked",
            q.message_count()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(after.ready(&broker.topology.dead_queue()).await, Some(0));
    support::drop_postgres_database(&pg).await;
}

/// Unacknowledged messages of `queue` on a private node.
async fn rabbit_unacked(node: &RabbitNode, queue: &str) -> Option<u64> {
    let listed = node
        .ctl_output(&[
            "list_queues",
            "-q",
            "--no-table-headers",
            "name",
            "messages_unacknowledged",
        ])
        .await?;
    listed.lines().find_map(|line| {
        let (name, n) = line.split_once('\t')?;
        (name == queue).then(|| n.trim().parse().ok())?
    })
}

#[tokio::test]
async fn three_workers_on_one_sms_route_hold_its_tps_and_send_each_sms_once() {
    let _one_at_a_time = SCALE.lock().await;
    let Some(broker) = Broker::start().await else {
        return;
    };
    let Some(pg) = support::postgres_url().await else {
        return;
    };
    // The SMSC refuses (0x58) anything beyond 40 in a sliding second.
    let app = App::start(AppOptions {
        postgres: Some(pg.clone()),
        smsc_tps: Some(40),
        ..AppOptions::default()
    })
    .await;
    let to = numbers(240);
    let consents: Vec<_> = to
        .iter()
        .map(|n| herald::domain::Consent {
            phone: herald::domain::PhoneNumber::parse(n).unwrap(),
            category: herald::domain::Category::Marketing,
            channel: herald::domain::ChannelKind::Sms,
            granted_at: chrono::Utc::now() - chrono::Duration::days(1),
            source: "test".into(),
            proof: "checkbox".into(),
        })
        .collect();
    app.store.grant_consents(&consents).await.unwrap();
    let url = format!(
        "smpp://herald:secret@{}?name=route-1&tps=40",
        app.sim.smpp_addr().unwrap()
    );
    let _workers: Vec<_> = (0..3)
        .map(|_| spawn_worker_process_with(&broker, &app, 60, &[("HERALD_SMS_URL", &url)]))
        .collect();
    wait_consumers(&broker, 3).await;
    // Four jobs of customers who prefer SMS, so that all three workers use the route at once.
    for (i, chunk) in to.chunks(60).enumerate() {
        let mut body = job(&format!("sms-{i}"), "sms-rate", chunk);
        for r in body["recipients"].as_array_mut().unwrap() {
            r["channel"] = "sms".into();
        }
        body["sms"] = serde_json::json!({ "from": "ACME", "text": "ACME: -30 % heute" });
        broker.publish_job(&body).await;
    }
    let counts = wait_campaign_done(&app, "sms-rate", 240, Duration::from_secs(60)).await;
    assert_eq!(counts.state("sent"), 240, "{counts:?}");
    let sms = app.sim.stats().sms.unwrap();
    assert_eq!((sms.messages, sms.duplicates), (240, 0), "{sms:?}");
    eprintln!(
        "3 workers, SMS route at 40/s: busiest second {}, throttled {}",
        sms.max_in_one_second, sms.throttled
    );
    // The route's 40/s held across the three workers: the SMSC never saw more.
    assert!(sms.max_in_one_second <= 40, "{sms:?}");
    assert!(sms.throttled <= 3, "{sms:?}");
    assert_eq!(
        app.sim.stats().accepted,
        0,
        "nobody got the WhatsApp template"
    );
    // Nothing left over or refused anywhere: every job acked, none delayed or dead-lettered.
    assert_eq!(broker.ready(&broker.topology.jobs_queue()).await, Some(0));
    assert_eq!(broker.ready(&broker.topology.dead_queue()).await, Some(0));
    let delayed = delay_counts(&broker).await;
    assert!(delayed.iter().all(|(_, n)| *n == 0), "{delayed:?}");
    support::drop_postgres_database(&pg).await;
}
