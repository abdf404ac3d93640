//! The `amqp` sink: events published to `{prefix}.events` with routing key `recipient.<state>`
//! and publisher confirms, into herald's bounded `{prefix}.recipient-events` queue (and any
//! queue a CRM binds itself). One connection, opened on first use and again after a failure.

use async_trait::async_trait;
use chrono::Utc;
use lapin::types::ShortString;
use lapin::{BasicProperties, Connection};
use tokio::sync::Mutex;
use tracing::{info, warn};

use super::{Sink, SinkError};
use crate::amqp::{AmqpError, Publisher, Topology, connect};
use crate::store::OutboxEvent;

/// Publishes events with confirms.
pub struct AmqpSink {
    url: String,
    topology: Topology,
    /// `x-max-length` of the recipient-events queue.
    queue_max: u32,
    /// The open connection and its confirm channel; `None` until first use or after a failure.
    link: Mutex<Option<(Connection, Publisher)>>,
}

impl AmqpSink {
    pub fn new(url: impl Into<String>, topology: Topology, queue_max: u32) -> Self {
        Self {
            url: url.into(),
            topology,
            queue_max,
            link: Mutex::new(None),
        }
    }

    async fn publisher(&self) -> Result<Publisher, AmqpError> {
        let mut link = self.link.lock().await;
        if let Some((_, p)) = link.as_ref()
            && p.is_open()
        {
            return Ok(p.clone());
        }
        let conn = connect(&self.url, "recipient-events").await?;
        let publisher = Publisher::open(&conn).await?;
        self.topology
            .declare_recipient_events(publisher.channel(), self.queue_max)
            .await?;
        info!(
            queue = %self.topology.recipient_events_queue(),
            max_length = self.queue_max,
            "recipient events: publishing to {}",
            self.topology.events_exchange()
        );
        *link = Some((conn, publisher.clone()));
        Ok(publisher)
    }

    async fn forget(&self) {
        *self.link.lock().await = None;
    }
}

fn properties(e: &OutboxEvent) -> BasicProperties {
    let mut props = BasicProperties::default()
        .with_content_type(ShortString::from("application/json"))
        .with_delivery_mode(2)
        .with_timestamp(Utc::now().timestamp().max(0) as u64)
        .with_type(ShortString::from(e.state.routing_key()))
        .with_app_id(ShortString::from("herald"));
    let id = format!("{}/{}", e.message_key, e.state.as_str());
    if let Some(id) = crate::amqp::short_string(&id) {
        props = props.with_message_id(id);
    }
    props
}

#[async_trait]
impl Sink for AmqpSink {
    fn name(&self) -> &'static str {
        "amqp"
    }

    fn lanes(&self) -> usize {
        // Publishes are pipelined on one channel; their confirms come back in order.
        1
    }

    async fn deliver(&self, events: &[OutboxEvent]) -> (usize, Option<SinkError>) {
        let publisher = match self.publisher().await {
            Ok(p) => p,
            Err(e) => return (0, Some(e.into())),
        };
        let exchange = self.topology.events_exchange();
        let mut confirms = Vec::with_capacity(events.len());
        let mut failure = None;
        for e in events {
            match publisher
                .start_publish(
                    &exchange,
                    e.state.routing_key(),
                    false,
                    e.payload.as_bytes(),
                    properties(e),
                )
                .await
            {
                Ok(c) => confirms.push(c),
                Err(err) => {
                    failure = Some(err);
                    break;
                }
            }
        }
        // The first `n` confirmed in a row are taken; anything after a refusal is handed back
        // (a consumer may then see it twice: `event_id` is its dedup key).
        let mut taken = 0;
        let mut broken = false;
        for (e, confirm) in events.iter().zip(confirms) {
            let result = match confirm.await {
                Ok(c) => crate::amqp::check_confirm(c, &exchange, e.state.routing_key()),
                Err(err) => Err(err.into()),
            };
            match result {
                Ok(()) if !broken => taken += 1,
                Ok(()) => {}
                Err(err) => {
                    broken = true;
                    failure.get_or_insert(err);
                }
            }
        }
        if let Some(err) = &failure {
            if !matches!(err, AmqpError::Nacked) {
                self.forget().await;
            }
            warn!(error = %err, taken, handed_back = events.len() - taken, "recipient events not all published");
        }
        (taken, failure.map(SinkError::from))
    }
}
