//! `herald conversions`: conversion events (orders) from a CSV file, the third way in beside
//! `{prefix}.conversions` and `POST /api/conversions` (DESIGN §1.6), and a campaign's
//! conversions per channel. The file is checked whole before anything is stored.

use std::path::PathBuf;

use chrono::Utc;
use clap::{Args, Subcommand};

use super::parse::campaign_id;
use crate::app::audit::audited;
use crate::app::{CliError, GlobalOpts};
use crate::domain::ConversionTally;
use crate::domain::conversion::{self, CSV_HEADER, MAX_EVENTS};
use crate::policy::access::Action;
use crate::policy::cost::format_micros;
use crate::telemetry::metrics;

/// Bad rows listed before giving up: enough to fix a file in one go, not a wall of text.
const MAX_ERRORS_SHOWN: usize = 20;

#[derive(Subcommand, Debug)]
pub enum ConversionsCmd {
    /// Import conversion events (orders) from a CSV file.
    #[command(
        long_about = "Import conversion events (orders) from a CSV file with the header

    event_id,campaign_id,to,key,event,at,amount,currency

one event per row: `to` is the customer's number (+ and country code) and `key` the message's \
idempotency key; either may be empty, not both. `at` is RFC 3339 (at most a day ahead); \
`amount` (like 89.90, at most 4 decimals) and `currency` (like EUR) are both given or both \
empty. Every row is checked first: one bad row stores nothing (exit 2, naming the line and \
field). Events are then recorded in batches; an event_id already stored is a duplicate and \
changes nothing, so importing a file again (or after a failure) is safe. Each event is \
attributed to its campaign's message to that customer (by key, else by number) and the \
channel that reached them; one that matches none is stored unattributed."
    )]
    Import(ImportArgs),
    /// Show a campaign's conversions per channel: count, after the follow-up, revenue.
    Summary {
        /// The campaign id.
        campaign: String,
    },
}

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// The CSV file.
    pub file: PathBuf,
    /// Events recorded per transaction.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=MAX_EVENTS as u64))]
    pub batch_size: u64,
    /// `converted` events for the CRM, when HERALD_RECIPIENT_EVENTS is on.
    #[command(flatten)]
    pub recipient_events: crate::app::RecipientEventsOpts,
}

pub async fn conversions(g: &GlobalOpts, cmd: ConversionsCmd) -> Result<(), CliError> {
    match cmd {
        ConversionsCmd::Import(a) => import(g, a).await,
        ConversionsCmd::Summary { campaign } => summary(g, &campaign).await,
    }
}

async fn import(g: &GlobalOpts, a: ImportArgs) -> Result<(), CliError> {
    let file = std::fs::File::open(&a.file)
        .map_err(|e| CliError::Usage(format!("cannot open {}: {e}", a.file.display())))?;
    let events = conversion::parse_csv(std::io::BufReader::new(file), Utc::now(), MAX_ERRORS_SHOWN)
        .map_err(|errors| {
            metrics::conversions_rejected("csv", errors.len() as u64);
            for e in &errors {
                eprintln!("  {e}");
            }
            let more = if errors.len() >= MAX_ERRORS_SHOWN {
                " (the first ones; there may be more)"
            } else {
                ""
            };
            CliError::Usage(format!(
                "{} invalid row(s){more} in {}: nothing imported (the header is {})",
                errors.len(),
                a.file.display(),
                CSV_HEADER.join(",")
            ))
        })?;
    let events_on = a.recipient_events.options()?;
    let store = g.open_store().await?;
    let mut total = ConversionTally::default();
    let mut outcome = Ok(());
    for batch in events.chunks(a.batch_size as usize) {
        let recorded = match events_on {
            Some(options) => {
                store
                    .record_conversions_with_events(batch, options, chrono::Utc::now())
                    .await
            }
            None => store.record_conversions(batch).await,
        };
        match recorded {
            Ok(tally) => {
                metrics::conversions("csv", &tally);
                total.add(tally);
            }
            Err(e) => {
                outcome = Err(CliError::from(e));
                break;
            }
        }
    }
    // One row for the import, naming the file; a batch that failed is in its result.
    audited(
        &*store,
        Action::ConversionsIngest,
        Some(format!("file:{}", a.file.display())),
        outcome,
    )
    .await?;
    println!(
        "{} event(s): {} stored ({} unattributed), {} duplicate(s) ignored",
        events.len(),
        total.stored,
        total.unattributed,
        total.duplicates
    );
    Ok(())
}

async fn summary(g: &GlobalOpts, campaign: &str) -> Result<(), CliError> {
    let campaign = campaign_id(campaign)?;
    let store = g.open_store().await?;
    let rows = store.conversion_summary(&campaign).await?;
    if rows.is_empty() {
        println!("campaign {campaign}: no conversions");
        return Ok(());
    }
    println!("campaign {campaign}:");
    for s in rows {
        let revenue: Vec<String> = s
            .revenue
            .iter()
            .map(|(currency, micros)| format_micros(u64::try_from(*micros).unwrap_or(0), currency))
            .collect();
        println!(
            "  {:<12} {} conversion(s), {} after the follow-up{}",
            s.channel.map_or("unattributed", |c| c.as_str()),
            s.conversions,
            s.after_follow_up,
            if revenue.is_empty() {
                String::new()
            } else {
                format!(", revenue {}", revenue.join(" + "))
            }
        );
    }
    Ok(())
}
