//! `herald demo`: a fashion retailer's sneaker flash sale to 10,000 customers, end to end on
//! the embedded default (DESIGN §4) — the simulator in-process (Cloud API, its customers who
//! receive and read, and an SMSC), `herald serve`'s webhook receiver in-process, SQLite in a
//! temporary directory, the same engine the workers use. Each customer gets the sale on their
//! channel (the rich template on WhatsApp; the SMS version for those who prefer SMS and, as
//! fallback, for those not on WhatsApp), readers order, herald's clock jumps 24 h and readers
//! who did not order get the 10 % follow-up; then a summary per channel.

mod customers;
mod optin;
mod summary;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use clap::Args;
use tokio_util::sync::CancellationToken;

use crate::app::EngineSetup;
use crate::channel::sms::SmsRoute;
use crate::domain::conversion::ConversionValue;
use crate::domain::{
    CampaignId, Category, Clock, Conversion, IdempotencyKey, Job, PhoneNumber, SenderId,
};
use crate::engine::{JobRun, Progress, RunControl, is_follow_up_key};
use crate::graph::{GraphClient, GraphConfig};
use crate::http::{OptOutWords, ServeConfig, WebhookConfig};
use crate::policy::cost::RateCard;
use crate::simulator::{self, SimConfig, SimNumber, SimTemplate, SmscConfig};
use crate::store::{self, Sender, Store, Template};
use customers::{Persona, customer, orders};

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
    /// Share of customers who open the WhatsApp message (0..=1).
    #[arg(long, default_value_t = 0.6)]
    pub read_share: f64,
    /// Percent of readers (and of SMS customers) who order within the day.
    #[arg(long, default_value_t = 15)]
    pub order_percent: u64,
    /// The SMS route's messages per second.
    #[arg(long, default_value_t = 200)]
    pub sms_tps: u32,
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
const APP_SECRET: &str = "demo-app-secret";
/// Percent of those who got the follow-up and order after it.
const ORDER_AFTER_FOLLOW_UP_PERCENT: u64 = 12;
/// The business number's display number (the poster's `wa.me` link).
const DISPLAY_NUMBER: &str = "+49 30 901820";
/// Customers who opt in by keyword in the click-to-chat scene.
const OPT_IN_WALK_INS: usize = 40;

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        (1..=crate::domain::job::MAX_RECIPIENTS).contains(&args.recipients),
        "--recipients must be between 1 and 10000"
    );
    anyhow::ensure!(args.rate > 0, "--rate must be at least 1");
    anyhow::ensure!(args.sms_tps > 0, "--sms-tps must be at least 1");
    anyhow::ensure!(
        (0.0..=1.0).contains(&args.read_share),
        "--read-share must be between 0 and 1"
    );
    anyhow::ensure!(
        args.order_percent <= 100,
        "--order-percent must be at most 100"
    );
    let total_start = Instant::now();
    let customers: Vec<(String, Persona)> = (0..args.recipients).map(customer).collect();

    // 1. The embedded store and `herald serve`'s webhook receiver, in this process, on
    //    herald's clock (moved 24 h forward later).
    let clock = Clock::system();
    let tmp = tempfile::tempdir()?;
    let db_path = args
        .database
        .clone()
        .unwrap_or_else(|| tmp.path().join("herald-demo.db"));
    let store = store::open(&format!("sqlite://{}?mode=rwc", db_path.display())).await?;
    let stop = CancellationToken::new();
    let webhooks = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let webhook_url = format!("http://{}/webhooks", webhooks.local_addr()?);
    let serve = tokio::spawn(crate::http::run(
        webhooks,
        Arc::clone(&store),
        ServeConfig {
            webhooks: WebhookConfig {
                app_secret: APP_SECRET.into(),
                verify_token: None,
                opt_out: OptOutWords::default(),
                clock: clock.clone(),
                rate_card: Arc::new(RateCard::builtin()),
                recipient_events: None,
            },
            admin_token: None,
            shutdown_delay: Duration::ZERO,
            drain: Duration::from_secs(2),
        },
        stop.clone(),
    ));

    // 2. A local Cloud API that knows the number and its templates, whose customers receive
    //    and read (an hour of theirs passes in a second), and an SMSC.
    let sim = simulator::spawn(sim_config(&args, &customers, webhook_url), local(0)).await?;
    let smpp = sim.smpp_addr().expect("the demo simulator runs an SMSC");

    // 3. Seed: the number, its approved templates, consents with proof, some opt-outs.
    seed(&store, &args, &customers).await?;

    // 4. The engine, with the SMS route, on the clock the demo moves 24 h forward later.
    let mut setup = EngineSetup::new(RateCard::builtin());
    setup.config.clock = clock.clone();
    setup.sms_route = Some(
        SmsRoute::parse(&format!(
            "smpp://demo:demo@{smpp}?name=demo&tps={}",
            args.sms_tps
        ))
        .map_err(anyhow::Error::msg)?,
    );
    let card = Arc::clone(&setup.rate_card);
    let graph = GraphClient::new(&GraphConfig {
        base_url: sim.url(),
        access_token: None,
        ..GraphConfig::default()
    })?;
    let engine = setup.build(Arc::clone(&store), graph);
    anyhow::ensure!(
        engine.wait_for_sms(Duration::from_secs(10)).await,
        "the simulated SMSC did not accept the bind"
    );
    let job = Arc::new(Job::parse(
        customers::flash_sale_job(&customers).to_string().as_bytes(),
    )?);
    let prefers_sms = customers
        .iter()
        .filter(|(_, p)| *p == Persona::PrefersSms)
        .count();

    println!(
        "herald demo — Acme Mode's sneaker flash sale to {} customers ({} prefer SMS)\n  \
         Cloud API simulator at {} ({} msg/s per number, {} ms latency), SMSC at {smpp} ({}/s), \
         SQLite at {}",
        args.recipients,
        prefers_sms,
        sim.url(),
        args.rate,
        args.latency_ms,
        args.sms_tps,
        db_path.display()
    );

    // 5. Send, with a progress bar: WhatsApp and SMS lanes, then the fallbacks due now.
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
    let campaign = CampaignId::parse(CAMPAIGN)?;

    // 6. The customers receive and read; the shop reports today's orders.
    let expected_reads = customers
        .iter()
        .filter(|(n, p)| *p == Persona::WhatsApp && sim_config_fates(&args).fate_of(n).read)
        .count() as u64;
    summary::wait_for_reads(&*store, &campaign, expected_reads, Duration::from_secs(30)).await?;
    let first_orders = shop_orders(&*store, &campaign, &clock, Stage::FirstDay, &args).await?;

    // 7. The same job again: idempotency keys make it a no-op.
    let again = engine
        .run_job(Arc::clone(&job), &RunControl::default())
        .await?;
    let again_sent = match &again {
        JobRun::Finished(r) => r.total("sent"),
        _ => 0,
    };

    // 8. 24 hours later (herald's clock jumps): readers who did not order get the reminder.
    clock.advance(Duration::from_secs(24 * 3600));
    let follow_started = Instant::now();
    let round = engine.fire_follow_ups(&ctl).await?;
    let follow_elapsed = follow_started.elapsed();
    let late_orders = shop_orders(&*store, &campaign, &clock, Stage::AfterFollowUp, &args).await?;

    // 9. What it all came to.
    let stats = sim.stats();
    summary::print(summary::Facts {
        store: &*store,
        card: &card,
        campaign: &campaign,
        report: &report,
        elapsed,
        follow_ups: &round,
        follow_elapsed,
        orders: (first_orders, late_orders),
        stats: &stats,
        rate: args.rate,
        again_sent,
        portfolio: PORTFOLIO,
    })
    .await?;
    println!(
        "\nDone in {:.1} s. To run it for real:\n  \
         export HERALD_ACCESS_TOKEN=…   # a system-user token of your WhatsApp Business Account\n  \
         export HERALD_SMS_URL=smpp://user:pass@smsc.example:2775   # your SMS provider\n  \
         herald senders add --id <phone_number_id> --account <waba_id> --portfolio <portfolio_id>\n  \
         herald senders sync && herald templates sync\n  \
         herald consent import consents.csv      # phone,category,channel,granted_at,source,proof\n  \
         herald estimate job.json && herald send job.json\n  \
         herald serve                            # webhooks, conversions, follow-ups when due\n  \
         herald conversions import orders.csv && herald follow-ups status {CAMPAIGN}\n  \
         herald report {CAMPAIGN} > outcomes.csv\n\
         At scale: `herald worker` on RabbitMQ + Postgres (see README).",
        total_start.elapsed().as_secs_f64()
    );
    // 10. Click-to-chat: walk-in customers scan the store's poster and write the keyword.
    let scene = optin::play(
        &*store,
        &engine,
        &sim,
        SENDER,
        DISPLAY_NUMBER,
        OPT_IN_WALK_INS,
    )
    .await?;
    println!(
        "\nClick-to-chat opt-in (poster link {}):\n  \
         {} walk-in customers wrote SNEAKERS ({} webhooks: Meta redelivers) → {} WhatsApp \
         consents with proof (message id, time, text, poster), {} confirmations — once each, \
         inside the 24 h window they opened, free",
        scene.link, scene.wrote, scene.webhooks, scene.consents, scene.confirmations
    );
    stop.cancel();
    let _ = serve.await;
    sim.shutdown().await;
    Ok(())
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// The simulator's customers: who receives and who reads (the same on every run).
fn sim_config_fates(args: &DemoArgs) -> SimConfig {
    SimConfig {
        delivered_share: 0.98,
        read_share: args.read_share,
        // An hour of the customers' time passes in a second of the demo's.
        delivered_delay: Duration::from_secs(60),
        read_delay: Duration::from_secs(30 * 60),
        speed: 3600.0,
        ..SimConfig::default()
    }
}

fn sim_config(args: &DemoArgs, customers: &[(String, Persona)], webhook_url: String) -> SimConfig {
    let template = |name: &str| SimTemplate {
        account_id: Some(ACCOUNT.into()),
        ..SimTemplate::approved(name, "de", Category::Marketing)
    };
    SimConfig {
        rate_per_sec: args.rate,
        latency: Duration::from_millis(args.latency_ms),
        latency_jitter: Duration::from_millis(args.latency_ms / 2),
        undeliverable: customers
            .iter()
            .filter(|(_, p)| *p == Persona::NotOnWhatsApp)
            .map(|(n, _)| n.clone())
            .collect(),
        templates: vec![template("flash_sale"), template("flash_sale_reminder")],
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
        webhook_url: Some(webhook_url),
        app_secret: Some(APP_SECRET.into()),
        smsc: Some(SmscConfig {
            addr: local(0),
            system_id: "demo".into(),
            password: "demo".into(),
            receipt_delay: Duration::from_millis(200),
            ..SmscConfig::default()
        }),
        ..sim_config_fates(args)
    }
}

async fn seed(
    store: &Arc<dyn Store>,
    args: &DemoArgs,
    customers: &[(String, Persona)],
) -> anyhow::Result<()> {
    store
        .upsert_sender(&Sender {
            id: SenderId::parse(SENDER)?,
            account_id: ACCOUNT.into(),
            portfolio_id: PORTFOLIO.into(),
            display_number: DISPLAY_NUMBER.into(),
            rate_per_sec: args.rate,
            tier_limit: Some(100_000),
            status: "CONNECTED".into(),
            status_reason: None,
        })
        .await?;
    for name in ["flash_sale", "flash_sale_reminder"] {
        store
            .upsert_template(&Template {
                account_id: ACCOUNT.into(),
                name: name.into(),
                language: "de".into(),
                category: Category::Marketing,
                status: "APPROVED".into(),
            })
            .await?;
    }
    let consents = customers::consents(customers, Utc::now() - chrono::Duration::days(30));
    for chunk in consents.chunks(2000) {
        store.grant_consents(chunk).await?;
    }
    for (n, p) in customers {
        if *p == Persona::OptedOut {
            store
                .revoke_consent(
                    &PhoneNumber::from_trusted(n.clone()),
                    Some(Category::Marketing),
                    None,
                    Utc::now(),
                    "inbound:STOP",
                )
                .await?;
        }
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Within the first day: readers (and SMS customers) order.
    FirstDay,
    /// After the reminder: some of those who got it order.
    AfterFollowUp,
}

/// The shop: reports orders as conversion events, as a shop system would (here through the
/// store call the three ingestion paths share). Returns how many it reported.
async fn shop_orders(
    store: &dyn Store,
    campaign: &CampaignId,
    clock: &Clock,
    stage: Stage,
    args: &DemoArgs,
) -> anyhow::Result<u64> {
    let mut events = Vec::new();
    let mut after: Option<IdempotencyKey> = None;
    loop {
        let page = store.ledger_page(campaign, after.as_ref(), 5000).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.key.clone());
        for row in &page {
            let key = row.key.as_str();
            let buys = match stage {
                Stage::FirstDay => {
                    !is_follow_up_key(key)
                        && (row.delivery.as_deref() == Some("read")
                            || (row.channel == crate::domain::ChannelKind::Sms
                                && row.delivery.as_deref() == Some("delivered")))
                        && orders(key, "first-day", args.order_percent)
                }
                Stage::AfterFollowUp => {
                    is_follow_up_key(key)
                        && row.state == "sent"
                        && orders(key, "after-follow-up", ORDER_AFTER_FOLLOW_UP_PERCENT)
                }
            };
            if !buys {
                continue;
            }
            let main = key
                .strip_suffix(crate::engine::FOLLOW_UP_SUFFIX)
                .or_else(|| key.strip_suffix(crate::engine::SMS_SUFFIX))
                .unwrap_or(key);
            let tag = match stage {
                Stage::FirstDay => "order",
                Stage::AfterFollowUp => "order-after-reminder",
            };
            events.push(Conversion {
                // One order per customer and stage: a rerun reports the same events.
                event_id: format!("{tag}-{main}"),
                campaign: campaign.clone(),
                to: None,
                key: Some(IdempotencyKey::from_trusted(main.to_owned())),
                event: "order".into(),
                at: clock.now(),
                value: Some(ConversionValue {
                    amount_micros: 89_900_000,
                    currency: "EUR".into(),
                }),
            });
        }
    }
    let mut stored = 0;
    for chunk in events.chunks(1000) {
        stored += store.record_conversions(chunk).await?.stored;
    }
    Ok(stored)
}
