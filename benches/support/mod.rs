//! What the end-to-end benches share: the sender they send from, `herald` child processes
//! that die with the bench, the simulator on a free port, and CPU time (getrusage, /proc).
//! Included by each bench with `mod support;`.

#![allow(dead_code)] // each bench uses its own subset

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};

/// The business number (phone_number_id) the benches send from.
pub const SENDER: &str = "106540352242922";
/// Its WhatsApp Business Account.
pub const ACCOUNT: &str = "102290129340398";
/// A rate no pacer or simulator limit gets near: the benches measure herald, not pacing.
pub const UNLIMITED_RATE: u32 = 100_000_000;

/// A child process killed (and reaped) when the bench lets go of it.
pub struct Kill(pub Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The `herald` binary of this build (or `BENCH_HERALD_BIN`, to compare builds of two commits
/// in one run), quiet and without stdin.
pub fn herald() -> Command {
    let bin =
        std::env::var("BENCH_HERALD_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_herald").into());
    let mut c = Command::new(bin);
    c.env("RUST_LOG", "warn").stdin(Stdio::null());
    c
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `herald simulate` on `port` in its own process (so its CPU is not the worker's), with
/// limits set out of reach.
pub fn spawn_simulator(port: u16) -> Kill {
    spawn_simulator_with(port, &[])
}

/// [`spawn_simulator`] with more `herald simulate` flags (e.g. the SMSC's `--smpp-port`).
pub fn spawn_simulator_with(port: u16, extra: &[&str]) -> Kill {
    Kill(
        herald()
            .args([
                "simulate",
                "--addr",
                &format!("127.0.0.1:{port}"),
                "--rate",
                &UNLIMITED_RATE.to_string(),
            ])
            .args(extra)
            .stdout(Stdio::null())
            .spawn()
            .expect("start herald simulate"),
    )
}

/// The `i`-th bench recipient, a German mobile number.
pub fn number(i: usize) -> String {
    format!("+49151{:08}", 10_000_000 + i)
}

/// User + system CPU seconds from a `/proc/…/stat` line (fields 14 and 15, in clock ticks of
/// USER_HZ = 100 on Linux).
pub fn stat_cpu_seconds(stat: &str) -> f64 {
    // Fields after the parenthesised name (which may hold spaces): state is field 3.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (field(11) + field(12)) / 100.0
}

/// (CPU seconds, peak RSS in MiB) of a live process, from /proc.
pub fn proc_usage(pid: u32) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm_kb = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    (stat_cpu_seconds(&stat), hwm_kb / 1024.0)
}

/// User + system CPU seconds of this process so far.
pub fn cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes into the struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// CPU seconds per thread name (tokio workers, SQLite connection threads, …) from /proc, to
/// say where the worker's time goes.
pub fn cpu_by_thread() -> std::collections::BTreeMap<String, f64> {
    let mut out = std::collections::BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for task in tasks.flatten() {
        let path = task.path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        let stat = std::fs::read_to_string(path.join("stat")).unwrap_or_default();
        *out.entry(comm.trim().to_owned()).or_default() += stat_cpu_seconds(&stat);
    }
    out
}

/// A number from the environment, or `default`.
pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Registers the benches' sender (unlimited rate, no tier limit) and its approved marketing
/// template `flash_sale`/`de` in `store`.
pub async fn seed_sender_and_template(store: &dyn herald::store::Store) {
    use herald::domain::{Category, SenderId};
    use herald::store::{Sender, Template};
    store
        .upsert_sender(&Sender {
            id: SenderId::parse(SENDER).unwrap(),
            account_id: ACCOUNT.into(),
            portfolio_id: "p".into(),
            display_number: String::new(),
            rate_per_sec: UNLIMITED_RATE,
            tier_limit: None,
            status: "CONNECTED".into(),
            status_reason: None,
        })
        .await
        .unwrap();
    store
        .upsert_template(&Template {
            account_id: ACCOUNT.into(),
            name: "flash_sale".into(),
            language: "de".into(),
            category: Category::Marketing,
            status: "APPROVED".into(),
        })
        .await
        .unwrap();
}
