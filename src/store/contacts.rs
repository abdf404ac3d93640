//! Personal data (GDPR): exporting everything stored about a number, and erasing it. The same
//! statements on both dialects.

use serde_json::{Value, json};

use super::db::{Arg, Row};
use super::shared;
use super::sql::SqlStore;
use super::{StoreError, StoreResult};
use crate::domain::PhoneNumber;

fn time_json(r: &Row, column: &str) -> StoreResult<Value> {
    Ok(r.opt_time(column)?
        .map_or(Value::Null, |t| Value::from(t.to_rfc3339())))
}

fn consent_json(r: &Row) -> StoreResult<Value> {
    Ok(json!({
        "category": r.text("category")?,
        "channel": r.text("channel")?,
        "granted_at": time_json(r, "granted_at")?,
        "source": r.text("source")?,
        "proof": r.text("proof")?,
    }))
}

fn revocation_json(r: &Row) -> StoreResult<Value> {
    Ok(json!({
        "category": r.opt_text("category")?,
        // null: every channel (as for category).
        "channel": r.opt_text("channel")?,
        "revoked_at": time_json(r, "revoked_at")?,
        "source": r.text("source")?,
    }))
}

fn suppression_json(r: &Row) -> StoreResult<Value> {
    Ok(json!({
        "reason": r.text("reason")?,
        "created_at": time_json(r, "created_at")?,
        "erased": r.opt_text("phone")?.is_none(),
    }))
}

fn tier_json(r: &Row) -> StoreResult<Value> {
    Ok(json!({
        "portfolio": r.text("portfolio")?,
        "last_reached_at": time_json(r, "last_reached_at")?,
    }))
}

fn ledger_json(r: &Row) -> StoreResult<Value> {
    Ok(json!({
        "key": r.text("key")?,
        "campaign": r.text("campaign")?,
        "job": r.text("job")?,
        "sender": r.text("sender")?,
        "recipient": r.text("recipient")?,
        "template": r.text("template")?,
        "language": r.text("language")?,
        "category": r.text("category")?,
        "state": r.text("state")?,
        "reason": r.opt_text("reason")?,
        "wamid": r.opt_text("wamid")?,
        "attempts": r.int("attempts")?,
        "delivery": r.opt_text("delivery")?,
        "delivery_error": r.opt_text("delivery_error")?,
        "billed_category": r.opt_text("billed_category")?,
        "created_at": time_json(r, "created_at")?,
        "updated_at": time_json(r, "updated_at")?,
    }))
}

fn conversion_json(r: &Row) -> StoreResult<Value> {
    Ok(json!({
        "event_id": r.text("event_id")?,
        "campaign": r.text("campaign")?,
        // null: no message of the campaign matched (then the number is kept with the event).
        "key": r.opt_text("recipient_key")?,
        "channel": r.opt_text("channel")?,
        "after_follow_up": r.flag("after_follow_up")?,
        "event": r.text("event")?,
        "at": time_json(r, "at")?,
        "amount_micros": r.opt_int("amount_micros")?,
        "currency": r.opt_text("currency")?,
        "received_at": time_json(r, "received_at")?,
    }))
}

fn inbound_json(r: &Row) -> StoreResult<Value> {
    Ok(json!({
        "wamid": r.text("wamid")?,
        "sender": r.text("sender")?,
        "at": time_json(r, "at")?,
        "type": r.text("kind")?,
        "referral": r.int("referral")? != 0,
        // Kept only when the message was an opt-in: its proof.
        "text": r.opt_text("proof_text")?,
        "received_at": time_json(r, "received_at")?,
    }))
}

fn window_json(r: &Row) -> StoreResult<Value> {
    Ok(json!({
        "sender": r.text("sender")?,
        "open_until": time_json(r, "open_until")?,
        "free_until": time_json(r, "free_until")?,
    }))
}

fn to_json(rows: &[Row], f: fn(&Row) -> StoreResult<Value>) -> StoreResult<Vec<Value>> {
    rows.iter().map(f).collect()
}

pub(super) async fn export_contact(db: &SqlStore, phone: &PhoneNumber) -> StoreResult<Value> {
    let hash = shared::phone_hash(phone);
    let keyed = shared::erased_hash(phone);
    let by_phone = [Arg::Text(phone.as_str())];
    // One snapshot for the whole export, so it is consistent with itself.
    let mut conn = db.snapshot().await?;
    let consents = conn
        .fetch_all(
            "SELECT category, channel, granted_at, source, proof FROM consents
             WHERE phone = $1 ORDER BY category, channel",
            &by_phone,
        )
        .await?;
    let revocations = conn
        .fetch_all(
            "SELECT category, channel, revoked_at, source FROM revocations
             WHERE phone = $1 ORDER BY revoked_at, id",
            &by_phone,
        )
        .await?;
    let suppressions = conn
        .fetch_all(
            "SELECT phone, reason, created_at FROM suppressions
             WHERE phone_hash IN ($1, $2) OR phone = $3 ORDER BY created_at, id",
            &[
                Arg::Text(&hash),
                Arg::Text(&keyed),
                Arg::Text(phone.as_str()),
            ],
        )
        .await?;
    let tier = conn
        .fetch_all(
            "SELECT portfolio, last_reached_at FROM tier_reach WHERE phone = $1 ORDER BY portfolio",
            &by_phone,
        )
        .await?;
    let ledger = conn
        .fetch_all(
            "SELECT key, campaign, job, sender, recipient, template, language, category, state,
                    reason, wamid, attempts, delivery, delivery_error, billed_category,
                    created_at, updated_at
             FROM ledger WHERE recipient IN ($1, $2, $3) ORDER BY created_at, key",
            &[
                Arg::Text(phone.as_str()),
                Arg::Text(&hash),
                Arg::Text(&keyed),
            ],
        )
        .await?;
    // A conversion is the number's through its ledger row, or by the number itself when no
    // row matched it.
    let conversions = conn
        .fetch_all(
            "SELECT event_id, campaign, recipient_key, channel, after_follow_up, event, at,
                    amount_micros, currency, received_at
             FROM conversions
             WHERE phone = $1
                OR recipient_key IN (SELECT key FROM ledger WHERE recipient IN ($1, $2, $3))
             ORDER BY at, event_id",
            &[
                Arg::Text(phone.as_str()),
                Arg::Text(&hash),
                Arg::Text(&keyed),
            ],
        )
        .await?;
    let inbound = conn
        .fetch_all(
            "SELECT wamid, sender, at, kind, referral, proof_text, received_at
             FROM inbound_messages WHERE phone = $1 ORDER BY at, wamid",
            &by_phone,
        )
        .await?;
    let windows = conn
        .fetch_all(
            "SELECT sender, open_until, free_until FROM service_windows
             WHERE phone = $1 ORDER BY sender",
            &by_phone,
        )
        .await?;
    conn.commit().await?;
    Ok(json!({
        "phone": phone.as_str(),
        "phone_hash": if keyed.is_empty() { hash } else { keyed },
        "consents": to_json(&consents, consent_json)?,
        "revocations": to_json(&revocations, revocation_json)?,
        "suppressions": to_json(&suppressions, suppression_json)?,
        "tier": to_json(&tier, tier_json)?,
        "ledger": to_json(&ledger, ledger_json)?,
        "conversions": to_json(&conversions, conversion_json)?,
        "inbound_messages": to_json(&inbound, inbound_json)?,
        "service_windows": to_json(&windows, window_json)?,
    }))
}

/// What an erasure removed or anonymised, per kind of row.
pub type ErasureReport = Vec<(&'static str, u64)>;

pub(super) async fn erase_contact(
    db: &SqlStore,
    phone: &PhoneNumber,
) -> StoreResult<ErasureReport> {
    let key = shared::hash_key().ok_or(StoreError::NoHashKey)?;
    let keyed = shared::keyed_hash(key, phone);
    let legacy = shared::phone_hash(phone);
    // Fired or not, a timer's payload names the number it sends to.
    let in_payload = format!("%\"{}\"%", phone.as_str());
    let (phone, keyed, legacy) = (
        Arg::Text(phone.as_str()),
        Arg::Text(&keyed),
        Arg::Text(&legacy),
    );
    let mut tx = db.write_tx().await?;
    let mut report = ErasureReport::new();
    // Suppressions other than an earlier erasure keep their reason, now under the keyed hash.
    let kept = tx
        .fetch_all(
            "SELECT DISTINCT reason FROM suppressions
             WHERE (phone = $1 OR phone_hash IN ($2, $3)) AND reason <> 'erased'",
            &[phone, legacy, keyed],
        )
        .await?;
    let kept: Vec<String> = kept
        .iter()
        .map(|r| r.text("reason"))
        .collect::<StoreResult<_>>()?;
    for (what, sql, args) in [
        (
            "consents",
            "DELETE FROM consents WHERE phone = $1",
            &[phone][..],
        ),
        (
            "revocations",
            "DELETE FROM revocations WHERE phone = $1",
            &[phone],
        ),
        (
            "tier rows",
            "DELETE FROM tier_reach WHERE phone = $1",
            &[phone],
        ),
        (
            "inbound messages",
            "DELETE FROM inbound_messages WHERE phone = $1",
            &[phone],
        ),
        (
            "service windows",
            "DELETE FROM service_windows WHERE phone = $1",
            &[phone],
        ),
        // Before the ledger rows lose the number that leads to them.
        (
            "conversions",
            "DELETE FROM conversions
             WHERE phone = $1
                OR recipient_key IN (SELECT key FROM ledger
                                     WHERE recipient IN ($1, $2, $3))",
            &[phone, legacy, keyed],
        ),
        // Recipient events carry the number beside them (and in their body when configured),
        // published or not.
        (
            "recipient events",
            "DELETE FROM recipient_events
             WHERE recipient IN ($1, $2, $3)
                OR message_key IN (SELECT key FROM ledger WHERE recipient IN ($1, $2, $3))",
            &[phone, legacy, keyed],
        ),
        (
            "dead recipient events",
            "DELETE FROM recipient_events_dead
             WHERE recipient IN ($1, $2, $3)
                OR message_key IN (SELECT key FROM ledger WHERE recipient IN ($1, $2, $3))",
            &[phone, legacy, keyed],
        ),
        (
            "timers",
            "DELETE FROM timers WHERE CAST(payload AS TEXT) LIKE $1",
            &[Arg::Text(&in_payload)],
        ),
        // The outcome stays (idempotency: never sent twice), the number and the message id
        // (a wamid encodes the number; an SMS id leads to the SMSC's records) go.
        (
            "ledger rows",
            "UPDATE ledger SET recipient = $2, wamid = NULL, updated_at = now()
             WHERE recipient IN ($1, $3) OR (recipient = $2 AND wamid IS NOT NULL)",
            &[phone, keyed, legacy],
        ),
        (
            "suppressions",
            "DELETE FROM suppressions
             WHERE phone = $1 OR phone_hash = $2 OR (phone_hash = $3 AND reason <> 'erased')",
            &[phone, legacy, keyed],
        ),
    ] {
        let n = tx.execute(sql, args).await?;
        if n > 0 {
            report.push((what, n));
        }
    }
    for reason in &kept {
        tx.execute(
            "INSERT INTO suppressions (phone, phone_hash, reason, created_at)
             VALUES (NULL, $1, $2, now())
             ON CONFLICT (phone_hash, reason) DO NOTHING",
            &[keyed, Arg::Text(reason)],
        )
        .await?;
    }
    // Never message an erased number again on a consent from before (a re-import, an old
    // CSV); a new consent with its proof, dated after this, makes it sendable again.
    tx.execute(
        "INSERT INTO suppressions (phone, phone_hash, reason, created_at)
         VALUES (NULL, $1, 'erased', now())
         ON CONFLICT (phone_hash, reason) DO UPDATE SET created_at = excluded.created_at",
        &[keyed],
    )
    .await?;
    tx.commit().await?;
    Ok(report)
}
