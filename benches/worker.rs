//! End-to-end throughput through RabbitMQ + Postgres + the simulator with 1, 2, … `herald
//! worker` processes: recipients enqueued with `herald enqueue --csv`, time until every key
//! has its outcome, worker CPU per message and peak RSS (from /proc).
//!
//! Run: `cargo bench --bench worker` (env BENCH_WORKERS=1,2 BENCH_RECIPIENTS=40000; needs
//! RabbitMQ on HERALD_AMQP_URL and Postgres on HERALD_DATABASE_URL, defaults local).

mod support;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use herald::domain::CampaignId;

use support::{
    ACCOUNT, Kill, SENDER, UNLIMITED_RATE, free_port, herald, number, proc_usage, spawn_simulator,
};

/// Busy CPU seconds of the whole machine so far (every process: RabbitMQ, Postgres, the
/// simulator and the workers), from /proc/stat.
fn machine_busy_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal: busy is everything but idle and iowait.
    let busy: f64 = ticks
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .take(6)
        .map(|(_, v)| v)
        .sum();
    busy / 100.0
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    if !full {
        // `cargo test --benches` builds it; the services and minutes it needs are for benches.
        return;
    }
    let recipients: usize = std::env::var("BENCH_RECIPIENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40_000);
    let counts: Vec<usize> = std::env::var("BENCH_WORKERS")
        .unwrap_or_else(|_| "1,2".into())
        .split(',')
        .filter_map(|v| v.parse().ok())
        .collect();
    let rt = tokio::runtime::Runtime::new().unwrap();
    for n in counts {
        rt.block_on(run(n, recipients));
    }
}

async fn run(workers: usize, recipients: usize) {
    let admin = std::env::var("HERALD_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let db = format!("herald_bench_{}", uuid::Uuid::new_v4().simple());
    {
        use sqlx::Connection;
        let mut c = sqlx::PgConnection::connect(&admin).await.expect("Postgres");
        sqlx::query(&format!("CREATE DATABASE {db}"))
            .execute(&mut c)
            .await
            .unwrap();
    }
    let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap();
    let db_url = format!("{base}/{db}");
    let amqp = std::env::var("HERALD_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let prefix = format!("bench{}", uuid::Uuid::new_v4().simple());
    let sim_port = free_port();
    let _sim = spawn_simulator(sim_port);
    let env = |c: &mut Command| {
        c.env("HERALD_DATABASE_URL", &db_url)
            .env("HERALD_AMQP_URL", &amqp)
            .env("HERALD_AMQP_PREFIX", &prefix)
            .env("HERALD_GRAPH_URL", format!("http://127.0.0.1:{sim_port}"));
    };
    let ok = |c: &mut Command| {
        env(c);
        let out = c.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    ok(herald().arg("migrate"));
    ok(herald().args([
        "senders",
        "add",
        "--id",
        SENDER,
        "--account",
        ACCOUNT,
        "--rate",
        &UNLIMITED_RATE.to_string(),
        "--tier",
        "unlimited",
    ]));
    ok(herald().args([
        "templates",
        "add",
        "--account",
        ACCOUNT,
        "--name",
        "flash_sale",
        "--language",
        "de",
        "--category",
        "marketing",
    ]));
    let dir = tempfile::tempdir().unwrap();
    let consents = dir.path().join("consents.csv");
    let people = dir.path().join("people.csv");
    {
        let mut c = std::fs::File::create(&consents).unwrap();
        let mut p = std::fs::File::create(&people).unwrap();
        writeln!(c, "phone,category,granted_at,source,proof").unwrap();
        writeln!(p, "to").unwrap();
        for i in 0..recipients {
            let n = number(i);
            writeln!(c, "{n},marketing,2026-01-01T00:00:00Z,bench,bench").unwrap();
            writeln!(p, "{n}").unwrap();
        }
    }
    ok(herald().args(["consent", "import"]).arg(&consents));
    ok(herald()
        .args(["enqueue", "--csv"])
        .arg(&people)
        .args([
            "--campaign",
            "bench",
            "--sender",
            SENDER,
            "--template",
            "flash_sale",
            "--language",
            "de",
            "--category",
            "marketing",
            // Many jobs, so that every worker gets a share within its prefetch.
            "--job-size",
            "1000",
        ])
        .stdout(Stdio::null()));

    let started = Instant::now();
    let busy_before = machine_busy_seconds();
    let procs: Vec<Kill> = (0..workers)
        .map(|_| {
            let mut c = herald();
            env(&mut c);
            Kill(
                c.arg("worker")
                    .env("HERALD_HTTP_ADDR", "127.0.0.1:0")
                    .env("HERALD_METRICS_ADDR", "127.0.0.1:0")
                    .stdout(Stdio::null())
                    .spawn()
                    .unwrap(),
            )
        })
        .collect();
    let store = herald::store::open(&db_url).await.unwrap();
    let id = CampaignId::parse("bench").unwrap();
    loop {
        let c = store.campaign_counts(&id).await.unwrap();
        if c.total() == recipients as u64 && c.state("pending") + c.state("sending") == 0 {
            assert_eq!(c.state("sent"), recipients as u64, "not all sent: {c:?}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "not done: {c:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let wall = started.elapsed().as_secs_f64();
    let machine = machine_busy_seconds() - busy_before;
    let (mut cpu, mut rss) = (0.0, 0.0f64);
    for p in &procs {
        let (c, r) = proc_usage(p.0.id());
        cpu += c;
        rss = rss.max(r);
    }
    println!(
        "workers: {workers}  {recipients} messages in {wall:.1} s = {:.0} messages/s; worker CPU {:.0} µs/message; whole machine {:.0} µs/message; peak RSS per worker {rss:.0} MiB (RabbitMQ + Postgres + simulator on the same 2 cores)",
        recipients as f64 / wall,
        cpu * 1e6 / recipients as f64,
        machine * 1e6 / recipients as f64
    );
    drop(procs);
    drop(store);
    if let Ok(conn) = herald::amqp::connect(&amqp, "bench-cleanup").await
        && let Ok(ch) = conn.create_channel().await
    {
        let _ = herald::amqp::Topology::new(prefix).delete(&ch).await;
    }
    use sqlx::Connection;
    if let Ok(mut c) = sqlx::PgConnection::connect(&admin).await {
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
            .execute(&mut c)
            .await;
    }
}
