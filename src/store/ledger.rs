//! Reading the ledger (pages, single keys, counts), the same on both dialects. Writing it —
//! claims, marks, outcomes, leases, webhooks — is batch work each dialect does its own way.

use std::sync::LazyLock;

use chrono::{DateTime, Utc};

use super::db::{Arg, KEYS_PER_STATEMENT, Row, key_args, key_placeholders};
use super::outbox;
use super::senders::parse_category;
use super::sql::SqlStore;
use super::{CampaignCounts, FunnelCell, LedgerRow, PurgedSent, StoreError, StoreResult, shared};
use crate::domain::{
    CampaignId, ChannelKind, EventFacts, EventOptions, IdempotencyKey, JobId, NewRecipientEvent,
    SenderId, SmsReceiptUpdate,
};
use crate::policy::recipient_events;

/// The columns [`ledger_row`] reads.
macro_rules! ledger_columns {
    () => {
        "key, campaign, job, sender, recipient, template, category, channel, state, reason, \
         wamid, attempts, delivery, delivery_error, resent_unknown, created_at, updated_at"
    };
}

fn ledger_row(r: &Row) -> StoreResult<LedgerRow> {
    Ok(LedgerRow {
        key: IdempotencyKey::from_trusted(r.text("key")?),
        campaign: CampaignId::from_trusted(r.text("campaign")?),
        job: JobId::from_trusted(r.text("job")?),
        sender: SenderId::from_trusted(r.text("sender")?),
        recipient: r.text("recipient")?,
        template: r.text("template")?,
        category: parse_category(&r.text("category")?)?,
        channel: r.text("channel")?.parse().map_err(StoreError::Corrupt)?,
        state: r.text("state")?,
        reason: r.opt_text("reason")?,
        wamid: r.opt_text("wamid")?,
        attempts: u32::try_from(r.int("attempts")?).unwrap_or(0),
        delivery: r.opt_text("delivery")?,
        delivery_error: r.opt_text("delivery_error")?,
        resent_unknown: r.flag("resent_unknown")?,
        created_at: r.time("created_at")?,
        updated_at: r.time("updated_at")?,
    })
}

pub(super) async fn ledger_page(
    db: &SqlStore,
    campaign: &CampaignId,
    after: Option<&IdempotencyKey>,
    limit: u32,
) -> StoreResult<Vec<LedgerRow>> {
    db.read_all(
        concat!(
            "SELECT ",
            ledger_columns!(),
            " FROM ledger
             WHERE campaign = $1 AND (CAST($2 AS TEXT) IS NULL OR key > $2)
             ORDER BY key LIMIT $3"
        ),
        &[
            Arg::Text(campaign.as_str()),
            Arg::OptText(after.map(IdempotencyKey::as_str)),
            Arg::Int(i64::from(limit)),
        ],
    )
    .await?
    .iter()
    .map(ledger_row)
    .collect()
}

pub(super) async fn ledger_slice(
    db: &SqlStore,
    campaign: &CampaignId,
    offset: u64,
    limit: u32,
) -> StoreResult<Vec<LedgerRow>> {
    db.read_all(
        concat!(
            "SELECT ",
            ledger_columns!(),
            " FROM ledger WHERE campaign = $1 ORDER BY key LIMIT $2 OFFSET $3"
        ),
        &[
            Arg::Text(campaign.as_str()),
            Arg::Int(i64::from(limit)),
            Arg::Int(i64::try_from(offset).unwrap_or(i64::MAX)),
        ],
    )
    .await?
    .iter()
    .map(ledger_row)
    .collect()
}

pub(super) async fn ledger_entry(
    db: &SqlStore,
    key: &IdempotencyKey,
) -> StoreResult<Option<LedgerRow>> {
    db.read_optional(
        concat!("SELECT ", ledger_columns!(), " FROM ledger WHERE key = $1"),
        &[Arg::Text(key.as_str())],
    )
    .await?
    .as_ref()
    .map(ledger_row)
    .transpose()
}

/// `SELECT … WHERE key IN ($1, …)`, built once.
static LEDGER_ENTRIES: LazyLock<String> = LazyLock::new(|| {
    format!(
        concat!(
            "SELECT ",
            ledger_columns!(),
            " FROM ledger WHERE key IN ({})"
        ),
        key_placeholders(1)
    )
});

pub(super) async fn ledger_entries(
    db: &SqlStore,
    keys: &[IdempotencyKey],
) -> StoreResult<Vec<LedgerRow>> {
    let sql: &'static str = LEDGER_ENTRIES.as_str();
    let mut rows = Vec::with_capacity(keys.len());
    for chunk in keys.chunks(KEYS_PER_STATEMENT) {
        let args = key_args(chunk.iter().map(IdempotencyKey::as_str));
        for r in db.read_all(sql, &args).await? {
            rows.push(ledger_row(&r)?);
        }
    }
    Ok(rows)
}

pub(super) async fn campaign_counts(
    db: &SqlStore,
    campaign: &CampaignId,
) -> StoreResult<CampaignCounts> {
    let by_state = db
        .read_all(
            // The rows still there, and what purged ones left in `campaign_totals`.
            "SELECT state, reason, CAST(SUM(n) AS BIGINT) AS n FROM (
                 SELECT state, COALESCE(reason, '') AS reason, count(*) AS n FROM ledger
                 WHERE campaign = $1 GROUP BY 1, 2
                 UNION ALL
                 SELECT state, reason, n FROM campaign_totals WHERE campaign = $1
             ) t GROUP BY 1, 2 ORDER BY 1, 2",
            &[Arg::Text(campaign.as_str())],
        )
        .await?
        .iter()
        .map(|r| {
            Ok((
                r.text("state")?,
                r.text("reason")?,
                u64::try_from(r.int("n")?).unwrap_or(0),
            ))
        })
        .collect::<StoreResult<_>>()?;
    Ok(CampaignCounts { by_state })
}

pub(super) async fn campaign_funnel(
    db: &SqlStore,
    campaign: &CampaignId,
) -> StoreResult<Vec<FunnelCell>> {
    // The role is in the key: herald derives `key#sms` and `key#follow-up` itself. Purged
    // rows count through the totals their purge left.
    db.read_all(
        "SELECT role, channel, state, reason, delivery, CAST(SUM(n) AS BIGINT) AS n FROM (
             SELECT CASE WHEN key LIKE '%#follow-up' THEN 'follow_up'
                         WHEN key LIKE '%#sms' THEN 'fallback' ELSE 'first' END AS role,
                    channel, state, COALESCE(reason, '') AS reason,
                    COALESCE(delivery, '') AS delivery, count(*) AS n
             FROM ledger WHERE campaign = $1
             GROUP BY 1, 2, 3, 4, 5
             UNION ALL
             SELECT role, channel, state, reason, delivery, n FROM campaign_totals
             WHERE campaign = $1
         ) t GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5",
        &[Arg::Text(campaign.as_str())],
    )
    .await?
    .iter()
    .map(|r| {
        Ok(FunnelCell {
            role: r.text("role")?,
            channel: r
                .text("channel")?
                .parse()
                .map_err(|e| StoreError::Corrupt(format!("ledger channel: {e}")))?,
            state: r.text("state")?,
            reason: r.text("reason")?,
            delivery: r.text("delivery")?,
            n: u64::try_from(r.int("n")?).unwrap_or(0),
        })
    })
    .collect()
}

pub(super) async fn purged_sent(
    db: &SqlStore,
    campaign: &CampaignId,
) -> StoreResult<Vec<PurgedSent>> {
    db.read_all(
        "SELECT channel, category, prefix, CAST(SUM(n) AS BIGINT) AS n FROM campaign_totals
         WHERE campaign = $1 AND state = 'sent'
         GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
        &[Arg::Text(campaign.as_str())],
    )
    .await?
    .iter()
    .map(|r| {
        Ok(PurgedSent {
            channel: r.text("channel")?.parse().map_err(StoreError::Corrupt)?,
            category: parse_category(&r.text("category")?)?,
            prefix: r.text("prefix")?,
            n: u64::try_from(r.int("n")?).unwrap_or(0),
        })
    })
    .collect()
}

pub(super) async fn unknown_by_campaign(db: &SqlStore) -> StoreResult<Vec<(CampaignId, u64)>> {
    db.read_all(
        "SELECT campaign, count(*) AS n FROM ledger WHERE state = 'unknown' GROUP BY campaign",
        &[],
    )
    .await?
    .iter()
    .map(|r| {
        Ok((
            CampaignId::from_trusted(r.text("campaign")?),
            u64::try_from(r.int("n")?).unwrap_or(0),
        ))
    })
    .collect()
}

// --- deferred jobs (RabbitMQ) ------------------------------------------------------------

pub(super) async fn set_job_deferral(db: &SqlStore, job: &str, token: &str) -> StoreResult<()> {
    db.execute(
        "INSERT INTO job_deferrals (job, token, deferred_at) VALUES ($1, $2, now())
         ON CONFLICT (job) DO UPDATE SET token = excluded.token,
             deferred_at = excluded.deferred_at",
        &[Arg::Text(job), Arg::Text(token)],
    )
    .await?;
    Ok(())
}

pub(super) async fn job_deferral(db: &SqlStore, job: &str) -> StoreResult<Option<String>> {
    db.read_optional(
        "SELECT token FROM job_deferrals WHERE job = $1",
        &[Arg::Text(job)],
    )
    .await?
    .map(|r| r.text("token"))
    .transpose()
}

pub(super) async fn clear_job_deferral(db: &SqlStore, job: &str) -> StoreResult<()> {
    db.execute(
        "DELETE FROM job_deferrals WHERE job = $1",
        &[Arg::Text(job)],
    )
    .await?;
    Ok(())
}

/// SMS receipts, one write transaction per batch: each names its row by the first id form
/// found, and applies only if it ranks above the stored delivery state.
/// With `recipient_events`, the receipts that changed a row write their events (`delivered`,
/// `failed`) in the same transaction, dated by the given time.
pub(super) async fn apply_sms_receipts(
    db: &SqlStore,
    receipts: &[SmsReceiptUpdate],
    recipient_events: Option<(EventOptions, DateTime<Utc>)>,
) -> StoreResult<Vec<Option<bool>>> {
    let mut tx = db.write_tx().await?;
    let mut changed = Vec::with_capacity(receipts.len());
    let mut events = Vec::new();
    for r in receipts {
        let mut found = None;
        for id in &r.message_ids {
            let rows = tx
                .fetch_all(
                    if recipient_events.is_some() {
                        "SELECT key, delivery, campaign, recipient FROM ledger
                         WHERE wamid = $1 AND channel = 'sms' LIMIT 1"
                    } else {
                        "SELECT key FROM ledger WHERE wamid = $1 AND channel = 'sms' LIMIT 1"
                    },
                    &[Arg::Text(id)],
                )
                .await?;
            if let Some(row) = rows.into_iter().next() {
                found = Some(row);
                break;
            }
        }
        let Some(row) = found else {
            changed.push(None);
            continue;
        };
        let key = row.text("key")?;
        let n = tx
            .execute(
                // The rank is `shared::DELIVERY_RANK_SQL`, spelt out: the query layer takes
                // `'static` text only.
                "UPDATE ledger SET delivery = $2, delivery_error = $3, updated_at = now()
                 WHERE key = $1 AND state = 'sent'
                   AND (CASE delivery WHEN 'delivered' THEN 1 WHEN 'read' THEN 2
                        WHEN 'failed' THEN 3 WHEN 'expired' THEN 3 ELSE 0 END) < $4",
                &[
                    Arg::Text(&key),
                    Arg::Text(r.status),
                    Arg::OptText(r.error.as_deref()),
                    Arg::Int(i64::from(shared::delivery_rank(Some(r.status)))),
                ],
            )
            .await?;
        changed.push(Some(n > 0));
        if n > 0
            && let Some((options, at)) = recipient_events
        {
            let before = row.opt_text("delivery")?;
            let (campaign, recipient) = (row.text("campaign")?, row.text("recipient")?);
            for state in
                recipient_events::on_delivery(&key, "sent", before.as_deref(), Some(r.status))
            {
                events.push(NewRecipientEvent::build(
                    EventFacts {
                        message_key: &key,
                        state,
                        campaign: &campaign,
                        channel: ChannelKind::Sms,
                        recipient: &recipient,
                        code: r.error.as_deref(),
                        at,
                    },
                    options.numbers,
                ));
            }
        }
    }
    if !events.is_empty() {
        outbox::insert(&mut tx, &events).await?;
    }
    tx.commit().await?;
    Ok(changed)
}
