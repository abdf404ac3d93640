//! Consent batches on Postgres: grants upserted and states looked up for a whole batch in
//! one statement over `UNNEST`ed arrays.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::PostgresStore;
use crate::domain::{Category, ChannelKind, PhoneNumber};
use crate::store::shared;
use crate::store::{Consent, ConsentState, StoreResult};

impl PostgresStore {
    pub(in crate::store) async fn grant_consents(&self, consents: &[Consent]) -> StoreResult<u64> {
        if consents.is_empty() {
            return Ok(0);
        }
        // One row per (phone, category, channel) in the statement: ON CONFLICT may not touch
        // a row twice. The latest grant of the batch is the one that counts.
        let mut latest: HashMap<(&str, Category, ChannelKind), &Consent> = HashMap::new();
        for c in consents {
            latest
                .entry((c.phone.as_str(), c.category, c.channel))
                .and_modify(|e| {
                    if c.granted_at >= e.granted_at {
                        *e = c;
                    }
                })
                .or_insert(c);
        }
        let rows: Vec<&Consent> = latest.into_values().collect();
        let done = sqlx::query(
            "INSERT INTO consents (phone, category, channel, granted_at, source, proof)
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::timestamptz[],
                                  $5::text[], $6::text[])
             ON CONFLICT (phone, category, channel) DO UPDATE SET
                granted_at = excluded.granted_at, source = excluded.source, proof = excluded.proof
             WHERE excluded.granted_at >= consents.granted_at",
        )
        .bind(rows.iter().map(|c| c.phone.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|c| c.category.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|c| c.channel.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|c| c.granted_at).collect::<Vec<_>>())
        .bind(rows.iter().map(|c| c.source.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|c| c.proof.as_str()).collect::<Vec<_>>())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    pub(in crate::store) async fn consent_states(
        &self,
        category: Category,
        channel: ChannelKind,
        phones: &[PhoneNumber],
    ) -> StoreResult<Vec<ConsentState>> {
        if phones.is_empty() {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(
            "SELECT
                EXISTS (SELECT 1 FROM suppressions s
                         WHERE s.phone_hash IN (u.hash, u.keyed)
                           AND s.reason <> 'erased') AS suppressed,
                (SELECT max(s.created_at) FROM suppressions s
                  WHERE s.phone_hash IN (u.hash, u.keyed) AND s.reason = 'erased') AS erased_at,
                (SELECT c.granted_at FROM consents c
                  WHERE c.phone = u.phone AND c.category = $1 AND c.channel = $2) AS granted_at,
                (SELECT max(r.revoked_at) FROM revocations r
                  WHERE r.phone = u.phone
                    AND (r.category = $1 OR r.category IS NULL)
                    AND (r.channel = $2 OR r.channel IS NULL)) AS revoked_at
             FROM UNNEST($3::text[], $4::text[], $5::text[]) WITH ORDINALITY AS u(phone, hash, keyed, i)
             ORDER BY u.i",
        )
        .bind(category.as_str())
        .bind(channel.as_str())
        .bind(phones.iter().map(PhoneNumber::as_str).collect::<Vec<_>>())
        .bind(phones.iter().map(shared::phone_hash).collect::<Vec<_>>())
        .bind(phones.iter().map(shared::erased_hash).collect::<Vec<_>>())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(shared::consent_state(
                    r.try_get::<bool, _>("suppressed")?,
                    r.try_get::<Option<DateTime<Utc>>, _>("granted_at")?,
                    r.try_get::<Option<DateTime<Utc>>, _>("revoked_at")?,
                    r.try_get::<Option<DateTime<Utc>>, _>("erased_at")?,
                ))
            })
            .collect()
    }
}
