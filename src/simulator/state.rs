//! The simulator's shared state: the configuration indexed for lookups, one lock per business
//! number for its limits, lock-free counters, and the sharded set of callback data seen (for
//! duplicates). No lock is held across an await, and no lock is shared by all numbers on the
//! send path, so requests for different numbers never wait on each other — save the windows'
//! read lock, which a send takes only once an inbound message has opened a window.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::config::{SimConfig, SimNumber, SimTemplate};
use super::customers::SimClock;
use super::errors::Code;
use super::hashing::{HashedSet, stable_hash};
use super::limits::{PairLimiter, SlidingWindow};
use super::smsc::{SmsStats, SmscState};
use super::webhooks::WebhookQueue;
use super::windows::Windows;

/// What the simulator saw since start or the last reset (`GET /__sim/stats`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct SimStats {
    /// Sends answered 200, plus dropped connections (accepted, then no answer).
    pub accepted: u64,
    /// Rejected sends by Graph error code.
    pub rejected: BTreeMap<String, u64>,
    /// Accepted sends whose `biz_opaque_callback_data` had been accepted before.
    pub duplicates: u64,
    /// The first 100 distinct callback data values that were duplicated.
    pub duplicate_keys: Vec<String>,
    /// Per business number (`phone_number_id`).
    pub numbers: BTreeMap<String, NumberStats>,
    /// Status updates delivered to the webhook receiver (answered 2xx).
    #[serde(default)]
    pub webhook_statuses_posted: u64,
    /// Status updates given up on: the receiver kept failing, or the queue was full.
    #[serde(default)]
    pub webhook_statuses_lost: u64,
    /// Of the statuses posted, the `delivered` ones: the simulated customers' phones that
    /// received a message.
    #[serde(default)]
    pub delivered_posted: u64,
    /// Of the statuses posted, the `read` ones: the simulated customers who opened a message.
    #[serde(default)]
    pub read_posted: u64,
    /// Of the accepted sends, the free-form ones (`text`, `image`, …) inside a customer
    /// service window.
    #[serde(default)]
    pub session_accepted: u64,
    /// Inbound-message webhooks posted on request (`POST /__sim/inbound`) and answered 2xx.
    #[serde(default)]
    pub inbound_posted: u64,
    /// Inbound-message webhooks answered otherwise, or not at all.
    #[serde(default)]
    pub inbound_failed: u64,
    /// The SMSC's view, when it is enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sms: Option<SmsStats>,
}

impl SimStats {
    /// Rejections with one Graph error code.
    pub fn rejected(&self, code: u32) -> u64 {
        self.rejected.get(&code.to_string()).copied().unwrap_or(0)
    }
}

/// One business number's view.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct NumberStats {
    pub accepted: u64,
    /// The highest accepted count in any sliding one-second window: never above the rate.
    pub max_in_one_second: u64,
    pub throttled_130429: u64,
    pub pair_limited_131056: u64,
    /// Of `accepted`, the free-form messages.
    #[serde(default)]
    pub session_accepted: u64,
}

/// How many duplicate keys the stats list by value.
const DUPLICATE_KEYS_SHOWN: usize = 100;
/// Shards of the seen-keys set: enough that two cores rarely meet on one lock.
const SEEN_SHARDS: usize = 16;

/// Limits and counters of one business number, behind its own lock.
#[derive(Debug)]
pub struct NumberSlot {
    rate: u32,
    state: Mutex<NumberState>,
}

#[derive(Debug)]
struct NumberState {
    window: SlidingWindow,
    pairs: PairLimiter,
    accepted: u64,
    session_accepted: u64,
    throttled: u64,
    pair_limited: u64,
}

/// What a send carries, for the counters: a template or a free-form (session) message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Template,
    Session,
}

/// A fault drawn for a request before the limits are consulted; applied only if the limits
/// would have let the request through, so it never uses up a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    None,
    RateLimit,
    ServerError(Code),
}

impl NumberSlot {
    fn new(rate: u32, pair_burst: u32, pair_interval: Duration) -> Self {
        Self {
            rate,
            state: Mutex::new(NumberState {
                window: SlidingWindow::new(Duration::from_secs(1)),
                pairs: PairLimiter::new(pair_burst, pair_interval),
                accepted: 0,
                session_accepted: 0,
                throttled: 0,
                pair_limited: 0,
            }),
        }
    }

    /// Decides a send to `recipient` against the pair limit and the rate, then an injected
    /// refusal, and records it if accepted: all under one short lock, with the clock read
    /// inside it so admissions are recorded in order.
    pub fn admit(&self, recipient: &str, injected: Refusal, kind: Kind) -> Result<(), Code> {
        let recipient = stable_hash(recipient.as_bytes());
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if !s.pairs.allows(recipient, now) {
            s.pair_limited += 1;
            return Err(Code::PairRateLimit);
        }
        if !s.window.has_room(now, self.rate) {
            s.throttled += 1;
            return Err(Code::RateLimit);
        }
        match injected {
            Refusal::None => {}
            Refusal::RateLimit => {
                s.throttled += 1;
                return Err(Code::RateLimit);
            }
            Refusal::ServerError(code) => return Err(code),
        }
        s.window.record(now);
        s.pairs.record(recipient, now);
        s.accepted += 1;
        if kind == Kind::Session {
            s.session_accepted += 1;
        }
        Ok(())
    }

    fn stats(&self) -> NumberStats {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        NumberStats {
            accepted: s.accepted,
            max_in_one_second: s.window.max_in_window(),
            throttled_130429: s.throttled,
            pair_limited_131056: s.pair_limited,
            session_accepted: s.session_accepted,
        }
    }

    fn reset(&self) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.window.clear();
        s.pairs.clear();
        s.accepted = 0;
        s.session_accepted = 0;
        s.throttled = 0;
        s.pair_limited = 0;
    }
}

/// Everything the handlers share. Immutable configuration first, then mutable state.
pub struct Shared {
    pub config: SimConfig,
    /// Templates by name, then language.
    templates: HashMap<String, HashMap<String, SimTemplate>>,
    /// Configured numbers by id; empty = any id is accepted and described by defaults.
    numbers: HashMap<String, SimNumber>,
    /// Undeliverable recipients as digits only, so spacing and `+` do not matter.
    undeliverable: HashSet<String>,
    /// The address the server listens on, for absolute `paging.next` URLs.
    pub local_addr: SocketAddr,
    /// Unique per instance, so wamids of two simulators (or two runs) never collide.
    wamid_prefix: String,
    wamid_seq: AtomicU64,
    slots: RwLock<HashMap<String, Arc<NumberSlot>>>,
    accepted: AtomicU64,
    session_accepted: AtomicU64,
    rejected: [AtomicU64; Code::ALL.len()],
    duplicates: AtomicU64,
    duplicate_keys: Mutex<Vec<String>>,
    /// Stable hashes of accepted callback data rather than the strings: a ten-million
    /// recipient run keeps ~200 MB less.
    seen: [Mutex<HashedSet>; SEEN_SHARDS],
    pub webhooks: Option<WebhookQueue>,
    pub webhook_posted: AtomicU64,
    pub webhook_lost: AtomicU64,
    pub delivered_posted: AtomicU64,
    pub read_posted: AtomicU64,
    pub inbound_posted: AtomicU64,
    pub inbound_failed: AtomicU64,
    /// The client that posts inbound messages, built on the first one (`None`: it could not be).
    pub inbound_client: OnceLock<Option<reqwest::Client>>,
    /// The customer-service windows that inbound messages opened.
    pub windows: Windows,
    /// Simulated time, `config.speed` times faster than real time: status timestamps and
    /// the customers' delays.
    pub clock: SimClock,
    /// The SMSC's state, when it is enabled (for the `/__sim/sms/…` endpoints and the stats).
    pub smsc: Option<Arc<SmscState>>,
}

impl Shared {
    pub fn new(config: SimConfig, local_addr: SocketAddr, webhooks: Option<WebhookQueue>) -> Self {
        let mut templates: HashMap<String, HashMap<String, SimTemplate>> = HashMap::new();
        for t in &config.templates {
            templates
                .entry(t.name.clone())
                .or_default()
                .insert(t.language.clone(), t.clone());
        }
        let numbers: HashMap<_, _> = config
            .numbers
            .iter()
            .map(|n| (n.id.clone(), n.clone()))
            .collect();
        let slots = numbers
            .keys()
            .map(|id| (id.clone(), Arc::new(Self::slot_for(&config, id))))
            .collect();
        let undeliverable = config.undeliverable.iter().map(|n| digits(n)).collect();
        Self {
            templates,
            numbers,
            undeliverable,
            local_addr,
            wamid_prefix: format!("wamid.SIM{:08X}", rand::random::<u32>()),
            wamid_seq: AtomicU64::new(0),
            slots: RwLock::new(slots),
            accepted: AtomicU64::new(0),
            session_accepted: AtomicU64::new(0),
            rejected: std::array::from_fn(|_| AtomicU64::new(0)),
            duplicates: AtomicU64::new(0),
            duplicate_keys: Mutex::new(Vec::new()),
            seen: std::array::from_fn(|_| Mutex::new(HashedSet::default())),
            webhooks,
            webhook_posted: AtomicU64::new(0),
            webhook_lost: AtomicU64::new(0),
            delivered_posted: AtomicU64::new(0),
            read_posted: AtomicU64::new(0),
            inbound_posted: AtomicU64::new(0),
            inbound_failed: AtomicU64::new(0),
            inbound_client: OnceLock::new(),
            windows: Windows::default(),
            clock: SimClock::new(config.speed),
            smsc: None,
            config,
        }
    }

    /// The same, serving the SMSC's endpoints and stats too.
    pub fn with_smsc(mut self, smsc: Option<Arc<SmscState>>) -> Self {
        self.smsc = smsc;
        self
    }

    fn slot_for(config: &SimConfig, id: &str) -> NumberSlot {
        NumberSlot::new(config.rate_for(id), config.pair_burst, config.pair_interval)
    }

    /// A configured number, or `None` if the id is unknown while numbers are configured.
    /// Without configured numbers every id is a default number.
    pub fn number(&self, id: &str) -> Option<SimNumber> {
        if self.numbers.is_empty() {
            let mut n = SimNumber::new(id);
            if self.config.rate_for(id) >= super::config::HIGH_RATE_PER_SEC {
                n.throughput_level = "HIGH".into();
            }
            return Some(n);
        }
        self.numbers.get(id).cloned()
    }

    /// Whether the id may send (cheaper than [`number`](Self::number): no clone).
    pub fn knows_number(&self, id: &str) -> bool {
        self.numbers.is_empty() || self.numbers.contains_key(id)
    }

    /// The WABA a number's webhooks come from.
    pub fn account_of(&self, id: &str) -> &str {
        self.numbers
            .get(id)
            .map(SimNumber::account)
            .unwrap_or(super::config::DEFAULT_ACCOUNT_ID)
    }

    /// The number's `display_phone_number` as webhooks' metadata writes it (digits only).
    pub fn display_digits_of(&self, id: &str) -> String {
        match self.numbers.get(id) {
            Some(n) => digits(&n.display_phone_number),
            None => digits(&SimNumber::new(id).display_phone_number),
        }
    }

    pub fn template(&self, name: &str, language: &str) -> Option<&SimTemplate> {
        self.templates.get(name)?.get(language)
    }

    /// Whether sends are checked against templates at all.
    pub fn checks_templates(&self) -> bool {
        !(self.templates.is_empty() && self.config.accept_unknown_templates)
    }

    /// Templates of one account (and those of every account), in configuration order.
    pub fn templates_of<'a>(&'a self, account: &'a str) -> impl Iterator<Item = &'a SimTemplate> {
        self.config
            .templates
            .iter()
            .filter(move |t| t.account_id.as_deref().is_none_or(|a| a == account))
    }

    /// 131026 for listed numbers and a stable hash share of the rest.
    pub fn undeliverable(&self, recipient_digits: &str) -> bool {
        self.undeliverable.contains(recipient_digits)
            || in_share(recipient_digits, self.config.undeliverable_ratio)
    }

    /// The number's limits, created on first use when numbers are not configured.
    pub fn slot(&self, id: &str) -> Arc<NumberSlot> {
        if let Some(slot) = self.slots.read().unwrap_or_else(|e| e.into_inner()).get(id) {
            return slot.clone();
        }
        self.slots
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(id.to_owned())
            .or_insert_with(|| Arc::new(Self::slot_for(&self.config, id)))
            .clone()
    }

    pub fn next_wamid(&self) -> String {
        let seq = self.wamid_seq.fetch_add(1, Relaxed);
        format!("{}{seq:012X}", self.wamid_prefix)
    }

    pub fn count_rejected(&self, code: Code) {
        self.rejected[code as usize].fetch_add(1, Relaxed);
    }

    /// Counts an accepted send and whether its callback data was accepted before.
    pub fn count_accepted(&self, callback_data: Option<&str>, kind: Kind) {
        self.accepted.fetch_add(1, Relaxed);
        if kind == Kind::Session {
            self.session_accepted.fetch_add(1, Relaxed);
        }
        let Some(key) = callback_data else { return };
        let hash = stable_hash(key.as_bytes());
        // The shard comes from middle bits: the low bits place keys inside a shard's table
        // and the top bits tag them, so using either would crowd each shard's table.
        let fresh = self.seen[(hash >> 32) as usize % SEEN_SHARDS]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(hash);
        if !fresh {
            self.duplicates.fetch_add(1, Relaxed);
            let mut keys = self
                .duplicate_keys
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if keys.len() < DUPLICATE_KEYS_SHOWN && !keys.iter().any(|k| k == key) {
                keys.push(key.to_owned());
            }
        }
    }

    pub fn stats(&self) -> SimStats {
        let rejected = Code::ALL
            .iter()
            .filter_map(|&code| {
                let n = self.rejected[code as usize].load(Relaxed);
                (n > 0).then(|| (code.number().to_string(), n))
            })
            .collect();
        let numbers = self
            .slots
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(id, slot)| (id.clone(), slot.stats()))
            .collect();
        SimStats {
            accepted: self.accepted.load(Relaxed),
            rejected,
            duplicates: self.duplicates.load(Relaxed),
            duplicate_keys: self
                .duplicate_keys
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            numbers,
            webhook_statuses_posted: self.webhook_posted.load(Relaxed),
            webhook_statuses_lost: self.webhook_lost.load(Relaxed),
            delivered_posted: self.delivered_posted.load(Relaxed),
            read_posted: self.read_posted.load(Relaxed),
            session_accepted: self.session_accepted.load(Relaxed),
            inbound_posted: self.inbound_posted.load(Relaxed),
            inbound_failed: self.inbound_failed.load(Relaxed),
            sms: self.smsc.as_ref().map(|smsc| smsc.stats()),
        }
    }

    /// Forgets counters, limits, seen keys and windows (the SMSC's state too); numbers that
    /// are not configured disappear.
    pub fn reset(&self) {
        {
            let mut slots = self.slots.write().unwrap_or_else(|e| e.into_inner());
            slots.retain(|id, _| self.numbers.contains_key(id));
            for slot in slots.values() {
                slot.reset();
            }
        }
        self.accepted.store(0, Relaxed);
        self.session_accepted.store(0, Relaxed);
        for counter in &self.rejected {
            counter.store(0, Relaxed);
        }
        self.duplicates.store(0, Relaxed);
        self.duplicate_keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        for shard in &self.seen {
            shard.lock().unwrap_or_else(|e| e.into_inner()).clear();
        }
        self.webhook_posted.store(0, Relaxed);
        self.webhook_lost.store(0, Relaxed);
        self.delivered_posted.store(0, Relaxed);
        self.read_posted.store(0, Relaxed);
        self.inbound_posted.store(0, Relaxed);
        self.inbound_failed.store(0, Relaxed);
        self.windows.clear();
        if let Some(smsc) = &self.smsc {
            smsc.reset();
        }
    }
}

/// The digits of a phone number: `+49 151 123` → `49151123` (Meta's `wa_id` form).
pub fn digits(number: &str) -> String {
    number.chars().filter(char::is_ascii_digit).collect()
}

/// Whether `value` falls in the first `ratio` of the hash space: the same numbers are
/// undeliverable on every run.
pub fn in_share(value: &str, ratio: f64) -> bool {
    if ratio <= 0.0 {
        return false;
    }
    // Top 53 bits as a fraction in [0, 1).
    ((stable_hash(value.as_bytes()) >> 11) as f64 / (1u64 << 53) as f64) < ratio
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_undeliverable_share_is_stable_and_about_the_ratio() {
        let numbers: Vec<String> = (0..20_000).map(|i| format!("4915{i:08}")).collect();
        let picked = numbers.iter().filter(|n| in_share(n, 0.1)).count();
        assert!((1_700..2_300).contains(&picked), "{picked} of 20000");
        let again = numbers.iter().filter(|n| in_share(n, 0.1)).count();
        assert_eq!(picked, again);
        assert!(!numbers.iter().any(|n| in_share(n, 0.0)));
        assert!(numbers.iter().all(|n| in_share(n, 1.0)));
    }

    #[test]
    fn wamids_are_unique_and_well_formed() {
        let sim = shared(SimConfig::default());
        let (a, b) = (sim.next_wamid(), sim.next_wamid());
        assert_ne!(a, b);
        assert!(
            a.starts_with("wamid.SIM") && a.ends_with("000000000000"),
            "{a}"
        );
        assert!(b.ends_with("000000000001"), "{b}");
    }

    #[test]
    fn digits_ignore_plus_and_spacing() {
        assert_eq!(digits("+49 (151) 123-45"), "4915112345");
    }

    fn shared(config: SimConfig) -> Shared {
        Shared::new(config, "127.0.0.1:1".parse().unwrap(), None)
    }

    #[test]
    fn a_second_acceptance_of_the_same_callback_data_is_a_duplicate() {
        let sim = shared(SimConfig::default());
        sim.count_accepted(Some("k:1"), Kind::Template);
        sim.count_accepted(Some("k:2"), Kind::Template);
        sim.count_accepted(None, Kind::Template);
        sim.count_accepted(None, Kind::Template);
        sim.count_accepted(Some("k:1"), Kind::Template);
        sim.count_accepted(Some("k:1"), Kind::Template);
        let stats = sim.stats();
        assert_eq!(stats.accepted, 6);
        assert_eq!(stats.duplicates, 2);
        assert_eq!(stats.duplicate_keys, vec!["k:1".to_owned()]);
        sim.reset();
        assert_eq!(sim.stats(), SimStats::default());
    }

    #[test]
    fn injected_refusals_never_use_up_the_window() {
        let slot = NumberSlot::new(2, 0, Duration::from_secs(6));
        assert_eq!(
            slot.admit("a", Refusal::RateLimit, Kind::Template),
            Err(Code::RateLimit)
        );
        assert_eq!(
            slot.admit("a", Refusal::ServerError(Code::Internal), Kind::Template),
            Err(Code::Internal)
        );
        assert_eq!(slot.admit("a", Refusal::None, Kind::Template), Ok(()));
        assert_eq!(slot.admit("b", Refusal::None, Kind::Template), Ok(()));
        assert_eq!(
            slot.admit("c", Refusal::None, Kind::Template),
            Err(Code::RateLimit)
        );
        let stats = slot.stats();
        assert_eq!(stats.accepted, 2);
        assert_eq!(stats.max_in_one_second, 2);
        assert_eq!(stats.throttled_130429, 2);
    }

    #[test]
    fn a_pair_limited_send_does_not_use_up_the_rate() {
        let slot = NumberSlot::new(2, 1, Duration::from_secs(6));
        assert_eq!(slot.admit("a", Refusal::None, Kind::Template), Ok(()));
        assert_eq!(
            slot.admit("a", Refusal::None, Kind::Template),
            Err(Code::PairRateLimit)
        );
        assert_eq!(slot.admit("b", Refusal::None, Kind::Template), Ok(()));
        assert_eq!(slot.stats().pair_limited_131056, 1);
    }
}
