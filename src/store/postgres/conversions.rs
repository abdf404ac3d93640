//! Conversion batches on Postgres: the ledger facts of every event looked up in one statement,
//! the attributed rows inserted in one more (`ON CONFLICT DO NOTHING`: an `event_id` is stored
//! once, ever), both over `UNNEST`ed arrays in one transaction.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::PostgresStore;
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
    FROM UNNEST($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS u(campaign, key, phone, i)
    LEFT JOIN ledger m ON m.key = COALESCE(
        (SELECT l.key FROM ledger l WHERE l.key = u.key AND l.campaign = u.campaign),
        (SELECT l.key FROM ledger l
         WHERE l.recipient = u.phone AND l.campaign = u.campaign
           AND right(l.key, 4) <> '#sms' AND right(l.key, 10) <> '#follow-up'
         ORDER BY l.created_at DESC, l.key DESC
         LIMIT 1))
    ORDER BY u.i";

impl PostgresStore {
    pub(in crate::store) async fn record_conversions(
        &self,
        events: &[Conversion],
        recipient_events: Option<(EventOptions, DateTime<Utc>)>,
    ) -> StoreResult<ConversionTally> {
        let batch = Batch::new(events);
        if batch.events.is_empty() {
            return Ok(ConversionTally::default());
        }
        let mut tx = self.tx().await?;
        let found = sqlx::query(LOOKUP)
            .bind(
                batch
                    .events
                    .iter()
                    .map(|e| e.campaign.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(
                batch
                    .events
                    .iter()
                    .map(|e| e.key.as_ref().map(IdempotencyKey::as_str))
                    .collect::<Vec<_>>(),
            )
            .bind(
                batch
                    .events
                    .iter()
                    .map(|e| e.to.as_ref().map(PhoneNumber::as_str))
                    .collect::<Vec<_>>(),
            )
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
        let stored: Vec<String> = sqlx::query_scalar(
            "INSERT INTO conversions (event_id, campaign, recipient_key, channel, after_follow_up,
                                      phone, event, at, amount_micros, currency, received_at)
             SELECT u.*, now()
             FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::bool[], $6::text[],
                         $7::text[], $8::timestamptz[], $9::int8[], $10::text[]) AS u
             ON CONFLICT (event_id) DO NOTHING
             RETURNING event_id",
        )
        .bind(rows.iter().map(|r| r.event_id).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.campaign).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.key.as_deref()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.channel).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.after_follow_up).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.phone).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.event).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.at).collect::<Vec<DateTime<Utc>>>())
        .bind(rows.iter().map(|r| r.amount_micros).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.currency).collect::<Vec<_>>())
        .fetch_all(&mut *tx)
        .await?;
        let stored: HashSet<String> = stored.into_iter().collect();
        if let Some((options, at)) = recipient_events {
            let events = converted_events(&rows, &stored, options, at);
            let mut conn = Conn::Postgres(tx);
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
             WHERE campaign = $1 AND recipient_key = ANY($2::text[])",
        )
        .bind(campaign.as_str())
        .bind(keys)
        .fetch_all(&self.pool)
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
            assert!(LOOKUP.contains(&format!("right(l.key, {}) <> '{suffix}'", suffix.len())));
        }
    }
}
