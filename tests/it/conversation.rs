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
use herald::simulator::{InboundRequest, SimConfig};
use herald::store::{ConsentState, Store};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::engine::{Env, EnvOptions, SENDER, job_with, numbers};
use super::support::fast_retries;

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
        Self::start_on(listener, store, &herald::domain::Clock::system()).await
    }

    /// On a listener bound before the store existed (the simulator posts to its address), on
    /// herald's `clock`.
    pub async fn start_on(
        listener: TcpListener,
        store: Arc<dyn Store>,
        clock: &herald::domain::Clock,
    ) -> Receiver {
        let url = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let config = ServeConfig {
            webhooks: WebhookConfig {
                app_secret: SECRET.into(),
                verify_token: None,
                opt_out: OptOutWords::default(),
                clock: clock.clone(),
                rate_card: Arc::new(herald::policy::cost::RateCard::builtin()),
                recipient_events: None,
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

/// An environment whose simulator posts its customers' messages (and status webhooks) to a
/// webhook receiver on the environment's store, and whose engine runs on `clock`.
async fn talking_env(clock: &herald::domain::Clock) -> (Env, Receiver) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/webhooks", listener.local_addr().unwrap());
    let env = Env::start(EnvOptions {
        sim: SimConfig {
            rate_per_sec: 1_000_000,
            accept_unknown_templates: true,
            webhook_url: Some(url),
            app_secret: Some(SECRET.into()),
            ..SimConfig::default()
        },
        engine: herald::engine::EngineConfig {
            clock: clock.clone(),
            ..fast_retries()
        },
        ..EnvOptions::default()
    })
    .await;
    let receiver = Receiver::start_on(listener, Arc::clone(&env.store), clock).await;
    (env, receiver)
}

/// A customer writes `text` to the sender; returns the message's wamid once herald stored it.
async fn writes(env: &Env, from: &str, text: &str) -> String {
    let posted = env
        .sim
        .inbound(InboundRequest::text(from, text))
        .await
        .expect("the simulator posts the message");
    assert!(posted.acknowledged(), "{posted:?}");
    posted.id
}

fn session_job(id: &str, to: &[String], template: bool) -> Arc<herald::domain::Job> {
    let recipients: Vec<_> = to
        .iter()
        .enumerate()
        .map(|(i, n)| json!({ "to": n, "key": format!("{id}-{i}") }))
        .collect();
    let mut job = json!({
        "version": 1,
        "job_id": id,
        "campaign_id": "answers",
        "sender": SENDER,
        "session": { "type": "text", "text": "Your sneakers are back in stock: https://acme.example/s" },
        "recipients": recipients,
    });
    if template {
        job["template"] =
            json!({ "name": "flash_sale", "language": "de", "category": "marketing" });
    }
    job_with(job)
}

async fn outcome(env: &Env, key: &str) -> (String, Option<String>) {
    let row = env
        .store
        .ledger_entry(&herald::domain::IdempotencyKey::from_trusted(
            key.to_owned(),
        ))
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("{key} has no outcome"));
    (row.state, row.reason)
}

#[tokio::test]
async fn a_keyword_from_a_customer_gets_one_confirmation_inside_the_window() {
    let clock = herald::domain::Clock::system();
    let (env, _receiver) = talking_env(&clock).await;
    register_keyword(env.store.as_ref(), "SNEAKERS").await;
    let to = numbers(1);
    // Meta delivers the webhook three times.
    let posted = env
        .sim
        .inbound(InboundRequest {
            repeat: 3,
            ..InboundRequest::text(&to[0], " Sneakers! ")
        })
        .await
        .unwrap();
    assert!(posted.acknowledged(), "{posted:?}");
    assert_eq!(posted.statuses.len(), 3);
    for _ in 0..3 {
        env.engine
            .fire_timers(&RunControl::default())
            .await
            .unwrap();
    }
    let stats = env.sim.stats();
    assert_eq!(stats.session_accepted, 1, "{stats:?}");
    assert_eq!(stats.duplicates, 0);
    assert_eq!(outcome(&env, &confirmation_key(&posted.id)).await.0, "sent");
    let consent = env
        .store
        .consent_states(Category::Marketing, ChannelKind::WhatsApp, &[phone(&to[0])])
        .await
        .unwrap();
    assert_eq!(consent, [ConsentState::Granted]);
}

#[tokio::test]
async fn session_jobs_go_to_open_windows_and_skip_or_template_the_rest() {
    let clock = herald::domain::Clock::system();
    let (env, _receiver) = talking_env(&clock).await;
    let to = numbers(4);
    env.consent_all(&to).await;
    // 0 and 1 wrote; 2 and 3 never did.
    writes(&env, &to[0], "Do you have size 42?").await;
    writes(&env, &to[1], "Hi").await;

    let alone = env.finished(&session_job("s1", &to, false)).await;
    assert_eq!(alone.total("sent"), 2);
    assert_eq!(outcome(&env, "s1-0").await.0, "sent");
    assert_eq!(
        outcome(&env, "s1-2").await,
        ("skipped".into(), Some("window_closed".into()))
    );
    assert_eq!(
        outcome(&env, "s1-3").await,
        ("skipped".into(), Some("window_closed".into()))
    );
    assert_eq!(env.sim.stats().session_accepted, 2);

    // With a template: open windows get the session message, the others the template.
    let mixed = env.finished(&session_job("s2", &to, true)).await;
    assert_eq!(mixed.total("sent"), 4);
    let stats = env.sim.stats();
    assert_eq!(stats.session_accepted, 4);
    assert_eq!(stats.accepted, 2 + 4);
    // Sessions take no tier room; answers in the window are free.
    assert!(mixed.cost.free >= 2, "{:?}", mixed.cost);

    // 25 h later every window has closed: a session message alone reaches no one.
    clock.advance(Duration::from_secs(25 * 3600));
    let late = env.finished(&session_job("s3", &to, false)).await;
    assert_eq!(late.total("sent"), 0);
    for i in 0..4 {
        assert_eq!(
            outcome(&env, &format!("s3-{i}")).await.1.as_deref(),
            Some("window_closed")
        );
    }
    assert_eq!(
        env.sim.stats().session_accepted,
        4,
        "nothing sent outside the window"
    );
}

#[tokio::test]
async fn meta_saying_the_window_closed_skips_a_session_or_sends_the_template_instead() {
    let clock = herald::domain::Clock::system();
    let (env, _receiver) = talking_env(&clock).await;
    let to = numbers(2);
    env.consent_all(&to).await;
    writes(&env, &to[0], "Hi").await;
    writes(&env, &to[1], "Hi").await;
    // Herald believes both windows open; Meta has closed them (131047).
    assert_eq!(env.sim.close_windows(None, None).unwrap(), 2);
    let alone = env.finished(&session_job("c1", &to[..1], false)).await;
    assert_eq!(alone.total("sent"), 0);
    assert_eq!(
        outcome(&env, "c1-0").await,
        ("skipped".into(), Some("window_closed".into()))
    );
    // Herald's window for that customer ended with Meta's answer.
    let w = env
        .store
        .service_windows(&sender(), &[phone(&to[0])])
        .await
        .unwrap()[0]
        .unwrap();
    assert!(w.open_until <= Utc::now());
    // A job with a template: the refused session goes back (as `herald send` and the
    // workers run a job's leftovers again) and the next pass sends the template instead.
    let first = env.finished(&session_job("c2", &to[1..], true)).await;
    assert_eq!(first.remaining, 1, "{first:?}");
    assert_eq!(outcome(&env, "c2-0").await.0, "pending");
    let again = env.finished(&session_job("c2", &to[1..], true)).await;
    assert_eq!(outcome(&env, "c2-0").await.0, "sent", "{again:?}");
    let stats = env.sim.stats();
    assert_eq!(stats.rejected(131047), 2, "{stats:?}");
    assert_eq!(stats.session_accepted, 0);
    assert_eq!(stats.accepted, 1, "the template");
}

#[tokio::test]
async fn a_follow_up_is_the_free_text_for_a_customer_whose_window_is_open() {
    let clock = herald::domain::Clock::system();
    let (env, _receiver) = talking_env(&clock).await;
    env.store
        .upsert_template(&super::support::template("flash_sale_reminder", "APPROVED"))
        .await
        .unwrap();
    let to = numbers(2);
    env.consent_all(&to).await;
    let recipients: Vec<_> = to
        .iter()
        .enumerate()
        .map(|(i, n)| json!({ "to": n, "key": format!("f-{i}") }))
        .collect();
    let job = job_with(json!({
        "version": 1, "job_id": "f1", "campaign_id": "fu-text", "sender": SENDER,
        "template": { "name": "flash_sale", "language": "de", "category": "marketing" },
        "recipients": recipients,
        "follow_up": {
            "after": "PT1M", "if": "sent", "unless": "none",
            "template": { "name": "flash_sale_reminder", "language": "de", "category": "marketing" },
            "text": "Still thinking about the sneakers? 10 % more today: https://acme.example/s"
        }
    }));
    assert_eq!(env.finished(&job).await.total("sent"), 2);
    // Customer 0 answers the first message; 1 stays silent.
    writes(&env, &to[0], "How long does shipping take?").await;
    clock.advance(Duration::from_secs(120));
    let round = env
        .engine
        .fire_follow_ups(&RunControl::default())
        .await
        .unwrap();
    assert_eq!(round.sent, 2, "{round:?}");
    let stats = env.sim.stats();
    assert_eq!(
        stats.session_accepted, 1,
        "the one with an open window: free text"
    );
    assert_eq!(
        stats.accepted, 4,
        "two first messages, one template follow-up, one text"
    );
}

#[tokio::test]
async fn herald_send_of_a_session_job_without_open_windows_skips_everyone_and_says_why() {
    let env = Env::start(EnvOptions::default()).await;
    let to = numbers(3);
    env.consent_all(&to).await;
    let file = env.dir.path().join("session.json");
    let body = json!({
        "version": 1, "job_id": "answers-1", "campaign_id": "answers", "sender": SENDER,
        "session": { "type": "text", "text": "Your size is back: https://acme.example/s" },
        "recipients": to.iter().map(|n| json!({ "to": n })).collect::<Vec<_>>(),
    });
    std::fs::write(&file, body.to_string()).unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["send", "--quiet"])
        .arg(&file)
        .env("HERALD_DATABASE_URL", &env.db_url)
        .env("HERALD_GRAPH_URL", env.sim.url())
        .env("RUST_LOG", "warn")
        .env_remove("HERALD_RATE_CARD")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("skipped:window_closed"), "{stdout}");
    assert!(
        stdout.contains("3 without an open customer-service window"),
        "{stdout}"
    );
    assert!(stdout.contains("add a `template`"), "{stdout}");
    for n in &to {
        assert!(
            !stdout.contains(n.trim_start_matches('+')),
            "a number in the output: {stdout}"
        );
    }
    assert_eq!(env.sim.stats().accepted, 0);
}
