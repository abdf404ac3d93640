//! `herald follow-ups run` fires the follow-ups that are due once and exits — what every
//! worker and `herald serve` do each second, for small teams on the embedded store (cron it).
//! `herald follow-ups status CAMPAIGN` counts them: scheduled, due, sent, and those that
//! ended without a message, by reason.

use std::time::Duration;

use clap::{Args, Subcommand};

use super::parse::campaign_id;
use crate::app::{CliError, EngineOpts, GlobalOpts};
use crate::engine::{FOLLOW_UP_TIMER, RunControl};

#[derive(Subcommand, Debug)]
pub enum FollowUpsCmd {
    /// Fire the follow-ups that are due now and exit (cron-able; workers and `herald serve`
    /// do it every second).
    Run(RunArgs),
    /// A campaign's follow-ups: scheduled, due, sent, and suppressed by reason.
    Status { campaign: String },
}

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub engine: EngineOpts,
    /// How long this run's claim on a due follow-up (and on its key) lasts without renewal.
    /// A run killed mid-way leaves its follow-ups to the next run this much later; a live
    /// run renews its claims every quarter of it.
    #[arg(long, env = "HERALD_LEASE_SECONDS", default_value_t = 10)]
    pub lease_seconds: u64,
}

pub async fn follow_ups(g: &GlobalOpts, cmd: FollowUpsCmd) -> Result<(), CliError> {
    match cmd {
        FollowUpsCmd::Run(args) => run(g, args).await,
        FollowUpsCmd::Status { campaign } => status(g, &campaign).await,
    }
}

async fn run(g: &GlobalOpts, args: RunArgs) -> Result<(), CliError> {
    if !(3..=3600).contains(&args.lease_seconds) {
        return Err(CliError::Usage(format!(
            "--lease-seconds must be between 3 and 3600, got {}",
            args.lease_seconds
        )));
    }
    let mut setup = args.engine.setup()?;
    setup.config.lease = Duration::from_secs(args.lease_seconds);
    let graph = g.graph_client()?;
    let store = g.open_store().await?;
    let engine = setup.build(store, graph);
    if let Some(route) = &setup.sms_route
        && !engine.wait_for_sms(Duration::from_secs(10)).await
    {
        // WhatsApp follow-ups can still go; SMS ones wait for the next run.
        eprintln!(
            "warning: SMS route {} did not bind within 10 s; SMS follow-ups stay due",
            route.name
        );
    }
    let ctl = RunControl {
        shutdown: crate::signal::cancel_on_shutdown_signal(None),
        progress: None,
    };
    let round = engine
        .fire_follow_ups(&ctl)
        .await
        .map_err(|e| CliError::runtime(format!("firing follow-ups: {e}")))?;
    println!(
        "follow-ups: {} sent, {} ended without a message, {} for later",
        round.sent, round.skipped, round.later
    );
    for (label, n) in &round.outcomes {
        println!("  {label:<28} {n:>8}");
    }
    Ok(())
}

async fn status(g: &GlobalOpts, campaign: &str) -> Result<(), CliError> {
    let id = campaign_id(campaign)?;
    let store = g.open_store().await?;
    if store.campaign(&id).await?.is_none() {
        return Err(CliError::Usage(format!("no campaign '{id}' in the store")));
    }
    let timers = store
        .timer_counts(FOLLOW_UP_TIMER, id.as_str(), chrono::Utc::now())
        .await?;
    let cells = store.campaign_funnel(&id).await?;
    let follow_ups = cells.iter().filter(|c| c.role == "follow_up");
    let mut by: std::collections::BTreeMap<String, u64> = Default::default();
    for c in follow_ups {
        let label = match (c.state.as_str(), c.delivery.as_str()) {
            ("skipped", _) => format!("suppressed:{}", c.reason),
            ("failed", _) => format!("failed:{}", c.reason),
            ("sent", "") => format!("sent ({})", c.channel.as_str()),
            ("sent", d) => format!("sent ({}), {d}", c.channel.as_str()),
            (s, _) => s.to_owned(),
        };
        *by.entry(label).or_default() += c.n;
    }
    println!("follow-ups of campaign {id}");
    println!("  {:<36} {:>8}", "scheduled (due later)", timers.scheduled);
    println!("  {:<36} {:>8}", "due now (next timer round)", timers.due);
    for (label, n) in &by {
        println!("  {label:<36} {n:>8}");
    }
    Ok(())
}
