//! What a message costs: Meta charges each delivered template by category × recipient market
//! (reference §7). Prices are data (`data/rate-card.json`, replaceable with `--rate-card`),
//! never scattered through code. Amounts are integer millionths of the currency ("micros") so
//! sums are exact.
//!
//! A card file holds one version or several (`versions`, each with its `effective_from`):
//! [`RateCard::at`] picks the one in force at a send time, so past sends keep their price.
//! Every number maps to at most one market (the longest calling-code prefix); a market may
//! leave a category unpriced (no price: never charged as free under a budget) or refuse it
//! (`refuses`: Meta does not deliver it there). Utility and authentication prices fall with
//! the month's volume ([`RateCard::tier_micros`]).

use std::collections::HashMap;
use std::path::Path;

use chrono::{DateTime, NaiveDate, Utc};
use serde::Deserialize;

use crate::domain::{Category, PhoneNumber};
use crate::policy::window::WindowState;

/// The rate card shipped with herald.
pub const DEFAULT_RATE_CARD: &str = include_str!("../../data/rate-card.json");

/// The market label for numbers whose country the rate card has no market for.
pub const UNPRICED_MARKET: &str = "unpriced";

/// The file: one version written at the top level (the original format), or `versions`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RateCardFile {
    name: String,
    currency: String,
    /// For the people who read the card; herald does not use it.
    #[serde(default, rename = "note")]
    _note: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    effective_from: Option<String>,
    #[serde(default)]
    markets: Option<Vec<MarketFile>>,
    #[serde(default)]
    window: Option<WindowRules>,
    #[serde(default)]
    tiers: Option<TiersFile>,
    #[serde(default)]
    versions: Vec<VersionFile>,
}

/// One version. In `versions`, what a version leaves out (`markets`, `window`, `tiers`) is
/// the version before's.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct VersionFile {
    #[serde(default)]
    effective_from: Option<String>,
    /// For the people who read the card; herald does not use it.
    #[serde(default, rename = "note")]
    _note: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    markets: Option<Vec<MarketFile>>,
    #[serde(default)]
    window: Option<WindowRules>,
    #[serde(default)]
    tiers: Option<TiersFile>,
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
#[serde(deny_unknown_fields)]
struct MarketFile {
    market: String,
    #[serde(default)]
    name: Option<String>,
    calling_codes: Vec<String>,
    /// A category without a price (absent or `null`) is unpriced in this market.
    #[serde(default)]
    marketing: Option<f64>,
    #[serde(default)]
    utility: Option<f64>,
    #[serde(default)]
    authentication: Option<f64>,
    /// What Meta charges an authentication template to this market from a business based
    /// elsewhere (India, Indonesia, …).
    #[serde(default)]
    authentication_international: Option<f64>,
    /// Price of one SMS part to the market (the SMS route's price list), when SMS is priced.
    #[serde(default)]
    sms: Option<f64>,
    /// Price of one service (free-form) message inside the window, when the card's window
    /// rules do not make them free.
    #[serde(default)]
    service: Option<f64>,
    /// Template categories Meta does not deliver to this market (US: marketing, 131049).
    #[serde(default)]
    refuses: Vec<Category>,
    /// This market's volume tiers, instead of the version's.
    #[serde(default)]
    tiers: Option<TiersFile>,
}

/// Volume tiers of the categories Meta tiers (marketing has none).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct TiersFile {
    #[serde(default)]
    utility: Vec<TierFile>,
    #[serde(default)]
    authentication: Vec<TierFile>,
    /// For the people who read the card; herald does not use it.
    #[serde(default, rename = "note")]
    _note: Option<serde::de::IgnoredAny>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct TierFile {
    from: u64,
    discount_percent: f64,
}

/// One volume tier: from the `from`-th message of a calendar month on (counted from 0, per
/// portfolio, market and category), the list price less `discount_bp` hundredths of a percent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tier {
    pub from: u64,
    pub discount_bp: u32,
}

/// The tiers of utility and authentication, each ascending from 0 (empty: no tiers).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tiers {
    pub utility: Vec<Tier>,
    pub authentication: Vec<Tier>,
}

impl Tiers {
    fn of(&self, category: Category) -> &[Tier] {
        match category {
            Category::Marketing => &[],
            Category::Utility => &self.utility,
            Category::Authentication => &self.authentication,
        }
    }
}

/// A market of the card: the countries (calling codes) one row of Meta's card prices.
#[derive(Debug, Clone)]
pub struct Market {
    /// Short label (`DE`, `REST-WE`): reports and metrics.
    pub id: String,
    pub name: String,
    pub calling_codes: Vec<String>,
    /// [marketing, utility, authentication] in micros; `None`: unpriced.
    prices: [Option<u64>; 3],
    pub authentication_international: Option<u64>,
    pub sms: Option<u64>,
    pub service: Option<u64>,
    pub refuses: Vec<Category>,
    tiers: Option<Tiers>,
}

impl Market {
    /// The list price of one template of `category`; `None` when unpriced.
    pub fn list_micros(&self, category: Category) -> Option<u64> {
        self.prices[category_index(category)]
    }
}

/// One version of the rate card: prices per market and category, looked up by a number's
/// country calling code. A file with several versions parses to its newest, which keeps the
/// others for [`RateCard::at`].
#[derive(Debug, Clone)]
pub struct RateCard {
    pub name: String,
    pub currency: String,
    /// From when this version is in force (`None`: a card without a date, always).
    pub effective_from: Option<DateTime<Utc>>,
    /// What the customer-service window makes free.
    pub window: WindowRules,
    markets: Vec<Market>,
    /// calling code → index into `markets`.
    by_code: HashMap<String, usize>,
    /// Longest calling code in the card (NANP area codes make it 4 digits).
    max_code_len: usize,
    /// The version's volume tiers (a market may have its own).
    tiers: Tiers,
    /// The file's older versions, oldest first; empty in those versions themselves.
    earlier: Vec<RateCard>,
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

fn invalid(msg: impl Into<String>) -> RateCardError {
    RateCardError::Invalid(msg.into())
}

/// `2026-10-01` (midnight UTC) or an RFC 3339 instant.
fn parse_instant(raw: &str) -> Result<DateTime<Utc>, RateCardError> {
    if let Ok(d) = NaiveDate::parse_from_str(raw, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).expect("midnight").and_utc());
    }
    DateTime::parse_from_rfc3339(raw)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| invalid(format!("effective_from '{raw}' is not a date (2026-10-01)")))
}

fn parse_tiers(file: &TiersFile, at: &str) -> Result<Tiers, RateCardError> {
    let one = |list: &[TierFile], category: &str| -> Result<Vec<Tier>, RateCardError> {
        let mut out: Vec<Tier> = Vec::with_capacity(list.len());
        for t in list {
            if !(0.0..100.0).contains(&t.discount_percent) {
                return Err(invalid(format!(
                    "{at}: {category} tier from {}: discount {} % out of range (0 to < 100)",
                    t.from, t.discount_percent
                )));
            }
            if let Some(prev) = out.last()
                && t.from <= prev.from
            {
                return Err(invalid(format!(
                    "{at}: {category} tiers not ascending ({} after {})",
                    t.from, prev.from
                )));
            }
            if out.is_empty() && t.from != 0 {
                return Err(invalid(format!(
                    "{at}: {category} tiers must start from 0 (first is {})",
                    t.from
                )));
            }
            out.push(Tier {
                from: t.from,
                discount_bp: (t.discount_percent * 100.0).round() as u32,
            });
        }
        Ok(out)
    };
    Ok(Tiers {
        utility: one(&file.utility, "utility")?,
        authentication: one(&file.authentication, "authentication")?,
    })
}

fn parse_market(m: &MarketFile) -> Result<Market, RateCardError> {
    let price = |p: Option<f64>, what: &str| -> Result<Option<u64>, RateCardError> {
        match p {
            Some(p) if !(0.0..1000.0).contains(&p) => Err(invalid(format!(
                "market {}: {what} price {p} out of range",
                m.market
            ))),
            p => Ok(p.map(to_micros)),
        }
    };
    if m.market.trim().is_empty() {
        return Err(invalid("a market without a name (`market`)"));
    }
    if m.calling_codes.is_empty() {
        return Err(invalid(format!("market {}: no calling codes", m.market)));
    }
    for code in &m.calling_codes {
        if code.is_empty() || code.len() > 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid(format!(
                "market {}: calling code '{code}' (1 to 6 digits)",
                m.market
            )));
        }
    }
    Ok(Market {
        id: m.market.clone(),
        name: m.name.clone().unwrap_or_else(|| m.market.clone()),
        calling_codes: m.calling_codes.clone(),
        prices: [
            price(m.marketing, "marketing")?,
            price(m.utility, "utility")?,
            price(m.authentication, "authentication")?,
        ],
        authentication_international: price(
            m.authentication_international,
            "authentication_international",
        )?,
        sms: price(m.sms, "sms")?,
        service: price(m.service, "service")?,
        refuses: m.refuses.clone(),
        tiers: m
            .tiers
            .as_ref()
            .map(|t| parse_tiers(t, &format!("market {}", m.market)))
            .transpose()?,
    })
}

impl RateCard {
    pub fn parse(json: &str) -> Result<Self, RateCardError> {
        let de = &mut serde_json::Deserializer::from_str(json);
        let file: RateCardFile = serde_path_to_error::deserialize(de)
            .map_err(|e| invalid(format!("{} (at {})", e.inner(), e.path())))?;
        let files = if file.versions.is_empty() {
            if file.markets.is_none() {
                return Err(invalid("no `markets` (or `versions`)"));
            }
            vec![VersionFile {
                effective_from: file.effective_from,
                _note: None,
                markets: file.markets,
                window: file.window,
                tiers: file.tiers,
            }]
        } else {
            if file.markets.is_some()
                || file.window.is_some()
                || file.tiers.is_some()
                || file.effective_from.is_some()
            {
                return Err(invalid(
                    "a card with `versions` has its markets, window, tiers and effective_from in each version",
                ));
            }
            file.versions
        };
        let mut versions: Vec<RateCard> = Vec::with_capacity(files.len());
        let multi = files.len() > 1;
        for (i, v) in files.into_iter().enumerate() {
            let prev = versions.last();
            let effective_from = v.effective_from.as_deref().map(parse_instant).transpose()?;
            let at = match &v.effective_from {
                Some(d) => format!("version {d}"),
                None => format!("version {}", i + 1),
            };
            if multi && effective_from.is_none() {
                return Err(invalid(format!("{at}: no effective_from")));
            }
            if let (Some(p), Some(t)) = (prev.and_then(|p| p.effective_from), effective_from)
                && t <= p
            {
                return Err(invalid(format!(
                    "{at}: versions must be in order of effective_from (after {})",
                    p.format("%Y-%m-%d %H:%M:%S UTC")
                )));
            }
            let (markets, by_code, max_code_len) = match (&v.markets, prev) {
                (Some(files), _) => index_markets(files)?,
                (None, Some(p)) => (p.markets.clone(), p.by_code.clone(), p.max_code_len),
                (None, None) => return Err(invalid(format!("{at}: no markets"))),
            };
            let tiers = match (&v.tiers, prev) {
                (Some(t), _) => parse_tiers(t, &at)?,
                (None, Some(p)) => p.tiers.clone(),
                (None, None) => Tiers::default(),
            };
            let window = match (v.window, prev) {
                (Some(w), _) => w,
                (None, Some(p)) => p.window.clone(),
                (None, None) => WindowRules::default(),
            };
            versions.push(RateCard {
                name: file.name.clone(),
                currency: file.currency.clone(),
                effective_from,
                window,
                markets,
                by_code,
                max_code_len,
                tiers,
                earlier: Vec::new(),
            });
        }
        let mut newest = versions.pop().expect("at least one version");
        newest.earlier = versions;
        Ok(newest)
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

    /// The version in force at `t`: the newest whose `effective_from` is not after `t` (the
    /// oldest for a time before them all). The card's own methods price at the newest
    /// version; whoever knows the send time asks this first.
    pub fn at(&self, t: DateTime<Utc>) -> &RateCard {
        std::iter::once(self)
            .chain(self.earlier.iter().rev())
            .find(|v| v.effective_from.is_none_or(|f| f <= t))
            .unwrap_or_else(|| self.earlier.first().unwrap_or(self))
    }

    /// Every version of the file, oldest first.
    pub fn versions(&self) -> impl Iterator<Item = &RateCard> {
        self.earlier.iter().chain(std::iter::once(self))
    }

    /// The version's markets, in the file's order.
    pub fn markets(&self) -> &[Market] {
        &self.markets
    }

    /// The market `to` belongs to: the longest calling code that starts its digits.
    pub fn market_of(&self, to: &PhoneNumber) -> Option<&Market> {
        self.market_of_digits(to.digits())
    }

    fn market_of_digits(&self, digits: &str) -> Option<&Market> {
        (1..=self.max_code_len.min(digits.len()))
            .rev()
            .find_map(|len| self.by_code.get(&digits[..len]))
            .map(|&i| &self.markets[i])
    }

    /// The market label of a number, or `unpriced` when the card has no market for it.
    pub fn market(&self, to: &PhoneNumber) -> &str {
        self.market_of(to)
            .map(|m| m.id.as_str())
            .unwrap_or(UNPRICED_MARKET)
    }

    /// The list price of one delivered template of `category` to `to`; `None` when the card
    /// has no market for the number or the market no price for the category.
    pub fn price(&self, category: Category, to: &PhoneNumber) -> Option<Price> {
        let m = self.market_of(to)?;
        Some(Price {
            market: m.id.clone(),
            micros: m.list_micros(category)?,
        })
    }

    /// Whether Meta refuses templates of `category` to `to` (its market's `refuses`): they
    /// are skipped `unsupported_market` rather than sent to fail.
    pub fn refuses(&self, category: Category, to: &PhoneNumber) -> bool {
        self.market_of(to)
            .is_some_and(|m| m.refuses.contains(&category))
    }

    /// The volume tiers of `category` in `market` (the market's own, else the version's).
    pub fn tiers<'a>(&'a self, category: Category, market: &'a Market) -> &'a [Tier] {
        market.tiers.as_ref().unwrap_or(&self.tiers).of(category)
    }

    /// The price of the `nth` template (counted from 0) of `category` that a portfolio sends
    /// to `to`'s market in one calendar month: the list price less the discount of the last
    /// tier starting at or before `nth`. `None` when unpriced.
    ///
    /// The engine commits list prices: herald does not count a portfolio's month yet. Where
    /// it would plug in: a per-(portfolio, market, category, month) counter in the store,
    /// read by the gate's budget step and passed here as `nth`.
    pub fn tier_micros(&self, category: Category, to: &PhoneNumber, nth: u64) -> Option<u64> {
        let m = self.market_of(to)?;
        let list = m.list_micros(category)?;
        let bp = self
            .tiers(category, m)
            .iter()
            .rev()
            .find(|t| t.from <= nth)
            .map_or(0, |t| t.discount_bp);
        Some(discounted(list, bp))
    }

    /// What `count` templates of `category` to `to`'s market cost after `month_to_date`
    /// already sent there this month: [`tier_micros`](Self::tier_micros) summed, one tier
    /// at a time. `None` when unpriced.
    pub fn volume_micros(
        &self,
        category: Category,
        to: &PhoneNumber,
        month_to_date: u64,
        count: u64,
    ) -> Option<u64> {
        self.market_volume_micros(category, self.market_of(to)?, month_to_date, count)
    }

    /// [`volume_micros`](Self::volume_micros) for a market of this card.
    pub fn market_volume_micros(
        &self,
        category: Category,
        market: &Market,
        month_to_date: u64,
        count: u64,
    ) -> Option<u64> {
        let list = market.list_micros(category)?;
        let tiers = self.tiers(category, market);
        let end = month_to_date.saturating_add(count);
        let mut total = 0u64;
        let mut n = month_to_date;
        while n < end {
            let (bp, next) = match tiers.iter().rposition(|t| t.from <= n) {
                Some(i) => (
                    tiers[i].discount_bp,
                    tiers.get(i + 1).map_or(end, |t| t.from.min(end)),
                ),
                None => (0, tiers.first().map_or(end, |t| t.from.min(end))),
            };
            total = total.saturating_add(discounted(list, bp).saturating_mul(next - n));
            n = next;
        }
        Some(total)
    }

    /// The authentication price Meta charges a business based outside `to`'s market, where
    /// the card has one.
    pub fn authentication_international_micros(&self, to: &PhoneNumber) -> Option<u64> {
        self.market_of(to)?.authentication_international
    }

    /// The price of one SMS part to `to`; `None` when the card prices no SMS for its market.
    pub fn sms_part_micros(&self, to: &PhoneNumber) -> Option<u64> {
        self.market_of(to)?.sms
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
    /// customer-service window is in; `None` for a template the card does not price there
    /// (a session message without a `service` price is estimated at 0, as Meta's first
    /// 1,000 a month are free).
    pub fn whatsapp_price(
        &self,
        message: WhatsAppMessage,
        category: Category,
        to: &PhoneNumber,
        window: WindowState,
    ) -> Option<u64> {
        let session = message == WhatsAppMessage::Session;
        if self.is_free(session, category, to, window) {
            Some(0)
        } else if session {
            Some(self.service_micros(to))
        } else {
            self.price(category, to).map(|p| p.micros)
        }
    }

    /// [`whatsapp_price`](Self::whatsapp_price), 0 when unpriced.
    pub fn whatsapp_micros(
        &self,
        message: WhatsAppMessage,
        category: Category,
        to: &PhoneNumber,
        window: WindowState,
    ) -> u64 {
        self.whatsapp_price(message, category, to, window)
            .unwrap_or(0)
    }

    fn service_micros(&self, to: &PhoneNumber) -> u64 {
        self.market_of(to).and_then(|m| m.service).unwrap_or(0)
    }

    /// [`price`](Self::price) in micros only (0 when unpriced), without naming the market.
    pub fn micros(&self, category: Category, to: &PhoneNumber) -> u64 {
        self.price(category, to).map_or(0, |p| p.micros)
    }

    /// The country calling codes of the numbering plan (libphonenumber's metadata, with the
    /// non-geographic ones) that this version leaves without a market, ascending.
    pub fn uncovered_country_codes(&self) -> Vec<u16> {
        let mut codes: Vec<u16> = phonenumber::metadata::DATABASE
            .iter()
            .map(|m| m.country_code())
            .collect();
        codes.sort_unstable();
        codes.dedup();
        codes
            .into_iter()
            .filter(|c| {
                // Covered when a code of the card starts the country code: every number
                // under it then has a market.
                let c = c.to_string();
                self.market_of_digits(&c).is_none()
            })
            .collect()
    }

    /// A one-line summary: when in force, markets, codes, tiers, window rules.
    pub fn summary(&self) -> String {
        let codes: usize = self.markets.iter().map(|m| m.calling_codes.len()).sum();
        let tiers = |c: Category| {
            let n = self.tiers.of(c).len();
            if n == 0 {
                format!("{c} none")
            } else {
                format!("{c} {n}")
            }
        };
        format!(
            "{}: {} markets, {codes} calling codes, {} unpriced market×category, {} refusing a category; tiers: {}, {}; window free: [{}], service {}",
            self.effective_from
                .map_or("always".to_owned(), |t| t.format("%Y-%m-%d").to_string()),
            self.markets.len(),
            self.markets
                .iter()
                .map(|m| m.prices.iter().filter(|p| p.is_none()).count())
                .sum::<usize>(),
            self.markets
                .iter()
                .filter(|m| !m.refuses.is_empty())
                .count(),
            tiers(Category::Utility),
            tiers(Category::Authentication),
            self.window
                .free_in_window
                .iter()
                .map(|c| c.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            if self.window.service_free {
                "free"
            } else {
                "priced"
            },
        )
    }
}

/// `list` less `bp` hundredths of a percent, rounded to the nearest micro.
fn discounted(list: u64, bp: u32) -> u64 {
    let bp = u64::from(bp.min(10_000));
    (list * (10_000 - bp) + 5_000) / 10_000
}

type Indexed = (Vec<Market>, HashMap<String, usize>, usize);

/// The markets and their calling-code index; a code in two markets is refused (a number must
/// map to exactly one).
fn index_markets(files: &[MarketFile]) -> Result<Indexed, RateCardError> {
    let mut markets = Vec::with_capacity(files.len());
    let mut by_code: HashMap<String, usize> = HashMap::new();
    let mut max_code_len = 0;
    for (i, f) in files.iter().enumerate() {
        let m = parse_market(f)?;
        if markets.iter().any(|o: &Market| o.id == m.id) {
            return Err(invalid(format!("market {} appears twice", m.id)));
        }
        for code in &m.calling_codes {
            if let Some(&other) = by_code.get(code) {
                let other: &Market = if other == i { &m } else { &markets[other] };
                return Err(invalid(format!(
                    "calling code {code} is in market {} and market {}",
                    other.id, m.id
                )));
            }
            by_code.insert(code.clone(), i);
            max_code_len = max_code_len.max(code.len());
        }
        markets.push(m);
    }
    Ok((markets, by_code, max_code_len))
}

/// Formats micros as an amount with the currency: `1234.5678 USD`, with the fifth and sixth
/// decimals when they are not zero (`0.00133 USD`: a tiered unit price), so a unit price is
/// never shown rounded away.
pub fn format_micros(micros: u64, currency: &str) -> String {
    let frac = micros % 1_000_000;
    let frac = if frac.is_multiple_of(100) {
        format!("{:04}", frac / 100)
    } else {
        format!("{frac:06}").trim_end_matches('0').to_owned()
    };
    format!("{}.{frac} {currency}", micros / 1_000_000)
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

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    /// A one-market card with `extra` JSON inside the market and `top` at the top level.
    fn card_with(extra: &str, top: &str) -> Result<RateCard, RateCardError> {
        RateCard::parse(&format!(
            r#"{{"name":"t","currency":"USD"{top},"markets":[{{"market":"IN","calling_codes":["91"],
                "marketing":0.0118,"utility":0.0014,"authentication":0.0014{extra}}}]}}"#
        ))
    }

    /// Every country calling code of the numbering plan, non-geographic ones included.
    fn country_codes() -> Vec<u16> {
        let mut codes: Vec<u16> = phonenumber::metadata::DATABASE
            .iter()
            .map(|m| m.country_code())
            .collect();
        codes.sort_unstable();
        codes.dedup();
        codes
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
        // The rules before 2026-10-01: the shipped card's 2025-07-01 version.
        let builtin = RateCard::builtin();
        let card = builtin.at(utc("2026-09-30T23:59:59Z"));
        assert_eq!(card.effective_from, Some(utc("2025-07-01T00:00:00Z")));
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
        assert_eq!(card.market(&n("+12025550123")), "US");
        assert_eq!(card.market(&n("+14165550123")), "CA");
        assert_eq!(card.market(&n("+18765550123")), "REST-LATAM");
        assert_eq!(card.market(&n("+5511987654321")), "BR");
        assert_eq!(card.market(&n("+919876543210")), "IN");
        assert_eq!(card.market(&n("+33612345678")), "FR");
        assert_eq!(card.market(&n("+43664123456")), "REST-WE");
        assert_eq!(card.market(&n("+77011234567")), "OTHER");
        assert_eq!(card.market(&n("+79161234567")), "RU");
        // A card without the market: no market, no price.
        let small = RateCard::parse(
            r#"{"name":"t","currency":"USD","markets":[{"market":"DE","calling_codes":["49"],
                "marketing":0.1365,"utility":0.055,"authentication":0.055}]}"#,
        )
        .unwrap();
        assert_eq!(small.market(&n("+33612345678")), UNPRICED_MARKET);
        assert!(
            small
                .price(Category::Marketing, &n("+33612345678"))
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
        // A market without a marketing price.
        let unpriced = RateCard::parse(&DEFAULT_RATE_CARD.replace(
            r#""market": "FR", "name": "France", "calling_codes": ["33"], "marketing": 0.0859"#,
            r#""market": "FR", "name": "France", "calling_codes": ["33"], "marketing": null"#,
        ))
        .unwrap();
        t.add(&unpriced, Category::Marketing, &n("+33612345678"));
        assert_eq!(t.total_micros(), 409_500);
        assert_eq!(t.unpriced, 1);
        assert_eq!(format_micros(t.total_micros(), "USD"), "0.4095 USD");
    }

    #[test]
    fn bad_rate_cards_are_rejected() {
        assert!(RateCard::parse("{}").is_err());
        assert!(RateCard::parse(r#"{"name":"x","currency":"USD","markets":[{"market":"X","calling_codes":["4a"],"marketing":1,"utility":1,"authentication":1}]}"#).is_err());
    }

    #[test]
    fn the_shipped_card_covers_every_country_code_and_prices_the_sample_exactly() {
        let card = RateCard::builtin();
        assert!(country_codes().len() > 200);
        assert_eq!(card.uncovered_country_codes(), Vec::<u16>::new());
        // Reference §7's sample, exactly.
        for (to, m, u, a) in [
            ("+4915112345678", 136_500, 55_000, 55_000),
            ("+31612345678", 159_700, 50_000, 50_000),
            ("+447911123456", 63_500, 22_000, 22_000),
            ("+5511987654321", 62_500, 6_800, 6_800),
            ("+919876543210", 11_800, 1_400, 1_400),
            ("+12025550123", 25_000, 3_400, 3_400),
            ("+14165550123", 25_000, 3_400, 3_400),
        ] {
            let to = n(to);
            assert_eq!(card.micros(Category::Marketing, &to), m, "{to:?}");
            assert_eq!(card.micros(Category::Utility, &to), u, "{to:?}");
            assert_eq!(card.micros(Category::Authentication, &to), a, "{to:?}");
        }
        assert_eq!(
            card.authentication_international_micros(&n("+919876543210")),
            Some(30_400)
        );
        // Every version is the same world.
        assert_eq!(card.versions().count(), 2);
        for v in card.versions() {
            assert_eq!(v.uncovered_country_codes(), Vec::<u16>::new());
        }
    }

    proptest::proptest! {
        #[test]
        fn every_e164_number_maps_to_exactly_one_market_of_the_shipped_card(
            subscriber in "[0-9]{4,12}",
        ) {
            let card = RateCard::builtin();
            // Every country code with these subscriber digits.
            for cc in country_codes() {
                let digits = format!("{cc}{subscriber}");
                let digits = &digits[..digits.len().min(15)];
                // No gap: the number has a market.
                let market = card.market_of(&PhoneNumber::from_trusted(format!("+{digits}")));
                proptest::prop_assert!(market.is_some(), "+{} has no market", digits);
                // No overlap: exactly one market holds the longest code starting the number.
                let longest = (1..=digits.len())
                    .rev()
                    .map(|l| &digits[..l])
                    .find(|p| card.markets().iter().any(|m| m.calling_codes.iter().any(|c| c == p)))
                    .unwrap();
                let holders: Vec<&str> = card
                    .markets()
                    .iter()
                    .filter(|m| m.calling_codes.iter().any(|c| c == longest))
                    .map(|m| m.id.as_str())
                    .collect();
                proptest::prop_assert_eq!(holders.len(), 1, "+{} in {:?}", digits, holders);
                proptest::prop_assert_eq!(holders[0], market.unwrap().id.as_str());
            }
        }
    }

    #[test]
    fn a_calling_code_in_two_markets_is_refused() {
        let err = RateCard::parse(
            r#"{"name":"t","currency":"USD","markets":[
                {"market":"A","calling_codes":["49"],"marketing":1,"utility":1,"authentication":1},
                {"market":"B","calling_codes":["31","49"],"marketing":1,"utility":1,"authentication":1}]}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("calling code 49 is in market A and market B"),
            "{err}"
        );
    }

    #[test]
    fn tiers_discount_from_the_first_message_of_the_next_tier() {
        let tiers = r#","tiers":{"utility":[{"from":0,"discount_percent":0},
            {"from":100000,"discount_percent":5},{"from":500000,"discount_percent":12.5}]}"#;
        let card = card_with("", tiers).unwrap();
        let to = n("+919876543210");
        let u = Category::Utility;
        // 0-based: the 100,000th message (n = 99,999) is the last at the list price.
        assert_eq!(card.tier_micros(u, &to, 0), Some(1_400));
        assert_eq!(card.tier_micros(u, &to, 99_999), Some(1_400));
        assert_eq!(card.tier_micros(u, &to, 100_000), Some(1_330));
        assert_eq!(card.tier_micros(u, &to, 499_999), Some(1_330));
        assert_eq!(card.tier_micros(u, &to, 500_000), Some(1_225));
        // Marketing and authentication have no tiers here.
        assert_eq!(
            card.tier_micros(Category::Marketing, &to, 10_000_000),
            Some(11_800)
        );
        assert_eq!(
            card.tier_micros(Category::Authentication, &to, 10_000_000),
            Some(1_400)
        );
        // A run across two boundaries sums each message at its tier.
        assert_eq!(
            card.volume_micros(u, &to, 99_998, 400_004),
            Some(2 * 1_400 + 400_000 * 1_330 + 2 * 1_225)
        );
        assert_eq!(card.volume_micros(u, &to, 0, 0), Some(0));
        // A market's own tiers win over the card's.
        let own = card_with(
            r#","tiers":{"utility":[{"from":0,"discount_percent":0},{"from":10,"discount_percent":50}]}"#,
            tiers,
        )
        .unwrap();
        assert_eq!(own.tier_micros(u, &to, 9), Some(1_400));
        assert_eq!(own.tier_micros(u, &to, 10), Some(700));
    }

    #[test]
    fn bad_tiers_are_refused() {
        for bad in [
            r#","tiers":{"utility":[{"from":5,"discount_percent":0}]}"#,
            r#","tiers":{"utility":[{"from":0,"discount_percent":0},{"from":0,"discount_percent":5}]}"#,
            r#","tiers":{"utility":[{"from":0,"discount_percent":0},{"from":9,"discount_percent":100}]}"#,
            r#","tiers":{"marketing":[{"from":0,"discount_percent":0}]}"#,
        ] {
            assert!(card_with("", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_version_in_force_is_chosen_by_the_send_time() {
        let card = RateCard::parse(
            r#"{"name":"t","currency":"USD","versions":[
                {"effective_from":"2025-07-01","markets":[{"market":"DE","calling_codes":["49"],
                    "marketing":0.1,"utility":0.05,"authentication":0.05}]},
                {"effective_from":"2026-10-01","window":{"free_in_window":[],"service_free":false},
                 "markets":[{"market":"DE","calling_codes":["49"],
                    "marketing":0.2,"utility":0.05,"authentication":0.05}]},
                {"effective_from":"2027-01-01T12:00:00+01:00"}]}"#,
        )
        .unwrap();
        let de = n("+4915112345678");
        let m = Category::Marketing;
        assert_eq!(card.at(utc("2026-09-30T23:59:59Z")).micros(m, &de), 100_000);
        assert_eq!(card.at(utc("2026-10-01T00:00:00Z")).micros(m, &de), 200_000);
        // Before the first version: its prices.
        assert_eq!(card.at(utc("2020-01-01T00:00:00Z")).micros(m, &de), 100_000);
        // The third inherits markets and window; it starts at 11:00 UTC.
        let third = card.at(utc("2027-01-01T11:00:00Z"));
        assert_eq!(third.effective_from, Some(utc("2027-01-01T11:00:00Z")));
        assert_eq!(third.micros(m, &de), 200_000);
        assert!(!third.window.service_free);
        assert_eq!(
            card.at(utc("2027-01-01T10:59:59Z")).effective_from,
            Some(utc("2026-10-01T00:00:00Z"))
        );
        // Out of order, or a version without a date: refused.
        assert!(
            RateCard::parse(
                r#"{"name":"t","currency":"USD","versions":[
                {"effective_from":"2026-10-01","markets":[]},{"effective_from":"2026-10-01"}]}"#
            )
            .is_err()
        );
        assert!(
            RateCard::parse(
                r#"{"name":"t","currency":"USD","versions":[
                {"effective_from":"2026-10-01","markets":[]},{"markets":[]}]}"#
            )
            .is_err()
        );
    }

    #[test]
    fn unpriced_and_refused_categories_are_data() {
        let card = card_with(r#","refuses":["marketing"]"#, "").unwrap();
        let to = n("+919876543210");
        assert!(card.refuses(Category::Marketing, &to));
        assert!(!card.refuses(Category::Utility, &to));
        let card = RateCard::builtin();
        assert!(card.refuses(Category::Marketing, &n("+12025550123")));
        assert!(!card.refuses(Category::Marketing, &n("+14165550123")));
        assert!(!card.refuses(Category::Utility, &n("+12025550123")));
        // `null` is unpriced: no price, and `whatsapp_price` says so instead of 0.
        let card = RateCard::parse(
            r#"{"name":"t","currency":"USD","markets":[{"market":"DE","calling_codes":["49"],
                "marketing":null,"utility":0.055}]}"#,
        )
        .unwrap();
        let de = n("+4915112345678");
        let t = WhatsAppMessage::Template;
        let closed = WindowState::CLOSED;
        assert_eq!(
            card.whatsapp_price(t, Category::Marketing, &de, closed),
            None
        );
        assert_eq!(
            card.whatsapp_price(t, Category::Authentication, &de, closed),
            None
        );
        assert_eq!(
            card.whatsapp_price(t, Category::Utility, &de, closed),
            Some(55_000)
        );
        assert_eq!(card.whatsapp_micros(t, Category::Marketing, &de, closed), 0);
        // A typo is refused, not ignored.
        assert!(card_with(r#","refuse":["marketing"]"#, "").is_err());
    }

    #[test]
    fn amounts_show_the_decimals_a_unit_price_needs() {
        assert_eq!(format_micros(1_330, "USD"), "0.00133 USD");
        assert_eq!(format_micros(125, "USD"), "0.000125 USD");
        assert_eq!(format_micros(136_500, "USD"), "0.1365 USD");
        assert_eq!(format_micros(250_500_000, "USD"), "250.5000 USD");
    }
}
