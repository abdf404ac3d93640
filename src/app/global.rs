//! Settings every subcommand shares (DESIGN §1.1): the store, the Graph API and its client.

use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use super::CliError;
use crate::graph::{GraphClient, GraphConfig};
use crate::store::{self, Store};

/// Options every subcommand accepts.
#[derive(Args, Debug, Clone)]
pub struct GlobalOpts {
    /// The store: `sqlite://…` (embedded default) or `postgres://…`.
    #[arg(
        long,
        env = "HERALD_DATABASE_URL",
        default_value = "sqlite://herald.db?mode=rwc",
        global = true,
        hide_env_values = true
    )]
    pub database_url: String,
    /// Graph API base URL (a local simulator in tests).
    #[arg(
        long,
        env = "HERALD_GRAPH_URL",
        default_value = "https://graph.facebook.com",
        global = true
    )]
    pub graph_url: String,
    /// Graph API version in request paths.
    #[arg(
        long,
        env = "HERALD_GRAPH_VERSION",
        default_value = "v25.0",
        global = true
    )]
    pub graph_version: String,
    /// Cloud API access token (secret: never logged).
    #[arg(
        long,
        env = "HERALD_ACCESS_TOKEN",
        hide_env_values = true,
        global = true
    )]
    pub access_token: Option<String>,
    /// Timeout of one Graph request, in seconds. A timeout after the request was written
    /// records the recipient as `unknown` (never resent).
    #[arg(
        long,
        env = "HERALD_HTTP_TIMEOUT",
        default_value_t = 30.0,
        global = true
    )]
    pub http_timeout: f64,
    /// Key of the keyed hash (HMAC-SHA-256) that replaces erased numbers (secret: never logged).
    /// Without it `herald contacts erase` refuses; set it once and never change it, or erased
    /// numbers are no longer recognised.
    #[arg(long, env = "HERALD_HASH_KEY", hide_env_values = true, global = true)]
    pub hash_key: Option<String>,
    /// Speak HTTP/2 to a plain-http Graph URL without negotiation (h2c, prior knowledge), as
    /// to the simulator. Over https HTTP/2 is negotiated with ALPN whatever this says.
    #[arg(long, env = "HERALD_GRAPH_HTTP2", global = true)]
    pub graph_http2: bool,
    /// HTTP/2 connections sends are spread over (each carries up to the server's stream
    /// limit, 100 at Meta): at least HERALD_MAX_INFLIGHT ÷ 100.
    #[arg(
        long,
        env = "HERALD_GRAPH_HTTP2_CONNECTIONS",
        default_value_t = 50,
        global = true
    )]
    pub graph_http2_connections: usize,
}

impl GlobalOpts {
    pub async fn open_store(&self) -> Result<Arc<dyn Store>, CliError> {
        if let Some(secret) = self.hash_key.as_deref().filter(|k| !k.trim().is_empty()) {
            let key = store::HashKey::new(secret).map_err(CliError::Usage)?;
            store::configure_hash_key(key).map_err(CliError::Usage)?;
        }
        store::open(&self.database_url).await.map_err(|e| match e {
            store::StoreError::UnsupportedUrl(_) => CliError::Usage(e.to_string()),
            other => CliError::runtime(format!(
                "cannot open the database {}: {other}",
                self.database_url_redacted()
            )),
        })
    }

    /// The database URL without its password, for messages.
    pub fn database_url_redacted(&self) -> String {
        redact_url(&self.database_url)
    }

    pub fn graph_config(&self) -> Result<GraphConfig, CliError> {
        if !(self.http_timeout > 0.0 && self.http_timeout <= 600.0) {
            return Err(CliError::Usage(
                "--http-timeout must be between 0 and 600 seconds".into(),
            ));
        }
        if !(1..=1000).contains(&self.graph_http2_connections) {
            return Err(CliError::Usage(format!(
                "HERALD_GRAPH_HTTP2_CONNECTIONS must be between 1 and 1000, got {}",
                self.graph_http2_connections
            )));
        }
        if !(self.graph_url.starts_with("http://") || self.graph_url.starts_with("https://")) {
            return Err(CliError::Usage(format!(
                "HERALD_GRAPH_URL must be an http(s) URL, got '{}'",
                self.graph_url
            )));
        }
        Ok(GraphConfig {
            base_url: self.graph_url.clone(),
            version: self.graph_version.clone(),
            access_token: self.access_token.clone(),
            request_timeout: Duration::from_secs_f64(self.http_timeout),
            http2_prior_knowledge: self.graph_http2,
            http2_connections: self.graph_http2_connections,
            ..GraphConfig::default()
        })
    }

    pub fn graph_client(&self) -> Result<GraphClient, CliError> {
        GraphClient::new(&self.graph_config()?)
            .map_err(|e| CliError::runtime(format!("cannot build the HTTP client: {e}")))
    }
}

use crate::telemetry::redact::redact_url;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_hidden_in_urls() {
        assert_eq!(
            redact_url("postgres://herald:s3cret@db:5432/herald"),
            "postgres://herald:****@db:5432/herald"
        );
        assert_eq!(redact_url("sqlite://herald.db"), "sqlite://herald.db");
        assert_eq!(
            redact_url("amqp://guest:guest@127.0.0.1:5672/%2f"),
            "amqp://guest:****@127.0.0.1:5672/%2f"
        );
    }
}
