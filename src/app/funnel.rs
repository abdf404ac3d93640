//! A campaign's funnel per channel — sent → delivered → read → converted, follow-ups and the
//! orders after them, revenue and estimated cost — read from the ledger and the reported
//! conversions. Shared by `herald campaign status` and the demo's summary.

use std::collections::BTreeMap;

use crate::domain::{CampaignId, ChannelKind, ConversionSummary, IdempotencyKey, PhoneNumber};
use crate::policy::cost::{RateCard, format_micros};
use crate::store::{FunnelCell, Store, StoreResult};

/// One channel's column of the funnel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChannelFunnel {
    /// First messages and SMS fallbacks sent on this channel.
    pub sent: u64,
    /// Of them, SMS fallbacks (`key#sms`).
    pub fell_back: u64,
    pub delivered: u64,
    pub read: u64,
    /// Conversions attributed to customers this channel reached.
    pub converted: u64,
    /// Follow-ups sent on this channel.
    pub follow_ups: u64,
    /// Conversions that came after the customer's follow-up went out.
    pub converted_after_follow_up: u64,
    /// Revenue per currency, in micros.
    pub revenue: BTreeMap<String, i64>,
    /// The rate card's price of everything sent on this channel (first messages, fallbacks,
    /// follow-ups), in micros of the card's currency; `None` when not priced.
    pub cost_micros: Option<u64>,
}

impl ChannelFunnel {
    /// Conversions per message sent, in percent.
    pub fn conversion_rate(&self) -> f64 {
        self.converted as f64 * 100.0 / self.sent.max(1) as f64
    }

    /// Estimated cost per conversion, in micros.
    pub fn cost_per_conversion(&self) -> Option<u64> {
        self.cost_micros
            .filter(|_| self.converted > 0)
            .map(|c| c / self.converted)
    }
}

/// The funnel from the ledger's counts and the conversions' summary (pure).
pub fn funnel(
    cells: &[FunnelCell],
    conversions: &[ConversionSummary],
) -> BTreeMap<ChannelKind, ChannelFunnel> {
    let mut out: BTreeMap<ChannelKind, ChannelFunnel> = BTreeMap::new();
    for c in cells.iter().filter(|c| c.state == "sent") {
        let col = out.entry(c.channel).or_default();
        if c.role == "follow_up" {
            col.follow_ups += c.n;
            continue;
        }
        col.sent += c.n;
        if c.role == "fallback" {
            col.fell_back += c.n;
        }
        if c.delivery == "delivered" || c.delivery == "read" {
            col.delivered += c.n;
        }
        if c.delivery == "read" {
            col.read += c.n;
        }
    }
    for s in conversions {
        let Some(channel) = s.channel else { continue };
        let col = out.entry(channel).or_default();
        col.converted += s.conversions;
        col.converted_after_follow_up += s.after_follow_up;
        for (currency, micros) in &s.revenue {
            *col.revenue.entry(currency.clone()).or_default() += micros;
        }
    }
    out
}

/// The campaign's funnel with the estimated cost of what was sent, priced by `card` (one pass
/// over the campaign's ledger; an SMS is priced as `sms_text` would be).
pub async fn campaign_funnel(
    store: &dyn Store,
    campaign: &CampaignId,
    card: Option<(&RateCard, &str)>,
) -> StoreResult<BTreeMap<ChannelKind, ChannelFunnel>> {
    let cells = store.campaign_funnel(campaign).await?;
    let conversions = store.conversion_summary(campaign).await?;
    let mut out = funnel(&cells, &conversions);
    let Some((card, sms_text)) = card else {
        return Ok(out);
    };
    let mut after: Option<IdempotencyKey> = None;
    loop {
        let page = store.ledger_page(campaign, after.as_ref(), 5000).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.key.clone());
        for row in page.iter().filter(|r| r.state == "sent") {
            let to = PhoneNumber::from_trusted(row.recipient.clone());
            let micros = match row.channel {
                ChannelKind::Sms => card.sms_micros(&to, sms_text),
                _ => card.micros(row.category, &to),
            };
            let col = out.entry(row.channel).or_default();
            *col.cost_micros.get_or_insert(0) += micros;
        }
    }
    // Sends whose rows the retention purge deleted are priced from the prefix they left: the
    // card finds a market by the calling code, which the prefix holds.
    for p in store.purged_sent(campaign).await? {
        let to = PhoneNumber::from_trusted(format!("+{}", p.prefix));
        let micros = match p.channel {
            ChannelKind::Sms => card.sms_micros(&to, sms_text),
            _ => card.micros(p.category, &to),
        };
        let col = out.entry(p.channel).or_default();
        *col.cost_micros.get_or_insert(0) += micros * p.n;
    }
    Ok(out)
}

/// The funnel as a text table, one column per channel.
pub fn table(cols: &BTreeMap<ChannelKind, ChannelFunnel>, currency: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let channels: Vec<ChannelKind> = cols.keys().copied().collect();
    let _ = write!(out, "  {:<34}", "");
    for ch in &channels {
        let _ = write!(out, "{:>16}", ch.as_str());
    }
    out.push('\n');
    let mut row = |label: &str, value: &dyn Fn(&ChannelFunnel) -> String| {
        let _ = write!(out, "  {label:<34}");
        for ch in &channels {
            let _ = write!(out, "{:>16}", value(&cols[ch]));
        }
        out.push('\n');
    };
    let money = |micros: Option<u64>| micros.map_or("—".into(), |m| format_micros(m, currency));
    row("sent (reached)", &|c| c.sent.to_string());
    row("  of them SMS fallbacks", &|c| c.fell_back.to_string());
    row("delivered", &|c| c.delivered.to_string());
    row("read (SMS has no read receipts)", &|c| c.read.to_string());
    row("converted", &|c| c.converted.to_string());
    row("conversion rate", &|c| {
        format!("{:.1} %", c.conversion_rate())
    });
    row("follow-ups sent", &|c| c.follow_ups.to_string());
    row("  conversions after the follow-up", &|c| {
        c.converted_after_follow_up.to_string()
    });
    row("revenue", &|c| {
        let parts: Vec<String> = c
            .revenue
            .iter()
            .map(|(cur, m)| format_micros(u64::try_from(*m).unwrap_or(0), cur))
            .collect();
        if parts.is_empty() {
            "—".into()
        } else {
            parts.join(" + ")
        }
    });
    row("cost (estimated)", &|c| money(c.cost_micros));
    row("cost per conversion (estimated)", &|c| {
        money(c.cost_per_conversion())
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(role: &str, channel: ChannelKind, state: &str, delivery: &str, n: u64) -> FunnelCell {
        FunnelCell {
            role: role.into(),
            channel,
            state: state.into(),
            reason: String::new(),
            delivery: delivery.into(),
            n,
        }
    }

    #[tokio::test]
    async fn a_campaigns_funnel_and_its_cost_are_the_same_after_its_rows_are_purged() {
        use crate::domain::{Category, JobId, Outcome, SenderId};
        use crate::policy::retention::RetentionPolicy;
        use crate::store::{Claim, OutcomeRecord};

        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("h.db").display());
        let store = crate::store::open(&url).await.unwrap();
        let campaign = CampaignId::parse("bf").unwrap();
        let rows = [
            ("de", "+4915112345678", ChannelKind::WhatsApp),
            ("nl", "+31612345678", ChannelKind::WhatsApp),
            ("de#sms", "+4915112345678", ChannelKind::Sms),
        ];
        let claims: Vec<Claim> = rows
            .iter()
            .map(|(key, to, channel)| Claim {
                key: IdempotencyKey::parse(key).unwrap(),
                campaign: campaign.clone(),
                job: JobId::parse("j").unwrap(),
                sender: SenderId::parse("1").unwrap(),
                recipient: (*to).into(),
                template: "flash_sale".into(),
                language: "de".into(),
                category: Category::Marketing,
                channel: *channel,
            })
            .collect();
        store
            .claim("w", std::time::Duration::from_secs(60), &claims)
            .await
            .unwrap();
        let outcomes: Vec<OutcomeRecord> = rows
            .iter()
            .map(|(key, _, _)| OutcomeRecord {
                key: IdempotencyKey::parse(key).unwrap(),
                outcome: Outcome::Sent {
                    wamid: format!("wamid.{key}"),
                },
                attempts: 1,
            })
            .collect();
        store.record_outcomes(&outcomes).await.unwrap();
        let card = RateCard::builtin();
        let before = campaign_funnel(&*store, &campaign, Some((&card, "Sale")))
            .await
            .unwrap();
        assert!(before[&ChannelKind::WhatsApp].cost_micros.unwrap() > 0);
        assert!(before[&ChannelKind::Sms].cost_micros.unwrap() > 0);

        let later = chrono::Utc::now() + chrono::Duration::days(401);
        let purged = store
            .purge(&RetentionPolicy::default(), later, false)
            .await
            .unwrap();
        assert_eq!(purged.total(), 3);
        let after = campaign_funnel(&*store, &campaign, Some((&card, "Sale")))
            .await
            .unwrap();
        assert_eq!(after, before);
    }

    #[test]
    fn the_funnel_counts_each_stage_per_channel_and_follow_ups_apart() {
        use ChannelKind::*;
        let cells = [
            cell("first", WhatsApp, "sent", "read", 50),
            cell("first", WhatsApp, "sent", "delivered", 30),
            cell("first", WhatsApp, "sent", "", 10),
            cell("first", WhatsApp, "skipped", "", 7),
            cell("fallback", Sms, "sent", "delivered", 4),
            cell("first", Sms, "sent", "delivered", 20),
            cell("follow_up", WhatsApp, "sent", "read", 40),
            cell("follow_up", WhatsApp, "skipped", "", 10),
        ];
        let conversions = [ConversionSummary {
            channel: Some(WhatsApp),
            conversions: 9,
            after_follow_up: 4,
            revenue: [("EUR".to_owned(), 9_000_000)].into(),
        }];
        let f = funnel(&cells, &conversions);
        let wa = &f[&WhatsApp];
        assert_eq!((wa.sent, wa.delivered, wa.read), (90, 80, 50));
        assert_eq!(
            (wa.converted, wa.converted_after_follow_up, wa.follow_ups),
            (9, 4, 40)
        );
        assert_eq!(wa.conversion_rate(), 10.0);
        let sms = &f[&Sms];
        assert_eq!(
            (sms.sent, sms.fell_back, sms.delivered, sms.read),
            (24, 4, 24, 0)
        );
        assert_eq!(sms.cost_per_conversion(), None);
    }
}
