//! What the end-to-end benches share: the sender they send from, `herald` child processes
//! that die with the bench, the simulator on a free port, and CPU time read from /proc.
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

/// The `herald` binary of this build, quiet and without stdin.
pub fn herald() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_herald"));
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
    Kill(
        herald()
            .args([
                "simulate",
                "--addr",
                &format!("127.0.0.1:{port}"),
                "--rate",
                &UNLIMITED_RATE.to_string(),
            ])
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
