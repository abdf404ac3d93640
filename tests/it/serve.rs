//! `herald serve` end to end: Meta's webhook fixtures (raw bytes and their real signatures)
//! posted to a server on a free port with an SQLite store, the handshake, the admin API,
//! probes through a drain, metrics after an engine run (checked with `promtool` when it is
//! installed), and the real binaries answering SIGTERM: `herald serve`, and `herald worker`
//! with the same probe and metrics listeners (skipped without RabbitMQ, like the AMQP tests).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use herald::amqp::Topology;
use herald::domain::{
    CampaignId, Category, ChannelKind, IdempotencyKey, JobId, Outcome, PhoneNumber, SenderId,
};
use herald::http::{self, OptOutWords, ServeConfig, WebhookConfig};
use herald::simulator::SimConfig;
use herald::store::{Claim, Consent, ConsentState, OutcomeRecord, Sender, Store};
use herald::telemetry::metrics as m;
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::engine::{ACCOUNT, Env, EnvOptions, job_with, numbers};
use super::support::{self, sqlite_store};

/// The app secret the fixtures are signed with.
const SECRET: &str = "test-app-secret";
const VERIFY_TOKEN: &str = "verify-me";
const ADMIN_TOKEN: &str = "admin-secret";
const CAMPAIGN: &str = "black-friday-2026";
/// The fixtures' first message: sent, delivered and read to Anna.
const KEY_ANNA: &str = "k:black-friday-2026:7f3a9c";
const WAMID_ANNA: &str = "wamid.HBgNNDkxNTEyMzQ1Njc4ORUCABEYEjQ5RDVCRTI3OUI2QkM1NjJBMAA=";
const ANNA: &str = "+4915123456789";
/// The fixtures' second message: failed 131050 to Jonas, who also taps "Abmelden".
const KEY_JONAS: &str = "k:black-friday-2026:19be02";
const WAMID_JONAS: &str = "wamid.HBgNNDkxNzY5ODc2NTQzMhUCABEYEkZBMUM3RDNCRTQ2NjQwMzRBAA==";
const JONAS: &str = "+4917698765432";
/// The `user_preferences` stop.
const LEA: &str = "+4916011122233";
const FIXTURES: &[&str] = &[
    "status-sent",
    "status-delivered-read-batch",
    "status-failed-131050",
    "inbound-stop-text",
    "inbound-quick-reply-abmelden",
    "template-paused",
    "user-preferences-stop",
];

/// The Prometheus recorder of this test process: a process has one global recorder, so every
/// test that reads metrics goes through this.
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| m::install(None).expect("install the Prometheus recorder"))
}

/// A fixture's raw body and its `X-Hub-Signature-256`.
fn fixture(name: &str) -> (Vec<u8>, String) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/webhooks");
    let read = |ext: &str| {
        let path = dir.join(format!("{name}.{ext}"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    };
    let sig = String::from_utf8(read("sig")).unwrap().trim().to_owned();
    (read("json"), sig)
}

fn config() -> ServeConfig {
    ServeConfig {
        webhooks: WebhookConfig {
            app_secret: SECRET.into(),
            verify_token: Some(VERIFY_TOKEN.into()),
            opt_out: OptOutWords::default(),
            clock: herald::domain::Clock::system(),
            rate_card: std::sync::Arc::new(herald::policy::cost::RateCard::builtin()),
            recipient_events: None,
        },
        admin_token: None,
        shutdown_delay: Duration::ZERO,
        drain: Duration::from_secs(5),
    }
}

/// A `herald serve` running in this process on a free port.
struct Serve {
    base: String,
    client: reqwest::Client,
    shutdown: CancellationToken,
    task: JoinHandle<std::io::Result<()>>,
}

impl Serve {
    async fn start(store: Arc<dyn Store>, config: ServeConfig) -> Serve {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::start_on(listener, store, config).await
    }

    async fn start_on(listener: TcpListener, store: Arc<dyn Store>, config: ServeConfig) -> Serve {
        let base = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(http::run(listener, store, config, shutdown.clone()));
        let serve = Serve {
            base,
            client: reqwest::Client::new(),
            shutdown,
            task,
        };
        serve.wait_ready().await;
        serve
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.status("/readyz").await != 200 {
            assert!(Instant::now() < deadline, "serve never became ready");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn status(&self, path: &str) -> u16 {
        match self.client.get(format!("{}{path}", self.base)).send().await {
            Ok(r) => r.status().as_u16(),
            Err(_) => 0,
        }
    }

    async fn post(&self, body: &[u8], signature: Option<&str>) -> reqwest::Response {
        let mut req = self
            .client
            .post(format!("{}/webhooks", self.base))
            .header("content-type", "application/json")
            .body(body.to_vec());
        if let Some(sig) = signature {
            req = req.header("x-hub-signature-256", sig);
        }
        req.send().await.expect("POST /webhooks")
    }

    async fn post_fixture(&self, name: &str) -> u16 {
        let (body, sig) = fixture(name);
        self.post(&body, Some(&sig)).await.status().as_u16()
    }

    /// Posts a body herald signs itself (for bodies that are not fixtures).
    async fn post_signed(&self, body: &str) -> u16 {
        let sig = http::sign(SECRET.as_bytes(), body.as_bytes());
        self.post(body.as_bytes(), Some(&sig))
            .await
            .status()
            .as_u16()
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("serve stops")
            .unwrap()
            .expect("serve ends cleanly");
    }
}

fn phone(n: &str) -> PhoneNumber {
    PhoneNumber::parse(n).unwrap()
}

/// Before the fixtures' timestamps (November 2025): a revocation only beats an older grant.
fn long_ago() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap()
}

/// A store that sent the fixtures' two messages, with consents for everyone in them and the
/// template they pause.
async fn seeded_store() -> (Arc<dyn Store>, tempfile::TempDir) {
    let (store, dir) = sqlite_store().await;
    support::seed(&store, &support::sender("106540352242922", 80)).await;
    store
        .upsert_template(&support::template("old_promo", "APPROVED"))
        .await
        .unwrap();
    let consents: Vec<Consent> = [ANNA, JONAS, LEA]
        .iter()
        .flat_map(|n| {
            [Category::Marketing, Category::Utility].map(|category| Consent {
                phone: phone(n),
                category,
                channel: ChannelKind::WhatsApp,
                granted_at: long_ago(),
                source: "checkout".into(),
                proof: "checkbox v3".into(),
            })
        })
        .collect();
    store.grant_consents(&consents).await.unwrap();
    let campaign = CampaignId::parse(CAMPAIGN).unwrap();
    store.ensure_campaign(&campaign).await.unwrap();
    for (key, wamid, to) in [
        (KEY_ANNA, WAMID_ANNA, ANNA),
        (KEY_JONAS, WAMID_JONAS, JONAS),
    ] {
        let key = IdempotencyKey::parse(key).unwrap();
        store
            .claim(
                "seed",
                Duration::from_secs(60),
                &[Claim {
                    key: key.clone(),
                    campaign: campaign.clone(),
                    job: JobId::parse("bf26-000017").unwrap(),
                    sender: SenderId::parse("106540352242922").unwrap(),
                    recipient: to.into(),
                    template: "flash_sale".into(),
                    language: "de".into(),
                    category: Category::Marketing,
                    channel: ChannelKind::WhatsApp,
                }],
            )
            .await
            .unwrap();
        store
            .mark_sending("seed", std::slice::from_ref(&key))
            .await
            .unwrap();
        store
            .record_outcomes(&[OutcomeRecord {
                key,
                outcome: Outcome::Sent {
                    wamid: wamid.into(),
                },
                attempts: 1,
            }])
            .await
            .unwrap();
    }
    (store, dir)
}

async fn consent(store: &dyn Store, number: &str, category: Category) -> ConsentState {
    store
        .consent_states(category, ChannelKind::WhatsApp, &[phone(number)])
        .await
        .unwrap()[0]
}

/// The exported ledger row of `key` (the export carries the billed category).
async fn ledger_json(store: &dyn Store, number: &str, key: &str) -> Value {
    let export = store.export_contact(&phone(number)).await.unwrap();
    export["ledger"]
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row["key"] == key)
        .cloned()
        .unwrap_or_else(|| panic!("no ledger row {key} in {export}"))
}

// --- webhooks ----------------------------------------------------------------------------

#[tokio::test]
async fn every_fixture_verifies_with_its_signature_and_is_accepted() {
    let (store, _dir) = seeded_store().await;
    let serve = Serve::start(store, config()).await;
    for name in FIXTURES {
        assert_eq!(serve.post_fixture(name).await, 200, "{name}");
    }
    serve.stop().await;
}

#[tokio::test]
async fn a_sent_status_with_pricing_records_the_billed_category() {
    let (store, _dir) = seeded_store().await;
    let serve = Serve::start(Arc::clone(&store), config()).await;
    assert_eq!(serve.post_fixture("status-sent").await, 200);
    let row = ledger_json(store.as_ref(), ANNA, KEY_ANNA).await;
    assert_eq!(row["state"], "sent");
    assert_eq!(row["wamid"], WAMID_ANNA);
    assert_eq!(row["billed_category"], "marketing");
    serve.stop().await;
}

#[tokio::test]
async fn read_arriving_before_delivered_keeps_read() {
    let (store, _dir) = seeded_store().await;
    let serve = Serve::start(Arc::clone(&store), config()).await;
    assert_eq!(serve.post_fixture("status-delivered-read-batch").await, 200);
    let key = IdempotencyKey::parse(KEY_ANNA).unwrap();
    let row = store.ledger_entry(&key).await.unwrap().unwrap();
    assert_eq!(row.delivery.as_deref(), Some("read"));
    // Late and redelivered statuses of the same message change nothing.
    assert_eq!(serve.post_fixture("status-sent").await, 200);
    assert_eq!(serve.post_fixture("status-delivered-read-batch").await, 200);
    let row = store.ledger_entry(&key).await.unwrap().unwrap();
    assert_eq!(row.delivery.as_deref(), Some("read"));
    assert_eq!(row.state, "sent");
    serve.stop().await;
}

#[tokio::test]
async fn failed_131050_revokes_marketing_consent_only() {
    let (store, _dir) = seeded_store().await;
    let serve = Serve::start(Arc::clone(&store), config()).await;
    assert_eq!(
        consent(store.as_ref(), JONAS, Category::Marketing).await,
        ConsentState::Granted
    );
    assert_eq!(serve.post_fixture("status-failed-131050").await, 200);
    let row = store
        .ledger_entry(&IdempotencyKey::parse(KEY_JONAS).unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.delivery.as_deref(), Some("failed"));
    assert_eq!(
        consent(store.as_ref(), JONAS, Category::Marketing).await,
        ConsentState::OptedOut
    );
    assert_eq!(
        consent(store.as_ref(), JONAS, Category::Utility).await,
        ConsentState::Granted
    );
    let export = store.export_contact(&phone(JONAS)).await.unwrap();
    assert!(
        export["revocations"].to_string().contains("webhook:131050"),
        "{export}"
    );
    serve.stop().await;
}

#[tokio::test]
async fn an_inbound_stop_text_revokes_every_consent() {
    let (store, _dir) = seeded_store().await;
    let serve = Serve::start(Arc::clone(&store), config()).await;
    assert_eq!(serve.post_fixture("inbound-stop-text").await, 200);
    for category in [Category::Marketing, Category::Utility] {
        assert_eq!(
            consent(store.as_ref(), ANNA, category).await,
            ConsentState::OptedOut,
            "{category}"
        );
    }
    let export = store.export_contact(&phone(ANNA)).await.unwrap();
    assert!(
        export["revocations"].to_string().contains("inbound:STOP"),
        "{export}"
    );
    // Jonas wrote nothing: untouched.
    assert_eq!(
        consent(store.as_ref(), JONAS, Category::Marketing).await,
        ConsentState::Granted
    );
    serve.stop().await;
}

#[tokio::test]
async fn an_abmelden_quick_reply_revokes_every_consent() {
    let (store, _dir) = seeded_store().await;
    let serve = Serve::start(Arc::clone(&store), config()).await;
    assert_eq!(
        serve.post_fixture("inbound-quick-reply-abmelden").await,
        200
    );
    for category in [Category::Marketing, Category::Utility] {
        assert_eq!(
            consent(store.as_ref(), JONAS, category).await,
            ConsentState::OptedOut,
            "{category}"
        );
    }
    serve.stop().await;
}

#[tokio::test]
async fn a_paused_template_is_paused_in_the_store() {
    let (store, _dir) = seeded_store().await;
    let serve = Serve::start(Arc::clone(&store), config()).await;
    assert_eq!(serve.post_fixture("template-paused").await, 200);
    let t = store
        .template(ACCOUNT, "old_promo", "de")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(t.status, "PAUSED");
    assert!(!t.is_sendable());
    let other = store
        .template(ACCOUNT, "flash_sale", "de")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(other.status, "APPROVED");
    serve.stop().await;
}

#[tokio::test]
async fn a_user_preferences_stop_revokes_marketing() {
    let (store, _dir) = seeded_store().await;
    let serve = Serve::start(Arc::clone(&store), config()).await;
    assert_eq!(serve.post_fixture("user-preferences-stop").await, 200);
    assert_eq!(
        consent(store.as_ref(), LEA, Category::Marketing).await,
        ConsentState::OptedOut
    );
    assert_eq!(
        consent(store.as_ref(), LEA, Category::Utility).await,
        ConsentState::Granted
    );
    serve.stop().await;
}

#[tokio::test]
async fn a_tampered_or_unsigned_body_is_refused_and_counted() {
    let metrics = prometheus();
    let before = sample(
        &metrics.render(),
        m::WEBHOOK_EVENTS,
        &[("result", "bad_signature")],
    );
    let (store, _dir) = seeded_store().await;
    let serve = Serve::start(Arc::clone(&store), config()).await;
    let (body, sig) = fixture("inbound-stop-text");
    let tampered = String::from_utf8(body)
        .unwrap()
        .replace("4915123456789", "4915123456780");
    assert_eq!(
        serve.post(tampered.as_bytes(), Some(&sig)).await.status(),
        401
    );
    let (body, _) = fixture("inbound-stop-text");
    assert_eq!(serve.post(&body, None).await.status(), 401);
    assert_eq!(serve.post(&body, Some("sha256=00")).await.status(), 401);
    // Nothing was applied.
    assert_eq!(
        consent(store.as_ref(), ANNA, Category::Marketing).await,
        ConsentState::Granted
    );
    let after = sample(
        &metrics.render(),
        m::WEBHOOK_EVENTS,
        &[("result", "bad_signature")],
    );
    assert!(after >= before + 3.0, "before {before}, after {after}");
    serve.stop().await;
}

#[tokio::test]
async fn a_signed_but_malformed_body_is_a_400_not_a_crash() {
    let (store, _dir) = seeded_store().await;
    let serve = Serve::start(store, config()).await;
    for body in [
        "",
        "not json",
        "{\"entry\": 5}",
        "[]",
        "{\"object\":\"whatsapp_business_account\"}",
    ] {
        assert_eq!(serve.post_signed(body).await, 400, "{body:?}");
    }
    // A readable envelope with one unreadable status still applies the rest: 200.
    let body = json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": "1", "changes": [{"field": "messages", "value": {
            "statuses": [
                {"status": "read"},
                {"id": WAMID_ANNA, "status": "delivered", "timestamp": "1763726410"}
            ]
        }}]}]
    });
    assert_eq!(serve.post_signed(&body.to_string()).await, 200);
    assert_eq!(serve.status("/healthz").await, 200);
    serve.stop().await;
}

#[tokio::test]
async fn the_subscription_handshake_echoes_the_challenge_only_for_the_right_token() {
    let (store, _dir) = sqlite_store().await;
    let serve = Serve::start(Arc::clone(&store), config()).await;
    let get = |query: String| {
        let client = serve.client.clone();
        let url = format!("{}/webhooks?{query}", serve.base);
        async move { client.get(url).send().await.unwrap() }
    };
    let ok = get(format!(
        "hub.mode=subscribe&hub.verify_token={VERIFY_TOKEN}&hub.challenge=1158201444"
    ))
    .await;
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.text().await.unwrap(), "1158201444");
    for query in [
        "hub.mode=subscribe&hub.verify_token=wrong&hub.challenge=1".to_owned(),
        format!("hub.mode=unsubscribe&hub.verify_token={VERIFY_TOKEN}&hub.challenge=1"),
        "hub.challenge=1".to_owned(),
    ] {
        assert_eq!(get(query.clone()).await.status(), 403, "{query}");
    }
    serve.stop().await;

    // Without a configured token no handshake succeeds.
    let mut no_token = config();
    no_token.webhooks.verify_token = None;
    let serve = Serve::start(store, no_token).await;
    let r = serve
        .client
        .get(format!(
            "{}/webhooks?hub.mode=subscribe&hub.verify_token=&hub.challenge=1",
            serve.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    serve.stop().await;
}

#[tokio::test]
async fn status_webhooks_from_the_simulator_mark_the_ledger_delivered() {
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
        ..EnvOptions::default()
    })
    .await;
    let serve = Serve::start_on(listener, Arc::clone(&env.store), config()).await;
    let to = numbers(50);
    env.consent_all(&to).await;
    let job = job_with(json!({
        "version": 1, "job_id": "wh-1", "campaign_id": "webhooks-e2e",
        "sender": super::engine::SENDER,
        "template": { "name": "flash_sale", "language": "de", "category": "marketing" },
        "recipients": to.iter().map(|n| json!({ "to": n })).collect::<Vec<_>>(),
    }));
    assert_eq!(env.finished(&job).await.total("sent"), 50);
    let campaign = CampaignId::parse("webhooks-e2e").unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let rows = env.store.ledger_page(&campaign, None, 100).await.unwrap();
        let delivered = rows
            .iter()
            .filter(|r| r.delivery.as_deref() == Some("delivered"))
            .count();
        if delivered == 50 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{delivered} of 50 delivered; simulator stats {:?}",
            env.sim.stats()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    serve.stop().await;
}

#[tokio::test]
async fn what_meta_bills_is_priced_once_per_message_with_the_card() {
    let (store, _dir) = seeded_store().await;
    let serve = Serve::start(Arc::clone(&store), config()).await;
    // Meta prices `sent` and `delivered` of Anna's message, and redelivers both.
    for name in [
        "status-sent",
        "status-delivered-read-batch",
        "status-sent",
        "status-delivered-read-batch",
    ] {
        assert_eq!(serve.post_fixture(name).await, 200);
    }
    let billed = store
        .billed_summary(&CampaignId::parse(CAMPAIGN).unwrap())
        .await
        .unwrap();
    let card = herald::policy::cost::RateCard::builtin();
    let germany_marketing = card.micros(Category::Marketing, &phone(ANNA));
    assert_eq!(billed.len(), 1, "{billed:?}");
    let line = &billed[0];
    assert_eq!(
        (
            line.channel.as_str(),
            line.category.as_str(),
            line.market.as_str()
        ),
        ("whatsapp", "marketing", "DE")
    );
    assert_eq!(line.messages, 1, "billed once, however often Meta says so");
    assert_eq!(line.micros, germany_marketing);
    assert_eq!(
        germany_marketing, 136_500,
        "the card's price for Germany (reference §7)"
    );
    serve.stop().await;
}

// --- admin API -----------------------------------------------------------------------------

#[tokio::test]
async fn the_admin_api_shows_a_campaign_with_counts_per_outcome() {
    let (store, _dir) = seeded_store().await;
    let mut cfg = config();
    cfg.admin_token = Some(ADMIN_TOKEN.into());
    let serve = Serve::start(store, cfg).await;
    let r = serve
        .client
        .get(format!("{}/api/campaigns/{CAMPAIGN}", serve.base))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["campaign"], CAMPAIGN);
    assert_eq!(v["state"], "active");
    assert_eq!(v["total"], 2);
    assert_eq!(v["open"], 0);
    assert_eq!(v["outcomes"]["sent"], 2);
    let missing = serve
        .client
        .get(format!("{}/api/campaigns/nope", serve.base))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    serve.stop().await;
}

#[tokio::test]
async fn without_an_admin_token_every_admin_route_is_refused() {
    let (store, _dir) = seeded_store().await;
    let serve = Serve::start(Arc::clone(&store), config()).await;
    let url = |path: &str| format!("{}{path}", serve.base);
    let requests = [
        serve.client.get(url(&format!("/api/campaigns/{CAMPAIGN}"))),
        serve
            .client
            .post(url(&format!("/api/campaigns/{CAMPAIGN}/pause"))),
        serve.client.post(url("/api/conversions")).body("{}"),
        serve.client.get(url(&format!("/api/contacts/{ANNA}"))),
        serve.client.delete(url(&format!("/api/contacts/{ANNA}"))),
    ];
    for req in requests {
        let r = req.bearer_auth("anything").send().await.unwrap();
        assert_eq!(r.status(), 403);
        let body = r.text().await.unwrap();
        assert!(body.contains("HERALD_ADMIN_TOKEN"), "{body}");
    }
    let c = store
        .campaign(&CampaignId::parse(CAMPAIGN).unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c.state.as_str(), "active");
    serve.stop().await;
}

#[tokio::test]
async fn campaigns_are_paused_resumed_and_cancelled_with_the_admin_token() {
    let (store, _dir) = seeded_store().await;
    let mut cfg = config();
    cfg.admin_token = Some(ADMIN_TOKEN.into());
    let serve = Serve::start(Arc::clone(&store), cfg).await;
    let call = |action: &str, token: Option<&str>, body: Option<Value>| {
        let mut req = serve
            .client
            .post(format!("{}/api/campaigns/{CAMPAIGN}/{action}", serve.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        async move { req.send().await.unwrap() }
    };
    assert_eq!(call("pause", None, None).await.status(), 401);
    assert_eq!(call("pause", Some("wrong"), None).await.status(), 401);
    // With a token configured, reads need it too.
    let read = serve
        .client
        .get(format!("{}/api/campaigns/{CAMPAIGN}", serve.base))
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 401);

    let paused = call(
        "pause",
        Some(ADMIN_TOKEN),
        Some(json!({"reason": "wrong price in the header image"})),
    )
    .await;
    assert_eq!(paused.status(), 200);
    let v: Value = paused.json().await.unwrap();
    assert_eq!(v["state"], "paused");
    assert_eq!(v["reason"], "wrong price in the header image");
    let id = CampaignId::parse(CAMPAIGN).unwrap();
    assert_eq!(
        store.campaign(&id).await.unwrap().unwrap().state.as_str(),
        "paused"
    );

    let resumed: Value = call("resume", Some(ADMIN_TOKEN), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(resumed["state"], "active");
    assert_eq!(call("cancel", Some(ADMIN_TOKEN), None).await.status(), 200);
    assert_eq!(
        call("resume", Some(ADMIN_TOKEN), None).await.status(),
        409,
        "cancellation is final"
    );
    assert_eq!(call("explode", Some(ADMIN_TOKEN), None).await.status(), 404);
    serve.stop().await;
}

#[tokio::test]
async fn a_contact_is_exported_masked_and_erased_over_the_admin_api() {
    super::support::configure_hash_key();
    let (store, _dir) = seeded_store().await;
    let mut cfg = config();
    cfg.admin_token = Some(ADMIN_TOKEN.into());
    // Personal data is for a token of the privacy role, not the bootstrap operator's.
    let secret = herald::domain::TokenSecret::generate();
    store
        .create_token(&herald::domain::ApiToken {
            name: herald::domain::TokenName::parse("dpo").unwrap(),
            role: herald::domain::Role::Privacy,
            secret_hash: secret.hash(),
            created_at: Utc::now(),
            expires_at: None,
            revoked_at: None,
            last_used_at: None,
        })
        .await
        .unwrap();
    let privacy = secret.expose();
    let serve = Serve::start(Arc::clone(&store), cfg).await;
    let url = format!("{}/api/contacts/{}", serve.base, ANNA);
    assert_eq!(
        serve
            .client
            .get(&url)
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap()
            .status(),
        403,
        "HERALD_ADMIN_TOKEN is an operator"
    );
    assert_eq!(serve.client.get(&url).send().await.unwrap().status(), 401);
    assert_eq!(
        serve
            .client
            .get(&url)
            .bearer_auth("wrong")
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let r = serve
        .client
        .get(&url)
        .bearer_auth(privacy)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body = r.text().await.unwrap();
    assert!(
        !body.contains("4915123456789"),
        "no full number in an answer: {body}"
    );
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["consents"].as_array().unwrap().len(), 2);
    assert_eq!(v["ledger"][0]["wamid"], WAMID_ANNA);
    let r = serve
        .client
        .delete(&url)
        .bearer_auth(privacy)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body = r.text().await.unwrap();
    assert!(!body.contains("4915123456789"), "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["erased"]["consents"], 2);
    assert_eq!(
        consent(store.as_ref(), ANNA, Category::Marketing).await,
        ConsentState::OptedOut
    );
    let bad = serve
        .client
        .get(format!("{}/api/contacts/not-a-number", serve.base))
        .bearer_auth(privacy)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    serve.stop().await;
}

// --- probes and drain ------------------------------------------------------------------------

#[tokio::test]
async fn readyz_turns_503_when_shutdown_starts_while_healthz_stays_200_until_exit() {
    let (store, _dir) = sqlite_store().await;
    let mut cfg = config();
    cfg.shutdown_delay = Duration::from_millis(1500);
    let serve = Serve::start(store, cfg).await;
    assert_eq!(serve.status("/readyz").await, 200);
    assert_eq!(serve.status("/healthz").await, 200);
    let started = Instant::now();
    serve.shutdown.cancel();
    while serve.status("/readyz").await != 503 {
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "/readyz still ready after shutdown began"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Draining, not dead: liveness holds while the listener is still open.
    assert_eq!(serve.status("/healthz").await, 200);
    let ended = tokio::time::timeout(Duration::from_secs(10), serve.task)
        .await
        .expect("serve exits after the drain");
    ended.unwrap().expect("a clean exit");
    assert!(started.elapsed() >= Duration::from_millis(1500));
    assert_eq!(
        reqwest::get(format!("{}/healthz", serve.base))
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0),
        0,
        "the listener is closed after exit"
    );
}

// --- the real binary -------------------------------------------------------------------------

fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

fn herald_serve(dir: &Path, args: &[String]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_herald"));
    cmd.arg("serve")
        .args(args)
        .env(
            "HERALD_DATABASE_URL",
            format!("sqlite://{}?mode=rwc", dir.join("herald.db").display()),
        )
        .env_remove("HERALD_VERIFY_TOKEN")
        .env_remove("HERALD_ADMIN_TOKEN")
        .env_remove("HERALD_OPT_OUT_WORDS")
        .env_remove("HERALD_SHUTDOWN_DELAY")
        .env_remove("HERALD_DRAIN_SECONDS")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.join("serve.log")).unwrap())
        .kill_on_drop(true);
    cmd
}

#[tokio::test]
async fn the_binary_reports_unready_on_sigterm_then_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let (http_addr, metrics_addr) = (free_addr(), free_addr());
    let mut child = herald_serve(
        dir.path(),
        &[
            "--http-addr".into(),
            http_addr.to_string(),
            "--metrics-addr".into(),
            metrics_addr.to_string(),
            "--shutdown-delay".into(),
            "2s".into(),
        ],
    )
    .env("HERALD_APP_SECRET", SECRET)
    .spawn()
    .expect("start herald serve");
    let log = || std::fs::read_to_string(dir.path().join("serve.log")).unwrap_or_default();
    let client = reqwest::Client::new();
    let status = |path: &str| {
        let req = client.get(format!("http://{http_addr}{path}"));
        async move { req.send().await.map(|r| r.status().as_u16()).unwrap_or(0) }
    };

    let deadline = Instant::now() + Duration::from_secs(30);
    while status("/readyz").await != 200 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "exited early:\n{}",
            log()
        );
        assert!(Instant::now() < deadline, "never ready:\n{}", log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // It serves webhooks and counts them on the metrics port.
    let (body, sig) = fixture("status-sent");
    let posted = client
        .post(format!("http://{http_addr}/webhooks"))
        .header("x-hub-signature-256", sig)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 200, "{}", log());
    let scraped = client
        .get(format!("http://{metrics_addr}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(scraped.contains(m::WEBHOOK_EVENTS), "{scraped}");

    let pid = child.id().expect("running") as libc::pid_t;
    // SAFETY: sends a signal to the child this test started and still owns.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let signalled = Instant::now();
    while status("/readyz").await != 503 {
        assert!(
            signalled.elapsed() < Duration::from_secs(2),
            "/readyz never turned 503:\n{}",
            log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status("/healthz").await, 200, "{}", log());
    let exit = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .unwrap_or_else(|_| panic!("no exit after SIGTERM:\n{}", log()))
        .unwrap();
    assert_eq!(exit.code(), Some(0), "{}", log());
}

#[tokio::test]
async fn the_binary_refuses_to_serve_without_an_app_secret() {
    let dir = tempfile::tempdir().unwrap();
    let status = herald_serve(dir.path(), &["--http-addr".into(), "127.0.0.1:0".into()])
        .env_remove("HERALD_APP_SECRET")
        .status()
        .await
        .unwrap();
    let log = std::fs::read_to_string(dir.path().join("serve.log")).unwrap();
    assert_eq!(status.code(), Some(2), "{log}");
    assert!(log.contains("HERALD_APP_SECRET"), "{log}");
}

/// Deletes a test's AMQP prefix when dropped, panicking or not.
struct PrefixCleanup {
    url: String,
    prefix: String,
}

impl Drop for PrefixCleanup {
    fn drop(&mut self) {
        let (url, topology) = (self.url.clone(), Topology::new(self.prefix.clone()));
        // Async cleanup from a destructor: its own thread and runtime, joined.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("cleanup runtime");
            rt.block_on(async {
                if let Ok(conn) = herald::amqp::connect(&url, "test-cleanup").await {
                    if let Ok(ch) = conn.create_channel().await {
                        let _ = topology.delete(&ch).await;
                    }
                    let _ = conn.close(200, "cleanup".into()).await;
                }
            });
        })
        .join();
    }
}

#[tokio::test]
async fn the_worker_binary_serves_probes_and_metrics_until_it_exits() {
    let Some(url) = support::amqp_url().await else {
        return;
    };
    let cleanup = PrefixCleanup {
        url: url.clone(),
        prefix: support::unique_prefix(),
    };
    let dir = tempfile::tempdir().unwrap();
    let (http_addr, metrics_addr) = (free_addr(), free_addr());
    let log_path = dir.path().join("worker.log");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .arg("worker")
        .args(["--http-addr", &http_addr.to_string()])
        .args(["--metrics-addr", &metrics_addr.to_string()])
        .env("HERALD_AMQP_URL", &url)
        .env("HERALD_AMQP_PREFIX", &cleanup.prefix)
        .env(
            "HERALD_DATABASE_URL",
            format!(
                "sqlite://{}?mode=rwc",
                dir.path().join("herald.db").display()
            ),
        )
        .env("HERALD_DRAIN_SECONDS", "5")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .kill_on_drop(true)
        .spawn()
        .expect("start herald worker");
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let client = reqwest::Client::new();
    let status = |url: String| {
        let req = client.get(url);
        async move { req.send().await.map(|r| r.status().as_u16()).unwrap_or(0) }
    };

    let deadline = Instant::now() + Duration::from_secs(30);
    while status(format!("http://{http_addr}/readyz")).await != 200 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "exited early:\n{}",
            log()
        );
        assert!(Instant::now() < deadline, "never ready:\n{}", log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status(format!("http://{http_addr}/healthz")).await, 200);
    assert_eq!(status(format!("http://{metrics_addr}/metrics")).await, 200);

    let pid = child.id().expect("running") as libc::pid_t;
    // SAFETY: sends a signal to the child this test started and still owns.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let exit = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .unwrap_or_else(|_| panic!("no exit after SIGTERM:\n{}", log()))
        .unwrap();
    assert_eq!(exit.code(), Some(0), "{}", log());
    assert_eq!(
        status(format!("http://{http_addr}/healthz")).await,
        0,
        "the probe listener closes with the worker"
    );
}

// --- metrics ---------------------------------------------------------------------------------

/// The sum of the samples of `name` whose labels include all of `labels`.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, label_text) = match series.split_once('{') {
                Some((metric, rest)) => (metric, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let wanted = metric == name
                && labels.iter().all(|(k, v)| {
                    label_text
                        .split(',')
                        .any(|pair| pair == format!("{k}=\"{v}\""))
                });
            wanted.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

/// Metric families present in a rendering (histogram series folded into their family).
fn families(text: &str) -> std::collections::BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let name = l.split(['{', ' ']).next().unwrap_or_default();
            ["_bucket", "_sum", "_count"]
                .iter()
                .fold(name, |n, s| n.strip_suffix(s).unwrap_or(n))
                .to_owned()
        })
        .collect()
}

/// promtool from PATH, or where `deploy/check.sh` caches it.
fn promtool() -> Option<PathBuf> {
    if let Ok(path) = std::env::var("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join("promtool");
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    let cache = std::env::var_os("HERALD_CHECK_CACHE")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("herald-deploy-check"))
        })
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/herald-deploy-check"))
        })?;
    let candidate = cache.join("bin/promtool");
    candidate.is_file().then_some(candidate)
}

/// A sender no other test uses, so its series count only this test's sends.
async fn add_sender(env: &Env, id: &str) {
    let sender = Sender {
        portfolio_id: "portfolio-metrics".into(),
        display_number: "+49 30 555".into(),
        ..support::sender(id, 1_000_000)
    };
    env.store.upsert_sender(&sender).await.unwrap();
}

fn job_for(sender: &str, id: &str, to: &[String]) -> Arc<herald::domain::Job> {
    job_with(json!({
        "version": 1, "job_id": id, "campaign_id": format!("metrics-{id}"), "sender": sender,
        "template": { "name": "flash_sale", "language": "de", "category": "marketing" },
        "recipients": to.iter().map(|n| json!({ "to": n })).collect::<Vec<_>>(),
    }))
}

/// Names the engine emits on every run that sends.
const ENGINE_ALWAYS: &[&str] = &[
    m::MESSAGES,
    m::SEND_DURATION,
    m::INFLIGHT,
    m::RATE_WAIT,
    m::SENDER_RATE_LIMIT,
    m::SENDER_EFFECTIVE_RATE,
    m::ESTIMATED_COST,
    // The test's "clean" campaign has a budget.
    m::BUDGET_REMAINING,
];
/// Names the engine emits when the API throttles or fails.
const ENGINE_ON_FAULTS: &[&str] = &[m::THROTTLED, m::RETRIES];
/// Names that do not come from the engine sending (worker, serve, CLI), or only after a
/// sender-fatal error.
const NOT_FROM_SENDING: &[&str] = &[
    m::SENDER_STOPPED,
    // Shared send slots exist only for workers on Postgres.
    m::SLOTS_MISSED,
    m::JOBS_CONSUMED,
    m::JOBS_ACKED,
    m::JOBS_DEAD_LETTERED,
    m::JOBS_DEFERRED,
    m::JOB_AGE,
    m::TIER_USED,
    m::TIER_LIMIT,
    m::TIER_REMAINING,
    m::CAMPAIGNS,
    m::WEBHOOK_EVENTS,
    m::JOBS_STALE_COPIES,
    // From the store probe, and from a run that resends unknowns after a crash.
    m::UNKNOWN_RECIPIENTS,
    m::UNKNOWN_RESENT,
    // The SMS route's session, inbox and fallbacks (an engine with HERALD_SMS_URL).
    m::SMS_BIND_UP,
    m::SMS_BIND_FAILURES,
    m::SMS_RECEIPTS,
    m::SMS_INBOUND,
    m::FALLBACKS,
    // Jobs with a follow-up rule, and the timers that fire them.
    m::FOLLOW_UPS,
    // Conversion events (worker, serve, `herald conversions import`).
    m::CONVERSIONS,
    m::MESSAGE_STATUSES,
    m::INBOUND_MESSAGES,
    m::OPTINS,
    m::BILLED_COST,
    // The retention purge of workers and serve.
    m::PURGED_ROWS,
    // The admin API of serve.
    m::ADMIN_REQUESTS,
    // The recipient-events relay of workers and serve (HERALD_RECIPIENT_EVENTS).
    m::CRM_EVENTS,
    m::CRM_EVENTS_DEAD,
    m::CRM_OUTBOX_DEPTH,
    m::CRM_OUTBOX_OLDEST,
];

#[test]
fn every_exported_metric_is_classified_for_the_engine_run_test() {
    let classified: std::collections::BTreeSet<&str> = ENGINE_ALWAYS
        .iter()
        .chain(ENGINE_ON_FAULTS)
        .chain(NOT_FROM_SENDING)
        .copied()
        .collect();
    let all: std::collections::BTreeSet<&str> = m::ALL.iter().copied().collect();
    assert_eq!(
        classified, all,
        "a metric was added to or removed from telemetry::metrics::ALL: classify it here"
    );
}

#[tokio::test]
async fn after_an_engine_run_the_metrics_match_the_simulator_and_pass_promtool() {
    let metrics = prometheus();
    const CLEAN: &str = "900000000000001";
    const FAULTY: &str = "900000000000002";

    let env = Env::start(EnvOptions::default()).await;
    add_sender(&env, CLEAN).await;
    let to = numbers(120);
    env.consent_all(&to).await;
    env.store
        .set_campaign_budget(
            &herald::domain::CampaignId::parse("metrics-clean").unwrap(),
            Some(&herald::store::Budget {
                micros: 100_000_000,
                currency: "USD".into(),
            }),
        )
        .await
        .unwrap();
    let report = env.finished(&job_for(CLEAN, "clean", &to)).await;
    assert_eq!(report.total("sent"), 120, "{report:?}");

    let faulty = Env::start(EnvOptions {
        sim: SimConfig {
            rate_per_sec: 1_000_000,
            accept_unknown_templates: true,
            fault_5xx_ratio: 0.1,
            fault_130429_ratio: 0.1,
            ..SimConfig::default()
        },
        ..EnvOptions::default()
    })
    .await;
    add_sender(&faulty, FAULTY).await;
    faulty.consent_all(&to).await;
    let report = faulty.finished(&job_for(FAULTY, "faulty", &to)).await;
    assert!(report.retries > 0, "{report:?}");

    let text = metrics.render();
    for (env, sender) in [(&env, CLEAN), (&faulty, FAULTY)] {
        let sent = sample(
            &text,
            m::MESSAGES,
            &[
                ("outcome", "sent"),
                ("sender", sender),
                ("category", "marketing"),
            ],
        );
        assert_eq!(
            sent,
            env.sim.stats().accepted as f64,
            "herald_messages_total{{outcome=\"sent\",sender=\"{sender}\"}} vs the simulator"
        );
    }
    // 100 USD less 120 German marketing templates at 0.1365 USD.
    assert_eq!(
        sample(
            &text,
            m::BUDGET_REMAINING,
            &[("campaign", "metrics-clean"), ("currency", "USD")]
        ),
        (100_000_000 - 120 * 136_500) as f64
    );
    let present = families(&text);
    let missing: Vec<&str> = ENGINE_ALWAYS
        .iter()
        .chain(ENGINE_ON_FAULTS)
        .copied()
        .filter(|name| !present.contains(*name))
        .collect();
    assert_eq!(
        missing,
        Vec::<&str>::new(),
        "not emitted by an engine run:\n{text}"
    );
    let unknown: Vec<&String> = present
        .iter()
        .filter(|name| name.starts_with("herald_") && !m::ALL.contains(&name.as_str()))
        .collect();
    assert_eq!(
        unknown,
        Vec::<&String>::new(),
        "emitted but not in metrics::ALL"
    );

    match promtool() {
        None => eprintln!(
            "SKIPPED: promtool not found (PATH or ~/.cache/herald-deploy-check/bin); \
             run deploy/check.sh once to install it"
        ),
        Some(promtool) => {
            use tokio::io::AsyncWriteExt;
            let mut child = tokio::process::Command::new(&promtool)
                .args(["check", "metrics"])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("run promtool");
            let mut stdin = child.stdin.take().unwrap();
            stdin.write_all(text.as_bytes()).await.unwrap();
            drop(stdin);
            let out = child.wait_with_output().await.unwrap();
            assert!(
                out.status.success(),
                "promtool check metrics failed:\n{}{}\n--- scraped ---\n{text}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}
