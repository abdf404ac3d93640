//! `herald simulate`: the simulator as a standalone server. Flags (each with an environment
//! variable) become a [`SimConfig`]; the server runs until Ctrl-C or SIGTERM and prints what it
//! saw on the way out. `herald simulate inbound` asks a running one to play a customer who
//! writes first (`POST /__sim/inbound`).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;

use super::config::{SimConfig, load_list, redacted};
use super::inbound::{InboundPosted, InboundRequest, InboundType, Referral};
use super::smsc::SmscConfig;
use crate::app::CliError;

/// Run a local stand-in for the WhatsApp Cloud API: Meta's validation, error envelopes,
/// throughput and pair limits, templates, faults and signed status webhooks. Point herald at
/// it with HERALD_GRAPH_URL; read what it accepted at /__sim/stats. With --smpp-port it is
/// also an SMS provider's SMSC (SMPP 3.4).
#[derive(clap::Args, Clone)]
// `herald simulate inbound …` talks to a running simulator; the server's flags mean nothing there.
#[command(args_conflicts_with_subcommands = true)]
pub struct SimulateArgs {
    #[command(subcommand)]
    pub command: Option<SimulateCommand>,

    /// Address to listen on.
    #[arg(long, env = "HERALD_SIM_ADDR", default_value = "127.0.0.1:8090")]
    pub addr: SocketAddr,

    /// Accepted messages per business number in any sliding second (Meta: 80, or 1000).
    #[arg(long, env = "HERALD_SIM_RATE", default_value_t = 80)]
    pub rate: u32,

    /// Rate of one number, repeatable: PHONE_NUMBER_ID=RATE.
    #[arg(long = "rate-override", env = "HERALD_SIM_RATE_OVERRIDES", value_name = "ID=RATE",
          value_delimiter = ',', value_parser = parse_override)]
    pub rate_overrides: Vec<(String, u32)>,

    /// Messages one number may send one recipient at once before 131056 (0 = no pair limit).
    #[arg(long, env = "HERALD_SIM_PAIR_BURST", default_value_t = 45)]
    pub pair_burst: u32,

    /// Pair-limit refill: one message per recipient per this many milliseconds.
    #[arg(long, env = "HERALD_SIM_PAIR_INTERVAL_MS", default_value_t = 6000)]
    pub pair_interval_ms: u64,

    /// Latency added to every send answer, in milliseconds.
    #[arg(long, env = "HERALD_SIM_LATENCY_MS", default_value_t = 0)]
    pub latency_ms: u64,

    /// Random extra latency up to this many milliseconds.
    #[arg(long, env = "HERALD_SIM_JITTER_MS", default_value_t = 0)]
    pub jitter_ms: u64,

    /// Recipients (E.164) that are not on WhatsApp (131026); repeatable or comma-separated.
    #[arg(
        long,
        env = "HERALD_SIM_UNDELIVERABLE",
        value_name = "E164",
        value_delimiter = ','
    )]
    pub undeliverable: Vec<String>,

    /// Share of all recipients, picked by a stable hash, that are not on WhatsApp.
    #[arg(long, env = "HERALD_SIM_UNDELIVERABLE_RATIO", default_value_t = 0.0, value_parser = parse_ratio)]
    pub undeliverable_ratio: f64,

    /// Templates the account owns: a JSON list, or a saved message_templates answer. Without
    /// it, any template is accepted.
    #[arg(long, env = "HERALD_SIM_TEMPLATES", value_name = "FILE")]
    pub templates: Option<PathBuf>,

    /// Refuse every template (132001) when no --templates file is given.
    #[arg(long, env = "HERALD_SIM_STRICT_TEMPLATES")]
    pub strict_templates: bool,

    /// Business numbers: a JSON list of phone-number objects. Without it, any id is accepted.
    #[arg(long, env = "HERALD_SIM_NUMBERS", value_name = "FILE")]
    pub numbers: Option<PathBuf>,

    /// Require this bearer token (190 otherwise).
    #[arg(long, env = "HERALD_ACCESS_TOKEN", hide_env_values = true)]
    pub access_token: Option<String>,

    /// Share of sends answered with a 5xx (131000 or 131016).
    #[arg(long = "fault-5xx", env = "HERALD_SIM_FAULT_5XX", default_value_t = 0.0, value_parser = parse_ratio)]
    pub fault_5xx: f64,

    /// Share of sends answered only after --fault-slow-ms more.
    #[arg(long, env = "HERALD_SIM_FAULT_SLOW", default_value_t = 0.0, value_parser = parse_ratio)]
    pub fault_slow: f64,

    /// Extra delay of a slow answer, in milliseconds.
    #[arg(long, env = "HERALD_SIM_FAULT_SLOW_MS", default_value_t = 5000)]
    pub fault_slow_ms: u64,

    /// Share of sends accepted and then left unanswered: the connection is closed.
    #[arg(long, env = "HERALD_SIM_FAULT_DROP", default_value_t = 0.0, value_parser = parse_ratio)]
    pub fault_drop: f64,

    /// Share of sends answered 130429 regardless of the real rate.
    #[arg(long = "fault-130429", env = "HERALD_SIM_FAULT_130429", default_value_t = 0.0, value_parser = parse_ratio)]
    pub fault_130429: f64,

    /// POST signed status webhooks (sent, then delivered and read) for accepted messages here.
    #[arg(long, env = "HERALD_SIM_WEBHOOK_URL")]
    pub webhook_url: Option<String>,

    /// Share of accepted messages, picked by a stable hash of the number, that are delivered.
    #[arg(long, env = "HERALD_SIM_DELIVERED_SHARE", default_value_t = 1.0, value_parser = parse_ratio)]
    pub delivered_share: f64,

    /// Share of delivered messages, picked by a stable hash of the number, that are read.
    #[arg(long, env = "HERALD_SIM_READ_SHARE", default_value_t = 0.0, value_parser = parse_ratio)]
    pub read_share: f64,

    /// Simulated time from sent to delivered, e.g. 2s or 5m.
    #[arg(long, env = "HERALD_SIM_DELIVERED_DELAY", default_value = "0s", value_parser = parse_delay)]
    pub delivered_delay: Duration,

    /// Simulated time from delivered to read, e.g. 30m or 24h.
    #[arg(long, env = "HERALD_SIM_READ_DELAY", default_value = "0s", value_parser = parse_delay)]
    pub read_delay: Duration,

    /// How much faster simulated time runs: the delays take delay/SPEED of real time (3600 = an
    /// hour a second), and status timestamps run ahead to match.
    #[arg(long, env = "HERALD_SIM_SPEED", default_value_t = 1.0, value_parser = parse_speed)]
    pub speed: f64,

    /// Key for the webhooks' X-Hub-Signature-256.
    #[arg(long, env = "HERALD_APP_SECRET", hide_env_values = true)]
    pub app_secret: Option<String>,

    #[command(flatten)]
    pub smsc: SmscArgs,
}

/// What `herald simulate` does instead of serving.
#[derive(clap::Subcommand, Clone, Debug)]
pub enum SimulateCommand {
    /// Play a customer who writes first: a running simulator posts a signed inbound-message
    /// webhook to its --webhook-url and opens the customer's 24 h service window (72 h with
    /// --referral). Prints the wamid and herald's answer; exits 0 when herald answered 2xx.
    /// Boxed: the server's flags are what `herald`'s command enum should be sized by.
    Inbound(Box<InboundArgs>),
}

/// The customer's message, as `POST /__sim/inbound` takes it.
#[derive(clap::Args, Clone, Debug)]
pub struct InboundArgs {
    /// The running simulator's URL.
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:8090")]
    pub sim: String,

    /// The customer's number (+49… or digits).
    #[arg(long, value_name = "NUMBER")]
    pub from: String,

    /// The business number written to; default the simulator's first configured number.
    #[arg(long, value_name = "PHONE_NUMBER_ID")]
    pub to: Option<String>,

    /// What the customer sends.
    #[arg(long = "type", value_enum, default_value_t = InboundType::Text)]
    pub kind: InboundType,

    /// The text's body, the button's text or the reply's title.
    #[arg(long)]
    pub text: Option<String>,

    /// The button's payload or the reply's id.
    #[arg(long)]
    pub payload: Option<String>,

    /// The customer came from a click-to-WhatsApp ad (a 72 h free entry point).
    #[arg(long)]
    pub referral: bool,

    /// The message's wamid; the same id again plays Meta redelivering it.
    #[arg(long, value_name = "WAMID")]
    pub id: Option<String>,

    /// The customer's profile name.
    #[arg(long)]
    pub name: Option<String>,

    /// The wamid of the business's message the customer answers (`context.id`).
    #[arg(long, value_name = "WAMID")]
    pub context: Option<String>,

    /// Post the same body this many times (1–10), as Meta's redeliveries do.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10))]
    pub repeat: u32,
}

impl InboundArgs {
    fn into_request(self) -> InboundRequest {
        InboundRequest {
            from: self.from,
            to: self.to,
            kind: self.kind,
            text: self.text,
            payload: self.payload,
            referral: self.referral.then(Referral::default),
            id: self.id,
            name: self.name,
            context: self.context,
            repeat: self.repeat,
        }
    }
}

/// The SMSC's flags: all but --smpp-port need it, since without it there is no SMSC.
#[derive(clap::Args, Clone)]
pub struct SmscArgs {
    /// Also run an SMSC (SMPP 3.4 server) on this port of --addr's address (0 = any free port).
    #[arg(long, env = "HERALD_SIM_SMPP_PORT", value_name = "PORT")]
    pub smpp_port: Option<u16>,

    /// The account's system_id; binds naming another get ESME_RINVSYSID.
    #[arg(
        long,
        env = "HERALD_SIM_SMPP_SYSTEM_ID",
        default_value = "herald",
        requires = "smpp_port"
    )]
    pub smpp_system_id: String,

    /// The account's password (at most 8 characters); others get ESME_RINVPASWD.
    #[arg(
        long,
        env = "HERALD_SIM_SMPP_PASSWORD",
        default_value = "secret",
        hide_env_values = true,
        requires = "smpp_port"
    )]
    pub smpp_password: String,

    /// submit_sm per second the account may send (ESME_RTHROTTLED beyond); 0 = no limit.
    #[arg(
        long,
        env = "HERALD_SIM_SMPP_TPS",
        default_value_t = 0,
        requires = "smpp_port"
    )]
    pub smpp_tps: u32,

    /// Sessions the account may bind at once (ESME_RBINDFAIL beyond); 0 = no limit.
    #[arg(
        long,
        env = "HERALD_SIM_SMPP_MAX_BINDS",
        default_value_t = 10,
        requires = "smpp_port"
    )]
    pub smpp_max_binds: u32,

    /// From acceptance to the delivery receipt, e.g. 200ms or 2s.
    #[arg(long, env = "HERALD_SIM_SMS_RECEIPT_DELAY", default_value = "500ms",
          value_parser = humantime::parse_duration, requires = "smpp_port")]
    pub sms_receipt_delay: Duration,

    /// Share of destinations, picked by a stable hash, whose receipts say UNDELIV.
    #[arg(long, env = "HERALD_SIM_SMS_UNDELIVERABLE_SHARE", default_value_t = 0.0,
          value_parser = parse_ratio, requires = "smpp_port")]
    pub sms_undeliverable_share: f64,

    /// A further share of destinations whose receipts say EXPIRED.
    #[arg(long, env = "HERALD_SIM_SMS_EXPIRED_SHARE", default_value_t = 0.0,
          value_parser = parse_ratio, requires = "smpp_port")]
    pub sms_expired_share: f64,

    /// Destinations (E.164) whose receipts always say UNDELIV; repeatable or comma-separated.
    #[arg(
        long,
        env = "HERALD_SIM_SMS_UNDELIVERABLE",
        value_name = "E164",
        value_delimiter = ',',
        requires = "smpp_port"
    )]
    pub sms_undeliverable: Vec<String>,

    /// Give message ids in decimal in receipts (submit_sm_resp gives hex), as some providers do.
    #[arg(
        long,
        env = "HERALD_SIM_SMS_DECIMAL_RECEIPT_IDS",
        requires = "smpp_port"
    )]
    pub sms_decimal_receipt_ids: bool,

    /// Send every delivery receipt twice.
    #[arg(
        long,
        env = "HERALD_SIM_SMS_DUPLICATE_RECEIPTS",
        requires = "smpp_port"
    )]
    pub sms_duplicate_receipts: bool,
}

impl fmt::Debug for SmscArgs {
    /// By hand, so the password never reaches a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmscArgs")
            .field("smpp_port", &self.smpp_port)
            .field("smpp_system_id", &self.smpp_system_id)
            .field("smpp_password", &"<redacted>")
            .field("smpp_tps", &self.smpp_tps)
            .field("smpp_max_binds", &self.smpp_max_binds)
            .field("sms_receipt_delay", &self.sms_receipt_delay)
            .field("sms_undeliverable_share", &self.sms_undeliverable_share)
            .field("sms_expired_share", &self.sms_expired_share)
            .field("sms_undeliverable", &self.sms_undeliverable.len())
            .field("sms_decimal_receipt_ids", &self.sms_decimal_receipt_ids)
            .field("sms_duplicate_receipts", &self.sms_duplicate_receipts)
            .finish()
    }
}

impl SmscArgs {
    /// The SMSC these flags describe, listening on `ip`; `None` without --smpp-port.
    fn into_config(self, ip: IpAddr) -> Option<SmscConfig> {
        let port = self.smpp_port?;
        Some(SmscConfig {
            addr: SocketAddr::new(ip, port),
            system_id: self.smpp_system_id,
            password: self.smpp_password,
            tps: self.smpp_tps,
            max_binds: self.smpp_max_binds,
            receipt_delay: self.sms_receipt_delay,
            undeliverable_share: self.sms_undeliverable_share,
            expired_share: self.sms_expired_share,
            undeliverable: self.sms_undeliverable.into_iter().collect(),
            decimal_receipt_ids: self.sms_decimal_receipt_ids,
            duplicate_receipts: self.sms_duplicate_receipts,
        })
    }
}

impl fmt::Debug for SimulateArgs {
    /// By hand, so the token and secret never reach a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimulateArgs")
            .field("command", &self.command)
            .field("addr", &self.addr)
            .field("rate", &self.rate)
            .field("rate_overrides", &self.rate_overrides)
            .field("pair_burst", &self.pair_burst)
            .field("pair_interval_ms", &self.pair_interval_ms)
            .field("latency_ms", &self.latency_ms)
            .field("jitter_ms", &self.jitter_ms)
            .field("undeliverable", &self.undeliverable.len())
            .field("undeliverable_ratio", &self.undeliverable_ratio)
            .field("templates", &self.templates)
            .field("strict_templates", &self.strict_templates)
            .field("numbers", &self.numbers)
            .field("access_token", &redacted(&self.access_token))
            .field("fault_5xx", &self.fault_5xx)
            .field("fault_slow", &self.fault_slow)
            .field("fault_slow_ms", &self.fault_slow_ms)
            .field("fault_drop", &self.fault_drop)
            .field("fault_130429", &self.fault_130429)
            .field("webhook_url", &self.webhook_url)
            .field("delivered_share", &self.delivered_share)
            .field("read_share", &self.read_share)
            .field("delivered_delay", &self.delivered_delay)
            .field("read_delay", &self.read_delay)
            .field("speed", &self.speed)
            .field("app_secret", &redacted(&self.app_secret))
            .field("smsc", &self.smsc)
            .finish()
    }
}

fn parse_ratio(raw: &str) -> Result<f64, String> {
    let ratio: f64 = raw
        .parse()
        .map_err(|_| format!("'{raw}' is not a number"))?;
    if (0.0..=1.0).contains(&ratio) {
        Ok(ratio)
    } else {
        Err(format!("{ratio} is not a share between 0 and 1"))
    }
}

fn parse_delay(raw: &str) -> Result<Duration, String> {
    humantime::parse_duration(raw.trim())
        .map_err(|e| format!("'{raw}' is not a duration ({e}); write e.g. 500ms, 2s, 30m or 24h"))
}

fn parse_speed(raw: &str) -> Result<f64, String> {
    let speed: f64 = raw
        .parse()
        .map_err(|_| format!("'{raw}' is not a number"))?;
    if speed.is_finite() && speed > 0.0 {
        Ok(speed)
    } else {
        Err(format!(
            "{raw} is not a speed-up: it must be above 0 (1 = real time, 3600 = an hour a second)"
        ))
    }
}

fn parse_override(raw: &str) -> Result<(String, u32), String> {
    let (id, rate) = raw
        .split_once('=')
        .ok_or_else(|| format!("'{raw}' is not PHONE_NUMBER_ID=RATE"))?;
    let rate = rate
        .trim()
        .parse()
        .map_err(|_| format!("'{rate}' is not a rate per second"))?;
    Ok((id.trim().to_owned(), rate))
}

impl SimulateArgs {
    /// The configuration these flags describe, with template and number files read.
    pub fn into_config(self) -> anyhow::Result<SimConfig> {
        let templates = match &self.templates {
            Some(path) => load_list(path).context("--templates")?,
            None => Vec::new(),
        };
        let numbers = match &self.numbers {
            Some(path) => load_list(path).context("--numbers")?,
            None => Vec::new(),
        };
        let config = SimConfig {
            rate_per_sec: self.rate,
            rate_overrides: self.rate_overrides.into_iter().collect::<HashMap<_, _>>(),
            pair_burst: self.pair_burst,
            pair_interval: Duration::from_millis(self.pair_interval_ms),
            latency: Duration::from_millis(self.latency_ms),
            latency_jitter: Duration::from_millis(self.jitter_ms),
            undeliverable: self.undeliverable.into_iter().collect::<HashSet<_>>(),
            undeliverable_ratio: self.undeliverable_ratio,
            templates,
            accept_unknown_templates: !self.strict_templates,
            numbers,
            access_token: self.access_token,
            fault_5xx_ratio: self.fault_5xx,
            fault_slow_ratio: self.fault_slow,
            fault_slow_delay: Duration::from_millis(self.fault_slow_ms),
            fault_drop_ratio: self.fault_drop,
            fault_130429_ratio: self.fault_130429,
            webhook_url: self.webhook_url,
            delivered_share: self.delivered_share,
            read_share: self.read_share,
            delivered_delay: self.delivered_delay,
            read_delay: self.read_delay,
            speed: self.speed,
            app_secret: self.app_secret,
            smsc: self.smsc.into_config(self.addr.ip()),
        };
        config.validate()?;
        Ok(config)
    }
}

/// Serves until Ctrl-C or SIGTERM, then prints the final stats. Flags that make no
/// configuration are a usage error (exit 2).
pub async fn run(mut args: SimulateArgs) -> Result<(), CliError> {
    if let Some(SimulateCommand::Inbound(inbound)) = args.command.take() {
        return inbound_command(*inbound).await;
    }
    let addr = args.addr;
    let config = args
        .into_config()
        .map_err(|e| CliError::Usage(format!("{e:#}")))?;
    serve(config, addr).await.map_err(CliError::Runtime)
}

/// How long `herald simulate inbound` waits for the simulator: up to ten POSTs to herald,
/// each with its own timeout.
const INBOUND_CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

/// `herald simulate inbound`: exit 0 when herald answered every POST with a 2xx, 1 when it
/// answered otherwise or the simulator could not post, 2 when the simulator calls the request
/// bad.
async fn inbound_command(args: InboundArgs) -> Result<(), CliError> {
    let sim = args.sim.trim_end_matches('/').to_owned();
    let url = reqwest::Url::parse(&format!("{sim}/__sim/inbound"))
        .map_err(|e| CliError::Usage(format!("--sim '{sim}' is not a URL: {e}")))?;
    let client = reqwest::Client::builder()
        .timeout(INBOUND_CLIENT_TIMEOUT)
        .build()
        .map_err(|e| CliError::runtime(format!("cannot build an HTTP client: {e}")))?;
    let response = client
        .post(url)
        .json(&args.into_request())
        .send()
        .await
        .map_err(|e| CliError::runtime(format!("cannot reach the simulator at {sim}: {e}")))?;
    let status = response.status();
    let answer: Value = response.json().await.map_err(|e| {
        CliError::runtime(format!(
            "the simulator at {sim} answered {status} without JSON: {e}"
        ))
    })?;
    let said = || {
        answer["error"]
            .as_str()
            .map_or_else(|| answer.to_string(), str::to_owned)
    };
    if status == reqwest::StatusCode::BAD_REQUEST {
        return Err(CliError::Usage(said()));
    }
    let posted: InboundPosted = match serde_json::from_value(answer.clone()) {
        Ok(posted) => posted,
        Err(_) => {
            return Err(CliError::runtime(format!(
                "the simulator answered {status}: {}",
                said()
            )));
        }
    };
    let answers: Vec<String> = posted
        .statuses
        .iter()
        .map(|s| s.map_or_else(|| "no answer".to_owned(), |s| s.to_string()))
        .collect();
    println!("{}: herald answered {}", posted.id, answers.join(", "));
    if let Some(error) = &posted.error {
        eprintln!("{error}");
    }
    if posted.acknowledged() {
        Ok(())
    } else {
        Err(CliError::runtime(format!(
            "herald did not acknowledge {} with a 2xx",
            posted.id
        )))
    }
}

async fn serve(config: SimConfig, addr: SocketAddr) -> anyhow::Result<()> {
    let system_id = config
        .smsc
        .as_ref()
        .map(|s| s.system_id.clone())
        .unwrap_or_default();
    let posts_webhooks = config.webhook_url.is_some();
    if posts_webhooks && config.app_secret.is_none() {
        eprintln!("warning: no --app-secret, webhooks go out unsigned");
    }
    let sim = super::spawn(config, addr).await?;
    let url = sim.url();
    println!("herald simulator listening on {url}");
    println!("  use it with: HERALD_GRAPH_URL={url}");
    println!("  stats:       curl {url}/__sim/stats");
    println!("  reset:       curl -X POST {url}/__sim/reset");
    if posts_webhooks {
        println!(
            "  inbound:     herald simulate inbound --sim {url} --from +4915123456789 --text Hi"
        );
    }
    if let Some(mut smpp) = sim.smpp_addr() {
        if smpp.ip().is_unspecified() {
            smpp.set_ip(IpAddr::V4(Ipv4Addr::LOCALHOST));
        }
        println!("SMSC (SMPP 3.4) listening on {smpp}");
        println!("  bind as:     system_id {system_id}, password from --smpp-password");
        println!("  messages:    curl {url}/__sim/sms/messages");
        println!(
            "  MO (reply):  curl -X POST {url}/__sim/sms/mo -d '{{\"from\":\"+4917612345678\",\"to\":\"ACME\",\"text\":\"STOP\"}}'"
        );
    }
    crate::signal::shutdown_signal().await;
    let stats = sim.stats();
    sim.shutdown().await;
    println!("{}", serde_json::to_string_pretty(&stats)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// `herald`'s shape: `simulate` is a subcommand holding these args.
    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        command: Top,
    }

    #[derive(clap::Subcommand)]
    enum Top {
        Simulate(SimulateArgs),
    }

    fn parse(argv: &[&str]) -> Result<SimulateArgs, clap::Error> {
        Cli::try_parse_from(
            ["herald", "simulate"]
                .into_iter()
                .chain(argv.iter().copied()),
        )
        .map(|c| match c.command {
            Top::Simulate(args) => args,
        })
    }

    fn inbound(argv: &[&str]) -> Result<InboundArgs, clap::Error> {
        let args = parse(&[&["inbound"], argv].concat())?;
        match args.command {
            Some(SimulateCommand::Inbound(inbound)) => Ok(*inbound),
            None => panic!("{argv:?} parsed as the server"),
        }
    }

    #[test]
    fn the_command_line_with_the_subcommand_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn simulate_without_a_subcommand_is_still_the_server_with_its_flags() {
        let args = parse(&["--rate", "5", "--webhook-url", "http://127.0.0.1:9/w"]).unwrap();
        assert!(args.command.is_none());
        let config = args.into_config().unwrap();
        assert_eq!(config.rate_per_sec, 5);
        assert!(parse(&[]).unwrap().command.is_none());
    }

    #[test]
    fn inbound_flags_become_the_request() {
        let request = inbound(&[
            "--sim",
            "http://127.0.0.1:8090",
            "--from",
            "+4915123456789",
            "--to",
            "106540352242922",
            "--type",
            "button",
            "--text",
            "Yes please",
            "--payload",
            "YES",
            "--referral",
            "--id",
            "wamid.X",
            "--repeat",
            "3",
        ])
        .unwrap()
        .into_request();
        assert_eq!(request.from, "+4915123456789");
        assert_eq!(request.to.as_deref(), Some("106540352242922"));
        assert_eq!(request.kind, InboundType::Button);
        assert_eq!(
            (request.text.as_deref(), request.payload.as_deref()),
            (Some("Yes please"), Some("YES"))
        );
        assert_eq!(request.referral, Some(Referral::default()));
        assert_eq!(
            (request.id.as_deref(), request.repeat),
            (Some("wamid.X"), 3)
        );
        let plain = inbound(&["--from", "+491"]).unwrap();
        assert_eq!(plain.sim, "http://127.0.0.1:8090");
        assert_eq!(
            (plain.kind, plain.repeat, plain.referral),
            (InboundType::Text, 1, false)
        );
    }

    #[test]
    fn bad_inbound_flags_are_usage_errors() {
        for argv in [
            &[][..],
            &["--from", "+491", "--repeat", "0"][..],
            &["--from", "+491", "--repeat", "11"][..],
            &["--from", "+491", "--type", "poll"][..],
            &["--from", "+491", "--rate", "5"][..],
        ] {
            let err = inbound(argv)
                .err()
                .unwrap_or_else(|| panic!("{argv:?} parsed"));
            assert_eq!(err.exit_code(), 2, "{argv:?}");
        }
        // Server flags before the subcommand do not mix with it.
        let Err(err) = parse(&["--rate", "5", "inbound", "--from", "+491"]) else {
            panic!("server flags and inbound conflict");
        };
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn flags_become_a_config() {
        let args = parse(&[
            "--rate",
            "1000",
            "--rate-override",
            "1=5,2=7",
            "--latency-ms",
            "250",
            "--undeliverable",
            "+491,+492",
            "--fault-drop",
            "0.01",
            "--strict-templates",
        ])
        .unwrap();
        let config = args.into_config().unwrap();
        assert_eq!(config.rate_per_sec, 1000);
        assert_eq!(config.rate_overrides.get("2"), Some(&7));
        assert_eq!(config.latency, Duration::from_millis(250));
        assert_eq!(config.undeliverable.len(), 2);
        assert_eq!(config.fault_drop_ratio, 0.01);
        assert!(!config.accept_unknown_templates);
    }

    #[test]
    fn smpp_flags_become_an_smsc_on_the_http_address() {
        let args = parse(&[
            "--addr",
            "0.0.0.0:8090",
            "--smpp-port",
            "2775",
            "--smpp-tps",
            "50",
            "--sms-receipt-delay",
            "200ms",
            "--sms-undeliverable",
            "+4915100000001",
            "--sms-undeliverable",
            "+4915100000002",
            "--sms-expired-share",
            "0.1",
            "--sms-decimal-receipt-ids",
            "--sms-duplicate-receipts",
        ])
        .unwrap();
        let smsc = args.into_config().unwrap().smsc.unwrap();
        assert_eq!(smsc.addr, "0.0.0.0:2775".parse().unwrap());
        assert_eq!(
            (smsc.system_id.as_str(), smsc.password.as_str()),
            ("herald", "secret")
        );
        assert_eq!(smsc.tps, 50);
        assert_eq!(smsc.receipt_delay, Duration::from_millis(200));
        assert_eq!(smsc.undeliverable.len(), 2);
        assert_eq!(smsc.expired_share, 0.1);
        assert!(smsc.decimal_receipt_ids && smsc.duplicate_receipts);
        assert!(parse(&[]).unwrap().into_config().unwrap().smsc.is_none());
    }

    #[test]
    fn bad_smpp_flags_are_errors() {
        // SMS flags without the SMSC they configure.
        assert!(parse(&["--smpp-tps", "5"]).is_err());
        assert!(parse(&["--smpp-port", "0", "--sms-receipt-delay", "soon"]).is_err());
        assert!(parse(&["--smpp-port", "0", "--sms-expired-share", "1.5"]).is_err());
        // Shares that parse alone but add up past 1, and a password SMPP cannot carry.
        let both = parse(&[
            "--smpp-port",
            "0",
            "--sms-expired-share",
            "0.6",
            "--sms-undeliverable-share",
            "0.6",
        ])
        .unwrap();
        let err = both.into_config().unwrap_err().to_string();
        assert!(err.contains("add up"), "{err}");
        let long = parse(&["--smpp-port", "0", "--smpp-password", "far-too-long"]).unwrap();
        assert!(long.into_config().is_err());
    }

    #[test]
    fn shares_outside_zero_to_one_are_usage_errors() {
        assert!(parse(&["--fault-5xx", "2"]).is_err());
        assert!(parse(&["--rate-override", "nonsense"]).is_err());
    }

    #[test]
    fn customer_flags_become_shares_delays_and_a_speed() {
        let config = parse(&[
            "--delivered-share",
            "0.9",
            "--read-share",
            "0.5",
            "--delivered-delay",
            "2s",
            "--read-delay",
            "30m",
            "--speed",
            "3600",
        ])
        .unwrap()
        .into_config()
        .unwrap();
        assert_eq!((config.delivered_share, config.read_share), (0.9, 0.5));
        assert_eq!(config.delivered_delay, Duration::from_secs(2));
        assert_eq!(config.read_delay, Duration::from_secs(30 * 60));
        assert_eq!(config.speed, 3600.0);
        // Without them: everything delivered at once, nobody reads, real time.
        let plain = parse(&[]).unwrap().into_config().unwrap();
        assert_eq!((plain.delivered_share, plain.read_share), (1.0, 0.0));
        assert_eq!(
            (plain.delivered_delay, plain.read_delay),
            (Duration::ZERO, Duration::ZERO)
        );
        assert_eq!(plain.speed, 1.0);
    }

    #[test]
    fn bad_customer_flags_are_usage_errors_that_say_what_is_wrong() {
        for (argv, says) in [
            (&["--read-share", "1.5"][..], "between 0 and 1"),
            (&["--delivered-share=-0.1"][..], "between 0 and 1"),
            (&["--read-delay", "soon"][..], "not a duration"),
            (&["--delivered-delay", "5"][..], "not a duration"),
            (&["--speed", "0"][..], "above 0"),
            (&["--speed=-2"][..], "above 0"),
            (&["--speed", "inf"][..], "above 0"),
            (&["--speed", "fast"][..], "not a number"),
        ] {
            let err = parse(argv)
                .err()
                .unwrap_or_else(|| panic!("{argv:?} parsed"));
            assert_eq!(err.exit_code(), 2, "{argv:?}");
            assert!(err.to_string().contains(says), "{argv:?}: {err}");
        }
    }
}
