//! The conversation side: inbound messages (once per Meta message id), the customer-service
//! window each opens, and the opt-in keywords. The same statements on both dialects.

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use super::db::{
    Arg, KEYS_PER_STATEMENT, ROWS_PER_INSERT, Row, key_args, key_placeholders, multi_row_inserts,
};
use super::sql::SqlStore;
use super::{StoreError, StoreResult};
use crate::domain::inbound::{InboundMessage, OptInKeyword, ServiceWindow};
use crate::domain::{PhoneNumber, SenderId};
use crate::policy::window;

/// Records a batch of inbound messages in one transaction, each once per message id; opens or
/// extends the window of each new one. Returns, in order, whether each was new (a redelivery
/// of a stored message changes nothing).
pub(super) async fn record_inbound(
    db: &SqlStore,
    messages: &[InboundMessage],
    received_at: chrono::DateTime<chrono::Utc>,
) -> StoreResult<Vec<bool>> {
    if messages.is_empty() {
        return Ok(Vec::new());
    }
    // The windows of the new messages, folded per (number, customer) and written in one
    // order, so two concurrent POSTs never lock the same rows in opposite orders.
    let mut opened: HashMap<(&str, &str), ServiceWindow> = HashMap::new();
    let mut new = Vec::with_capacity(messages.len());
    let mut tx = db.write_tx().await?;
    for chunk in messages.chunks(ROWS_PER_INSERT) {
        let mut args = Vec::with_capacity(chunk.len() * 8);
        for m in chunk {
            args.extend([
                Arg::Text(&m.wamid),
                Arg::Text(m.sender.as_str()),
                Arg::Text(m.from.as_str()),
                Arg::Time(m.at),
                Arg::Text(m.kind),
                Arg::Int(i64::from(m.referral)),
                Arg::OptText(m.proof_text.as_deref()),
                Arg::Time(received_at),
            ]);
        }
        let mut stored: HashSet<String> = tx
            .fetch_all(INBOUND_INSERTS[chunk.len() - 1].as_str(), &args)
            .await?
            .iter()
            .map(|r| r.text("wamid"))
            .collect::<StoreResult<_>>()?;
        for m in chunk {
            // The first of a message id repeated in the batch is the stored one.
            let is_new = stored.remove(&m.wamid);
            if is_new {
                let slot = (m.sender.as_str(), m.from.as_str());
                let w = window::extend(opened.get(&slot).copied(), m.at, m.referral);
                opened.insert(slot, w);
            }
            new.push(is_new);
        }
    }
    let mut windows: Vec<_> = opened.into_iter().collect();
    windows.sort_by(|a, b| a.0.cmp(&b.0));
    for chunk in windows.chunks(ROWS_PER_INSERT) {
        let mut args = Vec::with_capacity(chunk.len() * 4);
        for ((sender, phone), w) in chunk {
            args.extend([
                Arg::Text(sender),
                Arg::Text(phone),
                Arg::Time(w.open_until),
                Arg::OptTime(w.free_until),
            ]);
        }
        tx.execute(WINDOW_UPSERTS[chunk.len() - 1].as_str(), &args)
            .await?;
    }
    tx.commit().await?;
    Ok(new)
}

/// Inbound messages, each once per message id: the ids stored come back.
static INBOUND_INSERTS: LazyLock<Vec<String>> = LazyLock::new(|| {
    multi_row_inserts(
        "INSERT INTO inbound_messages
            (wamid, sender, phone, at, kind, referral, proof_text, received_at)",
        8,
        "ON CONFLICT (wamid) DO NOTHING RETURNING wamid",
    )
});

/// Windows, only ever extended (one row per (sender, phone) per statement).
static WINDOW_UPSERTS: LazyLock<Vec<String>> = LazyLock::new(|| {
    multi_row_inserts(
        "INSERT INTO service_windows (sender, phone, open_until, free_until)",
        4,
        "ON CONFLICT (sender, phone) DO UPDATE SET
            open_until = CASE WHEN excluded.open_until > service_windows.open_until
                              THEN excluded.open_until ELSE service_windows.open_until END,
            free_until = CASE WHEN service_windows.free_until IS NULL
                                OR excluded.free_until > service_windows.free_until
                              THEN coalesce(excluded.free_until, service_windows.free_until)
                              ELSE service_windows.free_until END",
    )
});

static WINDOWS_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT phone, open_until, free_until FROM service_windows
         WHERE sender = $1 AND phone IN ({})",
        key_placeholders(2)
    )
});

/// The window of each number with `sender`, in the order given (`None`: the customer never
/// wrote, or so long ago that nothing is kept).
pub(super) async fn service_windows(
    db: &SqlStore,
    sender: &SenderId,
    phones: &[PhoneNumber],
) -> StoreResult<Vec<Option<ServiceWindow>>> {
    let mut found: HashMap<String, ServiceWindow> = HashMap::new();
    for chunk in phones.chunks(KEYS_PER_STATEMENT) {
        let mut args = vec![Arg::Text(sender.as_str())];
        args.extend(key_args(chunk.iter().map(|p| p.as_str())));
        for r in db.read_all(WINDOWS_SQL.as_str(), &args).await? {
            found.insert(
                r.text("phone")?,
                ServiceWindow {
                    open_until: r.time("open_until")?,
                    free_until: r.opt_time("free_until")?,
                },
            );
        }
    }
    Ok(phones
        .iter()
        .map(|p| found.get(p.as_str()).copied())
        .collect())
}

/// Ends a window now: Meta refused a session message (131047), and its word wins over
/// herald's arithmetic. Returns whether a window was open.
pub(super) async fn close_service_window(
    db: &SqlStore,
    sender: &SenderId,
    phone: &PhoneNumber,
    at: chrono::DateTime<chrono::Utc>,
) -> StoreResult<bool> {
    let n = db
        .execute(
            "UPDATE service_windows SET open_until = $3
             WHERE sender = $1 AND phone = $2 AND open_until > $3",
            &[
                Arg::Text(sender.as_str()),
                Arg::Text(phone.as_str()),
                Arg::Time(at),
            ],
        )
        .await?;
    Ok(n > 0)
}

/// Adds a keyword, or replaces the one with the same (sender, keyword). Returns whether it
/// was new.
pub(super) async fn upsert_keyword(db: &SqlStore, k: &OptInKeyword) -> StoreResult<bool> {
    let mut tx = db.write_tx().await?;
    let existed = !tx
        .fetch_all(
            "SELECT keyword FROM optin_keywords WHERE sender = $1 AND keyword = $2",
            &[Arg::Text(k.sender.as_str()), Arg::Text(&k.keyword)],
        )
        .await?
        .is_empty();
    tx.execute(
        "INSERT INTO optin_keywords
            (sender, keyword, category, source, business, confirmation, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (sender, keyword) DO UPDATE SET
            category = excluded.category, source = excluded.source,
            business = excluded.business, confirmation = excluded.confirmation",
        &[
            Arg::Text(k.sender.as_str()),
            Arg::Text(&k.keyword),
            Arg::Text(k.category.as_str()),
            Arg::Text(&k.source),
            Arg::Text(&k.business),
            Arg::Text(&k.confirmation),
            Arg::Time(k.created_at),
        ],
    )
    .await?;
    tx.commit().await?;
    Ok(!existed)
}

/// Every keyword, by sender and keyword.
pub(super) async fn keywords(db: &SqlStore) -> StoreResult<Vec<OptInKeyword>> {
    db.read_all(
        "SELECT sender, keyword, category, source, business, confirmation, created_at
         FROM optin_keywords ORDER BY sender, keyword",
        &[],
    )
    .await?
    .iter()
    .map(keyword_row)
    .collect()
}

/// Removes a keyword; returns whether there was one.
pub(super) async fn remove_keyword(
    db: &SqlStore,
    sender: &SenderId,
    keyword: &str,
) -> StoreResult<bool> {
    let n = db
        .execute(
            "DELETE FROM optin_keywords WHERE sender = $1 AND keyword = $2",
            &[Arg::Text(sender.as_str()), Arg::Text(keyword)],
        )
        .await?;
    Ok(n > 0)
}

fn keyword_row(r: &Row) -> StoreResult<OptInKeyword> {
    let corrupt = |what: String| StoreError::Corrupt(format!("optin_keywords: {what}"));
    Ok(OptInKeyword {
        sender: SenderId::parse(&r.text("sender")?).map_err(|e| corrupt(e.to_string()))?,
        keyword: r.text("keyword")?,
        category: r.text("category")?.parse().map_err(corrupt)?,
        source: r.text("source")?,
        business: r.text("business")?,
        confirmation: r.text("confirmation")?,
        created_at: r.time("created_at")?,
    })
}
