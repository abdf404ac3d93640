//! Recipient phone numbers in E.164, parsed once with the `phonenumber` crate, and the mask
//! used wherever a number could reach a log line.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A phone number validated and normalised to E.164 (`+4915112345678`).
///
/// The inside of herald never re-checks the string: holding a `PhoneNumber` means it parsed.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PhoneNumber(String);

/// Why a string is not a usable recipient number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    #[error("phone number must start with '+' and the country code")]
    MissingPlus,
    #[error("not a phone number: {0}")]
    Unparsable(String),
    #[error("not a valid number for its country")]
    Invalid,
}

impl PhoneNumber {
    /// Parses a number written with `+` and country code. Spaces, dashes and brackets are
    /// accepted; a number without `+` is rejected rather than guessed, because Meta would
    /// prefix the *sender's* country to it.
    pub fn parse(raw: &str) -> Result<Self, PhoneError> {
        let trimmed = raw.trim();
        if !trimmed.starts_with('+') {
            return Err(PhoneError::MissingPlus);
        }
        let parsed =
            phonenumber::parse(None, trimmed).map_err(|e| PhoneError::Unparsable(e.to_string()))?;
        if !phonenumber::is_valid(&parsed) {
            return Err(PhoneError::Invalid);
        }
        Ok(Self(
            parsed.format().mode(phonenumber::Mode::E164).to_string(),
        ))
    }

    /// Wraps a string already known to be E.164 (read back from the store).
    pub fn from_trusted(e164: impl Into<String>) -> Self {
        Self(e164.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The digits without `+`, as Meta reports them in `wa_id` and `recipient_id`.
    pub fn digits(&self) -> &str {
        &self.0[1..]
    }

    /// The number masked for logs: `+49151****678`.
    pub fn masked(&self) -> String {
        mask(&self.0)
    }
}

/// Masks the middle of a phone number for logs and reports: keeps the first six and last three
/// characters (`+49151****678`). Short inputs are masked whole.
pub fn mask(number: &str) -> String {
    let chars: Vec<char> = number.chars().collect();
    if chars.len() <= 9 {
        return "*".repeat(chars.len());
    }
    let head: String = chars[..6].iter().collect();
    let tail: String = chars[chars.len() - 3..].iter().collect();
    format!("{head}****{tail}")
}

impl fmt::Display for PhoneNumber {
    /// Displays masked, so a number formatted into a log line never leaks.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

impl fmt::Debug for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PhoneNumber({})", self.masked())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn german_mobile_numbers_normalise_to_e164() {
        let n = PhoneNumber::parse("+49 151 1234-5678").unwrap();
        assert_eq!(n.as_str(), "+4915112345678");
        assert_eq!(n.digits(), "4915112345678");
    }

    #[test]
    fn numbers_without_plus_are_rejected_not_guessed() {
        assert_eq!(
            PhoneNumber::parse("015112345678"),
            Err(PhoneError::MissingPlus)
        );
    }

    #[test]
    fn garbage_and_impossible_numbers_are_rejected() {
        assert!(PhoneNumber::parse("+hello").is_err());
        assert!(PhoneNumber::parse("+49 1").is_err());
        assert!(PhoneNumber::parse("+").is_err());
    }

    #[test]
    fn masking_keeps_country_prefix_and_last_digits() {
        assert_eq!(mask("+4915112345678"), "+49151****678");
        assert_eq!(mask("+4912"), "*****");
        let n = PhoneNumber::parse("+4915112345678").unwrap();
        assert_eq!(format!("{n}"), "+49151****678");
        assert_eq!(format!("{n:?}"), "PhoneNumber(+49151****678)");
    }

    proptest::proptest! {
        #[test]
        fn masking_never_reveals_the_middle(digits in "[0-9]{9,14}") {
            let raw = format!("+{digits}");
            let masked = mask(&raw);
            proptest::prop_assert!(masked.contains("****"));
            proptest::prop_assert_eq!(masked.len(), 13);
        }

        #[test]
        fn parsing_never_panics(raw in ".{0,30}") {
            let _ = PhoneNumber::parse(&raw);
        }
    }
}
