//! The small-team administration commands: senders, templates, consent, campaigns, reports
//! and contacts. Each reads or writes the store; `sync` commands read from the Graph API.

use std::io::Write;
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};

use crate::app::{CliError, GlobalOpts, RateCardOpts};
use crate::domain::{CampaignId, Category, IdempotencyKey, PhoneNumber, SenderId, mask};
use crate::policy::cost::{format_micros, parse_amount};
use crate::store::{Budget, Campaign, CampaignState, Consent, Sender, Template};

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

#[derive(Subcommand, Debug)]
pub enum ConsentCmd {
    /// Import opt-ins from a CSV with columns phone, category, granted_at, source, proof.
    /// The whole file is checked first; one bad row imports nothing (see --skip-invalid).
    Import(ConsentImportArgs),
    /// Record one opt-in.
    Grant(ConsentGrantArgs),
    /// Record an opt-out (one category, or all): honoured by the next batch of every worker.
    Revoke(ConsentRevokeArgs),
}

#[derive(Args, Debug)]
pub struct ConsentImportArgs {
    pub file: PathBuf,
    /// Import the valid rows and list the invalid ones instead of importing nothing.
    #[arg(long)]
    pub skip_invalid: bool,
}

#[derive(Args, Debug)]
pub struct ConsentGrantArgs {
    pub phone: String,
    #[arg(long)]
    pub category: String,
    /// Where the opt-in was given (form, checkout, …).
    #[arg(long)]
    pub source: String,
    /// What the person agreed to: the opt-in text or a reference to the signed record.
    #[arg(long)]
    pub proof: String,
    /// When it was given (RFC 3339); now if omitted.
    #[arg(long)]
    pub granted_at: Option<DateTime<Utc>>,
}

#[derive(Args, Debug)]
pub struct ConsentRevokeArgs {
    pub phone: String,
    /// Only this category; every category if omitted.
    #[arg(long)]
    pub category: Option<String>,
    #[arg(long, default_value = "cli")]
    pub source: String,
}

#[derive(Subcommand, Debug)]
pub enum CampaignCmd {
    /// Counts per outcome and progress.
    Status { campaign: String },
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

#[derive(Subcommand, Debug)]
pub enum ContactsCmd {
    /// Print everything stored about a number as JSON (GDPR access request).
    Export { phone: String },
    /// Erase a number: consents deleted, ledger rows anonymised, kept suppressed by hash.
    Erase {
        phone: String,
        /// Confirm the erasure.
        #[arg(long)]
        yes: bool,
    },
}

fn phone(raw: &str) -> Result<PhoneNumber, CliError> {
    PhoneNumber::parse(raw).map_err(|e| CliError::Usage(format!("'{}': {e}", mask(raw))))
}

fn category(raw: &str) -> Result<Category, CliError> {
    raw.parse().map_err(CliError::Usage)
}

fn campaign_id(raw: &str) -> Result<CampaignId, CliError> {
    CampaignId::parse(raw).map_err(|e| CliError::Usage(format!("campaign id: {e}")))
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

/// One CSV row of a consent import.
#[derive(Debug, serde::Deserialize)]
struct ConsentRow {
    phone: String,
    category: String,
    granted_at: String,
    source: String,
    proof: String,
}

/// Parses a consent CSV; returns the consents and the errors with their line numbers.
pub fn parse_consent_csv(
    reader: impl std::io::Read,
) -> Result<(Vec<Consent>, Vec<String>), CliError> {
    let mut rdr = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(reader);
    let headers = rdr
        .headers()
        .map_err(|e| CliError::Usage(format!("cannot read the CSV header: {e}")))?
        .clone();
    for needed in ["phone", "category", "granted_at", "source", "proof"] {
        if !headers.iter().any(|h| h == needed) {
            return Err(CliError::Usage(format!(
                "the CSV has no '{needed}' column (need phone, category, granted_at, source, proof)"
            )));
        }
    }
    let mut ok = Vec::new();
    let mut errors = Vec::new();
    for (i, row) in rdr.deserialize::<ConsentRow>().enumerate() {
        let line = i + 2;
        let row = match row {
            Ok(r) => r,
            Err(e) => {
                errors.push(format!("line {line}: {e}"));
                continue;
            }
        };
        let parsed = (|| -> Result<Consent, String> {
            let phone = PhoneNumber::parse(&row.phone)
                .map_err(|e| format!("phone {}: {e}", mask(&row.phone)))?;
            let category = row.category.parse::<Category>()?;
            let granted_at = DateTime::parse_from_rfc3339(&row.granted_at)
                .map_err(|e| format!("granted_at '{}': {e} (use RFC 3339)", row.granted_at))?
                .with_timezone(&Utc);
            if granted_at > Utc::now() + chrono::Duration::minutes(5) {
                return Err(format!("granted_at {} is in the future", row.granted_at));
            }
            if row.source.is_empty() || row.proof.is_empty() {
                return Err("source and proof must not be empty (GDPR: keep proof)".into());
            }
            Ok(Consent {
                phone,
                category,
                granted_at,
                source: row.source,
                proof: row.proof,
            })
        })();
        match parsed {
            Ok(c) => ok.push(c),
            Err(e) => errors.push(format!("line {line}: {e}")),
        }
    }
    Ok((ok, errors))
}

pub async fn consent(g: &GlobalOpts, cmd: ConsentCmd) -> Result<(), CliError> {
    match cmd {
        ConsentCmd::Import(a) => {
            let file = std::fs::File::open(&a.file)
                .map_err(|e| CliError::Usage(format!("cannot open {}: {e}", a.file.display())))?;
            let (consents, errors) = parse_consent_csv(std::io::BufReader::new(file))?;
            if !errors.is_empty() {
                for e in errors.iter().take(20) {
                    eprintln!("  {e}");
                }
                if errors.len() > 20 {
                    eprintln!("  … and {} more", errors.len() - 20);
                }
                if !a.skip_invalid {
                    return Err(CliError::Usage(format!(
                        "{} invalid row(s) in {}: nothing imported (fix them, or pass --skip-invalid)",
                        errors.len(),
                        a.file.display()
                    )));
                }
            }
            let store = g.open_store().await?;
            let mut n = 0;
            for chunk in consents.chunks(1000) {
                n += store.grant_consents(chunk).await?;
            }
            println!(
                "{n} consent(s) imported{}",
                if errors.is_empty() {
                    String::new()
                } else {
                    format!(", {} invalid row(s) skipped", errors.len())
                }
            );
            Ok(())
        }
        ConsentCmd::Grant(a) => {
            let c = Consent {
                phone: phone(&a.phone)?,
                category: category(&a.category)?,
                granted_at: a.granted_at.unwrap_or_else(Utc::now),
                source: a.source,
                proof: a.proof,
            };
            let store = g.open_store().await?;
            store.grant_consents(std::slice::from_ref(&c)).await?;
            println!("consent recorded for {} ({})", c.phone, c.category);
            Ok(())
        }
        ConsentCmd::Revoke(a) => {
            let p = phone(&a.phone)?;
            let cat = a.category.as_deref().map(category).transpose()?;
            let store = g.open_store().await?;
            store.revoke_consent(&p, cat, Utc::now(), &a.source).await?;
            println!(
                "consent revoked for {} ({})",
                p,
                cat.map_or("all categories".into(), |c| c.to_string())
            );
            Ok(())
        }
    }
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
    match cmd {
        CampaignCmd::Pause { campaign, reason } => {
            set(
                &campaign,
                CampaignState::Paused,
                reason.or(Some("operator".into())),
            )
            .await
        }
        CampaignCmd::Resume { campaign } => set(&campaign, CampaignState::Active, None).await,
        CampaignCmd::Cancel { campaign, reason } => {
            set(
                &campaign,
                CampaignState::Cancelled,
                reason.or(Some("operator".into())),
            )
            .await
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
            let c = store.set_campaign_budget(&id, budget.as_ref()).await?;
            println!("campaign {id}: {}", budget_line(&c));
            Ok(())
        }
        CampaignCmd::Status { campaign } => {
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
            Ok(())
        }
    }
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
    ])
    .map_err(io)?;
    let mut after: Option<IdempotencyKey> = None;
    loop {
        let page = store.ledger_page(&id, after.as_ref(), 5000).await?;
        if page.is_empty() {
            break;
        }
        for row in page
            .iter()
            .filter(|r| !args.unknown || r.state == "unknown")
        {
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
            ])
            .map_err(io)?;
        }
        after = page.last().map(|r| r.key.clone());
    }
    w.flush()
        .map_err(|e| CliError::runtime(format!("cannot write the report: {e}")))?;
    Ok(())
}

pub async fn contacts(g: &GlobalOpts, cmd: ContactsCmd) -> Result<(), CliError> {
    match cmd {
        ContactsCmd::Export { phone: raw } => {
            let p = phone(&raw)?;
            let store = g.open_store().await?;
            let data = store.export_contact(&p).await?;
            println!(
                "{}",
                serde_json::to_string_pretty(&data).expect("JSON value serialises")
            );
            Ok(())
        }
        ContactsCmd::Erase { phone: raw, yes } => {
            let p = phone(&raw)?;
            if !yes {
                return Err(CliError::Usage(format!(
                    "erasing {p} cannot be undone: pass --yes to confirm"
                )));
            }
            let store = g.open_store().await?;
            let n = store.erase_contact(&p).await?;
            println!("{p} erased ({n} row(s) touched); the number stays suppressed by hash");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consent_csv_rows_are_checked_with_line_numbers() {
        let csv = "phone,category,granted_at,source,proof\n\
                   +4915112345678,marketing,2026-01-02T10:00:00Z,checkout,box ticked v3\n\
                   015112345678,marketing,2026-01-02T10:00:00Z,checkout,x\n\
                   +4915112345679,promo,2026-01-02T10:00:00Z,checkout,x\n\
                   +4915112345670,utility,yesterday,checkout,x\n";
        let (ok, errors) = parse_consent_csv(csv.as_bytes()).unwrap();
        assert_eq!(ok.len(), 1);
        assert_eq!(errors.len(), 3);
        assert!(errors[0].starts_with("line 3: phone"), "{}", errors[0]);
        assert!(errors[1].starts_with("line 4"));
        assert!(errors[2].contains("granted_at"));
        // Numbers never appear unmasked in errors.
        assert!(!errors[0].contains("015112345678"));
    }

    #[test]
    fn consent_csv_needs_its_columns() {
        assert!(parse_consent_csv("phone,category\n".as_bytes()).is_err());
    }
}
