//! Per-recipient events for CRMs (`HERALD_RECIPIENT_EVENTS`): each recipient's state changes
//! (sent, delivered, read, failed, fallback, follow_up_sent, converted, opted_out) published to
//! `{prefix}.events` with routing key `recipient.<state>` (`amqp`), or POSTed signed to the CRM
//! (`webhook`).
//!
//! The facts are written to a durable outbox in the store by whoever records them (the record
//! stage, the status webhooks, conversions, opt-outs), in the same transaction; the [`Relay`]
//! in every `worker` and `serve` claims them in id order, hands them to the [`Sink`], and
//! marks them — never on the send path. Off (the default), nothing is written or read.

mod amqp_sink;
mod relay;
mod webhook_sink;

use std::sync::Arc;

use async_trait::async_trait;

pub use amqp_sink::AmqpSink;
pub use relay::{Relay, RelayConfig, RoundOutcome, spawn_relay};
pub use webhook_sink::{BATCH_HEADER, SIGNATURE_HEADER, WebhookSink, WebhookSinkConfig};

use crate::amqp::{AmqpOpts, Topology};
use crate::app::{CliError, EventsMode, RecipientEventsOpts};
use crate::store::OutboxEvent;

/// Why a sink did not take a batch; the relay backs off and tries again.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("RabbitMQ: {0}")]
    Amqp(#[from] crate::amqp::AmqpError),
    #[error("events webhook: {0}")]
    Http(String),
}

/// Where events go. `deliver` takes one lane's events in id order and returns how many of
/// them, from the first, were taken for sure: the relay marks those published and hands the
/// rest back, so a key's later event never overtakes an earlier one.
#[async_trait]
pub trait Sink: Send + Sync + 'static {
    /// `amqp` or `webhook`: the `sink` label.
    fn name(&self) -> &'static str;
    /// How many lanes may deliver at once (a key's events always share a lane).
    fn lanes(&self) -> usize;
    /// Delivers `events` in order; returns how many, from the first, were taken, and the
    /// error that stopped it short (`None` when all were taken).
    async fn deliver(&self, events: &[OutboxEvent]) -> (usize, Option<SinkError>);
}

/// The sink the settings name, `None` when events are off. `amqp` publishes with the
/// process's RabbitMQ settings.
pub fn sink(
    opts: &RecipientEventsOpts,
    amqp: &AmqpOpts,
) -> Result<Option<Arc<dyn Sink>>, CliError> {
    opts.check()?;
    Ok(match opts.recipient_events {
        EventsMode::Off => None,
        EventsMode::Amqp => {
            amqp.check()?;
            Some(Arc::new(AmqpSink::new(
                amqp.amqp_url.clone(),
                Topology::new(amqp.amqp_prefix.clone()),
                opts.recipient_events_queue_max,
            )))
        }
        EventsMode::Webhook => {
            let config = WebhookSinkConfig {
                url: opts.events_webhook_url.clone().unwrap_or_default(),
                secret: opts.events_webhook_secret.clone().unwrap_or_default(),
                concurrency: opts.events_webhook_concurrency,
                timeout: opts.events_webhook_timeout,
            };
            let sink = WebhookSink::new(config).map_err(|e| {
                CliError::runtime(format!("cannot build the events webhook client: {e}"))
            })?;
            Some(Arc::new(sink))
        }
    })
}
