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

/// One-way identifier of a number: hex sha256 of its E.164 string. Suppressions are looked up
/// by it so they outlive the erasure of the number.
pub(crate) fn phone_hash(phone: &PhoneNumber) -> String {
    hex::encode(Sha256::digest(phone.as_str().as_bytes()))
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
) -> ConsentState {
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
            consent_state(false, Some(2), Some(1)),
            ConsentState::Granted
        );
        assert_eq!(
            consent_state(false, Some(1), Some(1)),
            ConsentState::OptedOut
        );
        assert_eq!(
            consent_state(false, Some(1), Some(2)),
            ConsentState::OptedOut
        );
        assert_eq!(
            consent_state(false, None::<i64>, Some(2)),
            ConsentState::OptedOut
        );
        assert_eq!(
            consent_state(false, None::<i64>, None),
            ConsentState::Missing
        );
        assert_eq!(consent_state(true, Some(2), None), ConsentState::OptedOut);
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
