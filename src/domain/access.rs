//! Who may use the admin API, and what they did: the roles a scoped token carries, the token
//! itself as the store keeps it (a hash of the secret, never the secret), who acted (a token,
//! the bootstrap `HERALD_ADMIN_TOKEN`, or the command line on a host), and one row of the
//! append-only audit log. Nothing here does I/O; which role may do what is `policy::access`.

use std::fmt;

use chrono::{DateTime, Utc};
use rand::RngCore;
use serde::Serialize;
use sha2::{Digest, Sha256};

/// What a token may do (the matrix is `policy::access`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Runs campaigns: pause, resume, cancel, budget; reports conversions. Also what
    /// `HERALD_ADMIN_TOKEN` is.
    Operator,
    /// Reads campaign status, reports and costs, with numbers masked.
    Analyst,
    /// Answers data subjects: contact export and erasure; reads the audit log.
    Privacy,
    /// Machines that report what happened: conversion events in.
    Ingest,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Operator, Role::Analyst, Role::Privacy, Role::Ingest];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Operator => "operator",
            Self::Analyst => "analyst",
            Self::Privacy => "privacy",
            Self::Ingest => "ingest",
        }
    }

    /// A role by name (case-insensitive); the error lists the known ones.
    pub fn parse(raw: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|r| r.as_str().eq_ignore_ascii_case(raw.trim()))
            .ok_or_else(|| {
                format!(
                    "unknown role '{}' (known: {})",
                    raw.trim(),
                    Self::ALL.map(Role::as_str).join(", ")
                )
            })
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Longest token name: it appears in every audit row the token leaves.
pub const MAX_TOKEN_NAME: usize = 64;

/// A token's name: who holds it (`grafana`, `shop-backend`, `dpo-anna`). Letters, digits,
/// `.`, `_`, `-` and `@`, so it reads unambiguously in `token:<name>`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TokenName(String);

impl TokenName {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let name = raw.trim();
        if name.is_empty() || name.len() > MAX_TOKEN_NAME {
            return Err(format!(
                "--name must be 1 to {MAX_TOKEN_NAME} characters, got {}",
                name.len()
            ));
        }
        if let Some(c) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@')))
        {
            return Err(format!(
                "--name may hold letters, digits, '.', '_', '-' and '@' only, not {c:?}"
            ));
        }
        Ok(Self(name.to_owned()))
    }

    pub fn from_trusted(raw: impl Into<String>) -> Self {
        Self(raw.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TokenName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Every scoped token's secret starts with this, so a leaked one is recognisable (secret
/// scanners, log review) and told apart from `HERALD_ADMIN_TOKEN` without a lookup.
pub const TOKEN_PREFIX: &str = "hrld_";

/// A token's secret: `hrld_` and 32 random bytes in hex. Shown once, when created; only its
/// [`TokenSecret::hash`] is stored.
pub struct TokenSecret(String);

impl TokenSecret {
    /// A new secret from the thread's CSPRNG (ChaCha, seeded by the OS).
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        Self(format!("{TOKEN_PREFIX}{}", hex::encode(bytes)))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// What the store keeps and looks a presented secret up by.
    pub fn hash(&self) -> String {
        secret_hash(&self.0)
    }
}

impl fmt::Debug for TokenSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenSecret(<hidden>)")
    }
}

/// Hex SHA-256 of a presented secret. A fast hash is right here: the secret has 256 bits of
/// entropy, so nobody can find it from its hash by guessing, and every request hashes once.
pub fn secret_hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// A scoped token as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiToken {
    pub name: TokenName,
    pub role: Role,
    /// Hex SHA-256 of the secret ([`secret_hash`]).
    pub secret_hash: String,
    pub created_at: DateTime<Utc>,
    /// After it the token answers 401; `None`: until revoked.
    pub expires_at: Option<DateTime<Utc>>,
    /// Set once by `herald tokens revoke`; the row stays, for the record.
    pub revoked_at: Option<DateTime<Utc>>,
    /// Last request it authenticated, to about a minute (written at most once a minute).
    pub last_used_at: Option<DateTime<Utc>>,
}

/// Whether a token may authenticate at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenStatus {
    Active,
    Revoked,
    Expired,
}

impl TokenStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Revoked => "revoked",
            Self::Expired => "expired",
        }
    }
}

impl ApiToken {
    /// Revoked wins over expired: it is the deliberate act.
    pub fn status(&self, now: DateTime<Utc>) -> TokenStatus {
        if self.revoked_at.is_some_and(|t| t <= now) {
            TokenStatus::Revoked
        } else if self.expires_at.is_some_and(|t| t <= now) {
            TokenStatus::Expired
        } else {
            TokenStatus::Active
        }
    }
}

/// Who performed an admin action, as the audit log names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// A scoped token: `token:<name>`.
    Token(TokenName),
    /// `HERALD_ADMIN_TOKEN`, the bootstrap operator token: `bootstrap`.
    Bootstrap,
    /// The command line on a host: `cli@<hostname>`.
    Cli(String),
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Token(name) => write!(f, "token:{name}"),
            Self::Bootstrap => f.write_str("bootstrap"),
            Self::Cli(host) => write!(f, "cli@{host}"),
        }
    }
}

/// Longest `result` kept: an error message is for the reader, not a dump.
pub const MAX_RESULT_CHARS: usize = 300;

/// One admin action to append to the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// herald's clock when the action finished.
    pub at: DateTime<Utc>,
    pub actor: String,
    /// `campaign.pause`, `contact.export`, `tokens.create`, … (`policy::access::Action`).
    pub action: String,
    /// The campaign id, `contact:<keyed hash>`, the token's name; `None` when the action has
    /// no single target (a list of conversion events, a purge).
    pub target: Option<String>,
    /// `ok`, `denied`, `not_found`, or `error: …`.
    pub result: String,
    /// `METHOD /api/…` (the route's template: a number in a path never lands here) for HTTP.
    pub route: Option<String>,
}

impl AuditEntry {
    pub fn new(
        at: DateTime<Utc>,
        actor: &Actor,
        action: &str,
        target: Option<String>,
        result: impl Into<String>,
    ) -> Self {
        let result: String = result.into();
        let result = if result.chars().count() > MAX_RESULT_CHARS {
            let cut: String = result.chars().take(MAX_RESULT_CHARS).collect();
            format!("{cut}…")
        } else {
            result
        };
        Self {
            at,
            actor: actor.to_string(),
            action: action.to_owned(),
            target,
            result,
            route: None,
        }
    }

    pub fn with_route(mut self, route: &str) -> Self {
        self.route = Some(route.to_owned());
        self
    }
}

/// A stored audit row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditRecord {
    /// Ascending in insertion order.
    pub id: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub target: Option<String>,
    pub result: String,
    pub route: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_parse_by_name_and_unknown_ones_are_listed() {
        assert_eq!(Role::parse("Privacy"), Ok(Role::Privacy));
        let err = Role::parse("admin").unwrap_err();
        assert!(err.contains("operator, analyst, privacy, ingest"), "{err}");
    }

    #[test]
    fn token_names_are_short_and_plain() {
        assert!(TokenName::parse("grafana-ro").is_ok());
        assert!(TokenName::parse("dpo@acme").is_ok());
        assert!(TokenName::parse("").is_err());
        assert!(TokenName::parse("two words").is_err());
        assert!(TokenName::parse(&"x".repeat(65)).is_err());
    }

    #[test]
    fn secrets_are_random_prefixed_and_only_their_hash_is_kept() {
        let a = TokenSecret::generate();
        let b = TokenSecret::generate();
        assert!(a.expose().starts_with(TOKEN_PREFIX));
        assert_eq!(a.expose().len(), TOKEN_PREFIX.len() + 64);
        assert_ne!(a.expose(), b.expose());
        assert_eq!(a.hash(), secret_hash(a.expose()));
        assert_eq!(a.hash().len(), 64);
        assert!(!format!("{a:?}").contains(a.expose()));
    }

    #[test]
    fn a_revoked_or_expired_token_is_not_active() {
        let now = Utc::now();
        let mut t = ApiToken {
            name: TokenName::from_trusted("t"),
            role: Role::Analyst,
            secret_hash: String::new(),
            created_at: now,
            expires_at: Some(now + chrono::Duration::days(1)),
            revoked_at: None,
            last_used_at: None,
        };
        assert_eq!(t.status(now), TokenStatus::Active);
        assert_eq!(
            t.status(now + chrono::Duration::days(1)),
            TokenStatus::Expired
        );
        t.revoked_at = Some(now);
        assert_eq!(t.status(now), TokenStatus::Revoked);
    }

    #[test]
    fn actors_read_as_the_audit_log_names_them() {
        assert_eq!(
            Actor::Token(TokenName::from_trusted("shop")).to_string(),
            "token:shop"
        );
        assert_eq!(Actor::Bootstrap.to_string(), "bootstrap");
        assert_eq!(Actor::Cli("box".into()).to_string(), "cli@box");
        let long = AuditEntry::new(Utc::now(), &Actor::Bootstrap, "x", None, "e".repeat(400));
        assert_eq!(long.result.chars().count(), MAX_RESULT_CHARS + 1);
    }
}
