//! `herald tokens`: the admin API's scoped bearer tokens. `create` prints the secret once
//! (standard output, so it can be piped into a secret store) and keeps only its SHA-256;
//! `list` never shows a secret; `revoke` takes effect on the next request in every process.
//! Creating and revoking are admin actions: audited as `cli@<host>`.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use clap::Subcommand;

use crate::app::audit::audited;
use crate::app::{CliError, GlobalOpts};
use crate::domain::{ApiToken, Clock, Role, TokenName, TokenSecret};
use crate::policy::access::Action;

/// Longest lifetime `--expires-in` accepts: a token meant to last longer should not expire.
const MAX_EXPIRES_IN: Duration = Duration::from_secs(10 * 366 * 24 * 3600);

#[derive(Subcommand, Debug)]
pub enum TokensCmd {
    /// Create a token and print its secret once (only a hash is stored).
    #[command(
        long_about = "Create a bearer token for the admin API and print its secret once, on standard \
output (only its SHA-256 is stored: a lost secret is revoked and replaced, never shown again).

Roles: operator (campaign pause/resume/cancel/budget, campaign reads, conversions), analyst \
(campaign status, reports and costs, numbers masked), privacy (contact export and erasure, the \
audit log), ingest (POST /api/conversions). HERALD_ADMIN_TOKEN acts as an operator token."
    )]
    Create {
        /// operator, analyst, privacy or ingest.
        #[arg(long)]
        role: String,
        /// Who holds it (unique, also after revocation): letters, digits, . _ - @.
        #[arg(long)]
        name: String,
        /// Lifetime, e.g. 90d or 12h (default: until revoked).
        #[arg(long)]
        expires_in: Option<String>,
    },
    /// List every token: name, role, status, created, expires, revoked, last used. Never a secret.
    List,
    /// Revoke a token: its next request answers 401, in every process.
    Revoke {
        /// The token's name.
        name: String,
    },
}

fn time(t: Option<DateTime<Utc>>) -> String {
    t.map_or_else(
        || "—".to_owned(),
        |t| t.to_rfc3339_opts(SecondsFormat::Secs, true),
    )
}

fn expires_in(raw: &str) -> Result<Duration, CliError> {
    let d = humantime::parse_duration(raw.trim()).map_err(|e| {
        CliError::Usage(format!(
            "--expires-in: '{raw}' is not a duration like 90d or 12h ({e})"
        ))
    })?;
    if d.is_zero() || d > MAX_EXPIRES_IN {
        return Err(CliError::Usage(format!(
            "--expires-in must be more than 0 and at most {}",
            humantime::format_duration(MAX_EXPIRES_IN)
        )));
    }
    Ok(d)
}

pub async fn tokens(g: &GlobalOpts, cmd: TokensCmd) -> Result<(), CliError> {
    let now = Clock::system().now();
    match cmd {
        TokensCmd::Create {
            role,
            name,
            expires_in: lifetime,
        } => {
            // Every argument is checked before the store is opened.
            let role = Role::parse(&role).map_err(|e| CliError::Usage(format!("--role: {e}")))?;
            let name = TokenName::parse(&name).map_err(CliError::Usage)?;
            let expires_at = lifetime
                .as_deref()
                .map(expires_in)
                .transpose()?
                .map(|d| now + chrono::Duration::from_std(d).unwrap_or_default());
            let store = g.open_store().await?;
            let secret = TokenSecret::generate();
            let token = ApiToken {
                name: name.clone(),
                role,
                secret_hash: secret.hash(),
                created_at: now,
                expires_at,
                revoked_at: None,
                last_used_at: None,
            };
            let outcome = match store.create_token(&token).await {
                Ok(true) => Ok(()),
                Ok(false) => Err(CliError::Usage(format!(
                    "--name: a token named '{name}' exists (names stay taken after revocation, so the audit log stays unambiguous); choose another"
                ))),
                Err(e) => Err(e.into()),
            };
            audited(
                &*store,
                Action::TokensCreate,
                Some(name.to_string()),
                outcome,
            )
            .await?;
            println!("{}", secret.expose());
            eprintln!(
                "token '{name}' created with role {role}, {}; the secret above is shown once: store it now (herald keeps only its hash)",
                match expires_at {
                    Some(t) => format!("expiring {}", time(Some(t))),
                    None => "valid until revoked".to_owned(),
                }
            );
            Ok(())
        }
        TokensCmd::List => {
            let store = g.open_store().await?;
            let tokens = store.api_tokens().await?;
            if tokens.is_empty() {
                println!("no tokens (create one with `herald tokens create --role … --name …`)");
                return Ok(());
            }
            println!(
                "{:<24} {:<9} {:<8} {:<21} {:<21} {:<21} {:<21}",
                "name", "role", "status", "created", "expires", "revoked", "last used"
            );
            for t in tokens {
                println!(
                    "{:<24} {:<9} {:<8} {:<21} {:<21} {:<21} {:<21}",
                    t.name.as_str(),
                    t.role.as_str(),
                    t.status(now).as_str(),
                    time(Some(t.created_at)),
                    time(t.expires_at),
                    time(t.revoked_at),
                    time(t.last_used_at)
                );
            }
            Ok(())
        }
        TokensCmd::Revoke { name } => {
            let name = TokenName::parse(&name)
                .map_err(|e| CliError::Usage(e.replace("--name", "NAME")))?;
            let store = g.open_store().await?;
            let outcome = match store.revoke_token(name.as_str(), now).await {
                Ok(Some(t)) => Ok(t),
                Ok(None) => Err(CliError::Usage(format!(
                    "no token named '{name}' (see `herald tokens list`)"
                ))),
                Err(e) => Err(e.into()),
            };
            let token = audited(
                &*store,
                Action::TokensRevoke,
                Some(name.to_string()),
                outcome,
            )
            .await?;
            match token.revoked_at {
                Some(at) if at < now => {
                    println!("token '{name}' was already revoked at {}", time(Some(at)))
                }
                _ => println!(
                    "token '{name}' revoked: its next request answers 401, in every process"
                ),
            }
            Ok(())
        }
    }
}
