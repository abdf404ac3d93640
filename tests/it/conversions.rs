//! Conversion events (DESIGN §1.6) on all three ways in — `{prefix}.conversions` consumed by
//! an in-process worker, `POST /api/conversions` on an in-process `herald serve`, and
//! `herald conversions import` as the real binary — and the store's side of them on SQLite and
//! Postgres: idempotency by `event_id`, attribution by key or number to the campaign's main
//! message and its channel, the follow-up flag, unattributed events, GDPR export and erasure.
//! Ledger rows are made with the store's claim and record methods. Tests that need RabbitMQ or
//! Postgres print `SKIPPED` without them, unless `HERALD_REQUIRE_SERVICES=1`.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use herald::amqp::{self, Publisher, Topology, WorkerConfig, WorkerState};
use herald::domain::{
    CampaignId, Category, ChannelKind, Conversion, IdempotencyKey, JobId, Outcome, PhoneNumber,
    SenderId,
};
use herald::store::{Claim, ConversionSummary, OutcomeRecord, Store};
use lapin::options::{BasicGetOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::support;

const CAMPAIGN: &str = "bf-conv";
/// Reached on WhatsApp (key `k-anna`).
const ANNA: &str = "+4915111100001";
/// Prefers SMS (key `k-ben`).
const BEN: &str = "+4915111100002";
/// Never messaged by the campaign.
const STRANGER: &str = "+4915111100009";

fn campaign() -> CampaignId {
    CampaignId::parse(CAMPAIGN).unwrap()
}

fn claim(key: &str, to: &str, channel: ChannelKind) -> Claim {
    Claim {
        key: IdempotencyKey::parse(key).unwrap(),
        campaign: campaign(),
        job: JobId::parse("job-1").unwrap(),
        sender: SenderId::parse(support::SENDER).unwrap(),
        recipient: to.into(),
        template: "flash_sale".into(),
        language: "de".into(),
        category: Category::Marketing,
        channel,
    }
}

/// Claims `key` for `to` and records `outcome`: a ledger row as a run leaves it.
async fn ledger_row(
    store: &Arc<dyn Store>,
    key: &str,
    to: &str,
    channel: ChannelKind,
    outcome: Outcome,
) {
    store
        .claim("test", Duration::from_secs(60), &[claim(key, to, channel)])
        .await
        .unwrap();
    store
        .record_outcomes(&[OutcomeRecord {
            key: IdempotencyKey::parse(key).unwrap(),
            outcome,
            attempts: 1,
        }])
        .await
        .unwrap();
}

fn sent(key: &str) -> Outcome {
    Outcome::Sent {
        wamid: format!("wamid.{key}"),
    }
}

/// Anna's WhatsApp message and Ben's SMS, both sent.
async fn seed_ledger(store: &Arc<dyn Store>) {
    ledger_row(store, "k-anna", ANNA, ChannelKind::WhatsApp, sent("k-anna")).await;
    ledger_row(store, "k-ben", BEN, ChannelKind::Sms, sent("k-ben")).await;
}

/// An event of [`CAMPAIGN`] as a shop sends it; `who` is `{"to": …}` or `{"key": …}`.
fn event(id: &str, who: Value, amount: &str) -> Value {
    let mut v = json!({
        "version": 1, "event_id": id, "campaign_id": CAMPAIGN, "event": "order",
        "at": Utc::now().to_rfc3339(),
        "value": { "amount": amount, "currency": "EUR" },
    });
    v.as_object_mut()
        .unwrap()
        .extend(who.as_object().unwrap().clone());
    v
}

fn parse(events: &[Value]) -> Vec<Conversion> {
    Conversion::from_value(Value::Array(events.to_vec()), Utc::now()).expect("valid events")
}

/// Three events: Anna by her key's SMS form, Ben by number, a stranger by number.
fn three_events() -> Vec<Value> {
    vec![
        event("order-1", json!({ "key": "k-anna#sms" }), "89.90"),
        event("order-2", json!({ "to": "+49 151 111 000 02" }), "10"),
        event("order-3", json!({ "to": STRANGER }), "5.5"),
    ]
}

fn channel_row(summary: &[ConversionSummary], channel: Option<ChannelKind>) -> ConversionSummary {
    summary
        .iter()
        .find(|s| s.channel == channel)
        .cloned()
        .unwrap_or_default()
}

fn total(summary: &[ConversionSummary]) -> u64 {
    summary.iter().map(|s| s.conversions).sum()
}

// --- the store, on SQLite and Postgres -------------------------------------------------------

async fn events_are_matched_by_key_or_number_and_strangers_kept_unattributed(
    store: Arc<dyn Store>,
) {
    seed_ledger(&store).await;
    let mut events = three_events();
    // A key of no message, and Anna's number in another campaign: no match either.
    events.push(event("order-4", json!({ "key": "k-nobody" }), "1"));
    let mut elsewhere = event("order-5", json!({ "to": ANNA }), "1");
    elsewhere["campaign_id"] = json!("another-campaign");
    events.push(elsewhere);
    let tally = store.record_conversions(&parse(&events)).await.unwrap();
    assert_eq!(
        (tally.stored, tally.duplicates, tally.unattributed),
        (5, 0, 3)
    );
    let summary = store.conversion_summary(&campaign()).await.unwrap();
    assert_eq!(total(&summary), 4, "{summary:?}");
    assert_eq!(channel_row(&summary, None).conversions, 2);
    assert_eq!(
        summary.last().unwrap().channel,
        None,
        "unattributed events come last"
    );
    let converted = store
        .converted_keys(
            &campaign(),
            &["k-anna".into(), "k-ben".into(), "k-nobody".into()],
        )
        .await
        .unwrap();
    assert_eq!(converted, HashSet::from(["k-anna".into(), "k-ben".into()]));
    assert!(
        store
            .converted_keys(&campaign(), &[])
            .await
            .unwrap()
            .is_empty()
    );
}

async fn a_repeated_event_id_is_a_duplicate_and_changes_nothing(store: Arc<dyn Store>) {
    seed_ledger(&store).await;
    let first = store
        .record_conversions(&parse(&three_events()))
        .await
        .unwrap();
    assert_eq!(
        (first.stored, first.duplicates, first.unattributed),
        (3, 0, 1)
    );
    // The same events again, one with another amount, and one twice in the batch.
    let mut again = three_events();
    again[0]["value"]["amount"] = json!("1000");
    again.push(event("order-9", json!({ "key": "k-ben" }), "1"));
    again.push(event("order-9", json!({ "key": "k-ben" }), "1"));
    let tally = store.record_conversions(&parse(&again)).await.unwrap();
    assert_eq!(
        (tally.stored, tally.duplicates, tally.unattributed),
        (1, 4, 0)
    );
    let summary = store.conversion_summary(&campaign()).await.unwrap();
    assert_eq!(
        channel_row(&summary, Some(ChannelKind::WhatsApp))
            .revenue
            .get("EUR"),
        Some(&89_900_000),
        "the first report of an event stands"
    );
    assert_eq!(total(&summary), 4);
    assert_eq!(
        store.record_conversions(&[]).await.unwrap(),
        Default::default()
    );
}

async fn the_latest_main_message_to_a_number_gets_the_credit_never_a_derived_one(
    store: Arc<dyn Store>,
) {
    ledger_row(&store, "k-z-old", ANNA, ChannelKind::WhatsApp, sent("old")).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    ledger_row(&store, "k-a-new", ANNA, ChannelKind::WhatsApp, sent("new")).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    // Later still, rows of Anna's derived keys: never a main message.
    ledger_row(
        &store,
        "k-a-new#follow-up",
        ANNA,
        ChannelKind::WhatsApp,
        sent("f"),
    )
    .await;
    ledger_row(&store, "k-z-old#sms", ANNA, ChannelKind::Sms, sent("s")).await;
    store
        .record_conversions(&parse(&[event("o-1", json!({ "to": ANNA }), "1")]))
        .await
        .unwrap();
    let converted = store
        .converted_keys(
            &campaign(),
            &["k-z-old", "k-a-new", "k-a-new#follow-up", "k-z-old#sms"].map(String::from),
        )
        .await
        .unwrap();
    assert_eq!(converted, HashSet::from(["k-a-new".into()]));
    // A key given wins over a number given with it.
    let both = event("o-2", json!({ "key": "k-z-old", "to": BEN }), "1");
    store.record_conversions(&parse(&[both])).await.unwrap();
    assert!(
        store
            .converted_keys(&campaign(), &["k-z-old".into()])
            .await
            .unwrap()
            .contains("k-z-old")
    );
}

async fn a_failed_whatsapp_message_whose_sms_fallback_went_out_credits_sms(store: Arc<dyn Store>) {
    ledger_row(
        &store,
        "k-anna",
        ANNA,
        ChannelKind::WhatsApp,
        Outcome::Failed { code: 131_026 },
    )
    .await;
    ledger_row(&store, "k-anna#sms", ANNA, ChannelKind::Sms, sent("sms")).await;
    // Ben's WhatsApp message failed and so did its fallback: WhatsApp keeps it.
    ledger_row(
        &store,
        "k-ben",
        BEN,
        ChannelKind::WhatsApp,
        Outcome::Failed { code: 131_026 },
    )
    .await;
    ledger_row(
        &store,
        "k-ben#sms",
        BEN,
        ChannelKind::Sms,
        Outcome::Failed { code: 1 },
    )
    .await;
    let events = [
        event("o-anna", json!({ "to": ANNA }), "20"),
        event("o-ben", json!({ "key": "k-ben" }), "30"),
    ];
    let tally = store.record_conversions(&parse(&events)).await.unwrap();
    assert_eq!(tally.unattributed, 0);
    let summary = store.conversion_summary(&campaign()).await.unwrap();
    let sms = channel_row(&summary, Some(ChannelKind::Sms));
    assert_eq!(
        (sms.conversions, sms.revenue.get("EUR")),
        (1, Some(&20_000_000))
    );
    let whatsapp = channel_row(&summary, Some(ChannelKind::WhatsApp));
    assert_eq!(whatsapp.conversions, 1, "{summary:?}");
}

async fn a_conversion_after_the_follow_up_went_out_is_credited_to_it(store: Arc<dyn Store>) {
    seed_ledger(&store).await;
    store
        .record_conversions(&parse(&[event("before", json!({ "key": "k-anna" }), "1")]))
        .await
        .unwrap();
    // The follow-up is claimed (not out yet), then sent.
    store
        .claim(
            "test",
            Duration::from_secs(60),
            &[claim("k-anna#follow-up", ANNA, ChannelKind::WhatsApp)],
        )
        .await
        .unwrap();
    store
        .record_conversions(&parse(&[event("pending", json!({ "to": ANNA }), "1")]))
        .await
        .unwrap();
    store
        .record_outcomes(&[OutcomeRecord {
            key: IdempotencyKey::parse("k-anna#follow-up").unwrap(),
            outcome: sent("follow-up"),
            attempts: 1,
        }])
        .await
        .unwrap();
    store
        .record_conversions(&parse(&[event(
            "after",
            json!({ "key": "k-anna#follow-up" }),
            "2",
        )]))
        .await
        .unwrap();
    let summary = store.conversion_summary(&campaign()).await.unwrap();
    let whatsapp = channel_row(&summary, Some(ChannelKind::WhatsApp));
    assert_eq!(whatsapp.conversions, 3, "{summary:?}");
    assert_eq!(whatsapp.after_follow_up, 1, "{summary:?}");
    assert_eq!(whatsapp.revenue.get("EUR"), Some(&4_000_000));
}

async fn a_contacts_conversions_are_exported_and_erased_with_it(store: Arc<dyn Store>) {
    super::support::configure_hash_key();
    seed_ledger(&store).await;
    let events = [
        event("o-anna-1", json!({ "key": "k-anna" }), "1"),
        // Unattributed, but by Anna's number: kept with it, found by it.
        {
            let mut e = event("o-anna-2", json!({ "to": ANNA }), "1");
            e["campaign_id"] = json!("another-campaign");
            e
        },
        event("o-ben", json!({ "to": BEN }), "1"),
    ];
    store.record_conversions(&parse(&events)).await.unwrap();
    let anna = PhoneNumber::parse(ANNA).unwrap();
    let export = store.export_contact(&anna).await.unwrap();
    let listed: Vec<&str> = export["conversions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(listed.len(), 2, "{export}");
    assert!(listed.contains(&"o-anna-1") && listed.contains(&"o-anna-2"));
    store.erase_contact(&anna).await.unwrap();
    let after = store.export_contact(&anna).await.unwrap();
    assert_eq!(after["conversions"], json!([]), "{after}");
    let summary = store.conversion_summary(&campaign()).await.unwrap();
    assert_eq!(total(&summary), 1, "only Ben's is left: {summary:?}");
    let ben = store
        .export_contact(&PhoneNumber::parse(BEN).unwrap())
        .await
        .unwrap();
    assert_eq!(ben["conversions"][0]["event_id"], "o-ben");
    assert_eq!(ben["conversions"][0]["channel"], "sms");
}

macro_rules! on_both_stores {
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

on_both_stores!(
    events_are_matched_by_key_or_number_and_strangers_kept_unattributed,
    a_repeated_event_id_is_a_duplicate_and_changes_nothing,
    the_latest_main_message_to_a_number_gets_the_credit_never_a_derived_one,
    a_failed_whatsapp_message_whose_sms_fallback_went_out_credits_sms,
    a_conversion_after_the_follow_up_went_out_is_credited_to_it,
    a_contacts_conversions_are_exported_and_erased_with_it,
);

// --- HTTP: POST /api/conversions ---------------------------------------------------------------

const ADMIN_TOKEN: &str = "conversions-admin-token";

/// `herald serve` in this process on a free port, stopped on drop.
struct Serve {
    url: String,
    client: reqwest::Client,
    stop: CancellationToken,
}

impl Drop for Serve {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Serve {
    async fn start(store: &Arc<dyn Store>, admin_token: Option<&str>) -> Serve {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/api/conversions", listener.local_addr().unwrap());
        let stop = CancellationToken::new();
        let config = herald::http::ServeConfig {
            webhooks: herald::http::WebhookConfig {
                app_secret: "secret".into(),
                verify_token: None,
                opt_out: herald::http::OptOutWords::default(),
                clock: herald::domain::Clock::system(),
                rate_card: std::sync::Arc::new(herald::policy::cost::RateCard::builtin()),
                recipient_events: None,
            },
            admin_token: admin_token.map(String::from),
            shutdown_delay: Duration::ZERO,
            drain: Duration::from_secs(1),
        };
        tokio::spawn(herald::http::run(
            listener,
            Arc::clone(store),
            config,
            stop.clone(),
        ));
        Serve {
            url,
            client: reqwest::Client::new(),
            stop,
        }
    }

    async fn post(&self, token: Option<&str>, body: impl Into<reqwest::Body>) -> (u16, Value) {
        let mut req = self
            .client
            .post(&self.url)
            .header("content-type", "application/json")
            .body(body);
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        let resp = req.send().await.expect("serve answers");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }
}

/// The value of `herald_conversions_total{path, result}` in this test process (0 if absent).
fn conversions_metric(path: &str, result: &str) -> f64 {
    let text = crate::serve::prometheus().render();
    let want = [format!("path=\"{path}\""), format!("result=\"{result}\"")];
    text.lines()
        .filter(|l| l.starts_with(herald::telemetry::metrics::CONVERSIONS))
        .filter(|l| want.iter().all(|w| l.contains(w.as_str())))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// What the three events leave in the store (any way in).
async fn assert_three_events_recorded(store: &Arc<dyn Store>) {
    let summary = store.conversion_summary(&campaign()).await.unwrap();
    let whatsapp = channel_row(&summary, Some(ChannelKind::WhatsApp));
    assert_eq!(whatsapp.conversions, 1, "{summary:?}");
    assert_eq!(whatsapp.revenue.get("EUR"), Some(&89_900_000));
    let sms = channel_row(&summary, Some(ChannelKind::Sms));
    assert_eq!(sms.conversions, 1, "{summary:?}");
    assert_eq!(sms.revenue.get("EUR"), Some(&10_000_000));
    let unattributed = channel_row(&summary, None);
    assert_eq!(unattributed.conversions, 1, "{summary:?}");
    let keys = ["k-anna", "k-ben", "k-other"].map(String::from);
    let converted = store.converted_keys(&campaign(), &keys).await.unwrap();
    assert_eq!(converted, HashSet::from(["k-anna".into(), "k-ben".into()]));
}

#[tokio::test]
async fn conversions_posted_over_http_are_stored_once_and_counted() {
    let (store, _dir) = support::sqlite_store().await;
    seed_ledger(&store).await;
    let serve = Serve::start(&store, Some(ADMIN_TOKEN)).await;
    let before = conversions_metric("http", "duplicate");
    let body = Value::Array(three_events()).to_string();
    let (status, tally) = serve.post(Some(ADMIN_TOKEN), body.clone()).await;
    assert_eq!(status, 200, "{tally}");
    assert_eq!(
        tally,
        json!({ "stored": 3, "duplicates": 0, "unattributed": 1 })
    );
    assert_three_events_recorded(&store).await;
    // The same body again (a shop's retry), and one event on its own.
    let (status, tally) = serve.post(Some(ADMIN_TOKEN), body).await;
    assert_eq!(status, 200);
    assert_eq!(
        tally,
        json!({ "stored": 0, "duplicates": 3, "unattributed": 0 })
    );
    let one = event("order-4", json!({ "key": "k-ben" }), "1").to_string();
    let (status, tally) = serve.post(Some(ADMIN_TOKEN), one).await;
    assert_eq!((status, tally["stored"].as_u64()), (200, Some(1)));
    assert!(conversions_metric("http", "duplicate") >= before + 3.0);
    assert!(conversions_metric("http", "unattributed") >= 1.0);
}

#[tokio::test]
async fn one_bad_event_refuses_the_whole_body_with_its_index_and_field() {
    let (store, _dir) = support::sqlite_store().await;
    seed_ledger(&store).await;
    let serve = Serve::start(&store, Some(ADMIN_TOKEN)).await;
    let rejected = conversions_metric("http", "rejected");
    let mut events = three_events();
    events[1]["at"] = json!("yesterday");
    events[2]["to"] = json!("004915111100009");
    let (status, answer) = serve
        .post(Some(ADMIN_TOKEN), Value::Array(events).to_string())
        .await;
    assert_eq!(status, 400, "{answer}");
    let error = answer["error"].as_str().unwrap();
    assert!(error.starts_with("events[1]: field `at`"), "{error}");
    assert!(conversions_metric("http", "rejected") >= rejected + 3.0);
    let (status, answer) = serve
        .post(Some(ADMIN_TOKEN), json!([three_events()[0], {"version": 1, "event_id": "x", "campaign_id": CAMPAIGN, "to": "004915111100009", "event": "order", "at": Utc::now().to_rfc3339()}]).to_string())
        .await;
    assert_eq!(status, 400);
    let error = answer["error"].as_str().unwrap();
    assert!(error.starts_with("events[1]: field `to`"), "{error}");
    assert!(!error.contains("15111100009"), "never the number: {error}");
    for (body, want) in [
        ("not json", "not valid JSON"),
        ("[]", "no events"),
        (r#"{"version":2}"#, "unsupported version 2"),
    ] {
        let (status, answer) = serve.post(Some(ADMIN_TOKEN), body).await;
        assert_eq!(status, 400, "{body}");
        assert!(
            answer["error"].as_str().unwrap().contains(want),
            "{body}: {answer}"
        );
    }
    let summary = store.conversion_summary(&campaign()).await.unwrap();
    assert!(summary.is_empty(), "nothing stored: {summary:?}");
}

#[tokio::test]
async fn conversions_need_the_admin_token() {
    let (store, _dir) = support::sqlite_store().await;
    let body = Value::Array(three_events()).to_string();
    let serve = Serve::start(&store, Some(ADMIN_TOKEN)).await;
    assert_eq!(serve.post(None, body.clone()).await.0, 401);
    assert_eq!(serve.post(Some("wrong"), body.clone()).await.0, 401);
    let unconfigured = Serve::start(&store, None).await;
    let (status, answer) = unconfigured.post(Some(ADMIN_TOKEN), body).await;
    assert_eq!(status, 403);
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("HERALD_ADMIN_TOKEN")
    );
    assert!(
        store
            .conversion_summary(&campaign())
            .await
            .unwrap()
            .is_empty()
    );
}

// --- CSV: herald conversions import -------------------------------------------------------------

/// `herald` as the real binary on the SQLite database in `dir`.
fn herald(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(args)
        .env("HERALD_DATABASE_URL", support::sqlite_url(dir))
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run herald")
}

const CSV: &str = "event_id,campaign_id,to,key,event,at,amount,currency
order-1,bf-conv,,k-anna#sms,order,2026-01-02T10:00:00Z,89.90,EUR
order-2,bf-conv,+49 151 111 000 02,,order,2026-01-02T10:01:00+01:00,10,EUR
order-3,bf-conv,+4915111100009,,order,2026-01-02T10:02:00Z,5.5,EUR
";

#[tokio::test]
async fn a_csv_is_imported_and_importing_it_again_finds_only_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let store = herald::store::open(&support::sqlite_url(dir.path()))
        .await
        .unwrap();
    seed_ledger(&store).await;
    let file = dir.path().join("orders.csv");
    std::fs::write(&file, CSV).unwrap();
    let file = file.to_str().unwrap();
    let out = herald(dir.path(), &["conversions", "import", file]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout.contains("3 event(s): 3 stored (1 unattributed), 0 duplicate(s) ignored"),
        "{stdout}"
    );
    assert_three_events_recorded(&store).await;
    let out = herald(
        dir.path(),
        &["conversions", "import", file, "--batch-size", "2"],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("3 event(s): 0 stored (0 unattributed), 3 duplicate(s) ignored"),
        "{stdout}"
    );
    let out = herald(dir.path(), &["conversions", "summary", CAMPAIGN]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout.contains("whatsapp     1 conversion(s), 0 after the follow-up, revenue 89.9000 EUR"),
        "{stdout}"
    );
    assert!(stdout.contains("unattributed 1 conversion(s)"), "{stdout}");
}

#[tokio::test]
async fn a_bad_csv_row_stores_nothing_and_exits_2_naming_the_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let store = herald::store::open(&support::sqlite_url(dir.path()))
        .await
        .unwrap();
    let file = dir.path().join("orders.csv");
    let bad = format!(
        "{CSV}order-4,bf-conv,+4915111100009,,order,2026-01-02T10:02:00Z,5.5,\norder-5,bf-conv,,,order,2026-01-02T10:02:00Z,,\norder-6,bf-conv,015111100009,,order,2026-01-02T10:02:00Z,,\n"
    );
    std::fs::write(&file, bad).unwrap();
    let out = herald(
        dir.path(),
        &["conversions", "import", file.to_str().unwrap()],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("line 5: field `value.currency`"),
        "{stderr}"
    );
    assert!(stderr.contains("line 6: field `to`"), "{stderr}");
    assert!(stderr.contains("line 7: field `to`"), "{stderr}");
    assert!(
        stderr.contains("3 invalid row(s)") && stderr.contains("nothing imported"),
        "{stderr}"
    );
    assert!(!stderr.contains("15111100009"), "never a number: {stderr}");
    assert!(
        store
            .conversion_summary(&campaign())
            .await
            .unwrap()
            .is_empty()
    );
    let missing = herald(
        dir.path(),
        &["conversions", "import", "/nonexistent/orders.csv"],
    );
    assert_eq!(missing.status.code(), Some(2));
}

#[test]
fn conversions_import_help_explains_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = herald(dir.path(), &["conversions", "import", "--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        help.contains("event_id,campaign_id,to,key,event,at,amount,currency"),
        "{help}"
    );
    assert!(help.contains("duplicate"), "{help}");
}

// --- AMQP: {prefix}.conversions, consumed by every worker -------------------------------------

/// Long enough for a loaded machine, short enough that a hang fails the test in time.
const WAIT: Duration = Duration::from_secs(30);

/// A test's own prefix, declared like a worker does; deleted on drop.
struct Broker {
    url: String,
    topology: Topology,
    conn: lapin::Connection,
    publisher: Publisher,
}

impl Broker {
    async fn start() -> Option<Broker> {
        let url = support::amqp_url().await?;
        let topology = Topology::new(support::unique_prefix());
        let conn = amqp::connect(&url, "test").await.expect("connect");
        let publisher = Publisher::open(&conn).await.expect("confirm channel");
        topology
            .declare(publisher.channel())
            .await
            .expect("declare the topology");
        Some(Broker {
            url,
            topology,
            conn,
            publisher,
        })
    }

    async fn publish(&self, body: &[u8]) {
        let props = lapin::BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into());
        self.publisher
            .publish(
                &self.topology.conversions_exchange(),
                "shop-1",
                true,
                body,
                props,
            )
            .await
            .expect("the broker confirms the event");
    }

    async fn ready(&self, queue: &str) -> u32 {
        let ch = self.conn.create_channel().await.expect("channel");
        let passive = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        let q = ch
            .queue_declare(queue.into(), passive, FieldTable::default())
            .await
            .expect("the queue exists");
        let _ = ch.close(200, "probe".into()).await;
        q.message_count()
    }

    /// Takes `n` messages from `queue` (acked on the way).
    async fn take(&self, queue: &str, n: usize) -> Vec<lapin::message::Delivery> {
        let ch = self.conn.create_channel().await.expect("channel");
        let deadline = Instant::now() + WAIT;
        let mut out = Vec::new();
        while out.len() < n {
            match ch
                .basic_get(queue.into(), BasicGetOptions { no_ack: true })
                .await
                .expect("basic.get")
            {
                Some(m) => out.push(m.delivery),
                None => {
                    assert!(Instant::now() < deadline, "{queue}: {} of {n}", out.len());
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        out
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let (url, topology) = (self.url.clone(), self.topology.clone());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("cleanup runtime");
            rt.block_on(async {
                if let Ok(conn) = amqp::connect(&url, "test-cleanup").await {
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

fn header(d: &lapin::message::Delivery, name: &str) -> String {
    match d
        .properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get(name))
    {
        Some(AMQPValue::LongString(s)) => s.to_string(),
        other => panic!("header {name}: {other:?}"),
    }
}

/// A worker in this process on `store` (no job comes: the Graph API is never called).
struct Worker {
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), amqp::WorkerError>>,
    state: Arc<WorkerState>,
}

impl Worker {
    async fn start(broker: &Broker, store: &Arc<dyn Store>) -> Worker {
        let engine = support::engine(
            store,
            &herald::graph::GraphConfig::default(),
            support::fast_retries(),
        );
        let shutdown = CancellationToken::new();
        let state = Arc::new(WorkerState::new());
        let task = tokio::spawn(amqp::run_worker(
            WorkerConfig {
                amqp_url: broker.url.clone(),
                topology: broker.topology.clone(),
                prefetch: 4,
                drain: Duration::from_secs(5),
            },
            Arc::new(engine),
            shutdown.clone(),
            Some(Arc::clone(&state)),
        ));
        let deadline = Instant::now() + WAIT;
        while !state.is_ready() {
            assert!(Instant::now() < deadline, "the worker never became ready");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Worker {
            shutdown,
            task,
            state,
        }
    }

    /// SIGTERM: stop consuming, drain, exit.
    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("the worker stops within the drain")
            .expect("no panic")
            .expect("no error");
    }
}

async fn wait_conversions(store: &Arc<dyn Store>, n: u64) {
    let deadline = Instant::now() + WAIT;
    loop {
        let got = total(&store.conversion_summary(&campaign()).await.unwrap());
        if got == n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{got} of {n} conversions recorded"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn conversions_published_to_rabbitmq_are_recorded_once_and_acked() {
    let Some(broker) = Broker::start().await else {
        return;
    };
    let (store, _dir) = support::sqlite_store().await;
    seed_ledger(&store).await;
    let worker = Worker::start(&broker, &store).await;
    let duplicates = conversions_metric("amqp", "duplicate");
    for e in three_events() {
        broker.publish(e.to_string().as_bytes()).await;
    }
    // The shop publishes one again (its own retry).
    broker
        .publish(three_events()[0].to_string().as_bytes())
        .await;
    wait_conversions(&store, 3).await;
    let deadline = Instant::now() + WAIT;
    while conversions_metric("amqp", "duplicate") < duplicates + 1.0 {
        assert!(Instant::now() < deadline, "the duplicate was never counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_three_events_recorded(&store).await;
    worker.stop().await;
    let queue = broker.topology.conversions_queue();
    assert_eq!(broker.ready(&queue).await, 0, "every event acked");
    assert_eq!(broker.ready(&broker.topology.dead_queue()).await, 0);
}

#[tokio::test]
async fn invalid_conversions_are_dead_lettered_with_their_reason_and_nothing_is_stored() {
    let Some(broker) = Broker::start().await else {
        return;
    };
    let (store, _dir) = support::sqlite_store().await;
    seed_ledger(&store).await;
    let worker = Worker::start(&broker, &store).await;
    let mut bad_at = three_events()[0].clone();
    bad_at["at"] = json!("tomorrow-ish");
    let mut bad_to = three_events()[1].clone();
    bad_to["to"] = json!("004915111100002");
    broker.publish(bad_at.to_string().as_bytes()).await;
    broker.publish(bad_to.to_string().as_bytes()).await;
    broker.publish(b"{ not json").await;
    // A list is for HTTP: a message carries one event.
    broker
        .publish(Value::Array(three_events()).to_string().as_bytes())
        .await;
    broker
        .publish(three_events()[2].to_string().as_bytes())
        .await;
    let dead = broker.take(&broker.topology.dead_queue(), 4).await;
    let reasons: Vec<(String, String)> = dead
        .iter()
        .map(|d| {
            (
                header(d, "x-herald-reason-code"),
                header(d, "x-herald-reason"),
            )
        })
        .collect();
    assert!(reasons[0].1.contains("field `at`"), "{reasons:?}");
    assert_eq!(reasons[0].0, "invalid_conversion");
    assert!(reasons[1].1.contains("field `to`"), "{reasons:?}");
    assert!(
        !reasons[1].1.contains("15111100002"),
        "never the number: {reasons:?}"
    );
    assert_eq!(reasons[2].0, "invalid_json");
    assert!(reasons[3].1.contains("JSON object"), "{reasons:?}");
    assert_eq!(
        dead[0].data,
        bad_at.to_string().into_bytes(),
        "the event as published"
    );
    // Only the valid event was stored.
    wait_conversions(&store, 1).await;
    worker.stop().await;
    assert_eq!(broker.ready(&broker.topology.conversions_queue()).await, 0);
    assert_eq!(
        total(&store.conversion_summary(&campaign()).await.unwrap()),
        1
    );
}

/// Switches connections to a test database off or on, cutting those it has: a database
/// outage as the worker sees it.
async fn database_reachable(db_url: &str, reachable: bool) {
    use sqlx::Connection;
    let (base, name) = db_url
        .split('?')
        .next()
        .and_then(|b| b.rsplit_once('/'))
        .expect("a postgres URL with a database");
    let mut admin = sqlx::postgres::PgConnection::connect(&format!("{base}/postgres"))
        .await
        .expect("admin connection");
    sqlx::query(&format!(
        "ALTER DATABASE {name} WITH ALLOW_CONNECTIONS {reachable}"
    ))
    .execute(&mut admin)
    .await
    .expect("alter database");
    if !reachable {
        sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
            .bind(name)
            .execute(&mut admin)
            .await
            .expect("cut connections");
    }
    let _ = admin.close().await;
}

#[tokio::test]
async fn conversions_are_held_through_a_database_outage_and_handed_back_on_shutdown() {
    let Some(broker) = Broker::start().await else {
        return;
    };
    let Some(url) = support::postgres_url().await else {
        return;
    };
    let store = herald::store::open(&url).await.unwrap();
    seed_ledger(&store).await;
    let worker = Worker::start(&broker, &store).await;
    let queue = broker.topology.conversions_queue();

    // Down while an event arrives: held (not acked, not requeued), retried.
    database_reachable(&url, false).await;
    broker
        .publish(three_events()[0].to_string().as_bytes())
        .await;
    let deadline = Instant::now() + WAIT;
    while worker.state.database_ok() {
        assert!(Instant::now() < deadline, "the outage went unnoticed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Stopping hands it back to the queue, in time.
    let started = Instant::now();
    worker.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        broker.ready(&queue).await,
        1,
        "the event went back to the queue"
    );

    // Back up: the next worker records it.
    database_reachable(&url, true).await;
    let worker = Worker::start(&broker, &store).await;
    broker
        .publish(three_events()[1].to_string().as_bytes())
        .await;
    wait_conversions(&store, 2).await;
    // Down again while the worker holds an event, then back: it is recorded without a restart.
    database_reachable(&url, false).await;
    broker
        .publish(three_events()[2].to_string().as_bytes())
        .await;
    let deadline = Instant::now() + WAIT;
    while worker.state.database_ok() {
        assert!(Instant::now() < deadline, "the outage went unnoticed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    database_reachable(&url, true).await;
    wait_conversions(&store, 3).await;
    assert_three_events_recorded(&store).await;
    worker.stop().await;
    assert_eq!(broker.ready(&queue).await, 0);
    support::drop_postgres_database(&url).await;
}
