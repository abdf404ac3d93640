//! `herald demo`: a fashion retailer's sneaker flash sale to 10,000 customers, end to end on
//! the embedded default — the simulator in-process, SQLite in a temporary directory, the same
//! engine the workers use — then a summary of outcomes, throughput, cost and tier usage.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use clap::Args;
use serde_json::json;

use crate::app::EngineSetup;
use crate::domain::{Category, ChannelKind, Job, PhoneNumber, SenderId};
use crate::engine::{JobRun, Progress, RunControl};
use crate::graph::{GraphClient, GraphConfig};
use crate::pacing::PacerConfig;
use crate::policy::cost::{RateCard, format_micros};
use crate::simulator::{self, SimConfig, SimNumber, SimTemplate};
use crate::store::{self, Consent, Sender, Template};

#[derive(Args, Debug, Clone)]
pub struct DemoArgs {
    /// Customers in the flash sale (one job carries at most 10,000).
    #[arg(long, default_value_t = 10_000)]
    pub recipients: usize,
    /// The business number's throughput (Meta: 80/s standard, 1,000/s after the upgrade).
    #[arg(long, default_value_t = 1000)]
    pub rate: u32,
    /// Simulated Cloud API latency in milliseconds.
    #[arg(long, default_value_t = 40)]
    pub latency_ms: u64,
    /// Keep the SQLite database at this path instead of a temporary directory.
    #[arg(long)]
    pub database: Option<std::path::PathBuf>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

const SENDER: &str = "106540352242922";
const ACCOUNT: &str = "102290129340398";
const PORTFOLIO: &str = "acme-mode-portfolio";
const CAMPAIGN: &str = "sneaker-flash-sale";

const FIRST_NAMES: &[&str] = &[
    "Anna", "Ben", "Clara", "David", "Emma", "Finn", "Greta", "Hannah", "Jonas", "Lea", "Lukas",
    "Mia", "Noah", "Paul", "Sophie", "Tim",
];

/// How each demo customer is set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Persona {
    Consented,
    NoConsent,
    OptedOut,
    NotOnWhatsApp,
}

/// Deterministic customer `i`: number, market and persona. About 0.6 % have no consent,
/// 0.4 % opted out, 0.5 % are not on WhatsApp.
fn customer(i: usize) -> (String, Persona) {
    let number = match i % 20 {
        0 | 1 => format!("+316{:08}", 10_000_000 + i), // Netherlands
        2 => format!("+447911{:06}", 100_000 + i),     // United Kingdom
        _ => format!("+49151{:08}", 10_000_000 + i),   // Germany
    };
    let persona = match i % 1000 {
        7 | 107 | 207 | 307 | 407 | 507 => Persona::NoConsent,
        13 | 313 | 613 | 913 => Persona::OptedOut,
        21 | 221 | 421 | 621 | 821 => Persona::NotOnWhatsApp,
        _ => Persona::Consented,
    };
    (number, persona)
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        (1..=crate::domain::job::MAX_RECIPIENTS).contains(&args.recipients),
        "--recipients must be between 1 and 10000"
    );
    anyhow::ensure!(args.rate > 0, "--rate must be at least 1");
    let total_start = Instant::now();

    // 1. A local Cloud API that knows the number, its template and who is not on WhatsApp.
    let customers: Vec<(String, Persona)> = (0..args.recipients).map(customer).collect();
    let sim = simulator::spawn(
        SimConfig {
            rate_per_sec: args.rate,
            latency: Duration::from_millis(args.latency_ms),
            latency_jitter: Duration::from_millis(args.latency_ms / 2),
            undeliverable: customers
                .iter()
                .filter(|(_, p)| *p == Persona::NotOnWhatsApp)
                .map(|(n, _)| n.clone())
                .collect(),
            templates: vec![SimTemplate {
                account_id: Some(ACCOUNT.into()),
                ..SimTemplate::approved("flash_sale", "de", Category::Marketing)
            }],
            numbers: vec![SimNumber {
                id: SENDER.into(),
                account_id: Some(ACCOUNT.into()),
                display_phone_number: "+49 30 901820".into(),
                verified_name: "Acme Mode".into(),
                quality_rating: "GREEN".into(),
                status: "CONNECTED".into(),
                throughput_level: if args.rate >= 1000 {
                    "HIGH"
                } else {
                    "STANDARD"
                }
                .into(),
                messaging_limit: "TIER_100K".into(),
            }],
            ..SimConfig::default()
        },
        SocketAddr::from(([127, 0, 0, 1], 0)),
    )
    .await?;

    // 2. The embedded store.
    let tmp = tempfile::tempdir()?;
    let db_path = args
        .database
        .clone()
        .unwrap_or_else(|| tmp.path().join("herald-demo.db"));
    let db_url = format!("sqlite://{}?mode=rwc", db_path.display());
    let store = store::open(&db_url).await?;

    // 3. Seed: the number, its approved template, consents with proof, some opt-outs.
    let sender = Sender {
        id: SenderId::parse(SENDER)?,
        account_id: ACCOUNT.into(),
        portfolio_id: PORTFOLIO.into(),
        display_number: "+49 30 901820".into(),
        rate_per_sec: args.rate,
        tier_limit: Some(100_000),
        status: "CONNECTED".into(),
        status_reason: None,
    };
    store.upsert_sender(&sender).await?;
    store
        .upsert_template(&Template {
            account_id: ACCOUNT.into(),
            name: "flash_sale".into(),
            language: "de".into(),
            category: Category::Marketing,
            status: "APPROVED".into(),
        })
        .await?;
    let granted_at = Utc::now() - chrono::Duration::days(30);
    let consents: Vec<Consent> = customers
        .iter()
        .filter(|(_, p)| *p != Persona::NoConsent)
        .map(|(n, _)| Consent {
            phone: PhoneNumber::from_trusted(n.clone()),
            category: Category::Marketing,
            channel: ChannelKind::WhatsApp,
            granted_at,
            source: "checkout".into(),
            proof: "newsletter-whatsapp-checkbox-v3".into(),
        })
        .collect();
    for chunk in consents.chunks(2000) {
        store.grant_consents(chunk).await?;
    }
    for (n, p) in &customers {
        if *p == Persona::OptedOut {
            store
                .revoke_consent(
                    &PhoneNumber::from_trusted(n.clone()),
                    Some(Category::Marketing),
                    Some(ChannelKind::WhatsApp),
                    Utc::now(),
                    "inbound:STOP",
                )
                .await?;
        }
    }

    // 4. The job, exactly as a campaign system would publish it.
    let recipients: Vec<_> = customers
        .iter()
        .enumerate()
        .map(|(i, (n, _))| {
            json!({"to": n, "components": [{"type": "body", "parameters": [
                {"type": "text", "text": FIRST_NAMES[i % FIRST_NAMES.len()]},
                {"type": "text", "text": "30 %"}]}]})
        })
        .collect();
    let body = json!({
        "version": 1,
        "job_id": "sneaker-flash-sale-0001",
        "campaign_id": CAMPAIGN,
        "sender": SENDER,
        "template": {"name": "flash_sale", "language": "de", "category": "marketing"},
        "components": [{"type": "header", "parameters": [{"type": "image", "image": {"id": "4711"}}]}],
        "recipients": recipients,
    });
    let job = Arc::new(Job::parse(body.to_string().as_bytes())?);

    let setup = EngineSetup::new(RateCard::builtin());
    let card = Arc::clone(&setup.rate_card);
    let graph = GraphClient::new(&GraphConfig {
        base_url: sim.url(),
        access_token: None,
        ..GraphConfig::default()
    })?;
    let engine = setup.build(Arc::clone(&store), graph);

    println!(
        "herald demo — Acme Mode's sneaker flash sale to {} customers\n  \
         Cloud API simulator at {} ({} msg/s per number, {} ms latency), SQLite at {}",
        args.recipients,
        sim.url(),
        args.rate,
        args.latency_ms,
        db_path.display()
    );

    // 5. Send, with a progress bar.
    let progress = Arc::new(Progress::default());
    let ctl = RunControl {
        shutdown: crate::signal::cancel_on_shutdown_signal(Some(crate::signal::HANDING_BACK)),
        progress: Some(Arc::clone(&progress)),
    };
    let bar = crate::app::progress_bar(Arc::clone(&progress), args.quiet);
    let started = Instant::now();
    let run = engine.run_job(Arc::clone(&job), &ctl).await?;
    let elapsed = started.elapsed();
    if let Some((bar, task)) = bar {
        task.abort();
        bar.finish_and_clear();
    }
    let JobRun::Finished(report) = run else {
        anyhow::bail!("the demo job did not run: {run:?}");
    };

    // 6. The same job again: idempotency keys make it a no-op.
    let again = engine
        .run_job(Arc::clone(&job), &RunControl::default())
        .await?;
    let again_sent = match &again {
        JobRun::Finished(r) => r.total("sent"),
        _ => 0,
    };

    let stats = sim.stats();
    let sent = report.total("sent");
    println!("\nOutcomes ({} keys)", job.key_count());
    for (label, n) in &report.outcomes {
        println!("  {label:<28} {n:>7}");
    }
    println!(
        "\nThroughput: {sent} sent in {:.2} s = {:.0} msg/s (paced at {:.0} msg/s: {} × headroom {})",
        elapsed.as_secs_f64(),
        sent as f64 / elapsed.as_secs_f64(),
        f64::from(args.rate) * PacerConfig::default().headroom,
        args.rate,
        PacerConfig::default().headroom
    );
    let peak = stats.numbers.get(SENDER).map_or(0, |n| n.max_in_one_second);
    let throttled: u64 = stats.numbers.values().map(|n| n.throttled_130429).sum();
    println!(
        "  the API saw at most {peak} messages in any one second (limit {}), {throttled} × 130429, {} duplicates",
        args.rate, stats.duplicates
    );
    println!(
        "\nEstimated cost ({}): {}",
        card.name,
        format_micros(report.cost.total_micros(), &card.currency)
    );
    for ((cat, market), (n, micros)) in &report.cost.by_category_market {
        println!(
            "  {cat:<10} {market:<6} {n:>7} × {} = {}",
            format_micros(*micros / (*n).max(1), &card.currency),
            format_micros(*micros, &card.currency)
        );
    }
    let used = store
        .tier_usage(PORTFOLIO, Duration::from_secs(24 * 3600))
        .await?;
    println!(
        "\nMessaging tier: {used} of 100,000 unique users used in the rolling 24 h ({:.1} %)",
        used as f64 / 1000.0
    );
    println!("Re-running the same job sent {again_sent} (every key already had its outcome).");
    println!(
        "\nDone in {:.1} s. To run it for real:\n  \
         export HERALD_ACCESS_TOKEN=…   # a system-user token of your WhatsApp Business Account\n  \
         herald senders add --id <phone_number_id> --account <waba_id> --portfolio <portfolio_id>\n  \
         herald senders sync && herald templates sync\n  \
         herald consent import consents.csv      # phone,category,granted_at,source,proof\n  \
         herald estimate job.json && herald send job.json\n  \
         herald report {CAMPAIGN} > outcomes.csv\n\
         At scale: `herald worker` on RabbitMQ + Postgres (see README).",
        total_start.elapsed().as_secs_f64()
    );
    sim.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_customers_have_valid_numbers_and_a_mix_of_personas() {
        let mut personas = std::collections::HashMap::new();
        for i in 0..10_000 {
            let (n, p) = customer(i);
            assert!(PhoneNumber::parse(&n).is_ok(), "{n}");
            *personas.entry(p).or_insert(0) += 1;
        }
        assert_eq!(personas[&Persona::NoConsent], 60);
        assert_eq!(personas[&Persona::OptedOut], 40);
        assert_eq!(personas[&Persona::NotOnWhatsApp], 50);
    }
}
