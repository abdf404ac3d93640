//! Identifier newtypes. Each is checked once where it enters herald (job parsing, CLI, store)
//! so the rest of the code can pass them around without re-validating strings.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::phone::PhoneNumber;

/// Longest identifier herald accepts. Keys travel in `biz_opaque_callback_data` (512 chars).
pub const MAX_ID_LEN: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {MAX_ID_LEN} characters")]
    TooLong,
    #[error("must not contain control characters")]
    Control,
    #[error("must be the numeric phone_number_id")]
    NotNumeric,
}

fn check_text(raw: &str) -> Result<(), IdError> {
    if raw.trim().is_empty() {
        return Err(IdError::Empty);
    }
    if raw.len() > MAX_ID_LEN {
        return Err(IdError::TooLong);
    }
    if raw.chars().any(char::is_control) {
        return Err(IdError::Control);
    }
    Ok(())
}

macro_rules! text_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn parse(raw: &str) -> Result<Self, IdError> {
                check_text(raw)?;
                Ok(Self(raw.to_owned()))
            }

            /// Wraps a value read back from the store, where it was checked on the way in.
            pub fn from_trusted(raw: impl Into<String>) -> Self {
                Self(raw.into())
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

text_id!(
    /// A campaign as the campaign system names it; groups jobs for control and reports.
    CampaignId
);
text_id!(
    /// One job of a campaign; also the AMQP `message_id`.
    JobId
);
text_id!(
    /// The ledger key that makes a send happen at most once, ever. Travels to Meta in
    /// `biz_opaque_callback_data` and comes back on every status webhook.
    IdempotencyKey
);

impl IdempotencyKey {
    /// The key of a recipient that brought none: stable over (campaign, number, template,
    /// language), so re-enqueueing the same campaign never sends twice. Readable prefix for
    /// support, hash for uniqueness (128 bits).
    pub fn derive(
        campaign: &CampaignId,
        to: &PhoneNumber,
        template_name: &str,
        language: &str,
    ) -> Self {
        Self::derive_from_raw(campaign, to.as_str(), template_name, language)
    }

    /// Same as [`derive`](Self::derive) for a `to` that did not parse, so an invalid number
    /// still gets a stable key and its `invalid_number` outcome is recorded once.
    pub fn derive_from_raw(
        campaign: &CampaignId,
        to: &str,
        template_name: &str,
        language: &str,
    ) -> Self {
        let mut h = Sha256::new();
        for part in [campaign.as_str(), to, template_name, language] {
            h.update(part.as_bytes());
            h.update([0u8]);
        }
        let digest = h.finalize();
        let short: String = campaign.as_str().chars().take(64).collect();
        Self(format!("k:{short}:{}", hex::encode(&digest[..16])))
    }
}

/// A business phone number as Meta identifies it (`phone_number_id`): digits only. It is also
/// the AMQP routing key of the jobs for that sender.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SenderId(String);

impl SenderId {
    pub fn parse(raw: &str) -> Result<Self, IdError> {
        check_text(raw)?;
        if !raw.bytes().all(|b| b.is_ascii_digit()) {
            return Err(IdError::NotNumeric);
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn from_trusted(raw: impl Into<String>) -> Self {
        Self(raw.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SenderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn campaign() -> CampaignId {
        CampaignId::parse("black-friday-2026").unwrap()
    }

    #[test]
    fn derived_keys_are_stable_and_distinguish_every_part() {
        let to = PhoneNumber::parse("+4915112345678").unwrap();
        let a = IdempotencyKey::derive(&campaign(), &to, "flash_sale", "de");
        assert_eq!(
            a,
            IdempotencyKey::derive(&campaign(), &to, "flash_sale", "de")
        );
        assert!(a.as_str().starts_with("k:black-friday-2026:"));
        assert_ne!(
            a,
            IdempotencyKey::derive(&campaign(), &to, "flash_sale", "en")
        );
        assert_ne!(a, IdempotencyKey::derive(&campaign(), &to, "other", "de"));
        let other = PhoneNumber::parse("+4917698765432").unwrap();
        assert_ne!(
            a,
            IdempotencyKey::derive(&campaign(), &other, "flash_sale", "de")
        );
        let c2 = CampaignId::parse("cyber-monday").unwrap();
        assert_ne!(a, IdempotencyKey::derive(&c2, &to, "flash_sale", "de"));
    }

    #[test]
    fn key_parts_cannot_be_shifted_into_each_other() {
        let c = CampaignId::parse("a").unwrap();
        let x = IdempotencyKey::derive_from_raw(&c, "+49", "1x", "de");
        let y = IdempotencyKey::derive_from_raw(&c, "+491", "x", "de");
        assert_ne!(x, y);
    }

    #[test]
    fn derived_keys_fit_the_callback_field() {
        let long = CampaignId::parse(&"c".repeat(MAX_ID_LEN)).unwrap();
        let k = IdempotencyKey::derive_from_raw(&long, "+1", "t", "en");
        assert!(k.as_str().len() <= 512);
    }

    #[test]
    fn sender_ids_are_digits() {
        assert!(SenderId::parse("106540352242922").is_ok());
        assert_eq!(SenderId::parse("10654a"), Err(IdError::NotNumeric));
        assert_eq!(SenderId::parse(""), Err(IdError::Empty));
    }

    #[test]
    fn text_ids_reject_empty_long_and_control() {
        assert_eq!(CampaignId::parse(" "), Err(IdError::Empty));
        assert_eq!(
            CampaignId::parse(&"x".repeat(MAX_ID_LEN + 1)),
            Err(IdError::TooLong)
        );
        assert_eq!(CampaignId::parse("a\nb"), Err(IdError::Control));
    }
}
