//! herald against a raw load generator, in one run, on one machine, against one simulator.
//!
//! This machine's speed drifts up to ~2.5× between hours, so an absolute messages/s figure
//! proves little; the ratio to what a bare HTTP client gets from the same `herald simulate`
//! minutes apart does. Scenarios (`BENCH_ONLY=raw,embedded,worker,size,memory,latency` picks
//! some; all by default):
//!
//! - **raw**: the load generator — a minimal hyper HTTP/1.1 client loop in this process
//!   (`BENCH_RAW_CONNECTIONS` connections, 64 by default, each sending the next prebuilt
//!   request as soon as the last answer is read: the bodies herald would send, built before the
//!   clock starts). Its requests/s and its CPU per request are the ceiling.
//! - **embedded**: `herald send` processes, one job of ≤ 10,000 recipients each, on a SQLite
//!   file — the whole process (start, migrations check, job parsing, sending, exit).
//! - **worker**: one `herald worker` on RabbitMQ + Postgres; its CPU and the CPU of the
//!   Postgres backends per message, counted from /proc.
//! - **size**: the same 10,000-recipient job in a new campaign and in one whose ledger holds
//!   `BENCH_BIG_KEYS` (1,000,000) keys, embedded and on Postgres.
//! - **memory**: 5,000 requests in flight (`HERALD_MAX_INFLIGHT=5000`, the simulator answering
//!   after 2 s) over HTTP/1.1 and over HTTP/2; peak RSS of `herald send`.
//! - **latency**: the simulator answering after 250 ms, 10 business numbers at 1,000/s each, one
//!   worker (prefetch 20, `BENCH_LATENCY_PREFETCH`): messages/s against the 10,000/s the limits
//!   allow, and the shared send slots the worker missed, with keys marked `sending` at least
//!   10 ms (the default) and 100 ms (`HERALD_MARK_AHEAD_MS`; `BENCH_LATENCY_AHEAD=10` runs one)
//!   ahead of their send. The numbers' jobs (1,000 recipients each) are interleaved on the queue;
//!   `BENCH_LATENCY_SEQUENTIAL=1` enqueues them one number after the other, where a prefetch of
//!   20 holds two numbers' jobs only.
//!
//! Run: `cargo bench --bench ratio` (env BENCH_RECIPIENTS, default 20,000; needs RabbitMQ and
//! Postgres for `worker`, `size` and `latency`: HERALD_AMQP_URL / HERALD_DATABASE_URL, local
//! defaults). `cargo test --benches` only builds it.

mod support;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::json;

use support::{
    ACCOUNT, SENDER, UNLIMITED_RATE, free_port, herald, number, proc_usage, stat_cpu_seconds,
};

/// Recipients per job (the job format's maximum).
const JOB_SIZE: usize = 10_000;

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        // `cargo test --benches` builds it; the services and minutes it needs are for benches.
        return;
    }
    let recipients = support::env_usize("BENCH_RECIPIENTS", 20_000);
    let only: Vec<String> = std::env::var("BENCH_ONLY")
        .unwrap_or_else(|_| "raw,embedded,worker,size,memory,latency".into())
        .split(',')
        .map(|s| s.trim().to_owned())
        .collect();
    let wants = |s: &str| only.iter().any(|o| o == s);
    let commit = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    println!(
        "ratio bench: {} UTC, commit {commit}, {} cores, {recipients} recipients",
        chrono::Utc::now().format("%Y-%m-%d %H:%M"),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );

    let sim = Simulator::start(&[]);
    let mut lines = Vec::new();
    let raw = wants("raw").then(|| {
        let r = raw_load(&sim.url, recipients);
        lines.push(r.line("raw load generator (hyper, HTTP/1.1)", None));
        r
    });
    if wants("embedded") {
        let r = embedded(&sim, recipients, "ratio", &[]);
        lines.push(r.line("herald send (embedded, SQLite)", raw.as_ref()));
    }
    let services = Services::from_env();
    if wants("worker") {
        if let Some(s) = &services {
            let r = worker(s, &sim, recipients, &[]);
            lines.push(r.line("herald worker (RabbitMQ + Postgres)", raw.as_ref()));
        } else {
            lines.push("herald worker: skipped (no RabbitMQ/Postgres)".into());
        }
    }
    for l in &lines {
        println!("{l}");
    }
    drop(sim);

    if wants("size") {
        campaign_size(services.as_ref());
    }
    if wants("memory") {
        memory(recipients.max(20_000));
    }
    if wants("latency") {
        match &services {
            Some(s) => latency(s),
            None => println!("latency: skipped (no RabbitMQ/Postgres)"),
        }
    }
}

/// What one scenario measured.
#[derive(Debug, Default, Clone)]
struct Measured {
    messages: u64,
    wall: f64,
    /// CPU seconds of the measured process(es).
    cpu: f64,
    /// CPU seconds of the Postgres backends, when Postgres was used.
    store_cpu: Option<f64>,
    /// Peak RSS in MiB.
    rss: f64,
    /// Shared send slots the worker skipped as reached too late, when it was asked.
    slots_missed: Option<u64>,
}

impl Measured {
    fn rate(&self) -> f64 {
        self.messages as f64 / self.wall
    }

    fn cpu_us(&self) -> f64 {
        self.cpu * 1e6 / self.messages as f64
    }

    fn line(&self, label: &str, raw: Option<&Measured>) -> String {
        let mut s = format!(
            "{label:<40} {:>8.0} msg/s  {:>6.1} µs CPU/msg",
            self.rate(),
            self.cpu_us()
        );
        if let Some(store) = self.store_cpu {
            s += &format!(
                "  + {:>6.1} µs Postgres/msg",
                store * 1e6 / self.messages as f64
            );
        }
        if self.rss > 0.0 {
            s += &format!("  peak RSS {:>5.0} MiB", self.rss);
        }
        if let Some(raw) = raw {
            s += &format!(
                "  | rate × {:.2} of raw, CPU × {:.1} of raw",
                self.rate() / raw.rate(),
                self.cpu_us() / raw.cpu_us()
            );
        }
        s
    }
}

/// `herald simulate` in its own process, limits out of reach unless `extra` sets them.
struct Simulator {
    url: String,
    _child: support::Kill,
}

impl Simulator {
    fn start(extra: &[&str]) -> Self {
        Self::start_at_rate(UNLIMITED_RATE, extra)
    }

    /// With `rate` messages/s per business number (Meta's throughput limit).
    fn start_at_rate(rate: u32, extra: &[&str]) -> Self {
        let port = free_port();
        let child = support::Kill(
            herald()
                .args(["simulate", "--addr", &format!("127.0.0.1:{port}")])
                .args(["--rate", &rate.to_string()])
                .args(extra)
                .stdout(Stdio::null())
                .spawn()
                .expect("start herald simulate"),
        );
        let url = format!("http://127.0.0.1:{port}");
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        Self { url, _child: child }
    }

    fn stats(&self) -> serde_json::Value {
        sim_stats(&self.url)
    }
}

/// The simulator's `/__sim/stats`.
fn sim_stats(url: &str) -> serde_json::Value {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(sim_stats_async(url))
}

async fn sim_stats_async(url: &str) -> serde_json::Value {
    reqwest::get(format!("{url}/__sim/stats"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// User + system CPU seconds and peak RSS (MiB) of a child, reaped here.
fn wait_measured(child: Child) -> (bool, f64, f64) {
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: wait4 writes only into the two locals we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(r, pid, "wait4");
    std::mem::forget(child); // reaped above
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    (
        ok,
        tv(usage.ru_utime) + tv(usage.ru_stime),
        usage.ru_maxrss as f64 / 1024.0,
    )
}

/// Runs a `herald` command to its end; panics with its stderr if it fails.
fn ok(c: &mut Command) {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{:?}: {}",
        c.get_args().collect::<Vec<_>>(),
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---- raw -------------------------------------------------------------------------------

/// The request bodies herald sends, one per recipient, built before the clock starts.
fn bodies(campaign: &str, recipients: usize) -> Vec<Bytes> {
    let components =
        vec![json!({"type": "body", "parameters": [{"type": "text", "text": "Anna"}]})];
    (0..recipients)
        .map(|i| {
            let to = number(i);
            let key = format!("k:{campaign}:{:032x}", i);
            let body =
                herald::graph::wire::SendTemplate::new(&to, &key, "flash_sale", "de", &components);
            Bytes::from(serde_json::to_vec(&body).unwrap())
        })
        .collect()
}

fn raw_load(url: &str, recipients: usize) -> Measured {
    let connections = support::env_usize("BENCH_RAW_CONNECTIONS", 64);
    let bodies = Arc::new(bodies("raw", recipients));
    let authority = url.trim_start_matches("http://").to_owned();
    let path = format!("/v25.0/{SENDER}/messages");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let next = Arc::new(AtomicUsize::new(0));
    let accepted = Arc::new(AtomicU64::new(0));
    let cpu0 = support::cpu_seconds();
    let t0 = Instant::now();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..connections {
            let (bodies, next, accepted) = (bodies.clone(), next.clone(), accepted.clone());
            let (authority, path) = (authority.clone(), path.clone());
            tasks.push(tokio::spawn(async move {
                let tcp = tokio::net::TcpStream::connect(&authority).await.unwrap();
                tcp.set_nodelay(true).unwrap();
                let (mut sender, conn) =
                    hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(tcp))
                        .await
                        .unwrap();
                tokio::spawn(conn);
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(body) = bodies.get(i) else { break };
                    let req = hyper::Request::post(path.as_str())
                        .header(hyper::header::HOST, authority.as_str())
                        .header(hyper::header::CONTENT_TYPE, "application/json")
                        .body(Full::new(body.clone()))
                        .unwrap();
                    let res = sender.send_request(req).await.unwrap();
                    let status = res.status();
                    let _ = res.into_body().collect().await.unwrap();
                    if status.is_success() {
                        accepted.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
    let wall = t0.elapsed().as_secs_f64();
    let cpu = support::cpu_seconds() - cpu0;
    let n = accepted.load(Ordering::Relaxed);
    assert_eq!(
        n, recipients as u64,
        "the simulator accepted every raw request"
    );
    Measured {
        messages: n,
        wall,
        cpu,
        ..Measured::default()
    }
}

// ---- embedded ----------------------------------------------------------------------------

/// A SQLite database with the bench sender (unlimited), its template and consents for
/// `recipients` numbers starting at `first`.
fn sqlite_db(dir: &Path, first: usize, recipients: usize) -> String {
    let url = format!("sqlite://{}", dir.join("herald.db").display());
    let cli = |c: &mut Command| {
        c.env("HERALD_DATABASE_URL", &url);
    };
    setup(cli, dir, first, recipients);
    url
}

/// migrate, sender, template and consents through the CLI, as an operator would.
fn setup(env: impl Fn(&mut Command), dir: &Path, first: usize, recipients: usize) {
    setup_with_tier(env, dir, first, recipients, "unlimited");
}

/// [`setup`] with the portfolio's messaging tier (`--tier`).
fn setup_with_tier(
    env: impl Fn(&mut Command),
    dir: &Path,
    first: usize,
    recipients: usize,
    tier: &str,
) {
    let run = |args: &[&str]| {
        let mut c = herald();
        env(&mut c);
        ok(c.args(args));
    };
    run(&["migrate"]);
    run(&[
        "senders",
        "add",
        "--id",
        SENDER,
        "--account",
        ACCOUNT,
        "--rate",
        &UNLIMITED_RATE.to_string(),
        "--tier",
        tier,
    ]);
    run(&[
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
    ]);
    let consents = dir.join("consents.csv");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&consents).unwrap());
    writeln!(f, "phone,category,granted_at,source,proof").unwrap();
    for i in first..first + recipients {
        writeln!(
            f,
            "{},marketing,2026-01-01T00:00:00Z,bench,bench",
            number(i)
        )
        .unwrap();
    }
    drop(f);
    run(&["consent", "import", consents.to_str().unwrap()]);
}

/// Job files of ≤ 10,000 recipients for numbers `first..first + recipients`.
fn job_files(
    dir: &Path,
    campaign: &str,
    first: usize,
    recipients: usize,
) -> Vec<std::path::PathBuf> {
    (first..first + recipients)
        .collect::<Vec<_>>()
        .chunks(JOB_SIZE)
        .enumerate()
        .map(|(j, chunk)| {
            let r: Vec<_> = chunk
                .iter()
                .map(|&i| json!({"to": number(i), "components": [{"type": "body", "parameters": [{"type": "text", "text": "Anna"}]}]}))
                .collect();
            let job = json!({
                "version": 1, "job_id": format!("{campaign}-{first}-{j}"), "campaign_id": campaign,
                "sender": SENDER,
                "template": {"name": "flash_sale", "language": "de", "category": "marketing"},
                "recipients": r,
            });
            let path = dir.join(format!("{campaign}-{first}-{j}.json"));
            std::fs::write(&path, job.to_string()).unwrap();
            path
        })
        .collect()
}

/// `herald send` of each job file in turn, timed and measured as whole processes.
fn send_jobs(
    db: &str,
    sim: &Simulator,
    jobs: &[std::path::PathBuf],
    env: &[(&str, &str)],
) -> Measured {
    let mut m = Measured::default();
    let before = sim.stats();
    for job in jobs {
        let mut c = herald();
        c.env("HERALD_DATABASE_URL", db)
            .env("HERALD_GRAPH_URL", &sim.url)
            .envs(env.iter().copied())
            .args(["send", "--quiet"])
            .arg(job)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let t0 = Instant::now();
        let child = c.spawn().unwrap();
        let mut child = child;
        let stderr = child.stderr.take();
        let (success, cpu, rss) = wait_measured(child);
        m.wall += t0.elapsed().as_secs_f64();
        if !success {
            let mut why = String::new();
            if let Some(mut e) = stderr {
                use std::io::Read;
                let _ = e.read_to_string(&mut why);
            }
            panic!("herald send {} failed: {why}", job.display());
        }
        m.cpu += cpu;
        m.rss = m.rss.max(rss);
    }
    let after = sim.stats();
    m.messages = after["accepted"].as_u64().unwrap() - before["accepted"].as_u64().unwrap();
    assert_eq!(
        after["duplicates"], before["duplicates"],
        "the simulator saw a duplicate"
    );
    m
}

fn embedded(sim: &Simulator, recipients: usize, campaign: &str, env: &[(&str, &str)]) -> Measured {
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite_db(dir.path(), 0, recipients);
    let jobs = job_files(dir.path(), campaign, 0, recipients);
    let m = send_jobs(&db, sim, &jobs, env);
    assert_eq!(m.messages, recipients as u64, "every recipient sent");
    m
}

// ---- worker ------------------------------------------------------------------------------

/// RabbitMQ and Postgres, when reachable.
struct Services {
    admin_db: String,
    amqp: String,
}

impl Services {
    fn from_env() -> Option<Self> {
        let admin_db = std::env::var("HERALD_DATABASE_URL")
            .ok()
            .filter(|u| u.starts_with("postgres"))
            .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/test".into());
        let amqp = std::env::var("HERALD_AMQP_URL")
            .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
        let up = |port| std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
        (up(5432) && up(5672)).then_some(Self { admin_db, amqp })
    }

    /// A new database of its own; dropped by [`PgDb`]'s drop.
    fn database(&self) -> PgDb {
        let name = format!("herald_ratio_{}", uuid::Uuid::new_v4().simple());
        psql(&self.admin_db, &format!("CREATE DATABASE {name}"));
        let base = self.admin_db.rsplit_once('/').map(|(b, _)| b).unwrap();
        PgDb {
            admin: self.admin_db.clone(),
            name: name.clone(),
            url: format!("{base}/{name}"),
        }
    }
}

fn psql(url: &str, sql: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use sqlx::Connection;
        let mut c = sqlx::PgConnection::connect(url).await.expect("Postgres");
        sqlx::raw_sql(sql).execute(&mut c).await.unwrap();
    });
}

struct PgDb {
    admin: String,
    name: String,
    url: String,
}

impl Drop for PgDb {
    fn drop(&mut self) {
        psql(
            &self.admin,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

/// CPU seconds of every `postgres` process, by pid.
fn postgres_cpu() -> BTreeMap<u32, f64> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
        if comm.trim() == "postgres" {
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            out.insert(pid, stat_cpu_seconds(&stat));
        }
    }
    out
}

fn postgres_cpu_since(before: &BTreeMap<u32, f64>) -> f64 {
    postgres_cpu()
        .iter()
        .map(|(pid, now)| now - before.get(pid).copied().unwrap_or(0.0))
        .sum()
}

/// A worker deployment: its database, prefix and environment.
struct Deployment {
    db: PgDb,
    amqp: String,
    prefix: String,
    sim_url: String,
}

impl Deployment {
    fn new(s: &Services, sim_url: &str) -> Self {
        Self {
            db: s.database(),
            amqp: s.amqp.clone(),
            prefix: format!("ratio{}", uuid::Uuid::new_v4().simple()),
            sim_url: sim_url.to_owned(),
        }
    }

    fn env(&self, c: &mut Command) {
        c.env("HERALD_DATABASE_URL", &self.db.url)
            .env("HERALD_AMQP_URL", &self.amqp)
            .env("HERALD_AMQP_PREFIX", &self.prefix)
            .env("HERALD_GRAPH_URL", &self.sim_url)
            .env("HERALD_HTTP_ADDR", "127.0.0.1:0")
            .env("HERALD_METRICS_ADDR", "127.0.0.1:0");
    }

    fn enqueue(&self, dir: &Path, campaign: &str, sender: &str, first: usize, n: usize) {
        self.enqueue_as(dir, campaign, campaign, sender, first, n);
    }

    /// [`Self::enqueue`] with the CSV file named `file` (several files for one campaign).
    fn enqueue_as(
        &self,
        dir: &Path,
        file: &str,
        campaign: &str,
        sender: &str,
        first: usize,
        n: usize,
    ) {
        let people = dir.join(format!("people-{file}-{sender}.csv"));
        let mut p = std::io::BufWriter::new(std::fs::File::create(&people).unwrap());
        writeln!(p, "to").unwrap();
        for i in first..first + n {
            writeln!(p, "{}", number(i)).unwrap();
        }
        drop(p);
        let mut c = herald();
        self.env(&mut c);
        ok(c.args(["enqueue", "--csv"])
            .arg(&people)
            .args([
                "--campaign",
                campaign,
                "--sender",
                sender,
                "--template",
                "flash_sale",
                "--language",
                "de",
                "--category",
                "marketing",
                "--job-size",
                "1000",
            ])
            .stdout(Stdio::null()));
    }

    /// One `herald worker` until it has sent `sends` messages and no key is in flight; then
    /// checks that `campaigns` hold `keys` keys, all sent.
    fn run_worker(
        &self,
        campaigns: &[&str],
        sends: u64,
        keys: u64,
        env: &[(&str, &str)],
    ) -> Measured {
        let pg0 = postgres_cpu();
        let t0 = Instant::now();
        let mut c = herald();
        self.env(&mut c);
        let child = support::Kill(
            c.arg("worker")
                .envs(env.iter().copied())
                .stdout(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        // Polled cheaply, so that the polling is not what Postgres spends its time on: the
        // simulator's count of accepted messages, then the keys still carrying an owner (a
        // partial index holds only keys in flight); the outcomes are checked after the clock.
        let accepted0 = sim_stats(&self.sim_url)["accepted"].as_u64().unwrap();
        rt.block_on(async {
            use sqlx::Connection;
            let mut pg = sqlx::PgConnection::connect(&self.db.url).await.unwrap();
            loop {
                let accepted = sim_stats_async(&self.sim_url).await["accepted"]
                    .as_u64()
                    .unwrap()
                    - accepted0;
                if accepted >= sends {
                    let open: i64 =
                        sqlx::query_scalar("SELECT count(*) FROM ledger WHERE owner IS NOT NULL")
                            .fetch_one(&mut pg)
                            .await
                            .unwrap();
                    if open == 0 {
                        break;
                    }
                }
                assert!(
                    t0.elapsed() < Duration::from_secs(900),
                    "not done: {accepted} accepted"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        let wall = t0.elapsed().as_secs_f64();
        let (cpu, rss) = proc_usage(child.0.id());
        let store_cpu = postgres_cpu_since(&pg0);
        // With a metrics address of its own, the worker's count of shared send slots it
        // reached too late (a worker short of CPU sends below the numbers' rates).
        let slots_missed =
            env.iter()
                .find(|(k, _)| *k == "HERALD_METRICS_ADDR")
                .map(|(_, addr)| {
                    rt.block_on(async {
                        let text = reqwest::get(format!("http://{addr}/metrics"))
                            .await
                            .unwrap()
                            .text()
                            .await
                            .unwrap();
                        text.lines()
                            .filter(|l| l.starts_with("herald_send_slots_missed_total"))
                            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                            .sum::<f64>() as u64
                    })
                });
        drop(child);
        // Checked with SQL, not through herald's store, which would migrate the database
        // to this build's schema under a `BENCH_HERALD_BIN` of another commit.
        rt.block_on(async {
            use sqlx::Connection;
            let mut pg = sqlx::PgConnection::connect(&self.db.url).await.unwrap();
            let (sent, all): (i64, i64) = sqlx::query_as(
                "SELECT count(*) FILTER (WHERE state = 'sent'), count(*) FROM ledger
                 WHERE campaign = ANY($1)",
            )
            .bind(campaigns)
            .fetch_one(&mut pg)
            .await
            .unwrap();
            assert_eq!(
                (sent as u64, all as u64),
                (keys, keys),
                "keys sent, keys in all"
            );
        });
        Measured {
            messages: sends,
            wall,
            cpu,
            store_cpu: Some(store_cpu),
            rss,
            slots_missed,
        }
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            if let Ok(conn) = herald::amqp::connect(&self.amqp, "bench-cleanup").await
                && let Ok(ch) = conn.create_channel().await
            {
                let _ = herald::amqp::Topology::new(self.prefix.clone())
                    .delete(&ch)
                    .await;
            }
        });
    }
}

fn worker(s: &Services, sim: &Simulator, recipients: usize, env: &[(&str, &str)]) -> Measured {
    let d = Deployment::new(s, &sim.url);
    let dir = tempfile::tempdir().unwrap();
    setup(|c| d.env(c), dir.path(), 0, recipients);
    d.enqueue(dir.path(), "ratio-worker", SENDER, 0, recipients);
    let before = sim.stats();
    let m = d.run_worker(&["ratio-worker"], recipients as u64, recipients as u64, env);
    let after = sim.stats();
    assert_eq!(
        after["duplicates"], before["duplicates"],
        "the simulator saw a duplicate"
    );
    assert_eq!(
        after["accepted"].as_u64().unwrap() - before["accepted"].as_u64().unwrap(),
        recipients as u64
    );
    m
}

// ---- campaign size -----------------------------------------------------------------------

/// Fills the ledger (and the portfolio's tier window) with `keys` sent messages of campaign
/// `big`, as a campaign that already reached that many customers would have.
const SEED_SQLITE: &str = "
WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < :keys - 1)
INSERT INTO ledger (key, campaign, job, sender, recipient, template, language, category, channel,
                    state, wamid, attempts, created_at, updated_at)
SELECT 'k:big:' || lower(hex(randomblob(16))), 'big', 'seed-' || (i / 10000), '106540352242922',
       '+4916' || (100000000 + i), 'flash_sale', 'de', 'marketing', 'whatsapp', 'sent',
       'wamid.' || hex(randomblob(24)), 1, :now, :now
FROM n;
WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < :keys - 1)
INSERT INTO tier_reach (portfolio, phone, last_reached_at)
SELECT '102290129340398', '+4916' || (100000000 + i), :now FROM n;
";

const SEED_POSTGRES: &str = "
INSERT INTO ledger (key, campaign, job, sender, recipient, template, language, category, channel,
                    state, wamid, attempts, created_at, updated_at)
SELECT 'k:big:' || md5(random()::text), 'big', 'seed-' || (i / 10000), '106540352242922',
       '+4916' || (100000000 + i), 'flash_sale', 'de', 'marketing', 'whatsapp', 'sent',
       'wamid.' || md5(random()::text) || md5(random()::text), 1, now(), now()
FROM generate_series(0, :keys - 1) AS i;
INSERT INTO tier_reach (portfolio, phone, last_reached_at)
SELECT '102290129340398', '+4916' || (100000000 + i), now() FROM generate_series(0, :keys - 1) AS i;
ANALYZE;
";

/// The portfolio's messaging tier in the campaign-size scenario: above what the seeded
/// campaign reached within the day, so every reservation of the job counts the window (as a
/// portfolio does until it reaches an unlimited tier).
const SIZE_TIER: &str = "5000000";

fn seed(sql: &str, keys: usize, now: &str) -> String {
    sql.replace(":keys", &keys.to_string()).replace(":now", now)
}

fn campaign_size(services: Option<&Services>) {
    let keys = support::env_usize("BENCH_BIG_KEYS", 1_000_000);
    let job = support::env_usize("BENCH_SIZE_JOB", JOB_SIZE);
    let sim = Simulator::start(&[]);

    // Embedded: one SQLite file, the job in a new campaign, then (new numbers) in `big`.
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("herald.db").display());
    setup_with_tier(
        |c| {
            c.env("HERALD_DATABASE_URL", &db);
        },
        dir.path(),
        0,
        2 * job,
        SIZE_TIER,
    );
    let now_ms = chrono::Utc::now().timestamp_millis().to_string();
    let t0 = Instant::now();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use sqlx::Connection;
        let mut c = sqlx::SqliteConnection::connect(&db).await.unwrap();
        sqlx::raw_sql(&seed(SEED_SQLITE, keys, &now_ms))
            .execute(&mut c)
            .await
            .unwrap();
        sqlx::raw_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&mut c)
            .await
            .unwrap();
    });
    let seeded = t0.elapsed().as_secs_f64();
    let fresh = send_jobs(&db, &sim, &job_files(dir.path(), "fresh", 0, job), &[]);
    let big = send_jobs(&db, &sim, &job_files(dir.path(), "big", job, job), &[]);
    println!(
        "campaign size, embedded (SQLite, {keys} keys seeded in {seeded:.0} s):\n  {}\n  {}\n  big/new: rate × {:.2}, CPU × {:.2}",
        fresh.line("job of 10,000 in a new campaign", None),
        big.line(&format!("same in a campaign of {keys} keys"), None),
        big.rate() / fresh.rate(),
        big.cpu_us() / fresh.cpu_us()
    );

    let Some(s) = services else {
        println!("campaign size on Postgres: skipped (no RabbitMQ/Postgres)");
        return;
    };
    let d = Deployment::new(s, &sim.url);
    setup_with_tier(|c| d.env(c), dir.path(), 0, 2 * job, SIZE_TIER);
    let t0 = Instant::now();
    psql(&d.db.url, &seed(SEED_POSTGRES, keys, &now_ms));
    let seeded = t0.elapsed().as_secs_f64();
    d.enqueue(dir.path(), "fresh", SENDER, 0, job);
    let fresh = d.run_worker(&["fresh"], job as u64, job as u64, &[]);
    d.enqueue(dir.path(), "big", SENDER, job, job);
    let big = d.run_worker(&["big"], job as u64, (keys + job) as u64, &[]);
    println!(
        "campaign size, one worker on Postgres ({keys} keys seeded in {seeded:.0} s):\n  {}\n  {}\n  big/new: rate × {:.2}, CPU × {:.2}, Postgres CPU × {:.2}",
        fresh.line("job of 10,000 in a new campaign", None),
        big.line(&format!("same in a campaign of {keys} keys"), None),
        big.rate() / fresh.rate(),
        big.cpu_us() / fresh.cpu_us(),
        big.store_cpu.unwrap() / fresh.store_cpu.unwrap(),
    );
}

// ---- memory ------------------------------------------------------------------------------

fn memory(recipients: usize) {
    let sim = Simulator::start(&["--latency-ms", "2000"]);
    for (label, env) in [
        ("HTTP/1.1", vec![("HERALD_MAX_INFLIGHT", "5000")]),
        (
            "HTTP/2 (h2c)",
            vec![
                ("HERALD_MAX_INFLIGHT", "5000"),
                ("HERALD_GRAPH_HTTP2", "true"),
            ],
        ),
    ] {
        let m = embedded(&sim, recipients, &format!("mem{}", label.len()), &env);
        println!(
            "{}",
            m.line(
                &format!("5,000 in flight, answers after 2 s, {label}"),
                None
            )
        );
    }
}

// ---- latency -----------------------------------------------------------------------------

fn latency(s: &Services) {
    // `BENCH_LATENCY_AHEAD=10,100` (the default) picks the mark-ahead settings to run.
    let aheads = std::env::var("BENCH_LATENCY_AHEAD").unwrap_or_else(|_| "10,100".into());
    for ahead in aheads.split(',').map(str::trim) {
        latency_with(s, ahead);
    }
}

/// One run of the latency scenario with `HERALD_MARK_AHEAD_MS=ahead`.
fn latency_with(s: &Services, ahead: &str) {
    let per_number = support::env_usize("BENCH_LATENCY_PER_NUMBER", 10_000);
    let numbers = 10;
    let sim = Simulator::start_at_rate(1000, &["--latency-ms", "250"]);
    let d = Deployment::new(s, &sim.url);
    let dir = tempfile::tempdir().unwrap();
    setup(|c| d.env(c), dir.path(), 0, numbers * per_number);
    let senders: Vec<String> = (0..numbers)
        .map(|i| format!("1065403522429{:02}", 30 + i))
        .collect();
    for id in &senders {
        let mut c = herald();
        d.env(&mut c);
        ok(c.args([
            "senders",
            "add",
            "--id",
            id,
            "--account",
            ACCOUNT,
            "--rate",
            "1000",
            "--tier",
            "unlimited",
        ]));
    }
    let campaigns: Vec<String> = (0..numbers).map(|i| format!("lat{i}")).collect();
    // The numbers' jobs interleaved on the queue, as campaign systems publishing at once
    // would leave them: enqueued one number after the other, a worker's prefetch of 20 holds
    // the jobs of two numbers only, and two numbers' rates (≈ 1,940/s) are all it can reach
    // whatever the latency (BENCH_LATENCY_SEQUENTIAL=1 measures that).
    let sequential = std::env::var("BENCH_LATENCY_SEQUENTIAL").is_ok_and(|v| v == "1");
    let slice = if sequential { per_number } else { 1000 };
    for round in 0..per_number.div_ceil(slice) {
        for (i, (id, campaign)) in senders.iter().zip(&campaigns).enumerate() {
            let first = i * per_number + round * slice;
            let n = slice.min(per_number - round * slice);
            d.enqueue_as(
                dir.path(),
                &format!("{campaign}-{round}"),
                campaign,
                id,
                first,
                n,
            );
        }
    }
    let names: Vec<&str> = campaigns.iter().map(String::as_str).collect();
    let total = (numbers * per_number) as u64;
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    // Jobs one worker holds at once: with 20 over 10 numbers, a number is often left with one
    // job (idle while it starts and drains) or none.
    let prefetch = std::env::var("BENCH_LATENCY_PREFETCH").unwrap_or_else(|_| "20".into());
    let m = d.run_worker(
        &names,
        total,
        total,
        &[
            ("HERALD_PREFETCH", prefetch.as_str()),
            ("HERALD_MARK_AHEAD_MS", ahead),
            ("HERALD_METRICS_ADDR", &metrics_addr),
        ],
    );
    println!(
        "{}  | × {:.2} of the 10,000/s the limits allow, {} send slots missed",
        m.line(
            &format!(
                "latency: +250 ms, 10 numbers × 1,000/s, one worker, prefetch {prefetch}, mark ahead {ahead} ms{}",
                if sequential {
                    ", numbers one after the other"
                } else {
                    ""
                }
            ),
            None
        ),
        m.rate() / 10_000.0,
        m.slots_missed.unwrap_or_default()
    );
}
