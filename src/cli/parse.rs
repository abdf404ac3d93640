//! Command-line strings into checked domain types, with usage errors (exit 2) that never
//! echo a full phone number.

use crate::app::CliError;
use crate::domain::{CampaignId, Category, ChannelKind, PhoneNumber, mask};

pub(super) fn phone(raw: &str) -> Result<PhoneNumber, CliError> {
    PhoneNumber::parse(raw).map_err(|e| CliError::Usage(format!("'{}': {e}", mask(raw))))
}

pub(super) fn category(raw: &str) -> Result<Category, CliError> {
    raw.parse().map_err(CliError::Usage)
}

/// A channel as flags and CSV files may write it: `whatsapp` or `sms`, in any case.
pub(super) fn channel(raw: &str) -> Result<ChannelKind, String> {
    raw.to_ascii_lowercase().parse()
}

pub(super) fn campaign_id(raw: &str) -> Result<CampaignId, CliError> {
    CampaignId::parse(raw).map_err(|e| CliError::Usage(format!("campaign id: {e}")))
}
