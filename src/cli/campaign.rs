//! `herald campaign` (pause, resume, cancel, budget, status) and `herald report` (a
//! campaign's per-recipient outcomes as CSV). Cancelling is final; the store enforces it in
//! one atomic write, and these commands read back what the campaign became.

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::parse::campaign_id;
use crate::app::audit::audited;
use crate::app::{CliError, GlobalOpts, RateCardOpts, funnel};
use crate::domain::{IdempotencyKey, mask};
use crate::policy::access::Action;
use crate::policy::cost::{format_micros, parse_amount};
use crate::store::{Budget, Campaign, CampaignState};

#[derive(Subcommand, Debug)]
pub enum CampaignCmd {
    /// Counts per outcome and progress, and the funnel per channel: sent, delivered, read,
    /// converted, follow-ups, revenue and estimated cost.
    Status {
        campaign: String,
        /// The rate card the cost is estimated with.
        #[command(flatten)]
        rate_card: RateCardOpts,
    },
    /// Stop sending; every worker honours it within seconds. Nothing is lost.
    Pause {
        campaign: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Continue a paused campaign.
    Resume { campaign: String },
    /// Skip every recipient not yet sent as `campaign_cancelled`. Final.
    Cancel {
        campaign: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Cap what a campaign may spend. herald commits each message's estimated cost (rate card
    /// price for its category and market) before sending, gives it back when the send fails,
    /// and skips recipients that no longer fit as `budget_exhausted`. Every worker honours it
    /// at once; raising it later lets the campaign's remaining jobs continue.
    Budget {
        campaign: String,
        /// The limit, in the rate card's currency (e.g. 250 or 99.50).
        #[arg(long, required_unless_present = "clear", conflicts_with = "clear")]
        amount: Option<String>,
        /// Must match the rate card's currency (default: the rate card's).
        #[arg(long)]
        currency: Option<String>,
        /// Remove the limit.
        #[arg(long)]
        clear: bool,
        /// The rate card the workers price with.
        #[command(flatten)]
        rate_card: RateCardOpts,
    },
}

#[derive(Args, Debug)]
pub struct ReportArgs {
    pub campaign: String,
    /// Write to this file instead of standard output.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// Only recipients whose outcome is `unknown` (the request may have reached Meta and no
    /// status webhook settled it): whom nobody can say was reached.
    #[arg(long)]
    pub unknown: bool,
}

pub async fn campaign(g: &GlobalOpts, cmd: CampaignCmd) -> Result<(), CliError> {
    let store = g.open_store().await?;
    let set = |id: &str, state: CampaignState, reason: Option<String>| {
        let store = store.clone();
        let id = id.to_owned();
        async move {
            let id = campaign_id(&id)?;
            // One atomic write: the store never overwrites `cancelled`, so reading back tells
            // whether this change took or met a cancellation (however recent).
            store
                .set_campaign_state(&id, state, reason.as_deref())
                .await?;
            let Some(now) = store.campaign(&id).await? else {
                return Err(CliError::runtime(format!(
                    "campaign {id} vanished after an update"
                )));
            };
            if now.state == CampaignState::Cancelled && state != CampaignState::Cancelled {
                return Err(CliError::Usage(format!(
                    "campaign {id} is cancelled; cancellation is final"
                )));
            }
            println!("campaign {id}: {}", state.as_str());
            Ok(())
        }
    };
    // Each change is audited as `cli@<host>`, refused ones too.
    match cmd {
        CampaignCmd::Pause { campaign, reason } => {
            let outcome = set(
                &campaign,
                CampaignState::Paused,
                reason.or(Some("operator".into())),
            )
            .await;
            audited(&*store, Action::CampaignPause, Some(campaign), outcome).await
        }
        CampaignCmd::Resume { campaign } => {
            let outcome = set(&campaign, CampaignState::Active, None).await;
            audited(&*store, Action::CampaignResume, Some(campaign), outcome).await
        }
        CampaignCmd::Cancel { campaign, reason } => {
            let outcome = set(
                &campaign,
                CampaignState::Cancelled,
                reason.or(Some("operator".into())),
            )
            .await;
            audited(&*store, Action::CampaignCancel, Some(campaign), outcome).await
        }
        CampaignCmd::Budget {
            campaign,
            amount,
            currency,
            clear,
            rate_card,
        } => {
            let id = campaign_id(&campaign)?;
            let card = rate_card.load()?;
            let budget = match (clear, amount) {
                (true, _) | (false, None) => None,
                (false, Some(raw)) => {
                    let currency = currency.unwrap_or_else(|| card.currency.clone());
                    if !currency.eq_ignore_ascii_case(&card.currency) {
                        return Err(CliError::Usage(format!(
                            "the rate card '{}' prices in {}; a budget in {currency} cannot be compared with it",
                            card.name, card.currency
                        )));
                    }
                    Some(Budget {
                        micros: parse_amount(&raw).map_err(CliError::Usage)?,
                        currency: card.currency.clone(),
                    })
                }
            };
            let outcome = store
                .set_campaign_budget(&id, budget.as_ref())
                .await
                .map_err(CliError::from);
            let c = audited(
                &*store,
                Action::CampaignBudget,
                Some(id.to_string()),
                outcome,
            )
            .await?;
            println!("campaign {id}: {}", budget_line(&c));
            Ok(())
        }
        CampaignCmd::Status {
            campaign,
            rate_card,
        } => {
            let card = rate_card.load()?;
            let id = campaign_id(&campaign)?;
            let Some(c) = store.campaign(&id).await? else {
                return Err(CliError::Usage(format!("no campaign '{id}' in the store")));
            };
            let counts = store.campaign_counts(&id).await?;
            let total = counts.total();
            let open = counts.state("pending") + counts.state("sending");
            println!(
                "campaign {id}: {}{}",
                c.state.as_str(),
                c.reason
                    .clone()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            );
            println!("{}", budget_line(&c));
            println!(
                "keys: {total} · done {} ({:.1} %) · open {open}",
                total - open,
                if total == 0 {
                    0.0
                } else {
                    (total - open) as f64 * 100.0 / total as f64
                }
            );
            for (state, reason, n) in &counts.by_state {
                let label = if reason.is_empty() {
                    state.clone()
                } else {
                    format!("{state}:{reason}")
                };
                println!("  {label:<28} {n:>8}");
            }
            // An SMS is priced at one part here: the ledger does not keep its text.
            let funnel = funnel::campaign_funnel(&*store, &id, Some((&card, ""))).await?;
            if !funnel.is_empty() {
                print!(
                    "funnel per channel\n{}",
                    funnel::table(&funnel, &card.currency)
                );
            }
            let estimated: u64 = funnel.values().filter_map(|f| f.cost_micros).sum();
            let billed = store.billed_summary(&id).await?;
            print!("{}", billed_table(&billed, estimated, &card.currency));
            Ok(())
        }
    }
}

/// Estimated against billed: what the rate card said before sending, and what Meta's status
/// webhooks bill (per channel, category and market, priced with the card).
fn billed_table(
    billed: &[crate::store::BilledLine],
    estimated_micros: u64,
    currency: &str,
) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let total: u64 = billed.iter().map(|l| l.micros).sum();
    let messages: u64 = billed.iter().map(|l| l.messages).sum();
    let _ = writeln!(
        out,
        "cost: estimated {} · billed {} ({messages} billable message(s) in Meta's status webhooks so far)",
        format_micros(estimated_micros, currency),
        format_micros(total, currency)
    );
    for l in billed {
        let _ = writeln!(
            out,
            "  billed {:<9} {:<14} {:<6} {:>8} × {} = {}",
            l.channel,
            l.category,
            l.market,
            l.messages,
            format_micros(l.micros / l.messages.max(1), &l.currency),
            format_micros(l.micros, &l.currency)
        );
    }
    out
}

/// `budget 250.0000 USD · committed 12.3400 USD · left 237.6600 USD`, or the spend alone.
fn budget_line(c: &Campaign) -> String {
    match &c.budget {
        Some(b) => format!(
            "budget {} · committed {} · left {}",
            format_micros(b.micros, &b.currency),
            format_micros(c.committed_micros, &b.currency),
            format_micros(c.budget_left().unwrap_or(0), &b.currency)
        ),
        None => format!(
            "no budget · committed {} (estimated)",
            format_micros(c.committed_micros, "").trim_end().to_owned()
        ),
    }
}

/// What a ledger key is: the campaign's `first` message, its SMS `fallback` (`key#sms`) or
/// its `follow_up` (`key#follow-up`).
fn role_of(key: &str) -> &'static str {
    if crate::engine::is_follow_up_key(key) {
        "follow_up"
    } else if key.ends_with(crate::engine::SMS_SUFFIX) {
        "fallback"
    } else {
        "first"
    }
}

pub async fn report(g: &GlobalOpts, args: ReportArgs) -> Result<(), CliError> {
    let id = campaign_id(&args.campaign)?;
    let store = g.open_store().await?;
    if store.campaign(&id).await?.is_none() {
        return Err(CliError::Usage(format!("no campaign '{id}' in the store")));
    }
    let out: Box<dyn Write> = match &args.output {
        Some(p) => Box::new(
            std::fs::File::create(p)
                .map_err(|e| CliError::runtime(format!("cannot write {}: {e}", p.display())))?,
        ),
        None => Box::new(std::io::stdout().lock()),
    };
    let mut w = csv::Writer::from_writer(std::io::BufWriter::new(out));
    let io = |e: csv::Error| CliError::runtime(format!("cannot write the report: {e}"));
    w.write_record([
        "key",
        "recipient",
        "outcome",
        "reason",
        "wamid",
        "attempts",
        "delivery",
        "job",
        "updated_at",
        "channel",
        "role",
        "converted",
        "billed_category",
        "billed_cost",
    ])
    .map_err(io)?;
    let mut after: Option<IdempotencyKey> = None;
    loop {
        let page = store.ledger_page(&id, after.as_ref(), 5000).await?;
        if page.is_empty() {
            break;
        }
        // Conversions are attributed to the first message's key.
        let firsts: Vec<String> = page
            .iter()
            .filter(|r| role_of(r.key.as_str()) == "first")
            .map(|r| r.key.to_string())
            .collect();
        let converted = store.converted_keys(&id, &firsts).await?;
        let keys: Vec<String> = page.iter().map(|r| r.key.to_string()).collect();
        let billed = store.billed_keys(&id, &keys).await?;
        for row in page
            .iter()
            .filter(|r| !args.unknown || r.state == "unknown")
        {
            let role = role_of(row.key.as_str());
            let (billed_category, billed_cost) = match billed.get(row.key.as_str()) {
                Some((category, micros, currency)) => {
                    (category.as_str(), format_micros(*micros, currency))
                }
                None => ("", String::new()),
            };
            let reason = match row.reason.as_deref() {
                Some(r) => r,
                None if row.resent_unknown => "resent_after_unknown",
                None => "",
            };
            w.write_record([
                row.key.as_str(),
                &mask(&row.recipient),
                &row.state,
                reason,
                row.wamid.as_deref().unwrap_or(""),
                &row.attempts.to_string(),
                row.delivery.as_deref().unwrap_or(""),
                row.job.as_str(),
                &row.updated_at.to_rfc3339(),
                row.channel.as_str(),
                role,
                if converted.contains(row.key.as_str()) {
                    "yes"
                } else {
                    ""
                },
                billed_category,
                &billed_cost,
            ])
            .map_err(io)?;
        }
        after = page.last().map(|r| r.key.clone());
    }
    w.flush()
        .map_err(|e| CliError::runtime(format!("cannot write the report: {e}")))?;
    Ok(())
}
