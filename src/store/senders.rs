//! Senders (business numbers) and templates, the same on both dialects.

use super::db::{Arg, Row};
use super::sql::SqlStore;
use super::{Sender, StoreError, StoreResult, Template};
use crate::domain::{Category, SenderId};

fn sender_row(r: &Row) -> StoreResult<Sender> {
    Ok(Sender {
        id: SenderId::from_trusted(r.text("id")?),
        account_id: r.text("account_id")?,
        portfolio_id: r.text("portfolio_id")?,
        display_number: r.text("display_number")?,
        rate_per_sec: u32::try_from(r.int("rate_per_sec")?)
            .map_err(|_| StoreError::Corrupt("sender rate_per_sec out of range".into()))?,
        tier_limit: r
            .opt_int("tier_limit")?
            .map(|l| u32::try_from(l).unwrap_or(u32::MAX)),
        status: r.text("status")?,
        status_reason: r.opt_text("status_reason")?,
    })
}

pub(super) fn parse_category(raw: &str) -> StoreResult<Category> {
    raw.parse().map_err(StoreError::Corrupt)
}

pub(super) async fn upsert_sender(db: &SqlStore, s: &Sender) -> StoreResult<()> {
    db.execute(
        "INSERT INTO senders (id, account_id, portfolio_id, display_number, rate_per_sec,
                              tier_limit, status, status_reason, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now())
         ON CONFLICT (id) DO UPDATE SET
            account_id = excluded.account_id, portfolio_id = excluded.portfolio_id,
            display_number = excluded.display_number, rate_per_sec = excluded.rate_per_sec,
            tier_limit = excluded.tier_limit, status = excluded.status,
            status_reason = excluded.status_reason, updated_at = excluded.updated_at",
        &[
            Arg::Text(s.id.as_str()),
            Arg::Text(&s.account_id),
            Arg::Text(&s.portfolio_id),
            Arg::Text(&s.display_number),
            Arg::Small(s.rate_per_sec),
            Arg::OptInt(s.tier_limit.map(i64::from)),
            Arg::Text(&s.status),
            Arg::OptText(s.status_reason.as_deref()),
        ],
    )
    .await?;
    Ok(())
}

pub(super) async fn sender(db: &SqlStore, id: &SenderId) -> StoreResult<Option<Sender>> {
    db.read_optional(
        "SELECT * FROM senders WHERE id = $1",
        &[Arg::Text(id.as_str())],
    )
    .await?
    .as_ref()
    .map(sender_row)
    .transpose()
}

pub(super) async fn senders(db: &SqlStore) -> StoreResult<Vec<Sender>> {
    db.read_all("SELECT * FROM senders ORDER BY id", &[])
        .await?
        .iter()
        .map(sender_row)
        .collect()
}

pub(super) async fn set_sender_status(
    db: &SqlStore,
    id: &SenderId,
    status: &str,
    reason: Option<&str>,
) -> StoreResult<()> {
    db.execute(
        "UPDATE senders SET status = $2, status_reason = $3, updated_at = now() WHERE id = $1",
        &[
            Arg::Text(id.as_str()),
            Arg::Text(status),
            Arg::OptText(reason),
        ],
    )
    .await?;
    Ok(())
}

pub(super) async fn upsert_template(db: &SqlStore, t: &Template) -> StoreResult<()> {
    db.execute(
        "INSERT INTO templates (account_id, name, language, category, status, updated_at)
         VALUES ($1, $2, $3, $4, $5, now())
         ON CONFLICT (account_id, name, language) DO UPDATE SET
            category = excluded.category, status = excluded.status,
            updated_at = excluded.updated_at",
        &[
            Arg::Text(&t.account_id),
            Arg::Text(&t.name),
            Arg::Text(&t.language),
            Arg::Text(t.category.as_str()),
            Arg::Text(&t.status),
        ],
    )
    .await?;
    Ok(())
}

pub(super) async fn template(
    db: &SqlStore,
    account_id: &str,
    name: &str,
    language: &str,
) -> StoreResult<Option<Template>> {
    let row = db
        .read_optional(
            "SELECT category, status FROM templates
             WHERE account_id = $1 AND name = $2 AND language = $3",
            &[Arg::Text(account_id), Arg::Text(name), Arg::Text(language)],
        )
        .await?;
    row.map(|r| {
        Ok(Template {
            account_id: account_id.to_owned(),
            name: name.to_owned(),
            language: language.to_owned(),
            category: parse_category(&r.text("category")?)?,
            status: r.text("status")?,
        })
    })
    .transpose()
}

pub(super) async fn set_template_status(
    db: &SqlStore,
    name: &str,
    language: &str,
    status: &str,
) -> StoreResult<u64> {
    db.execute(
        "UPDATE templates SET status = $3, updated_at = now()
         WHERE name = $1 AND language = $2 AND status <> $3",
        &[Arg::Text(name), Arg::Text(language), Arg::Text(status)],
    )
    .await
}
