//! Follow-up firing against first sends in one run: `herald simulate` in its own process (no
//! added latency, limits set high), the engine with a durable SQLite ledger in this process
//! on herald's clock. Jobs of 10,000 with `follow_up: {after: PT1H, template: reminder}`
//! (`if: sent`: no statuses needed) go out first; then the clock moves an hour on and
//! `Engine::fire_follow_ups` fires every follow-up. Prints messages/s and this process's CPU
//! per message of both and their ratio — absolute figures drift between hours on a shared
//! machine, the ratio measured minutes apart does not — and checks that the simulator took
//! exactly two messages per recipient, none twice.
//!
//! The scheduler's query cost is measured apart, by timing the store's calls directly on a
//! copy of the database taken when the follow-ups fall due (`VACUUM INTO`): per batch of
//! 1000, `claim_due_timers_of`, the first messages' ledger rows one key at a time
//! (`ledger_entry`) and in one call (`ledger_entries`), and completing the batch's timers one
//! at a time (`complete_timer`) and in one call (`complete_timers`). Firing reads the ledger
//! twice per batch (the first messages, then the follow-ups' own rows to settle them) and
//! completes each timer: one by one until the batched calls, in a few statements since.
//!
//! Run: `cargo bench --bench follow_ups` (env BENCH_RECIPIENTS, BENCH_JOBS_AT_ONCE to vary).

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use herald::app::EngineSetup;
use herald::domain::{Category, ChannelKind, Clock, IdempotencyKey, Job, PhoneNumber};
use herald::engine::{Engine, FOLLOW_UP_TIMER, FollowUpTimer, JobRun, RunControl};
use herald::graph::{GraphClient, GraphConfig};
use herald::policy::cost::RateCard;
use herald::store::{self, Consent, Store, Template};
use serde_json::{Value, json};

use support::{
    ACCOUNT, SENDER, cpu_by_thread, cpu_seconds, env_usize, free_port, number, spawn_simulator,
};

/// Recipients per job: the job format's limit.
const JOB_SIZE: usize = 10_000;
/// Timers the engine claims per round (`follow_up::BATCH`).
const BATCH: usize = 1000;
/// The follow-ups' wait.
const AFTER: Duration = Duration::from_secs(3600);

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing: run small then.
    let full = std::env::args().any(|a| a == "--bench");
    let recipients = env_usize("BENCH_RECIPIENTS", if full { 100_000 } else { 2_000 });
    let at_once = env_usize("BENCH_JOBS_AT_ONCE", 2);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(recipients, at_once));
}

/// What one phase (first sends or follow-ups) measured.
struct Measured {
    messages: usize,
    wall: f64,
    cpu: f64,
    /// µs per message by thread name.
    threads: Vec<(String, f64)>,
}

impl Measured {
    fn per_sec(&self) -> f64 {
        self.messages as f64 / self.wall
    }

    fn cpu_us(&self) -> f64 {
        self.cpu * 1e6 / self.messages as f64
    }
}

/// Times `phase`: wall, this process's CPU, CPU by thread.
async fn measure<F: Future<Output = usize>>(phase: F) -> Measured {
    let threads0 = cpu_by_thread();
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    let messages = phase.await;
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    let mut threads: Vec<(String, f64)> = cpu_by_thread()
        .into_iter()
        .map(|(name, t1)| {
            let t = t1 - threads0.get(&name).copied().unwrap_or(0.0);
            (name, t * 1e6 / messages.max(1) as f64)
        })
        .filter(|(_, t)| *t > 0.0)
        .collect();
    threads.sort_by(|a, b| b.1.total_cmp(&a.1));
    Measured {
        messages,
        wall,
        cpu,
        threads,
    }
}

async fn run(recipients: usize, at_once: usize) {
    let port = free_port();
    let _sim = spawn_simulator(port);
    let sim_url = format!("http://127.0.0.1:{port}");
    for _ in 0..100 {
        if reqwest::get(format!("{sim_url}/__sim/stats")).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stats = || async {
        reqwest::get(format!("{sim_url}/__sim/stats"))
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    };

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bench.db");
    let db = format!("sqlite://{}?mode=rwc", path.display());
    let store = store::open(&db).await.unwrap();
    let numbers: Vec<String> = (0..recipients).map(number).collect();
    prepare(&*store, &numbers).await;

    let graph = GraphClient::new(&GraphConfig {
        base_url: sim_url.clone(),
        ..GraphConfig::default()
    })
    .unwrap();
    let clock = Clock::system();
    let mut setup = EngineSetup::new(RateCard::builtin());
    setup.config.clock = clock.clone();
    let engine = Arc::new(setup.build(Arc::clone(&store), graph));
    println!(
        "follow_ups: {recipients} recipients in jobs of ≤{JOB_SIZE} ({at_once} at once), each with \
         a follow-up after 1 h (if sent); SQLite ledger; {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    // First messages.
    let jobs = jobs(&numbers);
    let first = measure(run_jobs(&engine, jobs, at_once)).await;
    assert_eq!(first.messages, recipients, "every recipient sent");
    let after_first = stats().await;
    assert_eq!(after_first["accepted"], recipients as u64);
    assert_eq!(
        store.pending_timers().await.unwrap(),
        [(FOLLOW_UP_TIMER.to_owned(), recipients as u64)],
        "one follow-up timer per first message"
    );

    // An hour on: every follow-up is due.
    clock.advance(AFTER + Duration::from_secs(1));
    let now = clock.now();
    let probe = query_cost(&path, dir.path(), now).await;

    let ctl = RunControl::default();
    // On a runtime worker, as a worker's or `herald serve`'s timer loop fires them.
    let firing = Arc::clone(&engine);
    let fired = measure(async move {
        let round = tokio::spawn(async move {
            firing
                .fire_follow_ups(&RunControl::default())
                .await
                .unwrap()
        })
        .await
        .unwrap();
        assert_eq!(round.skipped, 0, "{round:?}");
        assert_eq!(round.later, 0, "{round:?}");
        round.sent as usize
    })
    .await;
    let after = stats().await;
    assert_eq!(fired.messages, recipients, "every follow-up sent");
    assert_eq!(
        after["accepted"],
        2 * recipients as u64,
        "the simulator took exactly recipients × 2"
    );
    assert_eq!(after["duplicates"], 0, "nobody got a message twice");
    assert_eq!(store.pending_timers().await.unwrap(), []);
    assert_eq!(
        engine.fire_follow_ups(&ctl).await.unwrap().sent,
        0,
        "fired once"
    );

    let row = |name: &str, m: &Measured| {
        println!(
            "  {name:<12} {:>7} in {:>6.2} s = {:>6.0} messages/s, CPU {:>6.1} µs/message",
            m.messages,
            m.wall,
            m.per_sec(),
            m.cpu_us()
        );
    };
    row("first", &first);
    row("follow-ups", &fired);
    println!(
        "  follow-ups/first: messages/s × {:.2}, CPU per message × {:.2}; simulator: {} accepted \
         (recipients × 2), {} duplicates",
        fired.per_sec() / first.per_sec(),
        fired.cpu_us() / first.cpu_us(),
        after["accepted"],
        after["duplicates"],
    );
    for (name, m) in [("first", &first), ("follow-ups", &fired)] {
        let threads: Vec<String> = m
            .threads
            .iter()
            .take(6)
            .map(|(t, us)| format!("{t} {us:.1}"))
            .collect();
        println!("  {name:<12} µs/message by thread: {}", threads.join(", "));
    }
    probe.print(fired.wall);
}

/// The sender, its templates (the reminder approved too), WhatsApp consent for everyone.
async fn prepare(store: &dyn Store, numbers: &[String]) {
    support::seed_sender_and_template(store).await;
    store
        .upsert_template(&Template {
            account_id: ACCOUNT.into(),
            name: "flash_sale_reminder".into(),
            language: "de".into(),
            category: Category::Marketing,
            status: "APPROVED".into(),
        })
        .await
        .unwrap();
    for chunk in numbers.chunks(5000) {
        let consents: Vec<Consent> = chunk
            .iter()
            .map(|n| Consent {
                phone: PhoneNumber::from_trusted(n.clone()),
                category: Category::Marketing,
                channel: ChannelKind::WhatsApp,
                granted_at: Utc::now(),
                source: "bench".into(),
                proof: "bench".into(),
            })
            .collect();
        store.grant_consents(&consents).await.unwrap();
    }
}

fn jobs(numbers: &[String]) -> Vec<Arc<Job>> {
    numbers
        .chunks(JOB_SIZE)
        .enumerate()
        .map(|(i, chunk)| {
            let r: Vec<_> = chunk
                .iter()
                .map(|n| json!({"to": n, "components": [{"type": "body", "parameters": [{"type": "text", "text": "Anna"}]}]}))
                .collect();
            let body = json!({
                "version": 1, "job_id": format!("bench-{i}"), "campaign_id": "bench",
                "sender": SENDER,
                "template": {"name": "flash_sale", "language": "de", "category": "marketing"},
                "recipients": r,
                "follow_up": {
                    "after": "PT1H",
                    "template": {"name": "flash_sale_reminder", "language": "de", "category": "marketing"},
                },
            });
            Arc::new(Job::parse(body.to_string().as_bytes()).unwrap())
        })
        .collect()
}

/// Runs `jobs`, `at_once` at a time; returns how many recipients were sent.
async fn run_jobs(engine: &Arc<Engine>, jobs: Vec<Arc<Job>>, at_once: usize) -> usize {
    let queue = Arc::new(tokio::sync::Mutex::new(jobs.into_iter()));
    let mut tasks = Vec::new();
    for _ in 0..at_once {
        let queue = Arc::clone(&queue);
        let engine = Arc::clone(engine);
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

/// Milliseconds per batch of the scheduler's store calls.
#[derive(Default)]
struct QueryCost {
    batches: usize,
    claim: Vec<f64>,
    per_key_reads: Vec<f64>,
    batched_read: Vec<f64>,
    complete: Vec<f64>,
    batched_complete: Vec<f64>,
}

impl QueryCost {
    fn print(&self, fire_wall: f64) {
        let stat = |v: &[f64]| {
            let mut v = v.to_vec();
            v.sort_by(f64::total_cmp);
            let total: f64 = v.iter().sum();
            (
                total / v.len().max(1) as f64,
                v.get(v.len() / 2).copied().unwrap_or(0.0),
                v.last().copied().unwrap_or(0.0),
                total / 1e3,
            )
        };
        println!(
            "  scheduler's store calls per batch of {BATCH} (timed directly on a copy of the \
             database when due; {} batches):",
            self.batches
        );
        for (name, v) in [
            ("claim_due_timers_of", &self.claim),
            ("ledger_entry × 1000", &self.per_key_reads),
            ("ledger_entries", &self.batched_read),
            ("complete_timer × 1000", &self.complete),
            ("complete_timers", &self.batched_complete),
        ] {
            let (mean, median, max, total) = stat(v);
            println!(
                "    {name:<22} mean {mean:>7.2} ms, median {median:>7.2} ms, max {max:>7.2} ms; \
                 {total:>6.2} s over all ({:>4.1} % of the firing's wall time)",
                total / fire_wall * 100.0
            );
        }
    }
}

/// Times the scheduler's store calls on a copy of the database at `now`: claims every due
/// follow-up a batch at a time as the engine does, reads the batch's first messages per key
/// and batched, completes the batch's timers. The copy goes away with `dir`.
async fn query_cost(db: &std::path::Path, dir: &std::path::Path, now: DateTime<Utc>) -> QueryCost {
    use sqlx::Connection as _;
    let copy = dir.join("probe.db");
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    sqlx::query("VACUUM INTO ?1")
        .bind(copy.display().to_string())
        .execute(&mut conn)
        .await
        .unwrap();
    let _ = conn.close().await;
    let store = store::open(&format!("sqlite://{}", copy.display()))
        .await
        .unwrap();
    let owner = "probe";
    let mut cost = QueryCost::default();
    loop {
        let t = Instant::now();
        let due = store
            .claim_due_timers_of(FOLLOW_UP_TIMER, owner, Duration::from_secs(600), now, BATCH)
            .await
            .unwrap();
        let claim = ms(t);
        if due.is_empty() {
            break;
        }
        cost.batches += 1;
        cost.claim.push(claim);
        let keys: Vec<IdempotencyKey> = due
            .iter()
            .map(|d| {
                let f: FollowUpTimer = serde_json::from_value(d.payload.clone()).unwrap();
                IdempotencyKey::from_trusted(f.key)
            })
            .collect();
        let t = Instant::now();
        for k in &keys {
            assert!(store.ledger_entry(k).await.unwrap().is_some());
        }
        cost.per_key_reads.push(ms(t));
        let t = Instant::now();
        let rows = store.ledger_entries(&keys).await.unwrap();
        cost.batched_read.push(ms(t));
        assert_eq!(rows.len(), keys.len());
        // Half the batch one timer at a time (what firing did until `complete_timers`), the
        // other half in one call; each timed for the whole batch.
        let (one_by_one, at_once) = due.split_at(due.len() / 2);
        let t = Instant::now();
        for d in one_by_one {
            assert!(
                store
                    .complete_timer(FOLLOW_UP_TIMER, &d.key, owner)
                    .await
                    .unwrap()
            );
        }
        cost.complete
            .push(ms(t) * due.len() as f64 / one_by_one.len().max(1) as f64);
        let keys: Vec<String> = at_once.iter().map(|d| d.key.clone()).collect();
        let t = Instant::now();
        let done = store
            .complete_timers(FOLLOW_UP_TIMER, &keys, owner)
            .await
            .unwrap();
        cost.batched_complete
            .push(ms(t) * due.len() as f64 / at_once.len().max(1) as f64);
        assert_eq!(done, keys.len() as u64);
        if due.len() < BATCH {
            break;
        }
    }
    cost
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1e3
}
