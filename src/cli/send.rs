//! `herald send` (one job file, no RabbitMQ) and `herald estimate` (its cost and duration
//! before sending).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use clap::Args;

use crate::app::{
    CliError, EngineOpts, GlobalOpts, PacingOpts, RateCardOpts, SmsOpts, progress_bar,
};
use crate::domain::{Category, ChannelKind, ConsentState, Job};
use crate::engine::{JobRun, Progress, RunControl};
use crate::policy::cost::{WhatsAppMessage, format_micros};
use crate::policy::gate::DeferReason;
use crate::policy::segments::{self, Encoding};
use crate::policy::window::{self, Choice};

#[derive(Args, Debug)]
pub struct SendArgs {
    /// The job file (JSON, format v1: see schema/job-v1.schema.json).
    pub file: PathBuf,
    #[command(flatten)]
    pub engine: EngineOpts,
    /// Do not wait for the job's `not_before`; exit instead.
    #[arg(long)]
    pub no_wait: bool,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Args, Debug)]
pub struct EstimateArgs {
    /// The job file.
    pub file: PathBuf,
    #[command(flatten)]
    pub rate_card: RateCardOpts,
    #[command(flatten)]
    pub pacing: PacingOpts,
    #[command(flatten)]
    pub sms: SmsOpts,
    /// Templates of the job's category the portfolio already sent this calendar month to each
    /// market the job reaches: where the job starts in the volume tiers (utility,
    /// authentication).
    #[arg(long, default_value_t = 0)]
    pub month_to_date: u64,
}

pub(crate) fn read_job(path: &PathBuf) -> Result<Job, CliError> {
    let body = std::fs::read(path)
        .map_err(|e| CliError::Usage(format!("cannot read job file {}: {e}", path.display())))?;
    Job::parse(&body).map_err(|e| CliError::Usage(format!("invalid job {}: {e}", path.display())))
}

pub async fn send(g: &GlobalOpts, args: SendArgs) -> Result<(), CliError> {
    args.engine.check()?;
    let job = Arc::new(read_job(&args.file)?);
    let mut setup = args.engine.setup()?;
    // One process with SQLite: nobody else can take keys over, and a CLI run may wait for a
    // pair-limit delay rather than exit.
    setup.config.inline_delay_limit = Duration::from_secs(300);
    let card = Arc::clone(&setup.rate_card);
    let graph = g.graph_client()?;
    let store = g.open_store().await?;
    // Held while the run lasts: with it, no other `herald send` sends from this database.
    let _sending_lock = match lock_embedded_sending(&g.database_url) {
        Some(lock) => {
            let freed = store.end_abandoned_leases().await?;
            if freed > 0 {
                eprintln!(
                    "taking over {freed} recipient(s) an earlier run left unfinished (those it may have sent become `unknown`)"
                );
            }
            Some(lock)
        }
        None => None,
    };
    let engine = setup.build(Arc::clone(&store), graph);
    let progress = Arc::new(Progress::default());
    let ctl = RunControl {
        shutdown: crate::signal::cancel_on_shutdown_signal(Some(crate::signal::HANDING_BACK)),
        progress: Some(Arc::clone(&progress)),
    };
    let bar = progress_bar(Arc::clone(&progress), args.quiet);
    let outcome = loop {
        let run = engine
            .run_job(Arc::clone(&job), &ctl)
            .await
            .map_err(|e| CliError::runtime(format!("job {}: {e}", job.id)))?;
        match run {
            JobRun::Deferred(DeferReason::NotBefore(at)) if !args.no_wait => {
                let wait = (at - Utc::now()).to_std().unwrap_or_default();
                eprintln!(
                    "job {} starts at {} — waiting {:.0?}",
                    job.id,
                    at.to_rfc3339(),
                    wait
                );
                tokio::select! {
                    _ = tokio::time::sleep(wait) => continue,
                    _ = ctl.shutdown.cancelled() => return Err(CliError::runtime("interrupted while waiting for not_before")),
                }
            }
            other => break other,
        }
    };
    if let Some((bar, task)) = bar {
        task.abort();
        bar.finish_and_clear();
    }
    // Every outcome is written (the run ended); the engine's timers and tasks hold the store
    // no longer than the run.
    drop(engine);
    let _ = tokio::time::timeout(Duration::from_secs(5), store.close()).await;
    match outcome {
        JobRun::Rejected(reason) => Err(CliError::Usage(format!(
            "job {} rejected: {reason}",
            job.id
        ))),
        JobRun::Deferred(reason) => Err(CliError::runtime(format!(
            "job {} not sent: {reason}. Nothing was sent; run the same command again when that changes{}",
            job.id,
            match reason {
                DeferReason::CampaignPaused =>
                    format!(" (`herald campaign resume {}`)", job.campaign),
                _ => String::new(),
            }
        ))),
        JobRun::Finished(report) => {
            print!("{}", report.summary(&card.currency));
            if report.is_complete() {
                Ok(())
            } else {
                let mut msg = format!(
                    "{} recipient(s) of job {} are not sent yet",
                    report.remaining + report.held_elsewhere,
                    job.id
                );
                if report.held_elsewhere > 0 {
                    msg.push_str(&format!(
                        " ({} held by another herald process sending from this database; run the same command again when it has finished)",
                        report.held_elsewhere
                    ));
                }
                if let Some(cause) = &report.stop {
                    msg.push_str(&format!(" ({cause})"));
                }
                if let Some(err) = &report.last_error {
                    msg.push_str(&format!("; last error: {err}"));
                }
                if let Some(at) = report.resume_after {
                    msg.push_str(&format!(
                        ". They are kept; run the same command again (after {}) to send only those",
                        at.format("%Y-%m-%d %H:%M:%S UTC")
                    ));
                }
                Err(CliError::runtime(msg))
            }
        }
    }
}

/// With SQLite one process owns sending: `herald send` takes an advisory lock beside the
/// database file. Holding it proves that keys still leased in the ledger belong to a run that
/// died (crash, `kill -9`), so they are taken over now instead of after their lease. `None`
/// for other stores, an in-memory database, or when another `herald send` holds the lock
/// (then leases decide, as between workers).
fn lock_embedded_sending(database_url: &str) -> Option<std::fs::File> {
    let rest = database_url
        .strip_prefix("sqlite://")
        .or_else(|| database_url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or_default();
    if path.is_empty() || path.starts_with(":memory:") {
        return None;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(format!("{path}.send-lock"))
        .ok()?;
    file.try_lock().ok()?;
    Some(file)
}

pub async fn estimate(g: &GlobalOpts, args: EstimateArgs) -> Result<(), CliError> {
    args.pacing.check()?;
    args.sms.check()?;
    let job = read_job(&args.file)?;
    let card = args.rate_card.load()?;
    let store = g.open_store().await?;
    let sender = store.sender(&job.sender).await?;
    let category = match (&sender, &job.template) {
        (Some(s), Some(t)) => store
            .template(&s.account_id, &t.name, &t.language)
            .await?
            .map(|t| t.category)
            .unwrap_or(job.category),
        _ => job.category,
    };
    // The customer-service windows now: open → the session message (free or cheaper),
    // closed → the template, or skipped for a session message alone.
    let mut windows = vec![None; job.recipients.len()];
    for (chunk_no, chunk) in job.recipients.chunks(1000).enumerate() {
        let phones: Vec<_> = chunk.iter().map(|r| r.to.clone()).collect();
        let found = store.service_windows(&job.sender, &phones).await?;
        for (i, w) in found.into_iter().enumerate() {
            windows[chunk_no * 1000 + i] = w;
        }
    }
    let now = Utc::now();
    // Each recipient's consent on the channel they prefer: SMS needs its own (UWG §7(2)).
    let mut consents = vec![ConsentState::Missing; job.recipients.len()];
    for channel in [ChannelKind::WhatsApp, ChannelKind::Sms] {
        let on: Vec<usize> = (0..job.recipients.len())
            .filter(|&i| job.recipients[i].channel == channel)
            .collect();
        for chunk in on.chunks(1000) {
            let phones: Vec<_> = chunk
                .iter()
                .map(|&i| job.recipients[i].to.clone())
                .collect();
            let states = store.consent_states(category, channel, &phones).await?;
            for (&i, state) in chunk.iter().zip(states) {
                consents[i] = state;
            }
        }
    }
    let card_file = card;
    // The version in force now: what the gate will commit if the job is sent now.
    let card = card_file.at(now);
    let budgeted = store
        .campaign(&job.campaign)
        .await?
        .is_some_and(|c| c.budget.is_some());
    let mut lines = CostLines::default();
    let mut no_consent = 0u64;
    let (mut by_whatsapp, mut by_sms) = (0u64, 0u64);
    let (mut sessions, mut window_closed, mut free) = (0u64, 0u64, 0u64);
    let (mut unsupported, mut unpriced) = (0u64, 0u64);
    // Unpriced templates sent anyway (no budget): they take tier room all the same.
    let mut unpriced_templates = 0u64;
    // Templates per market index: priced after the loop, through the volume tiers.
    let mut templates: std::collections::BTreeMap<usize, u64> = Default::default();
    // What the SMS fallback would add if every WhatsApp recipient fell back.
    let mut fallback_max = 0u64;
    for ((r, state), w) in job.recipients.iter().zip(&consents).zip(&windows) {
        if crate::policy::gate::recipient_verdict(*state).is_some() {
            no_consent += 1;
            continue;
        }
        let text = || {
            job.sms
                .as_ref()
                .map(|s| s.render(r.vars.as_deref()))
                .unwrap_or_default()
        };
        let market = card.market(&r.to).to_owned();
        if r.channel == ChannelKind::Sms {
            match card.sms_part_micros(&r.to) {
                Some(_) => lines.add("sms", &market, card.sms_micros(&r.to, &text())),
                None => {
                    unpriced += 1;
                    if budgeted {
                        continue;
                    }
                }
            }
            by_sms += 1;
            continue;
        }
        let state = window::state(w.as_ref(), now);
        let message = match window::choose(job.session.is_some(), job.template.is_some(), state) {
            Choice::WindowClosed => {
                window_closed += 1;
                continue;
            }
            Choice::Session => WhatsAppMessage::Session,
            Choice::Template => WhatsAppMessage::Template,
        };
        let session = message == WhatsAppMessage::Session;
        if !session && card.refuses(category, &r.to) {
            unsupported += 1;
            continue;
        }
        by_whatsapp += 1;
        if session {
            sessions += 1;
        }
        if card.is_free(session, category, &r.to, state) {
            free += 1;
        } else if session {
            let micros = card.whatsapp_micros(message, category, &r.to, state);
            lines.add("whatsapp", &market, micros);
        } else {
            match card.markets().iter().position(|m| m.id == market) {
                Some(i) if card.markets()[i].list_micros(category).is_some() => {
                    *templates.entry(i).or_default() += 1;
                }
                _ => {
                    unpriced += 1;
                    if budgeted {
                        // Skipped unpriced_market: not sent, no tier room, no fallback.
                        by_whatsapp -= 1;
                        continue;
                    }
                    unpriced_templates += 1;
                }
            }
        }
        if job.fallback.is_some() {
            fallback_max += card.sms_micros(&r.to, &text());
        }
    }
    // Templates: the list price per market, and what the month's volume tiers take off.
    let mut tier_savings = 0u64;
    for (&i, &n) in &templates {
        let m = &card.markets()[i];
        let list = m.list_micros(category).unwrap_or(0);
        let tiered = card
            .market_volume_micros(category, m, args.month_to_date, n)
            .unwrap_or(0);
        tier_savings += (list * n).saturating_sub(tiered);
        lines.add_many("whatsapp", &m.id, n, list, tiered);
    }
    let template_count: u64 = templates.values().sum::<u64>() + unpriced_templates;
    let skipped_unpriced = if budgeted { unpriced } else { 0 };
    let sendable =
        job.recipients.len() as u64 - no_consent - window_closed - unsupported - skipped_unpriced;
    let cur = &card.currency;
    println!(
        "job {} ({} / {} / {category})",
        job.id,
        job.campaign,
        job.message_name().0
    );
    println!(
        "recipients: {} in job, {} sendable ({by_whatsapp} by WhatsApp, {by_sms} by SMS), {} without consent or opted out, {} skipped at parse (invalid or duplicate)",
        job.key_count(),
        sendable,
        no_consent,
        job.skipped.len()
    );
    println!(
        "estimated cost: {} ({}, version {}; list prices per delivered message less volume tiers, SMS per part)",
        format_micros(lines.total(), cur),
        card.name,
        card.effective_from
            .map_or("undated".to_owned(), |t| t.format("%Y-%m-%d").to_string())
    );
    for line in lines.render(category, cur) {
        println!("{line}");
    }
    if tier_savings > 0 || matches!(category, Category::Utility | Category::Authentication) {
        println!(
            "  volume tiers ({category}, per portfolio, market and month; {} already sent this month to each market, --month-to-date): {} off list prices",
            args.month_to_date,
            format_micros(tier_savings, cur)
        );
    }
    if category == Category::Authentication {
        let intl: Vec<String> = card
            .markets()
            .iter()
            .enumerate()
            .filter_map(|(i, m)| {
                let n = *templates.get(&i)?;
                let p = m.authentication_international?;
                Some(format!("{} {n} × {}", m.id, format_micros(p, cur)))
            })
            .collect();
        if !intl.is_empty() {
            println!(
                "  authentication-international: a business based outside these markets pays {} instead",
                intl.join(", ")
            );
        }
    }
    if unsupported > 0 {
        println!(
            "  {unsupported} {category} template(s) to markets Meta does not deliver them to (US: 131049): skipped unsupported_market, not sent"
        );
    }
    if unpriced > 0 {
        println!(
            "  {unpriced} message(s) to markets the rate card does not price: {}",
            if budgeted {
                "skipped unpriced_market (the campaign has a budget)"
            } else {
                "sent and counted unpriced (the campaign has no budget)"
            }
        );
    }
    if job.session.is_some() || free > 0 {
        println!(
            "customer-service window: {sessions} session message(s) to open windows, {free} free message(s) (open window or free entry point), {window_closed} skipped window_closed"
        );
    }
    if job.fallback.is_some() {
        println!(
            "  fallback to SMS: up to {} more if every WhatsApp recipient fell back",
            format_micros(fallback_max, cur)
        );
    }
    match &sender {
        Some(s) => {
            let rate = f64::from(s.rate_per_sec) * args.pacing.headroom;
            let tier = match s.tier_limit {
                Some(limit) => Some((
                    limit,
                    store
                        .tier_usage(&s.portfolio_id, Duration::from_secs(24 * 3600))
                        .await?,
                )),
                None => None,
            };
            let d = duration(sendable, template_count, rate, tier);
            println!(
                "duration: ≈ {} at {rate:.1} msg/s ({} msg/s × headroom {}){}",
                humantime::format_duration(round_secs(d.total)),
                s.rate_per_sec,
                args.pacing.headroom,
                if d.waiting > 0 {
                    format!(
                        ", of which {} waiting for the 24 h tier window to roll {} time(s)",
                        humantime::format_duration(round_secs(d.tier_wait)),
                        d.rolls
                    )
                } else {
                    String::new()
                }
            );
            if let Some((limit, used)) = tier {
                let left = u64::from(limit).saturating_sub(used);
                println!(
                    "tier: {used} of {limit} unique users used in the last 24 h; {left} left{}",
                    if d.waiting > 0 {
                        format!(
                            " — {} template(s) now, the other {} wait for the tier window (up to {} more: {limit} a day; sooner as the last 24 h's sends age out)",
                            template_count - d.waiting,
                            d.waiting,
                            humantime::format_duration(round_secs(d.tier_wait))
                        )
                    } else {
                        String::new()
                    }
                );
            }
        }
        None => println!(
            "duration: unknown — sender {} is not registered (`herald senders add`)",
            job.sender
        ),
    }
    for line in sms_lines(&job, args.sms.sms_max_parts) {
        println!("{line}");
    }
    if job.needs_sms() && args.sms.route()?.is_none() {
        println!(
            "  no SMS route is configured (HERALD_SMS_URL): the job would be refused (sms_unavailable)"
        );
    }
    Ok(())
}

/// The estimate's cost lines: per channel and market, messages, list and priced amounts, and
/// the range of unit prices (SMS parts and tiers make them differ).
#[derive(Debug, Default)]
struct CostLines {
    by: std::collections::BTreeMap<(&'static str, String), CostLine>,
}

#[derive(Debug, Default, Clone, Copy)]
struct CostLine {
    n: u64,
    /// What the messages cost at list prices.
    list: u64,
    /// What they cost after volume tiers.
    micros: u64,
    min_unit: Option<u64>,
    max_unit: u64,
}

impl CostLines {
    /// One message at `micros`.
    fn add(&mut self, channel: &'static str, market: &str, micros: u64) {
        self.add_many(channel, market, 1, micros, micros);
    }

    /// `n` messages at the list price `unit`, `micros` in all after tiers.
    fn add_many(&mut self, channel: &'static str, market: &str, n: u64, unit: u64, micros: u64) {
        if n == 0 {
            return;
        }
        let l = self.by.entry((channel, market.to_owned())).or_default();
        l.n += n;
        l.list += unit * n;
        l.micros += micros;
        l.min_unit = Some(l.min_unit.map_or(unit, |m| m.min(unit)));
        l.max_unit = l.max_unit.max(unit);
    }

    fn total(&self) -> u64 {
        self.by.values().map(|l| l.micros).sum()
    }

    /// One line per channel and market (`n × unit = amount`, tiers when they take something
    /// off), then one per channel.
    fn render(&self, category: Category, currency: &str) -> Vec<String> {
        let money = |m| format_micros(m, currency);
        let mut out = Vec::new();
        let mut per_channel: std::collections::BTreeMap<&str, (u64, u64)> = Default::default();
        for ((channel, market), l) in &self.by {
            let min = l.min_unit.unwrap_or(0);
            let unit = if min == l.max_unit {
                money(min)
            } else {
                format!("{}–{}", money(min), money(l.max_unit))
            };
            let mut line = format!(
                // `as_str`: Category's Display ignores width.
                "  {channel:<9} {:<14} {market:<10} {:>8} × {unit} = {}",
                category.as_str(),
                l.n,
                money(l.list)
            );
            if l.micros < l.list {
                line.push_str(&format!(
                    " − volume tiers {} = {}",
                    money(l.list - l.micros),
                    money(l.micros)
                ));
            }
            out.push(line);
            let c = per_channel.entry(channel).or_default();
            c.0 += l.n;
            c.1 += l.micros;
        }
        for (channel, (n, micros)) in per_channel {
            out.push(format!(
                "  {channel}: {n} priced message(s), {}",
                money(micros)
            ));
        }
        out
    }
}

/// How long a job takes: its sends at `rate`, and the templates beyond the tier's headroom
/// (`limit` − `used` unique users in the last 24 h) waiting for the 24 h window to roll.
#[derive(Debug, PartialEq)]
struct JobDuration {
    total: Duration,
    /// Templates that cannot go before the tier window rolls.
    waiting: u64,
    /// How many 24 h windows they wait for (at most `limit` per window).
    rolls: u64,
    tier_wait: Duration,
}

fn duration(sendable: u64, templates: u64, rate: f64, tier: Option<(u32, u64)>) -> JobDuration {
    let sending = Duration::from_secs_f64(sendable as f64 / rate.max(f64::MIN_POSITIVE));
    let (waiting, rolls) = match tier {
        Some((limit, used)) => {
            let left = u64::from(limit).saturating_sub(used);
            let waiting = templates.saturating_sub(left);
            (waiting, waiting.div_ceil(u64::from(limit.max(1))))
        }
        None => (0, 0),
    };
    let tier_wait = Duration::from_secs(24 * 3600 * rolls);
    // After the last roll, only the last window's templates are left to send.
    let last = waiting - rolls.saturating_sub(1) * u64::from(tier.map_or(1, |t| t.0.max(1)));
    let after = Duration::from_secs_f64(last as f64 / rate.max(f64::MIN_POSITIVE));
    JobDuration {
        total: if rolls > 0 {
            sending.max(tier_wait + after)
        } else {
            sending
        },
        waiting,
        rolls,
        tier_wait,
    }
}

fn round_secs(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs_f64().round() as u64)
}

/// What the job's SMS version would cost in parts: who may get it, its encoding, and the
/// parts per recipient (texts differ by their `{{name}}` values).
fn sms_lines(job: &Job, max_parts: u32) -> Vec<String> {
    let Some(sms) = &job.sms else {
        return Vec::new();
    };
    let may_get =
        |r: &&crate::domain::Recipient| job.fallback.is_some() || r.channel == ChannelKind::Sms;
    let prefer = job
        .recipients
        .iter()
        .filter(|r| r.channel == ChannelKind::Sms)
        .count();
    let mut lines = vec![format!(
        "sms: {prefer} recipient(s) prefer SMS{}",
        match &job.fallback {
            Some(f) => format!(
                "; the others fall back to SMS on {}{}",
                f.when
                    .iter()
                    .map(|t| t.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                f.undelivered_after
                    .map(|d| format!(" (undelivered after {})", humantime::format_duration(d)))
                    .unwrap_or_default()
            ),
            None => String::new(),
        }
    )];
    let counts: Vec<_> = job
        .recipients
        .iter()
        .filter(may_get)
        .map(|r| segments::count(&sms.render(r.vars.as_deref())))
        .collect();
    if let (Some(min), Some(max)) = (
        counts.iter().map(|c| c.parts).min(),
        counts.iter().map(|c| c.parts).max(),
    ) {
        let ucs2 = counts
            .iter()
            .filter(|c| c.encoding == Encoding::Ucs2)
            .count();
        let parts = if min == max {
            format!("{max}")
        } else {
            format!("{min}–{max}")
        };
        lines.push(format!(
            "  text: {parts} part(s) per SMS, {} in all for {} recipient(s){}",
            counts.iter().map(|c| u64::from(c.parts)).sum::<u64>(),
            counts.len(),
            if ucs2 > 0 {
                format!(" — UCS-2 for {ucs2} (a character outside GSM-7: 70/67 per part)")
            } else {
                " (GSM-7)".to_owned()
            }
        ));
        if max > max_parts {
            lines.push(format!(
                "  a text takes {max} parts, more than --sms-max-parts {max_parts}: the job would be refused (sms_too_long)"
            ));
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(extra: serde_json::Value) -> Job {
        let mut v = serde_json::json!({
            "version": 1, "job_id": "j", "campaign_id": "c", "sender": "106540352242922",
            "template": { "name": "flash_sale", "language": "de", "category": "marketing" },
            "recipients": [
                { "to": "+4915112345678", "vars": { "name": "Anna" } },
                { "to": "+4917698765432", "channel": "sms", "vars": { "name": "Zoë 👟" } }
            ],
            "sms": { "from": "ACME", "text": "ACME: Sneaker -30 %, {{name}}" },
        });
        for (k, val) in extra.as_object().unwrap() {
            v[k] = val.clone();
        }
        Job::parse(v.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn the_estimate_counts_sms_parts_for_those_who_may_get_one() {
        let lines = sms_lines(&job(serde_json::json!({})), 3);
        assert_eq!(lines[0], "sms: 1 recipient(s) prefer SMS");
        // Only the SMS-preferring recipient, whose name needs UCS-2.
        assert!(
            lines[1].contains("1 in all for 1 recipient(s)"),
            "{lines:?}"
        );
        assert!(lines[1].contains("UCS-2 for 1"), "{lines:?}");
        assert_eq!(lines.len(), 2, "{lines:?}");

        let with_fallback = job(serde_json::json!({
            "fallback": { "when": ["not_on_whatsapp", "undelivered"], "undelivered_after": "PT30M" }
        }));
        let lines = sms_lines(&with_fallback, 3);
        assert_eq!(
            lines[0],
            "sms: 1 recipient(s) prefer SMS; the others fall back to SMS on not_on_whatsapp, undelivered (undelivered after 30m)"
        );
        assert!(
            lines[1].contains("2 in all for 2 recipient(s)"),
            "{lines:?}"
        );
    }

    #[test]
    fn a_job_without_sms_prints_nothing_about_it() {
        let plain = Job::parse(
            br#"{"version":1,"job_id":"j","campaign_id":"c","sender":"1",
                "template":{"name":"t","language":"de","category":"utility"},
                "recipients":[{"to":"+4915112345678"}]}"#,
        )
        .unwrap();
        assert!(sms_lines(&plain, 3).is_empty());
    }

    #[test]
    fn cost_lines_show_every_unit_price_and_what_tiers_take_off() {
        let mut lines = CostLines::default();
        lines.add_many("whatsapp", "IN", 2, 1_400, 2_730);
        lines.add("sms", "DE", 79_000);
        lines.add("sms", "DE", 158_000);
        let out = lines.render(Category::Utility, "USD");
        assert_eq!(
            out[0],
            "  sms       utility        DE                2 × 0.0790 USD–0.1580 USD = 0.2370 USD"
        );
        assert_eq!(
            out[1],
            "  whatsapp  utility        IN                2 × 0.0014 USD = 0.0028 USD − volume tiers 0.00007 USD = 0.00273 USD"
        );
        assert_eq!(out[2], "  sms: 2 priced message(s), 0.2370 USD");
        assert_eq!(lines.total(), 239_730);
    }

    #[test]
    fn templates_beyond_the_tier_headroom_wait_for_the_window_to_roll() {
        let day = Duration::from_secs(24 * 3600);
        // No tier: the rate alone.
        let d = duration(1_000, 1_000, 100.0, None);
        assert_eq!((d.total, d.waiting), (Duration::from_secs(10), 0));
        // 1,000 a day, 400 used: 600 now; 2,000 more wait for two rolls, the last with 1,000.
        let d = duration(2_600, 2_600, 100.0, Some((1_000, 400)));
        assert_eq!((d.waiting, d.rolls), (2_000, 2));
        assert_eq!(d.tier_wait, 2 * day);
        assert_eq!(d.total, 2 * day + Duration::from_secs(10));
        // Within the headroom: no wait.
        let d = duration(600, 600, 100.0, Some((1_000, 400)));
        assert_eq!(
            (d.waiting, d.rolls, d.total),
            (0, 0, Duration::from_secs(6))
        );
        // One over: one roll, then one message.
        let d = duration(601, 601, 100.0, Some((1_000, 400)));
        assert_eq!((d.waiting, d.rolls), (1, 1));
        assert_eq!(d.total, day + Duration::from_millis(10));
    }
}
