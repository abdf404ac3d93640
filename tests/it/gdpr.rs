//! GDPR erasure as a new user would try it: a customer who was sent a campaign, wrote in
//! (opting in by keyword), and ordered, is erased with `herald contacts erase`; afterwards no
//! table — and on SQLite no byte of the database or its write-ahead log — holds the number,
//! its digits or a message id that encodes it. A new consent makes the number sendable again;
//! without `HERALD_HASH_KEY` erasure refuses.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use herald::domain::inbound::OptInKeyword;
use herald::domain::{Category, ChannelKind, Consent, Conversion, PhoneNumber, SenderId};
use herald::policy::optin::default_confirmation;
use herald::store::ConsentState;
use serde_json::json;

use super::conversation::Receiver;
use super::engine::{Env, EnvOptions, SENDER, job_with};
use super::support::TEST_HASH_KEY;

/// The customer of the signed inbound fixtures.
const ANNA: &str = "+4915123456789";
/// Her digits as a wamid carries them (base64 of the number inside the id).
const IN_WAMID: &str = "NDkxNTEyMzQ1Njc4O";

fn herald(env: &Env, args: &[&str], key: Option<&str>) -> std::process::Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_herald"));
    cmd.args(args)
        .env("HERALD_DATABASE_URL", &env.db_url)
        .env("RUST_LOG", "warn")
        .env_remove("HERALD_HASH_KEY")
        .stdin(std::process::Stdio::null());
    if let Some(k) = key {
        cmd.env("HERALD_HASH_KEY", k);
    }
    cmd.output().expect("run herald")
}

/// Every file of the SQLite database (main file, WAL, shared memory) as bytes.
fn database_bytes(env: &Env) -> Vec<(String, Vec<u8>)> {
    std::fs::read_dir(env.dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("t.db"))
        .map(|p| (p.display().to_string(), std::fs::read(&p).unwrap()))
        .collect()
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn an_erased_customer_leaves_no_trace_in_any_table_or_byte_and_may_opt_in_again() {
    super::support::configure_hash_key();
    let env = Env::start(EnvOptions::default()).await;
    let anna = PhoneNumber::parse(ANNA).unwrap();
    // She consented, got the campaign, wrote the poster's keyword, and ordered.
    env.consent_all(&[ANNA.to_owned()]).await;
    let job = job_with(json!({
        "version": 1, "job_id": "g1", "campaign_id": "gdpr", "sender": SENDER,
        "template": { "name": "flash_sale", "language": "de", "category": "marketing" },
        "recipients": [ { "to": ANNA }, { "to": "+4917600000001" } ],
        "follow_up": { "after": "PT24H", "template": { "name": "flash_sale", "language": "de", "category": "marketing" } }
    }));
    env.consent_all(&["+4917600000001".to_owned()]).await;
    assert_eq!(env.finished(&job).await.total("sent"), 2);
    env.store
        .upsert_keyword(&OptInKeyword {
            keyword: "SNEAKERS".into(),
            sender: SenderId::parse(SENDER).unwrap(),
            category: Category::Marketing,
            source: "poster".into(),
            business: "ACME".into(),
            confirmation: default_confirmation("ACME", "marketing"),
            created_at: Utc::now(),
        })
        .await
        .unwrap();
    let receiver = Receiver::start(Arc::clone(&env.store)).await;
    assert_eq!(receiver.post_fixture("inbound-text-keyword").await, 200);
    assert_eq!(receiver.post_fixture("inbound-stop-text").await, 200);
    let order = Conversion::parse(
        json!({
            "version": 1, "event_id": "order-1", "campaign_id": "gdpr", "to": ANNA,
            "event": "order", "at": Utc::now().to_rfc3339(),
            "value": { "amount": "89.90", "currency": "EUR" }
        })
        .to_string()
        .as_bytes(),
        Utc::now(),
    )
    .unwrap();
    env.store.record_conversions(&[order]).await.unwrap();
    let before: String = database_bytes(&env)
        .iter()
        .map(|(_, b)| String::from_utf8_lossy(b).into_owned())
        .collect();
    assert!(before.contains("4915123456789"), "the data is there before");

    // Without a key, erasure refuses rather than fall back to a plain hash.
    let refused = herald(&env, &["contacts", "erase", ANNA, "--yes"], None);
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("HERALD_HASH_KEY"), "{err}");
    assert!(!err.contains("4915123456789"), "{err}");

    let erased = herald(
        &env,
        &["contacts", "erase", ANNA, "--yes"],
        Some(TEST_HASH_KEY),
    );
    let out = String::from_utf8_lossy(&erased.stdout);
    assert!(
        erased.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&erased.stderr)
    );
    assert!(
        out.contains("ledger rows") && out.contains("inbound messages"),
        "{out}"
    );
    assert!(!out.contains("4915123456789"), "{out}");

    // Every table, through the store's own export, knows nothing but the keyed hash.
    let exported = env.store.export_contact(&anna).await.unwrap();
    for list in [
        "consents",
        "revocations",
        "conversions",
        "inbound_messages",
        "service_windows",
        "tier",
    ] {
        assert_eq!(exported[list], json!([]), "{list}: {exported:#}");
    }
    let ledger = exported["ledger"].as_array().unwrap();
    assert!(!ledger.is_empty(), "outcomes are kept: {exported:#}");
    assert!(ledger.iter().all(|r| r["wamid"].is_null()), "{exported:#}");
    let mut held = exported.clone();
    held.as_object_mut().unwrap().remove("phone"); // the question, not an answer
    assert!(!held.to_string().contains("4915123456789"), "{exported:#}");
    // The bytes: close the pools first so nothing is cached, then read every file.
    drop(receiver);
    let Env { store, dir, .. } = env;
    drop(store);
    tokio::time::sleep(Duration::from_millis(100)).await;
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if !path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("t.db")
        {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        for needle in ["4915123456789", IN_WAMID] {
            assert!(
                !contains(&bytes, needle),
                "{needle} still in {}",
                path.display()
            );
        }
    }
    // The other customer is untouched.
    let store = herald::store::open(&format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("t.db").display()
    ))
    .await
    .unwrap();
    let other = PhoneNumber::parse("+4917600000001").unwrap();
    let states = store
        .consent_states(
            Category::Marketing,
            ChannelKind::WhatsApp,
            &[anna.clone(), other],
        )
        .await
        .unwrap();
    assert_eq!(states, [ConsentState::OptedOut, ConsentState::Granted]);
    // She opts in again, with proof, after the erasure: sendable again.
    store
        .grant_consents(&[Consent {
            phone: anna.clone(),
            category: Category::Marketing,
            channel: ChannelKind::WhatsApp,
            granted_at: Utc::now() + chrono::Duration::seconds(1),
            source: "web-form".into(),
            proof: "form v4, double opt-in".into(),
        }])
        .await
        .unwrap();
    let states = store
        .consent_states(Category::Marketing, ChannelKind::WhatsApp, &[anna])
        .await
        .unwrap();
    assert_eq!(states, [ConsentState::Granted]);
}

/// Postgres: the same erasure leaves the number in no row of any table (every column, cast to
/// text). VACUUM is the operator's (README: Operating it) — rows are gone from every query.
#[tokio::test]
async fn on_postgres_no_table_holds_an_erased_number() {
    super::support::configure_hash_key();
    let Some(url) = super::support::postgres_url().await else {
        return;
    };
    let store = herald::store::open(&url).await.unwrap();
    let anna = PhoneNumber::parse(ANNA).unwrap();
    store
        .grant_consents(&[Consent {
            phone: anna.clone(),
            category: Category::Marketing,
            channel: ChannelKind::WhatsApp,
            granted_at: Utc::now() - chrono::Duration::hours(1),
            source: "checkout".into(),
            proof: "box ticked".into(),
        }])
        .await
        .unwrap();
    let fixture = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/webhooks/inbound-text-keyword.json"),
    )
    .unwrap();
    let n = herald::http::parse(&fixture, &herald::http::OptOutWords::default()).unwrap();
    let messages: Vec<_> = n.inbound.into_iter().map(|i| i.message).collect();
    store.record_inbound(&messages, Utc::now()).await.unwrap();
    store
        .revoke_consent(&anna, None, None, Utc::now(), "inbound:STOP")
        .await
        .unwrap();
    store.suppress(&anna, "complaint").await.unwrap();
    store
        .reserve_tier(
            "pf",
            Some(10),
            Duration::from_secs(86_400),
            std::slice::from_ref(&anna),
        )
        .await
        .unwrap();
    store
        .schedule_timer(
            "follow_up",
            "k#follow-up",
            Utc::now(),
            &json!({ "to": ANNA, "campaign": "c" }),
        )
        .await
        .unwrap();
    store.erase_contact(&anna).await.unwrap();

    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&url)
        .await
        .unwrap();
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables
         WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert!(tables.len() > 10, "{tables:?}");
    for table in tables {
        for needle in ["4915123456789", IN_WAMID] {
            let sql =
                format!("SELECT count(*) FROM \"{table}\" t WHERE t::text LIKE '%' || $1 || '%'");
            let hits: i64 = sqlx::query_scalar(&sql)
                .bind(needle)
                .fetch_one(&mut conn)
                .await
                .unwrap();
            assert_eq!(hits, 0, "{needle} in {table}");
        }
    }
    super::support::drop_postgres_database(&url).await;
}
