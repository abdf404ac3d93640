//! Revocations and suppressions, the same on both dialects (granting and looking consent up
//! are batch statements written per dialect).

use chrono::{DateTime, Utc};

use super::StoreResult;
use super::db::Arg;
use super::shared;
use super::sql::SqlStore;
use crate::domain::{Category, ChannelKind, PhoneNumber};

pub(super) async fn revoke_consent(
    db: &SqlStore,
    phone: &PhoneNumber,
    category: Option<Category>,
    channel: Option<ChannelKind>,
    at: DateTime<Utc>,
    source: &str,
) -> StoreResult<()> {
    // NULL in `category` or `channel` means every one of them.
    db.execute(
        "INSERT INTO revocations (phone, category, channel, revoked_at, source)
         VALUES ($1, $2, $3, $4, $5)",
        &[
            Arg::Text(phone.as_str()),
            Arg::OptText(category.map(Category::as_str)),
            Arg::OptText(channel.map(ChannelKind::as_str)),
            Arg::Time(at),
            Arg::Text(source),
        ],
    )
    .await?;
    Ok(())
}

pub(super) async fn suppress(db: &SqlStore, phone: &PhoneNumber, reason: &str) -> StoreResult<()> {
    // Idempotent: a second suppression of the same number for the same reason adds nothing.
    db.execute(
        "INSERT INTO suppressions (phone, phone_hash, reason, created_at)
         VALUES ($1, $2, $3, now())
         ON CONFLICT (phone_hash, reason) DO NOTHING",
        &[
            Arg::Text(phone.as_str()),
            Arg::Text(&shared::phone_hash(phone)),
            Arg::Text(reason),
        ],
    )
    .await?;
    Ok(())
}
