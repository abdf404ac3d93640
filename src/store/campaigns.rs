//! Campaign state and budgets as both dialects store them; only charging a budget (a row
//! lock on Postgres, the write lock on SQLite) is written per dialect.

use super::db::{Arg, Row};
use super::shared;
use super::sql::SqlStore;
use super::{Budget, BudgetCharge, Campaign, CampaignState, StoreResult};
use crate::domain::CampaignId;

/// The columns [`campaign_row`] reads.
macro_rules! campaign_columns {
    () => {
        "id, state, reason, budget_micros, budget_currency, committed_micros"
    };
}

fn campaign_row(r: &Row) -> StoreResult<Campaign> {
    let budget_micros = r.opt_int("budget_micros")?;
    let currency = r.opt_text("budget_currency")?;
    Ok(Campaign {
        id: CampaignId::from_trusted(r.text("id")?),
        state: shared::campaign_state(&r.text("state")?)?,
        reason: r.opt_text("reason")?,
        budget: budget_micros.map(|m| Budget {
            micros: u64::try_from(m).unwrap_or(0),
            currency: currency.unwrap_or_default(),
        }),
        committed_micros: u64::try_from(r.int("committed_micros")?).unwrap_or(0),
    })
}

pub(super) async fn ensure_campaign(db: &SqlStore, id: &CampaignId) -> StoreResult<Campaign> {
    db.execute(
        "INSERT INTO campaigns (id, state, created_at, updated_at) VALUES ($1, 'active', now(), now())
         ON CONFLICT (id) DO NOTHING",
        &[Arg::Text(id.as_str())],
    )
    .await?;
    // On the writer: SQLite's readers must not race the insert just made.
    let row = db
        .write_one(
            concat!(
                "SELECT ",
                campaign_columns!(),
                " FROM campaigns WHERE id = $1"
            ),
            &[Arg::Text(id.as_str())],
        )
        .await?;
    campaign_row(&row)
}

pub(super) async fn campaign(db: &SqlStore, id: &CampaignId) -> StoreResult<Option<Campaign>> {
    db.read_optional(
        concat!(
            "SELECT ",
            campaign_columns!(),
            " FROM campaigns WHERE id = $1"
        ),
        &[Arg::Text(id.as_str())],
    )
    .await?
    .as_ref()
    .map(campaign_row)
    .transpose()
}

pub(super) async fn campaign_state_counts(db: &SqlStore) -> StoreResult<Vec<(CampaignState, u64)>> {
    db.read_all(
        "SELECT state, count(*) AS n FROM campaigns GROUP BY state",
        &[],
    )
    .await?
    .iter()
    .map(|r| {
        Ok((
            shared::campaign_state(&r.text("state")?)?,
            u64::try_from(r.int("n")?).unwrap_or(0),
        ))
    })
    .collect()
}

pub(super) async fn set_campaign_state(
    db: &SqlStore,
    id: &CampaignId,
    state: CampaignState,
    reason: Option<&str>,
) -> StoreResult<()> {
    // An operator may pause or cancel a campaign before its first job arrives.
    db.execute(
        "INSERT INTO campaigns (id, state, reason, created_at, updated_at)
         VALUES ($1, $2, $3, now(), now())
         ON CONFLICT (id) DO UPDATE SET
            state = excluded.state, reason = excluded.reason, updated_at = excluded.updated_at
         WHERE campaigns.state <> 'cancelled'",
        &[
            Arg::Text(id.as_str()),
            Arg::Text(state.as_str()),
            Arg::OptText(reason),
        ],
    )
    .await?;
    Ok(())
}

pub(super) async fn set_campaign_budget(
    db: &SqlStore,
    id: &CampaignId,
    budget: Option<&Budget>,
) -> StoreResult<Campaign> {
    let micros = budget.map(|b| i64::try_from(b.micros).unwrap_or(i64::MAX));
    let row = db
        .write_one(
            concat!(
                "INSERT INTO campaigns (id, state, created_at, updated_at, budget_micros,
                                        budget_currency)
                 VALUES ($1, 'active', now(), now(), $2, $3)
                 ON CONFLICT (id) DO UPDATE SET budget_micros = excluded.budget_micros,
                    budget_currency = excluded.budget_currency, updated_at = excluded.updated_at
                 RETURNING ",
                campaign_columns!()
            ),
            &[
                Arg::Text(id.as_str()),
                Arg::OptInt(micros),
                Arg::OptText(budget.map(|b| b.currency.as_str())),
            ],
        )
        .await?;
    campaign_row(&row)
}

/// Commits the estimated `costs` against the campaign's budget, admitting them in order while
/// they fit. Decided under the campaign's row lock (Postgres `FOR UPDATE`; SQLite's write
/// transaction holds its one write lock), so workers charging at once never overspend.
pub(super) async fn charge_budget(
    db: &SqlStore,
    id: &CampaignId,
    costs: &[u64],
) -> StoreResult<BudgetCharge> {
    let total = i64::try_from(costs.iter().sum::<u64>()).unwrap_or(i64::MAX);
    // The common case, no budget: one statement.
    let unlimited = db
        .execute(
            "UPDATE campaigns SET committed_micros = committed_micros + $2
             WHERE id = $1 AND budget_micros IS NULL",
            &[Arg::Text(id.as_str()), Arg::Int(total)],
        )
        .await?;
    if unlimited == 1 {
        return Ok(BudgetCharge {
            admitted: vec![true; costs.len()],
            left: None,
        });
    }
    let read = match db {
        SqlStore::Postgres(_) => {
            "SELECT budget_micros, budget_currency, committed_micros FROM campaigns
             WHERE id = $1 FOR UPDATE"
        }
        SqlStore::Sqlite(_) => {
            "SELECT budget_micros, budget_currency, committed_micros FROM campaigns WHERE id = $1"
        }
    };
    let mut tx = db.write_tx().await?;
    let row = match tx.fetch_all(read, &[Arg::Text(id.as_str())]).await?.first() {
        Some(r) => Some((
            r.opt_int("budget_micros")?,
            r.opt_text("budget_currency")?,
            r.int("committed_micros")?,
        )),
        None => None,
    };
    let (charge, added) = shared::decide_budget(row, costs);
    if added > 0 {
        tx.execute(
            "UPDATE campaigns SET committed_micros = committed_micros + $2 WHERE id = $1",
            &[
                Arg::Text(id.as_str()),
                Arg::Int(i64::try_from(added).unwrap_or(i64::MAX)),
            ],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(charge)
}

pub(super) async fn refund_budget(db: &SqlStore, id: &CampaignId, micros: u64) -> StoreResult<()> {
    if micros == 0 {
        return Ok(());
    }
    db.execute(
        "UPDATE campaigns SET committed_micros =
            CASE WHEN committed_micros > $2 THEN committed_micros - $2 ELSE 0 END
         WHERE id = $1",
        &[
            Arg::Text(id.as_str()),
            Arg::Int(i64::try_from(micros).unwrap_or(i64::MAX)),
        ],
    )
    .await?;
    Ok(())
}

pub(super) async fn budgeted_campaigns(db: &SqlStore) -> StoreResult<Vec<Campaign>> {
    db.read_all(
        concat!(
            "SELECT ",
            campaign_columns!(),
            " FROM campaigns WHERE budget_micros IS NOT NULL AND state <> 'cancelled' ORDER BY id"
        ),
        &[],
    )
    .await?
    .iter()
    .map(campaign_row)
    .collect()
}
