//! A small struct around one `reqwest::Client`. Connections are pooled and kept alive (the
//! send path is thousands of requests per second to one host); every request has a timeout.
//! The access token is kept out of `Debug` output and logs.

use std::time::Duration;

use reqwest::StatusCode;

use super::wire::{ErrorEnvelope, PhoneNumberInfo, SendAccepted, TemplateInfo, TemplatePage};
use crate::domain::SenderId;
use crate::policy::classify::Transport;

/// Where and how to reach the Graph API.
#[derive(Clone)]
pub struct GraphConfig {
    /// `HERALD_GRAPH_URL`, e.g. `https://graph.facebook.com` or a local simulator.
    pub base_url: String,
    /// `HERALD_GRAPH_VERSION`, e.g. `v25.0`.
    pub version: String,
    /// `HERALD_ACCESS_TOKEN`; never printed.
    pub access_token: Option<String>,
    /// Whole-request timeout. Meta answers in well under a second; 30 s covers its bad days.
    /// A timeout after the request was written makes the outcome *unknown*.
    pub request_timeout: Duration,
    /// Connection set-up timeout; failing here is safe to retry (nothing was sent).
    pub connect_timeout: Duration,
    /// Idle keep-alive connections kept per host: at least the in-flight bound, so a burst
    /// doesn't open and close connections.
    pub pool_idle_per_host: usize,
    /// Speak HTTP/2 without negotiation (h2c) to a plain-http Graph URL, such as the local
    /// simulator. Over https, HTTP/2 is negotiated with ALPN anyway.
    pub http2_prior_knowledge: bool,
    /// HTTP/2 connections to spread requests over (h2c or negotiated): one `reqwest::Client`
    /// keeps one HTTP/2 connection per host, and a server bounds its concurrent streams
    /// (Meta's and hyper's: 100–200), so requests in flight beyond that would queue behind
    /// one connection. Ignored for HTTP/1.1, where the pool opens what is needed.
    pub http2_connections: usize,
}

impl std::fmt::Debug for GraphConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GraphConfig")
            .field("base_url", &self.base_url)
            .field("version", &self.version)
            .field(
                "access_token",
                &self.access_token.as_ref().map(|_| "<redacted>"),
            )
            .field("request_timeout", &self.request_timeout)
            .finish()
    }
}

impl Default for GraphConfig {
    fn default() -> Self {
        Self {
            base_url: "https://graph.facebook.com".into(),
            version: "v25.0".into(),
            access_token: None,
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            pool_idle_per_host: 1024,
            http2_prior_knowledge: false,
            http2_connections: 50,
        }
    }
}

/// What one send attempt produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendResult {
    /// HTTP 200: Meta accepted the message (which is not yet delivered).
    Accepted {
        wamid: String,
        /// accepted, held_for_quality_assessment or paused.
        message_status: String,
    },
    /// Graph's error envelope.
    Refused {
        code: i64,
        message: String,
        http_status: u16,
    },
    /// No usable answer; the variant says whether the request may have reached Meta.
    Transport { kind: Transport, detail: String },
}

/// Errors of the non-send calls (template and phone-number reads).
#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    #[error("Graph API refused the request: code {code}: {message}")]
    Api { code: i64, message: String },
    #[error("cannot reach the Graph API at {url}: {source}")]
    Unreachable { url: String, source: reqwest::Error },
    #[error("unexpected answer from the Graph API ({status}): {body}")]
    Unexpected { status: u16, body: String },
}

#[derive(Clone)]
pub struct GraphClient {
    /// The client for everything but sends, and the first of `senders`.
    http: reqwest::Client,
    /// Clients sends rotate over: one per HTTP/2 connection, or just `http` for HTTP/1.1.
    senders: std::sync::Arc<[reqwest::Client]>,
    next: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// `{base}/{version}` without a trailing slash.
    root: String,
    bearer: Option<String>,
}

impl std::fmt::Debug for GraphClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GraphClient")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

impl GraphClient {
    pub fn new(config: &GraphConfig) -> Result<Self, reqwest::Error> {
        let build = || {
            let mut builder = reqwest::Client::builder();
            if config.http2_prior_knowledge {
                builder = builder
                    .http2_prior_knowledge()
                    .http2_adaptive_window(true)
                    .http2_max_frame_size(Some(64 * 1024));
            }
            builder
                .timeout(config.request_timeout)
                .connect_timeout(config.connect_timeout)
                .pool_max_idle_per_host(config.pool_idle_per_host)
                .pool_idle_timeout(Duration::from_secs(60))
                .tcp_nodelay(true)
                .user_agent(concat!("herald/", env!("CARGO_PKG_VERSION")))
                .build()
        };
        let http = build()?;
        let mut senders = vec![http.clone()];
        if config.http2_prior_knowledge {
            for _ in 1..config.http2_connections.max(1) {
                senders.push(build()?);
            }
        }
        Ok(Self {
            http,
            senders: senders.into(),
            next: Default::default(),
            root: format!(
                "{}/{}",
                config.base_url.trim_end_matches('/'),
                config.version.trim_matches('/')
            ),
            bearer: config.access_token.as_ref().map(|t| format!("Bearer {t}")),
        })
    }

    /// The client for the next send: round robin over the HTTP/2 connections.
    fn sender(&self) -> &reqwest::Client {
        if self.senders.len() == 1 {
            return &self.http;
        }
        let i = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        &self.senders[i % self.senders.len()]
    }

    /// The URL messages for `sender` are posted to. Callers cache it per sender.
    pub fn messages_url(&self, sender: &SenderId) -> String {
        format!("{}/{}/messages", self.root, sender)
    }

    fn authorize(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.bearer {
            Some(b) => req.header(reqwest::header::AUTHORIZATION, b),
            None => req,
        }
    }

    /// Sends one message — a [`SendTemplate`] or a [`super::wire::SendSession`] — to `url`
    /// (from [`messages_url`](Self::messages_url)).
    pub async fn send<B: serde::Serialize + ?Sized>(&self, url: &str, body: &B) -> SendResult {
        let payload = match serde_json::to_vec(body) {
            Ok(p) => p,
            Err(e) => {
                return SendResult::Transport {
                    kind: Transport::NotSent,
                    detail: format!("cannot encode request: {e}"),
                };
            }
        };
        let req = self
            .authorize(self.sender().post(url))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(payload);
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => return transport_failure(&e),
        };
        let status = resp.status();
        let bytes = match resp.bytes().await {
            Ok(b) => b,
            // The status line arrived, the body did not: Meta processed the request, but we
            // don't know the wamid. Unknown, not resent.
            Err(e) => {
                return SendResult::Transport {
                    kind: Transport::MaybeSent,
                    detail: format!("answer cut off after HTTP {status}: {e}"),
                };
            }
        };
        interpret_send(status, &bytes)
    }

    /// Every template of a WhatsApp Business Account, following `paging.next`.
    pub async fn templates(&self, waba_id: &str) -> Result<Vec<TemplateInfo>, GraphError> {
        let mut url = format!(
            "{}/{}/message_templates?fields=name,language,status,category&limit=100",
            self.root, waba_id
        );
        let mut all = Vec::new();
        // Bounded: a WABA has at most a few thousand templates; a server that pages forever
        // must not hang herald.
        for _ in 0..1000 {
            let page: TemplatePage = self.get_json(&url).await?;
            all.extend(page.data);
            match page.paging.and_then(|p| p.next) {
                Some(next) => url = next,
                None => return Ok(all),
            }
        }
        Err(GraphError::Unexpected {
            status: 200,
            body: "template list did not end after 1000 pages".into(),
        })
    }

    /// A business number's fields: status, quality, throughput level and messaging limit.
    pub async fn phone_number(&self, id: &SenderId) -> Result<PhoneNumberInfo, GraphError> {
        let url = format!(
            "{}/{}?fields=id,display_phone_number,verified_name,quality_rating,status,throughput,whatsapp_business_manager_messaging_limit",
            self.root, id
        );
        self.get_json(&url).await
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, GraphError> {
        let resp = self
            .authorize(self.http.get(url))
            .send()
            .await
            .map_err(|source| GraphError::Unreachable {
                url: redact_query(url),
                source,
            })?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|source| GraphError::Unreachable {
                url: redact_query(url),
                source,
            })?;
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|e| GraphError::Unexpected {
                status: status.as_u16(),
                body: format!(
                    "{e}: {}",
                    String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
                ),
            });
        }
        match serde_json::from_slice::<ErrorEnvelope>(&bytes) {
            Ok(env) => Err(GraphError::Api {
                code: env.error.code,
                message: env.error.message,
            }),
            Err(_) => Err(GraphError::Unexpected {
                status: status.as_u16(),
                body: String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned(),
            }),
        }
    }
}

fn redact_query(url: &str) -> String {
    url.split('?').next().unwrap_or(url).to_owned()
}

/// Reads a send answer. Decisions use the Graph error code, not the HTTP status.
pub fn interpret_send(status: StatusCode, body: &[u8]) -> SendResult {
    if let Ok(env) = serde_json::from_slice::<ErrorEnvelope>(body) {
        let details = env
            .error
            .error_data
            .and_then(|d| d.details)
            .map(|d| format!(" ({d})"))
            .unwrap_or_default();
        return SendResult::Refused {
            code: env.error.code,
            message: format!("{}{details}", env.error.message),
            http_status: status.as_u16(),
        };
    }
    if status.is_success() {
        return match serde_json::from_slice::<SendAccepted>(body) {
            Ok(ok) => match ok.messages.into_iter().next() {
                Some(m) => SendResult::Accepted {
                    wamid: m.id,
                    message_status: m.message_status.unwrap_or_else(|| "accepted".into()),
                },
                None => SendResult::Transport {
                    kind: Transport::MaybeSent,
                    detail: "HTTP 200 without a message id".into(),
                },
            },
            Err(e) => SendResult::Transport {
                kind: Transport::MaybeSent,
                detail: format!("HTTP 200 with an unreadable body: {e}"),
            },
        };
    }
    if status.is_server_error() {
        return SendResult::Transport {
            kind: Transport::ServerError,
            detail: format!("HTTP {status} without a Graph error"),
        };
    }
    // A 4xx without Graph's envelope (a proxy, a wrong URL): the request was refused before
    // Meta processed it. Retrying won't help; treat it as a payload problem of the campaign.
    SendResult::Refused {
        code: 100,
        message: format!(
            "HTTP {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        ),
        http_status: status.as_u16(),
    }
}

fn transport_failure(e: &reqwest::Error) -> SendResult {
    // `is_connect` covers refused connections, DNS and TLS failures: the request never left.
    // Anything else (timeout, reset, closed connection) may have happened after the request
    // was written: the outcome is unknown. hyper itself retries a request on a pooled
    // connection that closed before anything was written.
    let kind = if e.is_connect() {
        Transport::NotSent
    } else {
        Transport::MaybeSent
    };
    let mut detail = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        detail.push_str(": ");
        detail.push_str(&s.to_string());
        source = s.source();
    }
    SendResult::Transport { kind, detail }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn graph_errors_are_read_from_the_envelope_whatever_the_status() {
        let body = br#"{"error":{"message":"Rate limit hit","type":"OAuthException","code":130429,"fbtrace_id":"x"}}"#;
        assert!(matches!(
            interpret_send(StatusCode::BAD_REQUEST, body),
            SendResult::Refused { code: 130429, .. }
        ));
        assert!(matches!(
            interpret_send(StatusCode::INTERNAL_SERVER_ERROR, body),
            SendResult::Refused { code: 130429, .. }
        ));
    }

    #[test]
    fn bare_5xx_is_a_retryable_server_error() {
        assert!(matches!(
            interpret_send(StatusCode::BAD_GATEWAY, b"<html>"),
            SendResult::Transport {
                kind: Transport::ServerError,
                ..
            }
        ));
    }

    #[test]
    fn a_200_without_wamid_is_unknown() {
        assert!(matches!(
            interpret_send(StatusCode::OK, b"{}"),
            SendResult::Transport {
                kind: Transport::MaybeSent,
                ..
            }
        ));
    }

    #[test]
    fn the_token_never_shows_in_debug_output() {
        let cfg = GraphConfig {
            access_token: Some("EAAG-secret".into()),
            ..GraphConfig::default()
        };
        assert!(!format!("{cfg:?}").contains("EAAG"));
        let client = GraphClient::new(&cfg).unwrap();
        assert!(!format!("{client:?}").contains("EAAG"));
    }
}
