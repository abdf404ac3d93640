//! The store conformance suite: every behaviour of the `Store` contract, written once as a
//! generic case over `Arc<dyn Store>` and run against SQLite and Postgres. Postgres-only cases
//! at the end pin safety under concurrent workers (separate pools, as separate processes).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use herald::domain::inbound::{InboundMessage, OptInKeyword};
use herald::domain::{
    CampaignId, Category, ChannelKind, EventFacts, EventOptions, IdempotencyKey, JobId,
    NewRecipientEvent, Outcome, PhoneNumber, RecipientState, SenderId, SkipReason,
};
use herald::policy::retention::{DataClass, RetentionPolicy};
use herald::store::{
    Budget, CampaignState, Claim, ClaimStatus, Consent, ConsentState, Conversion, DeliveryUpdate,
    OutcomeRecord, Sender, Store, StoreError, Template,
};

use crate::support;

const MINUTE: Duration = Duration::from_secs(60);
const DAY: Duration = Duration::from_secs(24 * 3600);

fn campaign(name: &str) -> CampaignId {
    CampaignId::parse(name).unwrap()
}

fn key(k: &str) -> IdempotencyKey {
    IdempotencyKey::parse(k).unwrap()
}

fn keys(list: &[&str]) -> Vec<IdempotencyKey> {
    list.iter().map(|k| key(k)).collect()
}

fn phone(i: u32) -> PhoneNumber {
    PhoneNumber::from_trusted(format!("+491511{i:07}"))
}

fn claim_in(campaign_id: &str, k: &str) -> Claim {
    Claim {
        key: key(k),
        campaign: campaign(campaign_id),
        job: JobId::parse("job-1").unwrap(),
        sender: SenderId::parse("106540352242922").unwrap(),
        recipient: "+4915112345678".into(),
        template: "flash_sale".into(),
        language: "de".into(),
        category: Category::Marketing,
        channel: ChannelKind::WhatsApp,
    }
}

fn claims(list: &[&str]) -> Vec<Claim> {
    list.iter().map(|k| claim_in("bf", k)).collect()
}

fn outcome(k: &str, outcome: Outcome) -> OutcomeRecord {
    OutcomeRecord {
        key: key(k),
        outcome,
        attempts: 1,
    }
}

fn sent(wamid: &str) -> Outcome {
    Outcome::Sent {
        wamid: wamid.into(),
    }
}

fn delivery(wamid: &str, k: Option<&str>, status: &str) -> DeliveryUpdate {
    DeliveryUpdate {
        wamid: wamid.into(),
        key: k.map(key),
        status: status.into(),
        at: Utc::now(),
        error_code: (status == "failed").then_some(131_026),
        billed_category: None,
    }
}

async fn state_of(store: &Arc<dyn Store>, k: &str) -> String {
    store
        .ledger_entry(&key(k))
        .await
        .unwrap()
        .expect("ledger row")
        .state
}

// --- claims --------------------------------------------------------------------------------

async fn new_keys_are_claimed_pending_for_their_owner(store: Arc<dyn Store>) {
    let got = store
        .claim("w1", MINUTE, &claims(&["a", "b"]))
        .await
        .unwrap();
    assert_eq!(got, vec![ClaimStatus::Mine, ClaimStatus::Mine]);
    let row = store.ledger_entry(&key("a")).await.unwrap().unwrap();
    assert_eq!(row.state, "pending");
    assert_eq!(row.campaign.as_str(), "bf");
    assert_eq!(row.recipient, "+4915112345678");
    assert_eq!(row.category, Category::Marketing);
    assert_eq!(row.attempts, 0);
    assert!(store.ledger_entry(&key("zz")).await.unwrap().is_none());
    assert!(store.claim("w1", MINUTE, &[]).await.unwrap().is_empty());
}

async fn every_key_records_the_channel_that_carries_it(store: Arc<dyn Store>) {
    let mut sms = claim_in("bf", "by-sms");
    sms.channel = ChannelKind::Sms;
    let both = [claim_in("bf", "by-whatsapp"), sms];
    store.claim("w1", MINUTE, &both).await.unwrap();
    for (k, channel) in [
        ("by-whatsapp", ChannelKind::WhatsApp),
        ("by-sms", ChannelKind::Sms),
    ] {
        let row = store.ledger_entry(&key(k)).await.unwrap().unwrap();
        assert_eq!(row.channel, channel, "{k}");
    }
    let page = store.ledger_page(&campaign("bf"), None, 10).await.unwrap();
    assert_eq!(page.len(), 2);
    assert!(page.iter().any(|r| r.channel == ChannelKind::Sms));
}

async fn a_key_with_an_outcome_is_done_for_everyone(store: Arc<dyn Store>) {
    store.claim("w1", MINUTE, &claims(&["a"])).await.unwrap();
    store
        .record_outcomes(&[outcome("a", sent("wamid.1"))])
        .await
        .unwrap();
    for owner in ["w1", "w2"] {
        let got = store.claim(owner, MINUTE, &claims(&["a"])).await.unwrap();
        assert_eq!(got, vec![ClaimStatus::Done], "owner {owner}");
    }
}

async fn the_same_owner_may_claim_again(store: Arc<dyn Store>) {
    store
        .claim("w1", MINUTE, &claims(&["a", "b"]))
        .await
        .unwrap();
    store.mark_sending("w1", &keys(&["b"])).await.unwrap();
    let got = store
        .claim("w1", MINUTE, &claims(&["a", "b", "c"]))
        .await
        .unwrap();
    assert_eq!(got, vec![ClaimStatus::Mine; 3]);
    assert_eq!(state_of(&store, "b").await, "sending");
}

async fn a_live_lease_of_another_owner_is_respected(store: Arc<dyn Store>) {
    store
        .claim("w1", MINUTE, &claims(&["a", "b"]))
        .await
        .unwrap();
    store.mark_sending("w1", &keys(&["b"])).await.unwrap();
    let got = store
        .claim("w2", MINUTE, &claims(&["a", "b", "c"]))
        .await
        .unwrap();
    assert_eq!(
        got,
        vec![
            ClaimStatus::HeldElsewhere,
            ClaimStatus::HeldElsewhere,
            ClaimStatus::Mine
        ]
    );
}

async fn an_expired_pending_key_is_taken_over(store: Arc<dyn Store>) {
    store
        .claim("dead", Duration::ZERO, &claims(&["a"]))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let got = store.claim("w2", MINUTE, &claims(&["a"])).await.unwrap();
    assert_eq!(got, vec![ClaimStatus::Mine]);
    // The dead owner lost it: its late writes no longer apply, and it is told so.
    let marked = store.mark_sending("dead", &keys(&["a"])).await.unwrap();
    assert_eq!(marked, vec![false], "a key no longer held must not be sent");
    assert_eq!(state_of(&store, "a").await, "pending");
    let marked = store.mark_sending("w2", &keys(&["a"])).await.unwrap();
    assert_eq!(marked, vec![true]);
    assert_eq!(state_of(&store, "a").await, "sending");
}

async fn an_expired_sending_key_becomes_unknown_and_is_never_resent(store: Arc<dyn Store>) {
    store
        .claim("dead", Duration::ZERO, &claims(&["a", "b"]))
        .await
        .unwrap();
    store.mark_sending("dead", &keys(&["a"])).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let got = store
        .claim("w2", MINUTE, &claims(&["a", "b"]))
        .await
        .unwrap();
    assert_eq!(got, vec![ClaimStatus::WasInFlight, ClaimStatus::Mine]);
    assert_eq!(state_of(&store, "a").await, "unknown");
    let again = store.claim("w3", MINUTE, &claims(&["a"])).await.unwrap();
    assert_eq!(again, vec![ClaimStatus::Done]);
}

async fn the_first_outcome_wins(store: Arc<dyn Store>) {
    store
        .claim("w1", MINUTE, &claims(&["a", "b", "c"]))
        .await
        .unwrap();
    store
        .record_outcomes(&[
            outcome("a", sent("wamid.a")),
            outcome("b", Outcome::Failed { code: 131_026 }),
            // Twice in one batch: the first one counts.
            outcome(
                "c",
                Outcome::Skipped {
                    reason: SkipReason::NoConsent,
                },
            ),
            outcome("c", sent("wamid.c")),
        ])
        .await
        .unwrap();
    store
        .record_outcomes(&[
            outcome("a", Outcome::Failed { code: 1 }),
            outcome("b", sent("wamid.b")),
            outcome("c", Outcome::Unknown),
        ])
        .await
        .unwrap();
    let a = store.ledger_entry(&key("a")).await.unwrap().unwrap();
    assert_eq!(
        (a.state.as_str(), a.wamid.as_deref()),
        ("sent", Some("wamid.a"))
    );
    let b = store.ledger_entry(&key("b")).await.unwrap().unwrap();
    assert_eq!(
        (b.state.as_str(), b.reason.as_deref()),
        ("failed", Some("131026"))
    );
    assert_eq!(b.wamid, None);
    let c = store.ledger_entry(&key("c")).await.unwrap().unwrap();
    assert_eq!(
        (c.state.as_str(), c.reason.as_deref()),
        ("skipped", Some("no_consent"))
    );
}

async fn sending_counts_attempts(store: Arc<dyn Store>) {
    store.claim("w1", MINUTE, &claims(&["a"])).await.unwrap();
    store.mark_sending("w1", &keys(&["a"])).await.unwrap();
    store.mark_sending("w1", &keys(&["a"])).await.unwrap();
    assert_eq!(
        store
            .ledger_entry(&key("a"))
            .await
            .unwrap()
            .unwrap()
            .attempts,
        2
    );
    store
        .record_outcomes(&[OutcomeRecord {
            key: key("a"),
            outcome: sent("w"),
            attempts: 3,
        }])
        .await
        .unwrap();
    assert_eq!(
        store
            .ledger_entry(&key("a"))
            .await
            .unwrap()
            .unwrap()
            .attempts,
        3
    );
}

async fn released_keys_are_claimable_at_once(store: Arc<dyn Store>) {
    store
        .claim("w1", Duration::from_secs(3600), &claims(&["a", "b"]))
        .await
        .unwrap();
    // Only the owner can hand keys back.
    store.release("w2", &keys(&["a", "b"])).await.unwrap();
    let held = store.claim("w2", MINUTE, &claims(&["a"])).await.unwrap();
    assert_eq!(held, vec![ClaimStatus::HeldElsewhere]);
    store.release("w1", &keys(&["a"])).await.unwrap();
    assert_eq!(state_of(&store, "a").await, "pending");
    let got = store
        .claim("w2", MINUTE, &claims(&["a", "b"]))
        .await
        .unwrap();
    assert_eq!(got, vec![ClaimStatus::Mine, ClaimStatus::HeldElsewhere]);
}

async fn a_renewed_lease_keeps_keys_held(store: Arc<dyn Store>) {
    store
        .claim("w1", Duration::ZERO, &claims(&["a", "b"]))
        .await
        .unwrap();
    store
        .record_outcomes(&[outcome("b", sent("wamid.b"))])
        .await
        .unwrap();
    store.renew_lease("w1", MINUTE).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let got = store
        .claim("w2", MINUTE, &claims(&["a", "b"]))
        .await
        .unwrap();
    assert_eq!(got, vec![ClaimStatus::HeldElsewhere, ClaimStatus::Done]);
}

/// A renewal writes only keys whose lease runs out within three quarters of it: one claimed
/// with a lease far longer is left alone (not shortened, not rewritten), one about to expire
/// is extended.
async fn a_renewal_extends_only_leases_running_out(store: Arc<dyn Store>) {
    store
        .claim("w1", Duration::from_millis(100), &claims(&["a"]))
        .await
        .unwrap();
    store.claim("w1", MINUTE, &claims(&["c"])).await.unwrap();
    store
        .renew_lease("w1", Duration::from_millis(600))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = store
        .claim("w2", MINUTE, &claims(&["a", "c"]))
        .await
        .unwrap();
    assert_eq!(
        got,
        vec![ClaimStatus::HeldElsewhere, ClaimStatus::HeldElsewhere],
        "a was extended past its 100 ms, c kept its minute"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = store
        .claim("w2", MINUTE, &claims(&["a", "c"]))
        .await
        .unwrap();
    assert_eq!(got, vec![ClaimStatus::Mine, ClaimStatus::HeldElsewhere]);
}

// --- reports -------------------------------------------------------------------------------

async fn the_ledger_pages_by_key_and_counts_by_state(store: Arc<dyn Store>) {
    let mine: Vec<Claim> = (0..25)
        .map(|i| claim_in("bf", &format!("k{i:03}")))
        .collect();
    let other: Vec<Claim> = (0..5)
        .map(|i| claim_in("other", &format!("o{i:03}")))
        .collect();
    store.claim("w1", MINUTE, &mine).await.unwrap();
    store.claim("w1", MINUTE, &other).await.unwrap();
    let outcomes: Vec<OutcomeRecord> = (0..25)
        .filter_map(|i| {
            let o = match i % 5 {
                0 | 1 => sent(&format!("wamid.{i}")),
                2 => Outcome::Skipped {
                    reason: SkipReason::NoConsent,
                },
                3 => Outcome::Failed { code: 131_026 },
                _ => return None,
            };
            Some(OutcomeRecord {
                key: key(&format!("k{i:03}")),
                outcome: o,
                attempts: 1,
            })
        })
        .collect();
    store.record_outcomes(&outcomes).await.unwrap();

    let mut seen = Vec::new();
    let mut after: Option<IdempotencyKey> = None;
    loop {
        let page = store
            .ledger_page(&campaign("bf"), after.as_ref(), 10)
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 10);
        after = Some(page.last().unwrap().key.clone());
        seen.extend(page.into_iter().map(|r| r.key.as_str().to_owned()));
    }
    let expected: Vec<String> = (0..25).map(|i| format!("k{i:03}")).collect();
    assert_eq!(seen, expected);

    let counts = store.campaign_counts(&campaign("bf")).await.unwrap();
    assert_eq!(counts.total(), 25);
    assert_eq!(counts.state("sent"), 10);
    assert_eq!(counts.state("pending"), 5);
    assert_eq!(
        counts.by_state,
        vec![
            ("failed".to_owned(), "131026".to_owned(), 5),
            ("pending".to_owned(), String::new(), 5),
            ("sent".to_owned(), String::new(), 10),
            ("skipped".to_owned(), "no_consent".to_owned(), 5),
        ]
    );
    assert_eq!(
        store
            .campaign_counts(&campaign("nobody"))
            .await
            .unwrap()
            .total(),
        0
    );
}

async fn ledger_entries_reads_the_rows_of_many_keys_at_once(store: Arc<dyn Store>) {
    // More keys than one statement takes, across two campaigns, some with an outcome.
    let all: Vec<Claim> = (0..1203)
        .map(|i| claim_in(if i % 2 == 0 { "bf" } else { "other" }, &format!("m{i:04}")))
        .collect();
    for chunk in all.chunks(500) {
        store.claim("w1", MINUTE, chunk).await.unwrap();
    }
    store
        .record_outcomes(&[
            outcome("m0007", sent("wamid.7")),
            outcome("m1202", Outcome::Failed { code: 131_026 }),
        ])
        .await
        .unwrap();
    assert!(store.ledger_entries(&[]).await.unwrap().is_empty());

    // Every key, a key twice, keys without a row.
    let mut asked: Vec<IdempotencyKey> =
        (0..1203).rev().map(|i| key(&format!("m{i:04}"))).collect();
    asked.push(key("m0007"));
    asked.extend(keys(&["nobody", "m9999"]));
    let rows = store.ledger_entries(&asked).await.unwrap();
    assert_eq!(rows.len(), 1203);
    let got: HashSet<&str> = rows.iter().map(|r| r.key.as_str()).collect();
    assert_eq!(got.len(), 1203);
    assert!(!got.contains("nobody"));
    for r in &rows {
        let one = store.ledger_entry(&r.key).await.unwrap().unwrap();
        assert_eq!(*r, one, "the same row as ledger_entry");
    }
    let row = |k: &str| rows.iter().find(|r| r.key.as_str() == k).unwrap();
    assert_eq!(row("m0007").state, "sent");
    assert_eq!(row("m0007").wamid.as_deref(), Some("wamid.7"));
    assert_eq!(row("m1202").state, "failed");
    assert_eq!(row("m0001").campaign.as_str(), "other");
    assert_eq!(row("m0500").state, "pending");

    // Only keys without a row: nothing.
    let none = store.ledger_entries(&keys(&["x", "y"])).await.unwrap();
    assert!(none.is_empty());
}

// --- consent -------------------------------------------------------------------------------

fn consent(p: &PhoneNumber, category: Category, ago: TimeDelta) -> Consent {
    consent_on(ChannelKind::WhatsApp, p, category, ago)
}

fn consent_on(
    channel: ChannelKind,
    p: &PhoneNumber,
    category: Category,
    ago: TimeDelta,
) -> Consent {
    Consent {
        phone: p.clone(),
        category,
        channel,
        granted_at: Utc::now() - ago,
        source: "checkout".into(),
        proof: "opt-in box v3 ticked".into(),
    }
}

/// Marketing consent of each number on WhatsApp and on SMS: (whatsapp, sms) per number.
async fn marketing_by_channel(
    store: &Arc<dyn Store>,
    phones: &[PhoneNumber],
) -> Vec<(ConsentState, ConsentState)> {
    let on = |channel| store.consent_states(Category::Marketing, channel, phones);
    let (whatsapp, sms) = (
        on(ChannelKind::WhatsApp).await.unwrap(),
        on(ChannelKind::Sms).await.unwrap(),
    );
    whatsapp.into_iter().zip(sms).collect()
}

async fn consent_is_granted_missing_revoked_regranted_or_suppressed(store: Arc<dyn Store>) {
    let (granted, missing, revoked, regranted, suppressed, all_revoked, utility_only) = (
        phone(1),
        phone(2),
        phone(3),
        phone(4),
        phone(5),
        phone(6),
        phone(7),
    );
    let hour = TimeDelta::hours(1);
    let written = store
        .grant_consents(&[
            consent(&granted, Category::Marketing, hour),
            consent(&revoked, Category::Marketing, hour * 3),
            consent(&regranted, Category::Marketing, hour * 3),
            consent(&suppressed, Category::Marketing, hour),
            consent(&all_revoked, Category::Marketing, hour * 3),
            consent(&utility_only, Category::Utility, hour),
        ])
        .await
        .unwrap();
    assert_eq!(written, 6);
    let two_hours_ago = Utc::now() - hour * 2;
    store
        .revoke_consent(
            &revoked,
            Some(Category::Marketing),
            Some(ChannelKind::WhatsApp),
            two_hours_ago,
            "reply STOP",
        )
        .await
        .unwrap();
    store
        .revoke_consent(
            &regranted,
            Some(Category::Marketing),
            Some(ChannelKind::WhatsApp),
            two_hours_ago,
            "reply STOP",
        )
        .await
        .unwrap();
    store
        .grant_consents(&[consent(&regranted, Category::Marketing, hour)])
        .await
        .unwrap();
    // An older grant arriving late does not undo the newer one.
    store
        .grant_consents(&[consent(&regranted, Category::Marketing, hour * 10)])
        .await
        .unwrap();
    store
        .revoke_consent(&all_revoked, None, None, two_hours_ago, "support ticket")
        .await
        .unwrap();
    store.suppress(&suppressed, "complaint").await.unwrap();
    store.suppress(&suppressed, "complaint").await.unwrap();

    let phones = [
        granted.clone(),
        missing.clone(),
        revoked.clone(),
        regranted.clone(),
        suppressed.clone(),
        all_revoked.clone(),
        utility_only.clone(),
        granted.clone(),
    ];
    let states = store
        .consent_states(Category::Marketing, ChannelKind::WhatsApp, &phones)
        .await
        .unwrap();
    use ConsentState::*;
    assert_eq!(
        states,
        vec![
            Granted, Missing, OptedOut, Granted, OptedOut, OptedOut, Missing, Granted
        ]
    );
    let utility = store
        .consent_states(
            Category::Utility,
            ChannelKind::WhatsApp,
            &[utility_only, granted, suppressed],
        )
        .await
        .unwrap();
    assert_eq!(utility, vec![Granted, Missing, OptedOut]);
    assert!(
        store
            .consent_states(Category::Marketing, ChannelKind::WhatsApp, &[])
            .await
            .unwrap()
            .is_empty()
    );
}

async fn consent_on_one_channel_allows_no_other(store: Arc<dyn Store>) {
    let (whatsapp, sms, both) = (phone(1), phone(2), phone(3));
    let hour = TimeDelta::hours(1);
    let written = store
        .grant_consents(&[
            consent_on(ChannelKind::WhatsApp, &whatsapp, Category::Marketing, hour),
            consent_on(ChannelKind::Sms, &sms, Category::Marketing, hour),
            // Both channels for one number in one batch: two rows, not one overwriting the other.
            consent_on(ChannelKind::WhatsApp, &both, Category::Marketing, hour),
            consent_on(ChannelKind::Sms, &both, Category::Marketing, hour),
            // SMS consent for another category says nothing about marketing.
            consent_on(ChannelKind::Sms, &whatsapp, Category::Utility, hour),
        ])
        .await
        .unwrap();
    assert_eq!(written, 5);
    use ConsentState::*;
    assert_eq!(
        marketing_by_channel(&store, &[whatsapp.clone(), sms.clone(), both.clone()]).await,
        vec![(Granted, Missing), (Missing, Granted), (Granted, Granted)]
    );
    assert_eq!(
        store
            .consent_states(Category::Utility, ChannelKind::Sms, &[whatsapp, sms])
            .await
            .unwrap(),
        vec![Granted, Missing]
    );
}

async fn opt_outs_hold_for_their_channel_or_for_every_channel(store: Arc<dyn Store>) {
    let (sms_stopped, all_stopped, category_stopped, regranted, suppressed) =
        (phone(1), phone(2), phone(3), phone(4), phone(5));
    let hour = TimeDelta::hours(1);
    let everyone = [
        sms_stopped.clone(),
        all_stopped.clone(),
        category_stopped.clone(),
        regranted.clone(),
        suppressed.clone(),
    ];
    let grants: Vec<Consent> = everyone
        .iter()
        .flat_map(|p| {
            [ChannelKind::WhatsApp, ChannelKind::Sms]
                .map(|channel| consent_on(channel, p, Category::Marketing, hour * 3))
        })
        .collect();
    store.grant_consents(&grants).await.unwrap();
    let two_hours_ago = Utc::now() - hour * 2;
    for (p, category, channel, source) in [
        (
            &sms_stopped,
            Some(Category::Marketing),
            Some(ChannelKind::Sms),
            "sms:STOP",
        ),
        (
            &all_stopped,
            Some(Category::Marketing),
            None,
            "support ticket",
        ),
        (&category_stopped, None, None, "cli"),
        (&regranted, None, None, "cli"),
    ] {
        store
            .revoke_consent(p, category, channel, two_hours_ago, source)
            .await
            .unwrap();
    }
    // A new grant after the opt-out re-enables its channel only.
    store
        .grant_consents(&[consent_on(
            ChannelKind::Sms,
            &regranted,
            Category::Marketing,
            hour,
        )])
        .await
        .unwrap();
    // A suppression holds for every channel.
    store.suppress(&suppressed, "complaint").await.unwrap();

    use ConsentState::*;
    assert_eq!(
        marketing_by_channel(&store, &everyone).await,
        vec![
            (Granted, OptedOut),
            (OptedOut, OptedOut),
            (OptedOut, OptedOut),
            (OptedOut, Granted),
            (OptedOut, OptedOut),
        ]
    );
}

async fn an_export_shows_the_channel_of_each_consent_and_opt_out(store: Arc<dyn Store>) {
    let p = phone(1);
    let hour = TimeDelta::hours(1);
    store
        .grant_consents(&[
            consent_on(ChannelKind::WhatsApp, &p, Category::Marketing, hour * 2),
            consent_on(ChannelKind::Sms, &p, Category::Marketing, hour * 2),
        ])
        .await
        .unwrap();
    let an_hour_ago = Utc::now() - hour;
    store
        .revoke_consent(
            &p,
            Some(Category::Marketing),
            Some(ChannelKind::Sms),
            an_hour_ago,
            "sms:STOP",
        )
        .await
        .unwrap();
    store
        .revoke_consent(&p, None, None, Utc::now(), "cli")
        .await
        .unwrap();
    let export = store.export_contact(&p).await.unwrap();
    let channels = |list: &str| -> Vec<serde_json::Value> {
        export[list]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["channel"].clone())
            .collect()
    };
    assert_eq!(channels("consents"), ["sms", "whatsapp"]);
    assert_eq!(
        channels("revocations"),
        [serde_json::json!("sms"), serde_json::Value::Null]
    );
}

// --- messaging tier ------------------------------------------------------------------------

async fn the_tier_admits_new_numbers_up_to_the_limit(store: Arc<dyn Store>) {
    let ps: Vec<PhoneNumber> = (0..5).map(phone).collect();
    let got = store.reserve_tier("pf", Some(3), DAY, &ps).await.unwrap();
    assert_eq!(got, vec![true, true, true, false, false]);
    // Numbers already reached are free; the same new number twice in a batch costs one.
    let again = vec![ps[0].clone(), ps[3].clone(), ps[1].clone()];
    assert_eq!(
        store
            .reserve_tier("pf", Some(3), DAY, &again)
            .await
            .unwrap(),
        vec![true, false, true]
    );
    assert_eq!(store.tier_usage("pf", DAY).await.unwrap(), 3);
    let dup = vec![ps[4].clone(), ps[4].clone()];
    assert_eq!(
        store.reserve_tier("pf", Some(4), DAY, &dup).await.unwrap(),
        vec![true, true]
    );
    assert_eq!(store.tier_usage("pf", DAY).await.unwrap(), 4);
    // Portfolios are separate; unlimited admits everyone and still records reach.
    assert_eq!(store.tier_usage("other", DAY).await.unwrap(), 0);
    let many: Vec<PhoneNumber> = (100..150).map(phone).collect();
    assert!(
        store
            .reserve_tier("other", None, DAY, &many)
            .await
            .unwrap()
            .iter()
            .all(|b| *b)
    );
    assert_eq!(store.tier_usage("other", DAY).await.unwrap(), 50);
}

async fn the_tier_window_rolls(store: Arc<dyn Store>) {
    let window = Duration::from_millis(600);
    let (a, b, c) = (phone(1), phone(2), phone(3));
    let got = store
        .reserve_tier("pf", Some(2), window, &[a.clone(), b.clone(), c.clone()])
        .await
        .unwrap();
    assert_eq!(got, vec![true, true, false]);
    tokio::time::sleep(Duration::from_millis(400)).await;
    // `a` is reached again: free, and its window starts anew.
    assert_eq!(
        store
            .reserve_tier("pf", Some(2), window, std::slice::from_ref(&a))
            .await
            .unwrap(),
        vec![true]
    );
    tokio::time::sleep(Duration::from_millis(350)).await;
    // `b` dropped out of the window, `a` did not: one unit left for `c`.
    assert_eq!(store.tier_usage("pf", window).await.unwrap(), 1);
    let got = store
        .reserve_tier("pf", Some(2), window, &[c.clone(), b.clone()])
        .await
        .unwrap();
    assert_eq!(got, vec![true, false]);
}

/// The tier's count is kept between reservations and moved on by what left the window (not
/// counted in full per batch): what it grants must be what a full count allows, round after
/// round as numbers leave the window, after an unlimited sender of the portfolio reached
/// numbers the kept count never saw, and after an erasure.
async fn the_kept_tier_count_grants_what_a_full_count_allows(store: Arc<dyn Store>) {
    let window = Duration::from_millis(700);
    let limit = 12u32;
    let mut next = 0u32;
    for round in 0..7 {
        let used = store.tier_usage("pf", window).await.unwrap();
        let batch: Vec<PhoneNumber> = (next..next + 5).map(phone).collect();
        next += 5;
        if round == 3 {
            // Another sender of the portfolio without a limit: counted by nobody.
            let extra: Vec<PhoneNumber> = (1000..1003).map(phone).collect();
            store
                .reserve_tier("pf", None, window, &extra)
                .await
                .unwrap();
        }
        let used = if round == 3 { used + 3 } else { used };
        let got = store
            .reserve_tier("pf", Some(limit), window, &batch)
            .await
            .unwrap();
        let granted = got.iter().filter(|ok| **ok).count() as u64;
        assert_eq!(
            granted,
            5.min(u64::from(limit).saturating_sub(used)),
            "round {round}: {used} in the window before"
        );
        assert_eq!(
            store.tier_usage("pf", window).await.unwrap(),
            used + granted,
            "round {round}"
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

// --- status webhooks -----------------------------------------------------------------------

async fn deliveries_apply_monotonically(store: Arc<dyn Store>) {
    store
        .claim("w1", MINUTE, &claims(&["a", "b"]))
        .await
        .unwrap();
    store
        .record_outcomes(&[outcome("a", sent("wamid.a")), outcome("b", sent("wamid.b"))])
        .await
        .unwrap();
    let delivery_of = |k: &'static str| {
        let store = Arc::clone(&store);
        async move { store.ledger_entry(&key(k)).await.unwrap().unwrap().delivery }
    };

    assert_eq!(
        store
            .apply_deliveries(&[delivery("wamid.a", None, "delivered")])
            .await
            .unwrap(),
        1
    );
    assert_eq!(delivery_of("a").await.as_deref(), Some("delivered"));
    // A replay (at-least-once webhooks) changes nothing.
    assert_eq!(
        store
            .apply_deliveries(&[delivery("wamid.a", None, "delivered")])
            .await
            .unwrap(),
        0
    );
    // `read` may come first; a late `delivered` or `sent` does not step back.
    let batch = [
        delivery("wamid.b", None, "read"),
        delivery("wamid.b", None, "delivered"),
        delivery("wamid.a", None, "read"),
    ];
    assert_eq!(store.apply_deliveries(&batch).await.unwrap(), 2);
    assert_eq!(
        store
            .apply_deliveries(&[
                delivery("wamid.a", None, "sent"),
                delivery("wamid.b", None, "delivered")
            ])
            .await
            .unwrap(),
        0
    );
    assert_eq!(delivery_of("a").await.as_deref(), Some("read"));
    assert_eq!(delivery_of("b").await.as_deref(), Some("read"));
    assert_eq!(state_of(&store, "a").await, "sent");
    // Unknown wamids (another system's messages) are ignored.
    assert_eq!(
        store
            .apply_deliveries(&[delivery("wamid.zz", None, "read")])
            .await
            .unwrap(),
        0
    );
    // Pricing arrives once and is kept.
    let mut priced = delivery("wamid.a", None, "sent");
    priced.billed_category = Some("marketing".into());
    assert_eq!(store.apply_deliveries(&[priced.clone()]).await.unwrap(), 1);
    assert_eq!(store.apply_deliveries(&[priced]).await.unwrap(), 0);
}

async fn a_failed_delivery_is_final(store: Arc<dyn Store>) {
    store.claim("w1", MINUTE, &claims(&["a"])).await.unwrap();
    store
        .record_outcomes(&[outcome("a", sent("wamid.a"))])
        .await
        .unwrap();
    assert_eq!(
        store
            .apply_deliveries(&[delivery("wamid.a", None, "failed")])
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store
            .apply_deliveries(&[delivery("wamid.a", None, "read")])
            .await
            .unwrap(),
        0
    );
    let row = store.ledger_entry(&key("a")).await.unwrap().unwrap();
    assert_eq!(
        (row.state.as_str(), row.delivery.as_deref()),
        ("sent", Some("failed"))
    );
}

async fn an_unknown_key_is_resolved_by_its_webhook(store: Arc<dyn Store>) {
    store
        .claim("w1", MINUTE, &claims(&["a", "b"]))
        .await
        .unwrap();
    store.mark_sending("w1", &keys(&["a", "b"])).await.unwrap();
    store
        .record_outcomes(&[outcome("a", Outcome::Unknown)])
        .await
        .unwrap();
    assert_eq!(state_of(&store, "a").await, "unknown");
    // Matched by our key (echoed in biz_opaque_callback_data): it was accepted after all.
    let changed = store
        .apply_deliveries(&[delivery("wamid.a", Some("a"), "delivered")])
        .await
        .unwrap();
    assert_eq!(changed, 1);
    let row = store.ledger_entry(&key("a")).await.unwrap().unwrap();
    assert_eq!(row.state, "sent");
    assert_eq!(row.wamid.as_deref(), Some("wamid.a"));
    assert_eq!(row.delivery.as_deref(), Some("delivered"));
    // Later webhooks find it by wamid alone.
    assert_eq!(
        store
            .apply_deliveries(&[delivery("wamid.a", None, "read")])
            .await
            .unwrap(),
        1
    );
    // A webhook faster than our own bookkeeping settles a key still `sending`; the outcome
    // recorded afterwards keeps it.
    assert_eq!(
        store
            .apply_deliveries(&[delivery("wamid.b", Some("b"), "sent")])
            .await
            .unwrap(),
        1
    );
    store
        .record_outcomes(&[outcome("b", sent("wamid.b"))])
        .await
        .unwrap();
    let b = store.ledger_entry(&key("b")).await.unwrap().unwrap();
    assert_eq!(
        (b.state.as_str(), b.wamid.as_deref()),
        ("sent", Some("wamid.b"))
    );
    assert_eq!(
        store
            .claim("w2", MINUTE, &claims(&["a", "b"]))
            .await
            .unwrap(),
        vec![ClaimStatus::Done; 2]
    );
}

// --- personal data -------------------------------------------------------------------------

async fn a_contact_is_exported_then_erased(store: Arc<dyn Store>) {
    support::configure_hash_key();
    let p = PhoneNumber::from_trusted("+4915112345678");
    let other = phone(9);
    store
        .grant_consents(&[
            consent(&p, Category::Marketing, TimeDelta::hours(2)),
            consent(&other, Category::Marketing, TimeDelta::hours(2)),
        ])
        .await
        .unwrap();
    store
        .revoke_consent(&p, Some(Category::Utility), None, Utc::now(), "reply STOP")
        .await
        .unwrap();
    store.suppress(&p, "complaint").await.unwrap();
    store
        .reserve_tier("pf", Some(10), DAY, &[p.clone(), other.clone()])
        .await
        .unwrap();
    store.claim("w1", MINUTE, &claims(&["a"])).await.unwrap();
    store
        .record_outcomes(&[outcome("a", sent("wamid.a"))])
        .await
        .unwrap();

    let export = store.export_contact(&p).await.unwrap();
    assert_eq!(export["consents"].as_array().unwrap().len(), 1);
    assert_eq!(export["consents"][0]["source"], "checkout");
    assert_eq!(export["revocations"].as_array().unwrap().len(), 1);
    assert_eq!(export["suppressions"].as_array().unwrap().len(), 1);
    assert_eq!(export["ledger"].as_array().unwrap().len(), 1);
    assert_eq!(export["ledger"][0]["wamid"], "wamid.a");

    let report = store.erase_contact(&p).await.unwrap();
    let removed: std::collections::BTreeMap<&str, u64> = report.into_iter().collect();
    assert_eq!(removed.get("consents"), Some(&1), "{removed:?}");
    assert_eq!(removed.get("revocations"), Some(&1), "{removed:?}");
    assert_eq!(removed.get("ledger rows"), Some(&1), "{removed:?}");
    assert_eq!(removed.get("tier rows"), Some(&1), "{removed:?}");
    let row = store.ledger_entry(&key("a")).await.unwrap().unwrap();
    assert_eq!(row.state, "sent", "the outcome is kept");
    assert_eq!(
        row.recipient.len(),
        64,
        "the number is replaced by its keyed hash"
    );
    assert!(!row.recipient.contains("4915112345678"));
    assert_ne!(
        row.recipient,
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
            p.as_str().as_bytes()
        )),
        "not the plain hash anyone can recompute"
    );
    assert_eq!(row.wamid, None, "a wamid encodes the number");
    let after = store.export_contact(&p).await.unwrap();
    assert!(after["consents"].as_array().unwrap().is_empty());
    assert!(after["revocations"].as_array().unwrap().is_empty());
    assert!(after["tier"].as_array().unwrap().is_empty());
    assert!(!after.to_string().contains("checkout"));
    let suppressions = after["suppressions"].as_array().unwrap();
    assert!(suppressions.iter().all(|s| s["erased"] == true));
    // Granting again by mistake (an old CSV: consent from before the erasure) never makes
    // the number sendable.
    store
        .grant_consents(&[consent(&p, Category::Marketing, TimeDelta::hours(2))])
        .await
        .unwrap();
    let states = store
        .consent_states(
            Category::Marketing,
            ChannelKind::WhatsApp,
            &[p.clone(), other.clone()],
        )
        .await
        .unwrap();
    assert_eq!(states, vec![ConsentState::OptedOut, ConsentState::Granted]);
    assert_eq!(store.tier_usage("pf", DAY).await.unwrap(), 1);
    // Erasing twice is harmless and finds little left (the consent granted by mistake).
    let again = store.erase_contact(&p).await.unwrap();
    assert!(
        !again.iter().any(|(what, _)| *what == "ledger rows"),
        "{again:?}"
    );
    // A new consent with its proof, given after the erasure, makes an erased number sendable
    // again — unless something else blocks it: `p`'s complaint still does.
    store.erase_contact(&other).await.unwrap();
    store
        .grant_consents(&[
            consent(&p, Category::Marketing, TimeDelta::seconds(-2)),
            consent(&other, Category::Marketing, TimeDelta::seconds(-2)),
        ])
        .await
        .unwrap();
    let states = store
        .consent_states(
            Category::Marketing,
            ChannelKind::WhatsApp,
            &[p.clone(), other.clone()],
        )
        .await
        .unwrap();
    assert_eq!(states, vec![ConsentState::OptedOut, ConsentState::Granted]);
    // The complaint outlives the erasure, under the keyed hash.
    let exported = store.export_contact(&p).await.unwrap();
    let reasons: Vec<&str> = exported["suppressions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["reason"].as_str().unwrap())
        .collect();
    assert!(
        reasons.contains(&"complaint") && reasons.contains(&"erased"),
        "{reasons:?}"
    );
}

// --- senders, templates, campaigns ---------------------------------------------------------

async fn senders_templates_and_campaigns_round_trip(store: Arc<dyn Store>) {
    let mut s = Sender {
        id: SenderId::parse("106540352242922").unwrap(),
        account_id: "waba-1".into(),
        portfolio_id: "pf-1".into(),
        display_number: "+49 30 1234567".into(),
        rate_per_sec: 80,
        tier_limit: Some(2_000),
        status: "CONNECTED".into(),
        status_reason: None,
    };
    store.upsert_sender(&s).await.unwrap();
    s.rate_per_sec = 1_000;
    s.tier_limit = None;
    store.upsert_sender(&s).await.unwrap();
    assert_eq!(store.sender(&s.id).await.unwrap(), Some(s.clone()));
    store
        .set_sender_status(&s.id, "STOPPED", Some("131031 account locked"))
        .await
        .unwrap();
    let stopped = store.sender(&s.id).await.unwrap().unwrap();
    assert!(!stopped.can_send());
    assert_eq!(
        stopped.status_reason.as_deref(),
        Some("131031 account locked")
    );
    assert_eq!(store.senders().await.unwrap().len(), 1);
    assert_eq!(
        store.sender(&SenderId::parse("1").unwrap()).await.unwrap(),
        None
    );

    let t = |account: &str| Template {
        account_id: account.into(),
        name: "flash_sale".into(),
        language: "de".into(),
        category: Category::Marketing,
        status: "APPROVED".into(),
    };
    store.upsert_template(&t("waba-1")).await.unwrap();
    store.upsert_template(&t("waba-2")).await.unwrap();
    assert_eq!(
        store.template("waba-1", "flash_sale", "de").await.unwrap(),
        Some(t("waba-1"))
    );
    assert_eq!(
        store.template("waba-1", "flash_sale", "en").await.unwrap(),
        None
    );
    assert_eq!(
        store
            .set_template_status("flash_sale", "de", "PAUSED")
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        store
            .set_template_status("flash_sale", "de", "PAUSED")
            .await
            .unwrap(),
        0
    );
    assert!(
        !store
            .template("waba-2", "flash_sale", "de")
            .await
            .unwrap()
            .unwrap()
            .is_sendable()
    );

    let id = campaign("bf");
    assert_eq!(store.campaign(&id).await.unwrap(), None);
    assert_eq!(
        store.ensure_campaign(&id).await.unwrap().state,
        CampaignState::Active
    );
    store
        .set_campaign_state(&id, CampaignState::Paused, Some("operator"))
        .await
        .unwrap();
    let c = store.ensure_campaign(&id).await.unwrap();
    assert_eq!(
        (c.state, c.reason.as_deref()),
        (CampaignState::Paused, Some("operator"))
    );
    // Cancelling a campaign before its first job arrives sticks.
    store
        .set_campaign_state(&campaign("early"), CampaignState::Cancelled, None)
        .await
        .unwrap();
    assert_eq!(
        store
            .ensure_campaign(&campaign("early"))
            .await
            .unwrap()
            .state,
        CampaignState::Cancelled
    );
}

async fn a_budget_admits_what_fits_and_refunds_give_it_back(store: Arc<dyn Store>) {
    let id = CampaignId::parse("budgeted").unwrap();
    // No budget: everything goes, the spend is still counted.
    store.ensure_campaign(&id).await.unwrap();
    let free = store.charge_budget(&id, &[100, 200]).await.unwrap();
    assert_eq!(free.admitted, [true, true]);
    assert_eq!(free.left, None);
    let usd = |micros| Budget {
        micros,
        currency: "USD".into(),
    };
    let c = store
        .set_campaign_budget(&id, Some(&usd(1_000)))
        .await
        .unwrap();
    assert_eq!(
        (c.budget.clone(), c.committed_micros),
        (Some(usd(1_000)), 300)
    );
    assert_eq!(c.budget_left(), Some(700));
    // In order, each while it fits: 400 yes, 400 no, 300 yes.
    let charge = store.charge_budget(&id, &[400, 400, 300]).await.unwrap();
    assert_eq!(charge.admitted, [true, false, true]);
    assert_eq!(charge.left, Some(usd(0)));
    assert_eq!(
        store.charge_budget(&id, &[1]).await.unwrap().admitted,
        [false]
    );
    // A failed send gives its cost back; never below zero.
    store.refund_budget(&id, 300).await.unwrap();
    assert_eq!(
        store.campaign(&id).await.unwrap().unwrap().budget_left(),
        Some(300)
    );
    store.refund_budget(&id, 10_000).await.unwrap();
    assert_eq!(
        store.campaign(&id).await.unwrap().unwrap().committed_micros,
        0
    );
    assert_eq!(store.budgeted_campaigns().await.unwrap().len(), 1);
    // Cleared: unlimited again, and no longer reported.
    store.set_campaign_budget(&id, None).await.unwrap();
    assert!(store.budgeted_campaigns().await.unwrap().is_empty());
    assert_eq!(
        store.charge_budget(&id, &[5_000]).await.unwrap().admitted,
        [true]
    );
    // A budget set before the campaign's first job creates the campaign.
    let early = CampaignId::parse("early").unwrap();
    let c = store
        .set_campaign_budget(&early, Some(&usd(5)))
        .await
        .unwrap();
    assert_eq!(c.state, CampaignState::Active);
}

async fn concurrent_charges_never_overspend(store: Arc<dyn Store>) {
    let id = CampaignId::parse("race").unwrap();
    store
        .set_campaign_budget(
            &id,
            Some(&Budget {
                micros: 10_000,
                currency: "USD".into(),
            }),
        )
        .await
        .unwrap();
    // Eight "workers" charge 30 × 100 each at once: exactly 100 sends fit.
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let store = Arc::clone(&store);
            let id = id.clone();
            tokio::spawn(async move {
                let mut n = 0;
                for _ in 0..3 {
                    let c = store.charge_budget(&id, &[100; 10]).await.unwrap();
                    n += c.admitted.iter().filter(|a| **a).count();
                }
                n
            })
        })
        .collect();
    let mut admitted = 0;
    for t in tasks {
        admitted += t.await.unwrap();
    }
    assert_eq!(admitted, 100);
    let c = store.campaign(&id).await.unwrap().unwrap();
    assert_eq!(c.committed_micros, 10_000);
}

async fn an_unknown_key_without_a_webhook_is_resent_once_when_later_statuses_came(
    store: Arc<dyn Store>,
) {
    store
        .upsert_sender(&Sender {
            id: SenderId::parse("106540352242922").unwrap(),
            account_id: "waba".into(),
            portfolio_id: "p".into(),
            display_number: "+49 30 1".into(),
            rate_per_sec: 80,
            tier_limit: None,
            status: "CONNECTED".into(),
            status_reason: None,
        })
        .await
        .unwrap();
    let (bf, job) = (campaign("bf"), JobId::parse("job-1").unwrap());
    let after = Duration::from_millis(300);
    // A dead worker left a and b mid-request: both become unknown.
    store
        .claim("dead", Duration::ZERO, &claims(&["a", "b", "c"]))
        .await
        .unwrap();
    store
        .mark_sending("dead", &keys(&["a", "b"]))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let got = store
        .claim("w2", MINUTE, &claims(&["a", "b", "c"]))
        .await
        .unwrap();
    assert_eq!(got[..2], [ClaimStatus::WasInFlight; 2]);
    let became_unknown = Utc::now();
    // Too early: nothing is reopened, both wait.
    let review = store
        .review_unknowns(&bf, &job, after, DAY, true)
        .await
        .unwrap();
    assert_eq!((review.reopened, review.waiting), (0, 2));
    let due = review.oldest_due.expect("a due time");
    assert!(due > became_unknown && due <= became_unknown + TimeDelta::milliseconds(400));
    tokio::time::sleep(Duration::from_millis(350)).await;
    // Old enough, but no status webhook of that sender since: still no evidence.
    let review = store
        .review_unknowns(&bf, &job, after, DAY, true)
        .await
        .unwrap();
    assert_eq!((review.reopened, review.waiting), (0, 2));
    // b was accepted after all (its webhook came); c, sent later, got its status too.
    store.mark_sending("w2", &keys(&["c"])).await.unwrap();
    store
        .record_outcomes(&[outcome("c", sent("wamid.c"))])
        .await
        .unwrap();
    store
        .apply_deliveries(&[
            delivery("wamid.b", Some("b"), "sent"),
            delivery("wamid.c", Some("c"), "delivered"),
        ])
        .await
        .unwrap();
    // A status timed well after a became unknown, none for a: a was never accepted.
    let review = store
        .review_unknowns(&bf, &job, after, DAY, true)
        .await
        .unwrap();
    assert_eq!((review.reopened, review.waiting), (1, 0));
    let a = store.ledger_entry(&key("a")).await.unwrap().unwrap();
    assert_eq!((a.state.as_str(), a.resent_unknown), ("pending", true));
    assert_eq!(state_of(&store, "b").await, "sent");
    // It is claimable and sent again; if that ends unknown too, it stays unknown for good.
    assert_eq!(
        store.claim("w3", MINUTE, &claims(&["a"])).await.unwrap(),
        vec![ClaimStatus::Mine]
    );
    store.mark_sending("w3", &keys(&["a"])).await.unwrap();
    store
        .record_outcomes(&[outcome("a", Outcome::Unknown)])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(350)).await;
    store
        .apply_deliveries(&[delivery("wamid.c", Some("c"), "read")])
        .await
        .unwrap();
    let review = store
        .review_unknowns(&bf, &job, after, DAY, true)
        .await
        .unwrap();
    assert_eq!((review.reopened, review.waiting), (0, 0));
    assert_eq!(state_of(&store, "a").await, "unknown");
    let unknown = store.unknown_by_campaign().await.unwrap();
    assert_eq!(unknown, vec![(bf, 1)]);
}

async fn a_cancelled_campaign_stays_cancelled(store: Arc<dyn Store>) {
    let id = campaign("spring");
    store
        .set_campaign_state(&id, CampaignState::Cancelled, Some("operator"))
        .await
        .unwrap();
    for later in [CampaignState::Paused, CampaignState::Active] {
        store
            .set_campaign_state(&id, later, Some("error 132001"))
            .await
            .unwrap();
        let c = store.campaign(&id).await.unwrap().unwrap();
        assert_eq!(c.state, CampaignState::Cancelled);
        assert_eq!(c.reason.as_deref(), Some("operator"));
    }
}

async fn a_job_has_one_live_deferral_token(store: Arc<dyn Store>) {
    assert_eq!(store.job_deferral("c/j").await.unwrap(), None);
    store.set_job_deferral("c/j", "t1").await.unwrap();
    store.set_job_deferral("c/other", "x").await.unwrap();
    assert_eq!(
        store.job_deferral("c/j").await.unwrap().as_deref(),
        Some("t1")
    );
    store.set_job_deferral("c/j", "t2").await.unwrap();
    assert_eq!(
        store.job_deferral("c/j").await.unwrap().as_deref(),
        Some("t2")
    );
    store.clear_job_deferral("c/j").await.unwrap();
    store.clear_job_deferral("c/j").await.unwrap();
    assert_eq!(store.job_deferral("c/j").await.unwrap(), None);
    assert_eq!(
        store.job_deferral("c/other").await.unwrap().as_deref(),
        Some("x")
    );
}

// --- timers --------------------------------------------------------------------------------

const SECOND: Duration = Duration::from_secs(1);

fn at(seconds: i64) -> chrono::DateTime<Utc> {
    chrono::DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap()
}

async fn scheduling_a_timer_twice_keeps_one(store: Arc<dyn Store>) {
    let payload = serde_json::json!({"campaign": "bf", "channel": "sms"});
    assert!(
        store
            .schedule_timer("sms_fallback", "k1", at(60), &payload)
            .await
            .unwrap()
    );
    assert!(
        !store
            .schedule_timer("sms_fallback", "k1", at(90), &serde_json::json!({}))
            .await
            .unwrap(),
        "the second schedule of a kind and key is a no-op"
    );
    // Another kind with the same key is another timer.
    assert!(
        store
            .schedule_timer("follow_up", "k1", at(60), &payload)
            .await
            .unwrap()
    );
    assert_eq!(
        store.pending_timers().await.unwrap(),
        vec![("follow_up".to_owned(), 1), ("sms_fallback".to_owned(), 1)]
    );
    let due = store
        .claim_due_timers("w1", MINUTE, at(100), 10)
        .await
        .unwrap();
    let fallback = due.iter().find(|t| t.kind == "sms_fallback").unwrap();
    assert_eq!(fallback.due, at(60), "the first schedule's time is kept");
    assert_eq!(fallback.payload, payload);
    assert_eq!(fallback.claims, 1);
}

async fn a_timer_is_not_claimed_before_it_is_due(store: Arc<dyn Store>) {
    store
        .schedule_timer("follow_up", "k1", at(60), &serde_json::json!(1))
        .await
        .unwrap();
    store
        .schedule_timer("follow_up", "k2", at(30), &serde_json::json!(2))
        .await
        .unwrap();
    let early = store
        .claim_due_timers("w1", MINUTE, at(59), 10)
        .await
        .unwrap();
    assert_eq!(
        early.iter().map(|t| t.key.as_str()).collect::<Vec<_>>(),
        ["k2"]
    );
    let later = store
        .claim_due_timers("w1", MINUTE, at(60), 10)
        .await
        .unwrap();
    assert_eq!(
        later.iter().map(|t| t.key.as_str()).collect::<Vec<_>>(),
        ["k1"]
    );
}

async fn a_leased_timer_goes_to_one_owner_until_its_lease_lapses(store: Arc<dyn Store>) {
    store
        .schedule_timer("sms_fallback", "k1", at(0), &serde_json::json!(null))
        .await
        .unwrap();
    let first = store
        .claim_due_timers("w1", MINUTE, at(10), 10)
        .await
        .unwrap();
    assert_eq!(first.len(), 1);
    assert!(
        store
            .claim_due_timers("w2", MINUTE, at(69), 10)
            .await
            .unwrap()
            .is_empty(),
        "a live lease is respected"
    );
    // w1's lease ended at 70: w2 takes the timer over.
    let taken = store
        .claim_due_timers("w2", MINUTE, at(70), 10)
        .await
        .unwrap();
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].claims, 2, "the takeover is visible");
    assert!(
        !store
            .complete_timer("sms_fallback", "k1", "w1")
            .await
            .unwrap(),
        "the stale owner cannot complete it"
    );
    assert!(
        store
            .complete_timer("sms_fallback", "k1", "w2")
            .await
            .unwrap()
    );
    assert!(
        !store
            .complete_timer("sms_fallback", "k1", "w2")
            .await
            .unwrap(),
        "a timer fires once"
    );
}

async fn a_completed_timer_is_never_claimed_again(store: Arc<dyn Store>) {
    store
        .schedule_timer("retention", "bf", at(0), &serde_json::json!({}))
        .await
        .unwrap();
    store
        .claim_due_timers("w1", SECOND, at(0), 10)
        .await
        .unwrap();
    assert!(store.complete_timer("retention", "bf", "w1").await.unwrap());
    for now in [at(0), at(10), at(100_000)] {
        assert!(
            store
                .claim_due_timers("w2", SECOND, now, 10)
                .await
                .unwrap()
                .is_empty()
        );
    }
    assert!(store.pending_timers().await.unwrap().is_empty());
    // Scheduling it again keeps the fired one: it never fires twice.
    assert!(
        !store
            .schedule_timer("retention", "bf", at(0), &serde_json::json!({}))
            .await
            .unwrap()
    );
    assert!(!store.cancel_timer("retention", "bf").await.unwrap());
}

async fn timers_are_completed_many_at_once_by_their_holder_only(store: Arc<dyn Store>) {
    // More timers than one statement takes; w1 holds 0..1100, w2 holds the rest.
    for i in 0..1200 {
        store
            .schedule_timer(
                "follow_up",
                &format!("t{i:04}"),
                at(i),
                &serde_json::json!(i),
            )
            .await
            .unwrap();
    }
    store
        .schedule_timer("sms_fallback", "t0000", at(0), &serde_json::json!(null))
        .await
        .unwrap();
    let w1 = store
        .claim_due_timers_of("follow_up", "w1", MINUTE, at(2000), 1100)
        .await
        .unwrap();
    let w2 = store
        .claim_due_timers_of("follow_up", "w2", MINUTE, at(2000), 1100)
        .await
        .unwrap();
    assert_eq!((w1.len(), w2.len()), (1100, 100));
    assert_eq!(
        store.complete_timers("follow_up", &[], "w1").await.unwrap(),
        0
    );

    // w1 completes all it holds, a key of w2's and a key nobody has: only its own fire.
    let mut asked: Vec<String> = w1.iter().map(|t| t.key.clone()).collect();
    asked.push("t1150".into());
    asked.push("nobody".into());
    assert_eq!(
        store
            .complete_timers("follow_up", &asked, "w1")
            .await
            .unwrap(),
        1100
    );
    assert_eq!(
        store
            .complete_timers("follow_up", &asked, "w1")
            .await
            .unwrap(),
        0,
        "a timer fires once"
    );
    assert_eq!(
        store.pending_timers().await.unwrap(),
        vec![
            ("follow_up".to_owned(), 100),
            ("sms_fallback".to_owned(), 1)
        ],
        "w2's timers and the other kind's are untouched"
    );
    let w2_keys: Vec<String> = w2.iter().map(|t| t.key.clone()).collect();
    assert_eq!(
        store
            .complete_timers("follow_up", &w2_keys, "w2")
            .await
            .unwrap(),
        100
    );
    // Fired ones are never claimed again.
    assert!(
        store
            .claim_due_timers_of("follow_up", "w3", MINUTE, at(100_000), 2000)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn a_released_timer_is_due_again_and_a_cancelled_one_is_gone(store: Arc<dyn Store>) {
    for k in ["k1", "k2"] {
        store
            .schedule_timer("follow_up", k, at(0), &serde_json::json!(k))
            .await
            .unwrap();
    }
    assert_eq!(
        store
            .claim_due_timers("w1", MINUTE, at(0), 10)
            .await
            .unwrap()
            .len(),
        2
    );
    assert!(
        !store
            .release_timer("follow_up", "k1", "w2", None)
            .await
            .unwrap(),
        "only the holder releases"
    );
    assert!(
        store
            .release_timer("follow_up", "k1", "w1", Some(at(30)))
            .await
            .unwrap()
    );
    assert!(
        store
            .claim_due_timers("w2", MINUTE, at(29), 10)
            .await
            .unwrap()
            .is_empty()
    );
    let again = store
        .claim_due_timers("w2", MINUTE, at(30), 10)
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!((again[0].key.as_str(), again[0].due), ("k1", at(30)));

    assert!(store.cancel_timer("follow_up", "k2").await.unwrap());
    assert!(!store.cancel_timer("follow_up", "k2").await.unwrap());
    assert!(
        !store.complete_timer("follow_up", "k2", "w1").await.unwrap(),
        "a cancelled timer does not fire"
    );
    // k1 is w2's until 90; k2 is gone for good.
    assert!(
        store
            .claim_due_timers("w3", MINUTE, at(89), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store.pending_timers().await.unwrap(),
        vec![("follow_up".to_owned(), 1)]
    );
}

async fn concurrent_claimers_take_each_due_timer_once(store: Arc<dyn Store>) {
    for i in 0..200 {
        store
            .schedule_timer(
                "follow_up",
                &format!("k{i:03}"),
                at(i % 7),
                &serde_json::json!(i),
            )
            .await
            .unwrap();
    }
    let tasks: Vec<_> = (0..8)
        .map(|w| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let owner = format!("w{w}");
                let mut mine = Vec::new();
                loop {
                    let got = store
                        .claim_due_timers(&owner, MINUTE, at(10), 7)
                        .await
                        .unwrap();
                    if got.is_empty() {
                        return mine;
                    }
                    for t in got {
                        assert!(store.complete_timer(&t.kind, &t.key, &owner).await.unwrap());
                        mine.push(t.key);
                    }
                }
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let distinct: HashSet<&String> = all.iter().collect();
    assert_eq!(all.len(), 200, "every timer claimed once");
    assert_eq!(distinct.len(), 200);
    assert!(store.pending_timers().await.unwrap().is_empty());
}

// --- recipient events (the CRM outbox) -----------------------------------------------------

fn event_at(k: &str, state: RecipientState, at: chrono::DateTime<Utc>) -> NewRecipientEvent {
    NewRecipientEvent::build(
        EventFacts {
            message_key: k,
            state,
            campaign: "bf",
            channel: ChannelKind::WhatsApp,
            recipient: "+4915112345678",
            code: (state == RecipientState::Failed).then_some("131026"),
            at,
        },
        false,
    )
}

fn event(k: &str, state: RecipientState) -> NewRecipientEvent {
    event_at(k, state, Utc::now())
}

fn pairs(list: &[(&str, &str)]) -> HashSet<(String, String)> {
    list.iter()
        .map(|(k, s)| ((*k).to_owned(), (*s).to_owned()))
        .collect()
}

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

async fn outcomes_write_their_events_once_and_only_for_keys_they_record(store: Arc<dyn Store>) {
    use RecipientState::*;
    store
        .claim("w1", MINUTE, &claims(&["e1", "e2", "e3"]))
        .await
        .unwrap();
    store
        .record_outcomes_with_events(
            &[
                outcome("e1", sent("w-e1")),
                outcome("e2", Outcome::Failed { code: 131_026 }),
                outcome("e9", sent("w-e9")),
            ],
            &[event("e1", Sent), event("e2", Failed), event("e9", Sent)],
        )
        .await
        .unwrap();
    assert_eq!(state_of(&store, "e1").await, "sent");
    let keys = strings(&["e1", "e2", "e3", "e9"]);
    assert_eq!(
        store.recipient_event_states(&keys).await.unwrap(),
        pairs(&[("e1", "sent"), ("e2", "failed")]),
        "no row for a key the call did not record (e9 has no ledger row)"
    );
    // A re-run: e1 is final, its outcome is not written again, nor is an event.
    store
        .record_outcomes_with_events(
            &[outcome("e1", Outcome::Failed { code: 1 })],
            &[event("e1", Failed)],
        )
        .await
        .unwrap();
    assert_eq!(
        store.recipient_event_states(&keys).await.unwrap(),
        pairs(&[("e1", "sent"), ("e2", "failed")])
    );
    let c = store.recipient_event_counts().await.unwrap();
    assert_eq!((c.pending, c.published, c.dead), (2, 0, 0));
    assert!(c.oldest_pending.is_some());
    let (pending, oldest) = store.recipient_event_backlog().await.unwrap();
    assert_eq!((pending, oldest), (2, c.oldest_pending));
}

async fn status_webhooks_report_each_state_once_in_order(store: Arc<dyn Store>) {
    let events = EventOptions { numbers: true };
    store
        .claim("w1", MINUTE, &claims(&["s1", "s2"]))
        .await
        .unwrap();
    store
        .record_outcomes_with_events(
            &[outcome("s1", sent("w-s1"))],
            &[event("s1", RecipientState::Sent)],
        )
        .await
        .unwrap();
    // s2: the webhook is faster than the record stage.
    store.mark_sending("w1", &keys(&["s2"])).await.unwrap();
    let now = Utc::now();
    // Meta posts `read` before `delivered`: both are reported, delivered first.
    let changed = store
        .apply_deliveries_with_events(
            &[
                delivery("w-s1", None, "read"),
                delivery("w-s2", Some("s2"), "delivered"),
            ],
            events,
            now,
        )
        .await
        .unwrap();
    assert_eq!(changed, 2);
    for replay in ["delivered", "read"] {
        store
            .apply_deliveries_with_events(&[delivery("w-s1", None, replay)], events, now)
            .await
            .unwrap();
    }
    store
        .apply_deliveries_with_events(&[delivery("w-s2", Some("s2"), "delivered")], events, now)
        .await
        .unwrap();
    assert_eq!(
        store
            .recipient_event_states(&strings(&["s1", "s2"]))
            .await
            .unwrap(),
        pairs(&[
            ("s1", "sent"),
            ("s1", "delivered"),
            ("s1", "read"),
            ("s2", "sent"),
            ("s2", "delivered"),
        ])
    );
    let claimed = store
        .claim_recipient_events("r1", MINUTE, Utc::now() + TimeDelta::seconds(1), 100)
        .await
        .unwrap();
    let s1: Vec<&str> = claimed
        .iter()
        .filter(|e| e.message_key == "s1")
        .map(|e| e.state.as_str())
        .collect();
    assert_eq!(s1, ["sent", "delivered", "read"]);
    let body: serde_json::Value = serde_json::from_str(&claimed[1].payload).unwrap();
    assert_eq!(body["to"], "+4915112345678", "numbers were asked for");
    assert!(claimed.windows(2).all(|w| w[0].id < w[1].id));
}

async fn the_outbox_goes_out_in_order_per_key_across_claimers_and_failures(store: Arc<dyn Store>) {
    use RecipientState::*;
    let t0 = Utc::now();
    let n = store
        .record_recipient_events(&[
            event_at("o1", Sent, t0),
            event_at("o2", Sent, t0),
            event_at("o1", Delivered, t0),
            event_at("o1", Sent, t0),
        ])
        .await
        .unwrap();
    assert_eq!(n, 3, "a (key, state) is written once");
    let a = store
        .claim_recipient_events("A", MINUTE, t0, 1)
        .await
        .unwrap();
    assert_eq!((a[0].message_key.as_str(), a[0].state), ("o1", Sent));
    // While A holds o1's first event, o1's later one waits; o2's goes.
    let b = store
        .claim_recipient_events("B", MINUTE, t0, 10)
        .await
        .unwrap();
    assert_eq!(b.len(), 1);
    assert_eq!(b[0].message_key, "o2");
    assert_eq!(
        store
            .complete_recipient_events("B", &[b[0].id], t0)
            .await
            .unwrap(),
        1
    );
    // A's sink refused: o1 backs off a minute, and its later event with it.
    let dead = store
        .fail_recipient_events(
            "A",
            &[a[0].id],
            "HTTP 503",
            t0 + TimeDelta::minutes(1),
            t0 - TimeDelta::days(1),
            t0,
        )
        .await
        .unwrap();
    assert_eq!(dead, 0);
    assert!(
        store
            .claim_recipient_events("B", MINUTE, t0, 10)
            .await
            .unwrap()
            .is_empty()
    );
    // Another owner cannot mark what it does not hold.
    assert_eq!(
        store
            .complete_recipient_events("B", &[a[0].id], t0)
            .await
            .unwrap(),
        0
    );
    let later = t0 + TimeDelta::minutes(2);
    let c = store
        .claim_recipient_events("C", MINUTE, later, 10)
        .await
        .unwrap();
    let order: Vec<(&str, RecipientState, u32)> = c
        .iter()
        .map(|e| (e.message_key.as_str(), e.state, e.attempts))
        .collect();
    assert_eq!(order, [("o1", Sent, 1), ("o1", Delivered, 0)]);
    let ids: Vec<i64> = c.iter().map(|e| e.id).collect();
    assert_eq!(
        store
            .complete_recipient_events("C", &ids, later)
            .await
            .unwrap(),
        2
    );
    let counts = store.recipient_event_counts().await.unwrap();
    assert_eq!((counts.pending, counts.published, counts.dead), (0, 3, 0));
    assert!(
        store
            .claim_recipient_events("D", MINUTE, later, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn events_no_sink_took_for_a_day_go_dead_once(store: Arc<dyn Store>) {
    let t0 = Utc::now();
    store
        .record_recipient_events(&[event_at("d1", RecipientState::Sent, t0)])
        .await
        .unwrap();
    let day_later = t0 + TimeDelta::hours(25);
    let claimed = store
        .claim_recipient_events("A", MINUTE, day_later, 10)
        .await
        .unwrap();
    let dead = store
        .fail_recipient_events(
            "A",
            &[claimed[0].id],
            "connection refused",
            day_later + TimeDelta::minutes(5),
            day_later - TimeDelta::hours(24),
            day_later,
        )
        .await
        .unwrap();
    assert_eq!(dead, 1);
    let c = store.recipient_event_counts().await.unwrap();
    assert_eq!((c.pending, c.dead), (0, 1));
    // The fact recorded again (a redelivered webhook) adds nothing: the row stays as a marker.
    assert_eq!(
        store
            .record_recipient_events(&[event_at("d1", RecipientState::Sent, day_later)])
            .await
            .unwrap(),
        0
    );
    assert!(
        store
            .claim_recipient_events("A", MINUTE, day_later + TimeDelta::hours(1), 10)
            .await
            .unwrap()
            .is_empty()
    );
    // Published and dead rows leave with the retention class `events`; a waiting one never.
    store
        .record_recipient_events(&[event_at("d2", RecipientState::Sent, t0)])
        .await
        .unwrap();
    let purged = store
        .purge(
            &RetentionPolicy::default(),
            day_later + TimeDelta::days(40),
            false,
        )
        .await
        .unwrap();
    assert_eq!(
        purged.get(DataClass::Events),
        2,
        "d1's marker row and its dead copy"
    );
    let c = store.recipient_event_counts().await.unwrap();
    assert_eq!((c.pending, c.published, c.dead), (1, 0, 0));
}

async fn erasure_removes_the_events_of_a_number(store: Arc<dyn Store>) {
    support::configure_hash_key();
    let p = PhoneNumber::from_trusted("+4915112345678".to_owned());
    store.claim("w1", MINUTE, &claims(&["x1"])).await.unwrap();
    store
        .record_outcomes_with_events(
            &[outcome("x1", sent("w-x1"))],
            &[event("x1", RecipientState::Sent)],
        )
        .await
        .unwrap();
    let report = store.erase_contact(&p).await.unwrap();
    assert!(
        report
            .iter()
            .any(|(what, n)| *what == "recipient events" && *n == 1),
        "{report:?}"
    );
    assert!(
        store
            .recipient_event_states(&strings(&["x1"]))
            .await
            .unwrap()
            .is_empty()
    );
}

async fn conversions_and_opt_outs_report_once_per_key(store: Arc<dyn Store>) {
    let events = EventOptions::default();
    let p = PhoneNumber::from_trusted("+4915112345678".to_owned());
    store.claim("w1", MINUTE, &claims(&["c1"])).await.unwrap();
    store
        .record_outcomes(&[outcome("c1", sent("w-c1"))])
        .await
        .unwrap();
    let order = |id: &str, to: Option<PhoneNumber>, k: Option<&str>| Conversion {
        event_id: id.into(),
        campaign: campaign("bf"),
        to,
        key: k.map(key),
        event: "order".into(),
        at: Utc::now(),
        value: None,
    };
    let tally = store
        .record_conversions_with_events(
            &[
                order("o-1", Some(p.clone()), None),
                order("o-2", None, Some("c1")),
                order("o-3", Some(phone(99)), None),
            ],
            events,
            Utc::now(),
        )
        .await
        .unwrap();
    assert_eq!((tally.stored, tally.unattributed), (3, 1));
    // The same orders again, and a number herald never messaged.
    store
        .record_conversions_with_events(&[order("o-1", Some(p.clone()), None)], events, Utc::now())
        .await
        .unwrap();
    assert_eq!(
        store
            .record_opt_out_events(
                &[p.clone(), phone(98)],
                ChannelKind::WhatsApp,
                events,
                Utc::now()
            )
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store
            .record_opt_out_events(&[p], ChannelKind::WhatsApp, events, Utc::now())
            .await
            .unwrap(),
        0,
        "once per key"
    );
    assert_eq!(
        store
            .recipient_event_states(&strings(&["c1"]))
            .await
            .unwrap(),
        pairs(&[("c1", "converted"), ("c1", "opted_out")])
    );
    let claimed = store
        .claim_recipient_events("r", MINUTE, Utc::now() + TimeDelta::seconds(1), 10)
        .await
        .unwrap();
    let body: serde_json::Value = serde_json::from_str(&claimed[0].payload).unwrap();
    assert_eq!(body["event"], "recipient.converted");
    assert_eq!(body["key"], "c1");
    assert!(body.get("to").is_none());
}

async fn sms_receipts_report_their_fallbacks_delivery_once(store: Arc<dyn Store>) {
    let events = EventOptions::default();
    let mut sms = claim_in("bf", "r1#sms");
    sms.channel = ChannelKind::Sms;
    store.claim("w1", MINUTE, &[sms]).await.unwrap();
    store
        .record_outcomes_with_events(
            &[outcome("r1#sms", sent("smsc-1"))],
            &[event("r1#sms", RecipientState::Fallback)],
        )
        .await
        .unwrap();
    let receipt = |status: &'static str| herald::domain::SmsReceiptUpdate {
        message_ids: vec!["smsc-1".into()],
        status,
        error: (status != "delivered").then(|| "001".into()),
    };
    let changed = store
        .apply_sms_receipts_with_events(&[receipt("delivered")], events, Utc::now())
        .await
        .unwrap();
    assert_eq!(changed, [Some(true)]);
    // A duplicate receipt and an unknown message change nothing and add nothing.
    store
        .apply_sms_receipts_with_events(&[receipt("delivered")], events, Utc::now())
        .await
        .unwrap();
    assert_eq!(
        store
            .recipient_event_states(&strings(&["r1#sms"]))
            .await
            .unwrap(),
        pairs(&[("r1#sms", "fallback"), ("r1#sms", "delivered")])
    );
    let claimed = store
        .claim_recipient_events("r", MINUTE, Utc::now() + TimeDelta::seconds(1), 10)
        .await
        .unwrap();
    let body: serde_json::Value = serde_json::from_str(&claimed[1].payload).unwrap();
    assert_eq!(
        (
            &body["key"],
            &body["message"],
            &body["channel"],
            &body["state"]
        ),
        (
            &serde_json::json!("r1"),
            &serde_json::json!("fallback"),
            &serde_json::json!("sms"),
            &serde_json::json!("delivered")
        )
    );
}

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $case() {
                    let (store, _dir) = crate::support::sqlite_store().await;
                    super::$case(store).await;
                }
            )*
        }

        mod postgres {
            $(
                #[tokio::test]
                async fn $case() {
                    let Some(url) = crate::support::postgres_url().await else { return };
                    let store = herald::store::open(&url).await.expect("open the Postgres store");
                    super::$case(store).await;
                    crate::support::drop_postgres_database(&url).await;
                }
            )*
        }
    };
}

conformance!(
    outcomes_write_their_events_once_and_only_for_keys_they_record,
    status_webhooks_report_each_state_once_in_order,
    the_outbox_goes_out_in_order_per_key_across_claimers_and_failures,
    events_no_sink_took_for_a_day_go_dead_once,
    erasure_removes_the_events_of_a_number,
    conversions_and_opt_outs_report_once_per_key,
    sms_receipts_report_their_fallbacks_delivery_once,
    new_keys_are_claimed_pending_for_their_owner,
    every_key_records_the_channel_that_carries_it,
    a_key_with_an_outcome_is_done_for_everyone,
    the_same_owner_may_claim_again,
    a_live_lease_of_another_owner_is_respected,
    an_expired_pending_key_is_taken_over,
    an_expired_sending_key_becomes_unknown_and_is_never_resent,
    the_first_outcome_wins,
    sending_counts_attempts,
    released_keys_are_claimable_at_once,
    a_renewed_lease_keeps_keys_held,
    the_ledger_pages_by_key_and_counts_by_state,
    ledger_entries_reads_the_rows_of_many_keys_at_once,
    consent_is_granted_missing_revoked_regranted_or_suppressed,
    consent_on_one_channel_allows_no_other,
    opt_outs_hold_for_their_channel_or_for_every_channel,
    an_export_shows_the_channel_of_each_consent_and_opt_out,
    the_tier_admits_new_numbers_up_to_the_limit,
    the_tier_window_rolls,
    the_kept_tier_count_grants_what_a_full_count_allows,
    a_renewal_extends_only_leases_running_out,
    deliveries_apply_monotonically,
    a_failed_delivery_is_final,
    an_unknown_key_is_resolved_by_its_webhook,
    a_contact_is_exported_then_erased,
    senders_templates_and_campaigns_round_trip,
    a_budget_admits_what_fits_and_refunds_give_it_back,
    concurrent_charges_never_overspend,
    a_job_has_one_live_deferral_token,
    a_cancelled_campaign_stays_cancelled,
    an_unknown_key_without_a_webhook_is_resent_once_when_later_statuses_came,
    scheduling_a_timer_twice_keeps_one,
    a_timer_is_not_claimed_before_it_is_due,
    a_leased_timer_goes_to_one_owner_until_its_lease_lapses,
    a_completed_timer_is_never_claimed_again,
    timers_are_completed_many_at_once_by_their_holder_only,
    a_released_timer_is_due_again_and_a_cancelled_one_is_gone,
    concurrent_claimers_take_each_due_timer_once,
    inbound_messages_are_stored_once_and_windows_only_grow,
    optin_keywords_are_added_replaced_listed_and_removed,
    the_purge_deletes_rows_past_their_period_and_keeps_newer_ones_and_those_in_use,
    purging_a_campaigns_ledger_keeps_its_counts_funnel_and_priced_sends,
);

// --- the conversation side --------------------------------------------------------------------

fn inbound(wamid: &str, who: u32, sender: &str, at_secs: i64, referral: bool) -> InboundMessage {
    InboundMessage {
        wamid: wamid.into(),
        from: phone(who),
        sender: SenderId::parse(sender).unwrap(),
        at: at(at_secs),
        kind: "text",
        referral,
        proof_text: None,
    }
}

async fn inbound_messages_are_stored_once_and_windows_only_grow(store: Arc<dyn Store>) {
    support::configure_hash_key();
    let s = SenderId::parse("106540352242922").unwrap();
    let batch = [
        inbound("wamid.a", 1, "106540352242922", 0, false),
        inbound("wamid.b", 1, "106540352242922", 3600, false),
        // The same message twice in one POST.
        inbound("wamid.b", 1, "106540352242922", 3600, false),
        inbound("wamid.c", 2, "106540352242922", 0, true),
        inbound("wamid.d", 1, "999", 0, false),
    ];
    let new = store.record_inbound(&batch, at(7200)).await.unwrap();
    assert_eq!(new, [true, true, false, true, true]);
    // Meta redelivers; and an old message arrives late.
    let again = store
        .record_inbound(
            &[
                inbound("wamid.a", 1, "106540352242922", 0, false),
                inbound("wamid.old", 1, "106540352242922", -86_400, false),
            ],
            at(7300),
        )
        .await
        .unwrap();
    assert_eq!(again, [false, true]);
    // A POST bigger than one statement: a message id repeated across statements is new once.
    let mut big: Vec<InboundMessage> = (0..150)
        .map(|i| {
            inbound(
                &format!("wamid.big{i}"),
                3 + (i % 7),
                "106540352242922",
                60,
                false,
            )
        })
        .collect();
    big.push(inbound("wamid.big5", 8, "106540352242922", 60, false));
    let flags = store.record_inbound(&big, at(7400)).await.unwrap();
    assert_eq!(flags.iter().filter(|n| **n).count(), 150);
    assert!(!flags[150], "the repeat in a later statement");
    let windows = store
        .service_windows(&s, &[phone(1), phone(2), phone(20)])
        .await
        .unwrap();
    let hour = chrono::Duration::hours(1);
    let one = windows[0].unwrap();
    assert_eq!(
        one.open_until,
        at(3600) + hour * 24,
        "the later message counts"
    );
    assert_eq!(one.free_until, None);
    let two = windows[1].unwrap();
    assert_eq!(two.open_until, at(0) + hour * 24);
    assert_eq!(two.free_until, Some(at(0) + hour * 72));
    assert_eq!(windows[2], None);
    // A later plain message keeps the free entry point.
    store
        .record_inbound(
            &[inbound("wamid.e", 2, "106540352242922", 7200, false)],
            at(7200),
        )
        .await
        .unwrap();
    let two = store.service_windows(&s, &[phone(2)]).await.unwrap()[0].unwrap();
    assert_eq!(two.open_until, at(7200) + hour * 24);
    assert_eq!(two.free_until, Some(at(0) + hour * 72));
    // Meta said the window is closed (131047): it ends now, and only a new message reopens.
    assert!(
        store
            .close_service_window(&s, &phone(1), at(9000))
            .await
            .unwrap()
    );
    assert!(
        !store
            .close_service_window(&s, &phone(1), at(9000))
            .await
            .unwrap()
    );
    let one = store.service_windows(&s, &[phone(1)]).await.unwrap()[0].unwrap();
    assert_eq!(one.open_until, at(9000));
    // Export and erasure reach the messages and windows.
    let exported = store.export_contact(&phone(1)).await.unwrap();
    assert_eq!(exported["inbound_messages"].as_array().unwrap().len(), 4);
    assert_eq!(exported["service_windows"].as_array().unwrap().len(), 2);
    store.erase_contact(&phone(1)).await.unwrap();
    let exported = store.export_contact(&phone(1)).await.unwrap();
    assert_eq!(exported["inbound_messages"], serde_json::json!([]));
    assert_eq!(exported["service_windows"], serde_json::json!([]));
    assert_eq!(
        store.service_windows(&s, &[phone(1)]).await.unwrap(),
        [None]
    );
}

async fn optin_keywords_are_added_replaced_listed_and_removed(store: Arc<dyn Store>) {
    let keyword = |word: &str, sender: &str, source: &str| OptInKeyword {
        keyword: word.into(),
        sender: SenderId::parse(sender).unwrap(),
        category: Category::Marketing,
        source: source.into(),
        business: "ACME".into(),
        confirmation: "ACME: welcome. Reply STOP to unsubscribe.".into(),
        created_at: at(0),
    };
    assert!(
        store
            .upsert_keyword(&keyword("SNEAKERS", "2", "poster"))
            .await
            .unwrap()
    );
    assert!(
        store
            .upsert_keyword(&keyword("SNEAKERS", "1", "poster"))
            .await
            .unwrap()
    );
    assert!(
        !store
            .upsert_keyword(&keyword("SNEAKERS", "1", "website"))
            .await
            .unwrap()
    );
    let all = store.keywords().await.unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].sender.as_str(), "1");
    assert_eq!(all[0].source, "website", "replaced");
    assert_eq!(all[0].created_at, at(0));
    assert!(
        store
            .remove_keyword(&SenderId::parse("1").unwrap(), "SNEAKERS")
            .await
            .unwrap()
    );
    assert!(
        !store
            .remove_keyword(&SenderId::parse("1").unwrap(), "SNEAKERS")
            .await
            .unwrap()
    );
    assert_eq!(store.keywords().await.unwrap().len(), 1);
}

// --- retention ---------------------------------------------------------------------------------

/// Herald's clock `days` from now: the purge runs on it, while the rows were written on the real
/// clock, so they are `days` old to it.
fn days_later(days: i64) -> chrono::DateTime<Utc> {
    Utc::now() + TimeDelta::days(days)
}

fn days_ago(days: i64) -> TimeDelta {
    TimeDelta::days(days)
}

async fn marketing(store: &Arc<dyn Store>, p: &PhoneNumber) -> ConsentState {
    store
        .consent_states(
            Category::Marketing,
            ChannelKind::WhatsApp,
            std::slice::from_ref(p),
        )
        .await
        .unwrap()[0]
}

async fn the_purge_deletes_rows_past_their_period_and_keeps_newer_ones_and_those_in_use(
    store: Arc<dyn Store>,
) {
    let policy = RetentionPolicy::default();
    // Ledger: two final keys, one being sent, one waiting.
    store
        .claim(
            "w1",
            MINUTE,
            &claims(&["done", "skip", "flying", "waiting"]),
        )
        .await
        .unwrap();
    store.mark_sending("w1", &keys(&["flying"])).await.unwrap();
    store
        .record_outcomes(&[
            outcome("done", sent("wamid.done")),
            outcome(
                "skip",
                Outcome::Skipped {
                    reason: SkipReason::NoConsent,
                },
            ),
        ])
        .await
        .unwrap();
    // Timers: one fired, one claimed and not fired, one never claimed.
    let payload = serde_json::json!({});
    for k in ["fired", "claimed", "scheduled"] {
        store
            .schedule_timer("follow_up", k, at(0), &payload)
            .await
            .unwrap();
    }
    let claimed = store
        .claim_due_timers("w1", MINUTE, at(0), 2)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 2);
    assert!(
        store
            .complete_timer("follow_up", &claimed[0].key, "w1")
            .await
            .unwrap()
    );
    // Inbound: one message (and window) from now, one from a year on.
    let s = SenderId::parse("106540352242922").unwrap();
    let now = Utc::now();
    let year = now + TimeDelta::days(380);
    let mut old = inbound("wamid.old", 1, "106540352242922", 0, false);
    old.at = now;
    store.record_inbound(&[old], now).await.unwrap();
    let mut new = inbound("wamid.new", 2, "106540352242922", 0, false);
    new.at = year;
    store.record_inbound(&[new], year).await.unwrap();
    // Tier, a conversion and a suppression, all written now.
    store
        .reserve_tier("pf", None, DAY, &[phone(1)])
        .await
        .unwrap();
    store
        .record_conversions(&[Conversion {
            event_id: "order-1".into(),
            campaign: campaign("bf"),
            to: Some(phone(9)),
            key: None,
            event: "order".into(),
            at: now,
            value: None,
        }])
        .await
        .unwrap();
    store.suppress(&phone(6), "complaint").await.unwrap();
    // Consents, 401 days on (cutoff: 1096 days before that). phone 1: revoked 800 days ago,
    // gone with its revocation; 2: never revoked, kept; 3: revoked 100 days ago, kept; 4: a
    // revocation without a consent, gone; 5: re-consented after an old opt-out of everything:
    // the consent is kept, the old revocation goes.
    store
        .grant_consents(&[
            consent(&phone(1), Category::Marketing, days_ago(900)),
            consent(&phone(2), Category::Marketing, days_ago(900)),
            consent(&phone(3), Category::Marketing, days_ago(900)),
            consent(&phone(5), Category::Marketing, days_ago(700)),
        ])
        .await
        .unwrap();
    for (i, ago, category, channel) in [
        (
            1,
            800,
            Some(Category::Marketing),
            Some(ChannelKind::WhatsApp),
        ),
        (3, 100, Some(Category::Marketing), None),
        (4, 800, None, None),
        (5, 800, None, None),
    ] {
        store
            .revoke_consent(&phone(i), category, channel, now - days_ago(ago), "STOP")
            .await
            .unwrap();
    }

    let later = days_later(401);
    let expected = [
        (DataClass::Ledger, 2),
        (DataClass::Inbound, 2),
        (DataClass::Conversions, 1),
        // phone 1's consent and revocation, and the revocations of 4 and 5.
        (DataClass::Consents, 4),
        (DataClass::Tier, 1),
        (DataClass::Timers, 1),
        (DataClass::Suppressions, 0),
    ];
    let dry = store.purge(&policy, later, true).await.unwrap();
    for (class, n) in expected {
        assert_eq!(dry.get(class), n, "dry run, {class}");
    }
    // A dry run deletes nothing.
    assert_eq!(
        store
            .ledger_entries(&keys(&["done", "skip"]))
            .await
            .unwrap()
            .len(),
        2
    );
    assert_eq!(marketing(&store, &phone(1)).await, ConsentState::OptedOut);

    let done = store.purge(&policy, later, false).await.unwrap();
    assert_eq!(done, dry, "the purge deletes what the dry run counted");
    let left: HashSet<String> = store
        .ledger_entries(&keys(&["done", "skip", "flying", "waiting"]))
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.key.as_str().to_owned())
        .collect();
    assert_eq!(
        left,
        HashSet::from(["flying".to_owned(), "waiting".to_owned()]),
        "keys in flight are never purged"
    );
    assert_eq!(
        store.pending_timers().await.unwrap(),
        [("follow_up".to_owned(), 2)],
        "unfired timers stay"
    );
    let windows = store
        .service_windows(&s, &[phone(1), phone(2)])
        .await
        .unwrap();
    assert!(windows[0].is_none() && windows[1].is_some(), "{windows:?}");
    assert_eq!(
        store.export_contact(&phone(2)).await.unwrap()["inbound_messages"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(store.tier_usage("pf", DAY * 1000).await.unwrap(), 0);
    let summary = store.conversion_summary(&campaign("bf")).await.unwrap();
    assert!(summary.iter().all(|s| s.conversions == 0), "{summary:?}");
    // The suppression stays, and a purged revoked consent never comes back to life.
    assert_eq!(marketing(&store, &phone(6)).await, ConsentState::OptedOut);
    assert_eq!(marketing(&store, &phone(1)).await, ConsentState::Missing);
    assert_eq!(marketing(&store, &phone(2)).await, ConsentState::Granted);
    assert_eq!(marketing(&store, &phone(3)).await, ConsentState::OptedOut);
    assert_eq!(marketing(&store, &phone(5)).await, ConsentState::Granted);
    let three = store.export_contact(&phone(3)).await.unwrap();
    assert_eq!(three["consents"].as_array().unwrap().len(), 1, "proof kept");
    assert_eq!(three["revocations"].as_array().unwrap().len(), 1);
    for i in [1, 4, 5] {
        let e = store.export_contact(&phone(i)).await.unwrap();
        assert_eq!(e["revocations"], serde_json::json!([]), "phone {i}");
    }

    // Nothing is left to purge, and rows younger than their period were never touched.
    let again = store.purge(&policy, later, false).await.unwrap();
    assert_eq!(again.total(), 0, "{again:?}");
    let fresh = store.purge(&policy, Utc::now(), false).await.unwrap();
    assert_eq!(fresh.total(), 0, "{fresh:?}");
}

async fn purging_a_campaigns_ledger_keeps_its_counts_funnel_and_priced_sends(
    store: Arc<dyn Store>,
) {
    let mut sms = claim_in("bf", "c#sms");
    sms.channel = ChannelKind::Sms;
    let mut all = claims(&["a", "b", "c", "d", "e", "a#follow-up", "open"]);
    all.push(sms);
    store.claim("w1", MINUTE, &all).await.unwrap();
    store
        .record_outcomes(&[
            outcome("a", sent("wamid.a")),
            outcome("b", sent("wamid.b")),
            outcome("c", Outcome::Failed { code: 131_026 }),
            outcome("c#sms", sent("sms.c")),
            outcome(
                "d",
                Outcome::Skipped {
                    reason: SkipReason::OptedOut,
                },
            ),
            outcome("e", Outcome::Unknown),
            outcome("a#follow-up", sent("wamid.af")),
        ])
        .await
        .unwrap();
    store
        .apply_deliveries(&[
            delivery("wamid.a", Some("a"), "read"),
            delivery("wamid.b", Some("b"), "delivered"),
        ])
        .await
        .unwrap();
    // Another campaign's keys are not its totals.
    store
        .claim("w1", MINUTE, &[claim_in("other", "x")])
        .await
        .unwrap();
    store
        .record_outcomes(&[outcome("x", sent("wamid.x"))])
        .await
        .unwrap();
    let bf = campaign("bf");
    let counts = store.campaign_counts(&bf).await.unwrap();
    let funnel = store.campaign_funnel(&bf).await.unwrap();
    assert_eq!(counts.total(), 8);
    assert!(store.purged_sent(&bf).await.unwrap().is_empty());

    let purged = store
        .purge(&RetentionPolicy::default(), days_later(401), false)
        .await
        .unwrap();
    assert_eq!(purged.get(DataClass::Ledger), 8, "every final key of both");
    let page = store.ledger_page(&bf, None, 100).await.unwrap();
    assert_eq!(
        page.iter().map(|r| r.key.as_str()).collect::<Vec<_>>(),
        ["open"],
        "only the pending key is left"
    );
    assert_eq!(store.campaign_counts(&bf).await.unwrap(), counts);
    assert_eq!(store.campaign_funnel(&bf).await.unwrap(), funnel);
    assert_eq!(
        store
            .campaign_counts(&campaign("other"))
            .await
            .unwrap()
            .total(),
        1
    );
    // What pricing needs survives: channel, category and the number's first digits.
    let priced = store.purged_sent(&bf).await.unwrap();
    let n = |channel| {
        priced
            .iter()
            .filter(|p| p.channel == channel && p.prefix == "4915")
            .map(|p| p.n)
            .sum::<u64>()
    };
    assert_eq!((n(ChannelKind::WhatsApp), n(ChannelKind::Sms)), (3, 1));
    assert!(priced.iter().all(|p| p.category == Category::Marketing));

    // The last key's outcome after the purge adds to the totals, and a second purge of it
    // too: the counts go on growing from where they were.
    store
        .record_outcomes(&[outcome("open", sent("wamid.open"))])
        .await
        .unwrap();
    store
        .purge(&RetentionPolicy::default(), days_later(401), false)
        .await
        .unwrap();
    let after = store.campaign_counts(&bf).await.unwrap();
    assert_eq!((after.total(), after.state("sent")), (8, 5));
    assert!(store.ledger_page(&bf, None, 100).await.unwrap().is_empty());
    // Purged keys stay out of the report but a campaign's counts never go down.
    assert_eq!(after.state("skipped"), counts.state("skipped"));
}

// --- both backends, reopened -----------------------------------------------------------------

/// A timer scheduled, and one claimed, before the store is closed are still there when the
/// same database is opened again (a restart): the claimed one once its lease lapses.
async fn timers_survive_reopening_the_store(url: String) {
    let store = herald::store::open(&url).await.unwrap();
    store
        .schedule_timer("sms_fallback", "k1", at(0), &serde_json::json!({"n": 1}))
        .await
        .unwrap();
    store
        .schedule_timer("sms_fallback", "k2", at(0), &serde_json::json!({"n": 2}))
        .await
        .unwrap();
    let claimed = store
        .claim_due_timers("dead", MINUTE, at(0), 1)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    drop(store);

    let store = herald::store::open(&url).await.unwrap();
    assert_eq!(
        store.pending_timers().await.unwrap(),
        vec![("sms_fallback".to_owned(), 2)]
    );
    let unclaimed = store
        .claim_due_timers("next", MINUTE, at(1), 10)
        .await
        .unwrap();
    assert_eq!(unclaimed.len(), 1);
    assert_ne!(unclaimed[0].key, claimed[0].key);
    let taken_over = store
        .claim_due_timers("next", MINUTE, at(60), 10)
        .await
        .unwrap();
    assert_eq!(taken_over.len(), 1);
    assert_eq!(taken_over[0].key, claimed[0].key);
    assert_eq!(taken_over[0].payload, claimed[0].payload);
}

/// The migrations of `dialect` numbered below `version`: a herald from before that one.
async fn migrations_before(dialect: &str, version: i64) -> sqlx::migrate::Migrator {
    let all = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(dialect);
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(all).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        let number: i64 = name.split('_').next().unwrap().parse().unwrap();
        if number < version {
            std::fs::copy(&path, dir.path().join(name)).unwrap();
        }
    }
    // Read into memory here; the copies may go.
    sqlx::migrate::Migrator::new(dir.path()).await.unwrap()
}

/// Consents and an opt-out written before consent had a channel: the grants become WhatsApp
/// grants (the only channel then), and the opt-out, of unknown scope, holds for every channel.
async fn old_consents_become_whatsapp_and_old_opt_outs_hold_for_every_channel(url: String) {
    let (granted, stopped) = (phone(1), phone(2));
    let hour = TimeDelta::hours(1);
    let (granted_at, revoked_at) = (Utc::now() - hour * 3, Utc::now() - hour * 2);
    let grant = "INSERT INTO consents (phone, category, granted_at, source, proof)
                 VALUES ($1, 'marketing', $2, 'checkout', 'box v3')";
    let revoke = "INSERT INTO revocations (phone, category, revoked_at, source)
                  VALUES ($1, NULL, $2, 'inbound:STOP')";
    if url.starts_with("sqlite:") {
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        migrations_before("sqlite", 7)
            .await
            .run(&pool)
            .await
            .unwrap();
        for p in [&granted, &stopped] {
            sqlx::query(grant)
                .bind(p.as_str())
                .bind(granted_at.timestamp_millis())
                .execute(&pool)
                .await
                .unwrap();
        }
        sqlx::query(revoke)
            .bind(stopped.as_str())
            .bind(revoked_at.timestamp_millis())
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
    } else {
        let pool = sqlx::PgPool::connect(&url).await.unwrap();
        migrations_before("postgres", 8)
            .await
            .run(&pool)
            .await
            .unwrap();
        for p in [&granted, &stopped] {
            sqlx::query(grant)
                .bind(p.as_str())
                .bind(granted_at)
                .execute(&pool)
                .await
                .unwrap();
        }
        sqlx::query(revoke)
            .bind(stopped.as_str())
            .bind(revoked_at)
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
    }

    let store = herald::store::open(&url).await.unwrap();
    use ConsentState::*;
    let both = [granted.clone(), stopped.clone()];
    // The old opt-out already answers for SMS.
    assert_eq!(
        marketing_by_channel(&store, &both).await,
        vec![(Granted, Missing), (OptedOut, OptedOut)]
    );
    let export = store.export_contact(&granted).await.unwrap();
    assert_eq!(export["consents"][0]["channel"], "whatsapp");
    let export = store.export_contact(&stopped).await.unwrap();
    assert_eq!(export["revocations"][0]["channel"], serde_json::Value::Null);
    // An SMS consent dated before the old opt-out (a late import) does not count; a new one does.
    store
        .grant_consents(&[consent_on(
            ChannelKind::Sms,
            &stopped,
            Category::Marketing,
            hour * 4,
        )])
        .await
        .unwrap();
    assert_eq!(
        marketing_by_channel(&store, &both).await,
        vec![(Granted, Missing), (OptedOut, OptedOut)]
    );
    store
        .grant_consents(&[consent_on(
            ChannelKind::Sms,
            &stopped,
            Category::Marketing,
            hour,
        )])
        .await
        .unwrap();
    assert_eq!(
        marketing_by_channel(&store, &both).await,
        vec![(Granted, Missing), (OptedOut, Granted)]
    );
}

mod reopened {
    #[tokio::test]
    async fn sqlite_timers_survive_reopening_the_store() {
        let dir = tempfile::tempdir().unwrap();
        super::timers_survive_reopening_the_store(crate::support::sqlite_url(dir.path())).await;
    }

    #[tokio::test]
    async fn postgres_timers_survive_reopening_the_store() {
        let Some(url) = crate::support::postgres_url().await else {
            return;
        };
        super::timers_survive_reopening_the_store(url.clone()).await;
        crate::support::drop_postgres_database(&url).await;
    }

    #[tokio::test]
    async fn sqlite_old_consents_become_whatsapp_and_old_opt_outs_hold_for_every_channel() {
        let dir = tempfile::tempdir().unwrap();
        let url = crate::support::sqlite_url(dir.path());
        super::old_consents_become_whatsapp_and_old_opt_outs_hold_for_every_channel(url).await;
    }

    #[tokio::test]
    async fn postgres_old_consents_become_whatsapp_and_old_opt_outs_hold_for_every_channel() {
        let Some(url) = crate::support::postgres_url().await else {
            return;
        };
        super::old_consents_become_whatsapp_and_old_opt_outs_hold_for_every_channel(url.clone())
            .await;
        crate::support::drop_postgres_database(&url).await;
    }
}

// --- SQLite only ---------------------------------------------------------------------------

#[tokio::test]
async fn sqlite_ends_abandoned_leases_for_a_sole_sender() {
    let (store, _dir) = crate::support::sqlite_store().await;
    store
        .claim("dead", MINUTE, &claims(&["a", "b", "c"]))
        .await
        .unwrap();
    store.mark_sending("dead", &keys(&["b"])).await.unwrap();
    store
        .record_outcomes(&[outcome("c", sent("wamid.c"))])
        .await
        .unwrap();
    assert_eq!(store.end_abandoned_leases().await.unwrap(), 2);
    let got = store
        .claim("next", MINUTE, &claims(&["a", "b", "c"]))
        .await
        .unwrap();
    assert_eq!(
        got,
        vec![
            ClaimStatus::Mine,
            ClaimStatus::WasInFlight,
            ClaimStatus::Done
        ]
    );
}

#[tokio::test]
async fn an_unwritable_sqlite_path_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("no/such/dir/herald.db").display()
    );
    let err = herald::store::open(&url)
        .await
        .err()
        .expect("opening must fail");
    assert!(matches!(err, StoreError::Connect { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("cannot open database") && msg.contains("herald.db"),
        "{msg}"
    );
}

#[tokio::test]
async fn an_in_memory_sqlite_store_works() {
    let store = herald::store::open("sqlite::memory:").await.unwrap();
    let got = store.claim("w1", MINUTE, &claims(&["a"])).await.unwrap();
    assert_eq!(got, vec![ClaimStatus::Mine]);
    assert_eq!(state_of(&store, "a").await, "pending");
}

// --- Postgres only: many workers -----------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_workers_never_both_own_a_key() {
    let Some(url) = support::postgres_url().await else {
        return;
    };
    let a = herald::store::open(&url).await.unwrap();
    let b = herald::store::open(&url).await.unwrap();
    let all: Vec<Claim> = (0..1_000)
        .map(|i| claim_in("bf", &format!("k{i:04}")))
        .collect();
    // Overlapping batches in opposite orders: the worst case for lock ordering.
    let run = |store: Arc<dyn Store>, owner: &'static str, reverse: bool| {
        let mut batches: Vec<Vec<Claim>> = all.chunks(100).map(<[Claim]>::to_vec).collect();
        if reverse {
            batches.reverse();
            for b in &mut batches {
                b.reverse();
            }
        }
        tokio::spawn(async move {
            let mut mine = Vec::new();
            for batch in batches {
                let got = store.claim(owner, MINUTE, &batch).await.unwrap();
                for (c, s) in batch.iter().zip(got) {
                    assert_ne!(s, ClaimStatus::Done);
                    if s == ClaimStatus::Mine {
                        mine.push(c.key.as_str().to_owned());
                    }
                }
            }
            mine
        })
    };
    let (ma, mb) = tokio::join!(
        run(Arc::clone(&a), "w1", false),
        run(Arc::clone(&b), "w2", true)
    );
    let (ma, mb): (HashSet<String>, HashSet<String>) = (
        ma.unwrap().into_iter().collect(),
        mb.unwrap().into_iter().collect(),
    );
    assert_eq!(
        ma.len() + mb.len(),
        1_000,
        "every key has exactly one owner"
    );
    assert!(ma.is_disjoint(&mb));
    assert_eq!(ma.union(&mb).count(), 1_000);
    support::drop_postgres_database(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_tier_reservations_never_overspend() {
    let Some(url) = support::postgres_url().await else {
        return;
    };
    let a = herald::store::open(&url).await.unwrap();
    let b = herald::store::open(&url).await.unwrap();
    let limit = 250;
    // 600 distinct numbers in all, 200 of them wanted by both workers.
    let run = |store: Arc<dyn Store>, range: std::ops::Range<u32>| {
        tokio::spawn(async move {
            let phones: Vec<PhoneNumber> = range.map(phone).collect();
            let mut granted = Vec::new();
            for batch in phones.chunks(25) {
                let got = store
                    .reserve_tier("pf", Some(limit), DAY, batch)
                    .await
                    .unwrap();
                granted.extend(
                    batch
                        .iter()
                        .zip(got)
                        .filter(|(_, ok)| *ok)
                        .map(|(p, _)| p.clone()),
                );
            }
            granted
        })
    };
    let (ga, gb) = tokio::join!(run(Arc::clone(&a), 0..400), run(Arc::clone(&b), 200..600));
    let distinct: HashSet<PhoneNumber> = ga.unwrap().into_iter().chain(gb.unwrap()).collect();
    assert_eq!(
        distinct.len(),
        limit as usize,
        "the tier is used up, never overspent"
    );
    assert_eq!(a.tier_usage("pf", DAY).await.unwrap(), u64::from(limit));
    support::drop_postgres_database(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_purges_delete_and_count_each_row_once() {
    let Some(url) = support::postgres_url().await else {
        return;
    };
    let a = herald::store::open(&url).await.unwrap();
    let b = herald::store::open(&url).await.unwrap();
    let names: Vec<String> = (0..600).map(|i| format!("k{i:04}")).collect();
    let list: Vec<&str> = names.iter().map(String::as_str).collect();
    a.claim("w1", MINUTE, &claims(&list)).await.unwrap();
    let outcomes: Vec<OutcomeRecord> = list
        .iter()
        .map(|k| outcome(k, sent(&format!("wamid.{k}"))))
        .collect();
    a.record_outcomes(&outcomes).await.unwrap();
    let before = a.campaign_counts(&campaign("bf")).await.unwrap();
    // Two workers purge at once, twice each: every row goes once and is counted once.
    let policy = RetentionPolicy::default();
    let later = days_later(401);
    let run = |store: Arc<dyn Store>| {
        let policy = policy.clone();
        tokio::spawn(async move {
            let mut n = 0;
            for _ in 0..2 {
                n += store
                    .purge(&policy, later, false)
                    .await
                    .unwrap()
                    .get(DataClass::Ledger);
            }
            n
        })
    };
    let (na, nb) = tokio::join!(run(Arc::clone(&a)), run(Arc::clone(&b)));
    assert_eq!(na.unwrap() + nb.unwrap(), 600);
    assert_eq!(a.campaign_counts(&campaign("bf")).await.unwrap(), before);
    assert!(
        a.ledger_page(&campaign("bf"), None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    support::drop_postgres_database(&url).await;
}

// Hot-path timings live in `benches/store_ops.rs` (`cargo bench --bench store_ops`).

#[tokio::test]
async fn an_unreachable_postgres_is_a_clear_error() {
    let started = Instant::now();
    let err = herald::store::open("postgres://herald:secret@127.0.0.1:1/herald")
        .await
        .err()
        .expect("connecting must fail");
    assert!(matches!(err, StoreError::Connect { .. }), "{err:?}");
    let msg = err.to_string();
    eprintln!("{msg} (after {:?})", started.elapsed());
    assert!(
        msg.contains("127.0.0.1:1") && !msg.contains("secret"),
        "{msg}"
    );
}
