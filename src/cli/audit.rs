//! `herald audit`: the audit log of admin actions, newest first — who (a token's name,
//! `bootstrap`, `cli@<host>`), what, on which campaign or contact (by keyed hash), when, and
//! how it ended. Reading it is itself recorded.

use chrono::SecondsFormat;
use clap::Args;

use crate::app::audit::{audited, parse_since};
use crate::app::{CliError, GlobalOpts};
use crate::domain::Clock;
use crate::policy::access::Action;
use crate::store::access::MAX_AUDIT_PAGE;

#[derive(Args, Debug)]
pub struct AuditArgs {
    /// Only rows at or after this: an RFC 3339 time, or a duration back from now (7d, 12h).
    #[arg(long)]
    pub since: Option<String>,
    /// At most this many rows (the newest).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=MAX_AUDIT_PAGE as i64))]
    pub limit: u32,
    /// One JSON array instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub async fn audit(g: &GlobalOpts, args: AuditArgs) -> Result<(), CliError> {
    let since = args
        .since
        .as_deref()
        .map(|raw| parse_since(raw, Clock::system().now()))
        .transpose()
        .map_err(|e| CliError::Usage(format!("--{e}")))?;
    let store = g.open_store().await?;
    let outcome = store
        .audit_entries(since, args.limit)
        .await
        .map_err(CliError::from);
    let rows = audited(&*store, Action::AuditRead, None, outcome).await?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&rows).expect("audit rows serialise")
        );
        return Ok(());
    }
    if rows.is_empty() {
        println!("no audit rows");
        return Ok(());
    }
    println!(
        "{:<20} {:<28} {:<18} {:<40} result",
        "at", "actor", "action", "target"
    );
    for r in rows {
        let route = r.route.map(|r| format!("  ({r})")).unwrap_or_default();
        println!(
            "{:<20} {:<28} {:<18} {:<40} {}{route}",
            r.at.to_rfc3339_opts(SecondsFormat::Secs, true),
            r.actor,
            r.action,
            r.target.as_deref().unwrap_or("—"),
            r.result,
        );
    }
    Ok(())
}
