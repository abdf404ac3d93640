//! The audit log from the command line's side: who the CLI acts as (`cli@<hostname>`), the row
//! each admin command leaves, and the `since` filter `herald audit` and `GET /api/audit`
//! share. A command whose row cannot be written fails (exit 1) — after a change, saying the
//! change was made; before an export's output, printing nothing.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::CliError;
use crate::domain::{Actor, AuditEntry, Clock};
use crate::policy::access::Action;
use crate::store::Store;

/// Longest host name kept (DNS's limit).
const MAX_HOST: usize = 253;

/// The machine's name, as the audit log names the command line: the kernel's, else
/// `/etc/hostname`, else `$HOSTNAME`, else `localhost`. Only characters a host name may hold.
pub fn hostname() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    let clean: String = raw
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        .take(MAX_HOST)
        .collect();
    if clean.is_empty() {
        "localhost".into()
    } else {
        clean
    }
}

/// The command line as an actor: `cli@<hostname>`.
pub fn cli_actor() -> Actor {
    Actor::Cli(hostname())
}

/// What the audit log says a command's outcome was.
pub fn result_of<T>(outcome: &Result<T, CliError>) -> String {
    match outcome {
        Ok(_) => "ok".into(),
        Err(e) => format!("error: {e}"),
    }
}

/// Appends the row of a command-line action. `Err` when it cannot be written: the caller
/// fails the command rather than leave the action unrecorded.
pub async fn record_cli(
    store: &dyn Store,
    action: Action,
    target: Option<String>,
    result: String,
) -> Result<(), CliError> {
    let entry = AuditEntry::new(
        Clock::system().now(),
        &cli_actor(),
        action.as_str(),
        target,
        result,
    );
    store.record_audit(&entry).await.map_err(|e| {
        CliError::runtime(format!(
            "{} was done, but its audit log row could not be written ({e}); repeat the command (it is safe to repeat)",
            action.as_str()
        ))
    })
}

/// Records `outcome` of `action` and passes it on; a row that cannot be written turns an `Ok`
/// into that error (an action that failed keeps its own error).
pub async fn audited<T>(
    store: &dyn Store,
    action: Action,
    target: Option<String>,
    outcome: Result<T, CliError>,
) -> Result<T, CliError> {
    let written = record_cli(store, action, target, result_of(&outcome)).await;
    match (outcome, written) {
        (Ok(v), Ok(())) => Ok(v),
        (Ok(_), Err(e)) => Err(e),
        (Err(e), _) => Err(e),
    }
}

/// A `since` filter: an RFC 3339 time, or a duration back from `now` (`7d`, `12h`).
pub fn parse_since(raw: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    let raw = raw.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(raw) {
        return Ok(t.with_timezone(&Utc));
    }
    let ago: Duration = humantime::parse_duration(raw).map_err(|e| {
        format!("since: '{raw}' is neither an RFC 3339 time nor a duration like 7d ({e})")
    })?;
    chrono::Duration::from_std(ago)
        .ok()
        .and_then(|d| now.checked_sub_signed(d))
        .ok_or_else(|| format!("since: '{raw}' reaches too far back"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_is_a_time_or_a_duration_back() {
        let now = DateTime::parse_from_rfc3339("2026-11-27T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            parse_since("2026-11-01T00:00:00+01:00", now)
                .unwrap()
                .to_rfc3339(),
            "2026-10-31T23:00:00+00:00"
        );
        assert_eq!(
            parse_since("7d", now).unwrap().to_rfc3339(),
            "2026-11-20T12:00:00+00:00"
        );
        let e = parse_since("last week", now).unwrap_err();
        assert!(e.starts_with("since: 'last week'"), "{e}");
    }

    #[test]
    fn the_host_name_is_never_empty_and_plain() {
        let h = hostname();
        assert!(!h.is_empty());
        assert!(
            h.chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-_".contains(c))
        );
        assert!(cli_actor().to_string().starts_with("cli@"));
    }
}
