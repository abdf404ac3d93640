//! `herald ratecard check FILE`: whether a rate card may be trusted with budgets before it is
//! given to `--rate-card` — its shape, prices, calling codes (digits, none in two markets,
//! every country code of the numbering plan covered), tiers and versions. Parsing checks all
//! but coverage (`RateCard::parse`); coverage is checked here, per version.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::app::CliError;
use crate::policy::cost::RateCard;

#[derive(Subcommand, Debug)]
pub enum RateCardCmd {
    /// Validate a rate card and print one line per version; exit 2 naming the first problem.
    Check(CheckArgs),
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// The rate card (JSON); without it, the card shipped with herald.
    pub file: Option<PathBuf>,
}

pub fn ratecard(cmd: RateCardCmd) -> Result<(), CliError> {
    match cmd {
        RateCardCmd::Check(args) => {
            for line in check(args.file.as_ref())? {
                println!("{line}");
            }
            Ok(())
        }
    }
}

/// The summary lines of a valid card, or the first problem as a usage error.
fn check(file: Option<&PathBuf>) -> Result<Vec<String>, CliError> {
    let (card, shown) = match file {
        Some(p) => (
            RateCard::load(p).map_err(|e| CliError::Usage(e.to_string()))?,
            p.display().to_string(),
        ),
        None => (RateCard::builtin(), "built-in rate card".to_owned()),
    };
    let mut lines = vec![format!(
        "{shown}: {} ({}), {} version(s)",
        card.name,
        card.currency,
        card.versions().count()
    )];
    for v in card.versions() {
        if let Some(code) = v.uncovered_country_codes().first() {
            let when = v.effective_from.map_or("the card".to_owned(), |t| {
                format!("version {}", t.format("%Y-%m-%d"))
            });
            return Err(CliError::Usage(format!(
                "rate card is not valid: {when}: country code +{code} has no market (add it to a market, or to an `Other` row)"
            )));
        }
        lines.push(format!("  {}", v.summary()));
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_card_passes() {
        let lines = check(None).unwrap();
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert!(
            lines[1].starts_with("  2025-07-01: 33 markets"),
            "{lines:?}"
        );
    }
}
