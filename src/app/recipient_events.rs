//! The recipient-events settings (`HERALD_RECIPIENT_EVENTS…`, `HERALD_EVENTS_WEBHOOK_…`),
//! read once and rejected early (exit 2) with the name of the setting.

use std::fmt;
use std::time::Duration;

use clap::{Args, ValueEnum};

use super::CliError;
use crate::domain::EventOptions;

/// Where per-recipient events go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum EventsMode {
    /// No events: nothing is written or read.
    #[default]
    Off,
    /// Published to `{prefix}.events` with routing key `recipient.<state>`.
    Amqp,
    /// POSTed to HERALD_EVENTS_WEBHOOK_URL, signed with HERALD_EVENTS_WEBHOOK_SECRET.
    Webhook,
}

/// Most webhook lanes: each holds a connection and a request in flight.
const MAX_CONCURRENCY: usize = 64;

/// The recipient-events settings every process that records or relays them reads.
#[derive(Args, Clone)]
pub struct RecipientEventsOpts {
    /// Per-recipient events for CRMs: `off` (default), `amqp` (to `{prefix}.events`, routing
    /// key `recipient.<state>`) or `webhook` (POSTed to HERALD_EVENTS_WEBHOOK_URL).
    #[arg(long, env = "HERALD_RECIPIENT_EVENTS", value_enum, default_value_t = EventsMode::Off)]
    pub recipient_events: EventsMode,
    /// Put the recipient's E.164 number into each event (`to`). Off by default: keys identify
    /// recipients, and a number is personal data the CRM may not need (DSGVO).
    #[arg(
        long,
        env = "HERALD_RECIPIENT_EVENTS_NUMBERS",
        default_value_t = false,
        action = clap::ArgAction::Set
    )]
    pub recipient_events_numbers: bool,
    /// Longest the `{prefix}.recipient-events` queue may grow (messages) while no CRM
    /// consumes it; past it RabbitMQ refuses new events (reject-publish) and they wait in the
    /// outbox instead.
    #[arg(
        long,
        env = "HERALD_RECIPIENT_EVENTS_QUEUE_MAX",
        default_value_t = 1_000_000
    )]
    pub recipient_events_queue_max: u32,
    /// The CRM's endpoint for `webhook` events (http or https).
    #[arg(long, env = "HERALD_EVENTS_WEBHOOK_URL")]
    pub events_webhook_url: Option<String>,
    /// Key of the `X-Herald-Signature: sha256=<hex>` HMAC over each POST's body (secret).
    #[arg(long, env = "HERALD_EVENTS_WEBHOOK_SECRET", hide_env_values = true)]
    pub events_webhook_secret: Option<String>,
    /// POSTs in flight at once (a recipient's events always go in order, in one lane).
    #[arg(long, env = "HERALD_EVENTS_WEBHOOK_CONCURRENCY", default_value_t = 4)]
    pub events_webhook_concurrency: usize,
    /// Longest one POST may take before it counts as failed and is retried.
    #[arg(long, env = "HERALD_EVENTS_WEBHOOK_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub events_webhook_timeout: Duration,
}

impl fmt::Debug for RecipientEventsOpts {
    /// The secret never reaches a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecipientEventsOpts")
            .field("recipient_events", &self.recipient_events)
            .field("recipient_events_numbers", &self.recipient_events_numbers)
            .field(
                "recipient_events_queue_max",
                &self.recipient_events_queue_max,
            )
            .field("events_webhook_url", &self.events_webhook_url)
            .field(
                "events_webhook_secret",
                &self.events_webhook_secret.as_ref().map(|_| "<set>"),
            )
            .field(
                "events_webhook_concurrency",
                &self.events_webhook_concurrency,
            )
            .field("events_webhook_timeout", &self.events_webhook_timeout)
            .finish()
    }
}

impl RecipientEventsOpts {
    /// Rejects settings that cannot work, naming the setting.
    pub fn check(&self) -> Result<(), CliError> {
        if self.recipient_events_queue_max == 0 {
            return Err(CliError::Usage(
                "HERALD_RECIPIENT_EVENTS_QUEUE_MAX must be at least 1".into(),
            ));
        }
        if self.recipient_events != EventsMode::Webhook {
            return Ok(());
        }
        let url = self
            .events_webhook_url
            .as_deref()
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .ok_or_else(|| {
                CliError::Usage(
                    "HERALD_RECIPIENT_EVENTS=webhook needs HERALD_EVENTS_WEBHOOK_URL (the CRM's endpoint)"
                        .into(),
                )
            })?;
        let parsed = reqwest::Url::parse(url)
            .map_err(|e| CliError::Usage(format!("HERALD_EVENTS_WEBHOOK_URL is not a URL: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(CliError::Usage(format!(
                "HERALD_EVENTS_WEBHOOK_URL must be http(s), got '{}'",
                parsed.scheme()
            )));
        }
        if self
            .events_webhook_secret
            .as_deref()
            .is_none_or(|s| s.trim().len() < 16)
        {
            return Err(CliError::Usage(
                "HERALD_RECIPIENT_EVENTS=webhook needs HERALD_EVENTS_WEBHOOK_SECRET of at least 16 characters (the receiver checks X-Herald-Signature with it; e.g. `openssl rand -hex 32`)"
                    .into(),
            ));
        }
        if !(1..=MAX_CONCURRENCY).contains(&self.events_webhook_concurrency) {
            return Err(CliError::Usage(format!(
                "HERALD_EVENTS_WEBHOOK_CONCURRENCY must be between 1 and {MAX_CONCURRENCY}, got {}",
                self.events_webhook_concurrency
            )));
        }
        if self.events_webhook_timeout < Duration::from_millis(100)
            || self.events_webhook_timeout > Duration::from_secs(120)
        {
            return Err(CliError::Usage(
                "HERALD_EVENTS_WEBHOOK_TIMEOUT must be between 100ms and 120s".into(),
            ));
        }
        Ok(())
    }

    /// How facts are recorded: `None` when events are off (nothing extra is written).
    pub fn options(&self) -> Result<Option<EventOptions>, CliError> {
        self.check()?;
        Ok(
            (self.recipient_events != EventsMode::Off).then_some(EventOptions {
                numbers: self.recipient_events_numbers,
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct P {
        #[command(flatten)]
        events: RecipientEventsOpts,
    }

    fn parse(args: &[&str]) -> Result<RecipientEventsOpts, clap::Error> {
        P::try_parse_from(["p"].iter().chain(args)).map(|p| p.events)
    }

    #[test]
    fn events_are_off_by_default_and_write_nothing() {
        let o = parse(&[]).unwrap();
        assert_eq!(o.recipient_events, EventsMode::Off);
        assert_eq!(o.options().unwrap(), None);
    }

    #[test]
    fn numbers_are_only_included_when_asked() {
        let o = parse(&["--recipient-events", "amqp"]).unwrap();
        assert_eq!(o.options().unwrap(), Some(EventOptions { numbers: false }));
        let o = parse(&[
            "--recipient-events",
            "amqp",
            "--recipient-events-numbers",
            "true",
        ])
        .unwrap();
        assert_eq!(o.options().unwrap(), Some(EventOptions { numbers: true }));
    }

    #[test]
    fn a_webhook_needs_a_url_and_a_secret_named_in_the_error() {
        let usage = |args: &[&str]| match parse(args).unwrap().check() {
            Err(CliError::Usage(m)) => m,
            other => panic!("expected a usage error, got {other:?}"),
        };
        assert!(usage(&["--recipient-events", "webhook"]).contains("HERALD_EVENTS_WEBHOOK_URL"));
        let m = usage(&[
            "--recipient-events",
            "webhook",
            "--events-webhook-url",
            "ftp://crm",
        ]);
        assert!(m.contains("http(s)"), "{m}");
        let m = usage(&[
            "--recipient-events",
            "webhook",
            "--events-webhook-url",
            "https://crm.example/herald",
        ]);
        assert!(m.contains("HERALD_EVENTS_WEBHOOK_SECRET"), "{m}");
        let m = usage(&[
            "--recipient-events",
            "webhook",
            "--events-webhook-url",
            "https://crm.example/herald",
            "--events-webhook-secret",
            "0123456789abcdef",
            "--events-webhook-concurrency",
            "0",
        ]);
        assert!(m.contains("HERALD_EVENTS_WEBHOOK_CONCURRENCY"), "{m}");
        assert!(parse(&["--recipient-events", "kafka"]).is_err());
    }

    #[test]
    fn the_secret_never_shows_in_debug_output() {
        let o = parse(&[
            "--recipient-events",
            "webhook",
            "--events-webhook-secret",
            "s3cret-s3cret-s3cret",
        ])
        .unwrap();
        assert!(!format!("{o:?}").contains("s3cret"));
    }
}
