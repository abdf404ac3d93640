//! SMS against WhatsApp through the same engine in one run: `herald simulate` with its SMSC in
//! its own process (no TPS limit, receipts after 50 ms), the engine built by `EngineSetup` with
//! the SMS route (session, window, receipt inbox) and a durable SQLite ledger in this process.
//! Each round sends the same recipients once on SMS, then once on WhatsApp (the template), each
//! under a fresh campaign, and prints messages/s and this process's CPU time per message of
//! both, and their ratio — absolute figures drift between hours on a shared machine, the ratio
//! measured minutes apart does not. Every round checks that the SMSC took each SMS once (no
//! duplicates) and the simulator each WhatsApp message once, and says how many SMS receipts
//! did not reach the ledger.
//!
//! Run: `cargo bench --bench sms` (env BENCH_RECIPIENTS, BENCH_ROUNDS, BENCH_JOBS_AT_ONCE,
//! BENCH_SMS_WINDOW, BENCH_SMS_RECEIPT_DELAY to vary).

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use herald::app::EngineSetup;
use herald::channel::sms::SmsRoute;
use herald::domain::{CampaignId, Category, ChannelKind, Job, PhoneNumber};
use herald::engine::{Engine, JobRun, RunControl};
use herald::graph::{GraphClient, GraphConfig};
use herald::policy::cost::RateCard;
use herald::store::{self, Consent, LedgerRow, Store};
use serde_json::{Value, json};

use support::{
    SENDER, cpu_by_thread, cpu_seconds, env_usize, free_port, number, spawn_simulator_with,
};

/// Outstanding `submit_sm` per session when BENCH_SMS_WINDOW is not set. A session carries at
/// most window / round trip messages per second; on loopback the round trip is so short that
/// 10 (the route's default) and 64 measured the same (README, "Benchmarks"), and 64 keeps the
/// window from being what the bench measures.
const DEFAULT_WINDOW: usize = 64;
/// Recipients per job: the job format's limit.
const JOB_SIZE: usize = 10_000;
/// The SMS version: one GSM-7 part with one placeholder, as campaigns write it.
const SMS_TEXT: &str =
    "ACME: Sneaker -30 % nur heute, {{name}}: https://acme.example/s STOP: Antwort STOP";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Lane {
    Sms,
    WhatsApp,
}

impl Lane {
    fn name(self) -> &'static str {
        match self {
            Lane::Sms => "SMS",
            Lane::WhatsApp => "WhatsApp",
        }
    }

    fn tag(self) -> &'static str {
        match self {
            Lane::Sms => "sms",
            Lane::WhatsApp => "wa",
        }
    }
}

/// What one lane measured in one round.
struct Measured {
    messages_per_sec: f64,
    /// This process's CPU per message until the last job finished.
    cpu_us: f64,
    /// The same until the SMSC had handed over every receipt and the inbox had applied them
    /// (SMS with receipts awaited).
    cpu_with_receipts_us: Option<f64>,
    /// SMS rows the SMSC sent a receipt for that the ledger does not show as delivered.
    receipts_unapplied: usize,
}

/// The receipts of one SMS round.
struct Receipts {
    cpu_us: f64,
    /// Rows without their `delivered` after every receipt was handed over and applied.
    unapplied: Vec<LedgerRow>,
}

/// Says, with a few rows, that receipts did not reach the ledger. Not a panic: the figures
/// stay worth reading. (Until f9012fb a receipt that arrived before its send was recorded
/// found no row and was lost; README, "Benchmarks".)
fn warn_unapplied(campaign: &str, n: usize, rows: &[LedgerRow]) {
    if rows.is_empty() {
        return;
    }
    println!(
        "  WARNING {campaign}: {} of {n} SMS rows have no delivery state though the SMSC handed \
         over every receipt, e.g.:",
        rows.len()
    );
    for r in rows.iter().take(3) {
        println!(
            "    {} state {} message id {} delivery {:?}, row updated {}",
            r.key,
            r.state,
            r.wamid.as_deref().unwrap_or("-"),
            r.delivery,
            r.updated_at.format("%H:%M:%S%.3f")
        );
    }
}

struct Bench {
    sim_url: String,
    store: Arc<dyn Store>,
    engine: Arc<Engine>,
    numbers: Vec<String>,
    at_once: usize,
    receipt_delay: Duration,
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing: run small then.
    let full = std::env::args().any(|a| a == "--bench");
    let recipients = env_usize("BENCH_RECIPIENTS", if full { 20_000 } else { 500 });
    let rounds = env_usize("BENCH_ROUNDS", if full { 3 } else { 1 });
    let at_once = env_usize("BENCH_JOBS_AT_ONCE", 2);
    let window = env_usize("BENCH_SMS_WINDOW", DEFAULT_WINDOW);
    let receipt_delay = std::env::var("BENCH_SMS_RECEIPT_DELAY")
        .ok()
        .map(|v| humantime::parse_duration(&v).expect("BENCH_SMS_RECEIPT_DELAY: e.g. 50ms"))
        .unwrap_or(Duration::from_millis(50));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(recipients, rounds, at_once, window, receipt_delay));
}

async fn run(
    recipients: usize,
    rounds: usize,
    at_once: usize,
    window: usize,
    receipt_delay: Duration,
) {
    let port = free_port();
    let smpp_port = free_port();
    let delay = humantime::format_duration(receipt_delay).to_string();
    let _sim = spawn_simulator_with(
        port,
        &[
            "--pair-burst",
            "0",
            "--smpp-port",
            &smpp_port.to_string(),
            "--smpp-system-id",
            "herald",
            "--smpp-password",
            "secret",
            "--smpp-tps",
            "0",
            "--smpp-max-binds",
            "0",
            "--sms-receipt-delay",
            &delay,
        ],
    );
    let sim_url = format!("http://127.0.0.1:{port}");
    for _ in 0..100 {
        if reqwest::get(format!("{sim_url}/__sim/stats")).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let dir = tempfile::tempdir().unwrap();
    let db = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("bench.db").display()
    );
    let store = store::open(&db).await.unwrap();
    let numbers: Vec<String> = (0..recipients).map(number).collect();
    prepare(&*store, &numbers).await;

    let graph = GraphClient::new(&GraphConfig {
        base_url: sim_url.clone(),
        ..GraphConfig::default()
    })
    .unwrap();
    // The route's own TPS limit set out of reach (its maximum), as the simulator's is: the
    // bench measures herald, not pacing.
    let route = SmsRoute::parse(&format!(
        "smpp://herald:secret@127.0.0.1:{smpp_port}?tps=100000&window={window}&name=bench"
    ))
    .unwrap();
    let mut setup = EngineSetup::new(RateCard::builtin());
    setup.sms_route = Some(route);
    let engine = Arc::new(setup.build(Arc::clone(&store), graph));
    let bench = Bench {
        sim_url,
        store,
        engine,
        numbers,
        at_once,
        receipt_delay,
    };
    bench.wait_bound().await;

    println!(
        "sms: {recipients} recipients per lane, {rounds} rounds, {at_once} jobs of ≤{JOB_SIZE} at once, \
         SMPP window {window}, receipts after {delay}, SQLite ledger, {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let mut ratios = Vec::new();
    let mut unapplied = 0;
    for round in 1..=rounds {
        let sms = bench.lane(Lane::Sms, round).await;
        unapplied += sms.receipts_unapplied;
        let wa = bench.lane(Lane::WhatsApp, round).await;
        let rate = sms.messages_per_sec / wa.messages_per_sec;
        let cpu = sms.cpu_us / wa.cpu_us;
        let with_receipts = sms.cpu_with_receipts_us.map_or(f64::NAN, |c| c / wa.cpu_us);
        println!(
            "  round {round}: SMS/WhatsApp  messages/s × {rate:.2}, CPU per message × {cpu:.2} \
             (× {with_receipts:.2} with SMS receipts)"
        );
        ratios.push((rate, cpu, with_receipts));
    }
    if rounds > 1 {
        let median = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        println!(
            "sms: median of {rounds} rounds, SMS/WhatsApp: messages/s × {:.2}, CPU per message × {:.2} \
             (× {:.2} with SMS receipts)",
            median(ratios.iter().map(|r| r.0).collect()),
            median(ratios.iter().map(|r| r.1).collect()),
            median(ratios.iter().map(|r| r.2).collect()),
        );
    }
    if unapplied > 0 {
        println!(
            "sms: {unapplied} of {} receipts over all rounds did not reach the ledger",
            rounds * recipients
        );
    }
}

/// The sender, its template, and both consents (WhatsApp and SMS) for every recipient.
async fn prepare(store: &dyn Store, numbers: &[String]) {
    support::seed_sender_and_template(store).await;
    for channel in [ChannelKind::WhatsApp, ChannelKind::Sms] {
        for chunk in numbers.chunks(5000) {
            let consents: Vec<Consent> = chunk
                .iter()
                .map(|n| Consent {
                    phone: PhoneNumber::from_trusted(n.clone()),
                    category: Category::Marketing,
                    channel,
                    granted_at: Utc::now(),
                    source: "bench".into(),
                    proof: "bench".into(),
                })
                .collect();
            store.grant_consents(&consents).await.unwrap();
        }
    }
}

impl Bench {
    async fn stats(&self) -> Value {
        reqwest::get(format!("{}/__sim/stats", self.sim_url))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Until the route's session is bound, so no round times the bind.
    async fn wait_bound(&self) {
        for _ in 0..200 {
            if self.stats().await["sms"]["bound_sessions"].as_u64() >= Some(1) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the SMS route did not bind to the simulator's SMSC");
    }

    /// The round's jobs of one lane: every recipient once, under a campaign of its own.
    fn jobs(&self, lane: Lane, campaign: &str) -> Vec<Arc<Job>> {
        self.numbers
            .chunks(JOB_SIZE)
            .enumerate()
            .map(|(i, chunk)| {
                let recipients: Vec<Value> = chunk
                    .iter()
                    .map(|n| match lane {
                        Lane::Sms => json!({"to": n, "channel": "sms", "vars": {"name": "Anna"}}),
                        Lane::WhatsApp => json!({"to": n, "components": [{"type": "body", "parameters": [{"type": "text", "text": "Anna"}]}]}),
                    })
                    .collect();
                let mut body = json!({
                    "version": 1, "job_id": format!("{campaign}-{i}"), "campaign_id": campaign,
                    "sender": SENDER,
                    "template": {"name": "flash_sale", "language": "de", "category": "marketing"},
                    "recipients": recipients,
                });
                if lane == Lane::Sms {
                    body["sms"] = json!({"from": "ACME", "text": SMS_TEXT});
                }
                Arc::new(Job::parse(body.to_string().as_bytes()).unwrap())
            })
            .collect()
    }

    /// Sends every recipient once on `lane`, checks what the simulator took, prints the round.
    async fn lane(&self, lane: Lane, round: usize) -> Measured {
        let n = self.numbers.len();
        let campaign = format!("bench-{}-{round}", lane.tag());
        let jobs = self.jobs(lane, &campaign);
        let before = self.stats().await;

        let threads0 = cpu_by_thread();
        let cpu0 = cpu_seconds();
        let t0 = Instant::now();
        let sent = self.run_jobs(jobs).await;
        let wall = t0.elapsed().as_secs_f64();
        let cpu = cpu_seconds() - cpu0;
        let threads1 = cpu_by_thread();
        assert_eq!(sent, n, "{campaign}: every recipient sent");

        let mut measured = Measured {
            messages_per_sec: n as f64 / wall,
            cpu_us: cpu * 1e6 / n as f64,
            cpu_with_receipts_us: None,
            receipts_unapplied: 0,
        };
        let after = self.stats().await;
        let delta = |path: &[&str]| {
            let at = |v: &Value| path.iter().fold(v, |v, p| &v[*p]).as_u64().unwrap_or(0);
            at(&after) - at(&before)
        };
        let (checks, receipts) = match lane {
            Lane::Sms => {
                assert_eq!(
                    delta(&["sms", "messages"]),
                    n as u64,
                    "{campaign}: one SMS each"
                );
                assert_eq!(after["sms"]["duplicates"], 0, "{campaign}: no SMS twice");
                assert_eq!(delta(&["sms", "throttled"]), 0);
                assert_eq!(delta(&["accepted"]), 0, "{campaign}: nothing on WhatsApp");
                let checks = format!(
                    "SMSC: {} messages, {} duplicates",
                    delta(&["sms", "messages"]),
                    after["sms"]["duplicates"]
                );
                let receipts = match self.receipts(&campaign, &before, cpu0).await {
                    Some(r) => {
                        measured.cpu_with_receipts_us = Some(r.cpu_us);
                        measured.receipts_unapplied = r.unapplied.len();
                        warn_unapplied(&campaign, n, &r.unapplied);
                        format!(
                            " ({:.1} with its receipts; {} delivered in the ledger)",
                            r.cpu_us,
                            n - r.unapplied.len()
                        )
                    }
                    None => " (receipts not awaited)".into(),
                };
                (checks, receipts)
            }
            Lane::WhatsApp => {
                assert_eq!(
                    delta(&["accepted"]),
                    n as u64,
                    "{campaign}: one message each"
                );
                assert_eq!(after["duplicates"], 0, "{campaign}: nobody twice");
                assert_eq!(delta(&["sms", "messages"]), 0, "{campaign}: no SMS");
                let checks = format!(
                    "simulator: {} accepted, {} duplicates",
                    delta(&["accepted"]),
                    after["duplicates"]
                );
                (checks, String::new())
            }
        };
        println!(
            "  round {round}: {:<8} {n} in {wall:.2} s = {:>6.0} messages/s, CPU {:>5.1} µs/message{receipts}; {checks}",
            lane.name(),
            measured.messages_per_sec,
            measured.cpu_us,
        );
        let mut threads: Vec<(String, f64)> = threads1
            .iter()
            .map(|(name, t1)| {
                (
                    name.clone(),
                    t1 - threads0.get(name).copied().unwrap_or(0.0),
                )
            })
            .filter(|(_, t)| *t > 0.0)
            .collect();
        threads.sort_by(|a, b| b.1.total_cmp(&a.1));
        let threads: Vec<String> = threads
            .iter()
            .map(|(name, t)| format!("{name} {:.1}", t * 1e6 / n as f64))
            .collect();
        println!("           µs/message by thread: {}", threads.join(", "));
        measured
    }

    /// Runs `jobs`, `at_once` at a time; returns how many recipients were sent.
    async fn run_jobs(&self, jobs: Vec<Arc<Job>>) -> usize {
        let queue = Arc::new(tokio::sync::Mutex::new(jobs.into_iter()));
        let mut tasks = Vec::new();
        for _ in 0..self.at_once {
            let queue = Arc::clone(&queue);
            let engine = Arc::clone(&self.engine);
            tasks.push(tokio::spawn(async move {
                let mut sent = 0;
                loop {
                    let Some(job) = queue.lock().await.next() else {
                        return sent;
                    };
                    match engine.run_job(job, &RunControl::default()).await.unwrap() {
                        JobRun::Finished(r) => sent += r.total("sent") as usize,
                        other => panic!("{other:?}"),
                    }
                }
            }));
        }
        let mut sent = 0;
        for t in tasks {
            sent += t.await.unwrap();
        }
        sent
    }

    /// Waits until the SMSC has handed over every receipt of the round, takes what the round
    /// cost this process per message with its receipts (from `cpu0`) — the whole cost of an
    /// SMS: a worker applies its own receipts — and then reads which rows the receipts did not
    /// reach. `None` when the receipts come later than a round should wait.
    async fn receipts(&self, campaign: &str, before: &Value, cpu0: f64) -> Option<Receipts> {
        let n = self.numbers.len() as u64;
        if self.receipt_delay > Duration::from_secs(10) {
            return None;
        }
        let delivered = |v: &Value| v["sms"]["receipts_sent"]["delivered"].as_u64().unwrap_or(0);
        let base = delivered(before);
        let deadline = Instant::now() + self.receipt_delay + Duration::from_secs(30);
        loop {
            let s = self.stats().await;
            if delivered(&s) - base >= n && s["sms"]["receipts_pending"] == 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{campaign}: receipts missing: {s}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Handed over is not yet applied: the inbox writes in batches right after. Idle
        // time costs no CPU, so waiting a little does not colour the figure.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let cpu_us = (cpu_seconds() - cpu0) * 1e6 / n as f64;
        let mut unapplied = self.not_delivered(campaign).await;
        for _ in 0..10 {
            if unapplied.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            unapplied = self.not_delivered(campaign).await;
        }
        Some(Receipts { cpu_us, unapplied })
    }

    /// The campaign's rows that are not SMS rows marked delivered by their receipt.
    async fn not_delivered(&self, campaign: &str) -> Vec<LedgerRow> {
        let campaign = CampaignId::parse(campaign).unwrap();
        let mut after = None;
        let mut missing = Vec::new();
        loop {
            let page = self
                .store
                .ledger_page(&campaign, after.as_ref(), 1000)
                .await
                .unwrap();
            let Some(last) = page.last() else {
                return missing;
            };
            after = Some(last.key.clone());
            missing.extend(page.into_iter().filter(|r| {
                r.channel != ChannelKind::Sms || r.delivery.as_deref() != Some("delivered")
            }));
        }
    }
}
