//! Structured logs with `tracing`: human-readable on a terminal, JSON lines otherwise (what
//! log collectors on Kubernetes expect). Phone numbers only ever appear masked (the
//! `PhoneNumber` Display is masked) and secrets are never formatted.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// `info`, but nothing from the SMPP crate: at `info` it logs every PDU, and at `error` a PDU
/// it cannot decode with its bytes — phone numbers among them. herald logs the session's
/// state itself (`RUST_LOG=info,smpp34=debug` shows the crate's lines when debugging).
const DEFAULT_FILTER: &str = "info,smpp34=off";

/// Installs the global subscriber once. `RUST_LOG` overrides the default.
pub fn init() {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if std::io::stderr().is_terminal() {
        builder.try_init()
    } else {
        builder.json().flatten_event(true).try_init()
    };
}
