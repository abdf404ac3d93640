//! `herald fallbacks run`: fires the WhatsApp → SMS fallbacks that are due (deadlines of
//! `undelivered_after`, failures a status webhook reported) once and exits — what every worker
//! does each second, for small teams on the embedded store (cron it, or keep a worker up).

use std::time::Duration;

use clap::{Args, Subcommand};

use crate::app::{CliError, EngineOpts, GlobalOpts};
use crate::engine::RunControl;

#[derive(Subcommand, Debug)]
pub enum FallbacksCmd {
    /// Fire the fallbacks that are due now and exit (needs HERALD_SMS_URL).
    Run(RunArgs),
}

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub engine: EngineOpts,
}

pub async fn fallbacks(g: &GlobalOpts, cmd: FallbacksCmd) -> Result<(), CliError> {
    match cmd {
        FallbacksCmd::Run(args) => run(g, args).await,
    }
}

async fn run(g: &GlobalOpts, args: RunArgs) -> Result<(), CliError> {
    let setup = args.engine.setup()?;
    let Some(route) = setup.sms_route.clone() else {
        return Err(CliError::Usage(
            "no SMS route: set HERALD_SMS_URL (fallbacks go out by SMS)".into(),
        ));
    };
    let graph = g.graph_client()?;
    let store = g.open_store().await?;
    let engine = setup.build(store, graph);
    if !engine.wait_for_sms(Duration::from_secs(10)).await {
        return Err(CliError::runtime(format!(
            "SMS route {} did not bind within 10 s; nothing fired (the fallbacks stay due)",
            route.name
        )));
    }
    let ctl = RunControl {
        shutdown: crate::signal::cancel_on_shutdown_signal(None),
        progress: None,
    };
    let round = engine
        .fire_fallbacks(&ctl)
        .await
        .map_err(|e| CliError::runtime(format!("firing fallbacks: {e}")))?;
    println!(
        "fallbacks: {} sent by SMS, {} ended without one (delivered first, not triggered, cancelled), {} for later",
        round.sent, round.dropped, round.later
    );
    Ok(())
}
