//! The `webhook` sink, for CRMs without a broker: events POSTed as JSON batches
//! (`{"version":1,"events":[…]}`, at most [`EVENTS_PER_POST`] a POST, in id order) to
//! `HERALD_EVENTS_WEBHOOK_URL`, signed with `X-Herald-Signature: sha256=<hex>` — the
//! HMAC-SHA-256 of the raw body keyed with `HERALD_EVENTS_WEBHOOK_SECRET`, the scheme Meta
//! uses for its own webhooks. Any 2xx takes the whole batch; anything else, a timeout or a
//! refused connection hands it back to the outbox for a later retry.

use std::time::Duration;

use async_trait::async_trait;

use super::{Sink, SinkError};
use crate::store::OutboxEvent;

/// The signature header of every POST.
pub const SIGNATURE_HEADER: &str = "x-herald-signature";
/// `<first id>-<last id>` of the batch: the same on every retry of the same batch.
pub const BATCH_HEADER: &str = "x-herald-batch";
/// Events per POST: small enough for any receiver's body limit (~100 KB).
const EVENTS_PER_POST: usize = 100;

/// Where and how the webhook sink POSTs.
#[derive(Clone)]
pub struct WebhookSinkConfig {
    pub url: String,
    pub secret: String,
    /// POSTs in flight at once (lanes).
    pub concurrency: usize,
    pub timeout: Duration,
}

/// POSTs batches of events, signed.
pub struct WebhookSink {
    client: reqwest::Client,
    config: WebhookSinkConfig,
}

impl WebhookSink {
    pub fn new(config: WebhookSinkConfig) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(5)))
            .pool_max_idle_per_host(config.concurrency)
            .build()?;
        Ok(Self { client, config })
    }

    /// The body of one POST: the events' stored JSON, as stored, in a batch object.
    pub fn body(events: &[OutboxEvent]) -> String {
        let mut body = String::from("{\"version\":1,\"events\":[");
        for (i, e) in events.iter().enumerate() {
            if i > 0 {
                body.push(',');
            }
            body.push_str(&e.payload);
        }
        body.push_str("]}");
        body
    }

    async fn post(&self, events: &[OutboxEvent]) -> Result<(), SinkError> {
        let body = Self::body(events);
        let signature = crate::http::sign(self.config.secret.as_bytes(), body.as_bytes());
        let batch = format!(
            "{}-{}",
            events.first().map_or(0, |e| e.id),
            events.last().map_or(0, |e| e.id)
        );
        let answer = self
            .client
            .post(&self.config.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, signature)
            .header(BATCH_HEADER, batch)
            .body(body)
            .send()
            .await
            // The URL may carry a token: never in an error.
            .map_err(|e| SinkError::Http(e.without_url().to_string()))?;
        let status = answer.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(SinkError::Http(format!("the receiver answered {status}")))
        }
    }
}

#[async_trait]
impl Sink for WebhookSink {
    fn name(&self) -> &'static str {
        "webhook"
    }

    fn lanes(&self) -> usize {
        self.config.concurrency
    }

    async fn deliver(&self, events: &[OutboxEvent]) -> (usize, Option<SinkError>) {
        let mut taken = 0;
        for chunk in events.chunks(EVENTS_PER_POST) {
            if let Err(e) = self.post(chunk).await {
                return (taken, Some(e));
            }
            taken += chunk.len();
        }
        (taken, None)
    }
}
