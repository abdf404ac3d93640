//! The demo's closing summary: per channel, how many the sale reached, how many read, ordered,
//! got the reminder and ordered after it, and what it cost — read back from the store like
//! `herald campaign status` does, not from the demo's own counters.

use std::time::{Duration, Instant};

use super::customers::SMS_TEXT;
use crate::domain::{CampaignId, ChannelKind};
use crate::engine::{FollowUpRound, JobReport};
use crate::pacing::PacerConfig;
use crate::policy::cost::RateCard;
use crate::simulator::SimStats;
use crate::store::Store;

/// Waits until the ledger shows `expected` reads of the first message and every SMS sent has
/// its receipt, or `limit` passes (then says so and goes on: the summary shows what came).
pub async fn wait_for_reads(
    store: &dyn Store,
    campaign: &CampaignId,
    expected: u64,
    limit: Duration,
) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let cells = store.campaign_funnel(campaign).await?;
        let read: u64 = cells
            .iter()
            .filter(|c| c.role == "first" && c.delivery == "read")
            .map(|c| c.n)
            .sum();
        let sms_open: u64 = cells
            .iter()
            .filter(|c| c.channel == ChannelKind::Sms && c.state == "sent" && c.delivery.is_empty())
            .map(|c| c.n)
            .sum();
        if read >= expected && sms_open == 0 {
            return Ok(());
        }
        if started.elapsed() > limit {
            println!(
                "  (still waiting for {} reads and {sms_open} SMS receipts after {} s; going on)",
                expected.saturating_sub(read),
                limit.as_secs()
            );
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub struct Facts<'a> {
    pub store: &'a dyn Store,
    pub card: &'a RateCard,
    pub campaign: &'a CampaignId,
    pub report: &'a JobReport,
    pub elapsed: Duration,
    pub follow_ups: &'a FollowUpRound,
    pub follow_elapsed: Duration,
    /// Orders the shop reported on the first day and after the reminder.
    pub orders: (u64, u64),
    pub stats: &'a SimStats,
    pub rate: u32,
    pub again_sent: u64,
    pub portfolio: &'a str,
}

pub async fn print(f: Facts<'_>) -> anyhow::Result<()> {
    let sent = f.report.total("sent");
    println!(
        "\nFirst message: outcomes of {} keys",
        f.report.outcomes.values().sum::<u64>()
    );
    for (label, n) in &f.report.outcomes {
        println!("  {label:<28} {n:>7}");
    }
    println!(
        "  throughput: {sent} sent in {:.2} s = {:.0} msg/s (paced at {:.0} msg/s: {} × headroom {}); \
         the API saw at most {} in any one second, {} × 130429, {} duplicates",
        f.elapsed.as_secs_f64(),
        sent as f64 / f.elapsed.as_secs_f64(),
        f64::from(f.rate) * PacerConfig::default().headroom,
        f.rate,
        PacerConfig::default().headroom,
        f.stats
            .numbers
            .values()
            .map(|n| n.max_in_one_second)
            .max()
            .unwrap_or(0),
        f.stats
            .numbers
            .values()
            .map(|n| n.throttled_130429)
            .sum::<u64>(),
        f.stats.duplicates
    );
    println!("\n24 hours later (herald's clock moved forward): the 10 % reminder");
    for (label, n) in &f.follow_ups.outcomes {
        println!("  {label:<28} {n:>7}");
    }
    println!(
        "  fired in {:.2} s; orders reported: {} on the first day, {} after the reminder",
        f.follow_elapsed.as_secs_f64(),
        f.orders.0,
        f.orders.1
    );

    let cols =
        crate::app::funnel::campaign_funnel(f.store, f.campaign, Some((f.card, SMS_TEXT))).await?;
    print!(
        "\nPer channel\n{}",
        crate::app::funnel::table(&cols, &f.card.currency)
    );

    let used = f
        .store
        .tier_usage(f.portfolio, Duration::from_secs(24 * 3600))
        .await?;
    println!(
        "\nMessaging tier: {used} of 100,000 unique users in the rolling 24 h ({:.1} %)",
        used as f64 / 1000.0
    );
    println!(
        "Re-running the same job sent {} (every key already had its outcome).",
        f.again_sent
    );
    Ok(())
}
