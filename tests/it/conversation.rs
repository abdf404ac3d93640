//! The conversation side end to end: inbound messages from Meta's webhooks (signed fixtures
//! in Meta's shapes, and customers the simulator plays), the customer-service window they open,
//! click-to-chat opt-in by keyword with its proof and one confirmation, and session messages
//! chosen by the window at send time.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use herald::domain::inbound::OptInKeyword;
use herald::domain::{Category, ChannelKind, PhoneNumber, SenderId};
use herald::engine::{OPTIN_CAMPAIGN, OPTIN_TIMER, RunControl, confirmation_key};
use herald::http::{self, OptOutWords, ServeConfig, WebhookConfig};
use herald::policy::optin::default_confirmation;
use herald::store::{ConsentState, Store};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::engine::{Env, EnvOptions, SENDER};

const SECRET: &str = "test-app-secret";
/// The customer of `inbound-text-keyword.json`.
const ANNA: &str = "+4915123456789";

/// `herald serve`'s webhook receiver in this process, on `store`.
pub struct Receiver {
    pub url: String,
    shutdown: CancellationToken,
}

impl Receiver {
    pub async fn start(store: Arc<dyn Store>) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let config = ServeConfig {
            webhooks: WebhookConfig {
                app_secret: SECRET.into(),
                verify_token: None,
                opt_out: OptOutWords::default(),
            },
            admin_token: None,
            shutdown_delay: Duration::ZERO,
            drain: Duration::from_secs(5),
        };
        tokio::spawn(http::run(listener, store, config, shutdown.clone()));
        let client = reqwest::Client::new();
        for _ in 0..500 {
            if let Ok(r) = client.get(format!("{url}/readyz")).send().await
                && r.status() == 200
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Receiver { url, shutdown }
    }

    /// Posts a signed fixture; returns the HTTP status.
    pub async fn post_fixture(&self, name: &str) -> u16 {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/webhooks");
        let body = std::fs::read(dir.join(format!("{name}.json"))).unwrap();
        let sig = std::fs::read_to_string(dir.join(format!("{name}.sig"))).unwrap();
        reqwest::Client::new()
            .post(format!("{}/webhooks", self.url))
            .header("content-type", "application/json")
            .header("x-hub-signature-256", sig.trim())
            .body(body)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn phone(n: &str) -> PhoneNumber {
    PhoneNumber::parse(n).unwrap()
}

fn sender() -> SenderId {
    SenderId::parse(SENDER).unwrap()
}

async fn register_keyword(store: &dyn Store, keyword: &str) {
    store
        .upsert_keyword(&OptInKeyword {
            keyword: keyword.into(),
            sender: sender(),
            category: Category::Marketing,
            source: "poster-store-berlin".into(),
            business: "ACME Sneakers".into(),
            confirmation: default_confirmation("ACME Sneakers", "marketing"),
            created_at: Utc::now(),
        })
        .await
        .unwrap();
}

async fn export(store: &dyn Store, number: &str) -> Value {
    store.export_contact(&phone(number)).await.unwrap()
}

fn unix(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(secs, 0).unwrap()
}

#[tokio::test]
async fn an_inbound_message_is_stored_once_without_its_text_and_opens_the_window() {
    let env = Env::start(EnvOptions::default()).await;
    let receiver = Receiver::start(Arc::clone(&env.store)).await;
    // Meta retries: the same message three times.
    for _ in 0..3 {
        assert_eq!(receiver.post_fixture("inbound-text-keyword").await, 200);
    }
    let exported = export(env.store.as_ref(), ANNA).await;
    let inbound = exported["inbound_messages"].as_array().unwrap();
    assert_eq!(inbound.len(), 1, "{exported:#}");
    assert_eq!(inbound[0]["type"], "text");
    assert_eq!(inbound[0]["sender"], SENDER);
    assert_eq!(
        inbound[0]["text"],
        Value::Null,
        "no keyword registered: the text is not kept"
    );
    let windows = env
        .store
        .service_windows(&sender(), &[phone(ANNA), phone("+4917600000000")])
        .await
        .unwrap();
    let w = windows[0].expect("the message opened a window");
    // The fixture's timestamp, plus 24 h.
    assert_eq!(
        w.open_until,
        unix(1_763_726_600) + chrono::Duration::hours(24)
    );
    assert_eq!(w.free_until, None);
    assert_eq!(windows[1], None);
    // Nothing else came of it: no consent, no confirmation.
    let consent = env
        .store
        .consent_states(Category::Marketing, ChannelKind::WhatsApp, &[phone(ANNA)])
        .await
        .unwrap();
    assert_eq!(consent, [ConsentState::Missing]);
}

#[tokio::test]
async fn a_referral_opens_a_72_hour_free_entry_point_and_unknown_types_are_acknowledged() {
    let env = Env::start(EnvOptions::default()).await;
    let receiver = Receiver::start(Arc::clone(&env.store)).await;
    assert_eq!(receiver.post_fixture("inbound-referral").await, 200);
    assert_eq!(receiver.post_fixture("inbound-unsupported").await, 200);
    assert_eq!(receiver.post_fixture("inbound-button-reply").await, 200);
    assert_eq!(
        receiver.post_fixture("inbound-interactive-reply").await,
        200
    );
    let mia = "+4915771234567";
    let w = env
        .store
        .service_windows(&sender(), &[phone(mia)])
        .await
        .unwrap()[0]
        .expect("window");
    let at = unix(1_763_726_620);
    assert_eq!(w.open_until, at + chrono::Duration::hours(24));
    assert_eq!(w.free_until, Some(at + chrono::Duration::hours(72)));
    let lea = export(env.store.as_ref(), "+4916098765432").await;
    assert_eq!(lea["inbound_messages"][0]["type"], "unsupported");
}

#[tokio::test]
async fn a_keyword_records_consent_with_proof_and_one_confirmation_however_often_meta_retries() {
    let env = Env::start(EnvOptions::default()).await;
    register_keyword(env.store.as_ref(), "SNEAKERS").await;
    let receiver = Receiver::start(Arc::clone(&env.store)).await;
    for _ in 0..3 {
        assert_eq!(receiver.post_fixture("inbound-text-keyword").await, 200);
    }
    let consent = env
        .store
        .consent_states(Category::Marketing, ChannelKind::WhatsApp, &[phone(ANNA)])
        .await
        .unwrap();
    assert_eq!(consent, [ConsentState::Granted]);
    let sms = env
        .store
        .consent_states(Category::Marketing, ChannelKind::Sms, &[phone(ANNA)])
        .await
        .unwrap();
    assert_eq!(
        sms,
        [ConsentState::Missing],
        "a WhatsApp opt-in is not SMS consent"
    );
    let exported = export(env.store.as_ref(), ANNA).await;
    let c = &exported["consents"][0];
    assert_eq!(c["source"], "optin:poster-store-berlin");
    let proof = c["proof"].as_str().unwrap();
    let wamid = exported["inbound_messages"][0]["wamid"].as_str().unwrap();
    assert!(proof.contains(wamid), "{proof}");
    assert!(proof.contains("\"SNEAKERS\""), "{proof}");
    assert_eq!(c["granted_at"], "2025-11-21T12:03:20+00:00");
    assert_eq!(exported["inbound_messages"][0]["text"], "SNEAKERS");
    // One confirmation timer for the three deliveries.
    let timers = env
        .store
        .timer_counts(OPTIN_TIMER, OPTIN_CAMPAIGN, Utc::now())
        .await
        .unwrap();
    assert_eq!(timers.due, 1, "{timers:?}");
    // The fixture's message is a year old: its window closed long ago, so the confirmation
    // is not sent outside it — recorded skipped, never lost.
    let round = env
        .engine
        .fire_confirmations(&RunControl::default())
        .await
        .unwrap();
    assert_eq!(round.settled, 1);
    let row = env
        .store
        .ledger_entry(&herald::domain::IdempotencyKey::from_trusted(
            confirmation_key(wamid),
        ))
        .await
        .unwrap()
        .expect("the confirmation has an outcome");
    assert_eq!(row.state, "skipped");
    assert_eq!(row.reason.as_deref(), Some("window_closed"));
    assert_eq!(env.sim.stats().accepted, 0);
}

#[tokio::test]
async fn a_stop_after_the_opt_in_wins_and_a_redelivered_opt_in_does_not_undo_it() {
    let env = Env::start(EnvOptions::default()).await;
    register_keyword(env.store.as_ref(), "SNEAKERS").await;
    let receiver = Receiver::start(Arc::clone(&env.store)).await;
    assert_eq!(receiver.post_fixture("inbound-text-keyword").await, 200);
    // Anna says STOP a minute after her opt-in.
    env.store
        .revoke_consent(
            &phone(ANNA),
            None,
            Some(ChannelKind::WhatsApp),
            unix(1_763_726_660),
            "inbound:STOP",
        )
        .await
        .unwrap();
    assert_eq!(receiver.post_fixture("inbound-text-keyword").await, 200);
    let consent = env
        .store
        .consent_states(Category::Marketing, ChannelKind::WhatsApp, &[phone(ANNA)])
        .await
        .unwrap();
    assert_eq!(consent, [ConsentState::OptedOut]);
}
