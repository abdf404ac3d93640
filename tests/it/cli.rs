//! The admin commands as the real binary, on an SQLite store in a temporary directory:
//! output, exit codes (0 ok, 2 usage), and what they leave in the store.

use std::process::{Command, Output, Stdio};

struct Cli {
    dir: tempfile::TempDir,
}

impl Cli {
    fn new() -> Cli {
        Cli {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_herald"))
            .args(args)
            .env(
                "HERALD_DATABASE_URL",
                format!(
                    "sqlite://{}?mode=rwc",
                    self.dir.path().join("herald.db").display()
                ),
            )
            .env_remove("HERALD_RATE_CARD")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .output()
            .expect("run herald")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn usage_error(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
}

#[test]
fn a_campaign_budget_is_set_shown_and_cleared() {
    let cli = Cli::new();
    let out = cli.ok(&["campaign", "budget", "bf-2026", "--amount", "250.50"]);
    assert!(out.contains("budget 250.5000 USD"), "{out}");
    assert!(out.contains("left 250.5000 USD"), "{out}");
    let status = cli.ok(&["campaign", "status", "bf-2026"]);
    assert!(status.contains("campaign bf-2026: active"), "{status}");
    assert!(
        status.contains("budget 250.5000 USD · committed 0.0000 USD"),
        "{status}"
    );
    let out = cli.ok(&["campaign", "budget", "bf-2026", "--clear"]);
    assert!(out.contains("no budget"), "{out}");
}

#[test]
fn a_bad_budget_is_a_usage_error() {
    let cli = Cli::new();
    let err = cli.usage_error(&["campaign", "budget", "bf", "--amount", "12,50"]);
    assert!(err.contains("not an amount"), "{err}");
    let err = cli.usage_error(&["campaign", "budget", "bf", "--amount=-3"]);
    assert!(err.contains("not an amount"), "{err}");
    let err = cli.usage_error(&[
        "campaign",
        "budget",
        "bf",
        "--amount",
        "10",
        "--currency",
        "EUR",
    ]);
    assert!(err.contains("prices in USD"), "{err}");
    // Neither an amount nor --clear.
    cli.usage_error(&["campaign", "budget", "bf"]);
    // Nothing was stored by the refused commands.
    let err = cli.usage_error(&["campaign", "status", "bf"]);
    assert!(err.contains("no campaign"), "{err}");
}
