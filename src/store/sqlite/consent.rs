//! Consent batches on SQLite: grants upserted and states looked up for a whole batch in one
//! statement over `json_each`.

use sqlx::Row;

use super::{SqliteStore, to_json};
use crate::domain::{Category, ChannelKind, PhoneNumber};
use crate::store::shared;
use crate::store::{Consent, ConsentState, StoreResult};

impl SqliteStore {
    pub(in crate::store) async fn grant_consents(&self, consents: &[Consent]) -> StoreResult<u64> {
        if consents.is_empty() {
            return Ok(0);
        }
        let batch: Vec<(&str, &str, &str, i64, &str, &str)> = consents
            .iter()
            .map(|c| {
                (
                    c.phone.as_str(),
                    c.category.as_str(),
                    c.channel.as_str(),
                    c.granted_at.timestamp_millis(),
                    c.source.as_str(),
                    c.proof.as_str(),
                )
            })
            .collect();
        // The latest grant is the one that counts; an older one arriving late (re-import of
        // an old file) must not replace it.
        let done = sqlx::query(
            "INSERT INTO consents (phone, category, channel, granted_at, source, proof)
             SELECT value->>0, value->>1, value->>2, value->>3, value->>4, value->>5
             FROM json_each(?1) WHERE true
             ON CONFLICT (phone, category, channel) DO UPDATE SET
                granted_at = excluded.granted_at, source = excluded.source, proof = excluded.proof
             WHERE excluded.granted_at >= consents.granted_at",
        )
        .bind(to_json(&batch)?)
        .execute(&self.writer)
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
        let batch: Vec<(&str, String, String)> = phones
            .iter()
            .map(|p| (p.as_str(), shared::phone_hash(p), shared::erased_hash(p)))
            .collect();
        let rows = sqlx::query(
            "SELECT
                EXISTS (SELECT 1 FROM suppressions s
                         WHERE s.phone_hash IN (p.value->>1, p.value->>2)
                           AND s.reason <> 'erased') AS suppressed,
                (SELECT MAX(s.created_at) FROM suppressions s
                  WHERE s.phone_hash IN (p.value->>1, p.value->>2) AND s.reason = 'erased')
                    AS erased_at,
                (SELECT c.granted_at FROM consents c
                  WHERE c.phone = p.value->>0 AND c.category = ?1 AND c.channel = ?2)
                    AS granted_at,
                (SELECT MAX(r.revoked_at) FROM revocations r
                  WHERE r.phone = p.value->>0
                    AND (r.category = ?1 OR r.category IS NULL)
                    AND (r.channel = ?2 OR r.channel IS NULL)) AS revoked_at
             FROM json_each(?3) p
             ORDER BY p.key",
        )
        .bind(category.as_str())
        .bind(channel.as_str())
        .bind(to_json(&batch)?)
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(shared::consent_state(
                    r.try_get::<bool, _>("suppressed")?,
                    r.try_get::<Option<i64>, _>("granted_at")?,
                    r.try_get::<Option<i64>, _>("revoked_at")?,
                    r.try_get::<Option<i64>, _>("erased_at")?,
                ))
            })
            .collect()
    }
}
