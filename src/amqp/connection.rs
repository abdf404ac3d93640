//! Connecting to RabbitMQ (with back-off, for workers that must outlive broker restarts) and
//! publishing with publisher confirms, which every herald publish uses: a message counts as
//! handed over only once the broker has confirmed it durable and routed.

use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::LongString;
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::app::CliError;
use crate::policy::backoff::retry_delay;

/// First wait after a failed connection attempt; doubles per attempt with full jitter.
const CONNECT_BASE: Duration = Duration::from_millis(500);
/// Longest wait between attempts: a broker restart takes seconds to a minute; polling faster
/// than this only fills logs.
const CONNECT_CAP: Duration = Duration::from_secs(30);

/// A RabbitMQ failure, classified by what the caller can do about it.
#[derive(Debug, thiserror::Error)]
pub enum AmqpError {
    /// The broker or the connection is gone: reconnect (workers) or report (CLI).
    #[error("RabbitMQ: {0}")]
    Broker(#[from] lapin::Error),
    /// The broker refused to take the message (negative confirm).
    #[error("RabbitMQ refused the message (negative publisher confirm)")]
    Nacked,
    /// No queue is bound for the message: it would have been dropped.
    #[error(
        "RabbitMQ could not route the message to any queue (exchange {exchange}, routing key {routing_key})"
    )]
    Unroutable {
        exchange: String,
        routing_key: String,
    },
    /// A routing key or message id longer than AMQP's 255-byte short string.
    #[error("{0} is longer than the 255 bytes AMQP allows")]
    TooLong(&'static str),
}

/// Connects once. The connection is named so `rabbitmqctl list_connections name` shows which
/// herald process it is.
pub async fn connect(url: &str, role: &str) -> Result<Connection, AmqpError> {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "herald".into());
    let name = format!("herald {role} {host}/{}", std::process::id());
    let props = ConnectionProperties::default().with_connection_name(LongString::from(name));
    Ok(Connection::connect(url, props).await?)
}

/// Connects, retrying with exponential back-off until it works or `stop` is cancelled (then
/// `None`). Failures are logged, never fatal: a worker started before its broker just waits.
pub async fn connect_with_backoff(
    url: &str,
    role: &str,
    stop: &CancellationToken,
) -> Option<Connection> {
    let mut attempt = 0u32;
    loop {
        let outcome = tokio::select! {
            c = connect(url, role) => c,
            _ = stop.cancelled() => return None,
        };
        match outcome {
            Ok(conn) => return Some(conn),
            Err(e) => {
                attempt += 1;
                let wait = retry_delay(attempt, CONNECT_BASE, CONNECT_CAP, rand::random::<f64>())
                    .max(CONNECT_BASE / 5);
                warn!(
                    url = %redact_url(url),
                    error = %e,
                    attempt,
                    retry_in = ?wait,
                    "cannot connect to RabbitMQ; retrying"
                );
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.cancelled() => return None,
                }
            }
        }
    }
}

/// A channel in confirm mode. Cheap to clone; safe to publish from many tasks at once (each
/// publish awaits its own confirm).
#[derive(Clone)]
pub struct Publisher {
    channel: Channel,
}

impl Publisher {
    /// Opens a channel on `conn` and puts it in confirm mode.
    pub async fn open(conn: &Connection) -> Result<Self, AmqpError> {
        let channel = conn.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(Self { channel })
    }

    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    /// The channel can still publish (not closed by the broker or a lost connection).
    pub fn is_open(&self) -> bool {
        self.channel.status().connected()
    }

    /// Publishes and waits for the broker's confirm. `mandatory` turns "no queue bound" into
    /// [`AmqpError::Unroutable`] instead of a silent drop — used for jobs, which must land in a
    /// queue; events go out without it (nobody listening is fine).
    pub async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        mandatory: bool,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<(), AmqpError> {
        let confirm = self
            .start_publish(exchange, routing_key, mandatory, body, properties)
            .await?;
        check_confirm(confirm.await?, exchange, routing_key)
    }

    /// Sends without waiting for the confirm, so a caller can keep several in flight (the
    /// enqueue CLI). Check the returned confirm with [`check_confirm`].
    pub async fn start_publish(
        &self,
        exchange: &str,
        routing_key: &str,
        mandatory: bool,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<lapin::PublisherConfirm, AmqpError> {
        let key = super::topology::short(routing_key).ok_or(AmqpError::TooLong("routing key"))?;
        let exchange = super::topology::short(exchange).ok_or(AmqpError::TooLong("exchange"))?;
        Ok(self
            .channel
            .basic_publish(
                exchange,
                key,
                BasicPublishOptions {
                    mandatory,
                    ..BasicPublishOptions::default()
                },
                body,
                properties,
            )
            .await?)
    }
}

/// Turns a broker confirm into success or the reason the message was not taken.
pub fn check_confirm(
    confirmation: Confirmation,
    exchange: &str,
    routing_key: &str,
) -> Result<(), AmqpError> {
    match confirmation {
        Confirmation::Ack(None) => Ok(()),
        Confirmation::Ack(Some(_returned)) => Err(AmqpError::Unroutable {
            exchange: exchange.to_owned(),
            routing_key: routing_key.to_owned(),
        }),
        Confirmation::Nack(_) => Err(AmqpError::Nacked),
        // Every herald channel that publishes is in confirm mode; reaching this is a bug, and
        // treating it as "not confirmed" keeps the caller from acking on a guess.
        Confirmation::NotRequested => Err(AmqpError::Nacked),
    }
}

/// AMQP settings shared by `herald worker` and `herald enqueue` (DESIGN §1.1).
#[derive(clap::Args, Debug, Clone)]
pub struct AmqpOpts {
    /// RabbitMQ URL (contains the password: never logged in full).
    #[arg(
        long,
        env = "HERALD_AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f",
        hide_env_values = true,
        hide_default_value = true
    )]
    pub amqp_url: String,
    /// Prefix of every exchange and queue name: `{prefix}.jobs`, `{prefix}.dead`, …
    #[arg(long, env = "HERALD_AMQP_PREFIX", default_value = "herald")]
    pub amqp_prefix: String,
}

impl AmqpOpts {
    /// Rejects settings that cannot work before anything connects.
    pub fn check(&self) -> Result<(), CliError> {
        if !(self.amqp_url.starts_with("amqp://") || self.amqp_url.starts_with("amqps://")) {
            return Err(CliError::Usage(format!(
                "HERALD_AMQP_URL must be an amqp:// or amqps:// URL, got '{}'",
                redact_url(&self.amqp_url)
            )));
        }
        let p = &self.amqp_prefix;
        // Longest generated name is `{prefix}.delay.30m`; queue names are short strings.
        if p.is_empty()
            || p.len() > 200
            || !p
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        {
            return Err(CliError::Usage(format!(
                "HERALD_AMQP_PREFIX must be 1–200 characters of letters, digits, '.', '-' or '_', got '{p}'"
            )));
        }
        Ok(())
    }

    pub fn url_redacted(&self) -> String {
        redact_url(&self.amqp_url)
    }
}

pub use crate::telemetry::redact::redact_url;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_never_shows() {
        assert_eq!(
            redact_url("amqp://herald:s3cret@rabbit:5672/%2f"),
            "amqp://herald:****@rabbit:5672/%2f"
        );
        assert_eq!(redact_url("amqp://rabbit"), "amqp://rabbit");
    }

    #[test]
    fn bad_prefixes_and_urls_are_usage_errors() {
        let ok = AmqpOpts {
            amqp_url: "amqp://guest:guest@127.0.0.1:5672/%2f".into(),
            amqp_prefix: "herald".into(),
        };
        assert!(ok.check().is_ok());
        let mut bad = ok.clone();
        bad.amqp_prefix = "has space".into();
        assert_eq!(bad.check().unwrap_err().exit_code(), 2);
        let mut bad = ok.clone();
        bad.amqp_url = "http://rabbit".into();
        assert_eq!(bad.check().unwrap_err().exit_code(), 2);
    }
}
