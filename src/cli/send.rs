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
use crate::domain::{ChannelKind, ConsentState, Job};
use crate::engine::{JobRun, Progress, RunControl};
use crate::policy::cost::{CostTally, WhatsAppMessage, format_micros};
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
    let engine = setup.build(store, graph);
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
    let mut tally = CostTally::default();
    let mut no_consent = 0u64;
    let (mut by_whatsapp, mut by_sms) = (0u64, 0u64);
    let (mut sessions, mut window_closed, mut free) = (0u64, 0u64, 0u64);
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
        if r.channel == ChannelKind::Sms {
            by_sms += 1;
            let market = format!("{}-sms", card.market(&r.to));
            tally.add_priced(category, &market, card.sms_micros(&r.to, &text()));
        } else {
            let state = window::state(w.as_ref(), now);
            let message = match window::choose(job.session.is_some(), job.template.is_some(), state)
            {
                Choice::WindowClosed => {
                    window_closed += 1;
                    continue;
                }
                Choice::Session => {
                    sessions += 1;
                    WhatsAppMessage::Session
                }
                Choice::Template => WhatsAppMessage::Template,
            };
            by_whatsapp += 1;
            let session = message == WhatsAppMessage::Session;
            if card.is_free(session, category, &r.to, state) {
                free += 1;
            } else if session {
                let market = card.market(&r.to).to_owned();
                tally.add_priced(
                    category,
                    &market,
                    card.whatsapp_micros(message, category, &r.to, state),
                );
            } else {
                tally.add(&card, category, &r.to);
            }
            if job.fallback.is_some() {
                fallback_max += card.sms_micros(&r.to, &text());
            }
        }
    }
    let sendable = job.recipients.len() as u64 - no_consent - window_closed;
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
        "estimated cost: {} ({}; list prices per delivered message, SMS per part)",
        format_micros(tally.total_micros(), &card.currency),
        card.name
    );
    for ((cat, market), (n, micros)) in &tally.by_category_market {
        let channel = if market.ends_with("-sms") {
            "sms"
        } else {
            "whatsapp"
        };
        println!(
            "  {channel:<9} {cat:<14} {:<6} {n:>8} × {} = {}",
            market.trim_end_matches("-sms"),
            format_micros(*micros / (*n).max(1), &card.currency),
            format_micros(*micros, &card.currency)
        );
    }
    if tally.unpriced > 0 {
        println!(
            "  {} message(s) to markets the rate card does not price",
            tally.unpriced
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
            format_micros(fallback_max, &card.currency)
        );
    }
    match &sender {
        Some(s) => {
            let rate = f64::from(s.rate_per_sec) * args.pacing.headroom;
            let secs = sendable as f64 / rate;
            println!(
                "duration: ≈ {:.0?} at {rate:.1} msg/s ({} msg/s × headroom {})",
                Duration::from_secs_f64(secs),
                s.rate_per_sec,
                args.pacing.headroom
            );
            if let Some(limit) = s.tier_limit {
                let used = store
                    .tier_usage(&s.portfolio_id, Duration::from_secs(24 * 3600))
                    .await?;
                let left = u64::from(limit).saturating_sub(used);
                println!(
                    "tier: {used} of {limit} unique users used in the last 24 h; {left} left{}",
                    if sendable > left {
                        format!(" — {} recipient(s) will wait for budget", sendable - left)
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
}
