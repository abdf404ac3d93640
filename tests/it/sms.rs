//! The SMS channel end to end against the simulator's SMSC: a customer who prefers SMS gets
//! the SMS version once; a WhatsApp message that fails (131026 at send, a `failed` status) or
//! is not delivered by its deadline gets exactly one SMS, a delivered one none — also across a
//! restart; throttling is retried without loss; receipts land once, in order or not; STOP by
//! SMS revokes SMS consent only.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use herald::app::sms::{run_inbox, run_inbox_with_events};
use herald::channel::SmsChannel;
use herald::channel::sms::SmsRoute;
use herald::domain::{
    CampaignId, Category, ChannelKind, Consent, ConsentState, DeliveryUpdate, EventOptions,
    IdempotencyKey, PhoneNumber,
};
use herald::engine::{FALLBACK_TIMER, JobRun, RunControl, sms_key};
use herald::policy::opt_out::OptOutWords;
use herald::simulator::{MoRequest, SimConfig, SmscConfig};
use herald::store::Store;
use serde_json::{Value, json};

use super::engine::{Env, EnvOptions, job_with, numbers};
use super::support::SENDER;

/// An environment whose simulator also runs an SMSC and whose engine has the SMS route.
struct SmsEnv {
    env: Env,
    /// The route's URL, for a second engine (a restart).
    url: String,
}

fn smsc(config: SmscConfig) -> EnvOptions {
    EnvOptions {
        sim: SimConfig {
            rate_per_sec: 1_000_000,
            accept_unknown_templates: true,
            smsc: Some(SmscConfig {
                receipt_delay: Duration::from_millis(20),
                ..config
            }),
            ..SimConfig::default()
        },
        ..EnvOptions::default()
    }
}

impl SmsEnv {
    async fn start(opts: EnvOptions, route_options: &str) -> SmsEnv {
        let mut env = Env::start(opts).await;
        let addr = env.sim.smpp_addr().expect("the simulator runs an SMSC");
        let url = format!("smpp://herald:secret@{addr}?name=test&{route_options}");
        env.engine = with_route(env.engine, &env.store, &url).await;
        SmsEnv { env, url }
    }

    /// The recipients' SMS consent for marketing.
    async fn consent_sms(&self, to: &[String]) {
        let consents: Vec<Consent> = to
            .iter()
            .map(|n| Consent {
                phone: PhoneNumber::parse(n).unwrap(),
                category: Category::Marketing,
                channel: ChannelKind::Sms,
                granted_at: Utc::now() - chrono::Duration::days(1),
                source: "test".into(),
                proof: "checkbox".into(),
            })
            .collect();
        self.env.store.grant_consents(&consents).await.unwrap();
    }

    async fn row(&self, key: &str) -> herald::store::LedgerRow {
        self.env
            .store
            .ledger_entry(&IdempotencyKey::from_trusted(key.to_owned()))
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("no ledger row for {key}"))
    }

    /// Waits until the SMS rows of `keys` have a delivery state from a receipt.
    async fn receipts_for(&self, keys: &[String]) {
        for _ in 0..200 {
            let mut all = true;
            for k in keys {
                all &= self.row(k).await.delivery.is_some();
            }
            if all {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("receipts did not arrive for {keys:?}");
    }
}

/// `engine` with the SMS route at `url`, its inbox applying to `store`.
async fn with_route(
    engine: herald::engine::Engine,
    store: &Arc<dyn Store>,
    url: &str,
) -> herald::engine::Engine {
    let route = SmsRoute::parse(url).unwrap();
    let (channel, inbound) = SmsChannel::start(route.clone());
    assert!(channel.wait_bound(Duration::from_secs(5)).await, "binds");
    tokio::spawn(run_inbox(
        Arc::clone(store),
        route,
        OptOutWords::default(),
        inbound,
    ));
    engine.with_sms(Arc::new(channel))
}

fn ctl() -> RunControl {
    RunControl {
        shutdown: Default::default(),
        progress: None,
    }
}

/// A job of seed 002's shape: `to` on WhatsApp unless listed in `sms`.
fn flash_sale(
    job_id: &str,
    campaign: &str,
    to: &[String],
    sms: &[usize],
    fallback: Value,
) -> Value {
    let recipients: Vec<Value> = to
        .iter()
        .enumerate()
        .map(|(i, n)| {
            if sms.contains(&i) {
                json!({ "to": n, "channel": "sms", "vars": { "name": format!("Kundin {i}") } })
            } else {
                json!({ "to": n, "vars": { "name": format!("Kunde {i}") } })
            }
        })
        .collect();
    let mut job = json!({
        "version": 1, "job_id": job_id, "campaign_id": campaign, "sender": SENDER,
        "template": { "name": "flash_sale", "language": "de", "category": "marketing" },
        "recipients": recipients,
        "sms": { "from": "ACME", "text": "ACME: Sneaker -30 % nur heute, {{name}}: https://acme.example/s STOP: Antwort STOP" },
    });
    if !fallback.is_null() {
        job["fallback"] = fallback;
    }
    job
}

fn key(campaign: &str, to: &str) -> String {
    IdempotencyKey::derive(
        &CampaignId::parse(campaign).unwrap(),
        &PhoneNumber::parse(to).unwrap(),
        "flash_sale",
        "de",
    )
    .to_string()
}

#[tokio::test]
async fn a_customer_who_prefers_sms_gets_the_sms_version_once_and_its_receipt() {
    let s = SmsEnv::start(smsc(SmscConfig::default()), "tps=1000").await;
    let to = numbers(6);
    s.env.consent_all(&to).await;
    s.consent_sms(&to[4..]).await;
    let job = job_with(flash_sale("j-pref", "c-pref", &to, &[4, 5], Value::Null));
    let report = match s.env.run(&job).await {
        JobRun::Finished(r) => r,
        other => panic!("{other:?}"),
    };
    assert_eq!(report.total("sent"), 6, "{report:?}");
    // Four templates on WhatsApp, two SMS, nobody on both.
    assert_eq!(s.env.sim.stats().accepted, 4);
    let sms = s.env.sim.sms_messages();
    assert_eq!(sms.len(), 2, "{sms:?}");
    let got: HashSet<_> = sms.iter().map(|m| m.to.clone()).collect();
    assert_eq!(got, HashSet::from([to[4].clone(), to[5].clone()]));
    assert!(sms.iter().any(|m| m.text.contains("Kundin 4")), "{sms:?}");
    assert_eq!(s.env.sim.stats().sms.unwrap().duplicates, 0);
    let keys = [key("c-pref", &to[4]), key("c-pref", &to[5])];
    s.receipts_for(&keys).await;
    for k in &keys {
        let row = s.row(k).await;
        assert_eq!(row.channel, ChannelKind::Sms);
        assert_eq!(
            (row.state.as_str(), row.delivery.as_deref()),
            ("sent", Some("delivered"))
        );
    }
    // Run again: nothing twice.
    s.env.run(&job).await;
    assert_eq!(s.env.sim.sms_messages().len(), 2);
    assert_eq!(s.env.sim.stats().accepted, 4);
}

#[tokio::test]
async fn without_sms_consent_the_sms_version_is_skipped() {
    let s = SmsEnv::start(smsc(SmscConfig::default()), "tps=1000").await;
    let to = numbers(2);
    // WhatsApp consent is not consent for SMS.
    s.env.consent_all(&to).await;
    let job = job_with(flash_sale("j-nocons", "c-nocons", &to, &[1], Value::Null));
    s.env.run(&job).await;
    assert!(s.env.sim.sms_messages().is_empty());
    let row = s.row(&key("c-nocons", &to[1])).await;
    assert_eq!(row.state, "skipped", "{row:?}");
}

#[tokio::test]
async fn a_number_not_on_whatsapp_gets_exactly_one_sms() {
    let to = numbers(4);
    let mut opts = smsc(SmscConfig::default());
    opts.sim.undeliverable = HashSet::from([to[1].clone(), to[3].clone()]);
    let s = SmsEnv::start(opts, "tps=1000").await;
    s.env.consent_all(&to).await;
    s.consent_sms(&to).await;
    let job = job_with(flash_sale(
        "j-131026",
        "c-131026",
        &to,
        &[],
        json!({ "when": ["not_on_whatsapp"] }),
    ));
    s.env.run(&job).await;
    let sms = s.env.sim.sms_messages();
    let got: Vec<_> = sms.iter().map(|m| m.to.clone()).collect();
    assert_eq!(got.len(), 2, "{sms:?}");
    assert!(got.contains(&to[1]) && got.contains(&to[3]), "{got:?}");
    let wa = s.row(&key("c-131026", &to[1])).await;
    assert_eq!(
        (wa.state.as_str(), wa.reason.as_deref()),
        ("failed", Some("131026"))
    );
    let fallback = s.row(&sms_key(&key("c-131026", &to[1]))).await;
    assert_eq!(
        (fallback.state.as_str(), fallback.channel),
        ("sent", ChannelKind::Sms)
    );
    // Again, and the timers fired again: still one SMS each.
    s.env.run(&job).await;
    s.env.engine.fire_fallbacks(&ctl()).await.unwrap();
    assert_eq!(s.env.sim.sms_messages().len(), 2);
    assert_eq!(s.env.sim.stats().sms.unwrap().duplicates, 0);
}

#[tokio::test]
async fn a_failed_status_sends_one_sms_and_a_delivered_message_none() {
    let s = SmsEnv::start(smsc(SmscConfig::default()), "tps=1000").await;
    let to = numbers(3);
    s.env.consent_all(&to).await;
    s.consent_sms(&to).await;
    let job = job_with(flash_sale(
        "j-failed",
        "c-failed",
        &to,
        &[],
        json!({ "when": ["failed", "not_on_whatsapp"] }),
    ));
    s.env.run(&job).await;
    assert!(
        s.env.sim.sms_messages().is_empty(),
        "sent, nothing failed yet"
    );
    // What `herald serve` does with a status webhook: apply it, and for a failure bring the
    // fallback forward.
    let status = |n: &str, status: &str, code: Option<i64>| {
        let k = key("c-failed", n);
        DeliveryUpdate {
            wamid: String::new(),
            key: Some(IdempotencyKey::from_trusted(k)),
            status: status.into(),
            at: Utc::now(),
            error_code: code,
            billed_category: None,
        }
    };
    let updates = [
        status(&to[0], "failed", Some(131049)),
        status(&to[1], "delivered", None),
        status(&to[2], "failed", Some(131026)),
    ];
    for u in &updates {
        let mut u = u.clone();
        u.wamid = s.row(u.key.as_ref().unwrap().as_str()).await.wamid.unwrap();
        s.env.store.apply_deliveries(&[u.clone()]).await.unwrap();
        if u.status == "failed" {
            s.env
                .store
                .advance_timer(
                    FALLBACK_TIMER,
                    &sms_key(u.key.unwrap().as_str()),
                    Utc::now(),
                )
                .await
                .unwrap();
        }
    }
    let round = s.env.engine.fire_fallbacks(&ctl()).await.unwrap();
    assert_eq!(round.sent, 2, "{round:?}");
    let got: HashSet<_> = s.env.sim.sms_messages().into_iter().map(|m| m.to).collect();
    assert_eq!(got, HashSet::from([to[0].clone(), to[2].clone()]));
    // A week later the delivered one's timer ends without an SMS.
    let later = Utc::now() + chrono::Duration::days(8);
    let round = s.env.engine.fire_fallbacks_at(later, &ctl()).await.unwrap();
    assert_eq!((round.sent, round.dropped), (0, 1), "{round:?}");
    assert_eq!(s.env.sim.sms_messages().len(), 2);
}

#[tokio::test]
async fn an_undelivered_deadline_fires_after_a_restart_and_never_after_a_delivery() {
    let s = SmsEnv::start(smsc(SmscConfig::default()), "tps=1000").await;
    let to = numbers(2);
    s.env.consent_all(&to).await;
    s.consent_sms(&to).await;
    let job = job_with(flash_sale(
        "j-undeliv",
        "c-undeliv",
        &to,
        &[],
        json!({ "when": ["undelivered"], "undelivered_after": "PT30M" }),
    ));
    s.env.run(&job).await;
    // to[0] is delivered, to[1] never hears back.
    let k0 = key("c-undeliv", &to[0]);
    let wamid = s.row(&k0).await.wamid.unwrap();
    s.env
        .store
        .apply_deliveries(&[DeliveryUpdate {
            wamid,
            key: Some(IdempotencyKey::from_trusted(k0.clone())),
            status: "delivered".into(),
            at: Utc::now(),
            error_code: None,
            billed_category: None,
        }])
        .await
        .unwrap();
    // Before the deadline: nothing.
    let round = s.env.engine.fire_fallbacks(&ctl()).await.unwrap();
    assert_eq!(round.sent, 0);
    // A restart: a new engine (a new process) on the same store fires it 31 minutes later.
    let restarted = with_route(
        super::support::engine(&s.env.store, &s.env.graph, super::support::fast_retries()),
        &s.env.store,
        &s.url,
    )
    .await;
    let later = Utc::now() + chrono::Duration::minutes(31);
    let round = restarted.fire_fallbacks_at(later, &ctl()).await.unwrap();
    assert_eq!((round.sent, round.dropped), (1, 1), "{round:?}");
    let sms = s.env.sim.sms_messages();
    assert_eq!(sms.len(), 1);
    assert_eq!(sms[0].to, to[1]);
    // Fired again: nothing more.
    restarted.fire_fallbacks_at(later, &ctl()).await.unwrap();
    assert_eq!(s.env.sim.sms_messages().len(), 1);
}

#[tokio::test]
async fn throttling_by_the_smsc_is_retried_to_the_end_without_loss_or_duplicates() {
    // The SMSC allows 20/s; herald is told 200: it gets 0x58, slows down and retries.
    let s = SmsEnv::start(
        smsc(SmscConfig {
            tps: 20,
            ..SmscConfig::default()
        }),
        "tps=200",
    )
    .await;
    let to = numbers(40);
    s.env.consent_all(&to).await;
    s.consent_sms(&to).await;
    let all: Vec<usize> = (0..to.len()).collect();
    let job = job_with(flash_sale(
        "j-throttle",
        "c-throttle",
        &to,
        &all,
        Value::Null,
    ));
    // Keys still throttled after their tries go back pending: run again, as a worker does
    // with a deferred job, until none is left.
    let mut sent = 0;
    for _ in 0..20 {
        let report = match s.env.run(&job).await {
            JobRun::Finished(r) => r,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            report.total("failed"),
            0,
            "a throttle never fails: {report:?}"
        );
        sent += report.total("sent");
        if report.remaining == 0 && report.total("sent") + report.already_done >= 40 {
            break;
        }
    }
    assert_eq!(sent, 40);
    let stats = s.env.sim.stats().sms.unwrap();
    assert!(stats.throttled > 0, "{stats:?}");
    assert_eq!((stats.messages, stats.duplicates), (40, 0), "{stats:?}");
}

#[tokio::test]
async fn receipts_twice_and_in_decimal_land_once_and_stay_final() {
    let to = numbers(3);
    let s = SmsEnv::start(
        smsc(SmscConfig {
            duplicate_receipts: true,
            decimal_receipt_ids: true,
            undeliverable: HashSet::from([to[1].clone()]),
            ..SmscConfig::default()
        }),
        "tps=1000&receipt_ids=decimal",
    )
    .await;
    s.env.consent_all(&to).await;
    s.consent_sms(&to).await;
    let all: Vec<usize> = (0..to.len()).collect();
    let job = job_with(flash_sale("j-dlr", "c-dlr", &to, &all, Value::Null));
    s.env.run(&job).await;
    let keys: Vec<String> = to.iter().map(|n| key("c-dlr", n)).collect();
    s.receipts_for(&keys).await;
    assert_eq!(s.row(&keys[0]).await.delivery.as_deref(), Some("delivered"));
    let failed = s.row(&keys[1]).await;
    assert_eq!(failed.delivery.as_deref(), Some("failed"));
    // A late "delivered" for the failed one (out of order) changes nothing: failed is final.
    let id = failed.wamid.clone().unwrap();
    let changed = s
        .env
        .store
        .apply_sms_receipts(&[herald::domain::SmsReceiptUpdate {
            message_ids: vec![id],
            status: "delivered",
            error: None,
        }])
        .await
        .unwrap();
    assert_eq!(changed, [Some(false)]);
    assert_eq!(s.row(&keys[1]).await.delivery.as_deref(), Some("failed"));
}

#[tokio::test]
async fn stop_by_sms_revokes_sms_consent_only() {
    let s = SmsEnv::start(smsc(SmscConfig::default()), "tps=1000").await;
    let to = numbers(1);
    s.env.consent_all(&to).await;
    s.consent_sms(&to).await;
    // The route is bound: the SMSC has a session to deliver the MO message to.
    s.env
        .sim
        .send_mo(&MoRequest {
            from: to[0].clone(),
            to: "ACME".into(),
            text: " Stopp! ".into(),
        })
        .await
        .expect("delivered to herald's session");
    let phone = PhoneNumber::parse(&to[0]).unwrap();
    let state = |channel| {
        let store = Arc::clone(&s.env.store);
        let phone = phone.clone();
        async move {
            store
                .consent_states(Category::Marketing, channel, &[phone])
                .await
                .unwrap()[0]
        }
    };
    for _ in 0..100 {
        if state(ChannelKind::Sms).await == ConsentState::OptedOut {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(state(ChannelKind::Sms).await, ConsentState::OptedOut);
    assert_eq!(state(ChannelKind::WhatsApp).await, ConsentState::Granted);
}

/// With recipient events on, a STOP by SMS also tells the CRM: one `opted_out` event about the
/// number's campaign message — not two for a STOP sent twice.
#[tokio::test]
async fn stop_by_sms_with_recipient_events_on_is_one_opted_out_event() {
    let mut env = Env::start(smsc(SmscConfig::default())).await;
    let addr = env.sim.smpp_addr().expect("the simulator runs an SMSC");
    let route =
        SmsRoute::parse(&format!("smpp://herald:secret@{addr}?name=test&tps=1000")).unwrap();
    let (channel, inbound) = SmsChannel::start(route.clone());
    assert!(channel.wait_bound(Duration::from_secs(5)).await, "binds");
    tokio::spawn(run_inbox_with_events(
        Arc::clone(&env.store),
        route,
        OptOutWords::default(),
        inbound,
        Some(EventOptions::default()),
    ));
    env.engine = env.engine.with_sms(Arc::new(channel));
    let to = numbers(2);
    env.consent_all(&to).await;
    let sms_consents: Vec<Consent> = to
        .iter()
        .map(|n| Consent {
            phone: PhoneNumber::parse(n).unwrap(),
            category: Category::Marketing,
            channel: ChannelKind::Sms,
            granted_at: Utc::now() - chrono::Duration::days(1),
            source: "test".into(),
            proof: "checkbox".into(),
        })
        .collect();
    env.store.grant_consents(&sms_consents).await.unwrap();
    let job = job_with(flash_sale("j-stop", "c-stop", &to, &[0, 1], Value::Null));
    assert!(matches!(env.run(&job).await, JobRun::Finished(r) if r.total("sent") == 2));
    for _ in 0..2 {
        env.sim
            .send_mo(&MoRequest {
                from: to[0].clone(),
                to: "ACME".into(),
                text: "STOP".into(),
            })
            .await
            .expect("delivered to herald's session");
    }
    let keys = [key("c-stop", &to[0]), key("c-stop", &to[1])];
    let mut states = HashSet::new();
    for _ in 0..100 {
        states = env.store.recipient_event_states(&keys).await.unwrap();
        if states.iter().any(|(_, s)| s == "opted_out") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let opted_out: Vec<_> = states.iter().filter(|(_, s)| s == "opted_out").collect();
    assert_eq!(
        opted_out,
        [&(keys[0].clone(), "opted_out".to_owned())],
        "{states:?}"
    );
    let phone = PhoneNumber::parse(&to[0]).unwrap();
    let state = env
        .store
        .consent_states(Category::Marketing, ChannelKind::Sms, &[phone])
        .await
        .unwrap()[0];
    assert_eq!(state, ConsentState::OptedOut);
}

#[tokio::test]
async fn herald_send_killed_while_fallbacks_go_out_sends_no_sms_twice_and_loses_none() {
    let to = numbers(240);
    // 200 numbers are not on WhatsApp: their SMS go out as fallbacks; 20 prefer SMS.
    let not_on_whatsapp: HashSet<String> = to[40..].iter().cloned().collect();
    let mut opts = smsc(SmscConfig::default());
    opts.sim.undeliverable = not_on_whatsapp.clone();
    let s = SmsEnv::start(opts, "tps=1000").await;
    s.env.consent_all(&to).await;
    s.consent_sms(&to).await;
    let prefer: Vec<usize> = (0..20).collect();
    let body = flash_sale(
        "j-crash",
        "c-crash",
        &to,
        &prefer,
        json!({ "when": ["not_on_whatsapp"] }),
    );
    let file = s.env.dir.path().join("job.json");
    std::fs::write(&file, body.to_string()).unwrap();
    let addr = s.env.sim.smpp_addr().unwrap();
    // 100 SMS/s: the kill lands while the fallback lane has claimed its timers.
    let url = format!("smpp://herald:secret@{addr}?name=crash&tps=100");
    let send = || {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_herald"));
        cmd.args(["send", "--quiet"])
            .arg(&file)
            .env("HERALD_DATABASE_URL", &s.env.db_url)
            .env("HERALD_GRAPH_URL", s.env.sim.url())
            .env("HERALD_SMS_URL", &url)
            .env("RUST_LOG", "info")
            .env_remove("HERALD_RATE_CARD")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        cmd
    };
    // The killed run logs to a file: a pipe nobody reads would stall it.
    let first_log = s.env.dir.path().join("first.log");
    let log = std::fs::File::create(&first_log).unwrap();
    let mut first = send()
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while s.env.sim.sms_messages().len() < 80 {
        assert!(std::time::Instant::now() < deadline, "no SMS went out");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    first.kill().await.unwrap(); // SIGKILL: timers and keys left under a dead owner's lease
    let at_kill = s.env.sim.sms_messages().len();
    assert!(at_kill < 220, "the kill came too late ({at_kill})");

    first.wait().await.unwrap();
    let rerun = send().output().await.unwrap();
    let stdout = String::from_utf8_lossy(&rerun.stdout);
    let stderr = String::from_utf8_lossy(&rerun.stderr);
    assert!(rerun.status.success(), "{stdout}\n{stderr}");
    // Neither run printed a phone number.
    let printed = format!(
        "{stdout}{stderr}{}",
        std::fs::read_to_string(&first_log).unwrap()
    );
    assert!(printed.contains("SMPP session bound"), "{printed}");
    for n in &to {
        assert!(
            !printed.contains(&n[1..]),
            "a number was printed: {printed}"
        );
    }
    // Whatever the timing, nothing twice …
    let stats = s.env.sim.stats().sms.unwrap();
    assert_eq!(stats.duplicates, 0, "{stats:?}");
    // … and nobody lost: every SMS key has an outcome; only the few in flight at the kill
    // may be unknown (never resent).
    let mut sent = 0;
    let mut unknown = 0;
    for (i, n) in to.iter().enumerate() {
        let k = key("c-crash", n);
        let sms_key = if i < 20 {
            k
        } else if not_on_whatsapp.contains(n) {
            sms_key(&k)
        } else {
            continue;
        };
        match s.row(&sms_key).await.state.as_str() {
            "sent" => sent += 1,
            "unknown" => unknown += 1,
            other => panic!("SMS key {sms_key} is {other}"),
        }
    }
    assert_eq!(sent + unknown, 220);
    assert!(unknown <= 12, "{unknown} unknown after one kill");
    assert_eq!(stats.messages as usize, s.env.sim.sms_messages().len());
    assert!(
        stats.messages >= sent && stats.messages <= sent + unknown,
        "{stats:?}"
    );
    // The timers left are the 20 WhatsApp messages that went out, watching for a `failed`
    // status; every fallback that was due has fired.
    let pending = s.env.store.pending_timers().await.unwrap();
    assert_eq!(pending, [("sms_fallback".to_owned(), 20)]);
}

#[tokio::test]
async fn herald_fallbacks_run_fires_what_a_failed_status_made_due() {
    let s = SmsEnv::start(smsc(SmscConfig::default()), "tps=1000").await;
    let to = numbers(2);
    s.env.consent_all(&to).await;
    s.consent_sms(&to).await;
    let job = job_with(flash_sale(
        "j-cron",
        "c-cron",
        &to,
        &[],
        json!({ "when": ["failed"] }),
    ));
    s.env.run(&job).await;
    // `herald serve` got a failed status for to[0]: applied, and its fallback made due.
    let k = key("c-cron", &to[0]);
    let wamid = s.row(&k).await.wamid.unwrap();
    s.env
        .store
        .apply_deliveries(&[DeliveryUpdate {
            wamid,
            key: Some(IdempotencyKey::from_trusted(k.clone())),
            status: "failed".into(),
            at: Utc::now(),
            error_code: Some(131049),
            billed_category: None,
        }])
        .await
        .unwrap();
    s.env
        .store
        .advance_timer(FALLBACK_TIMER, &sms_key(&k), Utc::now())
        .await
        .unwrap();
    let run = |sms_url: Option<&str>| {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_herald"));
        cmd.args(["fallbacks", "run"])
            .env("HERALD_DATABASE_URL", &s.env.db_url)
            .env("HERALD_GRAPH_URL", s.env.sim.url())
            .env("RUST_LOG", "warn")
            .env_remove("HERALD_SMS_URL")
            .env_remove("HERALD_RATE_CARD");
        if let Some(url) = sms_url {
            cmd.env("HERALD_SMS_URL", url);
        }
        cmd.output()
    };
    let without = run(None).await.unwrap();
    assert_eq!(without.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&without.stderr).contains("HERALD_SMS_URL"));
    let out = run(Some(&s.url)).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("1 sent by SMS"), "{stdout}");
    let sms = s.env.sim.sms_messages();
    assert_eq!(sms.len(), 1);
    assert_eq!(sms[0].to, to[0]);
    // Nothing more on a second run.
    let again = run(Some(&s.url)).await.unwrap();
    assert!(String::from_utf8_lossy(&again.stdout).contains("0 sent by SMS"));
    assert_eq!(s.env.sim.sms_messages().len(), 1);
}

#[tokio::test]
async fn a_receipt_that_beats_its_send_s_record_is_applied_once_the_record_lands() {
    use herald::channel::sms::Inbound;
    use herald::channel::sms::receipt::{MessageState, Receipt};
    use herald::store::{Claim, OutcomeRecord};

    let env = Env::start(EnvOptions::default()).await;
    let route = SmsRoute::parse("smpp://herald:secret@127.0.0.1:9?name=race").unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    tokio::spawn(run_inbox(
        Arc::clone(&env.store),
        route,
        OptOutWords::default(),
        rx,
    ));
    // The SMSC's receipt comes first …
    tx.send(Inbound::Receipt(Receipt {
        message_id: "00BEEF".into(),
        state: MessageState::Delivered,
        error: None,
        done_at: None,
    }))
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // … then the engine records the send with that message id.
    let k = IdempotencyKey::from_trusted("k:race:1".to_owned());
    let owner = "race-owner";
    env.store
        .claim(
            owner,
            Duration::from_secs(30),
            &[Claim {
                key: k.clone(),
                campaign: CampaignId::parse("race").unwrap(),
                job: herald::domain::JobId::parse("race-1").unwrap(),
                sender: herald::domain::SenderId::parse(SENDER).unwrap(),
                recipient: "+4915110000000".into(),
                template: "flash_sale".into(),
                language: "de".into(),
                category: Category::Marketing,
                channel: ChannelKind::Sms,
            }],
        )
        .await
        .unwrap();
    env.store
        .mark_sending(owner, std::slice::from_ref(&k))
        .await
        .unwrap();
    env.store
        .record_outcomes(&[OutcomeRecord {
            key: k.clone(),
            outcome: herald::domain::Outcome::Sent {
                wamid: "beef".into(),
            },
            attempts: 1,
        }])
        .await
        .unwrap();
    for _ in 0..100 {
        let row = env.store.ledger_entry(&k).await.unwrap().unwrap();
        if row.delivery.as_deref() == Some("delivered") {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the early receipt was never applied");
}
