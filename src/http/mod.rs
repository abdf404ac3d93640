//! herald's HTTP side: `herald serve` (Meta's webhooks, the admin API, probes) and the health
//! and metrics listeners every long-running process shares.
//!
//! Layout: `signature` X-Hub-Signature-256 · `access` bearer tokens, roles and audit rows · `notifications` Meta's
//! payloads → herald's decisions (pure) · `webhooks` the `/webhooks` routes · `admin` the
//! campaign API · `conversions` the shops' conversion events · `health` `/healthz`, `/readyz`
//! and the [`Readiness`] trait · `prometheus` `/metrics` · `server` the serve lifecycle and drain.

mod access;
mod admin;
mod conversions;
mod health;
mod notifications;
mod prometheus;
mod server;
mod signature;
mod webhooks;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use crate::policy::opt_out::{DEFAULT_OPT_OUT_WORDS, OptOutWords};
pub use health::{Readiness, ServeHealth, spawn_health_server};
pub use notifications::{Note, Notification, ParseError, Revocation, TemplateStatus, parse};
pub use prometheus::spawn_metrics_server;
pub use server::{ServeConfig, ServerHandle, router, run};
pub use signature::{SIGNATURE_HEADER, SignatureError, sign, verify};
pub use webhooks::WebhookConfig;

use crate::app::{CliError, DrainOpts, EngineOpts, GlobalOpts, PurgeOpts, spawn_purges};

/// Longest shutdown delay accepted: load balancers notice a failing readiness in seconds.
const MAX_SHUTDOWN_DELAY: Duration = Duration::from_secs(120);

/// Where a long-running process listens (DESIGN §1.1).
#[derive(Args, Debug, Clone)]
pub struct EndpointOpts {
    /// Webhooks, admin API and probes (`serve`); probes (`worker`).
    #[arg(long, env = "HERALD_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: SocketAddr,
    /// Prometheus `/metrics`.
    #[arg(long, env = "HERALD_METRICS_ADDR", default_value = "0.0.0.0:9477")]
    pub metrics_addr: SocketAddr,
}

/// `herald serve`.
#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub endpoints: EndpointOpts,
    /// The Meta app secret that signs webhooks (X-Hub-Signature-256). Required. Prefer the
    /// environment variable: command lines are visible to other users of the machine.
    #[arg(long, env = "HERALD_APP_SECRET", hide_env_values = true)]
    pub app_secret: Option<String>,
    /// The token Meta's subscription handshake must present (GET /webhooks). Without it every
    /// handshake is refused.
    #[arg(long, env = "HERALD_VERIFY_TOKEN", hide_env_values = true)]
    pub verify_token: Option<String>,
    /// Bootstrap bearer token of the admin API (/api/campaigns/…, /api/conversions): it acts
    /// with the `operator` role. Scoped tokens with other roles come from `herald tokens
    /// create`. Without it and without any token, every admin route answers 403: the API
    /// denies by default.
    #[arg(long, env = "HERALD_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Inbound messages that revoke every consent of their sender, comma-separated; matched
    /// ignoring case, surrounding punctuation and spacing. Replaces the built-in list.
    #[arg(long, env = "HERALD_OPT_OUT_WORDS", default_value = DEFAULT_OPT_OUT_WORDS)]
    pub opt_out_words: String,
    /// After SIGTERM, keep answering this long with /readyz at 503 before closing the
    /// listener, so load balancers stop routing here first (e.g. `5s`). Leave at 0 behind
    /// Kubernetes with a preStop sleep, which does the same.
    #[arg(long, env = "HERALD_SHUTDOWN_DELAY", default_value = "0s", value_parser = humantime::parse_duration)]
    pub shutdown_delay: Duration,
    #[command(flatten)]
    pub drain: DrainOpts,
    /// Do not fire due timers (follow-ups, SMS fallbacks) here; leave them to the workers.
    /// By default `serve` fires them like every worker, with the same HERALD_ACCESS_TOKEN,
    /// HERALD_GRAPH_URL and HERALD_SMS_URL, so a team without workers needs nothing else.
    #[arg(long, env = "HERALD_SERVE_NO_TIMERS")]
    pub no_timers: bool,
    /// How the timers' messages are sent (pacing, rate card, SMS route).
    #[command(flatten)]
    pub engine: EngineOpts,
    /// The retention purge `serve` runs like every worker (`--no-purge` to leave it to them).
    #[command(flatten)]
    pub purge: PurgeOpts,
    /// RabbitMQ, for `HERALD_RECIPIENT_EVENTS=amqp` only (serve relays events like a worker).
    #[command(flatten)]
    pub amqp: crate::amqp::AmqpOpts,
}

impl fmt::Debug for ServeArgs {
    /// Secrets never reach a log line, even through `{:?}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let set = |s: &Option<String>| s.as_ref().map(|_| "<set>");
        f.debug_struct("ServeArgs")
            .field("endpoints", &self.endpoints)
            .field("app_secret", &set(&self.app_secret))
            .field("verify_token", &set(&self.verify_token))
            .field("admin_token", &set(&self.admin_token))
            .field("opt_out_words", &self.opt_out_words)
            .field("shutdown_delay", &self.shutdown_delay)
            .field("drain", &self.drain)
            .field("no_timers", &self.no_timers)
            .field("purge", &self.purge)
            .field("recipient_events", &self.engine.recipient_events)
            .field("amqp", &self.amqp.url_redacted())
            .finish()
    }
}

impl ServeArgs {
    /// Checks the settings and turns them into a [`ServeConfig`]; every problem is a usage
    /// error (exit 2) found before anything starts.
    pub fn config(&self) -> Result<ServeConfig, CliError> {
        let non_empty = |s: &Option<String>| s.clone().filter(|v| !v.trim().is_empty());
        let Some(app_secret) = non_empty(&self.app_secret) else {
            return Err(CliError::Usage(
                "HERALD_APP_SECRET (or --app-secret) is required: it verifies that webhook POSTs \
                 come from Meta (Meta app dashboard → App settings → Basic → App secret)"
                    .into(),
            ));
        };
        let opt_out = OptOutWords::parse(&self.opt_out_words)
            .map_err(|e| CliError::Usage(format!("HERALD_OPT_OUT_WORDS: {e}")))?;
        self.drain.check()?;
        if self.shutdown_delay > MAX_SHUTDOWN_DELAY {
            return Err(CliError::Usage(format!(
                "--shutdown-delay must be at most {}, got {}",
                humantime::format_duration(MAX_SHUTDOWN_DELAY),
                humantime::format_duration(self.shutdown_delay)
            )));
        }
        Ok(ServeConfig {
            webhooks: WebhookConfig {
                app_secret,
                verify_token: non_empty(&self.verify_token),
                opt_out,
                clock: crate::domain::Clock::system(),
                rate_card: std::sync::Arc::new(self.engine.rate_card.load()?),
                recipient_events: self.engine.recipient_events.options()?,
            },
            admin_token: non_empty(&self.admin_token),
            shutdown_delay: self.shutdown_delay,
            drain: self.drain.drain(),
        })
    }
}

/// Installs the process's metrics recorder; its handle renders `/metrics`.
pub fn install_metrics() -> Result<PrometheusHandle, CliError> {
    crate::telemetry::metrics::install(None)
        .map_err(|e| CliError::runtime(format!("cannot install the metrics recorder: {e}")))
}

/// Serves `/metrics` on `addr` until `stop` is cancelled (`serve` and `worker`).
pub async fn serve_metrics(
    addr: SocketAddr,
    handle: PrometheusHandle,
    stop: CancellationToken,
) -> Result<ServerHandle, CliError> {
    spawn_metrics_server(addr, handle, stop)
        .await
        .map_err(CliError::runtime)
}

/// Runs `herald serve` until SIGTERM or Ctrl-C and the drain end.
pub async fn serve_command(g: &GlobalOpts, args: ServeArgs) -> Result<(), CliError> {
    let config = args.config()?;
    let purge = args.purge.schedule()?;
    if config.webhooks.verify_token.is_none() {
        warn!("HERALD_VERIFY_TOKEN is not set: Meta's subscription handshake will be refused");
    }
    if config.admin_token.is_none() {
        info!(
            "HERALD_ADMIN_TOKEN is not set: the admin API (/api/…) takes only tokens from `herald tokens create`, and answers 403 to everything while there are none"
        );
    }
    let store = g.open_store().await?;
    let metrics = install_metrics()?;
    let listener = server::bind(args.endpoints.http_addr, "webhooks")
        .await
        .map_err(CliError::runtime)?;
    let stop_metrics = CancellationToken::new();
    let metrics_server =
        serve_metrics(args.endpoints.metrics_addr, metrics, stop_metrics.clone()).await?;
    let shutdown = crate::signal::cancel_on_shutdown_signal(None);
    info!(
        addr = %args.endpoints.http_addr,
        db = %g.database_url_redacted(),
        "serving /webhooks, /api/campaigns, /api/contacts, /api/conversions, /api/audit, /healthz and /readyz"
    );
    let timers = if args.no_timers {
        None
    } else if g.access_token.is_none() && g.graph_url.starts_with("https://graph.facebook.com") {
        warn!(
            "HERALD_ACCESS_TOKEN is not set: serve does not fire follow-ups or fallbacks (workers do)"
        );
        None
    } else {
        let mut setup = args.engine.setup()?;
        // Like a worker: the numbers' rates hold across every process that sends.
        setup.shared_rates = true;
        let engine = Arc::new(setup.build(Arc::clone(&store), g.graph_client()?));
        Some(tokio::spawn(engine.run_timers(shutdown.clone())))
    };
    let purges = purge.map(|(policy, every)| {
        let clock = config.webhooks.clock.clone();
        spawn_purges(Arc::clone(&store), policy, clock, every, shutdown.clone())
    });
    let relay = crate::crm::sink(&args.engine.recipient_events, &args.amqp)?.map(|sink| {
        let config = crate::crm::RelayConfig {
            clock: config.webhooks.clock.clone(),
            ..crate::crm::RelayConfig::default()
        };
        crate::crm::spawn_relay(Arc::clone(&store), sink, config, shutdown.clone())
    });
    let served = run(listener, Arc::clone(&store), config, shutdown).await;
    if let Some(relay) = relay {
        // Stopped by the same signal; a round cut short leaves its claims to lapse.
        let _ = tokio::time::timeout(Duration::from_secs(5), relay).await;
    }
    stop_metrics.cancel();
    if let Some(purges) = purges {
        // A batch cut short rolls back; the finished ones are kept.
        purges.abort();
    }
    if let Some(timers) = timers {
        // Stopped by the same signal: a round in progress hands its timers back.
        let _ = timers.await;
    }
    let _ = metrics_server.task.await;
    served.map_err(|e| CliError::runtime(format!("webhook server failed: {e}")))
}
