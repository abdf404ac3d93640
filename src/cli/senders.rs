//! `herald senders` and `herald templates`: the business numbers that send and their
//! templates' approval status, entered by hand or synced from the Graph API.

use clap::{Args, Subcommand};

use super::parse::category;
use crate::app::{CliError, GlobalOpts};
use crate::domain::{Category, SenderId};
use crate::store::{Sender, Template};

#[derive(Subcommand, Debug)]
pub enum SendersCmd {
    /// Register a business phone number.
    Add(SenderAddArgs),
    /// List registered numbers.
    List,
    /// Refresh status, throughput and messaging tier of every number from the Graph API.
    Sync,
}

#[derive(Args, Debug)]
pub struct SenderAddArgs {
    /// Meta's phone_number_id.
    #[arg(long)]
    pub id: String,
    /// WhatsApp Business Account id (templates are approved per account).
    #[arg(long)]
    pub account: String,
    /// Business portfolio id (owns the messaging tier); defaults to the account.
    #[arg(long)]
    pub portfolio: Option<String>,
    /// Display number, for people.
    #[arg(long, default_value = "")]
    pub display: String,
    /// Messages per second Meta allows (80, or 1000 after the upgrade).
    #[arg(long, default_value_t = 80)]
    pub rate: u32,
    /// Portfolio messaging tier: 250, 2000, 10000, 100000 or `unlimited`.
    #[arg(long, default_value = "250")]
    pub tier: String,
}

#[derive(Subcommand, Debug)]
pub enum TemplatesCmd {
    /// Fetch every template of every registered account from the Graph API.
    Sync,
    /// Record a template by hand (offline setups and tests).
    Add(TemplateAddArgs),
}

#[derive(Args, Debug)]
pub struct TemplateAddArgs {
    #[arg(long)]
    pub account: String,
    #[arg(long)]
    pub name: String,
    #[arg(long)]
    pub language: String,
    /// marketing, utility or authentication.
    #[arg(long)]
    pub category: String,
    /// Meta's status: APPROVED, PENDING, PAUSED, …
    #[arg(long, default_value = "APPROVED")]
    pub status: String,
}

fn tier_limit(raw: &str) -> Result<Option<u32>, CliError> {
    if raw.eq_ignore_ascii_case("unlimited") {
        return Ok(None);
    }
    raw.parse::<u32>().map(Some).map_err(|_| {
        CliError::Usage(format!(
            "--tier must be a number or 'unlimited', got '{raw}'"
        ))
    })
}

pub async fn senders(g: &GlobalOpts, cmd: SendersCmd) -> Result<(), CliError> {
    match cmd {
        SendersCmd::Add(a) => {
            let id = SenderId::parse(&a.id).map_err(|e| CliError::Usage(format!("--id: {e}")))?;
            if a.rate == 0 {
                return Err(CliError::Usage("--rate must be at least 1".into()));
            }
            let store = g.open_store().await?;
            let sender = Sender {
                id,
                portfolio_id: a.portfolio.unwrap_or_else(|| a.account.clone()),
                account_id: a.account,
                display_number: a.display,
                rate_per_sec: a.rate,
                tier_limit: tier_limit(&a.tier)?,
                status: "CONNECTED".into(),
                status_reason: None,
            };
            store.upsert_sender(&sender).await?;
            println!("sender {} registered", sender.id);
            Ok(())
        }
        SendersCmd::List => {
            let store = g.open_store().await?;
            println!(
                "{:<18} {:<18} {:<18} {:>6} {:>10}  status",
                "phone_number_id", "account", "portfolio", "rate", "tier"
            );
            for s in store.senders().await? {
                println!(
                    "{:<18} {:<18} {:<18} {:>6} {:>10}  {}{}",
                    s.id,
                    s.account_id,
                    s.portfolio_id,
                    s.rate_per_sec,
                    s.tier_limit.map_or("unlimited".into(), |t| t.to_string()),
                    s.status,
                    s.status_reason
                        .map(|r| format!(" ({r})"))
                        .unwrap_or_default()
                );
            }
            Ok(())
        }
        SendersCmd::Sync => {
            let store = g.open_store().await?;
            let graph = g.graph_client()?;
            let senders = store.senders().await?;
            if senders.is_empty() {
                return Err(CliError::Usage(
                    "no senders registered: add one with `herald senders add`".into(),
                ));
            }
            for mut s in senders {
                let info = graph
                    .phone_number(&s.id)
                    .await
                    .map_err(|e| CliError::runtime(format!("sender {}: {e}", s.id)))?;
                s.rate_per_sec = info.rate_per_sec();
                s.tier_limit = info.tier_limit();
                if let Some(d) = info.display_phone_number {
                    s.display_number = d;
                }
                // A number herald stopped stays stopped until an operator syncs it: syncing
                // is how they say the cause (token, payment) is fixed.
                s.status = info.status.unwrap_or_else(|| "CONNECTED".into());
                s.status_reason = None;
                store.upsert_sender(&s).await?;
                crate::telemetry::metrics::sender_stopped(s.id.as_str(), !s.can_send());
                println!(
                    "sender {}: {} · {} msg/s · tier {}",
                    s.id,
                    s.status,
                    s.rate_per_sec,
                    s.tier_limit.map_or("unlimited".into(), |t| t.to_string())
                );
            }
            Ok(())
        }
    }
}

pub async fn templates(g: &GlobalOpts, cmd: TemplatesCmd) -> Result<(), CliError> {
    let store = g.open_store().await?;
    match cmd {
        TemplatesCmd::Add(a) => {
            let t = Template {
                account_id: a.account,
                name: a.name,
                language: a.language,
                category: category(&a.category)?,
                status: a.status.to_ascii_uppercase(),
            };
            store.upsert_template(&t).await?;
            println!(
                "template {}/{} recorded as {}",
                t.name, t.language, t.status
            );
            Ok(())
        }
        TemplatesCmd::Sync => {
            let graph = g.graph_client()?;
            let mut accounts: Vec<String> = store
                .senders()
                .await?
                .into_iter()
                .map(|s| s.account_id)
                .collect();
            accounts.sort();
            accounts.dedup();
            if accounts.is_empty() {
                return Err(CliError::Usage(
                    "no senders registered: add one with `herald senders add`".into(),
                ));
            }
            for account in accounts {
                let list = graph
                    .templates(&account)
                    .await
                    .map_err(|e| CliError::runtime(format!("account {account}: {e}")))?;
                let mut n = 0;
                for t in list {
                    let Ok(cat) = t.category.parse::<Category>() else {
                        eprintln!(
                            "skipping template {}/{}: category {} is not sendable as a template",
                            t.name, t.language, t.category
                        );
                        continue;
                    };
                    store
                        .upsert_template(&Template {
                            account_id: account.clone(),
                            name: t.name,
                            language: t.language,
                            category: cat,
                            status: t.status,
                        })
                        .await?;
                    n += 1;
                }
                println!("account {account}: {n} templates synced");
            }
            Ok(())
        }
    }
}
