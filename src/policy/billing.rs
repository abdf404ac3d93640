//! What a billable message costs by Meta's word: the status webhook's `pricing.category`
//! (reference §7: `marketing`, `utility`, `authentication`, `authentication-international`,
//! `service`, `referral_conversion`, `marketing_lite`) priced with the rate card for the
//! recipient's market. Pure.

use crate::domain::{Category, PhoneNumber};
use crate::policy::cost::{RateCard, WhatsAppMessage};
use crate::policy::window::WindowState;

/// The market and price of one message Meta bills as `category` to `to`, sent at `sent_at`
/// (the card version in force then: past sends keep their price); `None` for a category herald
/// does not know (counted, not priced).
pub fn billed_price(
    card: &RateCard,
    category: &str,
    to: &PhoneNumber,
    sent_at: chrono::DateTime<chrono::Utc>,
) -> Option<(String, u64)> {
    let card = card.at(sent_at);
    let market = card.market(to).to_owned();
    let micros = match category.to_ascii_lowercase().as_str() {
        "marketing" | "marketing_lite" => card.micros(Category::Marketing, to),
        "utility" => card.micros(Category::Utility, to),
        "authentication" => card.micros(Category::Authentication, to),
        "authentication-international" | "authentication_international" => card
            .authentication_international_micros(to)
            .unwrap_or_else(|| card.micros(Category::Authentication, to)),
        // A billed service message: the market's service price (the window rules aside:
        // Meta said it is billable).
        "service" => card.whatsapp_micros(
            WhatsAppMessage::Session,
            Category::Utility,
            to,
            WindowState {
                open: true,
                free_entry_point: false,
            },
        ),
        "referral_conversion" => 0,
        _ => return None,
    };
    Some((market, micros))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metas_categories_are_priced_for_the_recipients_market() {
        let card = RateCard::builtin();
        let now = chrono::Utc::now();
        let de = PhoneNumber::parse("+4915112345678").unwrap();
        let price = |category: &str| billed_price(&card, category, &de, now);
        assert_eq!(price("marketing"), Some(("DE".into(), 136_500)));
        assert_eq!(price("utility"), Some(("DE".into(), 55_000)));
        assert_eq!(price("referral_conversion").unwrap().1, 0);
        assert_eq!(price("hologram"), None);
        let india = PhoneNumber::parse("+919876543210").unwrap();
        assert_eq!(
            billed_price(&card, "authentication-international", &india, now).map(|p| p.1),
            card.authentication_international_micros(&india)
        );
    }
}
