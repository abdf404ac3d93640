//! Conversion batches on SQLite: the ledger facts of every event looked up in one statement,
//! the attributed rows inserted in one more (`ON CONFLICT DO NOTHING`: an `event_id` is stored
//! once, ever), both over `json_each` in one `BEGIN IMMEDIATE` transaction.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::{SqliteStore, json_keys, now_ms, to_json};
use crate::domain::EventOptions;
use crate::domain::{CampaignId, Conversion, ConversionTally, IdempotencyKey, PhoneNumber};
use crate::store::StoreResult;
use crate::store::conversions::{Batch, Facts, attribute_all, converted_events, tally};
use crate::store::db::Conn;
use crate::store::outbox;

/// Each event's main row: by its key, else the latest row of its campaign whose recipient is
/// its number and whose key is no derived one (`#sms`, `#follow-up`); with the states of the
/// derived rows beside it.
pub(crate) const LOOKUP: &str = "
    SELECT m.key, m.channel, m.state, m.delivery,
           (SELECT s.state FROM ledger s WHERE s.key = m.key || '#sms') AS sms_state,
           (SELECT f.state FROM ledger f WHERE f.key = m.key || '#follow-up') AS follow_up_state
    FROM (
        SELECT u.key AS i,
               coalesce(
                   (SELECT l.key FROM ledger l
                    WHERE l.key = u.value->>1 AND l.campaign = u.value->>0),
                   (SELECT l.key FROM ledger l
                    WHERE l.recipient = u.value->>2 AND l.campaign = u.value->>0
                      AND substr(l.key, -4) <> '#sms' AND substr(l.key, -10) <> '#follow-up'
                    ORDER BY l.created_at DESC, l.key DESC
                    LIMIT 1)) AS main
        FROM json_each(?1) u
    ) e
    LEFT JOIN ledger m ON m.key = e.main
    ORDER BY e.i";

impl SqliteStore {
    pub(in crate::store) async fn record_conversions(
        &self,
        events: &[Conversion],
        recipient_events: Option<(EventOptions, DateTime<Utc>)>,
    ) -> StoreResult<ConversionTally> {
        let batch = Batch::new(events);
        if batch.events.is_empty() {
            return Ok(ConversionTally::default());
        }
        let lookup: Vec<(&str, Option<&str>, Option<&str>)> = batch
            .events
            .iter()
            .map(|e| {
                (
                    e.campaign.as_str(),
                    e.key.as_ref().map(IdempotencyKey::as_str),
                    e.to.as_ref().map(PhoneNumber::as_str),
                )
            })
            .collect();
        let mut tx = self.write_tx().await?;
        let found = sqlx::query(LOOKUP)
            .bind(to_json(&lookup)?)
            .fetch_all(&mut *tx)
            .await?;
        let facts = found
            .iter()
            .map(|r| {
                Ok(Facts {
                    key: r.try_get("key")?,
                    channel: r.try_get("channel")?,
                    state: r.try_get("state")?,
                    delivery: r.try_get("delivery")?,
                    sms_state: r.try_get("sms_state")?,
                    follow_up_state: r.try_get("follow_up_state")?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        let rows = attribute_all(&batch, facts)?;
        let insert: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| {
                serde_json::json!([
                    r.event_id,
                    r.campaign,
                    r.key,
                    r.channel,
                    i64::from(r.after_follow_up),
                    r.phone,
                    r.event,
                    r.at.timestamp_millis(),
                    r.amount_micros,
                    r.currency,
                ])
            })
            .collect();
        let stored: Vec<String> = sqlx::query_scalar(
            "INSERT INTO conversions (event_id, campaign, recipient_key, channel, after_follow_up,
                                      phone, event, at, amount_micros, currency, received_at)
             SELECT value->>0, value->>1, value->>2, value->>3, value->>4, value->>5, value->>6,
                    value->>7, value->>8, value->>9, ?2
             FROM json_each(?1) WHERE true
             ON CONFLICT (event_id) DO NOTHING
             RETURNING event_id",
        )
        .bind(to_json(&insert)?)
        .bind(now_ms())
        .fetch_all(&mut *tx)
        .await?;
        let stored: HashSet<String> = stored.into_iter().collect();
        if let Some((options, at)) = recipient_events {
            let events = converted_events(&rows, &stored, options, at);
            let mut conn = Conn::SqliteWrite(tx);
            outbox::insert(&mut conn, &events).await?;
            conn.commit().await?;
        } else {
            tx.commit().await?;
        }
        Ok(tally(&batch, &rows, &stored))
    }

    pub(in crate::store) async fn converted_keys(
        &self,
        campaign: &CampaignId,
        keys: &[String],
    ) -> StoreResult<HashSet<String>> {
        if keys.is_empty() {
            return Ok(HashSet::new());
        }
        let found: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT recipient_key FROM conversions
             WHERE campaign = ?1 AND recipient_key IN (SELECT value FROM json_each(?2))",
        )
        .bind(campaign.as_str())
        .bind(json_keys(keys.iter().map(String::as_str)))
        .fetch_all(&self.reader)
        .await?;
        Ok(found.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::conversion::{FOLLOW_UP_KEY_SUFFIX, SMS_KEY_SUFFIX};

    #[test]
    fn the_lookup_knows_the_derived_key_suffixes() {
        for suffix in [SMS_KEY_SUFFIX, FOLLOW_UP_KEY_SUFFIX] {
            assert!(LOOKUP.contains(&format!("'{suffix}'")), "{suffix}");
            assert!(LOOKUP.contains(&format!("substr(l.key, -{}) <> '{suffix}'", suffix.len())));
        }
    }
}
