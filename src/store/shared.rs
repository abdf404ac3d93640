//! Decisions both store implementations share: which ledger states are final, how an outcome is
//! written, how status webhooks are merged and ranked, how a consent state and a tier
//! reservation are decided. Plain functions over plain values, so SQLite and Postgres cannot
//! drift apart and the rules are unit-tested without a database.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::{
    Budget, BudgetCharge, CampaignState, Claim, ClaimStatus, ConsentState, DeliveryUpdate,
    OutcomeRecord, StoreError, StoreResult,
};
use crate::domain::{Outcome, PhoneNumber};
use crate::policy::cost::admit_within_budget;

/// A campaign state read back from its column: any other text means the row was written by
/// something other than herald.
pub(crate) fn campaign_state(s: &str) -> StoreResult<CampaignState> {
    CampaignState::parse(s).ok_or_else(|| StoreError::Corrupt(format!("campaign state '{s}'")))
}

/// Ledger states a key may still leave: it has no outcome yet.
pub(crate) const OPEN_STATES: [&str; 2] = ["pending", "sending"];

/// Whether a ledger state is a recorded outcome (sent, failed, skipped, unknown).
pub(crate) fn is_final(state: &str) -> bool {
    !OPEN_STATES.contains(&state)
}

/// One key's status from what the ledger holds after the claim statements ran.
pub(crate) fn claim_status(me: &str, state: &str, owner: Option<&str>) -> ClaimStatus {
    if is_final(state) {
        ClaimStatus::Done
    } else if owner == Some(me) {
        ClaimStatus::Mine
    } else {
        ClaimStatus::HeldElsewhere
    }
}

/// The columns an outcome is stored in: (state, reason, wamid).
pub(crate) fn outcome_columns(outcome: &Outcome) -> (&'static str, Option<String>, Option<String>) {
    match outcome {
        Outcome::Sent { wamid } => ("sent", None, Some(wamid.clone())),
        Outcome::Failed { code } => ("failed", Some(code.to_string()), None),
        Outcome::Skipped { reason } => ("skipped", Some(reason.as_str().to_owned()), None),
        Outcome::Unknown => ("unknown", None, None),
    }
}

/// One outcome as the ledger columns it is written to: (key, state, reason, wamid, attempts).
pub(crate) type OutcomeRow<'a, Attempts> = (
    &'a str,
    &'static str,
    Option<String>,
    Option<String>,
    Attempts,
);

/// Keeps the first outcome of each key: "first one wins" must also hold inside one batch,
/// and an `UPDATE … FROM` with two source rows for one target would pick either.
pub(crate) fn first_outcome_per_key(outcomes: &[OutcomeRecord]) -> Vec<&OutcomeRecord> {
    let mut seen = HashSet::with_capacity(outcomes.len());
    outcomes
        .iter()
        .filter(|o| seen.insert(o.key.as_str()))
        .collect()
}

/// The unkeyed identifier of a number (hex sha256 of its E.164 string) that suppressions and
/// erased ledger rows carried before `HERALD_HASH_KEY`: still matched so those keep working,
/// never written for an erasure (anyone can recompute it by enumerating numbers).
pub(crate) fn phone_hash(phone: &PhoneNumber) -> String {
    hex::encode(Sha256::digest(phone.as_str().as_bytes()))
}

/// The secret of the keyed hash (`HERALD_HASH_KEY`) that replaces an erased number: HMAC-SHA-256
/// cannot be reversed by enumerating numbers without it. One per process (all stores of a
/// process share it), set once at start-up; it must stay the same for the life of the data, or
/// erased numbers are no longer recognised.
#[derive(Clone)]
pub struct HashKey(std::sync::Arc<[u8]>);

impl std::fmt::Debug for HashKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HashKey(<set>)")
    }
}

/// Shortest key accepted: 16 bytes (128 bits).
pub const MIN_HASH_KEY_BYTES: usize = 16;

impl HashKey {
    pub fn new(secret: &str) -> Result<Self, String> {
        let bytes = secret.trim().as_bytes();
        if bytes.len() < MIN_HASH_KEY_BYTES {
            return Err(format!(
                "HERALD_HASH_KEY must be at least {MIN_HASH_KEY_BYTES} bytes (e.g. `openssl rand -hex 32`)"
            ));
        }
        Ok(Self(bytes.into()))
    }
}

static HASH_KEY: std::sync::OnceLock<HashKey> = std::sync::OnceLock::new();

/// Sets the process's hash key. A second call with another key is refused: numbers erased
/// under one key would not be recognised under the other.
pub fn configure_hash_key(key: HashKey) -> Result<(), String> {
    let set = HASH_KEY.get_or_init(|| key.clone());
    if set.0 == key.0 {
        Ok(())
    } else {
        Err("HERALD_HASH_KEY is already set to another key in this process".into())
    }
}

/// The process's hash key, if configured.
pub(crate) fn hash_key() -> Option<&'static HashKey> {
    HASH_KEY.get()
}

/// The keyed identifier of a number: hex HMAC-SHA-256 of its E.164 string.
pub(crate) fn keyed_hash(key: &HashKey, phone: &PhoneNumber) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<Sha256>::new_from_slice(&key.0).expect("HMAC takes keys of any length");
    mac.update(phone.as_str().as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// What an erased number leaves to recognise it by: its keyed hash when a key is configured,
/// an empty string (matching nothing) otherwise.
pub(crate) fn erased_hash(phone: &PhoneNumber) -> String {
    hash_key().map_or_else(String::new, |k| keyed_hash(k, phone))
}

/// How the audit log names a contact: `contact:<keyed hash>` (the hash erasure leaves, so the
/// rows of one person can be found again by who holds `HERALD_HASH_KEY`), or, without a key,
/// `contact:<masked number>` — what the logs show, never the number itself.
pub fn contact_ref(phone: &PhoneNumber) -> String {
    match hash_key() {
        Some(key) => format!("contact:{}", keyed_hash(key, phone)),
        None => format!("contact:{}", phone.masked()),
    }
}

/// Rank of a delivery status; a webhook applies only if it ranks higher than what is stored.
/// `sent` ranks lowest (it only confirms acceptance); `failed` ranks highest, so it is final.
pub(crate) fn delivery_rank(status: Option<&str>) -> i32 {
    match status {
        Some("delivered") => 1,
        Some("read") => 2,
        Some("failed") | Some("expired") => 3,
        _ => 0,
    }
}

/// The SQL twin of [`delivery_rank`] over the `delivery` column, for `WHERE` clauses.
pub(crate) const DELIVERY_RANK_SQL: &str = "(CASE delivery WHEN 'delivered' THEN 1 WHEN 'read' THEN 2 WHEN 'failed' THEN 3 \
     WHEN 'expired' THEN 3 ELSE 0 END)";

/// All status webhooks of one message in a batch, folded into the one that matters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MergedDelivery {
    pub wamid: String,
    pub key: Option<String>,
    /// Highest-ranked status seen: sent, delivered, read or failed.
    pub status: String,
    pub rank: i32,
    pub billed_category: Option<String>,
    /// Error code of a `failed` status.
    pub error: Option<String>,
}

/// Folds a webhook batch per wamid (Meta delivers `delivered` and `read` of one message in one
/// POST, in any order); statuses other than sent/delivered/read/failed are ignored.
pub(crate) fn merge_deliveries(updates: &[DeliveryUpdate]) -> Vec<MergedDelivery> {
    let mut merged: Vec<MergedDelivery> = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    for u in updates {
        if !matches!(u.status.as_str(), "sent" | "delivered" | "read" | "failed") {
            continue;
        }
        let rank = delivery_rank(Some(&u.status));
        let error = (u.status == "failed")
            .then(|| u.error_code.map(|c| c.to_string()))
            .flatten();
        match index.get(u.wamid.as_str()) {
            Some(&i) => {
                let m = &mut merged[i];
                if rank > m.rank {
                    m.rank = rank;
                    m.status = u.status.clone();
                    m.error = error;
                }
                if m.key.is_none() {
                    m.key = u.key.as_ref().map(|k| k.as_str().to_owned());
                }
                if m.billed_category.is_none() {
                    m.billed_category = u.billed_category.clone();
                }
            }
            None => {
                index.insert(&u.wamid, merged.len());
                merged.push(MergedDelivery {
                    wamid: u.wamid.clone(),
                    key: u.key.as_ref().map(|k| k.as_str().to_owned()),
                    status: u.status.clone(),
                    rank,
                    billed_category: u.billed_category.clone(),
                    error,
                });
            }
        }
    }
    merged
}

/// A number's consent for one category on one channel from what the store holds: a
/// suppression wins; a grant (of that category on that channel) counts only if it is later
/// than every revocation of that category (or of all) on that channel (or on all).
pub(crate) fn consent_state<T: PartialOrd>(
    suppressed: bool,
    granted_at: Option<T>,
    revoked_at: Option<T>,
    erased_at: Option<T>,
) -> ConsentState {
    // An erased number is sendable again only on a consent given after its erasure (an old
    // consent re-imported from a file must not bring it back).
    if let Some(erased) = &erased_at
        && granted_at.as_ref().is_none_or(|g| g <= erased)
    {
        return ConsentState::OptedOut;
    }
    match (suppressed, granted_at, revoked_at) {
        (true, _, _) => ConsentState::OptedOut,
        (false, Some(g), Some(r)) if g > r => ConsentState::Granted,
        (false, Some(_), None) => ConsentState::Granted,
        (false, _, Some(_)) => ConsentState::OptedOut,
        (false, None, None) => ConsentState::Missing,
    }
}

/// Decides a tier reservation: numbers reached within the window are free, a new number takes
/// one unit while `used < limit` (the same new number twice in a batch takes one). Returns the
/// answer per number and the numbers to stamp as reached now.
pub(crate) fn decide_tier<'a>(
    phones: &'a [PhoneNumber],
    in_window: &HashSet<String>,
    mut used: u64,
    limit: Option<u32>,
) -> (Vec<bool>, Vec<&'a str>) {
    let mut granted_new: HashSet<&str> = HashSet::new();
    let mut touch: Vec<&str> = Vec::with_capacity(phones.len());
    let mut touched: HashSet<&str> = HashSet::with_capacity(phones.len());
    let answers = phones
        .iter()
        .map(|p| {
            let p = p.as_str();
            let ok = if in_window.contains(p) || granted_new.contains(p) {
                true
            } else if limit.is_none_or(|l| used < u64::from(l)) {
                used += 1;
                granted_new.insert(p);
                true
            } else {
                false
            };
            if ok && touched.insert(p) {
                touch.push(p);
            }
            ok
        })
        .collect();
    (answers, touch)
}

/// How long the tier's kept count (`tier_count`) is moved on by what left the window before
/// the window is counted in full again: bounds the drift of numbers that left the window by
/// other paths (erasure, retention: both only ever make the count too high, the safe side).
pub(crate) const TIER_RECOUNT_AFTER: Duration = Duration::from_secs(600);

/// How many of `touch` (the numbers a reservation stamps) were not in the window before it:
/// what the reservation adds to the tier's count.
pub(crate) fn newly_reached(touch: &[&str], in_window: &HashSet<String>) -> u64 {
    touch.iter().filter(|p| !in_window.contains(**p)).count() as u64
}

/// The part of a lease within which `renew_lease` extends a key (see `Store::renew_lease`).
pub(crate) fn renew_within(lease: Duration) -> Duration {
    lease * 3 / 4
}

/// A duration in whole milliseconds, saturating (leases and windows are far below the limit).
pub(crate) fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The decision half of `charge_budget`, the same for every store: from the campaign row's
/// (budget, currency, committed) — `None` if there is no such campaign — which sends fit, and
/// how much to add to the committed spend.
pub(crate) fn decide_budget(
    row: Option<(Option<i64>, Option<String>, i64)>,
    costs: &[u64],
) -> (BudgetCharge, u64) {
    let (budget, currency, committed) = row.unwrap_or((None, None, 0));
    let budget = budget.map(|b| u64::try_from(b).unwrap_or(0));
    let committed = u64::try_from(committed).unwrap_or(0);
    let (admitted, added) = admit_within_budget(budget, committed, costs);
    let left = budget.map(|b| Budget {
        micros: b.saturating_sub(committed + added),
        currency: currency.unwrap_or_default(),
    });
    (BudgetCharge { admitted, left }, added)
}

/// A database URL safe to show in an error (one redaction for the whole crate).
pub(crate) use crate::telemetry::redact::redact_url;

/// Per key, in the order given, whether it is in `hit` (keys a statement returned).
pub(super) fn in_order(
    keys: &[crate::domain::IdempotencyKey],
    hit: &std::collections::HashSet<String>,
) -> Vec<bool> {
    keys.iter().map(|k| hit.contains(k.as_str())).collect()
}

/// The columns every claim of a batch shares when they came from one job (the engine's
/// batches always do): the insert then sends them once instead of once per row — decoding
/// nine arrays of a batch was most of the claim statement's cost beside its indexes.
/// `None` when any claim differs.
pub(crate) fn shared_claim_columns(claims: &[Claim]) -> Option<[&str; 7]> {
    let first = claims.first()?;
    let same = claims.iter().all(|c| {
        c.campaign == first.campaign
            && c.job == first.job
            && c.sender == first.sender
            && c.template == first.template
            && c.language == first.language
            && c.category == first.category
            && c.channel == first.channel
    });
    same.then(|| {
        [
            first.campaign.as_str(),
            first.job.as_str(),
            first.sender.as_str(),
            first.template.as_str(),
            first.language.as_str(),
            first.category.as_str(),
            first.channel.as_str(),
        ]
    })
}

/// Each claim's status, in the order given, from the statuses the claim statements found per
/// key. A claimed key missing from them means the ledger lost a row it had just written.
pub(crate) fn claim_statuses_in_order(
    claims: &[Claim],
    status: &HashMap<String, ClaimStatus>,
) -> StoreResult<Vec<ClaimStatus>> {
    claims
        .iter()
        .map(|c| {
            status.get(c.key.as_str()).copied().ok_or_else(|| {
                StoreError::Corrupt(format!("claimed key '{}' is not in the ledger", c.key))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::IdempotencyKey;

    fn phones(list: &[&str]) -> Vec<PhoneNumber> {
        list.iter().map(|p| PhoneNumber::from_trusted(*p)).collect()
    }

    #[test]
    fn open_and_final_states() {
        assert!(!is_final("pending") && !is_final("sending"));
        for s in ["sent", "failed", "skipped", "unknown"] {
            assert!(is_final(s));
        }
        assert_eq!(claim_status("a", "pending", Some("a")), ClaimStatus::Mine);
        assert_eq!(
            claim_status("a", "sending", Some("b")),
            ClaimStatus::HeldElsewhere
        );
        assert_eq!(claim_status("a", "unknown", Some("a")), ClaimStatus::Done);
    }

    #[test]
    fn a_grant_counts_only_when_later_than_the_last_revocation() {
        assert_eq!(
            consent_state(false, Some(2), Some(1), None),
            ConsentState::Granted
        );
        assert_eq!(
            consent_state(false, Some(1), Some(1), None),
            ConsentState::OptedOut
        );
        assert_eq!(
            consent_state(false, Some(1), Some(2), None),
            ConsentState::OptedOut
        );
        assert_eq!(
            consent_state(false, None::<i64>, Some(2), None),
            ConsentState::OptedOut
        );
        assert_eq!(
            consent_state(false, None::<i64>, None, None),
            ConsentState::Missing
        );
        assert_eq!(
            consent_state(true, Some(2), None, None),
            ConsentState::OptedOut
        );
    }

    #[test]
    fn an_erased_number_needs_a_consent_given_after_its_erasure() {
        assert_eq!(
            consent_state(false, Some(5), None, Some(3)),
            ConsentState::Granted
        );
        assert_eq!(
            consent_state(false, Some(3), None, Some(3)),
            ConsentState::OptedOut
        );
        assert_eq!(
            consent_state(false, Some(1), None, Some(3)),
            ConsentState::OptedOut
        );
        assert_eq!(
            consent_state(false, None::<i64>, None, Some(3)),
            ConsentState::OptedOut
        );
        assert_eq!(
            consent_state(false, Some(5), Some(6), Some(3)),
            ConsentState::OptedOut
        );
    }

    #[test]
    fn the_keyed_hash_depends_on_the_key() {
        let n = PhoneNumber::from_trusted("+4915112345678");
        let a = keyed_hash(&HashKey::new("0123456789abcdef-a").unwrap(), &n);
        let b = keyed_hash(&HashKey::new("0123456789abcdef-b").unwrap(), &n);
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        assert_ne!(a, phone_hash(&n));
        assert!(HashKey::new("short").is_err());
        assert_eq!(
            format!("{:?}", HashKey::new("0123456789abcdef").unwrap()),
            "HashKey(<set>)"
        );
    }

    #[test]
    fn tier_reservation_charges_new_numbers_once_until_the_limit() {
        let ps = phones(&["+1", "+2", "+3", "+2", "+4"]);
        let in_window: HashSet<String> = ["+3".to_owned()].into();
        let (ok, touch) = decide_tier(&ps, &in_window, 8, Some(10));
        assert_eq!(ok, vec![true, true, true, true, false]);
        assert_eq!(touch, vec!["+1", "+2", "+3"]);
        let (ok, _) = decide_tier(&ps, &in_window, 1_000, None);
        assert!(ok.iter().all(|b| *b));
    }

    #[test]
    fn webhooks_of_one_message_fold_to_the_highest_status() {
        let at = chrono::Utc::now();
        let u = |wamid: &str, status: &str, key: Option<&str>| DeliveryUpdate {
            wamid: wamid.into(),
            key: key.map(IdempotencyKey::from_trusted),
            status: status.into(),
            at,
            error_code: (status == "failed").then_some(131026),
            billed_category: (status == "sent").then(|| "marketing".to_owned()),
        };
        let merged = merge_deliveries(&[
            u("w1", "read", None),
            u("w1", "delivered", Some("k1")),
            u("w1", "sent", None),
            u("w2", "failed", None),
            u("w3", "deleted", None),
        ]);
        assert_eq!(merged.len(), 2);
        assert_eq!(merged[0].status, "read");
        assert_eq!(merged[0].key.as_deref(), Some("k1"));
        assert_eq!(merged[0].billed_category.as_deref(), Some("marketing"));
        assert_eq!(merged[1].error.as_deref(), Some("131026"));
    }

    #[test]
    fn passwords_are_redacted_from_urls() {
        assert_eq!(
            redact_url("postgres://u:secret@db:5432/x"),
            "postgres://u:****@db:5432/x"
        );
        assert_eq!(redact_url("postgres://u@db/x"), "postgres://u@db/x");
        assert_eq!(redact_url("sqlite://herald.db"), "sqlite://herald.db");
    }

    #[test]
    fn phone_hash_is_hex_sha256_of_e164() {
        let h = phone_hash(&PhoneNumber::from_trusted("+4915112345678"));
        assert_eq!(h.len(), 64);
        assert!(h.bytes().all(|b| b.is_ascii_hexdigit()));
    }
}

/// A ledger row a status webhook changed, as the outbox needs it (read from either dialect's
/// `RETURNING` row by its column names).
#[derive(Debug, Clone, Default, sqlx::FromRow)]
pub(crate) struct ChangedRow {
    pub key: String,
    pub delivery: Option<String>,
    pub delivery_error: Option<String>,
    pub campaign: String,
    pub channel: String,
    pub recipient: String,
}

/// The outbox rows of the rows a status webhook batch changed: `before` holds each row's
/// state and delivery as they were (`policy::recipient_events::on_delivery`).
pub(crate) fn delivery_events(
    before: &std::collections::HashMap<String, (String, Option<String>)>,
    changed: &[ChangedRow],
    options: crate::domain::EventOptions,
    at: chrono::DateTime<chrono::Utc>,
) -> Vec<crate::domain::NewRecipientEvent> {
    use crate::domain::{ChannelKind, EventFacts, NewRecipientEvent, RecipientState};
    let mut events = Vec::new();
    for row in changed {
        let Some((state, delivery)) = before.get(&row.key) else {
            continue;
        };
        let channel = row.channel.parse().unwrap_or(ChannelKind::WhatsApp);
        for s in crate::policy::recipient_events::on_delivery(
            &row.key,
            state,
            delivery.as_deref(),
            row.delivery.as_deref(),
        ) {
            let code = (s == RecipientState::Failed)
                .then_some(row.delivery_error.as_deref())
                .flatten();
            events.push(NewRecipientEvent::build(
                EventFacts {
                    message_key: &row.key,
                    state: s,
                    campaign: &row.campaign,
                    channel,
                    recipient: &row.recipient,
                    code,
                    at,
                },
                options.numbers,
            ));
        }
    }
    events
}
