//! `herald optin`: click-to-chat opt-in (DESIGN §1.6). `link` makes the `wa.me` link and QR
//! code a business publishes (poster, website, receipt); `keywords` manages what an inbound
//! message must say to count as an opt-in. `herald serve` does the rest: a customer who
//! writes the keyword gets consent recorded with its proof and one confirmation message.

use std::path::PathBuf;

use chrono::Utc;
use clap::{Args, Subcommand};

use crate::app::{CliError, GlobalOpts};
use crate::domain::inbound::OptInKeyword;
use crate::domain::{Category, SenderId};
use crate::optin::link::{prefilled_text, wa_me_link, write_qr_files};
use crate::policy::opt_out::{DEFAULT_OPT_OUT_WORDS, OptOutWords};
use crate::policy::optin::{check_confirmation, check_new_keyword, default_confirmation};
use crate::store::Store;

#[derive(Subcommand, Debug)]
pub enum OptInCmd {
    /// Print the wa.me link whose prefilled text is the keyword, and write its QR code (PNG
    /// and SVG). Registers the keyword for the sender if it is not yet.
    Link(LinkArgs),
    /// The keywords an inbound message must be to record an opt-in.
    #[command(subcommand)]
    Keywords(KeywordsCmd),
}

#[derive(Subcommand, Debug)]
pub enum KeywordsCmd {
    /// Register a keyword (or change the one the sender has): who writes it to the sender
    /// consents to the category on WhatsApp and gets the confirmation.
    Add(KeywordArgs),
    /// List the registered keywords.
    List,
    /// Remove a keyword: messages saying it are then ordinary messages.
    Remove(RemoveArgs),
}

/// What a keyword records, shared by `link` and `keywords add`.
#[derive(Args, Debug)]
pub struct KeywordSpec {
    /// The business number (phone_number_id) the customer writes to.
    #[arg(long)]
    pub sender: String,
    /// The consent the keyword records: marketing, utility or authentication.
    #[arg(long, value_parser = |s: &str| s.parse::<Category>())]
    pub category: Category,
    /// Where the link is published (`poster-store-berlin`, `instagram-bio`): kept with every
    /// consent as part of its proof.
    #[arg(long)]
    pub source: String,
    /// The business's name, as the confirmation names it (default: the sender's display
    /// number).
    #[arg(long)]
    pub business: Option<String>,
    /// The confirmation session message; must name the business and say how to opt out
    /// (default: a sentence doing both, with STOP).
    #[arg(long)]
    pub confirmation: Option<String>,
    /// The opt-out words a keyword must not be (as `herald serve` is configured).
    #[arg(long, env = "HERALD_OPT_OUT_WORDS", default_value = DEFAULT_OPT_OUT_WORDS)]
    pub opt_out_words: String,
}

#[derive(Args, Debug)]
pub struct KeywordArgs {
    pub keyword: String,
    #[command(flatten)]
    pub spec: KeywordSpec,
}

#[derive(Args, Debug)]
pub struct LinkArgs {
    /// The keyword the prefilled text carries.
    #[arg(long)]
    pub keyword: String,
    #[command(flatten)]
    pub spec: KeywordSpec,
    /// Directory the QR code is written to (`optin-<keyword>.png` and `.svg`).
    #[arg(long, default_value = ".")]
    pub qr_dir: PathBuf,
}

#[derive(Args, Debug)]
pub struct RemoveArgs {
    pub keyword: String,
    #[arg(long)]
    pub sender: String,
}

pub async fn optin(g: &GlobalOpts, cmd: OptInCmd) -> Result<(), CliError> {
    match cmd {
        OptInCmd::Link(args) => link(g, args).await,
        OptInCmd::Keywords(KeywordsCmd::Add(args)) => {
            let store = g.open_store().await?;
            let keyword = keyword(store.as_ref(), &args.keyword, &args.spec).await?;
            let new = store.upsert_keyword(&keyword).await?;
            println!(
                "keyword {} {} for sender {} ({} consent on WhatsApp, source {})",
                keyword.keyword,
                if new { "registered" } else { "updated" },
                keyword.sender,
                keyword.category,
                keyword.source
            );
            Ok(())
        }
        OptInCmd::Keywords(KeywordsCmd::List) => {
            let store = g.open_store().await?;
            let keywords = store.keywords().await?;
            if keywords.is_empty() {
                println!(
                    "no opt-in keywords registered (add one with `herald optin keywords add`)"
                );
            }
            for k in keywords {
                println!(
                    "{}\t{}\t{}\t{}\t{}",
                    k.sender, k.keyword, k.category, k.source, k.business
                );
            }
            Ok(())
        }
        OptInCmd::Keywords(KeywordsCmd::Remove(args)) => {
            let sender = sender_id(&args.sender)?;
            let store = g.open_store().await?;
            let normalised = crate::domain::inbound::normalise_keyword(&args.keyword);
            if store.remove_keyword(&sender, &normalised).await? {
                println!("keyword {normalised} removed for sender {sender}");
                Ok(())
            } else {
                Err(CliError::Usage(format!(
                    "no keyword {normalised} is registered for sender {sender} (see `herald optin keywords list`)"
                )))
            }
        }
    }
}

async fn link(g: &GlobalOpts, args: LinkArgs) -> Result<(), CliError> {
    let store = g.open_store().await?;
    let wanted = keyword(store.as_ref(), &args.keyword, &args.spec).await?;
    let existing = store
        .keywords()
        .await?
        .into_iter()
        .find(|k| k.sender == wanted.sender && k.keyword == wanted.keyword);
    let keyword = match existing {
        Some(k) if k.category != wanted.category || k.source != wanted.source => {
            return Err(CliError::Usage(format!(
                "keyword {} is registered for sender {} with category {} and source {}; use those, or change it with `herald optin keywords add`",
                k.keyword, k.sender, k.category, k.source
            )));
        }
        Some(k) => k,
        None => {
            store.upsert_keyword(&wanted).await?;
            println!(
                "keyword {} registered for sender {} ({} consent on WhatsApp, source {})",
                wanted.keyword, wanted.sender, wanted.category, wanted.source
            );
            wanted
        }
    };
    let sender = store
        .sender(&keyword.sender)
        .await?
        .ok_or_else(|| unknown_sender(&keyword.sender))?;
    // The keyword alone: herald matches the whole message, so the prefilled text is exactly
    // what counts as the opt-in.
    let text = prefilled_text(&keyword.keyword, None);
    let url = wa_me_link(&sender.display_number, &text)
        .map_err(|e| CliError::Usage(format!("sender {}: {e}", sender.id)))?;
    if !args.qr_dir.is_dir() {
        return Err(CliError::Usage(format!(
            "--qr-dir {}: not a directory",
            args.qr_dir.display()
        )));
    }
    let stem = format!("optin-{}", keyword.keyword.to_lowercase().replace(' ', "-"));
    let (png, svg) = write_qr_files(&url, &args.qr_dir, &stem)
        .map_err(|e| CliError::Runtime(anyhow::anyhow!("{e}")))?;
    println!("{url}");
    eprintln!("QR code: {} and {}", png.display(), svg.display());
    Ok(())
}

/// A keyword as the flags describe it, checked.
async fn keyword(
    store: &dyn Store,
    raw: &str,
    spec: &KeywordSpec,
) -> Result<OptInKeyword, CliError> {
    let words = OptOutWords::parse(&spec.opt_out_words)
        .map_err(|e| CliError::Usage(format!("--opt-out-words: {e}")))?;
    let keyword =
        check_new_keyword(raw, &words).map_err(|e| CliError::Usage(format!("keyword: {e}")))?;
    let sender_id = sender_id(&spec.sender)?;
    let sender = store
        .sender(&sender_id)
        .await?
        .ok_or_else(|| unknown_sender(&sender_id))?;
    if spec.source.trim().is_empty() {
        return Err(CliError::Usage(
            "--source must say where the link is published".into(),
        ));
    }
    let business = spec
        .business
        .clone()
        .unwrap_or_else(|| sender.display_number.clone());
    let confirmation = spec
        .confirmation
        .clone()
        .unwrap_or_else(|| default_confirmation(&business, spec.category.as_str()));
    check_confirmation(&confirmation, &business, &words)
        .map_err(|e| CliError::Usage(format!("--confirmation: {e}")))?;
    Ok(OptInKeyword {
        keyword,
        sender: sender_id,
        category: spec.category,
        source: spec.source.trim().to_owned(),
        business,
        confirmation,
        created_at: Utc::now(),
    })
}

fn sender_id(raw: &str) -> Result<SenderId, CliError> {
    SenderId::parse(raw).map_err(|e| CliError::Usage(format!("--sender: {e}")))
}

fn unknown_sender(id: &SenderId) -> CliError {
    CliError::Usage(format!(
        "unknown sender {id}: add it with `herald senders add` or `senders sync`"
    ))
}
