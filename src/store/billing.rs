//! What Meta bills, per message (from status webhooks' `pricing`), and per campaign. The same
//! statements on both dialects.

use std::collections::HashMap;
use std::sync::LazyLock;

use super::StoreResult;
use super::db::{
    Arg, KEYS_PER_STATEMENT, ROWS_PER_INSERT, key_args, key_placeholders, multi_row_inserts,
};
use super::sql::SqlStore;
use crate::domain::CampaignId;

/// One billable message, priced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BilledMessage {
    pub key: String,
    pub campaign: String,
    pub channel: String,
    /// Meta's pricing category (`marketing`, `utility`, `authentication`, `service`, …).
    pub category: String,
    pub market: String,
    pub micros: u64,
    pub currency: String,
    pub at: chrono::DateTime<chrono::Utc>,
}

/// A campaign's billed cost for one (channel, category, market, currency).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BilledLine {
    pub channel: String,
    pub category: String,
    pub market: String,
    pub currency: String,
    pub messages: u64,
    pub micros: u64,
}

/// Records each message once (the first webhook that bills it); returns, in order, whether
/// each was new — Meta puts `pricing` on `sent` and `delivered`, and redelivers.
pub(super) async fn record_billing(
    db: &SqlStore,
    messages: &[BilledMessage],
) -> StoreResult<Vec<bool>> {
    let mut new = Vec::with_capacity(messages.len());
    if messages.is_empty() {
        return Ok(new);
    }
    let mut tx = db.write_tx().await?;
    for chunk in messages.chunks(ROWS_PER_INSERT) {
        let mut args = Vec::with_capacity(chunk.len() * 8);
        for m in chunk {
            args.extend([
                Arg::Text(&m.key),
                Arg::Text(&m.campaign),
                Arg::Text(&m.channel),
                Arg::Text(&m.category),
                Arg::Text(&m.market),
                Arg::Int(i64::try_from(m.micros).unwrap_or(i64::MAX)),
                Arg::Text(&m.currency),
                Arg::Time(m.at),
            ]);
        }
        let mut stored: std::collections::HashSet<String> = tx
            .fetch_all(BILLING_INSERTS[chunk.len() - 1].as_str(), &args)
            .await?
            .iter()
            .map(|r| r.text("key"))
            .collect::<StoreResult<_>>()?;
        new.extend(chunk.iter().map(|m| stored.remove(&m.key)));
    }
    tx.commit().await?;
    Ok(new)
}

pub(super) async fn billed_summary(
    db: &SqlStore,
    campaign: &CampaignId,
) -> StoreResult<Vec<BilledLine>> {
    db.read_all(
        "SELECT channel, category, market, currency, count(*) AS n,
                CAST(sum(micros) AS BIGINT) AS micros
         FROM billing WHERE campaign = $1
         GROUP BY channel, category, market, currency
         ORDER BY channel, category, market, currency",
        &[Arg::Text(campaign.as_str())],
    )
    .await?
    .iter()
    .map(|r| {
        Ok(BilledLine {
            channel: r.text("channel")?,
            category: r.text("category")?,
            market: r.text("market")?,
            currency: r.text("currency")?,
            messages: u64::try_from(r.int("n")?).unwrap_or(0),
            micros: u64::try_from(r.int("micros")?).unwrap_or(0),
        })
    })
    .collect()
}

/// Billable messages, each once per key: the keys stored come back.
static BILLING_INSERTS: LazyLock<Vec<String>> = LazyLock::new(|| {
    multi_row_inserts(
        "INSERT INTO billing (key, campaign, channel, category, market, micros, currency, billed_at)",
        8,
        "ON CONFLICT (key) DO NOTHING RETURNING key",
    )
});

static BILLED_KEYS_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT key, category, micros, currency FROM billing
         WHERE campaign = $1 AND key IN ({})",
        key_placeholders(2)
    )
});

/// What Meta billed for each of `keys` (of `campaign`) that it billed: key → (category,
/// micros, currency).
pub(super) async fn billed_keys(
    db: &SqlStore,
    campaign: &CampaignId,
    keys: &[String],
) -> StoreResult<HashMap<String, (String, u64, String)>> {
    let mut out = HashMap::new();
    for chunk in keys.chunks(KEYS_PER_STATEMENT) {
        let mut args = vec![Arg::Text(campaign.as_str())];
        args.extend(key_args(chunk.iter().map(String::as_str)));
        for r in db.read_all(BILLED_KEYS_SQL.as_str(), &args).await? {
            out.insert(
                r.text("key")?,
                (
                    r.text("category")?,
                    u64::try_from(r.int("micros")?).unwrap_or(0),
                    r.text("currency")?,
                ),
            );
        }
    }
    Ok(out)
}
