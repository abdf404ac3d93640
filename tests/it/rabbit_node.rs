//! A private RabbitMQ node for tests that restart the broker: its own node name, ports, data
//! directory and Erlang cookie, so stopping it never disturbs the tests that share the
//! machine's broker. It keeps its data across [`RabbitNode::restart`] (durable quorum queues
//! survive, as on a real broker restart) and is stopped and deleted on drop.
//!
//! Needs RabbitMQ's scripts (`/usr/lib/rabbitmq/bin`, or `HERALD_RABBITMQ_BIN`). Without them
//! the calling test skips loudly, unless `HERALD_REQUIRE_SERVICES=1` makes that a failure.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::support;

pub struct RabbitNode {
    bin: PathBuf,
    name: String,
    port: u16,
    dist_port: u16,
    dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl RabbitNode {
    /// Starts a new node and waits until it accepts connections; `None` (skipped) when
    /// RabbitMQ is not installed.
    pub async fn start() -> Option<RabbitNode> {
        let bin = std::env::var_os("HERALD_RABBITMQ_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/usr/lib/rabbitmq/bin"));
        if !bin.join("rabbitmq-server").exists() {
            let why = format!(
                "RabbitMQ's scripts are not in {} (set HERALD_RABBITMQ_BIN)",
                bin.display()
            );
            assert!(
                !support::require_services(),
                "HERALD_REQUIRE_SERVICES=1 but {why}"
            );
            eprintln!("SKIPPED: {why}; the broker-restart test needs its own RabbitMQ node");
            return None;
        }
        let dir = tempfile::tempdir().expect("node directory");
        let port = free_port();
        // The distribution port must differ from the AMQP port; a second free one.
        let dist_port = loop {
            let p = free_port();
            if p != port {
                break p;
            }
        };
        std::fs::write(
            dir.path().join("rabbitmq.conf"),
            format!("listeners.tcp.local = 127.0.0.1:{port}\nloopback_users = none\n"),
        )
        .expect("node config");
        std::fs::write(dir.path().join("enabled_plugins"), "[].\n").expect("plugins file");
        let node = RabbitNode {
            bin,
            name: format!(
                "herald-{}@localhost",
                &uuid::Uuid::new_v4().simple().to_string()[..12]
            ),
            port,
            dist_port,
            dir,
        };
        node.boot().await;
        Some(node)
    }

    /// `amqp://` URL of the node's default vhost.
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    fn command(&self, script: &str) -> Command {
        let d = self.dir.path();
        let mut c = Command::new(self.bin.join(script));
        // HOME holds the node's own Erlang cookie, shared by the server and rabbitmqctl.
        c.current_dir(d)
            .env("HOME", d)
            .env("RABBITMQ_NODENAME", &self.name)
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("RABBITMQ_CONFIG_FILE", d.join("rabbitmq.conf"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", d.join("enabled_plugins"))
            .env("RABBITMQ_MNESIA_BASE", d.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", d.join("log"))
            .env("RABBITMQ_PID_FILE", self.pid_file())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        c
    }

    fn pid_file(&self) -> PathBuf {
        self.dir.path().join("node.pid")
    }

    fn ctl(&self, args: &[&str]) -> Command {
        let mut c = self.command("rabbitmqctl");
        c.arg("-n").arg(&self.name).args(args);
        c
    }

    async fn run(mut cmd: Command, what: &str) {
        let what = what.to_owned();
        tokio::task::spawn_blocking(move || {
            let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
            assert!(
                out.status.success(),
                "{what}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        })
        .await
        .expect("blocking task");
    }

    async fn boot(&self) {
        let _ = std::fs::remove_file(self.pid_file());
        let mut server = self.command("rabbitmq-server");
        server.arg("-detached");
        Self::run(server, "start the RabbitMQ node").await;
        let pid_file = self.pid_file();
        Self::run(
            self.ctl(&["wait", &pid_file.to_string_lossy(), "--timeout", "120"]),
            "wait for the RabbitMQ node",
        )
        .await;
    }

    /// A clean broker shutdown (what `systemctl restart` does first): connections closed,
    /// consumers gone, unacknowledged deliveries back in their queues.
    pub async fn stop(&self) {
        Self::run(
            self.ctl(&["stop", &self.pid_file().to_string_lossy()]),
            "stop the RabbitMQ node",
        )
        .await;
    }

    /// Starts the node again on the same data directory and port.
    pub async fn start_again(&self) {
        self.boot().await;
    }

    /// What `rabbitmqctl ARGS` printed, `None` when it failed.
    pub async fn ctl_output(&self, args: &[&str]) -> Option<String> {
        let mut cmd = self.ctl(args);
        cmd.stdout(Stdio::piped());
        tokio::task::spawn_blocking(move || {
            let out = cmd.output().ok()?;
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
        })
        .await
        .expect("blocking task")
    }

    fn pid(path: &Path) -> Option<i32> {
        std::fs::read_to_string(path).ok()?.trim().parse().ok()
    }
}

impl Drop for RabbitNode {
    fn drop(&mut self) {
        let stopped = self
            .ctl(&["stop"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        // Still running but not answering: kill it, after checking that the pid is still this
        // node's (a pid file can outlive its process).
        if !stopped
            && let Some(pid) = Self::pid(&self.pid_file())
            && std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&self.name))
        {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
        }
    }
}
