//! Conversion events: the rules both dialects share around their batch statements
//! (`postgres/conversions.rs`, `sqlite/conversions.rs`) — a batch deduplicated and ordered,
//! each event attributed from the ledger facts its dialect read (`policy::attribution`) — and
//! the per-campaign summary, one statement for both.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};

use super::db::Arg;
use super::sql::SqlStore;
use super::{StoreError, StoreResult};
use crate::domain::{CampaignId, ChannelKind, Conversion, ConversionSummary, ConversionTally};
use crate::policy::attribution::{KeyRows, attribute};

/// A batch ready to write: each `event_id` once (the first wins), ordered by it, so that two
/// concurrent batches insert overlapping ids in the same order and never deadlock.
pub(crate) struct Batch<'a> {
    pub events: Vec<&'a Conversion>,
    /// Events dropped for repeating an `event_id` of the batch.
    pub repeated: u64,
}

impl<'a> Batch<'a> {
    pub fn new(events: &'a [Conversion]) -> Self {
        let mut seen = HashSet::with_capacity(events.len());
        let mut unique: Vec<&Conversion> = events
            .iter()
            .filter(|e| seen.insert(e.event_id.as_str()))
            .collect();
        unique.sort_by(|a, b| a.event_id.cmp(&b.event_id));
        Self {
            repeated: (events.len() - unique.len()) as u64,
            events: unique,
        }
    }
}

/// What the ledger says about the main key an event matched, as the lookup statements read it.
#[derive(Debug, Default)]
pub(crate) struct Facts {
    /// The matched main key; `None` when no row of the campaign matched.
    pub key: Option<String>,
    pub channel: Option<String>,
    pub state: Option<String>,
    pub delivery: Option<String>,
    pub sms_state: Option<String>,
    pub follow_up_state: Option<String>,
}

/// One row to insert.
#[derive(Debug)]
pub(crate) struct NewConversion<'a> {
    pub event_id: &'a str,
    pub campaign: &'a str,
    pub key: Option<String>,
    pub channel: Option<&'static str>,
    pub after_follow_up: bool,
    /// Only for an unattributed event: the ledger holds the number of an attributed one.
    pub phone: Option<&'a str>,
    pub event: &'a str,
    pub at: DateTime<Utc>,
    pub amount_micros: Option<i64>,
    pub currency: Option<&'a str>,
}

/// Attributes each event of the batch from its facts (same order).
pub(crate) fn attribute_all<'a>(
    batch: &Batch<'a>,
    facts: Vec<Facts>,
) -> StoreResult<Vec<NewConversion<'a>>> {
    if facts.len() != batch.events.len() {
        return Err(StoreError::Corrupt(format!(
            "conversion lookup returned {} rows for {} events",
            facts.len(),
            batch.events.len()
        )));
    }
    batch
        .events
        .iter()
        .zip(facts)
        .map(|(e, f)| {
            let credit = match (&f.key, f.channel.as_deref(), f.state.as_deref()) {
                (Some(_), Some(channel), Some(state)) => {
                    let channel: ChannelKind = channel.parse().map_err(StoreError::Corrupt)?;
                    Some(attribute(&KeyRows {
                        channel,
                        state,
                        delivery: f.delivery.as_deref(),
                        sms_state: f.sms_state.as_deref(),
                        follow_up_state: f.follow_up_state.as_deref(),
                    }))
                }
                _ => None,
            };
            Ok(NewConversion {
                event_id: &e.event_id,
                campaign: e.campaign.as_str(),
                channel: credit.map(|c| c.channel.as_str()),
                after_follow_up: credit.is_some_and(|c| c.after_follow_up),
                phone: match credit {
                    Some(_) => None,
                    None => e.to.as_ref().map(|p| p.as_str()),
                },
                key: credit.and(f.key),
                event: &e.event,
                at: e.at,
                amount_micros: e.value.as_ref().map(|v| v.amount_micros),
                currency: e.value.as_ref().map(|v| v.currency.as_str()),
            })
        })
        .collect()
}

/// The tally of a batch from the ids the insert returned (those it stored).
pub(crate) fn tally(
    batch: &Batch<'_>,
    rows: &[NewConversion<'_>],
    stored: &HashSet<String>,
) -> ConversionTally {
    let unattributed = rows
        .iter()
        .filter(|r| r.key.is_none() && stored.contains(r.event_id))
        .count() as u64;
    ConversionTally {
        stored: stored.len() as u64,
        duplicates: batch.repeated + (rows.len() - stored.len()) as u64,
        unattributed,
    }
}

pub(super) async fn conversion_summary(
    db: &SqlStore,
    campaign: &CampaignId,
) -> StoreResult<Vec<ConversionSummary>> {
    let rows = db
        .read_all(
            "SELECT channel, currency, count(*) AS n,
                    sum(CASE WHEN after_follow_up THEN 1 ELSE 0 END) AS after_follow_up,
                    CAST(sum(amount_micros) AS BIGINT) AS revenue
             FROM conversions WHERE campaign = $1
             GROUP BY channel, currency",
            &[Arg::Text(campaign.as_str())],
        )
        .await?;
    let mut by_channel: HashMap<Option<ChannelKind>, ConversionSummary> = HashMap::new();
    for r in &rows {
        let channel = r
            .opt_text("channel")?
            .map(|c| c.parse::<ChannelKind>())
            .transpose()
            .map_err(StoreError::Corrupt)?;
        let s = by_channel
            .entry(channel)
            .or_insert_with(|| ConversionSummary {
                channel,
                ..ConversionSummary::default()
            });
        s.conversions += u64::try_from(r.int("n")?).unwrap_or(0);
        s.after_follow_up += u64::try_from(r.int("after_follow_up")?).unwrap_or(0);
        if let (Some(currency), Some(micros)) = (r.opt_text("currency")?, r.opt_int("revenue")?) {
            *s.revenue.entry(currency).or_default() += micros;
        }
    }
    let mut out: Vec<ConversionSummary> = by_channel.into_values().collect();
    // Channels first (whatsapp, sms), unattributed last.
    out.sort_by_key(|s| (s.channel.is_none(), s.channel));
    Ok(out)
}

/// The `converted` events of the conversions a batch stored that are attributed to a key:
/// one per key, ever (the outbox's (key, state) is unique), dated `at`.
pub(crate) fn converted_events(
    rows: &[NewConversion<'_>],
    stored: &HashSet<String>,
    options: crate::domain::EventOptions,
    at: DateTime<Utc>,
) -> Vec<crate::domain::NewRecipientEvent> {
    use crate::domain::{ChannelKind, EventFacts, NewRecipientEvent, RecipientState};
    rows.iter()
        .filter(|r| stored.contains(r.event_id))
        .filter_map(|r| {
            let key = r.key.as_deref()?;
            Some(NewRecipientEvent::build(
                EventFacts {
                    message_key: key,
                    state: RecipientState::Converted,
                    campaign: r.campaign,
                    channel: r
                        .channel
                        .and_then(|c| c.parse().ok())
                        .unwrap_or(ChannelKind::WhatsApp),
                    recipient: r.phone.unwrap_or_default(),
                    code: None,
                    at,
                },
                options.numbers,
            ))
        })
        .collect()
}
