//! The store probe of the long-running processes (`herald serve`, `herald worker`): one cheap
//! question that says whether the store answers, refreshing the campaign gauges on the way.
//! Here, below both adapters, so neither imports the other for it.

use std::time::Duration;

use crate::store::{CampaignState, Store};
use crate::telemetry::metrics;

/// A store slower than this to answer one primary-key lookup is as good as down.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// One cheap question that answers "is the store there?" and refreshes the campaign gauges
/// on the way: campaigns by state, and what each budgeted campaign may still spend (so a
/// budget shows before its first send). `serve` and `worker` probe with it.
pub async fn probe_store_and_campaigns(store: &dyn Store) -> bool {
    let Ok(Ok(counts)) = tokio::time::timeout(PROBE_TIMEOUT, store.campaign_state_counts()).await
    else {
        return false;
    };
    for state in [
        CampaignState::Active,
        CampaignState::Paused,
        CampaignState::Cancelled,
    ] {
        let n = counts
            .iter()
            .find(|(s, _)| *s == state)
            .map_or(0, |(_, n)| *n);
        metrics::campaigns(state.as_str(), n);
    }
    if let Ok(Ok(budgeted)) = tokio::time::timeout(PROBE_TIMEOUT, store.budgeted_campaigns()).await
    {
        for c in budgeted {
            if let (Some(b), Some(left)) = (&c.budget, c.budget_left()) {
                metrics::budget_remaining(c.id.as_str(), &b.currency, left);
            }
        }
    }
    if let Ok(Ok(unknown)) = tokio::time::timeout(PROBE_TIMEOUT, store.unknown_by_campaign()).await
    {
        for (campaign, n) in unknown {
            metrics::unknown_recipients(campaign.as_str(), n);
        }
    }
    true
}
