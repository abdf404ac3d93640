//! End-to-end throughput of the embedded pipeline: `herald simulate` in its own process (no
//! added latency, limits set high), the engine with a durable SQLite ledger in this process.
//! Prints messages/s and this process's CPU time per message (user + system), which is the
//! worker's cost without the simulator's.
//!
//! Run: `cargo bench --bench throughput` (env BENCH_RECIPIENTS, BENCH_JOBS_AT_ONCE to vary).

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use herald::app::EngineSetup;
use herald::domain::{Category, ChannelKind, Job, PhoneNumber};
use herald::engine::{JobRun, RunControl};
use herald::graph::{GraphClient, GraphConfig};
use herald::policy::cost::RateCard;
use herald::store::{self, Consent};
use serde_json::json;

use support::{SENDER, cpu_by_thread, cpu_seconds, env_usize, free_port, number, spawn_simulator};

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing: run small then.
    let full = std::env::args().any(|a| a == "--bench");
    let recipients = env_usize("BENCH_RECIPIENTS", if full { 200_000 } else { 2_000 });
    let at_once = env_usize("BENCH_JOBS_AT_ONCE", 2);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(recipients, at_once));
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

    let dir = tempfile::tempdir().unwrap();
    let db = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("bench.db").display()
    );
    let store = store::open(&db).await.unwrap();
    support::seed_sender_and_template(&*store).await;
    let numbers: Vec<String> = (0..recipients).map(number).collect();
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
    let jobs: Vec<Arc<Job>> = numbers
        .chunks(10_000)
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
            });
            Arc::new(Job::parse(body.to_string().as_bytes()).unwrap())
        })
        .collect();

    let graph = GraphClient::new(&GraphConfig {
        base_url: sim_url.clone(),
        http2_prior_knowledge: std::env::var("BENCH_H2").is_ok(),
        ..GraphConfig::default()
    })
    .unwrap();
    let engine = Arc::new(EngineSetup::new(RateCard::builtin()).build(Arc::clone(&store), graph));

    let threads0 = cpu_by_thread();
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    let queue = Arc::new(tokio::sync::Mutex::new(jobs.into_iter()));
    let mut tasks = Vec::new();
    for _ in 0..at_once {
        let queue = Arc::clone(&queue);
        let engine = Arc::clone(&engine);
        tasks.push(tokio::spawn(async move {
            let mut sent = 0;
            loop {
                let Some(job) = queue.lock().await.next() else {
                    return sent;
                };
                match engine.run_job(job, &RunControl::default()).await.unwrap() {
                    JobRun::Finished(r) => sent += r.total("sent"),
                    other => panic!("{other:?}"),
                }
            }
        }));
    }
    let mut sent = 0;
    for t in tasks {
        sent += t.await.unwrap();
    }
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    let threads1 = cpu_by_thread();
    let stats: serde_json::Value = reqwest::get(format!("{sim_url}/__sim/stats"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(sent as usize, recipients, "every recipient sent");
    assert_eq!(stats["duplicates"], 0);
    println!(
        "throughput: {sent} messages in {wall:.2} s = {:.0} messages/s; worker CPU {:.1} µs/message ({} jobs of ≤10,000 at once, SQLite ledger, {} cores)",
        sent as f64 / wall,
        cpu * 1e6 / sent as f64,
        at_once,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    for (name, t1) in &threads1 {
        let t = t1 - threads0.get(name).copied().unwrap_or(0.0);
        if t > 0.0 {
            println!("  {name:<18} {:>6.1} µs/message", t * 1e6 / sent as f64);
        }
    }
}
