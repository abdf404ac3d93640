//! The `herald` command line (DESIGN §1.4). Every setting is a flag with an environment
//! variable; configuration is read here once and rejected early with a clear message.
//! Exit codes: 0 ok, 2 usage or configuration error, 1 runtime failure.
//!
//! The top of the crate: it wires each subcommand to its adapter (`amqp`, `http`, `demo`,
//! `simulator`) and nothing but `main` imports it. What adapters share with it (errors,
//! global settings) lives below, in `app`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod audit;
mod campaign;
mod consent;
mod contacts;
mod conversions;
mod fallbacks;
mod follow_ups;
mod optin;
mod parse;
mod purge;
mod ratecard;
mod send;
mod senders;
mod tokens;
mod worker;

use crate::app::{CliError, GlobalOpts};

#[derive(Parser, Debug)]
#[command(
    name = "herald",
    version,
    about = "High-throughput WhatsApp template dispatcher",
    long_about = "herald sends WhatsApp template campaigns through Meta's Cloud API: consent and \
template checks, pacing to each number's rate and the portfolio's tier, retries with idempotency \
keys, a durable ledger of every recipient's outcome, and Prometheus metrics."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalOpts,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a 10,000-recipient flash sale end to end on the embedded default (no services).
    Demo(crate::demo::DemoArgs),
    /// Run one job file against HERALD_GRAPH_URL with the configured store (no RabbitMQ).
    Send(send::SendArgs),
    /// Consume jobs from RabbitMQ (`{prefix}.jobs`) and send them; drains on SIGTERM.
    Worker(worker::WorkerCommand),
    /// Publish jobs to RabbitMQ from a job file or a CSV of recipients (publisher confirms).
    Enqueue(crate::amqp::EnqueueArgs),
    /// WhatsApp → SMS fallbacks: fire those that are due (workers do it every second).
    #[command(subcommand)]
    Fallbacks(fallbacks::FallbacksCmd),
    /// Follow-ups (`follow_up` in the job): fire those that are due, or count a campaign's.
    #[command(subcommand, name = "follow-ups")]
    FollowUps(follow_ups::FollowUpsCmd),
    /// Estimate cost and duration of a job file before sending it.
    Estimate(send::EstimateArgs),
    /// Run a local Cloud API simulator (tests, load tests, demos).
    Simulate(crate::simulator::SimulateArgs),
    /// Receive Meta's webhooks (statuses, opt-outs, template updates), serve the admin API,
    /// health probes and metrics; drains on SIGTERM.
    Serve(crate::http::ServeArgs),
    /// Apply database migrations and exit.
    Migrate,
    /// Business phone numbers that send.
    #[command(subcommand)]
    Senders(senders::SendersCmd),
    /// Message templates and their approval status.
    #[command(subcommand)]
    Templates(senders::TemplatesCmd),
    /// Opt-ins and opt-outs (GDPR: who agreed to what, when, where).
    #[command(subcommand)]
    Consent(consent::ConsentCmd),
    /// Pause, resume, cancel and inspect campaigns.
    #[command(subcommand)]
    Campaign(campaign::CampaignCmd),
    /// Write a campaign's per-recipient outcomes as CSV.
    Report(campaign::ReportArgs),
    /// Personal data of one contact: export it or erase it (GDPR Art. 15 / 17).
    #[command(subcommand)]
    Contacts(contacts::ContactsCmd),
    /// Conversion events (orders): import them from a CSV, show a campaign's.
    #[command(subcommand)]
    Conversions(conversions::ConversionsCmd),
    /// Click-to-chat opt-in: the wa.me link and QR code, and the keywords that record consent.
    #[command(subcommand)]
    Optin(optin::OptInCmd),
    /// Retention: delete personal data older than HERALD_RETENTION allows (`--dry-run` counts).
    Purge(purge::PurgeArgs),
    /// Rate cards: check one before trusting budgets to it.
    #[command(subcommand)]
    Ratecard(ratecard::RateCardCmd),
    /// Bearer tokens of the admin API, each with a role: create, list, revoke.
    #[command(subcommand)]
    Tokens(tokens::TokensCmd),
    /// The audit log of admin actions (API and command line), newest first.
    Audit(audit::AuditArgs),
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    crate::telemetry::logging::init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> Result<(), CliError> {
    let g = cli.global;
    match cli.command {
        Command::Demo(args) => crate::demo::run(args).await.map_err(CliError::Runtime),
        Command::Send(args) => send::send(&g, args).await,
        Command::Worker(args) => worker::worker_command(&g, args).await,
        Command::Enqueue(args) => crate::amqp::enqueue_command(args).await,
        Command::Estimate(args) => send::estimate(&g, args).await,
        Command::Fallbacks(cmd) => fallbacks::fallbacks(&g, cmd).await,
        Command::FollowUps(cmd) => follow_ups::follow_ups(&g, cmd).await,
        Command::Simulate(args) => crate::simulator::run(args).await,
        Command::Serve(args) => crate::http::serve_command(&g, args).await,
        Command::Migrate => {
            g.open_store().await?;
            println!("migrations applied to {}", g.database_url_redacted());
            Ok(())
        }
        Command::Senders(cmd) => senders::senders(&g, cmd).await,
        Command::Templates(cmd) => senders::templates(&g, cmd).await,
        Command::Consent(cmd) => consent::consent(&g, cmd).await,
        Command::Campaign(cmd) => campaign::campaign(&g, cmd).await,
        Command::Report(args) => campaign::report(&g, args).await,
        Command::Contacts(cmd) => contacts::contacts(&g, cmd).await,
        Command::Conversions(cmd) => conversions::conversions(&g, cmd).await,
        Command::Optin(cmd) => optin::optin(&g, cmd).await,
        Command::Purge(args) => purge::purge(&g, args).await,
        Command::Ratecard(cmd) => ratecard::ratecard(cmd),
        Command::Tokens(cmd) => tokens::tokens(&g, cmd).await,
        Command::Audit(args) => audit::audit(&g, args).await,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::{CommandFactory, Parser};

    use super::*;
    use crate::http::ServeArgs;

    fn serve_args(args: &[&str]) -> ServeArgs {
        let cli = Cli::try_parse_from(["herald", "serve"].iter().chain(args)).expect("parses");
        match cli.command {
            Command::Serve(a) => a,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_command_line_has_no_conflicting_flags() {
        // `worker` flattens the worker's own flags with the listener flags.
        Cli::command().debug_assert();
    }

    #[test]
    fn serve_needs_an_app_secret() {
        // The flag wins over an inherited HERALD_APP_SECRET, so an empty one tests "missing".
        let err = serve_args(&["--app-secret", " "]).config().unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("HERALD_APP_SECRET"), "{err}");
    }

    #[test]
    fn serve_rejects_bad_settings_before_starting() {
        for args in [
            &["--app-secret", "s", "--drain-seconds", "601"][..],
            &["--app-secret", "s", "--shutdown-delay", "10m"][..],
            &["--app-secret", "s", "--opt-out-words", ","][..],
        ] {
            let err = serve_args(args).config().unwrap_err();
            assert_eq!(err.exit_code(), 2, "{args:?}");
        }
    }

    #[test]
    fn serve_settings_become_a_config_without_leaking_secrets() {
        let args = serve_args(&[
            "--app-secret",
            "app-secret-value",
            "--verify-token",
            "verify-value",
            "--shutdown-delay",
            "5s",
        ]);
        assert!(!format!("{args:?}").contains("app-secret-value"));
        let config = args.config().unwrap();
        assert_eq!(config.shutdown_delay, Duration::from_secs(5));
        assert_eq!(
            config.webhooks.verify_token.as_deref(),
            Some("verify-value")
        );
        let shown = format!("{config:?}");
        assert!(
            !shown.contains("app-secret-value") && !shown.contains("verify-value"),
            "{shown}"
        );
    }
}
