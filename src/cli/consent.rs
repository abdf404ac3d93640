//! `herald consent`: opt-ins imported from a CSV or recorded one by one, and opt-outs, each
//! for a category and a channel (UWG §7(2): WhatsApp consent is not SMS consent). The CSV is
//! checked whole before anything is written (GDPR: every consent keeps its proof).

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};

use super::parse::{category, channel, phone};
use crate::app::{CliError, GlobalOpts};
use crate::domain::{Category, ChannelKind, PhoneNumber, mask};
use crate::store::Consent;

#[derive(Subcommand, Debug)]
pub enum ConsentCmd {
    /// Import opt-ins from a CSV with columns phone, category, granted_at, source, proof and,
    /// optionally, channel (whatsapp or sms, any case; without the column every row is
    /// whatsapp). The whole file is checked first; one bad row imports nothing (see
    /// --skip-invalid).
    Import(ConsentImportArgs),
    /// Record one opt-in, for one category on one channel.
    Grant(ConsentGrantArgs),
    /// Record an opt-out (one category or all, one channel or all): honoured by the next batch
    /// of every worker.
    Revoke(ConsentRevokeArgs),
}

#[derive(Args, Debug)]
pub struct ConsentImportArgs {
    pub file: PathBuf,
    /// Import the valid rows and list the invalid ones instead of importing nothing.
    #[arg(long)]
    pub skip_invalid: bool,
}

#[derive(Args, Debug)]
pub struct ConsentGrantArgs {
    pub phone: String,
    #[arg(long)]
    pub category: String,
    /// The channel the person agreed to (whatsapp or sms). Consent to one is not consent to
    /// the other: SMS marketing needs its own.
    #[arg(long, value_parser = channel, default_value = "whatsapp")]
    pub channel: ChannelKind,
    /// Where the opt-in was given (form, checkout, …).
    #[arg(long)]
    pub source: String,
    /// What the person agreed to: the opt-in text or a reference to the signed record.
    #[arg(long)]
    pub proof: String,
    /// When it was given (RFC 3339); now if omitted.
    #[arg(long)]
    pub granted_at: Option<DateTime<Utc>>,
}

#[derive(Args, Debug)]
pub struct ConsentRevokeArgs {
    pub phone: String,
    /// Only this category; every category if omitted.
    #[arg(long)]
    pub category: Option<String>,
    /// Only this channel (whatsapp or sms); every channel if omitted, since a person who
    /// says stop rarely means "only here".
    #[arg(long, value_parser = channel)]
    pub channel: Option<ChannelKind>,
    #[arg(long, default_value = "cli")]
    pub source: String,
}

/// One CSV row of a consent import.
#[derive(Debug, serde::Deserialize)]
struct ConsentRow {
    phone: String,
    category: String,
    granted_at: String,
    source: String,
    proof: String,
    /// Optional column; without it every row is for WhatsApp (consents before channels).
    #[serde(default)]
    channel: Option<String>,
}

/// Parses a consent CSV; returns the consents and the errors with their line numbers.
pub fn parse_consent_csv(
    reader: impl std::io::Read,
) -> Result<(Vec<Consent>, Vec<String>), CliError> {
    let mut rdr = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(reader);
    let headers = rdr
        .headers()
        .map_err(|e| CliError::Usage(format!("cannot read the CSV header: {e}")))?
        .clone();
    for needed in ["phone", "category", "granted_at", "source", "proof"] {
        if !headers.iter().any(|h| h == needed) {
            return Err(CliError::Usage(format!(
                "the CSV has no '{needed}' column (need phone, category, granted_at, source, proof; channel is optional)"
            )));
        }
    }
    let has_channel = headers.iter().any(|h| h == "channel");
    let mut ok = Vec::new();
    let mut errors = Vec::new();
    for (i, row) in rdr.deserialize::<ConsentRow>().enumerate() {
        let line = i + 2;
        let row = match row {
            Ok(r) => r,
            Err(e) => {
                errors.push(format!("line {line}: {e}"));
                continue;
            }
        };
        let parsed = (|| -> Result<Consent, String> {
            let phone = PhoneNumber::parse(&row.phone)
                .map_err(|e| format!("phone {}: {e}", mask(&row.phone)))?;
            let category = row.category.parse::<Category>()?;
            // The value is not echoed: in a file whose columns slipped it may be a number.
            let channel = match (has_channel, row.channel.as_deref()) {
                (false, _) => ChannelKind::WhatsApp,
                (true, None) => {
                    return Err("column 'channel' is empty (write whatsapp or sms)".into());
                }
                (true, Some(raw)) => channel(raw)
                    .map_err(|_| "column 'channel' is neither whatsapp nor sms".to_owned())?,
            };
            let granted_at = DateTime::parse_from_rfc3339(&row.granted_at)
                .map_err(|e| format!("granted_at '{}': {e} (use RFC 3339)", row.granted_at))?
                .with_timezone(&Utc);
            if granted_at > Utc::now() + chrono::Duration::minutes(5) {
                return Err(format!("granted_at {} is in the future", row.granted_at));
            }
            if row.source.is_empty() || row.proof.is_empty() {
                return Err("source and proof must not be empty (GDPR: keep proof)".into());
            }
            Ok(Consent {
                phone,
                category,
                channel,
                granted_at,
                source: row.source,
                proof: row.proof,
            })
        })();
        match parsed {
            Ok(c) => ok.push(c),
            Err(e) => errors.push(format!("line {line}: {e}")),
        }
    }
    Ok((ok, errors))
}

pub async fn consent(g: &GlobalOpts, cmd: ConsentCmd) -> Result<(), CliError> {
    match cmd {
        ConsentCmd::Import(a) => {
            let file = std::fs::File::open(&a.file)
                .map_err(|e| CliError::Usage(format!("cannot open {}: {e}", a.file.display())))?;
            let (consents, errors) = parse_consent_csv(std::io::BufReader::new(file))?;
            if !errors.is_empty() {
                for e in errors.iter().take(20) {
                    eprintln!("  {e}");
                }
                if errors.len() > 20 {
                    eprintln!("  … and {} more", errors.len() - 20);
                }
                if !a.skip_invalid {
                    return Err(CliError::Usage(format!(
                        "{} invalid row(s) in {}: nothing imported (fix them, or pass --skip-invalid)",
                        errors.len(),
                        a.file.display()
                    )));
                }
            }
            let store = g.open_store().await?;
            let mut n = 0;
            for chunk in consents.chunks(1000) {
                n += store.grant_consents(chunk).await?;
            }
            println!(
                "{n} consent(s) imported{}",
                if errors.is_empty() {
                    String::new()
                } else {
                    format!(", {} invalid row(s) skipped", errors.len())
                }
            );
            Ok(())
        }
        ConsentCmd::Grant(a) => {
            let c = Consent {
                phone: phone(&a.phone)?,
                category: category(&a.category)?,
                channel: a.channel,
                granted_at: a.granted_at.unwrap_or_else(Utc::now),
                source: a.source,
                proof: a.proof,
            };
            let store = g.open_store().await?;
            store.grant_consents(std::slice::from_ref(&c)).await?;
            println!(
                "consent recorded for {} ({} on {})",
                c.phone, c.category, c.channel
            );
            Ok(())
        }
        ConsentCmd::Revoke(a) => {
            let p = phone(&a.phone)?;
            let cat = a.category.as_deref().map(category).transpose()?;
            let store = g.open_store().await?;
            store
                .revoke_consent(&p, cat, a.channel, Utc::now(), &a.source)
                .await?;
            println!(
                "consent revoked for {} ({} on {})",
                p,
                cat.map_or("all categories".into(), |c| c.to_string()),
                a.channel.map_or("all channels".into(), |c| c.to_string())
            );
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consent_csv_rows_are_checked_with_line_numbers() {
        let csv = "phone,category,granted_at,source,proof\n\
                   +4915112345678,marketing,2026-01-02T10:00:00Z,checkout,box ticked v3\n\
                   015112345678,marketing,2026-01-02T10:00:00Z,checkout,x\n\
                   +4915112345679,promo,2026-01-02T10:00:00Z,checkout,x\n\
                   +4915112345670,utility,yesterday,checkout,x\n";
        let (ok, errors) = parse_consent_csv(csv.as_bytes()).unwrap();
        assert_eq!(ok.len(), 1);
        assert_eq!(errors.len(), 3);
        assert!(errors[0].starts_with("line 3: phone"), "{}", errors[0]);
        assert!(errors[1].starts_with("line 4"));
        assert!(errors[2].contains("granted_at"));
        // Numbers never appear unmasked in errors.
        assert!(!errors[0].contains("015112345678"));
    }

    #[test]
    fn without_a_channel_column_every_consent_is_for_whatsapp() {
        let csv = "phone,category,granted_at,source,proof\n\
                   +4915112345678,marketing,2026-01-02T10:00:00Z,checkout,x\n";
        let (ok, errors) = parse_consent_csv(csv.as_bytes()).unwrap();
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(ok[0].channel, ChannelKind::WhatsApp);
    }

    #[test]
    fn the_channel_column_is_read_in_any_case_and_a_bad_value_names_line_and_column() {
        let csv = "phone,category,channel,granted_at,source,proof\n\
                   +4915112345678,marketing,SMS,2026-01-02T10:00:00Z,checkout,x\n\
                   +4915112345679,marketing,WhatsApp,2026-01-02T10:00:00Z,checkout,x\n\
                   +4915112345670,marketing,+4915112345670,2026-01-02T10:00:00Z,checkout,x\n\
                   +4915112345671,marketing,,2026-01-02T10:00:00Z,checkout,x\n";
        let (ok, errors) = parse_consent_csv(csv.as_bytes()).unwrap();
        let channels: Vec<_> = ok.iter().map(|c| c.channel).collect();
        assert_eq!(channels, [ChannelKind::Sms, ChannelKind::WhatsApp]);
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(
            errors[0].starts_with("line 4: column 'channel'"),
            "{}",
            errors[0]
        );
        assert!(
            errors[1].starts_with("line 5: column 'channel' is empty"),
            "{}",
            errors[1]
        );
        // A number in the wrong column is never echoed.
        assert!(errors.iter().all(|e| !e.contains("4915112345670")));
    }

    #[test]
    fn consent_csv_needs_its_columns() {
        assert!(parse_consent_csv("phone,category\n".as_bytes()).is_err());
    }
}
