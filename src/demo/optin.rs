//! The demo's click-to-chat scene: walk-in customers scan the store's poster (a `wa.me` link
//! whose prefilled text is the keyword) and write it; Meta delivers some webhooks twice. Each
//! gets WhatsApp consent with its proof and exactly one confirmation, inside the window they
//! opened — free.

use chrono::Utc;

use crate::domain::inbound::OptInKeyword;
use crate::domain::{Category, ChannelKind, PhoneNumber, SenderId};
use crate::engine::{Engine, OPTIN_CAMPAIGN, RunControl};
use crate::optin::link::{prefilled_text, wa_me_link};
use crate::policy::optin::default_confirmation;
use crate::simulator::{InboundRequest, SimHandle};
use crate::store::Store;

const KEYWORD: &str = "SNEAKERS";
const BUSINESS: &str = "Acme Mode";

/// What the scene did, for its summary line.
pub struct OptInScene {
    pub link: String,
    pub wrote: usize,
    pub webhooks: usize,
    pub consents: usize,
    pub confirmations: u64,
}

/// Plays `walk_ins` customers (numbers outside the campaign's) opting in by keyword.
pub async fn play(
    store: &dyn Store,
    engine: &Engine,
    sim: &SimHandle,
    sender: &str,
    display_number: &str,
    walk_ins: usize,
) -> anyhow::Result<OptInScene> {
    let sender_id = SenderId::parse(sender)?;
    store
        .upsert_keyword(&OptInKeyword {
            keyword: KEYWORD.into(),
            sender: sender_id.clone(),
            category: Category::Marketing,
            source: "poster-store-berlin".into(),
            business: BUSINESS.into(),
            confirmation: default_confirmation(BUSINESS, "marketing"),
            created_at: Utc::now(),
        })
        .await?;
    let link = wa_me_link(display_number, &prefilled_text(KEYWORD, None))?;
    let mut webhooks = 0;
    let numbers: Vec<String> = (0..walk_ins).map(|i| format!("+4915900{i:06}")).collect();
    for (i, number) in numbers.iter().enumerate() {
        // Customers type it their way; every fifth webhook Meta delivers twice.
        let text = if i % 3 == 0 {
            "sneakers"
        } else {
            " Sneakers! "
        };
        let repeat = if i % 5 == 0 { 2 } else { 1 };
        let posted = sim
            .inbound(InboundRequest {
                repeat,
                ..InboundRequest::text(number, text)
            })
            .await?;
        anyhow::ensure!(
            posted.acknowledged(),
            "herald did not acknowledge an inbound webhook: {posted:?}"
        );
        webhooks += repeat as usize;
    }
    let round = engine.fire_confirmations(&RunControl::default()).await?;
    let phones: Vec<PhoneNumber> = numbers
        .iter()
        .map(|n| PhoneNumber::parse(n))
        .collect::<Result<_, _>>()?;
    let consents = store
        .consent_states(Category::Marketing, ChannelKind::WhatsApp, &phones)
        .await?
        .into_iter()
        .filter(|c| *c == crate::domain::ConsentState::Granted)
        .count();
    let confirmations = store
        .campaign_counts(&crate::domain::CampaignId::parse(OPTIN_CAMPAIGN)?)
        .await?
        .state("sent");
    anyhow::ensure!(
        round.later == 0,
        "{} confirmations could not go out",
        round.later
    );
    Ok(OptInScene {
        link,
        wrote: walk_ins,
        webhooks,
        consents,
        confirmations,
    })
}
