//! What a message costs: Meta charges each delivered template by category × recipient market
//! (reference §7). Prices are data (`data/rate-card.json`, replaceable with `--rate-card`),
//! never scattered through code. Amounts are integer millionths of the currency ("micros") so
//! sums are exact.

use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;

use crate::domain::{Category, PhoneNumber};
use crate::policy::window::WindowState;

/// The rate card shipped with herald.
pub const DEFAULT_RATE_CARD: &str = include_str!("../../data/rate-card.json");

/// The market label for numbers whose country the rate card does not price.
pub const UNPRICED_MARKET: &str = "other";

#[derive(Debug, Clone, Deserialize)]
struct RateCardFile {
    name: String,
    currency: String,
    markets: Vec<MarketFile>,
    #[serde(default)]
    window: WindowRules,
}

/// What the customer-service window makes free (reference §7). The defaults are Meta's rules
/// since 2025-07-01: service (free-form) messages and utility templates inside an open window
/// are free, and everything inside a free entry point (72 h after a click-to-WhatsApp ad).
/// Meta changes these: a card may price service messages per market (`service`) and name
/// fewer free categories.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowRules {
    /// Template categories free inside an open window.
    #[serde(default = "default_free_in_window")]
    pub free_in_window: Vec<Category>,
    /// Session messages inside an open window are free (else priced at the market's
    /// `service`).
    #[serde(default = "yes")]
    pub service_free: bool,
    /// Every message inside a free entry point is free.
    #[serde(default = "yes")]
    pub free_entry_point: bool,
    /// Where the rules come from, for the people who read the card.
    #[serde(default)]
    pub note: Option<String>,
}

fn default_free_in_window() -> Vec<Category> {
    vec![Category::Utility]
}

fn yes() -> bool {
    true
}

impl Default for WindowRules {
    fn default() -> Self {
        Self {
            free_in_window: default_free_in_window(),
            service_free: true,
            free_entry_point: true,
            note: None,
        }
    }
}

/// What a WhatsApp send carries, for its price.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhatsAppMessage {
    Template,
    /// A free-form message inside the customer-service window.
    Session,
}

#[derive(Debug, Clone, Deserialize)]
struct MarketFile {
    market: String,
    calling_codes: Vec<String>,
    marketing: f64,
    utility: f64,
    authentication: f64,
    /// Price of one SMS part to the market (the SMS route's price list), when SMS is priced.
    #[serde(default)]
    sms: Option<f64>,
    /// Price of one service (free-form) message inside the window, when the card's window
    /// rules do not make them free.
    #[serde(default)]
    service: Option<f64>,
}

/// Prices per market and category, looked up by a number's country calling code.
#[derive(Debug, Clone)]
pub struct RateCard {
    pub name: String,
    pub currency: String,
    /// calling code → (market, [marketing, utility, authentication] in micros)
    by_code: HashMap<String, (String, [u64; 3])>,
    /// calling code → one SMS part in micros, for markets the card prices SMS in.
    sms_by_code: HashMap<String, u64>,
    /// calling code → one service message in micros, for markets that price them.
    service_by_code: HashMap<String, u64>,
    /// What the customer-service window makes free.
    pub window: WindowRules,
    /// Longest calling code in the card (codes are 1–3 digits).
    max_code_len: usize,
}

/// The price of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Price {
    pub market: String,
    pub micros: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum RateCardError {
    #[error("cannot read rate card {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("rate card is not valid: {0}")]
    Invalid(String),
}

fn to_micros(usd: f64) -> u64 {
    (usd * 1_000_000.0).round() as u64
}

fn category_index(c: Category) -> usize {
    match c {
        Category::Marketing => 0,
        Category::Utility => 1,
        Category::Authentication => 2,
    }
}

impl RateCard {
    pub fn parse(json: &str) -> Result<Self, RateCardError> {
        let file: RateCardFile =
            serde_json::from_str(json).map_err(|e| RateCardError::Invalid(e.to_string()))?;
        let mut by_code = HashMap::new();
        let mut sms_by_code = HashMap::new();
        let mut service_by_code = HashMap::new();
        let mut max_code_len = 0;
        for m in file.markets {
            for p in [m.marketing, m.utility, m.authentication]
                .into_iter()
                .chain(m.sms)
                .chain(m.service)
            {
                if !(0.0..1000.0).contains(&p) {
                    return Err(RateCardError::Invalid(format!(
                        "market {}: price {p} out of range",
                        m.market
                    )));
                }
            }
            let prices = [
                to_micros(m.marketing),
                to_micros(m.utility),
                to_micros(m.authentication),
            ];
            for code in m.calling_codes {
                if code.is_empty() || !code.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(RateCardError::Invalid(format!("calling code '{code}'")));
                }
                max_code_len = max_code_len.max(code.len());
                if let Some(sms) = m.sms {
                    sms_by_code.insert(code.clone(), to_micros(sms));
                }
                if let Some(service) = m.service {
                    service_by_code.insert(code.clone(), to_micros(service));
                }
                by_code.insert(code, (m.market.clone(), prices));
            }
        }
        Ok(Self {
            name: file.name,
            currency: file.currency,
            by_code,
            sms_by_code,
            service_by_code,
            window: file.window,
            max_code_len,
        })
    }

    /// The rate card shipped with herald.
    pub fn builtin() -> Self {
        Self::parse(DEFAULT_RATE_CARD).expect("the shipped rate card parses")
    }

    pub fn load(path: &Path) -> Result<Self, RateCardError> {
        let text = std::fs::read_to_string(path).map_err(|source| RateCardError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text)
    }

    /// The market a number belongs to (longest matching calling code), or `other`.
    pub fn market(&self, to: &PhoneNumber) -> &str {
        self.lookup(to)
            .map(|(m, _)| m.as_str())
            .unwrap_or(UNPRICED_MARKET)
    }

    fn lookup(&self, to: &PhoneNumber) -> Option<&(String, [u64; 3])> {
        let digits = to.digits();
        (1..=self.max_code_len.min(digits.len()))
            .rev()
            .find_map(|len| self.by_code.get(&digits[..len]))
    }

    /// The list price of one delivered template of `category` to `to`; `None` when the
    /// card has no price for that market.
    pub fn price(&self, category: Category, to: &PhoneNumber) -> Option<Price> {
        self.lookup(to).map(|(market, prices)| Price {
            market: market.clone(),
            micros: prices[category_index(category)],
        })
    }

    /// The price of one SMS part to `to` (longest matching calling code); `None` when the card
    /// prices no SMS for that market.
    pub fn sms_part_micros(&self, to: &PhoneNumber) -> Option<u64> {
        let digits = to.digits();
        (1..=self.max_code_len.min(digits.len()))
            .rev()
            .find_map(|len| self.sms_by_code.get(&digits[..len]).copied())
    }

    /// The price of one SMS with `text` to `to`: its parts ([`super::segments::count`]) × the
    /// part price (0 when the card prices no SMS for that market).
    pub fn sms_micros(&self, to: &PhoneNumber, text: &str) -> u64 {
        self.sms_part_micros(to)
            .map_or(0, |p| p * u64::from(super::segments::count(text).parts))
    }

    /// Whether a WhatsApp send is free by the window rules: a session message (unless the card
    /// prices service messages), a template of a category free in the window while it is open,
    /// anything inside a free entry point.
    pub fn is_free(
        &self,
        session: bool,
        category: Category,
        to: &PhoneNumber,
        window: WindowState,
    ) -> bool {
        let rules = &self.window;
        if window.free_entry_point && rules.free_entry_point {
            return true;
        }
        if session {
            return rules.service_free || self.service_micros(to) == 0;
        }
        window.open && rules.free_in_window.contains(&category)
    }

    /// The price of one WhatsApp send of `message` and `category` to `to` in the state its
    /// customer-service window is in.
    pub fn whatsapp_micros(
        &self,
        message: WhatsAppMessage,
        category: Category,
        to: &PhoneNumber,
        window: WindowState,
    ) -> u64 {
        let session = message == WhatsAppMessage::Session;
        if self.is_free(session, category, to, window) {
            0
        } else if session {
            self.service_micros(to)
        } else {
            self.micros(category, to)
        }
    }

    fn service_micros(&self, to: &PhoneNumber) -> u64 {
        let digits = to.digits();
        (1..=self.max_code_len.min(digits.len()))
            .rev()
            .find_map(|len| self.service_by_code.get(&digits[..len]).copied())
            .unwrap_or(0)
    }

    /// [`price`](Self::price) in micros only (0 when unpriced), without naming the market.
    pub fn micros(&self, category: Category, to: &PhoneNumber) -> u64 {
        self.lookup(to)
            .map_or(0, |(_, prices)| prices[category_index(category)])
    }
}

/// Formats micros as an amount with the currency: `1234.5678 USD`.
pub fn format_micros(micros: u64, currency: &str) -> String {
    format!(
        "{}.{:04} {currency}",
        micros / 1_000_000,
        (micros % 1_000_000) / 100
    )
}

/// Parses an amount of money (`250`, `99.5`, `0.000125`) into micros, exactly: no floating
/// point, at most six decimals, not negative.
pub fn parse_amount(raw: &str) -> Result<u64, String> {
    let raw = raw.trim();
    let bad = || format!("'{raw}' is not an amount (like 250 or 99.50)");
    let (whole, frac) = raw.split_once('.').unwrap_or((raw, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() && frac.is_empty() || !digits(whole) || !digits(frac) {
        return Err(bad());
    }
    if frac.len() > 6 {
        return Err(format!("'{raw}' has more than six decimals"));
    }
    let whole: u64 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| bad())?
    };
    let frac_micros: u64 = format!("{frac:0<6}").parse().map_err(|_| bad())?;
    whole
        .checked_mul(1_000_000)
        .and_then(|w| w.checked_add(frac_micros))
        .filter(|m| i64::try_from(*m).is_ok())
        .ok_or_else(|| format!("'{raw}' is too large"))
}

/// Which sends fit a budget of `budget` micros with `committed` already spent, in order: each
/// is admitted if its cost still fits, so a cheaper send after a refused one may still go.
/// Without a budget all are admitted. Returns the verdicts and the total admitted.
pub fn admit_within_budget(budget: Option<u64>, committed: u64, costs: &[u64]) -> (Vec<bool>, u64) {
    let Some(budget) = budget else {
        return (vec![true; costs.len()], costs.iter().sum());
    };
    let mut left = budget.saturating_sub(committed);
    let mut added = 0;
    let verdicts = costs
        .iter()
        .map(|&c| {
            let fits = c <= left;
            if fits {
                left -= c;
                added += c;
            }
            fits
        })
        .collect();
    (verdicts, added)
}

/// Running totals of estimated cost by (category, market).
#[derive(Debug, Clone, Default)]
pub struct CostTally {
    pub by_category_market: std::collections::BTreeMap<(Category, String), (u64, u64)>,
    /// Messages whose market the rate card does not price.
    pub unpriced: u64,
    /// Messages the customer-service window made free (session messages, templates free in an
    /// open window or a free entry point).
    pub free: u64,
}

impl CostTally {
    /// Adds one message.
    pub fn add(&mut self, card: &RateCard, category: Category, to: &PhoneNumber) {
        match card.price(category, to) {
            Some(p) => {
                let e = self
                    .by_category_market
                    .entry((category, p.market))
                    .or_default();
                e.0 += 1;
                e.1 += p.micros;
            }
            None => self.unpriced += 1,
        }
    }

    /// Adds one message priced elsewhere (an SMS: parts × the part price) under `market`.
    pub fn add_priced(&mut self, category: Category, market: &str, micros: u64) {
        if micros == 0 {
            self.unpriced += 1;
            return;
        }
        let e = self
            .by_category_market
            .entry((category, market.to_owned()))
            .or_default();
        e.0 += 1;
        e.1 += micros;
    }

    pub fn total_micros(&self) -> u64 {
        self.by_category_market.values().map(|(_, m)| m).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> PhoneNumber {
        PhoneNumber::parse(s).unwrap()
    }

    const OPEN: WindowState = WindowState {
        open: true,
        free_entry_point: false,
    };
    const FREE_ENTRY: WindowState = WindowState {
        open: false,
        free_entry_point: true,
    };

    #[test]
    fn the_shipped_card_charges_in_window_utility_since_2026_10_and_keeps_free_entry_points() {
        let card = RateCard::builtin();
        let de = n("+4915112345678");
        let t = WhatsAppMessage::Template;
        assert_eq!(
            card.whatsapp_micros(t, Category::Utility, &de, OPEN),
            55_000
        );
        assert_eq!(
            card.whatsapp_micros(t, Category::Marketing, &de, FREE_ENTRY),
            0
        );
        // No market prices service messages in Meta's sample: a session is estimated at 0.
        let s = WhatsAppMessage::Session;
        assert_eq!(card.whatsapp_micros(s, Category::Marketing, &de, OPEN), 0);
    }

    #[test]
    fn the_window_makes_service_messages_and_utility_templates_free() {
        // The rules before 2026-10-01 (the defaults of a card without `window`).
        let card =
            RateCard::parse(&DEFAULT_RATE_CARD.replace("\"window\"", "\"old_window\"")).unwrap();
        let de = n("+4915112345678");
        let closed = WindowState::CLOSED;
        let t = WhatsAppMessage::Template;
        assert_eq!(
            card.whatsapp_micros(t, Category::Marketing, &de, closed),
            136_500
        );
        assert_eq!(
            card.whatsapp_micros(t, Category::Marketing, &de, OPEN),
            136_500
        );
        assert_eq!(
            card.whatsapp_micros(t, Category::Utility, &de, closed),
            55_000
        );
        assert_eq!(card.whatsapp_micros(t, Category::Utility, &de, OPEN), 0);
        let s = WhatsAppMessage::Session;
        assert_eq!(card.whatsapp_micros(s, Category::Marketing, &de, OPEN), 0);
        // Inside a free entry point everything is free, even marketing outside the 24 h.
        assert_eq!(
            card.whatsapp_micros(t, Category::Marketing, &de, FREE_ENTRY),
            0
        );
        assert!(card.is_free(false, Category::Marketing, &de, FREE_ENTRY));
        assert!(!card.is_free(false, Category::Marketing, &de, OPEN));
    }

    #[test]
    fn a_card_may_price_service_messages_and_name_fewer_free_categories() {
        // Meta's announced 2026 rules: in-window service and utility charged.
        let card = RateCard::parse(
            r#"{"name":"t","currency":"USD",
                "window":{"free_in_window":[],"service_free":false,"free_entry_point":true},
                "markets":[{"market":"DE","calling_codes":["49"],"marketing":0.1365,
                            "utility":0.055,"authentication":0.055,"service":0.004}]}"#,
        )
        .unwrap();
        let de = n("+4915112345678");
        let s = WhatsAppMessage::Session;
        assert_eq!(
            card.whatsapp_micros(s, Category::Marketing, &de, OPEN),
            4_000
        );
        let t = WhatsAppMessage::Template;
        assert_eq!(
            card.whatsapp_micros(t, Category::Utility, &de, OPEN),
            55_000
        );
        assert_eq!(
            card.whatsapp_micros(t, Category::Utility, &de, FREE_ENTRY),
            0
        );
        // A market without a service price: the session is free there.
        assert_eq!(
            card.whatsapp_micros(s, Category::Marketing, &n("+12025550123"), OPEN),
            0
        );
        assert!(
            RateCard::parse(r#"{"name":"t","currency":"USD","markets":[],"window":{"free":1}}"#)
                .is_err(),
            "unknown window rules are refused, not ignored"
        );
    }

    #[test]
    fn amounts_parse_exactly() {
        assert_eq!(parse_amount("250"), Ok(250_000_000));
        assert_eq!(parse_amount("99.5"), Ok(99_500_000));
        assert_eq!(parse_amount(" 0.000125 "), Ok(125));
        assert_eq!(parse_amount(".25"), Ok(250_000));
        assert_eq!(parse_amount("7."), Ok(7_000_000));
        for bad in [
            "",
            ".",
            "-1",
            "1e3",
            "12,50",
            "1.2.3",
            "0.0000001",
            "99999999999999999",
        ] {
            assert!(parse_amount(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_budget_admits_sends_while_they_fit() {
        let (v, added) = admit_within_budget(Some(100), 60, &[20, 30, 15, 5, 1]);
        assert_eq!(v, [true, false, true, true, false]);
        assert_eq!(added, 40);
        // Spent already (or over, after a budget was lowered): nothing costly goes.
        assert_eq!(admit_within_budget(Some(50), 60, &[1, 0]).0, [false, true]);
        // No budget: everything, and the spend is still counted.
        assert_eq!(
            admit_within_budget(None, 60, &[7, 8]),
            (vec![true, true], 15)
        );
    }

    proptest::proptest! {
        #[test]
        fn admitted_sends_never_exceed_the_budget(
            budget in 0u64..10_000,
            committed in 0u64..10_000,
            costs in proptest::collection::vec(0u64..3_000, 0..40),
        ) {
            let (v, added) = admit_within_budget(Some(budget), committed, &costs);
            let sum: u64 = costs.iter().zip(&v).filter(|(_, ok)| **ok).map(|(c, _)| c).sum();
            proptest::prop_assert_eq!(sum, added);
            proptest::prop_assert!(added <= budget.saturating_sub(committed));
            // Greedy: a refused send did not fit in what was left at its turn.
            let mut left = budget.saturating_sub(committed);
            for (c, ok) in costs.iter().zip(&v) {
                proptest::prop_assert_eq!(*ok, *c <= left);
                if *ok { left -= c; }
            }
        }
    }

    #[test]
    fn german_marketing_costs_the_list_price() {
        let card = RateCard::builtin();
        let p = card
            .price(Category::Marketing, &n("+4915112345678"))
            .unwrap();
        assert_eq!(p.market, "DE");
        assert_eq!(p.micros, 136_500);
        let p = card.price(Category::Utility, &n("+4915112345678")).unwrap();
        assert_eq!(p.micros, 55_000);
    }

    #[test]
    fn markets_come_from_the_calling_code() {
        let card = RateCard::builtin();
        assert_eq!(card.market(&n("+31612345678")), "NL");
        assert_eq!(card.market(&n("+447911123456")), "GB");
        assert_eq!(card.market(&n("+12025550123")), "NA");
        assert_eq!(card.market(&n("+5511987654321")), "BR");
        assert_eq!(card.market(&n("+919876543210")), "IN");
        assert_eq!(card.market(&n("+33612345678")), UNPRICED_MARKET);
        assert!(
            card.price(Category::Marketing, &n("+33612345678"))
                .is_none()
        );
    }

    #[test]
    fn tallies_sum_exactly() {
        let card = RateCard::builtin();
        let mut t = CostTally::default();
        for _ in 0..3 {
            t.add(&card, Category::Marketing, &n("+4915112345678"));
        }
        t.add(&card, Category::Marketing, &n("+33612345678"));
        assert_eq!(t.total_micros(), 409_500);
        assert_eq!(t.unpriced, 1);
        assert_eq!(format_micros(t.total_micros(), "USD"), "0.4095 USD");
    }

    #[test]
    fn bad_rate_cards_are_rejected() {
        assert!(RateCard::parse("{}").is_err());
        assert!(RateCard::parse(r#"{"name":"x","currency":"USD","markets":[{"market":"X","calling_codes":["4a"],"marketing":1,"utility":1,"authentication":1}]}"#).is_err());
    }
}
