//! Helpers every integration test may use: a fresh SQLite store in a temporary directory, and a
//! fresh Postgres database per test (skipped loudly when Postgres is not running, unless
//! `HERALD_REQUIRE_SERVICES=1` makes missing services a failure, as in CI); the test sender,
//! its template and consents; and an engine against the simulator.

#![allow(dead_code)] // each test module uses its own subset

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use herald::app::EngineSetup;
use herald::domain::{Category, ChannelKind, PhoneNumber, SenderId};
use herald::engine::{Engine, EngineConfig};
use herald::graph::{GraphClient, GraphConfig};
use herald::policy::cost::RateCard;
use herald::store::{self, Consent, Sender, Store, Template};
use sqlx::Connection;
use sqlx::postgres::PgConnection;
use tokio::sync::OnceCell;

/// Admin connection used to create the per-test databases when `HERALD_DATABASE_URL` is not
/// a Postgres URL.
pub const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// Whether missing services (Postgres, RabbitMQ) must fail the test instead of skipping it.
pub fn require_services() -> bool {
    std::env::var("HERALD_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

/// A migrated SQLite store in its own temporary directory; keep the `TempDir` alive as long as
/// the store is used.
pub async fn sqlite_store() -> (Arc<dyn Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let url = sqlite_url(dir.path());
    let store = store::open(&url).await.expect("open the SQLite store");
    (store, dir)
}

/// The URL of a SQLite database file `herald.db` in `dir`, created on first open.
pub fn sqlite_url(dir: &std::path::Path) -> String {
    format!("sqlite://{}?mode=rwc", dir.join("herald.db").display())
}

/// A URL to a new, empty Postgres database made for the calling test
/// (`herald_t_<uuid>`), created through the admin connection of `HERALD_DATABASE_URL`
/// (default [`DEFAULT_POSTGRES_URL`]). `None`, with a loud `SKIPPED` line, when Postgres is
/// unreachable; panics instead when [`require_services`] is set.
pub async fn postgres_url() -> Option<String> {
    let admin_url = admin_url();
    let shown = masked(&admin_url);
    let mut admin = match PgConnection::connect(&admin_url).await {
        Ok(conn) => conn,
        Err(e) if require_services() => {
            panic!("HERALD_REQUIRE_SERVICES=1 but Postgres at {shown} is unreachable: {e}")
        }
        Err(e) => {
            eprintln!(
                "SKIPPED: Postgres at {shown} is unreachable ({e}); set HERALD_DATABASE_URL to run the Postgres tests"
            );
            return None;
        }
    };
    sweep_stale_databases(&admin_url).await;
    let name = format!("herald_t_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .unwrap_or_else(|e| panic!("create test database {name} on {shown}: {e}"));
    let _ = admin.close().await;
    Some(with_database(&admin_url, &name))
}

/// The admin connection's URL: `HERALD_DATABASE_URL` when it names Postgres.
fn admin_url() -> String {
    std::env::var("HERALD_DATABASE_URL")
        .ok()
        .filter(|u| u.starts_with("postgres:") || u.starts_with("postgresql:"))
        .unwrap_or_else(|| DEFAULT_POSTGRES_URL.to_owned())
}

/// Drops a database made by [`postgres_url`], disconnecting whoever still uses it. Best
/// effort: a test that panics before calling it leaves its database to the next sweep.
pub async fn drop_postgres_database(url: &str) {
    let name = url
        .split('?')
        .next()
        .and_then(|base| base.rsplit('/').next())
        .unwrap_or_default();
    if !name.starts_with("herald_t_") {
        return;
    }
    if let Ok(mut admin) = PgConnection::connect(&admin_url()).await {
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut admin)
            .await;
        let _ = admin.close().await;
    }
}

/// `url` with any password masked, for messages (herald's own redaction).
fn masked(url: &str) -> String {
    herald::telemetry::redact::redact_url(url)
}

/// `url` with its database name replaced by `name`, query string kept.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let (scheme, rest) = base.split_once("://").expect("a postgres:// URL");
    let authority = rest.split('/').next().unwrap_or(rest);
    match query {
        Some(q) => format!("{scheme}://{authority}/{name}?{q}"),
        None => format!("{scheme}://{authority}/{name}"),
    }
}

/// Drops test databases left by earlier runs: older than an hour and with nobody connected,
/// so a database another test process just created is never touched. Best effort, once per
/// test binary.
async fn sweep_stale_databases(admin_url: &str) {
    static SWEPT: OnceCell<()> = OnceCell::const_new();
    SWEPT
        .get_or_init(|| async {
            let Ok(mut admin) = PgConnection::connect(admin_url).await else {
                return;
            };
            let stale: Vec<String> = sqlx::query_scalar(
                "SELECT d.datname FROM pg_database d
                 WHERE d.datname LIKE 'herald\\_t\\_%'
                   AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.datname = d.datname)
                   AND (pg_stat_file('base/' || d.oid || '/PG_VERSION')).modification
                       < now() - interval '1 hour'",
            )
            .fetch_all(&mut admin)
            .await
            .unwrap_or_default();
            for name in stale {
                let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name}"))
                    .execute(&mut admin)
                    .await;
            }
            let _ = admin.close().await;
        })
        .await;
}

/// A migrated Postgres store on a fresh database, or `None` (skipped) without Postgres.
pub async fn postgres_store() -> Option<Arc<dyn Store>> {
    let url = postgres_url().await?;
    Some(store::open(&url).await.expect("open the Postgres store"))
}

#[test]
fn database_names_are_swapped_in_urls() {
    assert_eq!(
        with_database("postgres://postgres@127.0.0.1:5432/test", "x"),
        "postgres://postgres@127.0.0.1:5432/x"
    );
    assert_eq!(
        with_database("postgres://u:p@h/test?sslmode=disable", "x"),
        "postgres://u:p@h/x?sslmode=disable"
    );
    assert_eq!(with_database("postgres://h", "x"), "postgres://h/x");
    assert_eq!(masked("postgres://u:p@h/test"), "postgres://u:****@h/test");
    assert_eq!(masked("postgres://u@h/test"), "postgres://u@h/test");
}

/// RabbitMQ's URL for tests: `HERALD_AMQP_URL`, default the local broker. Checked by
/// connecting; `None`, with a loud `SKIPPED` line, when the broker is unreachable; panics
/// instead when [`require_services`] is set.
pub async fn amqp_url() -> Option<String> {
    let url = std::env::var("HERALD_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned());
    let attempt = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        herald::amqp::connect(&url, "test-probe"),
    )
    .await;
    let error = match attempt {
        Ok(Ok(conn)) => {
            let _ = conn.close(200, "probe".into()).await;
            return Some(url);
        }
        Ok(Err(e)) => e.to_string(),
        Err(_) => "timed out".to_owned(),
    };
    if require_services() {
        panic!(
            "HERALD_REQUIRE_SERVICES=1 but RabbitMQ at {} is unreachable: {error}",
            herald::amqp::redact_url(&url)
        );
    }
    let url = herald::amqp::redact_url(&url);
    eprintln!(
        "SKIPPED: RabbitMQ at {url} is unreachable ({error}); start it (`rabbitmq-server -detached`) or set HERALD_AMQP_URL to run the RabbitMQ tests"
    );
    None
}

/// An AMQP prefix no other test (or run) uses, so each test has its own exchanges and queues.
pub fn unique_prefix() -> String {
    format!(
        "herald-t-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

// --- the sending side: sender, template, consents, engine -----------------------------------

/// The business number (phone_number_id) the tests send from.
pub const SENDER: &str = "106540352242922";
/// Its WhatsApp Business Account: templates are approved per account.
pub const ACCOUNT: &str = "102290129340398";

/// A connected number of [`ACCOUNT`] in `portfolio-1` sending `rate` messages a second, with
/// no tier limit; tests change the fields they need.
pub fn sender(id: &str, rate: u32) -> Sender {
    Sender {
        id: SenderId::parse(id).unwrap(),
        account_id: ACCOUNT.into(),
        portfolio_id: "portfolio-1".into(),
        display_number: "+49 30 901820".into(),
        rate_per_sec: rate,
        tier_limit: None,
        status: "CONNECTED".into(),
        status_reason: None,
    }
}

/// A German marketing template of [`ACCOUNT`] with Meta's `status` (APPROVED, REJECTED, …).
pub fn template(name: &str, status: &str) -> Template {
    Template {
        account_id: ACCOUNT.into(),
        name: name.into(),
        language: "de".into(),
        category: Category::Marketing,
        status: status.into(),
    }
}

/// Registers `sender` and approves `flash_sale` for [`ACCOUNT`].
pub async fn seed(store: &Arc<dyn Store>, sender: &Sender) {
    store.upsert_sender(sender).await.unwrap();
    store
        .upsert_template(&template("flash_sale", "APPROVED"))
        .await
        .unwrap();
}

/// Marketing consents for `numbers`, given a day ago.
pub async fn consent_marketing(store: &Arc<dyn Store>, numbers: &[String]) {
    let consents: Vec<Consent> = numbers
        .iter()
        .map(|n| Consent {
            phone: PhoneNumber::parse(n).unwrap(),
            category: Category::Marketing,
            channel: ChannelKind::WhatsApp,
            granted_at: Utc::now() - chrono::Duration::days(1),
            source: "test".into(),
            proof: "checkbox".into(),
        })
        .collect();
    store.grant_consents(&consents).await.unwrap();
}

/// The engine's defaults with retries in milliseconds, so retry paths run fast.
pub fn fast_retries() -> EngineConfig {
    EngineConfig {
        retry_base: Duration::from_millis(5),
        retry_cap: Duration::from_millis(50),
        ..EngineConfig::default()
    }
}

/// An engine built as the commands build it (local pacing, built-in rate card), talking to
/// the Graph API `graph` describes.
pub fn engine(store: &Arc<dyn Store>, graph: &GraphConfig, config: EngineConfig) -> Engine {
    let mut setup = EngineSetup::new(RateCard::builtin());
    setup.config = config;
    setup.build(
        Arc::clone(store),
        GraphClient::new(graph).expect("Graph client"),
    )
}

/// The hash key every test of this process erases with (`HERALD_HASH_KEY`; one per process).
pub const TEST_HASH_KEY: &str = "test-hash-key-0123456789abcdef";

/// Configures [`TEST_HASH_KEY`] for the stores of this process (idempotent).
pub fn configure_hash_key() {
    herald::store::configure_hash_key(herald::store::HashKey::new(TEST_HASH_KEY).unwrap())
        .expect("one hash key per test process");
}
